//! Calabaria studies and the SimJob spec, as upstream writes them (UPSTREAM-FORMAT.md §2).
//!
//! A [`SimulationStudy`] (`study.json`) is expanded by [`SimulationStudy::to_sim_job`] exactly as
//! `SimulationStudy.to_simjob` does: an entry with an explicit seed gives one task, an entry
//! without gives `n_replicates` tasks with derived seeds; the job metadata merges the study's
//! own; targets become a `TargetSpec`. A [`JobSpec`] is the blob stored at
//! `jobs/{job_type}/{job_id}.json`, read and written in upstream's form.

use crate::ids::{self, ParamIdError};
use crate::job::{JobId, JobIdError};
use crate::pyjson::{self, PyObject, PyValue};

pub mod scan;

/// Why a study or a job spec is not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// Not JSON.
    #[error("invalid JSON: {0}")]
    Json(#[from] pyjson::ParseError),
    /// A field is missing or has the wrong type or value.
    #[error("field {field}: {reason}")]
    Field {
        /// Where, e.g. `parameter_sets[2].seed`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The parameters cannot be hashed.
    #[error(transparent)]
    ParamId(#[from] ParamIdError),
    /// The job id is invalid.
    #[error(transparent)]
    JobId(#[from] JobIdError),
    /// The blob could not be read (streamed reads).
    #[error("cannot read the spec: {0}")]
    Read(String),
}

impl From<scan::ScanError> for SpecError {
    fn from(error: scan::ScanError) -> Self {
        match error {
            scan::ScanError::Json(e) => Self::Json(e),
            scan::ScanError::Read(e) => Self::Read(e.to_string()),
        }
    }
}

fn field_error(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

fn as_object<'a>(value: &'a PyValue, field: &str) -> Result<&'a PyObject, SpecError> {
    value.as_object().ok_or_else(|| field_error(field, format!("must be an object, found {}", value.type_name())))
}

fn required<'a>(object: &'a PyObject, key: &str, at: &str) -> Result<&'a PyValue, SpecError> {
    object.get(key).ok_or_else(|| field_error(format!("{at}{key}"), "is required"))
}

fn required_str(object: &PyObject, key: &str, at: &str) -> Result<String, SpecError> {
    required(object, key, at)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| field_error(format!("{at}{key}"), "must be a string"))
}

fn optional_strings(value: Option<&PyValue>, field: &str) -> Result<Option<Vec<String>>, SpecError> {
    match value {
        None | Some(PyValue::Null) => Ok(None),
        Some(PyValue::List(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| field_error(field, "must be a list of strings")),
        Some(other) => Err(field_error(field, format!("must be a list or null, found {}", other.type_name()))),
    }
}

fn seed_value(value: &PyValue, field: &str) -> Result<u64, SpecError> {
    value
        .as_u64()
        .ok_or_else(|| field_error(field, "must be an int in 0..2^64"))
}

/// Checks a model import path: `^[A-Za-z_][\w.]*\.[A-Za-z_]\w*$` (at least one dot).
pub fn is_valid_import_path(path: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let Some((head, last)) = path.rsplit_once('.') else { return false };
    let mut head_chars = head.chars();
    let head_ok = head_chars.next().is_some_and(|c| c.is_alphabetic() || c == '_') && head_chars.all(|c| word(c) || c == '.');
    let mut last_chars = last.chars();
    let last_ok = last_chars.next().is_some_and(|c| c.is_alphabetic() || c == '_') && last_chars.all(word);
    head_ok && last_ok
}

/// Checks a scenario name: `^[a-z0-9](?:[a-z0-9-_.]{0,62}[a-z0-9])?$`.
pub fn is_valid_scenario(scenario: &str) -> bool {
    let bytes = scenario.as_bytes();
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let inner = |b: u8| edge(b) || matches!(b, b'-' | b'_' | b'.');
    match bytes {
        [] => false,
        [only] => edge(*only),
        [first, middle @ .., last] => middle.len() <= 62 && edge(*first) && edge(*last) && middle.iter().all(|b| inner(*b)),
    }
}

/// Checks that parameters are what `UniqueParameterSet` accepts: bool, int, float (finite) or str.
fn check_scalar_params(params: &PyObject, at: &str) -> Result<(), SpecError> {
    for (name, value) in params.iter() {
        match value {
            PyValue::Bool(_) | PyValue::Int(_) | PyValue::BigInt(_) | PyValue::Str(_) => {}
            PyValue::Float(f) if f.is_finite() => {}
            PyValue::Float(_) => return Err(field_error(format!("{at}.{name}"), "must be a finite number")),
            other => {
                return Err(field_error(format!("{at}.{name}"), format!("must be a bool, int, float or str, found {}", other.type_name())));
            }
        }
    }
    Ok(())
}

/// One entry of a study's `parameter_sets`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterSetEntry {
    /// The parameters, in their own order.
    pub params: PyObject,
    /// An explicit seed: the entry runs once with it instead of `n_replicates` times.
    pub seed: Option<u64>,
}

