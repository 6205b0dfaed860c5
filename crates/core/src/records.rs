//! Simulation and aggregation records in the upstream provenance layout (UPSTREAM-FORMAT.md §4).
//!
//! A record is a directory. `metadata.json` is written first, then the artifacts, then
//! `result.json` last: `result.json` is the commit marker, so a writer killed part-way leaves a
//! miss, never a corrupt hit. Each file is one `put`, which object_store makes atomic per object
//! (the local backend stages to a temporary file and renames it into place). The JSON bytes are
//! upstream's (`json.dumps(indent=2)`, keys in upstream order).
//!
//! Readers return typed errors that name the offending path; nothing here panics on bad input.

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::ids;
use crate::paths::{self, ProvenanceSchema};
use crate::pyjson::{self, PyObject, PyValue};

/// The name of the commit-marker file of every record.
pub const RESULT_FILE: &str = "result.json";
/// The name of the inputs file of every record.
pub const METADATA_FILE: &str = "metadata.json";

/// Why a record cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file does not exist.
    #[error("{path}: not found")]
    NotFound {
        /// The file.
        path: String,
    },
    /// The file exists but does not have the upstream form.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store failed.
    #[error("{path}: {source}")]
    Store {
        /// The file.
        path: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// A path built from the record's fields is not a valid store path.
    #[error("invalid record path {path:?}: {reason}")]
    InvalidPath {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
}

impl RecordError {
    fn malformed(path: &Path, reason: impl Into<String>) -> Self {
        Self::Malformed {
            path: path.to_string(),
            reason: reason.into(),
        }
    }
}

fn dir_path(relative: &str) -> Result<Path, RecordError> {
    paths::to_store_path(relative).map_err(|e| RecordError::InvalidPath {
        path: relative.to_owned(),
        reason: e.to_string(),
    })
}

fn file_path(dir: &Path, name: &str) -> Path {
    dir.clone().join(name)
}

async fn put(store: &dyn ObjectStore, path: &Path, bytes: Bytes) -> Result<(), RecordError> {
    store
        .put(path, PutPayload::from_bytes(bytes))
        .await
        .map(|_| ())
        .map_err(|source| RecordError::Store {
            path: path.to_string(),
            source,
        })
}

/// Reads a whole file, mapping "absent" to [`RecordError::NotFound`].
pub async fn read_file(store: &dyn ObjectStore, path: &Path) -> Result<Bytes, RecordError> {
    let result = match store.get(path).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(RecordError::NotFound { path: path.to_string() });
        }
        // A file the store refuses to read (a link out of it, a FIFO): there, but not a record.
        Err(object_store::Error::PermissionDenied { source, .. }) => {
            return Err(RecordError::malformed(path, format!("not readable: {source}")));
        }
        Err(source) => {
            return Err(RecordError::Store {
                path: path.to_string(),
                source,
            });
        }
    };
    result.bytes().await.map_err(|source| RecordError::Store {
        path: path.to_string(),
        source,
    })
}

/// What reading a record file of bounded size gave.
#[derive(Debug, Clone, PartialEq)]
pub enum BoundedRead {
    /// The file does not exist.
    Absent,
    /// The store refuses to read it (a link out of a confined store, a FIFO), and why.
    Refused(String),
    /// It is larger than allowed: its size, its body not read.
    TooLarge(u64),
    /// Its bytes.
    Bytes(Bytes),
}

/// Reads `path` unless it is over `max_bytes`, which is refused before its body is read. Records
/// come from runners: a huge one must not be held in memory.
pub async fn read_bounded(store: &dyn ObjectStore, path: &Path, max_bytes: u64) -> Result<BoundedRead, object_store::Error> {
    let result = match store.get(path).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => return Ok(BoundedRead::Absent),
        Err(object_store::Error::PermissionDenied { source, .. }) => return Ok(BoundedRead::Refused(source.to_string())),
        Err(error) => return Err(error),
    };
    if result.meta.size > max_bytes {
        return Ok(BoundedRead::TooLarge(result.meta.size));
    }
    Ok(BoundedRead::Bytes(result.bytes().await?))
}

/// Reads and parses a JSON object file.
pub async fn read_json_object(store: &dyn ObjectStore, path: &Path) -> Result<PyObject, RecordError> {
    let bytes = read_file(store, path).await?;
    parse_json_object(path, &bytes)
}

