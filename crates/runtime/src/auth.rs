//! Bearer-token authentication for every gRPC service except health, as a tower layer in front of
//! the whole server. A request without `authorization: Bearer <token>` matching the configured
//! token gets UNAUTHENTICATED; the comparison takes the same time wherever the tokens differ.

use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

/// gRPC path prefix of the health service, which stays open for probes.
pub const HEALTH_PATH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file cannot be read.
    #[error("cannot read token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("token file {0} is empty")]
    Empty(String),
}

/// Reads a token file, trimming surrounding whitespace.
pub fn read_token_file(path: &Path) -> Result<String, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(TokenFileError::Empty(path.display().to_string()));
    }
    Ok(token)
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The expected token, or none (authentication off).
#[derive(Clone, Default)]
pub struct BearerAuth {
    expected: Option<Arc<str>>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth").field("enabled", &self.expected.is_some()).finish()
    }
}

impl BearerAuth {
    /// Authentication with `token`, or none.
    pub fn new(token: Option<String>) -> Self {
        Self {
            expected: token.map(Arc::from),
        }
    }

    /// Whether a token is required.
    pub fn is_enabled(&self) -> bool {
        self.expected.is_some()
    }

    /// Whether `token` is the expected token (always true when authentication is off).
    pub fn accepts(&self, token: &str) -> bool {
        self.expected
            .as_ref()
            .is_none_or(|expected| constant_time_eq(token.as_bytes(), expected.as_bytes()))
    }

    /// Whether a request with these headers to `path` may proceed.
    pub fn allows(&self, path: &str, headers: &http::HeaderMap) -> bool {
        let Some(expected) = &self.expected else { return true };
        if path.starts_with(HEALTH_PATH_PREFIX) {
            return true;
        }
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|token| constant_time_eq(token.trim().as_bytes(), expected.as_bytes()))
    }
}

impl<S> tower::Layer<S> for BearerAuth {
    type Service = BearerAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuthService { auth: self.clone(), inner }
    }
}

/// The service [`BearerAuth`] wraps around a server.
#[derive(Debug, Clone)]
pub struct BearerAuthService<S> {
    auth: BearerAuth,
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for BearerAuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if self.auth.allows(request.uri().path(), request.headers()) {
            Box::pin(self.inner.call(request))
        } else {
            tracing::info!(path = %request.uri().path(), "rejected request without a valid bearer token");
            let response = tonic::Status::unauthenticated("missing or invalid bearer token").into_http();
            Box::pin(std::future::ready(Ok(response)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: Option<&str>) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = value {
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn tokens_are_checked_except_for_health() {
        let auth = BearerAuth::new(Some("s3cret".into()));
        let path = "/modelops.registry.v1.JobRegistry/GetJob";
        assert!(auth.allows(path, &headers(Some("Bearer s3cret"))));
        assert!(!auth.allows(path, &headers(Some("Bearer s3cre"))));
        assert!(!auth.allows(path, &headers(Some("Bearer s3cret2"))));
        assert!(!auth.allows(path, &headers(Some("s3cret"))));
        assert!(!auth.allows(path, &headers(None)));
        assert!(auth.allows("/grpc.health.v1.Health/Check", &headers(None)));
        assert!(BearerAuth::new(None).allows(path, &headers(None)));
    }

    #[test]
    fn token_files_are_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  abc\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "abc");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(read_token_file(&path), Err(TokenFileError::Empty(_))));
        assert!(matches!(read_token_file(&dir.path().join("nope")), Err(TokenFileError::Read { .. })));
    }
}
