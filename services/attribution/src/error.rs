//! The attribution service's errors and their one mapping to gRPC statuses.

use modelops_core::job::JobIdError;
use modelops_core::records::RecordError;

use crate::codec::CodecError;
use crate::edge::InvalidEdge;

/// Why an attribution operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AttributionError {
    /// The job id is not valid.
    #[error(transparent)]
    InvalidJobId(#[from] JobIdError),
    /// A request field is not valid.
    #[error("{0}")]
    InvalidArgument(String),
    /// An edge of a batch is not valid (the batch is refused whole).
    #[error(transparent)]
    InvalidEdge(#[from] InvalidEdge),
    /// No such job.
    #[error("job {0} not found")]
    NotFound(String),
    /// The job is sealed: no more edges.
    #[error("job {0} is sealed; its edges can no longer change")]
    Sealed(String),
    /// Derivation needs a simulation job spec.
    #[error("job {0} has no simulation spec to derive edges from")]
    NoSpec(String),
    /// Only a partial job has tasks to resume.
    #[error("job {0} is {1}; only partial jobs have resumable tasks")]
    NotPartial(String, modelops_core::job::JobStatus),
    /// The registry refused or failed: its status, passed on as it is.
    #[error("{}", .0.message())]
    Registry(#[from] tonic::Status),
    /// The job's stored spec does not parse.
    #[error("the job's stored spec is unreadable: {0}")]
    StoredSpec(#[from] modelops_core::study::SpecError),
    /// A provenance record could not be read.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// An edge file could not be read or written.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A stored attribution object is unreadable.
    #[error("{key} is unreadable: {reason}")]
    Corrupt {
        /// The object.
        key: String,
        /// Why.
        reason: String,
    },
    /// The results store failed.
    #[error("results store: {0}")]
    Store(#[from] object_store::Error),
}

impl AttributionError {
    /// The gRPC status code of this error (the one mapping, also used by services that call
    /// attribution in-process to tell a backend that is down from bad data).
    pub fn code(&self) -> tonic::Code {
        match self {
            AttributionError::InvalidJobId(_) | AttributionError::InvalidArgument(_) | AttributionError::InvalidEdge(_) => tonic::Code::InvalidArgument,
            AttributionError::NotFound(_) => tonic::Code::NotFound,
            AttributionError::Sealed(_) | AttributionError::NoSpec(_) | AttributionError::NotPartial(..) => tonic::Code::FailedPrecondition,
            AttributionError::Registry(status) => status.code(),
            AttributionError::Record(RecordError::Store { .. }) | AttributionError::Store(_) => tonic::Code::Unavailable,
            AttributionError::Record(RecordError::InvalidPath { .. }) => tonic::Code::InvalidArgument,
            AttributionError::Record(RecordError::NotFound { .. } | RecordError::Malformed { .. })
            | AttributionError::Codec(_)
            | AttributionError::Corrupt { .. }
            | AttributionError::StoredSpec(_) => {
                tonic::Code::DataLoss
            }
        }
    }
}

impl From<AttributionError> for tonic::Status {
    fn from(error: AttributionError) -> Self {
        // A registry status is the registry's answer, reason and all.
        let error = match error {
            AttributionError::Registry(status) => return status,
            error => error,
        };
        let message = modelops_runtime::messages::scrubbed(&error.to_string());
        let code = error.code();
        match code {
            tonic::Code::DataLoss | tonic::Code::Internal => tracing::error!(%message, "attribution fault"),
            tonic::Code::Unavailable => tracing::warn!(%message, "attribution backend unavailable"),
            _ => tracing::debug!(%message, ?code, "request refused"),
        }
        // Refusals a caller acts on carry a stable reason.
        let reason = match &error {
            AttributionError::Sealed(job) => Some(("JOB_SEALED", job.clone())),
            AttributionError::NoSpec(job) => Some(("NO_JOB_SPEC", job.clone())),
            AttributionError::NotPartial(job, _) => Some(("JOB_NOT_PARTIAL", job.clone())),
            _ => None,
        };
        match reason {
            Some((reason, job)) => with_reason(code, message, reason, vec![("job_id", job)]),
            None => tonic::Status::new(code, message),
        }
    }
}

fn with_reason(code: tonic::Code, message: String, reason: &str, about: Vec<(&'static str, String)>) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt as _};
    let metadata: std::collections::HashMap<String, String> = about.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    tonic::Status::with_error_details(code, message, ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata))
}

/// The `domain` of the `google.rpc.ErrorInfo` attribution attaches to its refusals.
pub const ERROR_DOMAIN: &str = "attribution.modelops";
