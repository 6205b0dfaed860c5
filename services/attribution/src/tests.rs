//! Attribution scenarios on provenance trees in the upstream layout, written by the core writer:
//! overlapping jobs, partial jobs, re-sent and concurrent batches, restarts, derivation against
//! reporting, bad input and owners.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use modelops_core::job::JobId;
use modelops_core::paths::ProvenanceSchema;
use modelops_core::store::Store;
use modelops_core::study::{JobSpec, SimJobSpec};
use modelops_core::synthetic::{self, SyntheticRun};
use modelops_core::time::now_iso;
use modelops_registry::registry::{Registration, SpecInput};
use modelops_registry::store::memory::MemoryStore;
use modelops_registry::{JobRegistry, RegistryConfig};

use crate::attribution::Attribution;
use crate::edge::{Edge, Kind, Role, Source};
use crate::error::AttributionError;

const BUNDLE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const STUDY: &str = include_str!("../../../crates/core/tests/fixtures/upstream/study_plain.json");

/// A registry, and provenance and results stores in real directories (`file://`).
struct World {
    registry: JobRegistry,
    provenance: Store,
    results: Store,
    _dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| Store::open(&format!("file://{}/{name}", dir.path().display())).unwrap();
        Self {
            registry: JobRegistry::new(Arc::new(MemoryStore::new()), open("jobs"), RegistryConfig::default(), &prometheus::Registry::new()),
            provenance: open("provenance"),
            results: open("results"),
            _dir: dir,
        }
    }

    fn attribution(&self) -> Attribution {
        Attribution::new(self.results.clone(), self.provenance.clone(), self.registry.clone())
    }

    /// Registers `job` from the fixture study, with the third parameter set's `beta` replaced.
    async fn register(&self, job: &str, third_beta: &str) -> SimJobSpec {
        let study = STUDY.replace("\"beta\": 0.25", &format!("\"beta\": {third_beta}"));
        self.registry
            .register(Registration {
                job_id: Some(JobId::new(job).unwrap()),
                spec: Some(SpecInput::Study {
                    study_json: study,
                    bundle_ref: BUNDLE.into(),
                }),
                ..Registration::default()
            })
            .await
            .unwrap();
        match self.registry.get_parsed_spec(&JobId::new(job).unwrap()).await.unwrap() {
            JobSpec::Simulation(spec) => spec,
            JobSpec::Calibration { .. } => unreachable!(),
        }
    }

    async fn run(&self, spec: &SimJobSpec, sets: &[usize], failed: &[usize], schema: ProvenanceSchema) -> synthetic::Written {
        let timestamp = now_iso();
        let run = SyntheticRun {
            schema,
            timestamp: &timestamp,
            param_sets: Some(sets),
            failed_aggregations: failed,
        };
        synthetic::write_job_results(self.provenance.object_store.as_ref(), spec, &run).await.unwrap()
    }
}

fn id(s: &str) -> JobId {
    JobId::new(s).unwrap()
}

async fn pause() {
    // Timestamps have microsecond resolution; make "before" and "after" unambiguous.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
}

fn summary(edges: &[Edge]) -> BTreeSet<(Kind, String, Role)> {
    edges.iter().map(|e| (e.kind, e.path.clone(), e.role)).collect()
}

/// The edges a runner would report for `written`, all computed.
fn reported(job: &str, spec: &SimJobSpec, written: &synthetic::Written) -> Vec<Edge> {
    let groups = spec.task_groups();
    let param_of = |path: &str| {
        groups
            .iter()
            .find(|g| path.contains(&format!("params_{}", &g.param_id[..8])))
            .map(|g| g.param_id.to_owned())
    };
    let mut edges = Vec::new();
    for path in &written.sims {
        let seed: u64 = path.rsplit("seed_").next().unwrap().parse().unwrap();
        edges.push(Edge {
            job_id: id(job),
            kind: Kind::Sim,
            path: path.clone(),
            param_id: param_of(path).unwrap(),
            seed: Some(seed),
            target: None,
            aggregation_id: None,
            role: Role::Computed,
            source: Source::Reported,
            recorded_at: crate::edge::now(),
        });
    }
    for path in &written.aggs {
        let agg_id = path.rsplit("agg_").next().unwrap().to_owned();
        // Which parameter set an aggregation belongs to is not in its path; derivation and the
        // runner both know it from the spec. Here: the set whose sims fed it.
        let group = groups
            .iter()
            .find(|g| {
                let task_ids = g.tasks.iter().map(|t| modelops_core::ids::runner_task_id(&t.param_id, t.seed, synthetic::OUTPUTS)).collect::<Vec<_>>();
                modelops_core::ids::aggregation_id("targets.prev:prevalence_target", task_ids.iter().map(String::as_str)) == agg_id
            })
            .unwrap();
        edges.push(Edge {
            job_id: id(job),
            kind: Kind::Agg,
            path: path.clone(),
            param_id: group.param_id.to_owned(),
            seed: None,
            target: Some("targets.prev:prevalence_target".into()),
            aggregation_id: Some(agg_id),
            role: Role::Computed,
            source: Source::Reported,
            recorded_at: crate::edge::now(),
        });
    }
    edges
}