/// A Calabaria `study.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationStudy {
    /// Model import path, e.g. `models.seir.SEIR`.
    pub model: String,
    /// Scenario name.
    pub scenario: String,
    /// Parameter sets.
    pub parameter_sets: Vec<ParameterSetEntry>,
    /// How the sets were sampled (`sobol`, `lhs`, `manual`, …).
    pub sampling_method: PyValue,
    /// Replicates for entries without an explicit seed.
    pub n_replicates: u64,
    /// Requested outputs.
    pub outputs: Option<Vec<String>>,
    /// Target entrypoints for loss computation.
    pub targets: Option<Vec<String>>,
    /// Free-form metadata, merged into the job's.
    pub metadata: PyObject,
}

impl SimulationStudy {
    /// Parses `study.json`, accepting both `parameter_sets` forms: plain parameter objects (old)
    /// and `{"params": {...}, "seed": n|null}` (new), as upstream's `from_dict` does.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SpecError> {
        let value = pyjson::parse(bytes)?;
        let object = as_object(&value, "study")?;
        let mut parameter_sets = Vec::new();
        let sets = match object.get("parameter_sets") {
            None => &[][..],
            Some(PyValue::List(items)) => items.as_slice(),
            Some(_) => return Err(field_error("parameter_sets", "must be a list")),
        };
        for (i, item) in sets.iter().enumerate() {
            let at = format!("parameter_sets[{i}]");
            let entry = as_object(item, &at)?;
            let (params, seed) = match entry.get("params") {
                Some(params) => {
                    let params = as_object(params, &format!("{at}.params"))?.clone();
                    let seed = match entry.get("seed") {
                        None | Some(PyValue::Null) => None,
                        Some(seed) => Some(seed_value(seed, &format!("{at}.seed"))?),
                    };
                    (params, seed)
                }
                None => (entry.clone(), None),
            };
            check_scalar_params(&params, &format!("{at}.params"))?;
            parameter_sets.push(ParameterSetEntry { params, seed });
        }
        let n_replicates = match object.get("n_replicates") {
            None => 1,
            Some(v) => v
                .as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| field_error("n_replicates", "must be a positive int"))?,
        };
        let metadata = match object.get("metadata") {
            None | Some(PyValue::Null) => PyObject::new(),
            Some(v) => as_object(v, "metadata")?.clone(),
        };
        Ok(Self {
            model: required_str(object, "model", "")?,
            scenario: required_str(object, "scenario", "")?,
            parameter_sets,
            sampling_method: object.get("sampling_method").cloned().unwrap_or_else(|| "manual".into()),
            n_replicates,
            outputs: optional_strings(object.get("outputs"), "outputs")?,
            targets: optional_strings(object.get("targets"), "targets")?,
            metadata,
        })
    }

    /// How many tasks [`SimulationStudy::to_sim_job`] would make: one per entry with a seed,
    /// `n_replicates` per entry without. `None` when the count overflows a `u64`. Cheap, so a
    /// server can refuse a study before expanding it.
    pub fn task_count(&self) -> Option<u64> {
        self.parameter_sets.iter().try_fold(0u64, |sum, entry| {
            sum.checked_add(if entry.seed.is_some() { 1 } else { self.n_replicates })
        })
    }

    /// Expands the study into a SimJob bound to `bundle_ref`, as `to_simjob` does. Without a
    /// job id one is made as upstream makes it: `job-` and 8 hex characters of a UUIDv4.
    pub fn to_sim_job(&self, bundle_ref: &str, job_id: Option<JobId>) -> Result<SimJobSpec, SpecError> {
        if !ids::is_valid_bundle_ref(bundle_ref) {
            return Err(field_error(
                "bundle_ref",
                format!("must be sha256:64-hex-chars or repository@sha256:64-hex-chars, got {bundle_ref:?}"),
            ));
        }
        if !is_valid_import_path(&self.model) {
            return Err(field_error("model", format!("{:?} is not a dotted import path", self.model)));
        }
        if !is_valid_scenario(&self.scenario) {
            return Err(field_error("scenario", format!("{:?} must match [a-z0-9](?:[a-z0-9-_.]{{0,62}}[a-z0-9])?", self.scenario)));
        }
        let entrypoint = format!("{}/{}", self.model, self.scenario);
        let outputs = self.outputs.clone().map(|mut o| {
            o.sort();
            o
        });
        let mut tasks = Vec::new();
        for entry in &self.parameter_sets {
            let param_id = ids::param_id(&entry.params)?;
            let seeds: Vec<u64> = match entry.seed {
                Some(seed) => vec![seed],
                None => (0..self.n_replicates).map(|i| ids::replicate_seed(&param_id, i)).collect(),
            };
            for seed in seeds {
                tasks.push(SimTaskSpec {
                    entrypoint: entrypoint.clone(),
                    bundle_ref: bundle_ref.to_owned(),
                    param_id: param_id.clone(),
                    values: entry.params.clone(),
                    seed,
                    outputs: outputs.clone(),
                });
            }
        }
        let job_id = match job_id {
            Some(id) => id,
            None => JobId::new(format!("job-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]))?,
        };
        let mut metadata = PyObject::new();
        metadata.insert("sampling_method", self.sampling_method.clone());
        metadata.insert("n_parameter_sets", (self.parameter_sets.len() as u64).into());
        metadata.insert("n_replicates", self.n_replicates.into());
        metadata.insert("model", self.model.as_str().into());
        metadata.insert("scenario", self.scenario.as_str().into());
        for (key, value) in self.metadata.iter() {
            metadata.insert(key, value.clone());
        }
        let target_spec = self.targets.as_ref().filter(|t| !t.is_empty()).map(|targets| {
            let list = PyValue::List(targets.iter().map(|t| t.as_str().into()).collect());
            let target_ids = self.metadata.get("target_ids").cloned().unwrap_or(PyValue::Null);
            let target_set = self.metadata.get("target_set").cloned().unwrap_or(PyValue::Null);
            let mut data = PyObject::new();
            data.insert("target_entrypoints", list.clone());
            data.insert("target_ids", target_ids.clone());
            data.insert("target_set", target_set.clone());
            let mut meta = PyObject::new();
            meta.insert("targets", list);
            meta.insert("target_ids", target_ids);
            meta.insert("target_set", target_set);
            let mut spec = PyObject::new();
            spec.insert("data", PyValue::Object(data));
            spec.insert("loss_function", "default".into());
            spec.insert("weights", PyValue::Null);
            spec.insert("metadata", PyValue::Object(meta));
            spec
        });
        Ok(SimJobSpec {
            job_id,
            bundle_ref: bundle_ref.to_owned(),
            priority: PyValue::Int(0),
            metadata,
            target_spec,
            tasks,
        })
    }
}

/// One simulation task of a SimJob.
#[derive(Debug, Clone, PartialEq)]
pub struct SimTaskSpec {
    /// `import.path/scenario` or `module:object`.
    pub entrypoint: String,
    /// The bundle reference.
    pub bundle_ref: String,
    /// The parameter-set id, as given in the spec (upstream does not recompute it).
    pub param_id: String,
    /// The parameter values, in their own order.
    pub values: PyObject,
    /// The seed.
    pub seed: u64,
    /// Requested outputs, sorted.
    pub outputs: Option<Vec<String>>,
}

impl SimTaskSpec {
    /// The task as upstream's SimTask JSON object (`entrypoint`, `bundle_ref`, `params`, `seed`,
    /// `outputs`), as a spec blob holds it.
    pub fn to_object(&self) -> PyObject {
        let mut params = PyObject::new();
        params.insert("param_id", self.param_id.as_str().into());
        params.insert("values", PyValue::Object(self.values.clone()));
        let mut object = PyObject::new();
        object.insert("entrypoint", self.entrypoint.as_str().into());
        object.insert("bundle_ref", self.bundle_ref.as_str().into());
        object.insert("params", PyValue::Object(params));
        object.insert("seed", self.seed.into());
        object.insert(
            "outputs",
            self.outputs
                .as_ref()
                .map_or(PyValue::Null, |o| PyValue::List(o.iter().map(|s| s.as_str().into()).collect())),
        );
        object
    }

    /// A task from its spec value; `at` names it in errors (`tasks[3]`), and `job_bundle_ref`
    /// stands in for a task without its own `bundle_ref`.
    pub fn from_value(task: &PyValue, at: &str, job_bundle_ref: &str) -> Result<Self, SpecError> {
        let task = as_object(task, at)?;
        let params = as_object(required(task, "params", &format!("{at}."))?, &format!("{at}.params"))?;
        let values = as_object(required(params, "values", &format!("{at}.params."))?, &format!("{at}.params.values"))?;
        Ok(Self {
            entrypoint: required_str(task, "entrypoint", &format!("{at}."))?,
            bundle_ref: task.get("bundle_ref").and_then(PyValue::as_str).unwrap_or(job_bundle_ref).to_owned(),
            param_id: required_str(params, "param_id", &format!("{at}.params."))?,
            values: values.clone(),
            seed: seed_value(required(task, "seed", &format!("{at}."))?, &format!("{at}.seed"))?,
            outputs: optional_strings(task.get("outputs"), &format!("{at}.outputs"))?,
        })
    }
}

/// The tasks of one parameter set, in first-seen order (upstream `get_task_groups`).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamGroup<'a> {
    /// The parameter-set id.
    pub param_id: &'a str,
    /// The parameter values of the group's first task.
    pub values: &'a PyObject,
    /// The group's tasks, in spec order.
    pub tasks: Vec<&'a SimTaskSpec>,
}

