//! `modelops.registry.v1.JobRegistry` over a [`JobRegistry`]: request validation and
//! conversions only; the rules live in [`crate::registry`].

use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use modelops_core::job::{JobId, JobState, JobStatus};
use modelops_core::pyjson::{self, PyObject, PyValue};
use modelops_proto::registry::v1 as pb;
use modelops_proto::registry::v1::job_registry_server::{JobRegistry as JobRegistryApi, JobRegistryServer};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::RegistryError;
use crate::registry::{self, IndexState, JobRegistry, ListQuery, Registration, SpecInput, StatusUpdate, ValidationFields};

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

/// The fully-qualified service name, for health and reflection.
pub const SERVICE_NAME: &str = "modelops.registry.v1.JobRegistry";

fn job_id(id: &str) -> Result<JobId, Status> {
    JobId::new(id).map_err(|e| RegistryError::InvalidJobId(e).into())
}

/// Converts a domain status to the proto enum.
pub fn status_to_proto(status: JobStatus) -> pb::JobStatus {
    match status {
        JobStatus::Pending => pb::JobStatus::Pending,
        JobStatus::Submitting => pb::JobStatus::Submitting,
        JobStatus::Scheduled => pb::JobStatus::Scheduled,
        JobStatus::Running => pb::JobStatus::Running,
        JobStatus::Validating => pb::JobStatus::Validating,
        JobStatus::Succeeded => pb::JobStatus::Succeeded,
        JobStatus::Partial => pb::JobStatus::Partial,
        JobStatus::Failed => pb::JobStatus::Failed,
        JobStatus::Cancelled => pb::JobStatus::Cancelled,
    }
}

/// Converts a proto status to the domain one (`None` for UNSPECIFIED or unknown values).
pub fn status_from_proto(value: i32) -> Option<JobStatus> {
    Some(match pb::JobStatus::try_from(value).ok()? {
        pb::JobStatus::Unspecified => return None,
        pb::JobStatus::Pending => JobStatus::Pending,
        pb::JobStatus::Submitting => JobStatus::Submitting,
        pb::JobStatus::Scheduled => JobStatus::Scheduled,
        pb::JobStatus::Running => JobStatus::Running,
        pb::JobStatus::Validating => JobStatus::Validating,
        pb::JobStatus::Succeeded => JobStatus::Succeeded,
        pb::JobStatus::Partial => JobStatus::Partial,
        pb::JobStatus::Failed => JobStatus::Failed,
        pb::JobStatus::Cancelled => JobStatus::Cancelled,
    })
}

fn required_status(value: i32, field: &str) -> Result<JobStatus, Status> {
    status_from_proto(value).ok_or_else(|| Status::invalid_argument(format!("{field} must be a job status")))
}

fn index_to_proto(state: IndexState) -> pb::IndexState {
    match state {
        IndexState::None => pb::IndexState::None,
        IndexState::Running => pb::IndexState::Running,
        IndexState::Done => pb::IndexState::Done,
        IndexState::Failed => pb::IndexState::Failed,
    }
}

fn opt_str(state: &JobState, key: &str) -> Option<String> {
    state.get_str(key).map(str::to_owned)
}

fn str_list(state: &JobState, key: &str) -> Vec<String> {
    state
        .get(key)
        .and_then(PyValue::as_list)
        .map(|items| {
            items
                .iter()
                .map(|v| v.as_str().map_or_else(|| pyjson::to_canonical(v), str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Converts a domain state to the proto message.
pub fn state_to_proto(state: &JobState) -> pb::JobState {
    pb::JobState {
        job_id: state.job_id().to_string(),
        status: status_to_proto(state.status()).into(),
        created_at: state.created_at().to_owned(),
        updated_at: state.updated_at().to_owned(),
        k8s_name: opt_str(state, "k8s_name"),
        k8s_namespace: opt_str(state, "k8s_namespace"),
        k8s_uid: opt_str(state, "k8s_uid"),
        tasks_total: state.tasks_total(),
        tasks_completed: state.tasks_completed(),
        error_message: opt_str(state, "error_message"),
        error_code: opt_str(state, "error_code"),
        results_path: opt_str(state, "results_path"),
        expected_outputs_json: state
            .get("expected_outputs")
            .and_then(PyValue::as_list)
            .map(|items| items.iter().map(pyjson::to_canonical).collect())
            .unwrap_or_default(),
        verified_outputs: str_list(state, "verified_outputs"),
        missing_outputs: str_list(state, "missing_outputs"),
        tasks_verified: state.get_count("tasks_verified"),
        validation_started_at: opt_str(state, "validation_started_at"),
        validation_completed_at: opt_str(state, "validation_completed_at"),
        validation_attempts: state.get_count("validation_attempts"),
        last_validation_error: opt_str(state, "last_validation_error"),
        metadata_json: pyjson::to_canonical(&PyValue::Object(state.metadata())),
        progress_percent: state.progress_percent(),
        revision: registry::revision(state),
        index_state: index_to_proto(IndexState::of(state)).into(),
        index_error: opt_str(state, registry::INDEX_ERROR_KEY),
        state_json: state.to_json(),
    }
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

fn timestamp(ts: &prost_types::Timestamp) -> Result<DateTime<Utc>, Status> {
    let nanos = u32::try_from(ts.nanos).map_err(|_| Status::invalid_argument("timestamp nanos must be positive"))?;
    DateTime::from_timestamp(ts.seconds, nanos).ok_or_else(|| Status::invalid_argument("timestamp out of range"))
}

fn to_timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
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
        let hub = self.registry.hub();
        let (backlog, mut live) = hub.subscribe(request.after_revision)?;
        let replay = if request.replay_current { self.registry.all_jobs().await? } else { Vec::new() };
        let replay_seq = hub.last_seq();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::WatchJobsResponse, Status>>(64);
        let registry = self.registry.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let send = |state: &JobState, previous: Option<JobStatus>, replayed: bool, seq: u64| pb::WatchJobsResponse {
                job: Some(state_to_proto(state)),
                previous_status: previous.map_or(pb::JobStatus::Unspecified, status_to_proto).into(),
                replayed,
                watch_revision: seq,
            };
            for state in replay.iter().filter(|s| wanted(s)) {
                if tx.send(Ok(send(state, None, true, replay_seq))).await.is_err() {
                    return;
                }
            }
            let mut last = request.after_revision;
            for event in backlog {
                last = event.seq;
                if wanted(&event.state) && tx.send(Ok(send(&event.state, event.previous, false, event.seq))).await.is_err() {
                    return;
                }
            }
            loop {
                let received = tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tx.closed() => return,
                    received = live.recv() => received,
                };
                let events = match received {
                    Ok(event) if event.seq > last => vec![event],
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => match registry.hub().since(last) {
                        Ok(events) => events,
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                for event in events {
                    last = event.seq;
                    if wanted(&event.state) && tx.send(Ok(send(&event.state, event.previous, false, event.seq))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
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
        let index = match pb::IndexState::try_from(request.state) {
            Ok(pb::IndexState::None) => IndexState::None,
            Ok(pb::IndexState::Running) => IndexState::Running,
            Ok(pb::IndexState::Done) => IndexState::Done,
            Ok(pb::IndexState::Failed) => IndexState::Failed,
            Ok(pb::IndexState::Unspecified) | Err(_) => return Err(Status::invalid_argument("state must be an index state")),
        };
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