#[tokio::test]
async fn a_second_job_sharing_parameter_sets_gets_cache_hits() {
    let world = World::new();
    let attribution = world.attribution();
    let spec_a = world.register("job-a", "0.25").await;
    pause().await;
    world.run(&spec_a, &[0, 1, 2], &[], ProvenanceSchema::Token).await;
    pause().await;
    // Job B shares parameter sets 0 and 1 with A; its third set is new.
    let spec_b = world.register("job-b", "0.45").await;
    pause().await;
    let written_b = world.run(&spec_b, &[2], &[], ProvenanceSchema::Token).await;

    let (counts_a, missing_a) = attribution.derive(&id("job-a"), &[ProvenanceSchema::Token], |_, _| {}).await.unwrap();
    assert_eq!((counts_a.sims, counts_a.aggs, counts_a.computed, counts_a.cache_hits), (9, 3, 12, 0));
    assert!(missing_a.is_empty());

    let (counts_b, missing_b) = attribution.derive(&id("job-b"), &[ProvenanceSchema::Token], |_, _| {}).await.unwrap();
    assert_eq!((counts_b.sims, counts_b.aggs), (9, 3));
    assert_eq!((counts_b.computed, counts_b.cache_hits), (4, 8), "set 2 computed (3 sims + 1 agg), sets 0-1 reused");
    assert_eq!(
        (counts_b.sims_computed, counts_b.sims_cache_hits, counts_b.aggs_computed, counts_b.aggs_cache_hits),
        (3, 6, 1, 2),
        "each kind on its own"
    );
    assert!(missing_b.is_empty());
    // The summary's sample takes both kinds in turn, though the file lists simulations first.
    let sample = attribution.summary(&id("job-b"), 4).await.unwrap().sample;
    assert_eq!(sample.iter().map(|e| e.kind).collect::<Vec<_>>(), [Kind::Sim, Kind::Agg, Kind::Sim, Kind::Agg]);
    let edges_b = attribution.job_edges(&id("job-b")).await.unwrap();
    for edge in &edges_b {
        let own = written_b.sims.contains(&edge.path) || written_b.aggs.contains(&edge.path);
        assert_eq!(edge.role, if own { Role::Computed } else { Role::CacheHit }, "{}", edge.path);
        assert_eq!(edge.source, Source::Derived);
    }

    // Both jobs own the shared results.
    let shared = edges_b.iter().find(|e| e.role == Role::CacheHit && e.kind == Kind::Agg).unwrap();
    let owners = attribution.owners(&shared.path).await.unwrap();
    let seen: Vec<(String, Role)> = owners.iter().map(|o| (o.job_id.to_string(), o.role)).collect();
    assert_eq!(seen, [("job-a".to_owned(), Role::Computed), ("job-b".to_owned(), Role::CacheHit)]);
}

#[tokio::test]
async fn a_partial_job_counts_its_missing_aggregations_and_simulations() {
    let world = World::new();
    let attribution = world.attribution();
    let spec = world.register("job-partial", "0.25").await;
    pause().await;
    world.run(&spec, &[0, 1], &[1], ProvenanceSchema::Token).await;
    let (seal, newly) = attribution.seal(&id("job-partial"), true).await.unwrap();
    assert!(newly);
    // Set 1's aggregation failed; set 2 never ran (3 sims and its aggregation missing).
    assert_eq!((seal.counts.sims, seal.counts.aggs, seal.counts.expected_missing), (6, 1, 5));
    assert_eq!(seal.missing_paths.len(), 5);
    assert!(seal.missing_paths.iter().all(|p| p.starts_with("token/v1/")));
    let again = attribution.seal(&id("job-partial"), true).await.unwrap();
    assert_eq!((again.0.clone(), again.1), (seal, false), "sealing is idempotent");
}

