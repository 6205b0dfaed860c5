//! The indexer on upstream-layout trees written by the core writer.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt as _;
use modelops_attribution::derive::derive;
use modelops_core::job::JobId;
use modelops_core::loss_table::{Manifest, Summary};
use modelops_core::paths::ProvenanceSchema;
use modelops_core::pyjson::{self, PyValue};
use modelops_core::store::Store;
use modelops_core::study::{SimJobSpec, SimulationStudy};
use modelops_core::synthetic::{self, SyntheticRun};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::build::{IndexOptions, index_job};
use crate::locate::locate;

const BUNDLE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const STUDY: &str = r#"{"model": "models.seir.SEIR", "scenario": "baseline",
 "parameter_sets": [
   {"params": {"beta": 0.3, "gamma": 1, "region": "S\u00e3o Paulo \ud83d\ude00"}},
   {"params": {"beta": 1e-05, "gamma": 0.5}},
   {"params": {"beta": 2, "gamma": 0.25, "flag": true}}],
 "n_replicates": 2,
 "targets": ["targets.prev:prevalence_target", "targets.deaths/deaths_target"]}"#;

fn job(id: &str, study: &str) -> SimJobSpec {
    SimulationStudy::from_json(study.as_bytes())
        .unwrap()
        .to_sim_job(BUNDLE, Some(JobId::new(id).unwrap()))
        .unwrap()
}

struct Stores {
    provenance: Store,
    results: Store,
    _dir: tempfile::TempDir,
}

fn stores() -> Stores {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| Store::open(&format!("file://{}/{name}", dir.path().display())).unwrap();
    Stores {
        provenance: open("provenance"),
        results: open("results"),
        _dir: dir,
    }
}

async fn write(stores: &Stores, job: &SimJobSpec, schema: ProvenanceSchema, sets: &[usize], failed: &[usize], timestamp: &str) {
    let run = SyntheticRun {
        schema,
        timestamp,
        param_sets: Some(sets),
        failed_aggregations: failed,
    };
    synthetic::write_job_results(stores.provenance.object_store.as_ref(), job, &run).await.unwrap();
}

/// Derives the job's edges (as if created at `created_at`) and indexes it.
async fn index(stores: &Stores, job: &SimJobSpec, created_at: chrono::DateTime<Utc>) -> crate::build::IndexOutcome {
    let derived = derive(stores.provenance.object_store.as_ref(), job, created_at, &ProvenanceSchema::ALL, 8, |_, _| {}).await.unwrap();
    let locations = locate(job, derived.edges.iter().filter_map(modelops_attribution::edge::Edge::as_agg_edge));
    let options = IndexOptions {
        batch_rows: 4,
        ..IndexOptions::default()
    };
    index_job(&stores.provenance, Arc::clone(&stores.results.object_store), job, &locations, options, |_, _| {})
        .await
        .unwrap()
}

async fn read(stores: &Stores, job: &str, file: &str) -> Bytes {
    stores.results.object_store.get(&Path::from(format!("results/{job}/{file}"))).await.unwrap().bytes().await.unwrap()
}

async fn table(stores: &Stores, job: &str) -> RecordBatch {
    let bytes = read(stores, job, "losses.parquet").await;
    let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap().map(Result::unwrap).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let array = batch.column_by_name(column).unwrap().as_string::<i32>();
    (0..array.len()).map(|i| (!array.is_null(i)).then(|| array.value(i).to_owned())).collect()
}

fn floats(batch: &RecordBatch, column: &str) -> Vec<Option<f64>> {
    let array = batch.column_by_name(column).unwrap().as_primitive::<Float64Type>();
    (0..array.len()).map(|i| (!array.is_null(i)).then(|| array.value(i))).collect()
}

const EARLY: &str = "2026-01-01T00:00:00+00:00";

#[tokio::test]
async fn typed_columns_unicode_widening_and_both_target_forms() {
    let stores = stores();
    let job = job("job-types", STUDY);
    write(&stores, &job, ProvenanceSchema::Token, &[0, 1, 2], &[], EARLY).await;
    let outcome = index(&stores, &job, Utc::now()).await;
    assert_eq!((outcome.counts.total, outcome.counts.ok, outcome.unchanged), (6, 6, false));
    let batch = table(&stores, "job-types").await;
    let types: Vec<(String, DataType)> = batch.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    let param_types: Vec<&(String, DataType)> = types.iter().filter(|(n, _)| n.starts_with("param_") && n != "param_id").collect();
    assert_eq!(
        param_types,
        [
            &("param_beta".to_owned(), DataType::Float64),
            &("param_gamma".to_owned(), DataType::Float64),
            &("param_region".to_owned(), DataType::Utf8),
            &("param_flag".to_owned(), DataType::Boolean),
        ]
    );
    assert_eq!(floats(&batch, "param_beta"), [Some(0.3), Some(0.3), Some(1e-05), Some(1e-05), Some(2.0), Some(2.0)]);
    assert_eq!(floats(&batch, "param_gamma"), [Some(1.0), Some(1.0), Some(0.5), Some(0.5), Some(0.25), Some(0.25)]);
    let region = strings(&batch, "param_region");
    assert_eq!(region[0].as_deref(), Some("São Paulo 😀"));
    assert_eq!(region[2], None, "a parameter only some sets have is null elsewhere");
    assert_eq!(
        strings(&batch, "target").iter().flatten().take(2).collect::<Vec<_>>(),
        ["targets.prev:prevalence_target", "targets.deaths/deaths_target"]
    );
    let groups = job.task_groups();
    let losses = floats(&batch, "loss");
    for (i, loss) in losses.iter().enumerate() {
        assert_eq!(*loss, Some(synthetic::synthetic_loss(groups[i / 2].values, i % 2)));
    }
    assert!(strings(&batch, "status").iter().all(|s| s.as_deref() == Some("ok")));
    let summary = Summary::from_json_bytes(&read(&stores, "job-types", "summary.json").await).unwrap();
    let targets: Vec<&str> = summary.targets.0.iter().map(|(target, _)| target.as_str()).collect();
    assert_eq!(targets, ["targets.prev:prevalence_target", "targets.deaths/deaths_target"], "in spec order");
    let prev = &summary.targets.0[0].1;
    assert_eq!(prev.count, 3);
    let expected_best = groups
        .iter()
        .min_by(|a, b| synthetic::synthetic_loss(a.values, 0).total_cmp(&synthetic::synthetic_loss(b.values, 0)))
        .unwrap();
    assert_eq!(prev.best[0].param_id, expected_best.param_id);
    let params: Vec<&str> = prev.best[0].params.0.iter().map(|(name, _)| name.as_str()).collect();
    let spec_order: Vec<&str> = expected_best.values.keys().collect();
    assert_eq!(params, spec_order, "parameter values in the spec's order");
    assert_eq!(prev.best.len(), 3);
}

