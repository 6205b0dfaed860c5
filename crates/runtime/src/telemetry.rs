//! Tracing for every service: an EnvFilter, text or JSON logs, spans exported over OTLP when an
//! endpoint is configured, and W3C `traceparent` carried in gRPC metadata so one trace spans the
//! services a request crosses.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LoggingConfig};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid log filter: {0}")]
    Filter(String),
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    /// A global subscriber was already installed.
    #[error("tracing is already initialised: {0}")]
    AlreadyInitialised(String),
}

/// Keeps telemetry running; dropping it flushes and stops span export.
#[derive(Debug)]
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("error flushing traces: {e}");
        }
    }
}

/// Installs the global tracing subscriber described by `config`.
pub fn init(config: &LoggingConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter = match &config.log_filter {
        Some(filter) => EnvFilter::try_new(filter).map_err(|e| TelemetryError::Filter(e.to_string()))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let fmt = match config.log_format {
        // Colours only for a person at a terminal: a log file or a collector gets plain text.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = match &config.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(config.service_name.clone())
                .with_attribute(opentelemetry::KeyValue::new("service.instance.id", instance_id()))
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
                    .build(),
            )
        }
        None => None,
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("modelops")));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInitialised(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}

fn instance_id() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| format!("pid-{}", std::process::id()))
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The current span's W3C `traceparent`, to carry a trace across a hop that is not a gRPC call
/// (a change event, a queue). `None` outside a trace.
pub fn current_traceparent() -> Option<String> {
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Makes the span named by `traceparent` the parent of `span` (nothing happens without an
/// OpenTelemetry layer or with a malformed value).
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    let carrier = std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
}

/// Writes the current span's context as `traceparent` into outgoing gRPC metadata.
pub fn inject_trace_context(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut MetadataInjector(metadata));
}

/// A tonic client interceptor that propagates the current trace (and a bearer token, if any).
#[derive(Debug, Clone, Default)]
pub struct ClientInterceptor {
    authorization: Option<tonic::metadata::AsciiMetadataValue>,
}

impl ClientInterceptor {
    /// An interceptor sending `token` as a bearer token.
    pub fn with_token(token: Option<&str>) -> Self {
        Self {
            authorization: token.and_then(|t| format!("Bearer {t}").parse().ok()),
        }
    }
}

impl tonic::service::Interceptor for ClientInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        inject_trace_context(request.metadata_mut());
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The span a server opens for each request, parented to the caller's `traceparent`. Use as
/// tonic's `Server::trace_fn`.
pub fn server_span(request: &http::Request<()>) -> tracing::Span {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    let span = tracing::info_span!(
        "grpc",
        otel.name = %request.uri().path(),
        rpc.system = "grpc",
        rpc.method = %request.uri().path(),
        otel.kind = "server",
    );
    // Only fails when no OpenTelemetry layer is installed, in which case there is nothing to link.
    let _ = span.set_parent(parent);
    span
}