#[tokio::test]
async fn batches_sent_twice_or_concurrently_change_nothing() {
    let world = World::new();
    let attribution = world.attribution();
    let spec = world.register("job-r", "0.25").await;
    let written = world.run(&spec, &[0, 1, 2], &[], ProvenanceSchema::Token).await;
    let edges = reported("job-r", &spec, &written);
    let (first, second) = edges.split_at(5);
    assert!(attribution.record(&id("job-r"), None, first.to_vec()).await.unwrap());
    assert!(!attribution.record(&id("job-r"), None, first.to_vec()).await.unwrap(), "re-sent batch");
    let job = id("job-r");
    let racers = (0..8).map(|_| attribution.record(&job, Some("batch-2"), second.to_vec()));
    let stored: Vec<bool> = futures::future::join_all(racers).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(stored.iter().filter(|s| **s).count(), 1, "{stored:?}");
    assert_eq!(attribution.edge_store().batch_ids(&id("job-r")).await.unwrap().len(), 2);
    let all = attribution.job_edges(&id("job-r")).await.unwrap();
    assert_eq!(all.len(), edges.len());
}

#[tokio::test]
async fn a_restart_between_recording_and_sealing_loses_nothing() {
    let world = World::new();
    let spec = world.register("job-restart", "0.25").await;
    let written = world.run(&spec, &[0, 1, 2], &[], ProvenanceSchema::Token).await;
    let edges = reported("job-restart", &spec, &written);
    {
        let before = world.attribution();
        for chunk in edges.chunks(4) {
            before.record(&id("job-restart"), None, chunk.to_vec()).await.unwrap();
        }
    }
    let after = world.attribution();
    let (seal, newly) = after.seal(&id("job-restart"), false).await.unwrap();
    assert!(newly);
    assert_eq!((seal.counts.sims, seal.counts.aggs, seal.counts.computed), (9, 3, 12));
    assert!(matches!(
        after.record(&id("job-restart"), None, edges[..1].to_vec()).await,
        Err(AttributionError::Sealed(_))
    ));
}

#[tokio::test]
async fn derived_edges_equal_reported_edges() {
    let world = World::new();
    let spec = world.register("job-same", "0.25").await;
    pause().await;
    let written = world.run(&spec, &[0, 1, 2], &[], ProvenanceSchema::Token).await;
    let reported = reported("job-same", &spec, &written);
    let derived = crate::derive::derive(world.provenance.object_store.as_ref(), &spec, Utc::now() - chrono::Duration::hours(1), &[ProvenanceSchema::Token], 4, |_, _| {})
        .await
        .unwrap();
    assert!(derived.missing.is_empty());
    assert_eq!(summary(&derived.edges), summary(&reported));
    let params = |edges: &[Edge]| edges.iter().map(|e| (e.path.clone(), e.param_id.clone(), e.seed, e.aggregation_id.clone())).collect::<BTreeSet<_>>();
    assert_eq!(params(&derived.edges), params(&reported));
}

#[tokio::test]
async fn the_bundle_layout_is_derived_too() {
    let world = World::new();
    let attribution = world.attribution();
    let spec = world.register("job-bundle", "0.25").await;
    pause().await;
    world.run(&spec, &[0], &[], ProvenanceSchema::Bundle).await;
    let (token_only, _) = attribution.derive(&id("job-bundle"), &[ProvenanceSchema::Token], |_, _| {}).await.unwrap();
    assert_eq!(token_only.sims, 0);
    let (any, missing) = attribution.derive(&id("job-bundle"), &ProvenanceSchema::ALL, |_, _| {}).await.unwrap();
    assert_eq!((any.sims, any.aggs, any.computed), (3, 1, 4));
    assert_eq!(missing.len(), 8, "sets 1 and 2: 6 sims and 2 aggregations");
}

#[tokio::test]
async fn bad_input_is_refused_whole() {
    let world = World::new();
    let attribution = world.attribution();
    let spec = world.register("job-bad", "0.25").await;
    let written = world.run(&spec, &[0], &[], ProvenanceSchema::Token).await;
    let good = reported("job-bad", &spec, &written);
    let mut escaping = good.clone();
    escaping[1].path = "token/v1/sims/../../../../etc/passwd".into();
    let refused = attribution.record(&id("job-bad"), None, escaping).await;
    assert!(matches!(&refused, Err(AttributionError::InvalidEdge(e)) if e.index == 1), "{refused:?}");
    let mut absolute = good.clone();
    absolute[0].path = format!("/{}", absolute[0].path);
    assert!(matches!(attribution.record(&id("job-bad"), None, absolute).await, Err(AttributionError::InvalidEdge(_))));
    let mut foreign = good.clone();
    foreign[0].job_id = id("job-other");
    assert!(matches!(attribution.record(&id("job-bad"), None, foreign).await, Err(AttributionError::InvalidEdge(_))));
    let mut wrong_seed = good.clone();
    wrong_seed[0].seed = Some(1);
    assert!(matches!(attribution.record(&id("job-bad"), None, wrong_seed).await, Err(AttributionError::InvalidEdge(_))));
    assert!(matches!(attribution.record(&id("job-bad"), Some("../x"), good.clone()).await, Err(AttributionError::InvalidArgument(_))));
    assert!(matches!(attribution.record(&id("job-nope"), None, good.clone()).await, Err(AttributionError::NotFound(_))));
    assert!(attribution.edge_store().batch_ids(&id("job-bad")).await.unwrap().is_empty(), "nothing half-written");
    assert!(matches!(attribution.owners("../../etc").await, Err(AttributionError::InvalidArgument(_))));
    assert!(matches!(attribution.derive(&id("job-nope"), &ProvenanceSchema::ALL, |_, _| {}).await, Err(AttributionError::NotFound(_))));
}

