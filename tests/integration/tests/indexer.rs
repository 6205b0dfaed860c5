//! The indexer through `mops serve`: a job that finishes is indexed automatically, pyarrow reads
//! the table, the registry records where it is, and a re-index with unchanged inputs keeps it.

use std::time::{Duration, Instant};

use modelops_core::paths::ProvenanceSchema;
use modelops_core::store::Store;
use modelops_core::study::JobSpec;
use modelops_core::synthetic::{self, SyntheticRun};
use modelops_integration_tests::{TestServer, channel, mops_binary, required_env};
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
    let mut indexer = IndexerClient::new(channel);
    registry
        .register_job(registry_pb::RegisterJobRequest {
            job_id: "job-idx".into(),
            spec: Some(registry_pb::register_job_request::Spec::Study(registry_pb::StudySpec {
                study_json: STUDY.into(),
                bundle_ref: BUNDLE.into(),
            })),
            ..Default::default()
        })
        .await
        .unwrap();
    let spec_json = registry.get_job_spec(registry_pb::GetJobSpecRequest { job_id: "job-idx".into() }).await.unwrap().into_inner().job_spec_json;
    let JobSpec::Simulation(spec) = JobSpec::from_json(spec_json.as_bytes()).unwrap() else { unreachable!() };
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

    for status in [registry_pb::JobStatus::Submitting, registry_pb::JobStatus::Scheduled, registry_pb::JobStatus::Running, registry_pb::JobStatus::Partial] {
        let status = if status == registry_pb::JobStatus::Partial { registry_pb::JobStatus::Validating } else { status };
        registry
            .update_status(registry_pb::UpdateStatusRequest {
                job_id: "job-idx".into(),
                status: status.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
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
