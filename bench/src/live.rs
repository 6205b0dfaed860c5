//! The cost of the dashboard's provisional landscape to a running job: a 128,000-task job
//! (32,000 sets × 4 replicates, one target) reports its results as a runner does (for every 250
//! sets, one batch of 1,250 edges and one progress update) while a browser on its page fetches
//! `/jobs/{id}/live` again as soon as each answer arrives, against the same job reporting with
//! nobody viewing it (before and after, averaged; a first job warms the stores up). Every
//! aggregation's `result.json` is in the provenance store, so each refresh reads the new ones;
//! after the report, the page is viewed until it shows every set.

use std::time::{Duration, Instant};

use modelops_core::ids;
use modelops_core::paths::{self, ProvenanceSchema};
use modelops_core::pyjson::PyObject;
use modelops_core::records::{self, AggRecord};
use modelops_core::store::Store;
use modelops_core::study::JobSpec;
use modelops_proto::attribution::v1 as attribution_pb;
use modelops_proto::attribution::v1::attribution_client::AttributionClient;
use modelops_proto::registry::v1 as registry_pb;
use modelops_proto::registry::v1::job_registry_client::JobRegistryClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use crate::report::Row;

const BUNDLE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const TARGET: &str = "targets.prev:prevalence";
const OUTPUTS: [&str; 2] = ["metadata", "prevalence"];
/// Sets reported per batch of edges and progress update.
const SETS_PER_REPORT: usize = 250;

