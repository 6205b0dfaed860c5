//! The query service's errors and their one mapping to gRPC statuses.

use datafusion::error::DataFusionError;
use modelops_core::loss_table::RESULTS_PREFIX;
use tonic::Status;

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request is malformed; `field` names the part at fault.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The field (or `sql`, `descriptor`, `ticket`) at fault.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// No indexed job by that id.
    #[error("no indexed job {0:?} (is it indexed? see `mops results index`)")]
    JobNotFound(String),
    /// The job is indexed but has no per-replicate table.
    #[error("job {0:?} has no replicates table: none of its aggregation results carries diagnostics.per_replicate_losses")]
    NoReplicates(String),
    /// A store failed.
    #[error("store: {0}")]
    Store(#[from] object_store::Error),
    /// A table could not be read.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Batches could not be built or encoded.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A stored manifest or summary is unreadable.
    #[error("catalog: {0}")]
    Catalog(String),
    /// A Flight message could not be built.
    #[error("flight: {0}")]
    Flight(#[from] arrow_flight::error::FlightError),
    /// Planning or running a query failed.
    #[error("query: {0}")]
    DataFusion(#[from] DataFusionError),
    /// Planning a query took longer than the query time limit.
    #[error("{}", crate::engine::QueryTimeout(*.0))]
    Timeout(std::time::Duration),
}

impl QueryError {
    /// An [`QueryError::InvalidArgument`] naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

use modelops_runtime::messages::scrubbed;

/// True when a DataFusion error is the user's: SQL that does not parse or plan, or that fails on
/// the data it reads (a division by zero, a cast that overflows, a bad regular expression).
fn is_user_error(error: &DataFusionError) -> bool {
    use arrow::error::ArrowError;
    match error {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Execution(_) => true,
        // A function's own error, e.g. a regular expression that does not compile; not a read
        // that failed (Parquet, a store, I/O).
        DataFusionError::External(inner) => {
            inner.downcast_ref::<parquet::errors::ParquetError>().is_none()
                && inner.downcast_ref::<object_store::Error>().is_none()
                && inner.downcast_ref::<std::io::Error>().is_none()
                && inner.downcast_ref::<crate::engine::QueryTimeout>().is_none()
                && inner.downcast_ref::<QueryError>().is_none()
        }
        DataFusionError::ArrowError(arrow, _) => matches!(
            **arrow,
            ArrowError::DivideByZero
                | ArrowError::CastError(_)
                | ArrowError::ComputeError(_)
                | ArrowError::ArithmeticOverflow(_)
                | ArrowError::InvalidArgumentError(_)
                | ArrowError::ParseError(_)
                // A kernel's own error, e.g. a regular expression that does not compile.
                | ArrowError::ExternalError(_)
        ),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => is_user_error(inner),
        DataFusionError::Shared(inner) => is_user_error(inner),
        _ => false,
    }
}

fn store_status(error: &object_store::Error) -> Status {
    match error {
        object_store::Error::NotFound { path, .. } => {
            // The key inside the results store (`results/{job}/…`), never where the store is.
            let prefix = format!("/{RESULTS_PREFIX}/");
            let key = match path.rfind(&prefix) {
                _ if path.starts_with(&prefix[1..]) => path.as_str(),
                Some(at) => &path[at + 1..],
                None => "a table",
            };
            Status::not_found(scrubbed(&format!(
                "{key}: removed from the results store while it was read (re-indexed or deleted); retry"
            )))
        }
        _ => Status::unavailable(format!("the results store is unavailable: {}", scrubbed(&error.to_string()))),
    }
}

/// The status of a Parquet read: a store's when the store failed under it, else internal
/// (`whole` is the error it is part of, for the message).
fn parquet_status(error: &parquet::errors::ParquetError, whole: &QueryError) -> Status {
    match error {
        parquet::errors::ParquetError::External(inner) if inner.downcast_ref::<object_store::Error>().is_some() => {
            store_status(inner.downcast_ref::<object_store::Error>().expect("checked"))
        }
        _ => Status::internal(scrubbed(&whole.to_string())),
    }
}

/// The status of a DataFusion error (planning, running, or a query's stream).
fn datafusion_status(error: &DataFusionError, whole: &QueryError) -> Status {
    match error.find_root() {
        DataFusionError::ObjectStore(store) => store_status(store),
        DataFusionError::ResourcesExhausted(message) => Status::resource_exhausted(format!(
            "the query needs more memory than its limit (set by --sql-memory-mb): {}",
            scrubbed(message)
        )),
        DataFusionError::External(inner) if inner.downcast_ref::<crate::engine::QueryTimeout>().is_some() => {
            Status::deadline_exceeded(inner.to_string())
        }
        DataFusionError::External(inner) if inner.downcast_ref::<object_store::Error>().is_some() => {
            store_status(inner.downcast_ref::<object_store::Error>().expect("checked"))
        }
        // The engine's own reads (a table streamed from its file) carry a QueryError.
        DataFusionError::External(inner) if inner.downcast_ref::<QueryError>().is_some() => status_of(inner.downcast_ref::<QueryError>().expect("checked")),
        DataFusionError::External(inner) if inner.downcast_ref::<parquet::errors::ParquetError>().is_some() => {
            parquet_status(inner.downcast_ref::<parquet::errors::ParquetError>().expect("checked"), whole)
        }
        DataFusionError::ParquetError(parquet) => parquet_status(parquet, whole),
        root if is_user_error(error) => Status::invalid_argument(format!("sql: {}", scrubbed(&root.to_string()))),
        _ => Status::internal(scrubbed(&whole.to_string())),
    }
}

impl From<QueryError> for Status {
    fn from(error: QueryError) -> Self {
        let status = status_of(&error);
        match status.code() {
            tonic::Code::Internal => tracing::error!(%error, "query fault"),
            tonic::Code::Unavailable => tracing::warn!(%error, "results store unavailable"),
            _ => tracing::debug!(%error, code = ?status.code(), "query refused"),
        }
        status
    }
}

/// The status of `error` (the one mapping).
fn status_of(error: &QueryError) -> Status {
    match error {
        QueryError::InvalidArgument { .. } => Status::invalid_argument(scrubbed(&error.to_string())),
        QueryError::JobNotFound(_) | QueryError::NoReplicates(_) => Status::not_found(scrubbed(&error.to_string())),
        QueryError::Store(e) => store_status(e),
        QueryError::Parquet(parquet) => parquet_status(parquet, error),
        QueryError::Arrow(_) | QueryError::Catalog(_) | QueryError::Flight(_) => {
            Status::internal(scrubbed(&error.to_string()))
        }
        QueryError::DataFusion(e) => datafusion_status(e, error),
        QueryError::Timeout(_) => Status::deadline_exceeded(error.to_string()),
    }
}

