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
    /// The registry refused or failed: its status.
    #[error("job registry: {}", .0.message())]
    Registry(#[from] tonic::Status),
    /// Attribution refused or failed: its status.
    #[error("attribution: {}", .0.message())]
    Attribution(tonic::Status),
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

/// The HTTP status for a gRPC code: how the services' own mappings carry over to the web.
fn http_status(code: tonic::Code) -> StatusCode {
    match code {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => StatusCode::BAD_REQUEST,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::AlreadyExists | tonic::Code::Aborted | tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        tonic::Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        tonic::Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        tonic::Code::Ok | tonic::Code::Cancelled | tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::DataLoss => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl DashboardError {
    /// The HTTP status and message of this error. Errors of the registry, attribution and query
    /// services go through those services' own gRPC mappings, so a page and an RPC agree on
    /// whose fault a failure is.
    pub fn into_parts(self) -> (StatusCode, String) {
        let grpc = |status: tonic::Status| (http_status(status.code()), status.message().to_owned());
        match self {
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            Self::NotFound(message) => (StatusCode::NOT_FOUND, message),
            error @ Self::ServiceNotRunning(_) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
            Self::Registry(status) => grpc(status),
            Self::Attribution(status) => grpc(status),
            Self::Query(error) => grpc(error.into()),
            error @ (Self::Store(_) | Self::Plot(_) | Self::Arrow(_)) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
        }
    }
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let (status, message) = self.into_parts();
        if status.is_server_error() {
            tracing::warn!(error = %message, %status, "dashboard request failed");
        } else {
            tracing::debug!(error = %message, %status, "dashboard request refused");
        }
        (status, crate::layout::error_page(status, &message)).into_response()
    }
}