#[tokio::test]
async fn partial_jobs_and_bad_results_become_rows_not_errors() {
    let stores = stores();
    let job = job("job-partial", STUDY);
    write(&stores, &job, ProvenanceSchema::Bundle, &[0, 1], &[1], EARLY).await;
    // Damage two aggregations of set 0: a truncated result and a non-finite loss.
    let derived = derive(stores.provenance.object_store.as_ref(), &job, Utc::now(), &ProvenanceSchema::ALL, 8, |_, _| {}).await.unwrap();
    let aggs: Vec<&str> = derived.edges.iter().filter(|e| e.kind == modelops_attribution::edge::Kind::Agg).map(|e| e.path.as_str()).collect();
    assert_eq!(aggs.len(), 2);
    let os = stores.provenance.object_store.as_ref();
    os.put(&Path::from(format!("{}/result.json", aggs[0])), Bytes::from_static(b"{\"aggregation_id\": \"x\", \"lo").into()).await.unwrap();
    os.put(&Path::from(format!("{}/result.json", aggs[1])), Bytes::from_static(b"{\"aggregation_id\": \"x\", \"loss\": NaN, \"n_replicates\": 2}").into()).await.unwrap();
    let outcome = index(&stores, &job, Utc::now()).await;
    assert_eq!((outcome.counts.total, outcome.counts.ok, outcome.counts.missing, outcome.counts.failed), (6, 0, 4, 2));
    let batch = table(&stores, "job-partial").await;
    assert_eq!(
        strings(&batch, "status").into_iter().flatten().collect::<Vec<_>>(),
        ["failed", "failed", "missing", "missing", "missing", "missing"]
    );
    assert!(floats(&batch, "loss").iter().all(Option::is_none));
    let manifest = Manifest::from_json_bytes(&read(&stores, "job-partial", "manifest.json").await).unwrap();
    assert_eq!(manifest.errors.len(), 2);
    let first = &manifest.errors[0].error;
    assert!(first.contains("result.json") && first.contains("invalid JSON"), "{first}");
}

#[tokio::test]
async fn non_finite_losses_are_failed_rows_and_never_reach_the_summary() {
    let stores = stores();
    let job = job("job-non-finite", STUDY);
    write(&stores, &job, ProvenanceSchema::Token, &[0, 1, 2], &[], EARLY).await;
    let derived = derive(stores.provenance.object_store.as_ref(), &job, Utc::now(), &ProvenanceSchema::ALL, 8, |_, _| {}).await.unwrap();
    let aggs: Vec<&str> = derived.edges.iter().filter(|e| e.kind == modelops_attribution::edge::Kind::Agg).map(|e| e.path.as_str()).collect();
    assert_eq!(aggs.len(), 6);
    for (agg, loss) in aggs.iter().zip(["NaN", "Infinity", "-Infinity"]) {
        let result = format!("{{\"aggregation_id\": \"x\", \"loss\": {loss}, \"n_replicates\": 2}}");
        stores.provenance.object_store.put(&Path::from(format!("{agg}/result.json")), Bytes::from(result).into()).await.unwrap();
    }
    let outcome = index(&stores, &job, Utc::now()).await;
    assert_eq!((outcome.counts.ok, outcome.counts.failed), (3, 3));
    // Only ok rows, whose losses are finite, count: the JSON never needs NaN or Infinity.
    let summary = Summary::from_json_bytes(&read(&stores, "job-non-finite", "summary.json").await).unwrap();
    for (target, figures) in &summary.targets.0 {
        let mut losses = [figures.min_loss, figures.mean_loss, figures.max_loss].into_iter().flatten().chain(figures.best.iter().map(|b| b.loss));
        assert!(losses.all(f64::is_finite), "{target}: {figures:?}");
        assert_eq!((figures.best.len() as u64, figures.mean_loss.is_some()), (figures.ok, figures.ok > 0), "{target}: {figures:?}");
    }
    assert_eq!(summary.targets.0.iter().map(|(_, figures)| figures.failed).sum::<u64>(), 3);
    let manifest = Manifest::from_json_bytes(&read(&stores, "job-non-finite", "manifest.json").await).unwrap();
    assert!(manifest.min_loss.is_some_and(f64::is_finite) && manifest.max_loss.is_some_and(f64::is_finite), "{manifest:?}");
}

