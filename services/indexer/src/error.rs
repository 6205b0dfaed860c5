//! The indexer's errors.

use modelops_core::records::RecordError;

/// Why a job could not be indexed (a bad aggregation is a failed row, not an error).
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The table could not be encoded.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The table could not be written.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A store failed.
    #[error("store: {0}")]
    Store(#[from] object_store::Error),
    /// A provenance record could not be read because the store failed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The job's spec is unreadable or invalid.
    #[error("job spec: {0}")]
    Spec(#[from] modelops_core::study::SpecError),
    /// The job cannot be indexed as asked.
    #[error("{0}")]
    Invalid(String),
    /// A backend (the registry, attribution, a store) is unavailable: the build is retried.
    #[error("{0}")]
    Unavailable(String),
}

impl IndexError {
    /// Whether the build failed because a backend was unavailable (retried with backoff), not
    /// because of the job's own data (which stays failed with its reason).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Store(e) | Self::Record(RecordError::Store { source: e, .. }) => store_unavailable(e),
            Self::Parquet(parquet::errors::ParquetError::External(inner)) => {
                inner.downcast_ref::<object_store::Error>().is_some_and(store_unavailable)
            }
            Self::Arrow(_) | Self::Parquet(_) | Self::Record(_) | Self::Spec(_) | Self::Invalid(_) => false,
        }
    }

    /// A registry status: unavailable (retried: the registry or its store is down, restarting,
    /// or did not answer in time) or a refusal.
    pub fn registry(status: &tonic::Status) -> Self {
        Self::peer("registry", status)
    }

    /// An attribution status: unavailable (retried) or a refusal.
    pub fn attribution(status: &tonic::Status) -> Self {
        Self::peer("attribution", status)
    }

    /// Another service's status: one that could not answer (down, restarting, its backend down,
    /// a connection cut, no answer in time, a conflict to retry) is transient; the rest refuse.
    fn peer(service: &str, status: &tonic::Status) -> Self {
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Aborted | tonic::Code::Cancelled | tonic::Code::Unknown => {
                Self::Unavailable(format!("{service}: {}", status.message()))
            }
            _ => Self::Invalid(format!("{service}: {}", status.message())),
        }
    }
}

/// Whether an object store error says the store could not be reached (as opposed to a refusal
/// or a missing object, which retrying does not change).
fn store_unavailable(error: &object_store::Error) -> bool {
    !matches!(
        error,
        object_store::Error::NotFound { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotModified { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
    )
}
