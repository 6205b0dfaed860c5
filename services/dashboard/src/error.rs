//! Why a page cannot be shown, and the one mapping of those reasons to HTTP responses.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

/// Why a dashboard request failed.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The path or query names something malformed (a job id that is not one, a bad filter).
    #[error("{0}")]
    BadRequest(String),
    /// The job, or its loss table, does not exist.
    #[error("{0}")]
    NotFound(String),
    /// This server does not run the service the page needs.
    #[error("this server does not run the {0}, which this page needs")]
    ServiceNotRunning(&'static str),
    /// The registry failed.
    #[error("job registry: {0}")]
    Registry(#[from] modelops_registry::RegistryError),
    /// Attribution failed.
    #[error("attribution: {0}")]
    Attribution(#[from] modelops_attribution::AttributionError),
    /// A query failed.
    #[error("query: {0}")]
    Query(#[from] modelops_query::QueryError),
    /// Reading a stored table failed.
    #[error("results store: {0}")]
    Store(#[from] object_store::Error),
    /// A plot could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
    /// Arrow failed while reducing or encoding a table.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

impl DashboardError {
    /// The HTTP status of this error: the caller's mistakes are 4xx, a missing service 503,
    /// failures of what the dashboard reads 500.
    pub fn status(&self) -> StatusCode {
        use modelops_query::QueryError;
        use modelops_registry::RegistryError;
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::ServiceNotRunning(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Registry(RegistryError::NotFound(_)) | Self::Query(QueryError::JobNotFound(_)) => StatusCode::NOT_FOUND,
            Self::Registry(RegistryError::InvalidJobId(_) | RegistryError::InvalidArgument(_)) | Self::Query(QueryError::InvalidArgument { .. }) => {
                StatusCode::BAD_REQUEST
            }
            Self::Registry(_) | Self::Query(_) | Self::Attribution(_) | Self::Store(_) | Self::Plot(_) | Self::Arrow(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, %status, "dashboard request failed");
        } else {
            tracing::debug!(error = %self, %status, "dashboard request refused");
        }
        (status, crate::layout::error_page(status, &self.to_string())).into_response()
    }
}