#[tokio::test]
async fn rerunning_with_the_same_inputs_writes_nothing_and_new_inputs_rewrite() {
    let stores = stores();
    let job = job("job-rerun", STUDY);
    write(&stores, &job, ProvenanceSchema::Token, &[0, 1], &[], EARLY).await;
    let first = index(&stores, &job, Utc::now()).await;
    let (table1, summary1, manifest1) = (
        read(&stores, "job-rerun", "losses.parquet").await,
        read(&stores, "job-rerun", "summary.json").await,
        read(&stores, "job-rerun", "manifest.json").await,
    );
    let second = index(&stores, &job, Utc::now()).await;
    assert!(second.unchanged);
    assert_eq!(second.fingerprint, first.fingerprint);
    assert_eq!(read(&stores, "job-rerun", "manifest.json").await, manifest1, "nothing rewritten");
    let versions: Vec<String> = stores
        .results
        .object_store
        .list(Some(&Path::from("results/job-rerun/tables")))
        .map(|meta| meta.unwrap().location.to_string())
        .collect()
        .await;
    assert!(versions.iter().all(|v| !v.contains("staging")), "no staging file left behind: {versions:?}");
    assert_eq!(versions.len(), 2, "one table and one summary version: {versions:?}");

    // A rebuild from scratch gives the same bytes.
    stores.results.object_store.delete(&Path::from("results/job-rerun/manifest.json")).await.unwrap();
    let rebuilt = index(&stores, &job, Utc::now()).await;
    assert!(!rebuilt.unchanged);
    assert_eq!(read(&stores, "job-rerun", "losses.parquet").await, table1);
    assert_eq!(read(&stores, "job-rerun", "summary.json").await, summary1);

    // The missing set arrives: the table changes.
    write(&stores, &job, ProvenanceSchema::Token, &[2], &[], EARLY).await;
    let third = index(&stores, &job, Utc::now()).await;
    assert!(!third.unchanged);
    assert_ne!(third.fingerprint, first.fingerprint);
    assert_eq!(third.counts.ok, 6);
}

#[tokio::test]
async fn cached_results_are_flagged_per_job() {
    let stores = stores();
    let job_a = job("job-a", STUDY);
    let job_b = job("job-b", &STUDY.replace("\"beta\": 2,", "\"beta\": 3,"));
    let before_b = Utc::now();
    write(&stores, &job_a, ProvenanceSchema::Token, &[0, 1, 2], &[], EARLY).await;
    let later = modelops_core::time::now_iso();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    write(&stores, &job_b, ProvenanceSchema::Token, &[2], &[], &later).await;
    index(&stores, &job_a, chrono::DateTime::parse_from_rfc3339("2025-12-31T00:00:00+00:00").unwrap().to_utc()).await;
    index(&stores, &job_b, before_b).await;
    let flags = |batch: &RecordBatch| {
        let array = batch.column_by_name("cache_hit").unwrap().as_boolean();
        (0..array.len()).map(|i| array.value(i)).collect::<Vec<_>>()
    };
    assert_eq!(flags(&table(&stores, "job-a").await), [false; 6], "job A computed everything");
    assert_eq!(flags(&table(&stores, "job-b").await), [true, true, true, true, false, false], "job B reused sets 0 and 1");
}

/// The streamed build of the indexer (spec read from the jobs store, edges from attribution)
/// writes the bytes the in-memory build writes, over file and object-store inputs, sealed
/// and unsealed edges.
#[tokio::test]
async fn the_streamed_build_writes_the_bytes_of_the_in_memory_build() {
    use modelops_attribution::Attribution;
    use modelops_core::job::JobStatus;
    use modelops_registry::registry::StatusUpdate;
    use modelops_registry::store::memory::MemoryStore;
    use modelops_registry::{JobRegistry, RegistryConfig};

    // Local or in-memory stores; the registry in this process or reached over gRPC.
    for (round, (local, over_grpc)) in [(true, false), (false, false), (true, true)].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            if local {
                Store::open(&format!("file://{}/{name}", dir.path().display())).unwrap()
            } else {
                Store::in_memory()
            }
        };
        let (provenance, results, jobs, reference) = (open("provenance"), open("results"), open("jobs"), open("reference"));
        let registry = JobRegistry::new(Arc::new(MemoryStore::new()), jobs, RegistryConfig::default(), &prometheus::Registry::new());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let reached: modelops_registry_client::SharedRegistry = if over_grpc {
            Arc::new(modelops_registry::service::serve_on_loopback(registry.clone(), shutdown.clone()).await.unwrap())
        } else {
            registry.clone().into()
        };
        let attribution = Attribution::new(results.clone(), provenance.clone(), Arc::clone(&reached));
        let attribution_reached: modelops_attribution_client::SharedAttribution = if over_grpc {
            Arc::new(modelops_attribution::service::serve_on_loopback(attribution.clone(), shutdown.clone()).await.unwrap())
        } else {
            attribution.clone().into()
        };
        let id = JobId::new(format!("job-streamed-{round}")).unwrap();
        let spec = register_study(&registry, &id).await;
        let run = SyntheticRun {
            schema: ProvenanceSchema::Token,
            timestamp: EARLY,
            param_sets: Some(&[0, 2]),
            failed_aggregations: &[2],
        };
        synthetic::write_job_results(provenance.object_store.as_ref(), &spec, &run).await.unwrap();
        // Seeds from the spec read as a stream equal those of the in-memory spec.
        set_replicate_losses(provenance.object_store.as_ref(), &spec, test_replicate_losses).await;
        for status in [
            JobStatus::Submitting,
            JobStatus::Scheduled,
            JobStatus::Running,
            JobStatus::Validating,
            JobStatus::Partial,
        ] {
            registry.update_status(&id, StatusUpdate::to(status)).await.unwrap();
        }
        let derived = derive(provenance.object_store.as_ref(), &spec, Utc::now(), &ProvenanceSchema::ALL, 8, |_, _| {})
            .await
            .unwrap();
        attribution.record(&id, None, derived.edges.clone()).await.unwrap();
        if local {
            attribution.seal(&id, false).await.unwrap();
        }

        let indexer = crate::indexer::Indexer::new(
            reached,
            attribution_reached,
            provenance.clone(),
            results.clone(),
            "test".into(),
            IndexOptions::default(),
            std::time::Duration::from_secs(60),
        );
        let status = indexer.run(&id).await;
        assert_eq!(status.phase, crate::indexer::Phase::Done, "{status:?}");

        let locations = locate(&spec, derived.edges.iter().filter_map(modelops_attribution::edge::Edge::as_agg_edge));
        let in_memory = index_job(
            &provenance,
            Arc::clone(&reference.object_store),
            &spec,
            &locations,
            IndexOptions::default(),
            |_, _| {},
        )
        .await
        .unwrap();
        assert_eq!((in_memory.fingerprint, in_memory.counts), (status.fingerprint, status.counts));
        assert!(status.counts.ok > 0 && status.counts.missing > 0, "{:?}", status.counts);
        for file in ["losses.parquet", "summary.json", "replicates.parquet"] {
            let path = Path::from(format!("results/{id}/{file}"));
            let streamed = results.object_store.get(&path).await.unwrap().bytes().await.unwrap();
            let expected = reference.object_store.get(&path).await.unwrap().bytes().await.unwrap();
            assert_eq!(streamed, expected, "{file}, local stores: {local}, over gRPC: {over_grpc}");
        }
        shutdown.cancel();
    }
}