#[tokio::test]
async fn sealed_edge_files_are_parquet_with_identical_bytes_for_identical_input() {
    let world = World::new();
    let spec = world.register("job-bytes", "0.25").await;
    let written = world.run(&spec, &[0, 1], &[], ProvenanceSchema::Token).await;
    let edges = crate::store::dedup(reported("job-bytes", &spec, &written));
    let a = crate::codec::to_parquet(&edges).unwrap();
    let b = crate::codec::to_parquet(&edges).unwrap();
    assert_eq!(a, b);
    assert_eq!(&a[..4], b"PAR1");
    assert_eq!(crate::codec::from_parquet(a).unwrap(), edges);
}

#[tokio::test]
async fn job_ids_holding_two_dots_seal_and_read_back() {
    // `v1..2` and `a..` are legal ids (no segment is `..`); their sealed files must read back.
    let world = World::new();
    let attribution = world.attribution();
    for job in ["v1..2", "a.."] {
        let spec = world.register(job, "0.25").await;
        pause().await;
        world.run(&spec, &[0, 1, 2], &[], ProvenanceSchema::Token).await;
        let (seal, _) = attribution.seal(&id(job), true).await.unwrap();
        assert!(seal.edges_file.starts_with(&format!("attribution/{job}/sealed/")), "{}", seal.edges_file);
        let edges = attribution.job_edges(&id(job)).await.unwrap();
        assert_eq!(edges.len(), 12, "{job}: 9 sims and 3 aggregations");
        let mut aggs = 0;
        attribution.visit_agg_edges(&id(job), |_| aggs += 1).await.unwrap();
        assert_eq!(aggs, 3, "{job}");
    }
}

#[test]
fn refusals_carry_a_stable_reason() {
    use tonic_types::StatusExt as _;
    let sealed = tonic::Status::from(AttributionError::Sealed("job-a".into()));
    assert_eq!(sealed.code(), tonic::Code::FailedPrecondition);
    let info = sealed.get_details_error_info().expect("an ErrorInfo");
    assert_eq!((info.reason.as_str(), info.metadata["job_id"].as_str()), ("JOB_SEALED", "job-a"));
    // A registry refusal is passed on as the registry answered it, reason included.
    let answered = tonic::Status::from(modelops_registry::RegistryError::NotFound("job-b".into()));
    let registry = tonic::Status::from(AttributionError::Registry(answered));
    assert_eq!(registry.code(), tonic::Code::NotFound);
    assert_eq!(registry.get_details_error_info().unwrap().reason, "JOB_NOT_FOUND");
}

#[tokio::test]
async fn a_partial_job_resumes_exactly_the_tasks_whose_results_are_missing() {
    use modelops_core::job::JobStatus;
    use modelops_registry::registry::StatusUpdate;
    let world = World::new();
    let attribution = world.attribution();
    let spec = world.register("job-resume", "0.25").await;
    // Sets 0 and 1 ran; set 2's three replicates did not.
    world.run(&spec, &[0, 1], &[], ProvenanceSchema::Token).await;
    let refused = attribution.resumable_tasks(&id("job-resume"), &ProvenanceSchema::ALL).await.unwrap_err();
    assert!(matches!(refused, AttributionError::NotPartial(_, JobStatus::Pending)), "{refused}");
    for status in [JobStatus::Submitting, JobStatus::Scheduled, JobStatus::Running, JobStatus::Validating, JobStatus::Partial] {
        world.registry.update_status(&id("job-resume"), StatusUpdate::to(status)).await.unwrap();
    }
    let (missing, total) = attribution.resumable_tasks(&id("job-resume"), &ProvenanceSchema::ALL).await.unwrap();
    assert_eq!(total, spec.tasks.len());
    let third = &spec.task_groups()[2];
    let expected: Vec<_> = spec.tasks.iter().filter(|t| t.param_id == third.param_id).cloned().collect();
    assert_eq!(missing, expected);
    assert_eq!(missing.len(), 3);
}
