//! The indexer through `mops serve`: a job that finishes is indexed automatically, pyarrow reads
//! the table, the registry records where it is, and a re-index with unchanged inputs keeps it.

use std::time::{Duration, Instant};

use modelops_core::paths::ProvenanceSchema;
use modelops_core::store::Store;
use modelops_core::synthetic::{self, SyntheticRun};
use modelops_integration_tests::{TestServer, channel, mops_binary, move_through, register_study, required_env, wait_indexed};
use modelops_proto::indexer::v1 as pb;
use modelops_proto::indexer::v1::indexer_client::IndexerClient;
use modelops_proto::registry::v1 as registry_pb;
use modelops_proto::registry::v1::job_registry_client::JobRegistryClient;

const BUNDLE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const STUDY: &str = include_str!("../../../crates/core/tests/fixtures/upstream/study_plain.json");

#[tokio::test]
async fn a_finished_job_is_indexed_automatically_and_pyarrow_reads_it() {
    let server = TestServer::start(&[]).await;
    let channel = channel(&server.endpoint()).await;
    let mut registry = JobRegistryClient::new(channel.clone());
    let mut indexer = IndexerClient::new(channel.clone());
    let spec = register_study(&channel, "job-idx", STUDY, BUNDLE).await;
    let provenance = Store::open(&format!("file://{}/provenance", server.home.path().display())).unwrap();
    let timestamp = modelops_core::time::now_iso();
    let run = SyntheticRun {
        schema: ProvenanceSchema::Token,
        timestamp: &timestamp,
        param_sets: Some(&[0, 1]),
        failed_aggregations: &[],
    };
    synthetic::write_job_results(provenance.object_store.as_ref(), &spec, &run).await.unwrap();

    let running = indexer.index_job(pb::IndexJobRequest { job_id: "job-idx".into(), ..Default::default() }).await;
    assert_eq!(running.unwrap_err().code(), tonic::Code::FailedPrecondition, "a pending job is not indexed unless forced");
    let missing = indexer.index_job(pb::IndexJobRequest { job_id: "job-nope".into(), ..Default::default() }).await;
    assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);

    move_through(&channel, "job-idx", &[registry_pb::JobStatus::Submitting, registry_pb::JobStatus::Scheduled, registry_pb::JobStatus::Running, registry_pb::JobStatus::Validating]).await;
    registry
        .finalize_job(registry_pb::FinalizeJobRequest {
            job_id: "job-idx".into(),
            status: registry_pb::JobStatus::Partial.into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = indexer
            .get_index_status(pb::GetIndexStatusRequest { job_id: "job-idx".into() })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        if status.phase == i32::from(pb::IndexPhase::Done) {
            break status;
        }
        assert_ne!(status.phase, i32::from(pb::IndexPhase::Failed), "{status:?}");
        assert!(Instant::now() < deadline, "the job was not indexed: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let counts = status.counts.unwrap();
    assert_eq!((counts.total, counts.ok, counts.missing, counts.failed), (3, 2, 1, 0));

    let job = registry.get_job(registry_pb::GetJobRequest { job_id: "job-idx".into() }).await.unwrap().into_inner().job.unwrap();
    assert_eq!(job.index_state, i32::from(registry_pb::IndexState::Done));
    assert_eq!(job.results_path.as_deref(), Some("results/job-idx/"));

    let table = format!("{}/results/results/job-idx/losses.parquet", server.home.path().display());
    let script = format!(
        "import pyarrow.parquet as pq\nt = pq.read_table({table:?})\nprint(t.num_rows)\nprint(','.join(t.column_names))\nprint(','.join(t.column('status').to_pylist()))\nprint(t.schema.field('computed_at').type)"
    );
    let out = tokio::process::Command::new(required_env("MOPS_TEST_PYTHON")).args(["-c", &script]).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "3");
    assert_eq!(
        lines[1],
        "job_id,param_id,param_beta,param_gamma,param_contacts,param_region,loss,n_replicates,target,bundle_digest,computed_at,cache_hit,status"
    );
    assert_eq!(lines[2], "ok,ok,missing");
    assert_eq!(lines[3], "timestamp[us, tz=UTC]");

    // Re-indexing through the CLI finds the inputs unchanged and keeps the table.
    let out = tokio::process::Command::new(mops_binary())
        .args(["results", "--endpoint", &server.endpoint(), "index", "job-idx", "--wait"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("done (inputs unchanged, table kept)") && text.contains("3 (2 ok, 1 missing, 0 failed)"), "{text}");
    server.stop().await.unwrap();
}

use modelops_proto::attribution::v1 as attribution_pb;
use modelops_proto::attribution::v1::attribution_client::AttributionClient;

const KILL_TARGET: &str = "targets.prev:prevalence_target";

/// A study with `n` parameter sets, one replicate each, one target.
fn big_study(n: usize) -> String {
    let sets: Vec<String> = (0..n).map(|i| format!("{{\"params\": {{\"beta\": {}, \"gamma\": {}}}}}", (i as f64) / (n as f64), i % 7)).collect();
    format!(
        "{{\"model\": \"models.seir.SEIR\", \"scenario\": \"baseline\", \"parameter_sets\": [{}], \"n_replicates\": 1, \"targets\": [\"{KILL_TARGET}\"]}}",
        sets.join(", ")
    )
}

/// Registers the job, reports one aggregation edge per parameter set (writing the aggregations
/// into `provenance` first when `write` is set), and finishes the job.
async fn prepare(endpoint: &str, provenance: &Store, study: &str, write: bool) {
    let channel = channel(endpoint).await;
    let mut attribution = AttributionClient::new(channel.clone());
    let spec = register_study(&channel, "job-kill", study, BUNDLE).await;
    let mut edges = Vec::new();
    for (i, group) in spec.task_groups().iter().enumerate() {
        let task_ids: Vec<String> = group.tasks.iter().map(|t| modelops_core::ids::runner_task_id(&t.param_id, t.seed, synthetic::OUTPUTS)).collect();
        let record = modelops_core::records::AggRecord {
            bundle_ref: BUNDLE.into(),
            target_entrypoint: KILL_TARGET.into(),
            input_task_ids: task_ids,
            loss: (i as f64).sqrt(),
            diagnostics: Default::default(),
            n_replicates: 1,
            timestamp: "2026-11-22T20:05:11.254227+00:00".into(),
        };
        if write {
            modelops_core::records::write_agg(provenance.object_store.as_ref(), ProvenanceSchema::Token, &record).await.unwrap();
        }
        edges.push(attribution_pb::Edge {
            kind: attribution_pb::ResultKind::Agg.into(),
            path: record.dir(ProvenanceSchema::Token),
            param_id: group.param_id.to_owned(),
            target: Some(KILL_TARGET.into()),
            aggregation_id: Some(record.aggregation_id()),
            role: attribution_pb::Role::Computed.into(),
            ..Default::default()
        });
    }
    let batches: Vec<attribution_pb::RecordEdgesRequest> = edges
        .chunks(2000)
        .map(|chunk| attribution_pb::RecordEdgesRequest {
            job_id: "job-kill".into(),
            batch_id: String::new(),
            edges: chunk.to_vec(),
        })
        .collect();
    attribution.record_edges(futures::stream::iter(batches)).await.unwrap();
    move_through(&channel, "job-kill", &[registry_pb::JobStatus::Submitting, registry_pb::JobStatus::Scheduled, registry_pb::JobStatus::Running, registry_pb::JobStatus::Succeeded]).await;
}

async fn index_status(endpoint: &str) -> pb::IndexStatus {
    IndexerClient::new(channel(endpoint).await)
        .get_index_status(pb::GetIndexStatusRequest { job_id: "job-kill".into() })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

async fn wait_done(endpoint: &str) -> pb::IndexStatus {
    wait_indexed(&channel(endpoint).await, "job-kill", Duration::from_secs(120)).await
}

#[tokio::test]
async fn an_indexer_killed_mid_run_and_restarted_writes_the_same_bytes() {
    use modelops_integration_tests::MopsProcess;
    let shared = tempfile::tempdir().unwrap();
    let provenance_url = format!("file://{}/provenance", shared.path().display());
    let provenance = Store::open(&provenance_url).unwrap();
    let study = big_study(6000);
    let args = ["--provenance", provenance_url.as_str(), "--index-concurrency", "1", "--index-claim-ttl-seconds", "3"];

    // Interrupted: kill -9 while the table is being built, then restart on the same home.
    let home_a = tempfile::tempdir().unwrap();
    let mut first = MopsProcess::serve(home_a.path(), &args);
    let endpoint = format!("http://127.0.0.1:{}", first.port);
    prepare(&endpoint, &provenance, &study, true).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = index_status(&endpoint).await;
        if status.phase == i32::from(pb::IndexPhase::Running) && status.processed > 0 {
            assert!(status.processed < status.expected, "killed too late: {status:?}");
            break;
        }
        assert_ne!(status.phase, i32::from(pb::IndexPhase::Done), "finished before it could be killed");
        assert!(Instant::now() < deadline, "indexing never started: {status:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let table_a = home_a.path().join("results/results/job-kill/losses.parquet");
    assert!(!table_a.exists(), "no torn table: the staging file is the only thing written before the commit");
    drop(first);
    let second = MopsProcess::serve(home_a.path(), &args);
    let done_a = wait_done(&format!("http://127.0.0.1:{}", second.port)).await;
    assert_eq!(done_a.counts.unwrap().ok, 6000);
    // After another restart the status comes from the registry and the committed manifest.
    assert!(tokio::task::spawn_blocking(move || second.terminate()).await.unwrap().success());
    let second = MopsProcess::serve(home_a.path(), &args);
    let reloaded = index_status(&format!("http://127.0.0.1:{}", second.port)).await;
    assert_eq!(reloaded.phase, i32::from(pb::IndexPhase::Done));
    assert_eq!((reloaded.counts.unwrap().ok, reloaded.input_fingerprint.as_str()), (6000, done_a.input_fingerprint.as_str()));

    // Uninterrupted, in another home over the same provenance.
    let home_b = tempfile::tempdir().unwrap();
    let other = MopsProcess::serve(home_b.path(), &args);
    let endpoint_b = format!("http://127.0.0.1:{}", other.port);
    prepare(&endpoint_b, &provenance, &study, false).await;
    let done_b = wait_done(&endpoint_b).await;
    assert_eq!(done_a.input_fingerprint, done_b.input_fingerprint);
    for file in ["losses.parquet", "summary.json"] {
        let a = std::fs::read(home_a.path().join("results/results/job-kill").join(file)).unwrap();
        let b = std::fs::read(home_b.path().join("results/results/job-kill").join(file)).unwrap();
        assert!(a == b, "{file} differs between the killed-and-restarted run and the uninterrupted one");
    }
    // terminate() blocks: run it off this runtime, so the client connections living on it can
    // answer the server's GOAWAY.
    for server in [second, other] {
        let status = tokio::task::spawn_blocking(move || server.terminate()).await.unwrap();
        assert!(status.success(), "{status:?}");
    }
}
