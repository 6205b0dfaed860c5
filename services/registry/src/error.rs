//! The registry's errors and their one mapping to gRPC statuses.

use modelops_core::job::{JobIdError, JobStatus};
use modelops_core::study::SpecError;

use crate::store::StoreError;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The job id is not valid.
    #[error(transparent)]
    InvalidJobId(#[from] JobIdError),
    /// A request field is not valid.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such job.
    #[error("job {0} not found")]
    NotFound(String),
    /// The job id is taken.
    #[error("job {0} is already registered")]
    AlreadyExists(String),
    /// The transition is not in upstream's table.
    #[error("Invalid transition from {from} to {to} for job {job}")]
    InvalidTransition {
        /// The job.
        job: String,
        /// Its status.
        from: JobStatus,
        /// The status asked for.
        to: JobStatus,
    },
    /// The job is in a terminal state and cannot change to another one.
    #[error("Cannot modify terminal state {status} of job {job} (asked for {to})")]
    TerminalState {
        /// The job.
        job: String,
        /// Its terminal status.
        status: JobStatus,
        /// The status asked for.
        to: JobStatus,
    },
    /// Compare-and-swap kept losing to concurrent writers.
    #[error("job {job} changed concurrently {attempts} times in a row; retry")]
    Conflict {
        /// The key.
        job: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A conditional update named a revision the job is no longer at.
    #[error("job {job} is at revision {actual}, not {expected}")]
    RevisionMismatch {
        /// The job.
        job: String,
        /// The revision asked for.
        expected: u64,
        /// The revision stored.
        actual: u64,
    },
    /// The job spec is not valid.
    #[error("invalid job spec: {0}")]
    Spec(#[from] SpecError),
    /// A stored state cannot be read.
    #[error("stored state {key} is unreadable: {reason}")]
    CorruptState {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job spec store failed.
    #[error("job spec store: {message}")]
    SpecStore {
        /// What failed.
        message: String,
        /// Whether the store was unreachable (as opposed to refusing).
        unavailable: bool,
    },
    /// A job spec is there but cannot be read as one (a link, a FIFO, a directory another writer
    /// put in the jobs store).
    #[error("job spec store: {0}")]
    UnreadableSpec(String),
    /// A watch asked to resume from a revision the server no longer keeps.
    #[error("watch revision {requested} is no longer retained (oldest kept: {oldest}); re-list with replay_current")]
    WatchTooOld {
        /// The revision asked for.
        requested: u64,
        /// The oldest retained.
        oldest: u64,
    },
    /// A watch asked to resume from a position of another server (another replica, or this one
    /// before a restart).
    #[error("watch revision {requested} is from another registry server or from before a restart; re-list with replay_current")]
    WatchElsewhere {
        /// The revision asked for.
        requested: u64,
    },
    /// A request asked for more than one of the server's limits allows (docs/LIMITS.md).
    #[error("{what} is {}, over the limit of {max} (set by --{flag})", value.map_or_else(|| "too large to count".to_owned(), |v| v.to_string()))]
    LimitExceeded {
        /// What is limited.
        what: &'static str,
        /// The value asked for (`None` when it overflows a count).
        value: Option<u64>,
        /// The limit.
        max: u64,
        /// The `mops serve` flag setting the limit.
        flag: &'static str,
    },
    /// The server is stopping.
    #[error("the registry is shutting down")]
    ShuttingDown,
}

impl From<object_store::Error> for RegistryError {
    fn from(error: object_store::Error) -> Self {
        if let object_store::Error::PermissionDenied { .. } = error {
            return Self::UnreadableSpec(error.to_string());
        }
        let unavailable = !matches!(
            error,
            object_store::Error::InvalidPath { .. } | object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
        );
        Self::SpecStore {
            message: error.to_string(),
            unavailable,
        }
    }
}

/// `message` fit for a gRPC status: no server path or store URL, cut to a length
/// ([`modelops_runtime::messages::scrubbed`]).
pub fn capped(message: String) -> String {
    modelops_runtime::messages::scrubbed(&message)
}

impl RegistryError {
    /// The gRPC status code of this error (the one mapping, also used by services that call
    /// the registry).
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::InvalidJobId(_) | Self::InvalidArgument(_) | Self::Spec(_) => tonic::Code::InvalidArgument,
            Self::NotFound(_) => tonic::Code::NotFound,
            Self::AlreadyExists(_) => tonic::Code::AlreadyExists,
            Self::InvalidTransition { .. } | Self::TerminalState { .. } => tonic::Code::FailedPrecondition,
            Self::Conflict { .. } | Self::RevisionMismatch { .. } => tonic::Code::Aborted,
            Self::WatchTooOld { .. } | Self::WatchElsewhere { .. } => tonic::Code::OutOfRange,
            Self::LimitExceeded { .. } => tonic::Code::ResourceExhausted,
            Self::ShuttingDown => tonic::Code::Unavailable,
            Self::Store(StoreError::Unavailable(_)) => tonic::Code::Unavailable,
            Self::Store(StoreError::InvalidKey { .. }) => tonic::Code::InvalidArgument,
            // The store refusing the server's own credentials is a server misconfiguration.
            Self::Store(StoreError::InvalidUrl { .. } | StoreError::Unauthenticated(_) | StoreError::Backend(_) | StoreError::Compacted(_)) => tonic::Code::Internal,
            Self::SpecStore { unavailable: true, .. } => tonic::Code::Unavailable,
            Self::SpecStore { unavailable: false, .. } => tonic::Code::Internal,
            Self::UnreadableSpec(_) => tonic::Code::FailedPrecondition,
            Self::CorruptState { .. } => tonic::Code::DataLoss,
        }
    }
}

/// The `domain` of the `google.rpc.ErrorInfo` the registry attaches to its refusals.
pub const ERROR_DOMAIN: &str = "registry.modelops";

impl RegistryError {
    /// The stable, machine-readable reason of a refusal, sent as a `google.rpc.ErrorInfo` with
    /// what it concerns (`job_id`, `from`, `to`, …); `None` for faults.
    pub fn reason(&self) -> Option<(&'static str, Vec<(&'static str, String)>)> {
        Some(match self {
            Self::InvalidTransition { job, from, to } => ("INVALID_TRANSITION", vec![("job_id", job.clone()), ("from", from.to_string()), ("to", to.to_string())]),
            Self::TerminalState { job, status, to } => ("TERMINAL_STATE", vec![("job_id", job.clone()), ("status", status.to_string()), ("to", to.to_string())]),
            Self::RevisionMismatch { job, expected, actual } => (
                "REVISION_CONFLICT",
                vec![("job_id", job.clone()), ("expected", expected.to_string()), ("actual", actual.to_string())],
            ),
            Self::Conflict { job, attempts } => ("CONCURRENT_UPDATES", vec![("job_id", job.clone()), ("attempts", attempts.to_string())]),
            Self::NotFound(job) => ("JOB_NOT_FOUND", vec![("job_id", job.clone())]),
            Self::AlreadyExists(job) => ("JOB_EXISTS", vec![("job_id", job.clone())]),
            Self::LimitExceeded { flag, max, .. } => ("LIMIT_EXCEEDED", vec![("flag", format!("--{flag}")), ("max", max.to_string())]),
            Self::WatchTooOld { .. } => ("WATCH_POSITION_EXPIRED", Vec::new()),
            Self::WatchElsewhere { .. } => ("WATCH_POSITION_UNKNOWN", Vec::new()),
            Self::InvalidJobId(_)
            | Self::InvalidArgument(_)
            | Self::Spec(_)
            | Self::CorruptState { .. }
            | Self::Store(_)
            | Self::SpecStore { .. }
            | Self::UnreadableSpec(_)
            | Self::ShuttingDown => return None,
        })
    }
}

