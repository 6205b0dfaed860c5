//! What the indexer and the dashboard need of the attribution service, as one trait,
//! [`AttributionClient`]: a job's aggregation edges (where each of its losses is, and whether it
//! was a cache hit), deriving the edges of a job that ran before attribution, and a job's counts.
//!
//! Services meet only at their protos: in a split deployment (`mops serve indexer
//! --attribution-endpoint …`) the indexer and the query service's dashboard reach attribution
//! through [`GrpcAttribution`], its gRPC API; inside one `mops serve` they use attribution in the
//! same process through the same trait (implemented by `modelops-attribution`). Attribution's
//! edges live in the results store, but only attribution reads or writes them.

use std::sync::Arc;

use futures::StreamExt as _;
use modelops_core::job::JobId;
use modelops_proto::attribution::v1 as pb;
use modelops_runtime::telemetry::ClientInterceptor;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Attribution shared by the parts of one process.
pub type SharedAttribution = Arc<dyn AttributionClient>;

/// One aggregation edge of a job: where the loss of one (parameter set, target) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggEdge<'a> {
    /// The parameter-set id.
    pub param_id: &'a str,
    /// The target entrypoint.
    pub target: &'a str,
    /// The aggregation directory, relative to the provenance root.
    pub path: &'a str,
    /// Whether the job found it already computed (by another job).
    pub cache_hit: bool,
}

/// Most results [`AttributionClient::param_set_results`] returns: a parameter set has one
/// simulation per replicate and one aggregation per target.
pub const MAX_PARAM_SET_RESULTS: usize = 1_000;

/// One result of a parameter set of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRef {
    /// Whether it is an aggregation (else a simulation).
    pub aggregation: bool,
    /// The result directory, relative to the provenance root.
    pub path: String,
    /// The simulation's seed.
    pub seed: Option<u64>,
    /// The aggregation's target entrypoint.
    pub target: Option<String>,
    /// Whether the job found it already computed (by another job).
    pub cache_hit: bool,
}

/// A job that owns a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultOwner {
    /// The job.
    pub job_id: String,
    /// Whether that job found it already computed.
    pub cache_hit: bool,
}

/// A job's attribution counts at a glance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttributionCounts {
    /// Simulation results.
    pub sims: u64,
    /// Aggregation results.
    pub aggs: u64,
    /// Results the job computed.
    pub computed: u64,
    /// Results the job found already computed.
    pub cache_hits: u64,
    /// Simulation results the job computed.
    pub sims_computed: u64,
    /// Simulation results the job found already computed.
    pub sims_cache_hits: u64,
    /// Aggregation results the job computed.
    pub aggs_computed: u64,
    /// Aggregation results the job found already computed.
    pub aggs_cache_hits: u64,
    /// Results whose role is unknown.
    pub unknown: u64,
    /// Results the spec expects that are nowhere.
    pub expected_missing: u64,
    /// Whether the job's edges are sealed (final).
    pub sealed: bool,
}

impl AttributionCounts {
    /// The counts of the API's message, for a job `sealed` or not.
    pub fn from_proto(counts: pb::AttributionCounts, sealed: bool) -> Self {
        Self {
            sims: counts.sims,
            aggs: counts.aggs,
            computed: counts.computed,
            cache_hits: counts.cache_hits,
            sims_computed: counts.sims_computed,
            sims_cache_hits: counts.sims_cache_hits,
            aggs_computed: counts.aggs_computed,
            aggs_cache_hits: counts.aggs_cache_hits,
            unknown: counts.unknown,
            expected_missing: counts.expected_missing,
            sealed,
        }
    }
}

/// What the indexer and the dashboard need of attribution.
#[async_trait::async_trait]
pub trait AttributionClient: Send + Sync + std::fmt::Debug {
    /// Hands every aggregation edge of `job` to `visit`, as they arrive (never all held at once).
    async fn visit_agg_edges(&self, job: &JobId, visit: &mut (dyn for<'a> FnMut(AggEdge<'a>) + Send)) -> Result<(), Status>;

    /// Derives `job`'s edges from its spec and the provenance store, in either layout (a job that
    /// ran before attribution, or whose runners reported nothing), and records them.
    async fn derive_edges(&self, job: &JobId) -> Result<(), Status>;

    /// `job`'s counts.
    async fn counts(&self, job: &JobId) -> Result<AttributionCounts, Status>;

    /// The results of `job`'s parameter set `param_id`: simulations first, in the order
    /// recorded; at most [`MAX_PARAM_SET_RESULTS`].
    async fn param_set_results(&self, job: &JobId, param_id: &str) -> Result<Vec<ResultRef>, Status>;

    /// The jobs that own the result at `path`.
    async fn owners(&self, path: &str) -> Result<Vec<ResultOwner>, Status>;
}

