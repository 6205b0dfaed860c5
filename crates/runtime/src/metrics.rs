//! Prometheus metrics: one registry per process, served as `/metrics`, and a tower layer that
//! records every RPC's latency and gRPC status code.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `mops_grpc_requests_total` | counter | `method`, `code` |
//! | `mops_grpc_request_duration_seconds` | histogram | `method` |
//!
//! The `method` label is the request path only for the methods a server registered with
//! [`Metrics::set_rpc_methods`]; any other path (junk sent by anyone, before authentication) is
//! counted as [`UNKNOWN_METHOD`], so no client can grow the label set.
//!
//! The code is the `grpc-status` of the response headers, which is where tonic puts it for every
//! error returned before a response stream starts; an error in the middle of a stream is
//! counted as OK here (its status arrives in the trailers).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The process's metrics registry and the RPC metrics in it.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    rpc: Arc<RpcMetrics>,
}

/// The `method` label of requests to any path that is not a registered method.
pub const UNKNOWN_METHOD: &str = "unknown";

#[derive(Debug)]
struct RpcMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    /// The paths (`/package.Service/Method`) that get a label of their own.
    methods: RwLock<HashSet<String>>,
}

impl RpcMetrics {
    fn label<'a>(&self, path: &'a str) -> &'a str {
        let known = self.methods.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains(path);
        if known { path } else { UNKNOWN_METHOD }
    }
}

impl Metrics {
    /// A registry holding the RPC metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("mops_grpc_requests_total", "gRPC requests handled, by method and status code"),
            &["method", "code"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new("mops_grpc_request_duration_seconds", "gRPC request latency until the response headers")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
            &["method"],
        )
        .expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("unique metric");
        registry.register(Box::new(duration.clone())).expect("unique metric");
        Self {
            registry,
            rpc: Arc::new(RpcMetrics {
                requests,
                duration,
                methods: RwLock::default(),
            }),
        }
    }

    /// Registers the paths of the methods served (`/package.Service/Method`): each gets its own
    /// `method` label; every other path is counted as [`UNKNOWN_METHOD`].
    pub fn set_rpc_methods(&self, methods: impl IntoIterator<Item = String>) {
        self.rpc.methods.write().unwrap_or_else(std::sync::PoisonError::into_inner).extend(methods);
    }

    /// The registry, for services to register their own metrics in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in the registry, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// The tower layer that records RPC metrics.
    pub fn rpc_layer(&self) -> RpcMetricsLayer {
        RpcMetricsLayer {
            rpc: Arc::clone(&self.rpc),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Records RPC metrics; see [`Metrics::rpc_layer`].
#[derive(Debug, Clone)]
pub struct RpcMetricsLayer {
    rpc: Arc<RpcMetrics>,
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            rpc: Arc::clone(&self.rpc),
            inner,
        }
    }
}

/// The service [`RpcMetricsLayer`] wraps around a server.
#[derive(Debug, Clone)]
pub struct RpcMetricsService<S> {
    rpc: Arc<RpcMetrics>,
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = self.rpc.label(request.uri().path()).to_owned();
        let rpc = Arc::clone(&self.rpc);
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or("Ok", |c| code_name(tonic::Code::from_i32(c))),
                Err(_) => "Unavailable",
            };
            rpc.duration.with_label_values(&[method.as_str()]).observe(started.elapsed().as_secs_f64());
            rpc.requests.with_label_values(&[method.as_str(), code]).inc();
            result
        })
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "Ok",
        tonic::Code::Cancelled => "Cancelled",
        tonic::Code::Unknown => "Unknown",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::DeadlineExceeded => "DeadlineExceeded",
        tonic::Code::NotFound => "NotFound",
        tonic::Code::AlreadyExists => "AlreadyExists",
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::ResourceExhausted => "ResourceExhausted",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        tonic::Code::Aborted => "Aborted",
        tonic::Code::OutOfRange => "OutOfRange",
        tonic::Code::Unimplemented => "Unimplemented",
        tonic::Code::Internal => "Internal",
        tonic::Code::Unavailable => "Unavailable",
        tonic::Code::DataLoss => "DataLoss",
        tonic::Code::Unauthenticated => "Unauthenticated",
    }
}
