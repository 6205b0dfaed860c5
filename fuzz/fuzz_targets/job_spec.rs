//! `JobSpec::scan`, the streaming read of a job spec blob (the indexer's), against
//! `JobSpec::from_json`, the whole-blob read: a spec the scanner reads, read through a buffer of
//! 1 to 64 bytes so values straddle reads, is the spec the whole read gives.
#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use modelops_core::study::{JobSpec, SpecError};

fuzz_target!(|data: &[u8]| {
    let Some((&capacity, blob)) = data.split_first() else { return };
    let reader = BufReader::with_capacity(usize::from(capacity % 64) + 1, blob);
    let mut streamed = Vec::new();
    let scanned = JobSpec::scan(reader, |index, task| {
        assert_eq!(index, streamed.len(), "tasks come in order");
        streamed.push(task);
        Ok::<_, SpecError>(())
    });
    let whole = JobSpec::from_json(blob);
    let Ok(mut scanned) = scanned else { return };
    let whole = whole.unwrap_or_else(|e| panic!("the scanner read a spec the whole read refuses ({e}): {scanned:?}"));
    match &mut scanned {
        JobSpec::Simulation(job) => {
            job.tasks.splice(0..0, streamed);
            assert_eq!(scanned.to_json(), whole.to_json());
        }
        // A calibration spec is kept as written; a `tasks` list in one is streamed out of it.
        JobSpec::Calibration { job_id, .. } => assert_eq!(Some(&*job_id), Some(whole.job_id())),
    }
});