#[test]
fn the_edge_index_keeps_the_last_edge_of_a_key_and_whole_paths() {
    let mut edges = crate::locate::EdgeIndex::default();
    edges.insert("p1", "t:a", "token/v1/aggs/b12/target_t:a/agg_1", false).unwrap();
    edges.insert("p2", "t:a", "token/v1/aggs/b12/target_t:a/agg_2", true).unwrap();
    edges.insert("p1", "t:a", "bundle/v1/aggs/b12/target_t:a/agg_3", true).unwrap();
    edges.insert("p1", "t/b", "flat", false).unwrap();
    edges.finish();
    assert_eq!(edges.len(), 3);
    assert_eq!(edges.get("p1", "t:a"), Some(("bundle/v1/aggs/b12/target_t:a/agg_3".into(), true)));
    assert_eq!(edges.get("p2", "t:a"), Some(("token/v1/aggs/b12/target_t:a/agg_2".into(), true)));
    assert_eq!(edges.get("p1", "t/b"), Some(("flat".into(), false)));
    assert_eq!(edges.get("p2", "t/b"), None);
    assert_eq!(edges.get("p1t", ":a"), None, "the key separates param_id from target");
}

#[tokio::test]
async fn unreadable_aggregations_are_failed_rows_and_nothing_outside_the_store_is_read() {
    let stores = stores();
    let job = job("job-hostile", STUDY);
    let run = SyntheticRun {
        schema: ProvenanceSchema::Token,
        timestamp: EARLY,
        param_sets: Some(&[0, 1, 2]),
        failed_aggregations: &[],
    };
    let written = synthetic::write_job_results(stores.provenance.object_store.as_ref(), &job, &run).await.unwrap();
    assert_eq!(written.aggs.len(), 6);
    let root = stores.provenance.local_root().unwrap();
    let outside = stores._dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let agg = |i: usize| root.join(&written.aggs[i]);
    // 0: result.json is a link to a valid record outside the store.
    std::fs::copy(agg(0).join("result.json"), outside.join("result.json")).unwrap();
    std::fs::remove_file(agg(0).join("result.json")).unwrap();
    std::os::unix::fs::symlink(outside.join("result.json"), agg(0).join("result.json")).unwrap();
    // 1: the aggregation directory is a link to a valid one outside the store.
    let moved = outside.join("agg1");
    std::fs::rename(agg(1), &moved).unwrap();
    std::os::unix::fs::symlink(&moved, agg(1)).unwrap();
    // 2: result.json is a directory; 3: a FIFO no one writes (opening it must not block).
    std::fs::remove_file(agg(2).join("result.json")).unwrap();
    std::fs::create_dir(agg(2).join("result.json")).unwrap();
    std::fs::remove_file(agg(3).join("result.json")).unwrap();
    let fifo = std::process::Command::new("mkfifo").arg(agg(3).join("result.json")).status().unwrap();
    assert!(fifo.success());
    // 4: result.json over the record size limit.
    std::fs::write(agg(4).join("result.json"), format!(r#"{{"loss": 1.0, "pad": "{}"}}"#, "x".repeat(8192))).unwrap();

    let derived = derive(stores.provenance.object_store.as_ref(), &job, Utc::now(), &ProvenanceSchema::ALL, 8, |_, _| {}).await.unwrap();
    let locations = locate(&job, derived.edges.iter().filter_map(modelops_attribution::edge::Edge::as_agg_edge));
    let options = IndexOptions {
        max_record_bytes: 4096,
        ..IndexOptions::default()
    };
    let build = index_job(&stores.provenance, Arc::clone(&stores.results.object_store), &job, &locations, options, |_, _| {});
    // A guard, not a synchronisation: a reader blocked on the FIFO would never finish.
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(60), build).await.expect("the build finishes").unwrap();
    assert_eq!((outcome.counts.total, outcome.counts.ok, outcome.counts.failed, outcome.counts.missing), (6, 1, 5, 0));
    let manifest = String::from_utf8(read(&stores, "job-hostile", "manifest.json").await.to_vec()).unwrap();
    let base = stores._dir.path().display().to_string();
    assert!(!manifest.contains(&base), "no absolute path in the reasons: {manifest}");
    for reason in ["symbolic link", "not a regular file", "over the limit of 4096 (--max-record-bytes)"] {
        assert!(manifest.contains(reason), "{reason}: {manifest}");
    }
    // The one readable row is ok; the table is readable.
    let statuses = strings(&table(&stores, "job-hostile").await, "status");
    assert_eq!(statuses.iter().filter(|s| s.as_deref() == Some("ok")).count(), 1);
}

/// Registers `id` in `registry` from `STUDY` and returns the spec the registry expanded it to.
async fn register_study(registry: &modelops_registry::JobRegistry, id: &JobId) -> SimJobSpec {
    use modelops_registry::registry::{Registration, SpecInput};
    let registration = Registration {
        job_id: Some(id.clone()),
        spec: Some(SpecInput::Study {
            study_json: STUDY.into(),
            bundle_ref: BUNDLE.into(),
        }),
        ..Registration::default()
    };
    registry.register(registration).await.unwrap();
    let modelops_core::study::JobSpec::Simulation(spec) = registry.get_parsed_spec(id).await.unwrap() else { panic!("a SimJob") };
    spec
}

/// A registry, attribution and stores for one job registered from `STUDY` and finished as
/// succeeded, its results written; `provenance` is the store the indexer reads results from.
struct FinishedJob {
    registry: modelops_registry::JobRegistry,
    attribution: modelops_attribution::Attribution,
    results: Store,
    id: JobId,
}

async fn finished_job(name: &str, registry_store: Arc<dyn modelops_registry::store::VersionedStore>, jobs: Store, provenance: &Store) -> FinishedJob {
    use modelops_core::job::JobStatus;
    use modelops_registry::registry::StatusUpdate;
    use modelops_registry::{JobRegistry, RegistryConfig};
    let results = Store::in_memory();
    let registry = JobRegistry::new(registry_store, jobs, RegistryConfig::default(), &prometheus::Registry::new());
    let attribution = modelops_attribution::Attribution::new(results.clone(), provenance.clone(), registry.clone());
    let id = JobId::new(name).unwrap();
    let spec = register_study(&registry, &id).await;
    let run = SyntheticRun {
        schema: ProvenanceSchema::Token,
        timestamp: EARLY,
        param_sets: Some(&[0, 1, 2]),
        failed_aggregations: &[],
    };
    synthetic::write_job_results(provenance.object_store.as_ref(), &spec, &run).await.unwrap();
    for status in [JobStatus::Submitting, JobStatus::Scheduled, JobStatus::Running, JobStatus::Succeeded] {
        registry.update_status(&id, StatusUpdate::to(status)).await.unwrap();
    }
    FinishedJob { registry, attribution, results, id }
}

#[tokio::test]
async fn a_job_first_seen_already_finished_is_indexed() {
    use modelops_registry::JobRegistry;
    use modelops_registry::store::memory::MemoryStore;
    // The writer (another process, or the Python ModelOps) takes the job from registration to
    // succeeded; this indexer's registry shares the store but has never seen the job, as when
    // the whole life of a job falls between two polls of a change feed.
    let store: Arc<dyn modelops_registry::store::VersionedStore> = Arc::new(MemoryStore::new());
    let (jobs, provenance) = (Store::in_memory(), Store::in_memory());
    let writer = finished_job("job-seen-late", Arc::clone(&store), jobs.clone(), &provenance).await;
    let reader = JobRegistry::new(store, jobs, modelops_registry::RegistryConfig::default(), &prometheus::Registry::new());
    let state = reader.require(&writer.id).await.unwrap();
    let event = reader.hub().publish(state).expect("a new job is published");
    assert_eq!(event.previous, None, "first seen, already succeeded");
    let attribution = modelops_attribution::Attribution::new(writer.results.clone(), provenance.clone(), reader.clone());
    let indexer = crate::indexer::Indexer::new(reader.clone(), attribution, provenance, writer.results.clone(), "test".into(), IndexOptions::default(), std::time::Duration::from_secs(60));
    assert!(indexer.on_job_event(&event).await, "a finished job without a table is queued");
    assert_eq!(indexer.status(&writer.id).await.unwrap().phase, crate::indexer::Phase::Queued);
    assert_eq!(indexer.run(&writer.id).await.phase, crate::indexer::Phase::Done);
    // Once indexed, the same state seen again queues nothing.
    let again = modelops_registry::watch::JobEvent {
        state: Arc::new(reader.require(&writer.id).await.unwrap()),
        ..event
    };
    assert!(!indexer.on_job_event(&again).await);
}

/// An object store whose reads fail as an unreachable backend does while `down` is set.
#[derive(Debug)]
struct FlakyStore {
    inner: Arc<dyn ObjectStore>,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Display for FlakyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlakyStore({})", self.inner)
    }
}

