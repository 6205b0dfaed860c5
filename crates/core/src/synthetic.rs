//! Synthetic results for a SimJob, written in the upstream layout with the core writer: what
//! the tests, benchmarks and examples of the services use as "a job that ran". Every record is
//! exactly what upstream would write for these inputs; only the model output bytes are a short
//! deterministic stand-in rather than Arrow data (readers of records never decode them).

use bytes::Bytes;
use object_store::ObjectStore;

use crate::ids;
use crate::paths::ProvenanceSchema;
use crate::pyjson::{PyObject, PyValue};
use crate::records::{self, AggRecord, RecordError, SimInputs, SimOutput, SimRecord};
use crate::study::{ParamGroup, SimJobSpec};

/// What to write for a job.
#[derive(Debug, Clone)]
pub struct SyntheticRun<'a> {
    /// The layout.
    pub schema: ProvenanceSchema,
    /// The write time of every record (upstream ISO form).
    pub timestamp: &'a str,
    /// Which parameter sets (by index in the job's task groups) to write; `None` writes all.
    pub param_sets: Option<&'a [usize]>,
    /// Parameter sets whose aggregations are not written (as if they failed).
    pub failed_aggregations: &'a [usize],
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Simulation directories.
    pub sims: Vec<String>,
    /// Aggregation directories.
    pub aggs: Vec<String>,
}

/// The output names every synthetic simulation produces.
pub const OUTPUTS: [&str; 2] = ["prevalence", "metadata"];

/// The loss a synthetic aggregation records for these parameters: squared distance of the
/// numeric parameters from 0.3 (so sets near 0.3 are best), plus a little per-target offset.
pub fn synthetic_loss(values: &PyObject, target_index: usize) -> f64 {
    let distance: f64 = values
        .iter()
        .filter_map(|(_, v)| match v {
            PyValue::Float(f) => Some(*f),
            PyValue::Int(i) => Some(*i as f64),
            _ => None,
        })
        .map(|x| (x - 0.3) * (x - 0.3))
        .sum();
    distance + 0.01 * target_index as f64
}

fn sim_record(group: &ParamGroup<'_>, task: &crate::study::SimTaskSpec, timestamp: &str) -> SimRecord {
    let metadata = format!(
        "{{\"entrypoint\": \"{}\", \"seed\": {}, \"model_digest\": \"{}\"}}",
        task.entrypoint, task.seed, task.bundle_ref
    );
    let prevalence = Bytes::from(format!("synthetic-prevalence:{}:{}", group.param_id, task.seed));
    SimRecord {
        inputs: SimInputs::from(task),
        task_id: ids::runner_task_id(&task.param_id, task.seed, OUTPUTS),
        outputs: vec![SimOutput::new("prevalence", prevalence), SimOutput::new("metadata", metadata)],
        error: None,
        error_details: None,
        timestamp: timestamp.to_owned(),
    }
}

/// Writes the simulations and aggregations of `job` as `run` says, into `store`.
pub async fn write_job_results(store: &dyn ObjectStore, job: &SimJobSpec, run: &SyntheticRun<'_>) -> Result<Written, RecordError> {
    let targets = job.target_entrypoints();
    let mut written = Written::default();
    for (index, group) in job.task_groups().iter().enumerate() {
        if run.param_sets.is_some_and(|sets| !sets.contains(&index)) {
            continue;
        }
        let mut task_ids = Vec::with_capacity(group.tasks.len());
        for task in &group.tasks {
            let record = sim_record(group, task, run.timestamp);
            task_ids.push(record.task_id.clone());
            written.sims.push(records::write_sim(store, run.schema, &record).await?.to_string());
        }
        if run.failed_aggregations.contains(&index) {
            continue;
        }
        for (t, target) in targets.iter().enumerate() {
            let mut diagnostics = PyObject::new();
            diagnostics.insert("target_name", target.rsplit([':', '/']).next().unwrap_or(target).into());
            diagnostics.insert("n_sim_returns", (task_ids.len() as u64).into());
            let record = AggRecord {
                bundle_ref: job.bundle_ref.clone(),
                target_entrypoint: target.clone(),
                input_task_ids: task_ids.clone(),
                loss: synthetic_loss(group.values, t),
                diagnostics,
                n_replicates: task_ids.len() as i64,
                timestamp: run.timestamp.to_owned(),
            };
            written.aggs.push(records::write_agg(store, run.schema, &record).await?.to_string());
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobId;
    use crate::store::Store;
    use crate::study::SimulationStudy;

    #[tokio::test]
    async fn writes_readable_upstream_records() {
        let study = SimulationStudy::from_json(include_bytes!("../tests/fixtures/upstream/study_plain.json")).unwrap();
        let bundle = format!("sha256:{}", "01".repeat(32));
        let job = study.to_sim_job(&bundle, Some(JobId::new("job-1").unwrap())).unwrap();
        let store = Store::in_memory();
        let run = SyntheticRun {
            schema: ProvenanceSchema::Token,
            timestamp: "2026-11-22T20:05:11+00:00",
            param_sets: Some(&[0, 2]),
            failed_aggregations: &[2],
        };
        let written = write_job_results(store.object_store.as_ref(), &job, &run).await.unwrap();
        assert_eq!((written.sims.len(), written.aggs.len()), (6, 1));
        let agg = records::read_agg_result(store.object_store.as_ref(), &object_store::path::Path::from(written.aggs[0].as_str()))
            .await
            .unwrap();
        let group = &job.task_groups()[0];
        let task_ids: Vec<String> = group.tasks.iter().map(|t| ids::runner_task_id(&t.param_id, t.seed, OUTPUTS)).collect();
        assert_eq!(agg.input_task_ids, task_ids);
        assert!((agg.loss - synthetic_loss(group.values, 0)).abs() < 1e-12);
    }
}
