//! Attribution through gRPC against `mops serve`, with the edges in Azurite: two jobs sharing
//! parameter sets, reported and derived edges, sealing, owners, errors and the CLI.

use futures::StreamExt;
use modelops_core::paths::ProvenanceSchema;
use modelops_core::store::Store;
use modelops_core::study::SimJobSpec;
use modelops_core::synthetic::{self, SyntheticRun};
use modelops_integration_tests::{TestServer, azurite_container, channel, mops_binary, register_study, unique};
use modelops_proto::attribution::v1 as pb;
use modelops_proto::attribution::v1::attribution_client::AttributionClient;

const BUNDLE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const STUDY: &str = include_str!("../../../crates/core/tests/fixtures/upstream/study_plain.json");
const TARGET: &str = "targets.prev:prevalence_target";

async fn register(channel: &tonic::transport::Channel, job: &str, third_beta: &str) -> SimJobSpec {
    register_study(channel, job, &STUDY.replace("\"beta\": 0.25", &format!("\"beta\": {third_beta}")), BUNDLE).await
}

async fn run(provenance: &Store, spec: &SimJobSpec, sets: &[usize]) -> synthetic::Written {
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let timestamp = modelops_core::time::now_iso();
    let run = SyntheticRun {
        schema: ProvenanceSchema::Token,
        timestamp: &timestamp,
        param_sets: Some(sets),
        failed_aggregations: &[],
    };
    synthetic::write_job_results(provenance.object_store.as_ref(), spec, &run).await.unwrap()
}

/// The edges a runner reports for what it wrote (all computed).
fn reported(job: &str, spec: &SimJobSpec, written: &synthetic::Written) -> Vec<pb::Edge> {
    let groups = spec.task_groups();
    let mut edges = Vec::new();
    for group in &groups {
        let task_ids: Vec<String> = group.tasks.iter().map(|t| modelops_core::ids::runner_task_id(&t.param_id, t.seed, synthetic::OUTPUTS)).collect();
        let aggregation_id = modelops_core::ids::aggregation_id(TARGET, task_ids.iter().map(String::as_str));
        for task in &group.tasks {
            let path = modelops_core::paths::sim_dir(ProvenanceSchema::Token, BUNDLE, &task.param_id, task.seed);
            if written.sims.contains(&path) {
                edges.push(pb::Edge {
                    job_id: job.into(),
                    kind: pb::ResultKind::Sim.into(),
                    path,
                    param_id: task.param_id.clone(),
                    seed: Some(task.seed),
                    role: pb::Role::Computed.into(),
                    ..Default::default()
                });
            }
        }
        let path = modelops_core::paths::agg_dir(ProvenanceSchema::Token, BUNDLE, TARGET, &aggregation_id);
        if written.aggs.contains(&path) {
            edges.push(pb::Edge {
                job_id: job.into(),
                kind: pb::ResultKind::Agg.into(),
                path,
                param_id: group.param_id.to_owned(),
                target: Some(TARGET.into()),
                aggregation_id: Some(aggregation_id),
                role: pb::Role::Computed.into(),
                ..Default::default()
            });
        }
    }
    edges
}

fn batch(job: &str, edges: &[pb::Edge]) -> pb::RecordEdgesRequest {
    pb::RecordEdgesRequest {
        job_id: job.into(),
        batch_id: String::new(),
        edges: edges.to_vec(),
    }
}