/// A simulation job: the `job_type: "simulation"` spec blob.
#[derive(Debug, Clone, PartialEq)]
pub struct SimJobSpec {
    /// The job id.
    pub job_id: JobId,
    /// The bundle reference.
    pub bundle_ref: String,
    /// Priority, kept as written.
    pub priority: PyValue,
    /// Job metadata.
    pub metadata: PyObject,
    /// `{data, loss_function, weights, metadata}` when the job has targets.
    pub target_spec: Option<PyObject>,
    /// The tasks, in order.
    pub tasks: Vec<SimTaskSpec>,
}

impl SimJobSpec {
    /// The target entrypoints from `target_spec.data.target_entrypoints` (empty without targets).
    pub fn target_entrypoints(&self) -> Vec<String> {
        self.target_spec
            .as_ref()
            .and_then(|spec| spec.get("data"))
            .and_then(PyValue::as_object)
            .and_then(|data| data.get("target_entrypoints"))
            .and_then(PyValue::as_list)
            .map(|list| list.iter().filter_map(PyValue::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The tasks grouped by param_id in first-seen order.
    pub fn task_groups(&self) -> Vec<ParamGroup<'_>> {
        let mut groups: Vec<ParamGroup<'_>> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for task in &self.tasks {
            let slot = *index.entry(task.param_id.as_str()).or_insert_with(|| {
                groups.push(ParamGroup {
                    param_id: &task.param_id,
                    values: &task.values,
                    tasks: Vec::new(),
                });
                groups.len() - 1
            });
            groups[slot].tasks.push(task);
        }
        groups
    }

    /// The spec blob object, with upstream's keys in upstream's order.
    pub fn to_object(&self) -> PyObject {
        let mut object = PyObject::new();
        object.insert("job_type", "simulation".into());
        object.insert("job_id", self.job_id.as_str().into());
        object.insert("bundle_ref", self.bundle_ref.as_str().into());
        object.insert("priority", self.priority.clone());
        object.insert("metadata", PyValue::Object(self.metadata.clone()));
        if let Some(spec) = &self.target_spec {
            object.insert("target_spec", PyValue::Object(spec.clone()));
        }
        let tasks = self.tasks.iter().map(|task| PyValue::Object(task.to_object())).collect();
        object.insert("tasks", PyValue::List(tasks));
        object
    }

    fn from_object(object: &PyObject) -> Result<Self, SpecError> {
        let job_id = JobId::new(required_str(object, "job_id", "")?)?;
        let bundle_ref = required_str(object, "bundle_ref", "")?;
        let metadata = match object.get("metadata") {
            None | Some(PyValue::Null) => PyObject::new(),
            Some(v) => as_object(v, "metadata")?.clone(),
        };
        let target_spec = match object.get("target_spec") {
            None | Some(PyValue::Null) => None,
            Some(v) => Some(as_object(v, "target_spec")?.clone()),
        };
        // The reader also accepts the old `batches[].tasks[]` form.
        let mut raw_tasks: Vec<(String, &PyValue)> = Vec::new();
        match (object.get("tasks"), object.get("batches")) {
            (Some(PyValue::List(tasks)), _) => {
                raw_tasks.extend(tasks.iter().enumerate().map(|(i, t)| (format!("tasks[{i}]"), t)));
            }
            (None, Some(PyValue::List(batches))) => {
                for (b, batch) in batches.iter().enumerate() {
                    let batch = as_object(batch, &format!("batches[{b}]"))?;
                    let Some(PyValue::List(tasks)) = batch.get("tasks") else {
                        return Err(field_error(format!("batches[{b}].tasks"), "must be a list"));
                    };
                    raw_tasks.extend(tasks.iter().enumerate().map(|(i, t)| (format!("batches[{b}].tasks[{i}]"), t)));
                }
            }
            _ => return Err(field_error("tasks", "is required and must be a list")),
        }
        let tasks = raw_tasks
            .into_iter()
            .map(|(at, task)| SimTaskSpec::from_value(task, &at, &bundle_ref))
            .collect::<Result<Vec<_>, SpecError>>()?;
        Ok(Self {
            job_id,
            bundle_ref,
            priority: object.get("priority").cloned().unwrap_or(PyValue::Int(0)),
            metadata,
            target_spec,
            tasks,
        })
    }
}

/// A failure of [`JobSpec::scan`]: the caller's error, or a read or parse error made into one.
struct ScanFailure<E>(E);

impl<E: From<SpecError>> From<scan::ScanError> for ScanFailure<E> {
    fn from(error: scan::ScanError) -> Self {
        Self(E::from(SpecError::from(error)))
    }
}

/// A job spec blob of any type.
#[derive(Debug, Clone, PartialEq)]
pub enum JobSpec {
    /// `job_type: "simulation"`.
    Simulation(SimJobSpec),
    /// `job_type: "calibration"`, kept as written (the result services only need its id).
    Calibration {
        /// The job id.
        job_id: JobId,
        /// The spec object as stored.
        raw: PyObject,
    },
}

impl JobSpec {
    /// Parses a spec blob.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SpecError> {
        let value = pyjson::parse(bytes)?;
        Self::from_object(as_object(&value, "job spec")?)
    }

