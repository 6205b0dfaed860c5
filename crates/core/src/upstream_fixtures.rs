//! Checks against bytes written by the real upstream Python code (`tests/fixtures/upstream/`,
//! see its README for how each file was produced).

use std::path::{Path as FsPath, PathBuf};

use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::ids;
use crate::job::{JobId, JobState};
use crate::paths::{self, ProvenanceSchema};
use crate::pyjson::{self, PyObject, PyValue};
use crate::records::{self, AggRecord, SimInputs, SimOutput, SimRecord};
use crate::store::Store;
use crate::study::{JobSpec, SimulationStudy};

const BUNDLE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn fixtures() -> PathBuf {
    FsPath::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upstream")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn parse_object(bytes: &[u8]) -> PyObject {
    pyjson::parse(bytes).unwrap().as_object().unwrap().clone()
}

fn vectors(kind: &str) -> Vec<PyObject> {
    let all = parse_object(&read("ids.json"));
    let list = all.get(kind).and_then(PyValue::as_list).unwrap_or_else(|| panic!("ids.json lacks {kind}"));
    assert!(!list.is_empty(), "{kind} is empty");
    list.iter().map(|v| v.as_object().unwrap().clone()).collect()
}

fn s<'a>(o: &'a PyObject, k: &str) -> &'a str {
    o.get(k).and_then(PyValue::as_str).unwrap_or_else(|| panic!("{k} in {o:?}"))
}

fn u(o: &PyObject, k: &str) -> u64 {
    o.get(k).and_then(PyValue::as_u64).unwrap_or_else(|| panic!("{k} in {o:?}"))
}

