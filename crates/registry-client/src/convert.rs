//! Conversions between the registry's proto messages and the job model of `modelops-core`,
//! shared by the registry's server and its clients.

use chrono::{DateTime, Utc};
use modelops_core::job::{INDEX_ERROR_KEY, IndexState, JobState, JobStatus};
use modelops_core::pyjson::{self, PyValue};
use modelops_proto::registry::v1 as pb;
use tonic::Status;

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

/// Converts an index state to the proto enum.
pub fn index_to_proto(state: IndexState) -> pb::IndexState {
    match state {
        IndexState::None => pb::IndexState::None,
        IndexState::Running => pb::IndexState::Running,
        IndexState::Done => pb::IndexState::Done,
        IndexState::Failed => pb::IndexState::Failed,
    }
}

/// Converts a proto index state to the domain one (`None` for UNSPECIFIED or unknown values).
pub fn index_from_proto(value: i32) -> Option<IndexState> {
    Some(match pb::IndexState::try_from(value).ok()? {
        pb::IndexState::Unspecified => return None,
        pb::IndexState::None => IndexState::None,
        pb::IndexState::Running => IndexState::Running,
        pb::IndexState::Done => IndexState::Done,
        pb::IndexState::Failed => IndexState::Failed,
    })
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
        revision: state.revision(),
        index_state: index_to_proto(IndexState::of(state)).into(),
        index_error: opt_str(state, INDEX_ERROR_KEY),
        state_json: state.to_json(),
    }
}

/// The domain state of a proto message, read from its `state_json` (the exact stored document,
/// so nothing of it is lost on the way); DATA_LOSS when the server sent a document that does not
/// parse.
pub fn state_from_proto(state: &pb::JobState) -> Result<JobState, Status> {
    JobState::from_json(state.state_json.as_bytes())
        .map_err(|e| Status::data_loss(format!("the registry sent job {}'s state in a form that does not parse: {e}", state.job_id)))
}

/// A proto timestamp as a UTC time; INVALID_ARGUMENT when out of range.
pub fn timestamp_from_proto(ts: &prost_types::Timestamp) -> Result<DateTime<Utc>, Status> {
    let nanos = u32::try_from(ts.nanos).map_err(|_| Status::invalid_argument("timestamp nanos must be positive"))?;
    DateTime::from_timestamp(ts.seconds, nanos).ok_or_else(|| Status::invalid_argument("timestamp out of range"))
}

/// A UTC time as a proto timestamp.
pub fn timestamp_to_proto(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}