impl From<RegistryError> for tonic::Status {
    fn from(error: RegistryError) -> Self {
        use tonic_types::{ErrorDetails, StatusExt as _};
        let message = capped(error.to_string());
        let code = error.code();
        match code {
            tonic::Code::Internal | tonic::Code::DataLoss => tracing::error!(%message, "registry fault"),
            tonic::Code::Unavailable => tracing::warn!(%message, "registry backend unavailable"),
            _ => tracing::debug!(%message, ?code, "request refused"),
        }
        match error.reason() {
            Some((reason, about)) => {
                let metadata: std::collections::HashMap<String, String> = about.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                tonic::Status::with_error_details(code, message, ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata))
            }
            None => tonic::Status::new(code, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_documented_mapping() {
        let code = |e: RegistryError| tonic::Status::from(e).code();
        assert_eq!(code(RegistryError::NotFound("j".into())), tonic::Code::NotFound);
        assert_eq!(code(RegistryError::AlreadyExists("j".into())), tonic::Code::AlreadyExists);
        assert_eq!(
            code(RegistryError::TerminalState {
                job: "j".into(),
                status: JobStatus::Succeeded,
                to: JobStatus::Failed
            }),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(code(RegistryError::Conflict { job: "j".into(), attempts: 5 }), tonic::Code::Aborted);
        assert_eq!(code(RegistryError::Store(StoreError::Unavailable("down".into()))), tonic::Code::Unavailable);
        assert_eq!(code(RegistryError::InvalidJobId(JobIdError::Empty)), tonic::Code::InvalidArgument);
        // Refusals carry a stable reason and upstream's wording.
        use tonic_types::StatusExt as _;
        let refused = tonic::Status::from(RegistryError::InvalidTransition {
            job: "j".into(),
            from: JobStatus::Pending,
            to: JobStatus::Running,
        });
        assert!(refused.message().starts_with("Invalid transition"));
        let info = refused.get_details_error_info().expect("an ErrorInfo");
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("INVALID_TRANSITION", ERROR_DOMAIN));
        assert_eq!(info.metadata["from"], "pending");
        let terminal = tonic::Status::from(RegistryError::TerminalState {
            job: "j".into(),
            status: JobStatus::Succeeded,
            to: JobStatus::Failed,
        });
        assert!(terminal.message().starts_with("Cannot modify terminal"));
        assert_eq!(terminal.get_details_error_info().unwrap().reason, "TERMINAL_STATE");
        let stale = tonic::Status::from(RegistryError::RevisionMismatch {
            job: "j".into(),
            expected: 1,
            actual: 2,
        });
        assert_eq!((stale.code(), stale.get_details_error_info().unwrap().reason.as_str()), (tonic::Code::Aborted, "REVISION_CONFLICT"));
        assert!(tonic::Status::from(RegistryError::ShuttingDown).get_details_error_info().is_none());
        let long = tonic::Status::from(RegistryError::InvalidArgument("x".repeat(5000)));
        assert!(long.message().len() < 1100);
    }
}
