//! `modelops.registry.v1.JobRegistry` over a [`JobRegistry`]: request validation and
//! conversions only; the rules live in [`crate::registry`].

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use modelops_core::job::{JobId, JobState, JobStatus};
use modelops_core::pyjson::{self, PyObject, PyValue};
use modelops_proto::registry::v1 as pb;
use modelops_proto::registry::v1::job_registry_server::{JobRegistry as JobRegistryApi, JobRegistryServer};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::RegistryError;
use crate::registry::{JobRegistry, ListQuery, Registration, SpecInput, StatusUpdate, ValidationFields};

/// The gRPC face of a registry.
#[derive(Debug, Clone)]
pub struct RegistryService {
    registry: JobRegistry,
    shutdown: CancellationToken,
    stores: StoreUrls,
}

/// Where the server keeps its data, as `GetStores` tells submitters: URLs without credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreUrls {
    /// The provenance store.
    pub provenance: String,
    /// The results store.
    pub results: String,
    /// The job spec store.
    pub jobs: String,
}

impl StoreUrls {
    /// `provenance`, `results` and `jobs` store URLs, each without a user, password or a query
    /// parameter other than `endpoint`, `region` and `account` (keys and tokens stay home).
    pub fn new(provenance: &str, results: &str, jobs: &str) -> Self {
        Self {
            provenance: without_credentials(provenance),
            results: without_credentials(results),
            jobs: without_credentials(jobs),
        }
    }
}

/// A store URL without what could be a credential.
pub fn without_credentials(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.split(['?', '#']).next().unwrap_or_default().to_owned();
    };
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_fragment(None);
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(key, _)| matches!(key.as_ref(), "endpoint" | "region" | "account"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    parsed.to_string()
}

impl RegistryService {
    /// Serves `registry`; watch streams end when `shutdown` is cancelled.
    pub fn new(registry: JobRegistry, shutdown: CancellationToken) -> Self {
        Self {
            registry,
            shutdown,
            stores: StoreUrls::default(),
        }
    }

    /// The same service, telling `GetStores` callers about `stores`.
    pub fn with_stores(mut self, stores: StoreUrls) -> Self {
        self.stores = stores;
        self
    }

    /// The tonic server for this service, taking and sending messages of up to
    /// `max_message_bytes` (job specs of 100k+ tasks are tens of MB).
    pub fn into_server(self, max_message_bytes: usize) -> JobRegistryServer<Self> {
        JobRegistryServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

/// Serves `registry` alone on a loopback port until `shutdown`, and returns a client of it: the
/// registry as another process would reach it, for tests and benchmarks of the services that
/// call it over gRPC.
pub async fn serve_on_loopback(registry: JobRegistry, shutdown: CancellationToken) -> std::io::Result<modelops_registry_client::GrpcRegistry> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    serve_alone(registry, listener, shutdown);
    modelops_registry_client::GrpcRegistry::connect_lazy(&endpoint, None, 64 * 1024 * 1024).map_err(std::io::Error::other)
}

/// Serves `registry` alone (no health, reflection or auth) on `listener` until `shutdown`; the
/// task ends once the listener is closed and open calls have finished.
pub fn serve_alone(registry: JobRegistry, listener: tokio::net::TcpListener, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    let service = RegistryService::new(registry, shutdown.clone()).into_server(64 * 1024 * 1024);
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        if let Err(error) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
        {
            tracing::warn!(%error, "registry server failed");
        }
    })
}

/// The fully-qualified service name, for health and reflection.
pub const SERVICE_NAME: &str = "modelops.registry.v1.JobRegistry";

fn job_id(id: &str) -> Result<JobId, Status> {
    JobId::new(id).map_err(|e| RegistryError::InvalidJobId(e).into())
}

pub use modelops_registry_client::convert::{state_to_proto, status_from_proto, status_to_proto};
use modelops_registry_client::convert::{index_from_proto, timestamp_from_proto as timestamp, timestamp_to_proto as to_timestamp};

fn required_status(value: i32, field: &str) -> Result<JobStatus, Status> {
    status_from_proto(value).ok_or_else(|| Status::invalid_argument(format!("{field} must be a job status")))
}