/// `results` ordered simulations first, at most [`MAX_PARAM_SET_RESULTS`].
pub fn sims_first(mut results: Vec<ResultRef>) -> Vec<ResultRef> {
    results.sort_by_key(|r| r.aggregation);
    results.truncate(MAX_PARAM_SET_RESULTS);
    results
}

/// The attribution service's gRPC API as an [`AttributionClient`].
#[derive(Debug, Clone)]
pub struct GrpcAttribution {
    client: pb::attribution_client::AttributionClient<InterceptedService<Channel, ClientInterceptor>>,
}

impl GrpcAttribution {
    /// A client of attribution at `endpoint` (`http://attribution:50051`, or `https://…` checked
    /// against the system's roots), sending `token`, taking messages up to `max_message_bytes`.
    /// It connects on first use and again after a failure: until attribution answers, calls fail
    /// UNAVAILABLE.
    pub fn connect_lazy(endpoint: &str, token: Option<&str>, max_message_bytes: usize) -> Result<Self, tonic::transport::Error> {
        let client = pb::attribution_client::AttributionClient::new(modelops_runtime::peer::lazy_channel(endpoint, token)?)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        Ok(Self { client })
    }
}

impl From<GrpcAttribution> for SharedAttribution {
    fn from(client: GrpcAttribution) -> Self {
        Arc::new(client)
    }
}

#[async_trait::async_trait]
impl AttributionClient for GrpcAttribution {
    async fn visit_agg_edges(&self, job: &JobId, visit: &mut (dyn for<'a> FnMut(AggEdge<'a>) + Send)) -> Result<(), Status> {
        let request = pb::ListJobResultsRequest {
            job_id: job.to_string(),
            kind: pb::ResultKind::Agg.into(),
            target: None,
            role: pb::Role::Unspecified.into(),
            param_id: None,
        };
        let mut stream = self.client.clone().list_job_results(request).await?.into_inner();
        while let Some(message) = stream.message().await? {
            for edge in &message.edges {
                let Some(target) = edge.target.as_deref() else {
                    return Err(Status::data_loss(format!("attribution sent an aggregation edge of job {job} without its target")));
                };
                visit(AggEdge {
                    param_id: &edge.param_id,
                    target,
                    path: &edge.path,
                    cache_hit: edge.role == i32::from(pb::Role::CacheHit),
                });
            }
        }
        Ok(())
    }

    async fn derive_edges(&self, job: &JobId) -> Result<(), Status> {
        let request = pb::DeriveEdgesRequest {
            job_id: job.to_string(),
            schema: "any".into(),
        };
        let mut stream = self.client.clone().derive_edges(request).await?.into_inner();
        while let Some(progress) = stream.next().await {
            if progress?.done {
                return Ok(());
            }
        }
        Err(Status::unavailable(format!("attribution stopped deriving the edges of job {job} before it finished")))
    }

    async fn counts(&self, job: &JobId) -> Result<AttributionCounts, Status> {
        let request = pb::GetJobAttributionRequest {
            job_id: job.to_string(),
            sample_size: 1,
        };
        let answer = self.client.clone().get_job_attribution(request).await?.into_inner();
        Ok(AttributionCounts::from_proto(answer.counts.unwrap_or_default(), answer.sealed))
    }

    async fn param_set_results(&self, job: &JobId, param_id: &str) -> Result<Vec<ResultRef>, Status> {
        let request = pb::ListJobResultsRequest {
            job_id: job.to_string(),
            kind: pb::ResultKind::Unspecified.into(),
            target: None,
            role: pb::Role::Unspecified.into(),
            param_id: Some(param_id.to_owned()),
        };
        let mut stream = self.client.clone().list_job_results(request).await?.into_inner();
        let mut results = Vec::new();
        while let Some(message) = stream.message().await? {
            results.extend(message.edges.into_iter().map(|edge| ResultRef {
                aggregation: edge.kind == i32::from(pb::ResultKind::Agg),
                path: edge.path,
                seed: edge.seed,
                target: edge.target,
                cache_hit: edge.role == i32::from(pb::Role::CacheHit),
            }));
            if results.len() >= MAX_PARAM_SET_RESULTS * 2 {
                break;
            }
        }
        Ok(sims_first(results))
    }

    async fn owners(&self, path: &str) -> Result<Vec<ResultOwner>, Status> {
        let request = pb::GetResultOwnersRequest { path: path.to_owned() };
        let answer = self.client.clone().get_result_owners(request).await?.into_inner();
        Ok(answer
            .owners
            .into_iter()
            .map(|edge| ResultOwner {
                job_id: edge.job_id,
                cache_hit: edge.role == i32::from(pb::Role::CacheHit),
            })
            .collect())
    }
}
