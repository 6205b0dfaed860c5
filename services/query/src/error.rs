//! The query service's errors and their one mapping to gRPC statuses.

use datafusion::error::DataFusionError;
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

/// True when a DataFusion error is the user's (SQL that does not parse or plan), not the
/// service's.
fn is_user_error(error: &DataFusionError) -> bool {
    match error {
        DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) | DataFusionError::NotImplemented(_) => true,
        DataFusionError::Context(_, inner) => is_user_error(inner),
        DataFusionError::Diagnostic(_, inner) => is_user_error(inner),
        _ => false,
    }
}

fn store_status(error: &object_store::Error) -> Status {
    match error {
        object_store::Error::NotFound { .. } => Status::not_found(error.to_string()),
        _ => Status::unavailable(error.to_string()),
    }
}

impl From<QueryError> for Status {
    fn from(error: QueryError) -> Self {
        match &error {
            QueryError::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
            QueryError::JobNotFound(_) => Status::not_found(error.to_string()),
            QueryError::Store(e) => store_status(e),
            QueryError::Parquet(_) | QueryError::Arrow(_) | QueryError::Catalog(_) | QueryError::Flight(_) => Status::internal(error.to_string()),
            QueryError::DataFusion(e) => match e.find_root() {
                DataFusionError::ObjectStore(store) => store_status(store),
                _ if is_user_error(e) => Status::invalid_argument(format!("sql: {}", e.find_root())),
                _ => Status::internal(error.to_string()),
            },
        }
    }
}
