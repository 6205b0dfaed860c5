//! `result.json` of a record: an aggregation's through `records::parse_agg_result` (the
//! indexer's read), and a simulation's through `records::read_sim` next to a valid
//! `metadata.json`. What reads as an aggregation result is what `AggRecord` writes for it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelops_core::pyjson::{self, PyValue};
use modelops_core::records::{self, AggRecord};
use modelops_fuzz::{BUNDLE, ready, same_float};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

const SIM_METADATA: &[u8] = include_bytes!("../../crates/core/tests/fixtures/upstream/tree_bundle/bundle/v1/sims/0123456789ab/9a/db/params_761edf35/seed_2264224431/metadata.json");

fuzz_target!(|data: &[u8]| {
    let path = Path::from("aggs/result.json");
    if let Ok(read) = records::parse_agg_result(&path, data) {
        let record = AggRecord {
            bundle_ref: BUNDLE.to_owned(),
            target_entrypoint: "targets.prev:prevalence_target".to_owned(),
            input_task_ids: read.input_task_ids.clone(),
            loss: read.loss,
            diagnostics: read.diagnostics.clone(),
            n_replicates: read.n_replicates,
            timestamp: "2026-11-22T20:05:11.254227+00:00".to_owned(),
        };
        let written = pyjson::to_indent2(&PyValue::Object(record.result_json()));
        let back = records::parse_agg_result(&path, written.as_bytes()).unwrap_or_else(|e| panic!("a written result does not read back ({e}): {written}"));
        assert_eq!(back.aggregation_id, record.aggregation_id());
        assert!(same_float(back.loss, read.loss));
        assert_eq!((back.n_replicates, &back.input_task_ids), (read.n_replicates, &read.input_task_ids));
        assert_eq!(pyjson::to_indent2(&PyValue::Object(back.diagnostics)), pyjson::to_indent2(&PyValue::Object(read.diagnostics)));
    }
    let store = InMemory::new();
    let dir = Path::from("sims/record");
    ready(store.put(&dir.clone().join("metadata.json"), PutPayload::from_static(SIM_METADATA))).unwrap();
    ready(store.put(&dir.clone().join("result.json"), PutPayload::from(data.to_vec()))).unwrap();
    if let Ok(sim) = ready(records::read_sim(&store, &dir)) {
        assert_eq!(sim.dir, dir);
    }
});
