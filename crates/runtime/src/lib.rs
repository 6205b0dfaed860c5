//! The blocks every ModelOps service is built from, so no service copies them:
//!
//! - [`config`]: clap argument blocks with an environment variable per flag;
//! - [`telemetry`]: tracing, JSON logs, OpenTelemetry export and W3C trace-context propagation;
//! - [`shutdown`]: SIGTERM/SIGINT handling and ordered, graceful shutdown;
//! - [`auth`]: bearer-token authentication for gRPC (health stays open);
//! - [`messages`]: error messages fit for clients (no server paths, capped);
//! - [`metrics`]: the Prometheus registry and per-RPC latency and status metrics;
//! - [`serve`]: running a tonic server with health, reflection, TLS and auth on a bound listener,
//!   and the HTTP listener for `/metrics`.

pub mod auth;
pub mod config;
pub mod messages;
pub mod metrics;
pub mod peer;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