fn study(sets: usize, replicates: u64) -> String {
    let sets: Vec<String> = (0..sets)
        .map(|i| format!(r#"{{"params": {{"beta": {}, "gamma": {}}}}}"#, 0.05 + (i % 181) as f64 / 400.0, 0.05 + (i / 181) as f64 / 800.0))
        .collect();
    format!(r#"{{"model": "models.seir.SEIR", "scenario": "baseline", "parameter_sets": [{}], "n_replicates": {replicates}, "targets": ["{TARGET}"]}}"#, sets.join(", "))
}

/// Registers `job` with `study_json` and moves it to running; returns its spec.
async fn register(channel: &Channel, job: &str, study_json: &str) -> anyhow::Result<modelops_core::study::SimJobSpec> {
    let mut registry = JobRegistryClient::new(channel.clone()).max_decoding_message_size(256 << 20).max_encoding_message_size(256 << 20);
    registry
        .register_job(registry_pb::RegisterJobRequest {
            job_id: job.into(),
            spec: Some(registry_pb::register_job_request::Spec::Study(registry_pb::StudySpec {
                study_json: study_json.into(),
                bundle_ref: BUNDLE.into(),
            })),
            ..Default::default()
        })
        .await?;
    for status in [registry_pb::JobStatus::Submitting, registry_pb::JobStatus::Scheduled, registry_pb::JobStatus::Running] {
        registry
            .update_status(registry_pb::UpdateStatusRequest {
                job_id: job.into(),
                status: status.into(),
                ..Default::default()
            })
            .await?;
    }
    let spec = registry.get_job_spec(registry_pb::GetJobSpecRequest { job_id: job.into() }).await?.into_inner().job_spec_json;
    match JobSpec::from_json(spec.as_bytes())? {
        JobSpec::Simulation(spec) => Ok(spec),
        JobSpec::Calibration { .. } => anyhow::bail!("a calibration spec"),
    }
}

/// Each set's edges (its simulations, then its aggregation), writing the aggregation results
/// when `write` (the jobs share them).
async fn edges_of(spec: &modelops_core::study::SimJobSpec, provenance: &Store, write: bool) -> anyhow::Result<Vec<Vec<attribution_pb::Edge>>> {
    let mut all = Vec::new();
    for (i, group) in spec.task_groups().iter().enumerate() {
        let mut edges = Vec::new();
        let mut task_ids = Vec::new();
        for task in &group.tasks {
            task_ids.push(ids::runner_task_id(group.param_id, task.seed, OUTPUTS));
            edges.push(attribution_pb::Edge {
                job_id: spec.job_id.to_string(),
                kind: attribution_pb::ResultKind::Sim.into(),
                path: paths::sim_dir(ProvenanceSchema::Token, BUNDLE, group.param_id, task.seed),
                param_id: group.param_id.to_owned(),
                seed: Some(task.seed),
                role: attribution_pb::Role::Computed.into(),
                ..Default::default()
            });
        }
        let record = AggRecord {
            bundle_ref: BUNDLE.into(),
            target_entrypoint: TARGET.into(),
            input_task_ids: task_ids,
            loss: 0.01 + (i % 997) as f64 / 997.0,
            diagnostics: PyObject::new(),
            n_replicates: group.tasks.len() as i64,
            timestamp: "2026-11-29T00:00:00+00:00".into(),
        };
        if write {
            records::write_agg(provenance.object_store.as_ref(), ProvenanceSchema::Token, &record).await?;
        }
        edges.push(attribution_pb::Edge {
            job_id: spec.job_id.to_string(),
            kind: attribution_pb::ResultKind::Agg.into(),
            path: record.dir(ProvenanceSchema::Token),
            param_id: group.param_id.to_owned(),
            target: Some(TARGET.into()),
            aggregation_id: Some(record.aggregation_id()),
            role: attribution_pb::Role::Computed.into(),
            ..Default::default()
        });
        all.push(edges);
    }
    Ok(all)
}

/// Reports `sets` of `job` as a runner does; returns the time it took.
async fn report(channel: &Channel, job: &str, sets: &[Vec<attribution_pb::Edge>]) -> anyhow::Result<Duration> {
    let mut attribution = AttributionClient::new(channel.clone()).max_encoding_message_size(64 << 20);
    let mut registry = JobRegistryClient::new(channel.clone());
    let started = Instant::now();
    for (n, chunk) in sets.chunks(SETS_PER_REPORT).enumerate() {
        let edges: Vec<attribution_pb::Edge> = chunk.iter().flatten().cloned().collect();
        let tasks = (edges.len() - chunk.len()) as i64;
        let batch = attribution_pb::RecordEdgesRequest {
            job_id: job.into(),
            batch_id: format!("report-{n}"),
            edges,
        };
        attribution.record_edges(futures::stream::iter([batch])).await?;
        registry
            .add_progress(registry_pb::AddProgressRequest {
                job_id: job.into(),
                completed_delta: tasks,
                ack_when_queued: true,
                ..Default::default()
            })
            .await?;
    }
    Ok(started.elapsed())
}

/// One GET of `path` on `http` (HTTP/1.1, closed after), returning the body.
async fn get(http: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(http).await?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// The provisional rows a live fragment shows.
fn provisional_rows(body: &str) -> Option<u64> {
    body.split("data-provisional-rows=\"").nth(1)?.split('"').next()?.parse().ok()
}

/// Runs the row.
pub async fn run(scale: f64) -> anyhow::Result<Row> {
    let sets = ((32_000.0 * scale) as usize).max(2_000);
    let home = tempfile::tempdir()?;
    let server = mops::serve::LocalServer::start(&mops::serve_args(&["--home", &home.path().display().to_string()])?).await?;
    let channel = Channel::from_shared(server.endpoint())?.connect().await?;
    let provenance = Store::open(&format!("file://{}/provenance", home.path().display()))?;
    let study_json = study(sets, 4);
    // A first job warms the stores up; then quiet, watched, quiet.
    let jobs = ["job-warm-up", "job-quiet-1", "job-watched", "job-quiet-2"];
    let mut reports = Vec::new();
    for (k, job) in jobs.iter().enumerate() {
        let spec = register(&channel, job, &study_json).await?;
        reports.push(edges_of(&spec, &provenance, k == 0).await?);
    }
    let edges: usize = reports[0].iter().map(Vec::len).sum();

    report(&channel, jobs[0], &reports[0]).await?;
    let quiet_1 = report(&channel, jobs[1], &reports[1]).await?;
    // A browser on the watched job's page: each fetch as soon as the last one answered.
    let stop = tokio_util::sync::CancellationToken::new();
    let http = server.http;
    let viewer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut fetches, mut grew, mut last) = (0u64, 0u64, 0u64);
            while !stop.is_cancelled() {
                let body = get(http, "/jobs/job-watched/live").await?;
                fetches += 1;
                if let Some(rows) = provisional_rows(&body)
                    && rows > last
                {
                    grew += 1;
                    last = rows;
                }
            }
            Ok::<_, anyhow::Error>((fetches, grew, last))
        }
    });
    let watched = report(&channel, jobs[2], &reports[2]).await?;
    stop.cancel();
    let (fetches, grew, last) = viewer.await??;
    let quiet_2 = report(&channel, jobs[3], &reports[3]).await?;
    // After the report, later views show every row (each refresh reads at most 20,000 results,
    // and comes at most every 2 s or five times the last refresh's duration).
    let mut final_rows = 0;
    for _ in 0..60 {
        final_rows = provisional_rows(&get(http, "/jobs/job-watched/live").await?).unwrap_or(0);
        if final_rows == sets as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    server.stop().await?;

    let quiet = (quiet_1 + quiet_2).as_secs_f64() / 2.0;
    let watched = watched.as_secs_f64();
    let ratio = quiet / watched;
    Ok(Row {
        workload: format!(
            "a {}-task job ({sets} sets × 4) reporting {edges} edges in batches of {} with a progress update each, while a browser fetches its provisional landscape back to back ({fetches} fetches, {grew} showed more rows, the last {last}; {final_rows} after the report)",
            sets * 4,
            SETS_PER_REPORT * 5
        ),
        measured: format!("{:.2} s ({:.0} edges/s)", watched, edges as f64 / watched),
        baseline: format!("{:.2} s with nobody viewing it (mean of before and after: {:.2} s, {:.2} s)", quiet, quiet_1.as_secs_f64(), quiet_2.as_secs_f64()),
        ratio: Some(ratio),
        target: "≥ 0.9×: the live view does not slow reporting (issue #19)".into(),
        met: ratio >= 0.9 && final_rows == sets as u64,
    })
}
