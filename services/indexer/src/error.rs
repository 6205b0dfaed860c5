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
}
