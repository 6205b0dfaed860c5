//! Running servers on pre-bound listeners (so tests can bind port 0): the gRPC server with
//! health, reflection, per-request spans, metrics, optional TLS and bearer auth; and the HTTP
//! server for `/metrics`.

use std::future::Future;
use std::path::Path;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::server::HealthReporter;

use crate::auth::BearerAuth;
use crate::metrics::Metrics;
use crate::telemetry;

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A TLS file cannot be read.
    #[error("cannot read {path}: {source}")]
    TlsFile {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("gRPC server error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built from the descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The HTTP server failed.
    #[error("HTTP server error: {0}")]
    Http(#[from] std::io::Error),
}

/// Transport settings of the gRPC server.
#[derive(Debug, Clone, Default)]
pub struct GrpcOptions {
    /// TLS, when set.
    pub tls: Option<ServerTlsConfig>,
    /// Bearer-token authentication (off when it holds no token).
    pub auth: BearerAuth,
}

/// Reads a PEM certificate chain and key into a TLS configuration.
pub fn load_tls(cert: &Path, key: &Path) -> Result<ServerTlsConfig, ServeError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ServeError::TlsFile {
            path: path.display().to_string(),
            source,
        })
    };
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?)))
}

/// Fully-qualified names of the services every server carries.
pub const BASE_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The routes every server carries: gRPC health and reflection (v1 and v1alpha). Reflection
/// describes the given encoded descriptor sets but advertises only [`BASE_SERVICES`] and
/// `served`, the services actually routed, so it never offers one that would answer
/// UNIMPLEMENTED. Each service in `served` starts SERVING in health, as does the server ("").
pub async fn base_routes(descriptor_sets: &[&[u8]], served: &[&str]) -> Result<(Routes, HealthReporter), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in std::iter::once(&"").chain(served) {
        reporter
            .set_service_status(*service, tonic_health::ServingStatus::Serving)
            .await;
    }
    let configure = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for set in descriptor_sets {
            builder = builder.register_encoded_file_descriptor_set(set);
        }
        for name in BASE_SERVICES.iter().chain(served) {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    let routes = Routes::new(health)
        .add_service(configure().build_v1()?)
        .add_service(configure().build_v1alpha()?);
    Ok((routes, reporter))
}

/// Serves `routes` on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve_grpc(
    listener: TcpListener,
    routes: Routes,
    options: GrpcOptions,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let mut builder = Server::builder();
    if let Some(tls) = options.tls {
        builder = builder.tls_config(tls)?;
    }
    let layers = tower::ServiceBuilder::new()
        .layer(metrics.rpc_layer())
        .layer(options.auth)
        .into_inner();
    builder
        .trace_fn(telemetry::server_span)
        .layer(layers)
        .add_routes(routes)
        // Nagle's algorithm with delayed ACKs adds ~40 ms to every small unary reply.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown)
        .await?;
    Ok(())
}

/// The HTTP routes of the metrics listener: `/metrics` and `/healthz`.
pub fn metrics_router(metrics: Metrics) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
}

/// Serves an HTTP router on `listener` until `shutdown` resolves.
pub async fn serve_http(listener: TcpListener, router: axum::Router, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