fn strs(o: &PyObject, k: &str) -> Vec<String> {
    o.get(k).and_then(PyValue::as_list).unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

#[test]
fn param_ids_match_upstream() {
    for case in vectors("param_ids") {
        let params = parse_object(s(&case, "params").as_bytes());
        assert_eq!(ids::param_preimage(&params).unwrap(), s(&case, "canonical"), "{}", s(&case, "params"));
        assert_eq!(ids::param_id(&params).unwrap(), s(&case, "param_id"), "{}", s(&case, "params"));
    }
}

#[test]
fn seeds_match_upstream() {
    for case in vectors("replicate_seeds") {
        assert_eq!(ids::replicate_seed(s(&case, "param_id"), u(&case, "i")), u(&case, "seed"));
    }
    for case in vectors("calibration_seeds") {
        let base = i128::from(u(&case, "base_seed"));
        let trial = ids::calibration_trial_seed(s(&case, "param_id"), base);
        assert_eq!(trial, u(&case, "trial_seed"));
        let replicates = case.get("replicate_set_seeds").and_then(PyValue::as_list).unwrap();
        for (i, seed) in replicates.iter().enumerate() {
            assert_eq!(trial + i as u64, seed.as_u64().unwrap());
        }
    }
}

#[test]
fn task_and_aggregation_ids_match_upstream() {
    for case in vectors("runner_task_ids") {
        let names = strs(&case, "output_names");
        let id = ids::runner_task_id(s(&case, "param_id"), u(&case, "seed"), names.iter().map(String::as_str));
        assert_eq!(id, s(&case, "task_id"), "{}", s(&case, "preimage"));
        assert_eq!(
            ids::canonical_task_id(BUNDLE, "models.seir.SEIR/baseline", s(&case, "param_id"), u(&case, "seed")).len(),
            s(&case, "canonical_task_id_unused").len()
        );
    }
    for case in vectors("runner_error_task_ids") {
        assert_eq!(ids::runner_error_task_id(s(&case, "param_id"), u(&case, "seed")), s(&case, "task_id"));
    }
    for case in vectors("aggregation_ids") {
        let task_ids = strs(&case, "task_ids");
        let target = s(&case, "target_entrypoint");
        let id = ids::aggregation_id(target, task_ids.iter().map(String::as_str));
        assert_eq!(id, s(&case, "aggregation_id"), "{}", s(&case, "key"));
        assert_eq!(
            ids::legacy_aggregation_id(target, task_ids.iter().map(String::as_str)),
            s(&case, "utils_aggregation_id_unused")
        );
        let bundle = s(&case, "bundle_ref");
        assert_eq!(paths::agg_dir(ProvenanceSchema::Token, bundle, target, &id), s(&case, "agg_dir_token"));
        assert_eq!(paths::agg_dir(ProvenanceSchema::Bundle, bundle, target, &id), s(&case, "agg_dir_bundle"));
    }
}

#[test]
fn sim_dirs_and_shards_match_upstream() {
    for case in vectors("sim_dirs") {
        let (bundle, param_id, seed) = (s(&case, "bundle_ref"), s(&case, "param_id"), u(&case, "seed"));
        assert_eq!(paths::sim_dir(ProvenanceSchema::Token, bundle, param_id, seed), s(&case, "sim_dir_token"));
        assert_eq!(paths::sim_dir(ProvenanceSchema::Bundle, bundle, param_id, seed), s(&case, "sim_dir_bundle"));
    }
    for case in vectors("shards") {
        assert_eq!(ids::shard(s(&case, "value")), s(&case, "shard"));
        assert_eq!(&ids::blake2b_hex(s(&case, "value").as_bytes(), 32)[..8], s(&case, "hash8"));
    }
}

#[test]
fn floats_and_strings_are_written_like_python() {
    for case in vectors("floats") {
        let bits = u64::from_str_radix(s(&case, "bits").trim_start_matches("0x"), 16).unwrap();
        let value = PyValue::Float(f64::from_bits(bits));
        assert_eq!(pyjson::to_indent2(&value), s(&case, "json_indent2"), "repr {}", s(&case, "value"));
        assert_eq!(pyjson::to_indent2(&PyValue::List(vec![value])), s(&case, "json_in_list_indent2"));
    }
    for case in vectors("strings") {
        let value = PyValue::Str(s(&case, "value").to_owned());
        assert_eq!(pyjson::to_indent2(&value), s(&case, "json_ensure_ascii"));
        assert_eq!(pyjson::to_canonical(&value), s(&case, "json_raw_utf8"));
        // And what Python writes parses back to the same string.
        assert_eq!(pyjson::parse(s(&case, "json_ensure_ascii").as_bytes()).unwrap(), value);
    }
}

#[test]
fn studies_expand_to_upstream_simjob_bytes() {
    for (study, simjob, job_id) in [
        ("study_plain.json", "study_plain.simjob.json", "job-5b718dc8"),
        ("study_seeds.json", "study_seeds.simjob.json", "job-0000abcd"),
    ] {
        let expected = String::from_utf8(read(simjob)).unwrap();
        let parsed = SimulationStudy::from_json(&read(study)).unwrap();
        let job = parsed.to_sim_job(BUNDLE, Some(JobId::new(job_id).unwrap())).unwrap();
        assert_eq!(JobSpec::Simulation(job).to_json(), expected, "{study}");
        let reread = JobSpec::from_json(expected.as_bytes()).unwrap();
        assert_eq!(reread.to_json(), expected, "{simjob} round trip");
        assert_eq!(reread.job_id().as_str(), job_id);
    }
}

#[test]
fn simjob_groups_tasks_by_param_set() {
    let JobSpec::Simulation(job) = JobSpec::from_json(&read("study_plain.simjob.json")).unwrap() else {
        panic!("simulation job expected");
    };
    let groups = job.task_groups();
    assert_eq!(groups.len(), 3);
    assert!(groups.iter().all(|g| g.tasks.len() == 3));
    assert_eq!(groups[0].param_id, "761edf35ca1634d79a760bfa7030cf07e72a3559b3cdb0c56d20557de35b1e07");
    assert_eq!(job.target_entrypoints(), ["targets.prev:prevalence_target"]);
    for group in &groups {
        assert_eq!(ids::param_id(group.values).unwrap(), group.param_id);
    }
}

#[test]
fn job_states_round_trip_byte_identically() {
    for name in ["state_registered.json", "state_running.json", "state_succeeded.json"] {
        let bytes = String::from_utf8(read(name)).unwrap();
        assert_eq!(JobState::from_json(bytes.as_bytes()).unwrap().to_json(), bytes, "{name}");
    }
    let registered = String::from_utf8(read("state_registered.json")).unwrap();
    let metadata = parse_object(br#"{"type": "SimJob", "blob_key": "jobs/simulation/job-5b718dc8.json", "image": "ghcr.io/x/runner:1"}"#);
    let mut state = JobState::registered(
        JobId::new("job-5b718dc8").unwrap(),
        "2026-11-22T20:05:11.254227+00:00",
        Some("job-5b718dc8"),
        Some("modelops-dask-dev"),
        metadata,
    );
    state.set("updated_at", "2026-11-22T20:05:11.254231+00:00".into());
    assert_eq!(state.to_json(), registered);
}

/// Every file under `root`, as (relative path, bytes), sorted.
fn tree_files(root: &FsPath) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &FsPath, root: &FsPath, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((relative, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Rebuilds every record of an upstream tree from its inputs with the core writer, into a fresh
/// `file://` store, and compares the two trees file by file, byte for byte.
async fn rewrite_tree(fixture: &str, schema: ProvenanceSchema) {
    let upstream = fixtures().join(fixture);
    let out = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("file://{}", out.path().display())).unwrap();
    let source = Store::open(&format!("file://{}", upstream.display())).unwrap();
    let sims = [751131435u64, 2264224431, 472503505];
    let param_id = "761edf35ca1634d79a760bfa7030cf07e72a3559b3cdb0c56d20557de35b1e07";
    let mut task_ids = Vec::new();
    for seed in sims {
        let dir = Path::parse(paths::sim_dir(schema, BUNDLE, param_id, seed)).unwrap();
        let stored = records::read_sim(source.object_store.as_ref(), &dir).await.unwrap();
        let mut outputs = Vec::new();
        for name in &stored.output_names {
            let bytes = records::read_sim_artifact(source.object_store.as_ref(), &dir, name).await.unwrap();
            let parquet = match name.as_str() {
                "metadata" => None,
                _ => Some(records::read_file(source.object_store.as_ref(), &dir.clone().join(format!("artifact_{name}.parquet"))).await.unwrap()),
            };
            outputs.push(SimOutput { name: name.clone(), bytes, parquet });
        }
        let names: Vec<&str> = stored.output_names.iter().map(String::as_str).collect();
        let task_id = ids::runner_task_id(param_id, seed, names);
        assert_eq!(task_id, stored.task_id);
        task_ids.push(task_id.clone());
        let record = SimRecord {
            inputs: SimInputs {
                bundle_ref: BUNDLE.into(),
                entrypoint: "models.seir.SEIR/baseline".into(),
                params: parse_object(br#"{"beta": 0.3, "gamma": 0.1}"#),
                seed,
                outputs: Some(vec!["incidence".into(), "prevalence".into()]),
                param_id: param_id.into(),
            },
            task_id,
            outputs,
            error: None,
            error_details: None,
            timestamp: stored.timestamp.clone(),
        };
        assert_eq!(record.inputs, stored.inputs);
        records::write_sim(store.object_store.as_ref(), schema, &record).await.unwrap();
    }
    let target_prev = "targets.prev:prevalence_target";
    let target_deaths = "targets.deaths/deaths_target";
    let aggs = [
        (target_prev, vec![0, 1, 2], "4efec569a17ca9ef"),
        (target_deaths, vec![2, 0, 1], "2bc4368cc2b1db31"),
    ];
    for (target, order, expected_id) in aggs {
        let inputs: Vec<String> = order.iter().map(|i| task_ids[*i].clone()).collect();
        let dir = Path::parse(paths::agg_dir(schema, BUNDLE, target, expected_id)).unwrap();
        let result = records::read_agg_result(source.object_store.as_ref(), &dir).await.unwrap();
        let metadata = records::read_agg_metadata(source.object_store.as_ref(), &dir).await.unwrap();
        assert_eq!(result.input_task_ids, inputs);
        let record = AggRecord {
            bundle_ref: BUNDLE.into(),
            target_entrypoint: target.into(),
            input_task_ids: inputs,
            loss: result.loss,
            diagnostics: result.diagnostics.clone(),
            n_replicates: result.n_replicates,
            timestamp: metadata.timestamp.clone(),
        };
        assert_eq!(record.aggregation_id(), expected_id);
        records::write_agg(store.object_store.as_ref(), schema, &record).await.unwrap();
    }

    let expected = tree_files(&upstream);
    let written = tree_files(out.path());
    let names = |files: &[(String, Vec<u8>)]| files.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&written), names(&expected), "same files");
    for ((name, ours), (_, theirs)) in written.iter().zip(&expected) {
        assert!(ours == theirs, "{name} differs:\n--- ours\n{}\n--- upstream\n{}", String::from_utf8_lossy(ours), String::from_utf8_lossy(theirs));
    }
    assert_eq!(expected.len(), 25);
}

#[tokio::test]
async fn token_tree_is_rewritten_byte_for_byte() {
    rewrite_tree("tree_token", ProvenanceSchema::Token).await;
}

#[tokio::test]
async fn bundle_tree_is_rewritten_byte_for_byte() {
    rewrite_tree("tree_bundle", ProvenanceSchema::Bundle).await;
}

#[tokio::test]
async fn malformed_records_are_typed_errors_naming_the_path() {
    let store = Store::in_memory();
    let os = store.object_store.as_ref();
    let dir = Path::from("token/v1/aggs/x/target_t/agg_1");
    let missing = records::read_agg_result(os, &dir).await.unwrap_err();
    assert!(matches!(&missing, records::RecordError::NotFound { path } if path.ends_with("agg_1/result.json")), "{missing}");
    let cases: [&[u8]; 5] = [
        b"{\"aggregation_id\": \"1\", \"loss\": 0.5, \"diagn",
        b"[]",
        b"{\"aggregation_id\": \"1\", \"loss\": \"low\", \"n_replicates\": 3}",
        b"{\"aggregation_id\": \"1\", \"loss\": 0.5}",
        b"{\"aggregation_id\": \"1\", \"loss\": 0.5, \"n_replicates\": 3, \"inputs\": [{\"type\": \"sim\"}]}",
    ];
    for bad in cases {
        os.put(&dir.clone().join("result.json"), Bytes::from_static(bad).into()).await.unwrap();
        let err = records::read_agg_result(os, &dir).await.unwrap_err();
        assert!(
            matches!(&err, records::RecordError::Malformed { path, .. } if path == "token/v1/aggs/x/target_t/agg_1/result.json"),
            "{err}"
        );
    }
    // NaN is readable (upstream can write it in diagnostics); the caller decides what it means.
    os.put(&dir.clone().join("result.json"), Bytes::from_static(b"{\"aggregation_id\": \"1\", \"loss\": NaN, \"n_replicates\": 3}").into())
        .await
        .unwrap();
    assert!(records::read_agg_result(os, &dir).await.unwrap().loss.is_nan());
}