#[tokio::test]
async fn two_jobs_sharing_results_on_azurite() {
    let container = unique("attribution");
    let results = format!("{}/results", azurite_container(&container).await);
    let server = TestServer::start(&["--results", &results]).await;
    let provenance = Store::open(&format!("file://{}/provenance", server.home.path().display())).unwrap();
    let channel = channel(&server.endpoint()).await;
    let mut attribution = AttributionClient::new(channel.clone());

    let spec_a = register(&channel, "job-a", "0.25").await;
    let written_a = run(&provenance, &spec_a, &[0, 1, 2]).await;
    let spec_b = register(&channel, "job-b", "0.45").await;
    run(&provenance, &spec_b, &[2]).await;

    // Job A reports its edges in two batches, and one batch again after a "restart".
    let edges_a = reported("job-a", &spec_a, &written_a);
    assert_eq!(edges_a.len(), 12);
    let (first, second) = edges_a.split_at(6);
    let sent = futures::stream::iter(vec![batch("job-a", first), batch("job-a", second), batch("job-a", first)]);
    let recorded = attribution.record_edges(sent).await.unwrap().into_inner();
    assert_eq!((recorded.batches, recorded.edges_received, recorded.batches_already_stored), (3, 18, 1));
    let sealed = attribution
        .seal_job(pb::SealJobRequest {
            job_id: "job-a".into(),
            derive_missing: false,
        })
        .await
        .unwrap()
        .into_inner();
    let counts = sealed.counts.unwrap();
    assert!(sealed.newly_sealed);
    assert_eq!((counts.sims, counts.aggs, counts.computed, counts.cache_hits), (9, 3, 12, 0));

    // Job B ran before attribution existed: derive its edges.
    let mut derive = attribution
        .derive_edges(pb::DeriveEdgesRequest {
            job_id: "job-b".into(),
            schema: "any".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(message) = derive.next().await {
        last = Some(message.unwrap());
    }
    let last = last.unwrap();
    assert!(last.done);
    let counts = last.counts.unwrap();
    assert_eq!((counts.sims, counts.aggs, counts.computed, counts.cache_hits, counts.expected_missing), (9, 3, 4, 8, 0));

    // The shared aggregations are owned by both jobs.
    let shared = edges_a.iter().find(|e| e.kind == i32::from(pb::ResultKind::Agg)).unwrap();
    let owners = attribution
        .get_result_owners(pb::GetResultOwnersRequest { path: shared.path.clone() })
        .await
        .unwrap()
        .into_inner()
        .owners;
    let owners: Vec<(String, i32)> = owners.into_iter().map(|o| (o.job_id, o.role)).collect();
    assert_eq!(owners, [("job-a".into(), pb::Role::Computed.into()), ("job-b".into(), pb::Role::CacheHit.into())]);

    let mut listed = attribution
        .list_job_results(pb::ListJobResultsRequest {
            job_id: "job-b".into(),
            role: pb::Role::CacheHit.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut cache_hits = 0;
    while let Some(message) = listed.next().await {
        cache_hits += message.unwrap().edges.len();
    }
    assert_eq!(cache_hits, 8);

    // Errors.
    let code = |r: Result<tonic::Response<pb::RecordEdgesResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(code(attribution.record_edges(futures::stream::iter(vec![batch("job-a", first)])).await), tonic::Code::FailedPrecondition);
    assert_eq!(code(attribution.record_edges(futures::stream::iter(vec![batch("job-zzz", first)])).await), tonic::Code::NotFound);
    let mut escaping = first.to_vec();
    escaping[0].path = "token/v1/sims/../../../etc".into();
    escaping[0].job_id = "job-b".into();
    assert_eq!(code(attribution.record_edges(futures::stream::iter(vec![batch("job-b", &escaping)])).await), tonic::Code::InvalidArgument);
    let owners = attribution.get_result_owners(pb::GetResultOwnersRequest { path: "/etc/passwd".into() }).await;
    assert_eq!(owners.unwrap_err().code(), tonic::Code::InvalidArgument);

    // The CLI shows the same.
    let out = tokio::process::Command::new(mops_binary())
        .args(["attribution", "--endpoint", &server.endpoint(), "show", "job-b"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Per kind: job-b's 4 computed and 8 cache hits, split between simulations and aggregations.
    let line = |kind: &str| text.lines().find(|l| l.starts_with(kind)).unwrap_or_else(|| panic!("{kind} in {text}")).to_owned();
    let numbers = |line: String| line.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).map(|w| w.parse::<u64>().unwrap()).collect::<Vec<_>>();
    let (sims, aggs) = (numbers(line("Simulations:")), numbers(line("Aggregations:")));
    assert_eq!((sims[1] + aggs[1], sims[2] + aggs[2]), (4, 8), "{text}");
    assert_eq!((sims[0], aggs[0]), (sims[1] + sims[2], aggs[1] + aggs[2]), "{text}");
    server.stop().await.unwrap();
}
