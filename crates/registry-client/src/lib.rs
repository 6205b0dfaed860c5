//! What the other services need of the job registry, as one trait, [`RegistryClient`]: read a
//! job's state, list jobs, stream its spec, follow changes, and (for the indexer) hold a claim
//! and record the index state.
//!
//! Services meet only at their protos. In a split deployment (`mops serve indexer
//! --registry-endpoint …`, as `deploy/k8s` runs it) the indexer, attribution and the dashboard
//! reach the registry through [`GrpcRegistry`], its gRPC API; inside one `mops serve` they use the
//! registry in the same process through the same trait (implemented by `modelops-registry`), so
//! one set of tests covers both. Errors are the registry's gRPC statuses in both cases.

pub mod convert;
pub mod grpc;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use modelops_core::job::{IndexState, JobId, JobState, JobStatus};
use tonic::Status;

pub use grpc::GrpcRegistry;

/// The largest page [`RegistryClient::list_jobs`] returns.
pub const MAX_PAGE_SIZE: usize = 1000;

/// A registry shared by the parts of one process.
pub type SharedRegistry = Arc<dyn RegistryClient>;

/// A job's changes as a stream; it ends with an error when the watch cannot go on (an
/// OUT_OF_RANGE position, a registry that went away).
pub type JobEvents = BoxStream<'static, Result<JobEvent, Status>>;

/// One change of one job, as `WatchJobs` reports it.
#[derive(Debug, Clone)]
pub struct JobEvent {
    /// The registry's position of the change; resume a broken watch after it.
    pub seq: u64,
    /// The job's state after the change.
    pub state: Arc<JobState>,
    /// Its status before, when known (never for a replayed state or a new job).
    pub previous: Option<JobStatus>,
    /// A current state sent first by a watch with `replay_current`, not a change.
    pub replayed: bool,
    /// The W3C `traceparent` of the request that made the change, so work it triggers joins the
    /// same trace.
    pub traceparent: Option<String>,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchFrom {
    /// Resume after this position of an earlier watch (0: from now).
    pub after: u64,
    /// First send the current state of every job.
    pub replay_current: bool,
}

/// A page request of [`RegistryClient::list_jobs`].
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only these statuses (all when empty).
    pub statuses: Vec<JobStatus>,
    /// Only jobs created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Page size (0 = the registry's default, at most [`MAX_PAGE_SIZE`]).
    pub limit: usize,
    /// Where the previous page ended.
    pub page_token: Option<String>,
}

/// One page of jobs.
#[derive(Debug, Clone)]
pub struct JobPage {
    /// Newest first.
    pub jobs: Vec<JobState>,
    /// Where the next page starts, if there is one.
    pub next_page_token: Option<String>,
    /// The registry's watch position taken before the listing: watching after it misses no
    /// change made after the listing.
    pub watch_revision: u64,
}

/// The outcome of a claim request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Whether the requester holds the claim now.
    pub granted: bool,
    /// The current holder.
    pub holder: String,
    /// When the claim expires.
    pub expires_at: DateTime<Utc>,
}

/// A job's spec blob, streamed.
pub struct SpecStream {
    /// `simulation` or `calibration`.
    pub job_type: String,
    /// The blob's bytes, in order.
    pub chunks: BoxStream<'static, Result<Bytes, Status>>,
}

impl std::fmt::Debug for SpecStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpecStream").field("job_type", &self.job_type).finish_non_exhaustive()
    }
}

/// What the indexer, attribution and the dashboard need of the job registry.
#[async_trait::async_trait]
pub trait RegistryClient: Send + Sync + std::fmt::Debug {
    /// A job's state, `None` when the job is unknown.
    async fn get_job(&self, job: &JobId) -> Result<Option<JobState>, Status>;

    /// One page of jobs, newest first.
    async fn list_jobs(&self, query: ListQuery) -> Result<JobPage, Status>;

    /// A job's spec blob, streamed.
    async fn read_spec(&self, job: &JobId) -> Result<SpecStream, Status>;

    /// Takes or renews a claim on `job` for `purpose` by `holder`, lasting `ttl`.
    async fn claim_job(&self, job: &JobId, purpose: &str, holder: &str, ttl: Duration) -> Result<Claim, Status>;

    /// Releases a claim held by `holder`; whether one was released.
    async fn release_claim(&self, job: &JobId, purpose: &str, holder: &str) -> Result<bool, Status>;

    /// Records the state of `job`'s loss index; returns the job's new state.
    async fn set_index_state(&self, job: &JobId, state: IndexState, results_path: Option<String>, error: Option<String>) -> Result<JobState, Status>;

    /// Follows job changes from `from`.
    async fn watch_jobs(&self, from: WatchFrom) -> Result<JobEvents, Status>;

    /// A job's state; NOT_FOUND when the job is unknown.
    async fn require_job(&self, job: &JobId) -> Result<JobState, Status> {
        self.get_job(job).await?.ok_or_else(|| Status::not_found(format!("job {job} not found")))
    }

    /// Every job, page after page.
    async fn all_jobs(&self) -> Result<Vec<JobState>, Status> {
        let mut jobs = Vec::new();
        let mut page_token = None;
        loop {
            let page = self
                .list_jobs(ListQuery {
                    limit: MAX_PAGE_SIZE,
                    page_token,
                    ..ListQuery::default()
                })
                .await?;
            jobs.extend(page.jobs);
            match page.next_page_token {
                Some(token) if !token.is_empty() => page_token = Some(token),
                _ => return Ok(jobs),
            }
        }
    }

    /// A job's whole spec blob: `(job_type, bytes)`.
    async fn spec_bytes(&self, job: &JobId) -> Result<(String, Bytes), Status> {
        use futures::TryStreamExt as _;
        let spec = self.read_spec(job).await?;
        let chunks: Vec<Bytes> = spec.chunks.try_collect().await?;
        Ok((spec.job_type, Bytes::from(chunks.concat())))
    }
}