    fn from_object(object: &PyObject) -> Result<Self, SpecError> {
        match required_str(object, "job_type", "")?.as_str() {
            "simulation" => Ok(Self::Simulation(SimJobSpec::from_object(object)?)),
            "calibration" => Ok(Self::Calibration {
                job_id: JobId::new(required_str(object, "job_id", "")?)?,
                raw: object.clone(),
            }),
            other => Err(field_error("job_type", format!("must be simulation or calibration, found {other:?}"))),
        }
    }

    /// Reads a spec blob from `reader` without holding its tasks: each task of a simulation
    /// job's `tasks` list is parsed and handed to `on_task(index, task)` as it is read, and the
    /// spec is returned without them (tasks in the old `batches[].tasks[]` form are not
    /// streamed: they stay in the returned spec). A task without its own `bundle_ref` takes the
    /// job's, which upstream writes before the tasks; one that comes first is an error.
    pub fn scan<E: From<SpecError>>(reader: impl std::io::BufRead, mut on_task: impl FnMut(usize, SimTaskSpec) -> Result<(), E>) -> Result<Self, E> {
        let header = scan::scan_object(reader, "tasks", |index, task, members: &PyObject| {
            let at = format!("tasks[{index}]");
            let job_bundle_ref = match members.get("bundle_ref").and_then(PyValue::as_str) {
                Some(bundle_ref) => bundle_ref,
                None if task.as_object().is_some_and(|t| t.get("bundle_ref").is_none()) => {
                    return Err(ScanFailure(E::from(field_error(
                        format!("{at}.bundle_ref"),
                        "is missing and the job's bundle_ref comes after the tasks",
                    ))));
                }
                None => "",
            };
            let task = SimTaskSpec::from_value(&task, &at, job_bundle_ref).map_err(|e| ScanFailure(E::from(e)))?;
            on_task(index, task).map_err(ScanFailure)
        })
        .map_err(|e| e.0)?;
        Ok(Self::from_object(&header)?)
    }