impl FlakyStore {
    fn check(&self) -> object_store::Result<()> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "flaky",
                source: "connection refused".into(),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for FlakyStore {
    async fn put_opts(&self, location: &Path, payload: object_store::PutPayload, opts: object_store::PutOptions) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: object_store::PutMultipartOptions) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: object_store::GetOptions) -> object_store::Result<object_store::GetResult> {
        self.check()?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: futures::stream::BoxStream<'static, object_store::Result<Path>>) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<object_store::ListResult> {
        self.check()?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: object_store::CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn a_build_failed_by_an_unavailable_store_is_retried_until_it_succeeds() {
    use modelops_registry::store::memory::MemoryStore;
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let memory = Store::in_memory();
    let provenance = Store {
        object_store: Arc::new(FlakyStore {
            inner: Arc::clone(&memory.object_store),
            down: Arc::clone(&down),
        }),
        ..memory.clone()
    };
    let job = finished_job("job-retried", Arc::new(MemoryStore::new()), Store::in_memory(), &provenance).await;
    let options = IndexOptions {
        retry_backoff: std::time::Duration::from_millis(20),
        ..IndexOptions::default()
    };
    let indexer = crate::indexer::Indexer::new(job.registry.clone(), job.attribution.clone(), provenance, job.results.clone(), "test".into(), options, std::time::Duration::from_secs(60));
    let mut updates = indexer.subscribe();
    let token = tokio_util::sync::CancellationToken::new();
    let tracker = tokio_util::task::TaskTracker::new();
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    indexer.start(1, token.clone(), &tracker);
    indexer.request(&job.id, false).await.unwrap();
    // Failed twice on the store being down, the job stays queued, never failed.
    let mut retries = 0;
    while retries < 2 {
        let status = updates.recv().await.unwrap();
        assert_ne!(status.phase, crate::indexer::Phase::Failed, "{status:?}");
        if status.phase == crate::indexer::Phase::Queued && status.error.as_deref().is_some_and(|e| e.contains("retrying")) {
            retries += 1;
        }
    }
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    let done = loop {
        let status = updates.recv().await.unwrap();
        if matches!(status.phase, crate::indexer::Phase::Done | crate::indexer::Phase::Failed) {
            break status;
        }
    };
    assert_eq!(done.phase, crate::indexer::Phase::Done, "{done:?}");
    assert_eq!(done.counts.ok, 6);
    token.cancel();
}

#[tokio::test]
async fn a_manifest_names_immutable_table_versions_and_replaced_ones_outlive_it_for_a_grace() {
    let stores = stores();
    let spec = job("job-versions", STUDY);
    let build = |grace_secs: u64, sets: &'static [usize]| {
        let (stores, spec) = (&stores, &spec);
        async move {
            write(stores, spec, ProvenanceSchema::Token, sets, &[], EARLY).await;
            let derived = derive(stores.provenance.object_store.as_ref(), spec, Utc::now(), &ProvenanceSchema::ALL, 8, |_, _| {}).await.unwrap();
            let options = IndexOptions {
                table_grace: std::time::Duration::from_secs(grace_secs),
                ..IndexOptions::default()
            };
            index_job(&stores.provenance, Arc::clone(&stores.results.object_store), spec, &locate(spec, derived.edges.iter().filter_map(modelops_attribution::edge::Edge::as_agg_edge)), options, |_, _| {})
                .await
                .unwrap()
        }
    };
    let manifest_files = |bytes: Bytes| {
        let files = Manifest::from_json_bytes(&bytes).unwrap().files;
        (files.losses, files.summary)
    };
    build(3600, &[0]).await;
    let (first_table, first_summary) = manifest_files(read(&stores, "job-versions", "manifest.json").await);
    assert!(first_table.starts_with("tables/losses-") && first_summary.starts_with("tables/summary-"), "{first_table} {first_summary}");
    let first_bytes = read(&stores, "job-versions", &first_table).await;
    assert_eq!(read(&stores, "job-versions", "losses.parquet").await, first_bytes, "the seed's path holds the committed table");

    // Re-indexed with more results: a new version; the replaced one stays readable for the grace.
    build(3600, &[0, 1]).await;
    let (second_table, second_summary) = manifest_files(read(&stores, "job-versions", "manifest.json").await);
    assert_ne!(second_table, first_table);
    assert_eq!(read(&stores, "job-versions", &first_table).await, first_bytes, "a stream on the old version can finish");
    assert_eq!(read(&stores, "job-versions", "losses.parquet").await, read(&stores, "job-versions", &second_table).await);
    assert_eq!(read(&stores, "job-versions", "summary.json").await, read(&stores, "job-versions", &second_summary).await);

    // With no grace, the next build collects every version but its own, and leaves no staging.
    build(0, &[0, 1, 2]).await;
    let (third_table, third_summary) = manifest_files(read(&stores, "job-versions", "manifest.json").await);
    let root = stores.results.local_root().unwrap().join("results/job-versions");
    let mut left: Vec<String> = std::fs::read_dir(root.join("tables")).unwrap().map(|e| format!("tables/{}", e.unwrap().file_name().to_string_lossy())).collect();
    left.sort();
    let mut expected = vec![third_table, third_summary];
    expected.sort();
    assert_eq!(left, expected);
    let mut top: Vec<String> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    top.sort();
    assert_eq!(top, ["losses.parquet", "manifest.json", "summary.json", "tables"]);
}

