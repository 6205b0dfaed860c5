//! `metadata.json` of a record: an aggregation's through `records::parse_agg_metadata` (the
//! indexer's read), and a simulation's through `records::read_sim` next to a valid
//! `result.json`. What reads as an aggregation's metadata is what `AggRecord` writes for it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelops_core::ids;
use modelops_core::pyjson::{self, PyValue};
use modelops_core::records::{self, AggRecord};
use modelops_fuzz::ready;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

const SIM_RESULT: &[u8] = include_bytes!("../../crates/core/tests/fixtures/upstream/tree_bundle/bundle/v1/sims/0123456789ab/9a/db/params_761edf35/seed_2264224431/result.json");

fuzz_target!(|data: &[u8]| {
    let path = Path::from("aggs/metadata.json");
    if let Ok(read) = records::parse_agg_metadata(&path, data) {
        let record = AggRecord {
            bundle_ref: read.bundle_ref.clone(),
            target_entrypoint: read.target_entrypoint.clone(),
            input_task_ids: vec![read.param_id_stand_in.clone()],
            loss: 0.5,
            diagnostics: Default::default(),
            n_replicates: 1,
            timestamp: read.timestamp.clone(),
        };
        let written = pyjson::to_indent2(&PyValue::Object(record.metadata_json()));
        let back = records::parse_agg_metadata(&path, written.as_bytes()).unwrap_or_else(|e| panic!("written metadata does not read back ({e}): {written}"));
        assert_eq!((&back.bundle_ref, &back.target_entrypoint, &back.timestamp), (&read.bundle_ref, &read.target_entrypoint, &read.timestamp));
        assert_eq!(back.n_sim_returns, 1);
        assert_eq!(back.param_id_stand_in, ids::py_prefix(&read.param_id_stand_in, 16));
    }
    let store = InMemory::new();
    let dir = Path::from("sims/record");
    ready(store.put(&dir.clone().join("metadata.json"), PutPayload::from(data.to_vec()))).unwrap();
    ready(store.put(&dir.clone().join("result.json"), PutPayload::from_static(SIM_RESULT))).unwrap();
    if let Ok(sim) = ready(records::read_sim(&store, &dir)) {
        assert_eq!(sim.dir, dir);
    }
});
