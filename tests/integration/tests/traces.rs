//! One trace across the services: a client's `traceparent` on FinalizeJob reaches the registry,
//! the indexer build that the job's end triggers, and the query catalog that learns of the new
//! table; a query with the same trace joins it. Spans arrive at an OTLP receiver in this test
//! from a real `mops serve` process.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modelops_core::paths::ProvenanceSchema;
use modelops_core::store::Store;
use modelops_core::synthetic::{self, SyntheticRun};
use modelops_integration_tests::{channel, free_port, mops_binary, move_through, register_study, wait_indexed};
use modelops_proto::registry::v1 as pb;
use modelops_proto::registry::v1::job_registry_client::JobRegistryClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

/// (trace id hex, span name) of every span received.
#[derive(Debug, Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, String)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(&self, request: tonic::Request<ExportTraceServiceRequest>) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let trace: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                    spans.push((trace, span.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn traced<T>(message: T, span: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("traceparent", format!("00-{TRACE}-{span}-01").parse().unwrap());
    request
}

#[tokio::test]
async fn one_trace_spans_registry_indexer_and_query() {
    let receiver = Receiver::default();
    let otlp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr = otlp.local_addr().unwrap();
    let collector = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream_of(otlp)),
    );

    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = tokio::process::Command::new(mops_binary())
        .args(["serve", "--home", home.path().to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp_addr}"))
        .env("LOG_FILTER", "info")
        .stderr(std::fs::File::create(home.path().join("mops.log")).unwrap())
        .spawn()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "mops did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let channel = channel(&endpoint).await;
    let study = r#"{"model": "models.seir.SEIR", "scenario": "baseline", "parameter_sets": [{"params": {"beta": 0.3}}, {"params": {"beta": 0.5}}],
                   "n_replicates": 1, "targets": ["targets.prev:prevalence_target"]}"#;
    let spec = register_study(&channel, "job-traced", study, &format!("sha256:{}", "ab".repeat(32))).await;
    let provenance = Store::open(&format!("file://{}/provenance", home.path().display())).unwrap();
    let timestamp = modelops_core::time::now_iso();
    let run = SyntheticRun {
        schema: ProvenanceSchema::Token,
        timestamp: &timestamp,
        param_sets: None,
        failed_aggregations: &[],
    };
    synthetic::write_job_results(provenance.object_store.as_ref(), &spec, &run).await.unwrap();
    move_through(&channel, "job-traced", &[pb::JobStatus::Submitting, pb::JobStatus::Scheduled, pb::JobStatus::Running, pb::JobStatus::Validating]).await;
    // The client's trace starts here.
    JobRegistryClient::new(channel.clone())
        .finalize_job(traced(
            pb::FinalizeJobRequest {
                job_id: "job-traced".into(),
                status: pb::JobStatus::Succeeded.into(),
                ..Default::default()
            },
            "00f067aa0ba902b7",
        ))
        .await
        .unwrap();
    wait_indexed(&channel, "job-traced", Duration::from_secs(20)).await;
    let mut flight = arrow_flight::flight_service_client::FlightServiceClient::new(channel);
    let descriptor = arrow_flight::FlightDescriptor::new_path(vec!["losses".into(), "job-traced".into()]);
    let info = flight.get_flight_info(traced(descriptor, "00f067aa0ba902b8")).await.unwrap().into_inner();
    assert_eq!(info.total_records, 2);

    // SIGTERM: the process drains and flushes its spans on the way out.
    let pid = child.id().unwrap().to_string();
    assert!(tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let exited = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("mops exits").unwrap();
    assert!(exited.success());

    let spans = receiver.spans.lock().unwrap().clone();
    let in_trace: BTreeSet<&str> = spans.iter().filter(|(trace, _)| trace == TRACE).map(|(_, name)| name.as_str()).collect();
    for expected in [
        "/modelops.registry.v1.JobRegistry/FinalizeJob",
        "index_job",
        "catalog_reload",
        "/arrow.flight.protocol.FlightService/GetFlightInfo",
    ] {
        assert!(in_trace.contains(expected), "{expected} not in trace {TRACE}: {in_trace:?}\nall spans: {spans:?}");
    }
    collector.abort();
}

fn tokio_stream_of(listener: tokio::net::TcpListener) -> tokio_stream::wrappers::TcpListenerStream {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}