/// Parses bytes read from `path` as a JSON object.
pub fn parse_json_object(path: &Path, bytes: &[u8]) -> Result<PyObject, RecordError> {
    match pyjson::parse(bytes) {
        Ok(PyValue::Object(object)) => Ok(object),
        Ok(other) => Err(RecordError::malformed(path, format!("expected a JSON object, found {}", other.type_name()))),
        Err(e) => Err(RecordError::malformed(path, format!("invalid JSON: {e}"))),
    }
}

fn field<'a>(path: &Path, object: &'a PyObject, key: &str) -> Result<&'a PyValue, RecordError> {
    object
        .get(key)
        .ok_or_else(|| RecordError::malformed(path, format!("missing field {key:?}")))
}

fn str_field(path: &Path, object: &PyObject, key: &str) -> Result<String, RecordError> {
    field(path, object, key)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| RecordError::malformed(path, format!("field {key:?} must be a string")))
}

fn int_field(path: &Path, object: &PyObject, key: &str) -> Result<i64, RecordError> {
    field(path, object, key)?
        .as_i64()
        .ok_or_else(|| RecordError::malformed(path, format!("field {key:?} must be an int")))
}

// ---------------------------------------------------------------------------------------------
// Simulations
// ---------------------------------------------------------------------------------------------

/// The inputs of one simulation task, as recorded in its `metadata.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimInputs {
    /// The bundle reference, verbatim.
    pub bundle_ref: String,
    /// The entrypoint, e.g. `models.seir.SEIR/baseline`.
    pub entrypoint: String,
    /// The parameters in their own insertion order.
    pub params: PyObject,
    /// The seed.
    pub seed: u64,
    /// The requested outputs (stored sorted), or `None`.
    pub outputs: Option<Vec<String>>,
    /// The parameter-set id.
    pub param_id: String,
}

impl From<&crate::study::SimTaskSpec> for SimInputs {
    /// The inputs of the simulation a job's task runs.
    fn from(task: &crate::study::SimTaskSpec) -> Self {
        Self {
            bundle_ref: task.bundle_ref.clone(),
            entrypoint: task.entrypoint.clone(),
            params: task.values.clone(),
            seed: task.seed,
            outputs: task.outputs.clone(),
            param_id: task.param_id.clone(),
        }
    }
}

/// What a failed simulation reports (upstream `ErrorInfo`).
#[derive(Debug, Clone, PartialEq)]
pub struct SimError {
    /// Exception type name.
    pub error_type: String,
    /// Message.
    pub message: String,
    /// Whether a retry may succeed.
    pub retryable: bool,
}

/// One output of a simulation.
#[derive(Debug, Clone)]
pub struct SimOutput {
    /// The output name; `metadata` is the model's JSON description of the run.
    pub name: String,
    /// The inline bytes: JSON for `metadata`, an Arrow IPC file for the others.
    pub bytes: Bytes,
    /// An optional Parquet copy, written as `artifact_{name}.parquet` (upstream re-encodes each
    /// Arrow output with zstd when it can). Its size is recorded in `result.json`.
    pub parquet: Option<Bytes>,
}

impl SimOutput {
    /// An output without a Parquet copy.
    pub fn new(name: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            bytes: bytes.into(),
            parquet: None,
        }
    }
}

/// A simulation result to write.
#[derive(Debug, Clone)]
pub struct SimRecord {
    /// The task inputs.
    pub inputs: SimInputs,
    /// The task id (see [`ids::runner_task_id`]).
    pub task_id: String,
    /// The outputs, in the order produced. Empty outputs are skipped, as upstream skips them.
    pub outputs: Vec<SimOutput>,
    /// The error, for a failed simulation.
    pub error: Option<SimError>,
    /// The error details bytes (JSON despite the `.arrow` name upstream gives the file).
    pub error_details: Option<Bytes>,
    /// The write time, in upstream's ISO form.
    pub timestamp: String,
}

impl SimRecord {
    /// The record's directory under `schema`.
    pub fn dir(&self, schema: ProvenanceSchema) -> String {
        paths::sim_dir(schema, &self.inputs.bundle_ref, &self.inputs.param_id, self.inputs.seed)
    }

