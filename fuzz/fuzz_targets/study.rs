//! `SimulationStudy::from_json` (`study.json`, sent to the registry's SubmitStudy): a study that
//! reads and expands gives the task count it promises, and a SimJob spec that reads back as the
//! same spec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelops_core::job::JobId;
use modelops_core::study::{JobSpec, SimulationStudy};
use modelops_fuzz::BUNDLE;

/// The most tasks a study may expand to here (a server bounds it the same way).
const MAX_TASKS: u64 = 1_000;

fuzz_target!(|data: &[u8]| {
    let Ok(study) = SimulationStudy::from_json(data) else { return };
    let tasks = study
        .parameter_sets
        .iter()
        .try_fold(0u64, |sum, set| sum.checked_add(if set.seed.is_some() { 1 } else { study.n_replicates }));
    let Some(tasks) = tasks.filter(|n| *n <= MAX_TASKS) else { return };
    let Ok(job) = study.to_sim_job(BUNDLE, Some(JobId::new("job-fuzz").unwrap())) else { return };
    assert_eq!(job.tasks.len() as u64, tasks);
    let spec = JobSpec::Simulation(job);
    let blob = spec.to_json();
    let reread = JobSpec::from_json(blob.as_bytes()).unwrap_or_else(|e| panic!("a written spec does not read back ({e}): {blob}"));
    assert_eq!(reread.to_json(), blob);
});
