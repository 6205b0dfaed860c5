//! Channels from one service to another (`--registry-endpoint`, `--attribution-endpoint`): lazy,
//! reconnecting, with the bearer token and trace context on every call, and keepalives so a peer
//! that vanished without closing its connections is noticed within seconds.

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::telemetry::ClientInterceptor;

/// How long a call may wait for the peer's answer (for a stream: its first headers).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A channel to the peer service at `endpoint` (`http://registry:50051`, or `https://…` checked
/// against the system's roots), sending `token` as a bearer token. It connects on first use and
/// again after a failure, so a service may start before its peers: until one answers, calls to it
/// fail UNAVAILABLE.
pub fn lazy_channel(endpoint: &str, token: Option<&str>) -> Result<InterceptedService<Channel, ClientInterceptor>, tonic::transport::Error> {
    let mut channel = Endpoint::from_shared(endpoint.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if endpoint.starts_with("https://") {
        channel = channel.tls_config(ClientTlsConfig::new().with_native_roots())?;
    }
    Ok(InterceptedService::new(channel.connect_lazy(), ClientInterceptor::with_token(token)))
}
