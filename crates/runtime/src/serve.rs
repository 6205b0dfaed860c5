//! Running servers on pre-bound listeners (so tests can bind port 0): the gRPC server with
//! health, reflection, per-request spans, metrics, optional TLS and bearer auth; and the HTTP
//! server for `/metrics` (and the dashboard), with optional TLS of its own (rustls, HTTP/1.1).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
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
    /// A TLS file of the HTTP listener holds no usable PEM certificate or key.
    #[error("no PEM {what} in {path}: {source}")]
    TlsPem {
        /// What was looked for: `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: String,
        /// The PEM error.
        source: rustls::pki_types::pem::Error,
    },
    /// The HTTP listener's certificate and key do not make a TLS configuration (e.g. the key
    /// does not match the certificate).
    #[error("HTTP listener TLS: {0}")]
    HttpTls(#[from] rustls::Error),
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

/// Reads a file of a TLS configuration.
fn read_tls_file(path: &Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|source| ServeError::TlsFile {
        path: path.display().to_string(),
        source,
    })
}

/// Reads a PEM certificate chain and key into a TLS configuration.
pub fn load_tls(cert: &Path, key: &Path) -> Result<ServerTlsConfig, ServeError> {
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(read_tls_file(cert)?, read_tls_file(key)?)))
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
        // Reflection describes itself too, so `grpcurl list grpc.reflection.v1.ServerReflection`
        // answers.
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
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

/// The paths (`/package.Service/Method`) of every method of the `served` services and of
/// [`BASE_SERVICES`], read from the encoded descriptor sets: what
/// [`Metrics::set_rpc_methods`] takes.
pub fn method_paths(descriptor_sets: &[&[u8]], served: &[&str]) -> Vec<String> {
    use prost::Message as _;
    let mut paths = Vec::new();
    let sets = descriptor_sets
        .iter()
        .chain([&tonic_health::pb::FILE_DESCRIPTOR_SET, &tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET, &tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET]);
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
            tracing::warn!("an encoded descriptor set does not decode; its methods are counted as unknown");
            continue;
        };
        for file in &set.file {
            for service in &file.service {
                let name = match file.package() {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                if !served.contains(&name.as_str()) && !BASE_SERVICES.contains(&name.as_str()) {
                    continue;
                }
                paths.extend(service.method.iter().map(|method| format!("/{name}/{}", method.name())));
            }
        }
    }
    paths
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
        .layer(DecodeErrorLayer)
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

/// Answers a request message that does not decode (invalid UTF-8 in a string field, a
/// truncated message) with INVALID_ARGUMENT: tonic answers INTERNAL, which tells a client the
/// server is at fault and is worth retrying.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeErrorLayer;

impl<S> tower::Layer<S> for DecodeErrorLayer {
    type Service = DecodeErrorService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrorService { inner }
    }
}

/// The service [`DecodeErrorLayer`] wraps around a server.
#[derive(Debug, Clone)]
pub struct DecodeErrorService<S> {
    inner: S,
}

/// The start of tonic's message for a request that does not decode, as sent (percent-encoded).
const DECODE_ERROR_PREFIX: &str = "failed%20to%20decode%20Protobuf%20message";

impl<S, B, R> tower::Service<http::Request<B>> for DecodeErrorService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            let headers = response.headers_mut();
            let internal = headers.get("grpc-status").is_some_and(|code| code.as_bytes() == b"13");
            let undecodable = headers
                .get("grpc-message")
                .is_some_and(|message| message.as_bytes().starts_with(DECODE_ERROR_PREFIX.as_bytes()));
            if internal && undecodable {
                headers.insert("grpc-status", http::HeaderValue::from_static("3"));
            }
            Ok(response)
        })
    }
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

/// How long a client of the HTTP listener gets to complete its TLS handshake; a client that
/// connects and sends nothing is dropped after this.
pub const HTTP_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP listener's TLS: a certificate chain and its key, offering HTTP/1.1 over TLS 1.2 and
/// 1.3 (rustls with the ring provider, the one tonic's TLS uses).
#[derive(Clone)]
pub struct HttpTls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for HttpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTls").finish_non_exhaustive()
    }
}