    /// The `metadata.json` object.
    pub fn metadata_json(&self) -> PyObject {
        let inputs = &self.inputs;
        let mut metadata = PyObject::new();
        metadata.insert("bundle_ref", inputs.bundle_ref.as_str().into());
        metadata.insert("entrypoint", inputs.entrypoint.as_str().into());
        metadata.insert("params", PyValue::Object(inputs.params.clone()));
        metadata.insert("seed", inputs.seed.into());
        metadata.insert(
            "outputs",
            match &inputs.outputs {
                Some(outputs) => {
                    let mut sorted = outputs.clone();
                    sorted.sort();
                    PyValue::List(sorted.into_iter().map(PyValue::Str).collect())
                }
                None => PyValue::Null,
            },
        );
        metadata.insert("param_id", inputs.param_id.as_str().into());
        metadata.insert("timestamp", self.timestamp.as_str().into());
        metadata
    }

    fn written_outputs(&self) -> impl Iterator<Item = &SimOutput> {
        self.outputs.iter().filter(|output| !output.bytes.is_empty())
    }

    /// The files of the record other than `metadata.json` and `result.json`: file name → bytes.
    pub fn artifact_files(&self) -> Vec<(String, Bytes)> {
        let mut files = Vec::new();
        if self.error.is_some()
            && let Some(details) = self.error_details.as_ref().filter(|d| !d.is_empty())
        {
            files.push(("error_details.arrow".to_owned(), details.clone()));
        }
        for output in self.written_outputs() {
            files.push((artifact_file_name(&output.name), output.bytes.clone()));
            if let Some(parquet) = output.parquet.as_ref().filter(|_| output.name != "metadata") {
                files.push((format!("artifact_{}.parquet", output.name), parquet.clone()));
            }
        }
        files
    }

    /// The `result.json` object.
    pub fn result_json(&self) -> PyObject {
        let mut outputs = PyObject::new();
        for output in self.written_outputs() {
            let size = output.bytes.len() as u64;
            let mut info = PyObject::new();
            info.insert("size", size.into());
            info.insert("checksum", ids::artifact_checksum(&output.bytes).into());
            if output.name == "metadata" {
                info.insert("json_size", size.into());
            } else if let Some(parquet) = &output.parquet {
                info.insert("arrow_size", size.into());
                info.insert("parquet_size", (parquet.len() as u64).into());
            }
            outputs.insert(output.name.as_str(), PyValue::Object(info));
        }
        let mut result = PyObject::new();
        result.insert("task_id", self.task_id.as_str().into());
        result.insert("outputs", PyValue::Object(outputs));
        if let Some(error) = &self.error {
            let mut info = PyObject::new();
            info.insert("error_type", error.error_type.as_str().into());
            info.insert("message", error.message.as_str().into());
            info.insert("retryable", error.retryable.into());
            result.insert("error", PyValue::Object(info));
            if let Some(details) = &self.error_details {
                let mut info = PyObject::new();
                info.insert("size", (details.len() as u64).into());
                info.insert("checksum", ids::artifact_checksum(details).into());
                result.insert("error_details", PyValue::Object(info));
            }
        }
        result
    }
}

/// The file an output is stored in: `artifact_metadata.json` for the JSON `metadata` output,
/// `artifact_{name}.arrow` for the others.
pub fn artifact_file_name(output: &str) -> String {
    if output == "metadata" {
        "artifact_metadata.json".to_owned()
    } else {
        format!("artifact_{output}.arrow")
    }
}

fn json_bytes(object: PyObject) -> Bytes {
    Bytes::from(pyjson::to_indent2(&PyValue::Object(object)))
}

/// Writes a simulation record: `metadata.json`, the artifacts, then `result.json`. Returns the
/// record's directory. A second write of the same inputs overwrites, as upstream does.
pub async fn write_sim(store: &dyn ObjectStore, schema: ProvenanceSchema, record: &SimRecord) -> Result<Path, RecordError> {
    let dir = dir_path(&record.dir(schema))?;
    put(store, &file_path(&dir, METADATA_FILE), json_bytes(record.metadata_json())).await?;
    for (name, bytes) in record.artifact_files() {
        put(store, &file_path(&dir, &name), bytes).await?;
    }
    put(store, &file_path(&dir, RESULT_FILE), json_bytes(record.result_json())).await?;
    Ok(dir)
}

