//! Attribution in this process as an [`AttributionClient`]: what the indexer and the dashboard
//! use inside one `mops serve`, through the same trait as [`GrpcAttribution`] in a split
//! deployment. Errors are the statuses the gRPC service would answer.
//!
//! [`GrpcAttribution`]: modelops_attribution_client::GrpcAttribution

use std::sync::Arc;

use modelops_attribution_client::{AggEdge, AttributionClient, AttributionCounts, SharedAttribution};
use modelops_core::job::JobId;
use modelops_core::paths::ProvenanceSchema;
use tonic::Status;

use crate::attribution::Attribution;
use crate::edge::Role;

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
}