/// Sets `diagnostics.per_replicate_losses` in the `result.json` of every aggregation of `job`
/// to `losses(parameter set index, target)`, leaving the others as they are.
async fn set_replicate_losses(provenance: &dyn ObjectStore, job: &SimJobSpec, losses: impl Fn(usize, &str) -> Option<PyValue>) {
    let groups = job.task_groups();
    let derived = derive(provenance, job, Utc::now(), &ProvenanceSchema::ALL, 8, |_, _| {}).await.unwrap();
    for edge in derived.edges.iter().filter(|e| e.kind == modelops_attribution::edge::Kind::Agg) {
        let set = groups.iter().position(|g| g.param_id == edge.param_id).unwrap();
        let Some(value) = losses(set, edge.target.as_deref().unwrap()) else { continue };
        let path = Path::from(format!("{}/result.json", edge.path));
        let bytes = provenance.get(&path).await.unwrap().bytes().await.unwrap();
        let PyValue::Object(mut result) = pyjson::parse(&bytes).unwrap() else { panic!("an object") };
        let mut diagnostics = result.get("diagnostics").and_then(PyValue::as_object).cloned().unwrap_or_default();
        diagnostics.insert("per_replicate_losses", value);
        result.insert("diagnostics", PyValue::Object(diagnostics));
        provenance.put(&path, Bytes::from(pyjson::to_indent2(&PyValue::Object(result))).into()).await.unwrap();
    }
}

fn floats_list(values: &[f64]) -> PyValue {
    PyValue::List(values.iter().map(|v| PyValue::Float(*v)).collect())
}

/// The per-replicate losses of the test's aggregations: set 0 has them for both targets (one
/// list longer than the set's two tasks, one loss not finite), set 1 a malformed list and none,
/// set 2 an empty list and a list.
fn test_replicate_losses(set: usize, target: &str) -> Option<PyValue> {
    let prev = target.starts_with("targets.prev");
    match (set, prev) {
        (0, true) => Some(floats_list(&[0.5, 1.5])),
        (0, false) => Some(floats_list(&[2.0, f64::NAN, 3.0])),
        (1, true) => Some(PyValue::Str("0.5,1.5".into())),
        (1, false) => None,
        (2, true) => Some(floats_list(&[])),
        _ => Some(PyValue::List(vec![PyValue::Int(4), PyValue::Float(5.0)])),
    }
}

