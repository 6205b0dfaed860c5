//! [`GrpcRegistry`]: the [`RegistryClient`] of a registry in another process, over its gRPC API
//! (`modelops.registry.v1.JobRegistry`), with the bearer token and trace context on every call.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use modelops_core::job::{IndexState, JobId, JobState};
use modelops_proto::registry::v1 as pb;
use modelops_proto::registry::v1::job_registry_client::JobRegistryClient;
use modelops_runtime::telemetry::ClientInterceptor;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::convert::{index_to_proto, state_from_proto, status_from_proto, status_to_proto, timestamp_from_proto, timestamp_to_proto};
use crate::{Claim, JobEvent, JobEvents, JobPage, ListQuery, RegistryClient, SpecStream, WatchFrom};

/// The registry's gRPC API as a [`RegistryClient`]. Cloning shares one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct GrpcRegistry {
    client: JobRegistryClient<InterceptedService<Channel, ClientInterceptor>>,
    endpoint: Arc<str>,
}

impl GrpcRegistry {
    /// A client of the registry at `endpoint` (`http://registry:50051`, or `https://…` checked
    /// against the system's roots), sending `token` as a bearer token, taking messages up to
    /// `max_message_bytes`. It connects on first use and again after a failure, so a service may
    /// start before the registry does: until then its calls fail UNAVAILABLE.
    pub fn connect_lazy(endpoint: &str, token: Option<&str>, max_message_bytes: usize) -> Result<Self, tonic::transport::Error> {
        let client = JobRegistryClient::new(modelops_runtime::peer::lazy_channel(endpoint, token)?)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        Ok(Self {
            client,
            endpoint: Arc::from(endpoint),
        })
    }

    /// The endpoint this client calls.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn state(job: Option<pb::JobState>) -> Result<JobState, Status> {
        state_from_proto(&job.ok_or_else(|| Status::internal("the registry answered without the job's state"))?)
    }
}

impl From<GrpcRegistry> for crate::SharedRegistry {
    fn from(client: GrpcRegistry) -> Self {
        Arc::new(client)
    }
}

#[async_trait::async_trait]
impl RegistryClient for GrpcRegistry {
    async fn get_job(&self, job: &JobId) -> Result<Option<JobState>, Status> {
        let request = pb::GetJobRequest { job_id: job.to_string() };
        match self.client.clone().get_job(request).await {
            Ok(response) => Self::state(response.into_inner().job).map(Some),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }

    async fn list_jobs(&self, query: ListQuery) -> Result<JobPage, Status> {
        let request = pb::ListJobsRequest {
            statuses: query.statuses.iter().map(|s| i32::from(status_to_proto(*s))).collect(),
            since: query.since.map(timestamp_to_proto),
            limit: u32::try_from(query.limit).unwrap_or(u32::MAX),
            page_token: query.page_token.unwrap_or_default(),
        };
        let page = self.client.clone().list_jobs(request).await?.into_inner();
        Ok(JobPage {
            jobs: page.jobs.iter().map(state_from_proto).collect::<Result<_, _>>()?,
            next_page_token: Some(page.next_page_token).filter(|token| !token.is_empty()),
            watch_revision: page.watch_revision,
        })
    }

    async fn read_spec(&self, job: &JobId) -> Result<SpecStream, Status> {
        let mut stream = self.client.clone().read_job_spec(pb::GetJobSpecRequest { job_id: job.to_string() }).await?.into_inner();
        // The first message names the job type (and may already hold bytes).
        let first = stream.message().await?.ok_or_else(|| Status::internal("the registry sent an empty job spec stream"))?;
        let job_type = first.job_type;
        let rest = stream.map(|message| message.map(|m| m.chunk));
        Ok(SpecStream {
            job_type,
            chunks: futures::stream::once(async move { Ok(first.chunk) }).chain(rest).boxed(),
        })
    }

    async fn claim_job(&self, job: &JobId, purpose: &str, holder: &str, ttl: Duration) -> Result<Claim, Status> {
        let request = pb::ClaimJobRequest {
            job_id: job.to_string(),
            purpose: purpose.to_owned(),
            holder: holder.to_owned(),
            ttl_seconds: u32::try_from(ttl.as_secs().max(1)).unwrap_or(u32::MAX),
        };
        let claim = self.client.clone().claim_job(request).await?.into_inner();
        let expires_at = claim.expires_at.as_ref().map(timestamp_from_proto).transpose()?.unwrap_or_default();
        Ok(Claim {
            granted: claim.granted,
            holder: claim.holder,
            expires_at,
        })
    }

    async fn release_claim(&self, job: &JobId, purpose: &str, holder: &str) -> Result<bool, Status> {
        let request = pb::ReleaseClaimRequest {
            job_id: job.to_string(),
            purpose: purpose.to_owned(),
            holder: holder.to_owned(),
        };
        Ok(self.client.clone().release_claim(request).await?.into_inner().released)
    }

    async fn set_index_state(&self, job: &JobId, state: IndexState, results_path: Option<String>, error: Option<String>) -> Result<JobState, Status> {
        let request = pb::SetIndexStateRequest {
            job_id: job.to_string(),
            state: index_to_proto(state).into(),
            results_path,
            error,
        };
        Self::state(self.client.clone().set_index_state(request).await?.into_inner().job)
    }

    async fn watch_jobs(&self, from: WatchFrom) -> Result<JobEvents, Status> {
        let request = pb::WatchJobsRequest {
            job_ids: Vec::new(),
            statuses: Vec::new(),
            after_revision: from.after,
            replay_current: from.replay_current,
        };
        let stream = self.client.clone().watch_jobs(request).await?.into_inner();
        Ok(stream
            .map(|message| {
                let message = message?;
                Ok(JobEvent {
                    seq: message.watch_revision,
                    state: Arc::new(Self::state(message.job)?),
                    previous: status_from_proto(message.previous_status),
                    replayed: message.replayed,
                    traceparent: Some(message.traceparent).filter(|t| !t.is_empty()),
                })
            })
            .boxed())
    }
}
