//! Connecting the client commands to a server: endpoint, TLS for `https://`, the bearer token,
//! and trace propagation on every call.

use anyhow::Context as _;
use modelops_runtime::auth::read_token_file;
use modelops_runtime::config::ClientConfig;
use modelops_runtime::telemetry::ClientInterceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// A channel that sends the token and trace context on every call.
pub type AuthedChannel = InterceptedService<Channel, ClientInterceptor>;

/// Connects to the server named by `config`.
pub async fn connect(config: &ClientConfig) -> anyhow::Result<AuthedChannel> {
    let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
        .with_context(|| format!("invalid endpoint {:?}", config.endpoint))?
        .connect_timeout(std::time::Duration::from_secs(10));
    if config.endpoint.starts_with("https://") {
        endpoint = endpoint.tls_config(ClientTlsConfig::new().with_native_roots())?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach mops at {} (is `mops serve` running? set --endpoint or MOPS_ENDPOINT)", config.endpoint))?;
    let token = config.auth_token_file.as_deref().map(read_token_file).transpose()?;
    Ok(InterceptedService::new(channel, ClientInterceptor::with_token(token.as_deref())))
}

/// Turns a gRPC error into a one-line CLI error.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}