fn ints(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
    let array = batch.column_by_name(column).unwrap().as_primitive::<arrow::datatypes::Int64Type>();
    (0..array.len()).map(|i| (!array.is_null(i)).then(|| array.value(i))).collect()
}

/// The losses and per-replicate versions a manifest names.
fn manifest_tables(manifest: &Bytes) -> (String, Option<String>) {
    let files = Manifest::from_json_bytes(manifest).unwrap().files;
    (files.losses, files.replicates)
}

async fn exists(stores: &Stores, job: &str, file: &str) -> bool {
    match stores.results.object_store.head(&Path::from(format!("results/{job}/{file}"))).await {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn per_replicate_losses_make_a_replicates_table_with_each_tasks_seed() {
    let stores = stores();
    let job = job("job-replicates", STUDY);
    write(&stores, &job, ProvenanceSchema::Token, &[0, 1, 2], &[], EARLY).await;
    set_replicate_losses(stores.provenance.object_store.as_ref(), &job, test_replicate_losses).await;
    let outcome = index(&stores, &job, Utc::now()).await;
    assert_eq!((outcome.counts.total, outcome.counts.ok), (6, 6), "the loss rows are unaffected");

    let manifest = read(&stores, "job-replicates", "manifest.json").await;
    let (losses_name, name) = manifest_tables(&manifest);
    let name = name.expect("the manifest names the replicates table");
    assert_eq!(name.strip_prefix("tables/replicates-"), losses_name.strip_prefix("tables/losses-"), "one version for both");
    let bytes = read(&stores, "job-replicates", "replicates.parquet").await;
    assert_eq!(read(&stores, "job-replicates", &name).await, bytes, "the seed's path holds the committed version");

    let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap().build().unwrap().map(Result::unwrap).collect();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let fields: Vec<(String, DataType, bool)> = batch.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable())).collect();
    assert_eq!(
        fields,
        [
            ("job_id".to_owned(), DataType::Utf8, false),
            ("param_id".to_owned(), DataType::Utf8, false),
            ("target".to_owned(), DataType::Utf8, false),
            ("replicate_idx".to_owned(), DataType::Int64, false),
            ("seed".to_owned(), DataType::Int64, true),
            ("loss".to_owned(), DataType::Float64, true),
        ]
    );
    let groups = job.task_groups();
    let seed = |set: usize, task: usize| Some(groups[set].tasks[task].seed as i64);
    let (prev, deaths) = ("targets.prev:prevalence_target", "targets.deaths/deaths_target");
    assert!(strings(&batch, "job_id").iter().all(|j| j.as_deref() == Some("job-replicates")));
    let param = |set: usize| Some(groups[set].param_id.to_owned());
    assert_eq!(strings(&batch, "param_id"), [param(0), param(0), param(0), param(0), param(0), param(2), param(2)]);
    assert_eq!(
        strings(&batch, "target").into_iter().flatten().collect::<Vec<_>>(),
        [prev, prev, deaths, deaths, deaths, deaths, deaths]
    );
    assert_eq!(ints(&batch, "replicate_idx"), [0, 1, 0, 1, 2, 0, 1].map(Some));
    assert_eq!(
        ints(&batch, "seed"),
        [seed(0, 0), seed(0, 1), seed(0, 0), seed(0, 1), None, seed(2, 0), seed(2, 1)],
        "replicate i has the seed of the set's i-th task; none past the set's tasks"
    );
    assert_ne!(seed(0, 0), seed(0, 1));
    assert_eq!(floats(&batch, "loss"), [Some(0.5), Some(1.5), Some(2.0), None, Some(3.0), Some(4.0), Some(5.0)]);

    // Same inputs, same bytes: unchanged, and rebuilt from scratch.
    let again = index(&stores, &job, Utc::now()).await;
    assert!(again.unchanged);
    stores.results.object_store.delete(&Path::from("results/job-replicates/manifest.json")).await.unwrap();
    let rebuilt = index(&stores, &job, Utc::now()).await;
    assert!(!rebuilt.unchanged);
    assert_eq!(rebuilt.fingerprint, outcome.fingerprint);
    assert_eq!(read(&stores, "job-replicates", "replicates.parquet").await, bytes);
    let listed: Vec<String> = stores
        .results
        .object_store
        .list(Some(&Path::from("results/job-replicates/tables")))
        .map(|meta| meta.unwrap().location.to_string())
        .collect()
        .await;
    assert_eq!(listed.len(), 3, "one version of each table and the summary, no staging file: {listed:?}");

    // The losses go away: so does the table, from the manifest and the seed's path.
    set_replicate_losses(stores.provenance.object_store.as_ref(), &job, |_, _| Some(PyValue::Null)).await;
    let without = index(&stores, &job, Utc::now()).await;
    assert!(!without.unchanged);
    assert_eq!(manifest_tables(&read(&stores, "job-replicates", "manifest.json").await).1, None);
    assert!(!exists(&stores, "job-replicates", "replicates.parquet").await);
}

#[tokio::test]
async fn a_job_without_per_replicate_losses_has_no_replicates_table() {
    let stores = stores();
    let job = job("job-no-replicates", STUDY);
    write(&stores, &job, ProvenanceSchema::Token, &[0, 1, 2], &[], EARLY).await;
    // A malformed list is ignored as if absent.
    set_replicate_losses(stores.provenance.object_store.as_ref(), &job, |set, _| (set == 1).then(|| PyValue::Str("x".into()))).await;
    let outcome = index(&stores, &job, Utc::now()).await;
    assert_eq!(outcome.counts.ok, 6);
    let manifest = read(&stores, "job-no-replicates", "manifest.json").await;
    assert_eq!(manifest_tables(&manifest).1, None);
    assert!(!String::from_utf8(manifest.to_vec()).unwrap().contains("\"replicates"), "no replicates entry at all");
    assert!(!exists(&stores, "job-no-replicates", "replicates.parquet").await);
    let listed: Vec<String> = stores
        .results
        .object_store
        .list(Some(&Path::from("results/job-no-replicates/tables")))
        .map(|meta| meta.unwrap().location.filename().unwrap().to_owned())
        .collect()
        .await;
    assert!(listed.iter().all(|name| !name.contains("replicates") && !name.contains("staging")), "{listed:?}");
}

