//! Connecting the client commands to a server: endpoint, TLS for `https://`, the bearer token,
//! and trace propagation on every call.

use anyhow::Context as _;
use arrow_flight::flight_service_client::FlightServiceClient;
use modelops_proto::attribution::v1::attribution_client::AttributionClient;
use modelops_proto::indexer::v1::indexer_client::IndexerClient;
use modelops_proto::registry::v1::job_registry_client::JobRegistryClient;
use modelops_runtime::auth::read_token_file;
use modelops_runtime::config::ClientConfig;
use modelops_runtime::telemetry::ClientInterceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// A channel that sends the token and trace context on every call.
pub type AuthedChannel = InterceptedService<Channel, ClientInterceptor>;

/// The largest message the CLI's clients decode or encode: the largest a server may be configured
/// to send (`mops serve --max-message-bytes`), so that a big job's state or spec is never refused
/// by tonic's default 4 MiB decode limit.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// A job registry client with the CLI's message limits.
pub fn registry(channel: AuthedChannel) -> JobRegistryClient<AuthedChannel> {
    JobRegistryClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// An attribution client with the CLI's message limits.
pub fn attribution(channel: AuthedChannel) -> AttributionClient<AuthedChannel> {
    AttributionClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// An indexer client with the CLI's message limits.
pub fn indexer(channel: AuthedChannel) -> IndexerClient<AuthedChannel> {
    IndexerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A Flight client (the query service) with the CLI's message limits.
pub fn flight(channel: AuthedChannel) -> FlightServiceClient<AuthedChannel> {
    FlightServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

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