    /// The job id.
    pub fn job_id(&self) -> &JobId {
        match self {
            Self::Simulation(job) => &job.job_id,
            Self::Calibration { job_id, .. } => job_id,
        }
    }

    /// `simulation` or `calibration`.
    pub fn job_type(&self) -> &'static str {
        match self {
            Self::Simulation(_) => "simulation",
            Self::Calibration { .. } => "calibration",
        }
    }

    /// The blob as upstream writes it: `json.dumps(spec, indent=2)`.
    pub fn to_json(&self) -> String {
        match self {
            Self::Simulation(job) => pyjson::to_indent2(&PyValue::Object(job.to_object())),
            Self::Calibration { raw, .. } => pyjson::to_indent2(&PyValue::Object(raw.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(blob: &str) -> Result<(JobSpec, Vec<SimTaskSpec>), SpecError> {
        let mut tasks = Vec::new();
        let spec = JobSpec::scan(std::io::BufReader::with_capacity(7, blob.as_bytes()), |index, task| {
            assert_eq!(index, tasks.len());
            tasks.push(task);
            Ok::<(), SpecError>(())
        })?;
        Ok((spec, tasks))
    }

    #[test]
    fn a_scanned_spec_is_the_parsed_spec() {
        let study = r#"{"model": "m.x", "scenario": "s", "n_replicates": 2, "targets": ["t.a:f", "t.b/g"],
            "parameter_sets": [{"params": {"beta": 1e-05, "name": "S\u00e3o \"x]}\""}}, {"params": {"beta": 2}}]}"#;
        let job = SimulationStudy::from_json(study.as_bytes())
            .unwrap()
            .to_sim_job(&format!("sha256:{}", "ab".repeat(32)), Some(JobId::new("job-scan").unwrap()))
            .unwrap();
        let blob = JobSpec::Simulation(job.clone()).to_json();
        let (JobSpec::Simulation(header), tasks) = scanned(&blob).unwrap() else {
            panic!("a SimJob")
        };
        assert_eq!(tasks, job.tasks);
        assert_eq!(SimJobSpec { tasks, ..header }, job);

        // The old batches form keeps its tasks in the spec; a calibration spec has none.
        let mut old = job.to_object();
        let mut batch = PyObject::new();
        batch.insert("tasks", old.remove("tasks").unwrap());
        old.insert("batches", PyValue::List(vec![PyValue::Object(batch)]));
        let old = pyjson::to_indent2(&PyValue::Object(old));
        let (JobSpec::Simulation(header), streamed) = scanned(&old).unwrap() else {
            panic!("a SimJob")
        };
        assert!(streamed.is_empty());
        assert_eq!(header.tasks, job.tasks);
        let calibration = r#"{"job_type": "calibration", "job_id": "calib-1", "algorithm": "optuna"}"#;
        assert_eq!(scanned(calibration).unwrap().0, JobSpec::from_json(calibration.as_bytes()).unwrap());
    }

    #[test]
    fn scanned_specs_report_errors_as_parsed_ones_do() {
        let task = r#"{"entrypoint": "m.x/s", "params": {"param_id": "p", "values": {}}, "seed": 1}"#;
        let bad_seed = format!(
            r#"{{"job_type": "simulation", "job_id": "job-1", "bundle_ref": "b", "tasks": [{task}, {}]}}"#,
            task.replace("\"seed\": 1", "\"seed\": -1")
        );
        assert_eq!(scanned(&bad_seed).unwrap_err(), JobSpec::from_json(bad_seed.as_bytes()).unwrap_err());
        assert!(matches!(scanned(&bad_seed).unwrap_err(), SpecError::Field { field, .. } if field == "tasks[1].seed"));
        let truncated = &bad_seed[..bad_seed.len() - 20];
        assert!(matches!(scanned(truncated).unwrap_err(), SpecError::Json(_)));
        let late_bundle = format!(r#"{{"job_type": "simulation", "job_id": "job-1", "tasks": [{task}], "bundle_ref": "b"}}"#);
        assert!(matches!(scanned(&late_bundle).unwrap_err(), SpecError::Field { field, .. } if field == "tasks[0].bundle_ref"));
        let own_bundle = late_bundle.replace("\"seed\": 1", "\"seed\": 1, \"bundle_ref\": \"own\"");
        assert_eq!(scanned(&own_bundle).unwrap().1[0].bundle_ref, "own");
    }

    #[test]
    fn grammar_checks() {
        assert!(is_valid_import_path("models.seir.SEIR"));
        assert!(is_valid_import_path("_m.x_1"));
        assert!(!is_valid_import_path("models"));
        assert!(!is_valid_import_path("1m.x"));
        assert!(!is_valid_import_path("m.x/y"));
        assert!(is_valid_scenario("baseline"));
        assert!(is_valid_scenario("a"));
        assert!(is_valid_scenario("a-b_c.d"));
        assert!(!is_valid_scenario("Baseline"));
        assert!(!is_valid_scenario("a-"));
        assert!(!is_valid_scenario(""));
        assert!(!is_valid_scenario(&"a".repeat(65)));
    }

    #[test]
    fn bad_studies_name_the_field() {
        let err = SimulationStudy::from_json(br#"{"model": "m.x", "scenario": "s", "parameter_sets": [{"a": [1]}]}"#).unwrap_err();
        assert!(matches!(&err, SpecError::Field { field, .. } if field == "parameter_sets[0].params.a"), "{err}");
        let err = SimulationStudy::from_json(br#"{"model": "m.x", "scenario": "s", "parameter_sets": [{"params": {}, "seed": -1}]}"#).unwrap_err();
        assert!(matches!(&err, SpecError::Field { field, .. } if field == "parameter_sets[0].seed"), "{err}");
        let study = SimulationStudy::from_json(br#"{"model": "m.x", "scenario": "s", "parameter_sets": []}"#).unwrap();
        let bundle = format!("sha256:{}", "ab".repeat(32));
        assert!(study.to_sim_job("sha256:short", None).is_err());
        let job = study.to_sim_job(&bundle, None).unwrap();
        assert!(job.job_id.as_str().starts_with("job-") && job.job_id.as_str().len() == 12);
        assert!(JobSpec::from_json(br#"{"job_type": "simulation", "job_id": "../x", "bundle_ref": "b", "tasks": []}"#).is_err());
    }

    #[test]
    fn task_counts_are_known_before_expansion_and_never_overflow() {
        let study = |sets: &str, n: &str| {
            SimulationStudy::from_json(format!(r#"{{"model": "m.x", "scenario": "s", "n_replicates": {n}, "parameter_sets": [{sets}]}}"#).as_bytes())
                .unwrap()
        };
        let bundle = format!("sha256:{}", "ab".repeat(32));
        let mixed = study(r#"{"params": {"a": 1}}, {"params": {"a": 2}, "seed": 7}"#, "3");
        assert_eq!(mixed.task_count(), Some(4));
        assert_eq!(mixed.to_sim_job(&bundle, None).unwrap().tasks.len(), 4);
        assert_eq!(study(r#"{"a": 1}"#, "1000000000000").task_count(), Some(1_000_000_000_000));
        let sets = [r#"{"a": 1}"#; 3].join(", ");
        assert_eq!(study(&sets, &u64::MAX.to_string()).task_count(), None);
    }
}