/// Reads a PEM certificate chain and private key (PKCS#8, PKCS#1 or SEC1) into the HTTP
/// listener's TLS.
pub fn load_http_tls(cert: &Path, key: &Path) -> Result<HttpTls, ServeError> {
    fn pem_error(what: &'static str, path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> ServeError {
        let path = path.display().to_string();
        move |source| ServeError::TlsPem { what, path, source }
    }
    let chain = CertificateDer::pem_slice_iter(&read_tls_file(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error("certificate", cert))?;
    if chain.is_empty() {
        return Err(pem_error("certificate", cert)(rustls::pki_types::pem::Error::NoItemsFound));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read_tls_file(key)?).map_err(pem_error("private key", key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(HttpTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    })
}

/// The HTTP listener's TLS as `config` asks for it: on when `--http-tls-cert` and
/// `--http-tls-key` are both set.
pub fn http_tls(config: &crate::config::ServerConfig) -> Result<Option<HttpTls>, ServeError> {
    match (&config.http_tls_cert, &config.http_tls_key) {
        (Some(cert), Some(key)) => load_http_tls(cert, key).map(Some),
        _ => Ok(None),
    }
}

/// A listener handing out TLS connections. A task accepts TCP connections and runs each
/// handshake in a task of its own (bounded by [`HTTP_TLS_HANDSHAKE_TIMEOUT`]), so a slow or
/// silent client delays no other; the task ends when the listener is dropped.
#[derive(Debug)]
struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    fn new(listener: TcpListener, tls: HttpTls) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (sender, connections) = mpsc::channel(64);
        tokio::spawn(accept_tls(listener, tls.acceptor, sender));
        Ok(Self { connections, local_addr })
    }
}

/// Accepts TCP connections on `listener` and sends each that completes its handshake, until
/// the receiving [`TlsListener`] is gone.
async fn accept_tls(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, connections: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>) {
    loop {
        let accepted = tokio::select! {
            () = connections.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // As axum does: a connection reset before it was accepted concerns that
                // connection only; anything else (e.g. out of file descriptors) gets a pause.
                use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
                if !matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
                    tracing::warn!(%error, "HTTP listener: accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        let (acceptor, connections) = (acceptor.clone(), connections.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HTTP_TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    // Fails only when the server stopped meanwhile; the connection is dropped.
                    let _ = connections.send((stream, remote)).await;
                }
                Ok(Err(error)) => tracing::debug!(%remote, %error, "HTTP listener: TLS handshake failed"),
                Err(_) => tracing::debug!(%remote, "HTTP listener: TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accepting task ends only with this listener; wait for the server to stop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// Serves an HTTP router on `listener` until `shutdown` resolves: over TLS when `tls` is set
/// (and then only over TLS). Handlers find the client's address as
/// `axum::extract::ConnectInfo<SocketAddr>`.
pub async fn serve_http(
    listener: TcpListener,
    tls: Option<HttpTls>,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => axum::serve(listener, service).with_graceful_shutdown(shutdown).await?,
        Some(tls) => {
            // Tapped: Nagle's algorithm with delayed ACKs delays small replies by ~40 ms, and
            // axum provides `ConnectInfo<SocketAddr>` for tapped listeners of any kind.
            let listener = TlsListener::new(listener, tls)?.tap_io(|stream: &mut TlsStream<TcpStream>| {
                let _ = stream.get_ref().0.set_nodelay(true);
            });
            axum::serve(listener, service).with_graceful_shutdown(shutdown).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_tls_needs_a_certificate_and_a_matching_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let empty = file("empty.pem", "");
        let not_base64 = file("junk.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n");
        // PEM that decodes, to DER that is no certificate or key.
        let cert = file("cert.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let key = file("key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        let load = |cert: &Path, key: &Path| load_http_tls(cert, key).map(|_| ());
        assert!(matches!(load(&dir.path().join("missing.pem"), &key), Err(ServeError::TlsFile { .. })));
        assert!(matches!(load(&empty, &key), Err(ServeError::TlsPem { what: "certificate", .. })));
        assert!(matches!(load(&not_base64, &key), Err(ServeError::TlsPem { what: "certificate", .. })));
        assert!(matches!(load(&cert, &empty), Err(ServeError::TlsPem { what: "private key", .. })));
        assert!(matches!(load(&cert, &key), Err(ServeError::HttpTls(_))));
    }
}