/// A stored simulation result as read back (artifacts are not loaded).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSim {
    /// The record's directory.
    pub dir: Path,
    /// The inputs from `metadata.json`.
    pub inputs: SimInputs,
    /// When it was written.
    pub timestamp: String,
    /// The task id from `result.json`.
    pub task_id: String,
    /// The output names listed in `result.json`, in their order.
    pub output_names: Vec<String>,
    /// The error, if the simulation failed.
    pub error: Option<SimError>,
}

fn parse_sim_inputs(path: &Path, metadata: &PyObject) -> Result<(SimInputs, String), RecordError> {
    let params = field(path, metadata, "params")?
        .as_object()
        .cloned()
        .ok_or_else(|| RecordError::malformed(path, "field \"params\" must be an object"))?;
    let seed = field(path, metadata, "seed")?
        .as_u64()
        .ok_or_else(|| RecordError::malformed(path, "field \"seed\" must be an int in 0..2^64"))?;
    let outputs = match metadata.get("outputs") {
        None | Some(PyValue::Null) => None,
        Some(PyValue::List(items)) => Some(
            items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| RecordError::malformed(path, "field \"outputs\" must list strings"))?,
        ),
        Some(_) => return Err(RecordError::malformed(path, "field \"outputs\" must be a list or null")),
    };
    let inputs = SimInputs {
        bundle_ref: str_field(path, metadata, "bundle_ref")?,
        entrypoint: str_field(path, metadata, "entrypoint")?,
        params,
        seed,
        outputs,
        param_id: str_field(path, metadata, "param_id")?,
    };
    Ok((inputs, str_field(path, metadata, "timestamp")?))
}

/// Reads a simulation record's `metadata.json` and `result.json`.
pub async fn read_sim(store: &dyn ObjectStore, dir: &Path) -> Result<StoredSim, RecordError> {
    let metadata_path = file_path(dir, METADATA_FILE);
    let metadata = read_json_object(store, &metadata_path).await?;
    let (inputs, timestamp) = parse_sim_inputs(&metadata_path, &metadata)?;
    let result_path = file_path(dir, RESULT_FILE);
    let result = read_json_object(store, &result_path).await?;
    let task_id = str_field(&result_path, &result, "task_id")?;
    let output_names = field(&result_path, &result, "outputs")?
        .as_object()
        .ok_or_else(|| RecordError::malformed(&result_path, "field \"outputs\" must be an object"))?
        .keys()
        .map(str::to_owned)
        .collect();
    let error = match result.get("error") {
        None | Some(PyValue::Null) => None,
        Some(PyValue::Object(error)) => Some(SimError {
            error_type: str_field(&result_path, error, "error_type")?,
            message: str_field(&result_path, error, "message")?,
            retryable: error.get("retryable").and_then(PyValue::as_bool).unwrap_or(false),
        }),
        Some(_) => return Err(RecordError::malformed(&result_path, "field \"error\" must be an object")),
    };
    Ok(StoredSim {
        dir: dir.clone(),
        inputs,
        timestamp,
        task_id,
        output_names,
        error,
    })
}

