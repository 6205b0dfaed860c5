//! Attribution in this process as an [`AttributionClient`]: what the indexer and the dashboard
//! use inside one `mops serve`, through the same trait as [`GrpcAttribution`] in a split
//! deployment. Errors are the statuses the gRPC service would answer.
//!
//! [`GrpcAttribution`]: modelops_attribution_client::GrpcAttribution

use std::sync::Arc;

use modelops_attribution_client::{AggEdge, AttributionClient, AttributionCounts, MAX_PARAM_SET_RESULTS, ResultOwner, ResultRef, SharedAttribution};
use modelops_core::job::JobId;
use modelops_core::paths::ProvenanceSchema;
use tonic::Status;

use crate::attribution::Attribution;
use crate::edge::{Kind, Role};

impl From<Attribution> for SharedAttribution {
    fn from(attribution: Attribution) -> Self {
        Arc::new(attribution)
    }
}

#[async_trait::async_trait]
impl AttributionClient for Attribution {
    async fn visit_agg_edges(&self, job: &JobId, visit: &mut (dyn for<'a> FnMut(AggEdge<'a>) + Send)) -> Result<(), Status> {
        Ok(Attribution::visit_agg_edges(self, job, |edge| {
            visit(AggEdge {
                param_id: edge.param_id,
                target: edge.target,
                path: edge.path,
                cache_hit: edge.role == Role::CacheHit,
            });
        })
        .await?)
    }

    async fn derive_edges(&self, job: &JobId) -> Result<(), Status> {
        self.derive(job, &ProvenanceSchema::ALL, |_, _| {}).await?;
        Ok(())
    }

    async fn counts(&self, job: &JobId) -> Result<AttributionCounts, Status> {
        // The same counts the gRPC service answers with.
        let summary = self.summary(job, 0).await?;
        Ok(AttributionCounts::from_proto(crate::service::counts_to_proto(summary.counts), summary.seal.is_some()))
    }

    async fn param_set_results(&self, job: &JobId, param_id: &str) -> Result<Vec<ResultRef>, Status> {
        use futures::TryStreamExt as _;
        let mut batches = self.job_edge_batches(job, 8192).await?;
        let mut results = Vec::new();
        while let Some(batch) = batches.try_next().await? {
            results.extend(batch.into_iter().filter(|e| e.param_id == param_id).map(|edge| ResultRef {
                aggregation: edge.kind == Kind::Agg,
                path: edge.path,
                seed: edge.seed,
                target: edge.target,
                cache_hit: edge.role == Role::CacheHit,
            }));
            if results.len() >= MAX_PARAM_SET_RESULTS * 2 {
                break;
            }
        }
        Ok(modelops_attribution_client::sims_first(results))
    }

    async fn owners(&self, path: &str) -> Result<Vec<ResultOwner>, Status> {
        Ok(Attribution::owners(self, path)
            .await?
            .into_iter()
            .map(|owner| ResultOwner {
                job_id: owner.job_id.to_string(),
                cache_hit: owner.role == Role::CacheHit,
            })
            .collect())
    }
}