fn metadata_object(json: &str, field: &str) -> Result<PyObject, Status> {
    if json.trim().is_empty() {
        return Ok(PyObject::new());
    }
    match pyjson::parse(json.as_bytes()) {
        Ok(PyValue::Object(object)) => Ok(object),
        Ok(_) => Err(Status::invalid_argument(format!("{field} must be a JSON object"))),
        Err(e) => Err(Status::invalid_argument(format!("{field}: {e}"))),
    }
}

/// The largest chunk of a spec blob in one `ReadJobSpec` message.
pub const SPEC_CHUNK_BYTES: usize = 1024 * 1024;

/// A spec blob's byte stream as messages of at most [`SPEC_CHUNK_BYTES`]: large reads split,
/// small ones (a file store's 8 KiB reads) gathered, so a 40 MB spec is forty messages, not five
/// thousand.
fn spec_messages(
    chunks: futures::stream::BoxStream<'static, Result<bytes::Bytes, RegistryError>>,
) -> impl Stream<Item = Result<bytes::Bytes, RegistryError>> + Send {
    let state = (chunks, bytes::BytesMut::new(), false);
    futures::stream::unfold(state, |(mut chunks, mut pending, mut ended)| async move {
        loop {
            if pending.len() >= SPEC_CHUNK_BYTES || (ended && !pending.is_empty()) {
                let n = pending.len().min(SPEC_CHUNK_BYTES);
                let message = pending.split_to(n).freeze();
                return Some((Ok(message), (chunks, pending, ended)));
            }
            if ended {
                return None;
            }
            match chunks.next().await {
                Some(Ok(bytes)) => pending.extend_from_slice(&bytes),
                Some(Err(e)) => return Some((Err(e), (chunks, pending, true))),
                None => ended = true,
            }
        }
    })
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchJobsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl JobRegistryApi for RegistryService {
    async fn register_job(&self, request: Request<pb::RegisterJobRequest>) -> Result<Response<pb::RegisterJobResponse>, Status> {
        let request = request.into_inner();
        let job_id = if request.job_id.is_empty() { None } else { Some(job_id(&request.job_id)?) };
        let spec = match request.spec {
            None => None,
            Some(pb::register_job_request::Spec::JobSpecJson(json)) => Some(SpecInput::JobSpecJson(json)),
            Some(pb::register_job_request::Spec::Study(study)) => Some(SpecInput::Study {
                study_json: study.study_json,
                bundle_ref: study.bundle_ref,
            }),
        };
        let registration = Registration {
            job_id,
            k8s_name: request.k8s_name,
            k8s_namespace: request.k8s_namespace,
            metadata: metadata_object(&request.metadata_json, "metadata_json")?,
            spec,
        };
        let (state, spec_key) = self.registry.register(registration).await?;
        Ok(Response::new(pb::RegisterJobResponse {
            job: Some(state_to_proto(&state)),
            spec_key,
        }))
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Result<Response<pb::GetJobResponse>, Status> {
        let state = self.registry.require(&job_id(&request.into_inner().job_id)?).await?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(state_to_proto(&state)),
        }))
    }

    async fn update_status(&self, request: Request<pb::UpdateStatusRequest>) -> Result<Response<pb::UpdateStatusResponse>, Status> {
        let request = request.into_inner();
        let id = job_id(&request.job_id)?;
        let update = StatusUpdate {
            status: required_status(request.status, "status")?,
            error_message: request.error_message,
            error_code: request.error_code,
            results_path: request.results_path,
            tasks_completed: request.tasks_completed,
            tasks_total: request.tasks_total,
            k8s_uid: request.k8s_uid,
            metadata: request.metadata_json.as_deref().map(|m| metadata_object(m, "metadata_json")).transpose()?,
            expected_revision: request.expected_revision,
            validation: ValidationFields {
                started_at: request.validation_started_at,
                completed_at: request.validation_completed_at,
                attempts: request.validation_attempts,
                last_error: request.last_validation_error,
                tasks_verified: request.tasks_verified,
                verified_outputs: request.verified_outputs.map(|l| l.values),
                missing_outputs: request.missing_outputs.map(|l| l.values),
            },
            clear: request.clear_fields,
        };
        let (state, changed) = self.registry.update_status(&id, update).await?;
        Ok(Response::new(pb::UpdateStatusResponse {
            job: Some(state_to_proto(&state)),
            changed,
        }))
    }

    async fn add_progress(&self, request: Request<pb::AddProgressRequest>) -> Result<Response<pb::AddProgressResponse>, Status> {
        let request = request.into_inner();
        let id = job_id(&request.job_id)?;
        let (tasks_completed, tasks_total) = self
            .registry
            .add_progress(&id, request.completed_delta, request.total_delta, request.ack_when_queued)
            .await?;
        Ok(Response::new(pb::AddProgressResponse { tasks_completed, tasks_total }))
    }

    async fn set_progress(&self, request: Request<pb::SetProgressRequest>) -> Result<Response<pb::SetProgressResponse>, Status> {
        let request = request.into_inner();
        let state = self
            .registry
            .set_progress(&job_id(&request.job_id)?, request.tasks_completed, request.tasks_total)
            .await?;
        Ok(Response::new(pb::SetProgressResponse {
            job: Some(state_to_proto(&state)),
        }))
    }

    async fn finalize_job(&self, request: Request<pb::FinalizeJobRequest>) -> Result<Response<pb::FinalizeJobResponse>, Status> {
        let request = request.into_inner();
        let status = required_status(request.status, "status")?;
        let state = self
            .registry
            .finalize(&job_id(&request.job_id)?, status, request.results_path, request.error_message, request.error_code)
            .await?;
        Ok(Response::new(pb::FinalizeJobResponse {
            job: Some(state_to_proto(&state)),
        }))
    }

    async fn cancel_job(&self, request: Request<pb::CancelJobRequest>) -> Result<Response<pb::CancelJobResponse>, Status> {
        let request = request.into_inner();
        let state = self.registry.cancel(&job_id(&request.job_id)?, request.reason.as_deref()).await?;
        Ok(Response::new(pb::CancelJobResponse {
            job: Some(state_to_proto(&state)),
        }))
    }

    async fn list_jobs(&self, request: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let request = request.into_inner();
        let statuses = request
            .statuses
            .iter()
            .map(|s| required_status(*s, "statuses"))
            .collect::<Result<Vec<_>, _>>()?;
        let query = ListQuery {
            statuses,
            since: request.since.as_ref().map(timestamp).transpose()?,
            limit: request.limit as usize,
            page_token: (!request.page_token.is_empty()).then_some(request.page_token),
        };
        let page = self.registry.list(query).await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: page.jobs.iter().map(state_to_proto).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
            watch_revision: page.watch_revision,
        }))
    }

    async fn count_jobs_by_status(&self, _: Request<pb::CountJobsByStatusRequest>) -> Result<Response<pb::CountJobsByStatusResponse>, Status> {
        let counts = self.registry.count_by_status().await?;
        Ok(Response::new(pb::CountJobsByStatusResponse {
            counts: counts
                .into_iter()
                .map(|(status, count)| pb::StatusCount {
                    status: status_to_proto(status).into(),
                    count,
                })
                .collect(),
        }))
    }

    async fn get_job_spec(&self, request: Request<pb::GetJobSpecRequest>) -> Result<Response<pb::GetJobSpecResponse>, Status> {
        let (job_type, job_spec_json) = self.registry.get_spec(&job_id(&request.into_inner().job_id)?).await?;
        Ok(Response::new(pb::GetJobSpecResponse { job_type, job_spec_json }))
    }

    type ReadJobSpecStream = Pin<Box<dyn Stream<Item = Result<pb::ReadJobSpecResponse, Status>> + Send>>;

    async fn read_job_spec(&self, request: Request<pb::GetJobSpecRequest>) -> Result<Response<Self::ReadJobSpecStream>, Status> {
        let (job_type, chunks) = self.registry.read_spec(&job_id(&request.into_inner().job_id)?).await?;
        let mut job_type = Some(job_type);
        let messages = spec_messages(chunks).map(move |chunk| {
            Ok(pb::ReadJobSpecResponse {
                job_type: job_type.take().unwrap_or_default(),
                chunk: chunk.map_err(Status::from)?,
            })
        });
        Ok(Response::new(Box::pin(messages)))
    }

    type WatchJobsStream = WatchStream;

    async fn watch_jobs(&self, request: Request<pb::WatchJobsRequest>) -> Result<Response<Self::WatchJobsStream>, Status> {
        let request = request.into_inner();
        let ids = request.job_ids.iter().map(|id| job_id(id)).collect::<Result<Vec<_>, _>>()?;
        let statuses = request
            .statuses
            .iter()
            .map(|s| required_status(*s, "statuses"))
            .collect::<Result<Vec<_>, _>>()?;
        let wanted = move |state: &JobState| (ids.is_empty() || ids.contains(state.job_id())) && (statuses.is_empty() || statuses.contains(&state.status()));
        let events = self.registry.watch(request.after_revision, request.replay_current, self.shutdown.clone()).await?;
        let messages = events.filter_map(move |event| {
            let message = match event {
                Ok(event) if wanted(&event.state) => Some(Ok(pb::WatchJobsResponse {
                    job: Some(state_to_proto(&event.state)),
                    previous_status: event.previous.map_or(pb::JobStatus::Unspecified, status_to_proto).into(),
                    replayed: event.replayed,
                    watch_revision: event.seq,
                    traceparent: event.traceparent.unwrap_or_default(),
                })),
                Ok(_) => None,
                Err(e) => Some(Err(Status::from(e))),
            };
            std::future::ready(message)
        });
        Ok(Response::new(Box::pin(messages)))
    }

    async fn claim_job(&self, request: Request<pb::ClaimJobRequest>) -> Result<Response<pb::ClaimJobResponse>, Status> {
        let request = request.into_inner();
        // 0 asks for the default; the registry refuses a TTL over its limit.
        let ttl = Duration::from_secs(if request.ttl_seconds == 0 { 60 } else { u64::from(request.ttl_seconds) });
        let claim = self
            .registry
            .claim(&job_id(&request.job_id)?, &request.purpose, &request.holder, ttl)
            .await?;
        Ok(Response::new(pb::ClaimJobResponse {
            granted: claim.granted,
            holder: claim.holder,
            expires_at: Some(to_timestamp(claim.expires_at)),
        }))
    }

    async fn release_claim(&self, request: Request<pb::ReleaseClaimRequest>) -> Result<Response<pb::ReleaseClaimResponse>, Status> {
        let request = request.into_inner();
        let released = self
            .registry
            .release_claim(&job_id(&request.job_id)?, &request.purpose, &request.holder)
            .await?;
        Ok(Response::new(pb::ReleaseClaimResponse { released }))
    }

    async fn get_stores(&self, _request: Request<pb::GetStoresRequest>) -> Result<Response<pb::GetStoresResponse>, Status> {
        Ok(Response::new(pb::GetStoresResponse {
            provenance_url: self.stores.provenance.clone(),
            results_url: self.stores.results.clone(),
            jobs_url: self.stores.jobs.clone(),
            registry_store: self.registry.describe_store(),
        }))
    }

    async fn set_index_state(&self, request: Request<pb::SetIndexStateRequest>) -> Result<Response<pb::SetIndexStateResponse>, Status> {
        let request = request.into_inner();
        let index = index_from_proto(request.state).ok_or_else(|| Status::invalid_argument("state must be an index state"))?;
        let state = self
            .registry
            .set_index_state(&job_id(&request.job_id)?, index, request.results_path, request.error)
            .await?;
        Ok(Response::new(pb::SetIndexStateResponse {
            job: Some(state_to_proto(&state)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_lose_their_credentials() {
        assert_eq!(without_credentials("file:///data/provenance"), "file:///data/provenance");
        assert_eq!(without_credentials("az://results/prefix?account_key=SECRET&account=dev"), "az://results/prefix?account=dev");
        assert_eq!(
            without_credentials("s3://bucket/p?endpoint=http://127.0.0.1:9000&region=us-east-1&secret_access_key=SECRET"),
            "s3://bucket/p?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=us-east-1"
        );
        assert_eq!(without_credentials("s3://user:pw@bucket/p"), "s3://bucket/p");
        assert!(!without_credentials("az://c/p?sas_token=SECRET#x").contains("SECRET"));
    }
}