/// Reads one output of a simulation record: `artifact_{name}.json`, `.arrow`, then `.parquet`, as
/// upstream's reader tries them.
pub async fn read_sim_artifact(store: &dyn ObjectStore, dir: &Path, output: &str) -> Result<Bytes, RecordError> {
    for extension in ["json", "arrow", "parquet"] {
        match read_file(store, &file_path(dir, &format!("artifact_{output}.{extension}"))).await {
            Err(RecordError::NotFound { .. }) => continue,
            other => return other,
        }
    }
    Err(RecordError::NotFound {
        path: file_path(dir, &format!("artifact_{output}.*")).to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Aggregations
// ---------------------------------------------------------------------------------------------

/// An aggregation result to write.
#[derive(Debug, Clone)]
pub struct AggRecord {
    /// The bundle reference, verbatim.
    pub bundle_ref: String,
    /// The target entrypoint (may contain `:` or `/`).
    pub target_entrypoint: String,
    /// The task ids of the aggregated simulations, in input order.
    pub input_task_ids: Vec<String>,
    /// The loss (upstream requires it finite).
    pub loss: f64,
    /// Diagnostics, written as given.
    pub diagnostics: PyObject,
    /// Number of replicates.
    pub n_replicates: i64,
    /// The write time, in upstream's ISO form.
    pub timestamp: String,
}

impl AggRecord {
    /// The store's aggregation id (see [`ids::aggregation_id`]).
    pub fn aggregation_id(&self) -> String {
        ids::aggregation_id(&self.target_entrypoint, self.input_task_ids.iter().map(String::as_str))
    }

    /// The record's directory under `schema`.
    pub fn dir(&self, schema: ProvenanceSchema) -> String {
        paths::agg_dir(schema, &self.bundle_ref, &self.target_entrypoint, &self.aggregation_id())
    }

    /// The `metadata.json` object. Its `param_id` is, as upstream writes it, the first 16
    /// characters of the first input's *task id*: the aggregation task carries no param_id.
    pub fn metadata_json(&self) -> PyObject {
        let first = self.input_task_ids.first().map(String::as_str).unwrap_or_default();
        let mut metadata = PyObject::new();
        metadata.insert("bundle_ref", self.bundle_ref.as_str().into());
        metadata.insert("target_entrypoint", self.target_entrypoint.as_str().into());
        metadata.insert("n_sim_returns", (self.input_task_ids.len() as u64).into());
        metadata.insert("param_id", ids::py_prefix(first, 16).into());
        metadata.insert("timestamp", self.timestamp.as_str().into());
        metadata
    }

    /// The `result.json` object.
    pub fn result_json(&self) -> PyObject {
        let inputs = self
            .input_task_ids
            .iter()
            .map(|task_id| {
                let mut input = PyObject::new();
                input.insert("type", "sim".into());
                input.insert("task_id", task_id.as_str().into());
                PyValue::Object(input)
            })
            .collect();
        let mut result = PyObject::new();
        result.insert("aggregation_id", self.aggregation_id().into());
        result.insert("loss", self.loss.into());
        result.insert("diagnostics", PyValue::Object(self.diagnostics.clone()));
        result.insert("n_replicates", self.n_replicates.into());
        result.insert("outputs", PyValue::Object(PyObject::new()));
        result.insert("inputs", PyValue::List(inputs));
        result
    }
}

/// Writes an aggregation record: `metadata.json`, then `result.json`. Returns its directory.
pub async fn write_agg(store: &dyn ObjectStore, schema: ProvenanceSchema, record: &AggRecord) -> Result<Path, RecordError> {
    let dir = dir_path(&record.dir(schema))?;
    put(store, &file_path(&dir, METADATA_FILE), json_bytes(record.metadata_json())).await?;
    put(store, &file_path(&dir, RESULT_FILE), json_bytes(record.result_json())).await?;
    Ok(dir)
}

/// An aggregation's `result.json` as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct AggResult {
    /// The aggregation id.
    pub aggregation_id: String,
    /// The loss, which may be non-finite in a damaged file: callers decide what that means.
    pub loss: f64,
    /// Diagnostics.
    pub diagnostics: PyObject,
    /// Number of replicates.
    pub n_replicates: i64,
    /// Input task ids, in input order (empty in records older than the `inputs` field).
    pub input_task_ids: Vec<String>,
    /// `diagnostics.per_replicate_losses`, the loss of each replicate in the order of the
    /// aggregated simulations, when it is a list of numbers (NaN and the infinities included);
    /// `None` when absent or anything else (it is upstream's convention, not part of the
    /// record's contract, so a malformed one leaves the rest of the record usable).
    pub per_replicate_losses: Option<Vec<f64>>,
}

/// `diagnostics.per_replicate_losses` when it is a list of numbers.
fn per_replicate_losses(diagnostics: &PyObject) -> Option<Vec<f64>> {
    diagnostics
        .get("per_replicate_losses")?
        .as_list()?
        .iter()
        .map(PyValue::as_f64)
        .collect()
}

/// Parses an aggregation `result.json` read from `path`.
pub fn parse_agg_result(path: &Path, bytes: &[u8]) -> Result<AggResult, RecordError> {
    let result = parse_json_object(path, bytes)?;
    let loss = match field(path, &result, "loss")? {
        PyValue::Float(f) => *f,
        PyValue::Int(i) => *i as f64,
        other => {
            return Err(RecordError::malformed(path, format!("field \"loss\" must be a number, found {}", other.type_name())));
        }
    };
    let diagnostics = match result.get("diagnostics") {
        None | Some(PyValue::Null) => PyObject::new(),
        Some(PyValue::Object(d)) => d.clone(),
        Some(_) => return Err(RecordError::malformed(path, "field \"diagnostics\" must be an object")),
    };
    let input_task_ids = match result.get("inputs") {
        None | Some(PyValue::Null) => Vec::new(),
        Some(PyValue::List(items)) => items
            .iter()
            .map(|item| item.as_object().and_then(|o| o.get("task_id")).and_then(PyValue::as_str).map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| RecordError::malformed(path, "field \"inputs\" must list {type, task_id} objects"))?,
        Some(_) => return Err(RecordError::malformed(path, "field \"inputs\" must be a list")),
    };
    Ok(AggResult {
        aggregation_id: str_field(path, &result, "aggregation_id")?,
        loss,
        per_replicate_losses: per_replicate_losses(&diagnostics),
        diagnostics,
        n_replicates: int_field(path, &result, "n_replicates")?,
        input_task_ids,
    })
}

/// Reads an aggregation's `result.json`.
pub async fn read_agg_result(store: &dyn ObjectStore, dir: &Path) -> Result<AggResult, RecordError> {
    let path = file_path(dir, RESULT_FILE);
    let bytes = read_file(store, &path).await?;
    parse_agg_result(&path, &bytes)
}

/// An aggregation's `metadata.json` as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct AggMetadata {
    /// The bundle reference.
    pub bundle_ref: String,
    /// The target entrypoint.
    pub target_entrypoint: String,
    /// Number of aggregated simulations.
    pub n_sim_returns: i64,
    /// Upstream's stand-in param_id (a task-id prefix; see [`AggRecord::metadata_json`]).
    pub param_id_stand_in: String,
    /// When it was written.
    pub timestamp: String,
}

/// Parses an aggregation `metadata.json` read from `path`.
pub fn parse_agg_metadata(path: &Path, bytes: &[u8]) -> Result<AggMetadata, RecordError> {
    let metadata = parse_json_object(path, bytes)?;
    Ok(AggMetadata {
        bundle_ref: str_field(path, &metadata, "bundle_ref")?,
        target_entrypoint: str_field(path, &metadata, "target_entrypoint")?,
        n_sim_returns: int_field(path, &metadata, "n_sim_returns")?,
        param_id_stand_in: str_field(path, &metadata, "param_id")?,
        timestamp: str_field(path, &metadata, "timestamp")?,
    })
}

/// Reads an aggregation's `metadata.json`.
pub async fn read_agg_metadata(store: &dyn ObjectStore, dir: &Path) -> Result<AggMetadata, RecordError> {
    let path = file_path(dir, METADATA_FILE);
    let bytes = read_file(store, &path).await?;
    parse_agg_metadata(&path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn losses_of(diagnostics: &str) -> Option<Vec<f64>> {
        let json = format!(r#"{{"aggregation_id": "a", "loss": 1.5, "n_replicates": 3, "diagnostics": {diagnostics}}}"#);
        parse_agg_result(&Path::from("agg/result.json"), json.as_bytes()).unwrap().per_replicate_losses
    }

    #[test]
    fn per_replicate_losses_are_read_when_a_list_of_numbers_and_ignored_otherwise() {
        assert_eq!(losses_of(r#"{"per_replicate_losses": [1, 2.5, -0.0]}"#), Some(vec![1.0, 2.5, -0.0]));
        let nan = losses_of(r#"{"per_replicate_losses": [NaN, Infinity]}"#).unwrap();
        assert!(nan[0].is_nan() && nan[1] == f64::INFINITY);
        assert_eq!(losses_of(r#"{"per_replicate_losses": []}"#), Some(vec![]));
        for ignored in [r#"{}"#, r#"{"per_replicate_losses": null}"#, r#"{"per_replicate_losses": "1,2"}"#, r#"{"per_replicate_losses": [1, "2"]}"#, r#"{"per_replicate_losses": [1, null]}"#] {
            assert_eq!(losses_of(ignored), None, "{ignored}");
        }
        // The rest of the record is read as before.
        let json = br#"{"aggregation_id": "a", "loss": 1.5, "n_replicates": 3, "diagnostics": {"per_replicate_losses": {"x": 1}}}"#;
        let parsed = parse_agg_result(&Path::from("agg/result.json"), json).unwrap();
        assert_eq!((parsed.loss, parsed.n_replicates), (1.5, 3));
    }
}