#[tokio::test]
async fn a_forced_build_rewrites_a_table_whose_inputs_are_unchanged() {
    let stores = stores();
    let job = job("job-forced", STUDY);
    write(&stores, &job, ProvenanceSchema::Token, &[0, 1, 2], &[], EARLY).await;
    let first = index(&stores, &job, Utc::now()).await;
    let (table, manifest) = (read(&stores, "job-forced", "losses.parquet").await, read(&stores, "job-forced", "manifest.json").await);
    assert!(index(&stores, &job, Utc::now()).await.unchanged, "an ordinary build keeps the table");
    let derived = derive(stores.provenance.object_store.as_ref(), &job, Utc::now(), &ProvenanceSchema::ALL, 8, |_, _| {}).await.unwrap();
    let options = IndexOptions {
        rewrite_unchanged: true,
        ..IndexOptions::default()
    };
    let forced = index_job(&stores.provenance, Arc::clone(&stores.results.object_store), &job, &locate(&job, derived.edges.iter().filter_map(modelops_attribution::edge::Edge::as_agg_edge)), options, |_, _| {})
        .await
        .unwrap();
    assert!(!forced.unchanged, "a forced build commits again");
    assert_eq!(forced.fingerprint, first.fingerprint);
    assert_eq!(read(&stores, "job-forced", "losses.parquet").await, table, "the same inputs give the same bytes");
    assert_ne!(read(&stores, "job-forced", "manifest.json").await, manifest, "the manifest is written again (indexed_at)");
}

#[tokio::test]
async fn an_indexer_following_a_registry_over_grpc_indexes_what_finished_while_it_restarted() {
    use modelops_registry::store::memory::MemoryStore;
    use modelops_registry::{JobRegistry, RegistryConfig};
    // The registry in "another process": served over gRPC, stopped, and started again on the
    // same address with a new change hub (as a restarted pod behind its Service), while a job
    // finishes in between. The indexer's watch breaks, cannot resume on the new hub
    // (OUT_OF_RANGE), replays every job's state, and indexes the job it never saw change.
    let store: Arc<dyn modelops_registry::store::VersionedStore> = Arc::new(MemoryStore::new());
    let (jobs, provenance) = (Store::in_memory(), Store::in_memory());
    let first = finished_job("job-before", Arc::clone(&store), jobs.clone(), &provenance).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop_first = tokio_util::sync::CancellationToken::new();
    let server = modelops_registry::service::serve_alone(first.registry.clone(), listener, stop_first.clone());
    let remote: modelops_registry_client::SharedRegistry =
        Arc::new(modelops_registry_client::GrpcRegistry::connect_lazy(&format!("http://{address}"), None, 64 << 20).unwrap());
    // Attribution in a third "process", reaching the registry over gRPC too; the job reported no
    // edges, so the indexer has attribution derive them (DeriveEdges), then reads them back.
    let stop_attribution = tokio_util::sync::CancellationToken::new();
    let attribution = modelops_attribution::Attribution::new(first.results.clone(), provenance.clone(), Arc::clone(&remote));
    let attribution = modelops_attribution::service::serve_on_loopback(attribution, stop_attribution.clone()).await.unwrap();
    let options = IndexOptions {
        // The resync would find the job too; this test is about the watch.
        resync_interval: std::time::Duration::from_secs(3600),
        ..IndexOptions::default()
    };
    let indexer = crate::indexer::Indexer::new(remote, attribution, provenance.clone(), first.results.clone(), "test".into(), options, std::time::Duration::from_secs(60));
    let mut updates = indexer.subscribe();
    let (token, tracker) = (tokio_util::sync::CancellationToken::new(), tokio_util::task::TaskTracker::new());
    indexer.start(1, token.clone(), &tracker);
    let done = |updates: &mut tokio::sync::broadcast::Receiver<crate::indexer::Status>, job: JobId| {
        let mut updates = updates.resubscribe();
        async move {
            loop {
                let status = updates.recv().await.unwrap();
                if status.job_id == job && status.phase == crate::indexer::Phase::Done {
                    return status;
                }
            }
        }
    };
    let waiting = tokio::spawn(done(&mut updates, first.id.clone()));
    assert_eq!(waiting.await.unwrap().counts.ok, 6, "indexed through the first server");

    stop_first.cancel();
    server.await.unwrap();
    // While no registry answers, another writer finishes a job.
    let second = finished_job("job-while-down", Arc::clone(&store), jobs.clone(), &provenance).await;
    let waiting = tokio::spawn(done(&mut updates, second.id.clone()));
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let restarted = JobRegistry::new(store, jobs, RegistryConfig::default(), &prometheus::Registry::new());
    let stop_second = tokio_util::sync::CancellationToken::new();
    let server = modelops_registry::service::serve_alone(restarted.clone(), listener, stop_second.clone());
    // Bounded, not a synchronisation: the status update above is the event waited for.
    let indexed = tokio::time::timeout(std::time::Duration::from_secs(60), waiting).await.expect("indexed after the restart").unwrap();
    assert_eq!(indexed.counts.ok, 6);
    assert_eq!(restarted.require(&second.id).await.unwrap().index_state(), modelops_core::job::IndexState::Done, "recorded through the new server");
    token.cancel();
    stop_second.cancel();
    stop_attribution.cancel();
    server.await.unwrap();
}
