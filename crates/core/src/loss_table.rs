//! The loss table's files, typed once: where they are under the results store, and the
//! manifest and summary that the indexer writes and the indexer and query service read back.
//!
//! ```text
//! results/{job_id}/manifest.json                   Manifest: the commit point, naming the versions
//! results/{job_id}/tables/losses-{v}.parquet       the loss table, immutable version {v}
//! results/{job_id}/tables/summary-{v}.json         Summary: per target counts, losses, best rows
//! results/{job_id}/tables/replicates-{v}.parquet   the per-replicate table, when results carry one
//! results/{job_id}/losses.parquet                  the seed's paths: copies of the committed
//! results/{job_id}/summary.json                    versions for readers that open them without
//! results/{job_id}/replicates.parquet              the manifest
//! ```
//!
//! Both JSON files are written as serde_json's pretty form (two-space indent, no trailing
//! newline) with their keys in the order of the structs' fields, so the same values give the
//! same bytes. Readers accept manifests from before immutable versions, whose `files` name the
//! seed's paths or is absent, and default what the earlier hand-written readers defaulted.

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Number, Value};

use crate::job::JobId;
use crate::pyjson::{PyObject, PyValue};

/// The version of the loss table's schema, recorded in every manifest and summary.
pub const SCHEMA_VERSION: u64 = 1;

/// The prefix every job's results live under in the results store.
pub const RESULTS_PREFIX: &str = "results";
/// The directory of a job's immutable table versions, under its results directory.
pub const TABLES_DIR: &str = "tables";
/// The manifest's name under a job's results directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The seed's path of the loss table, under a job's results directory.
pub const LOSSES_FILE: &str = "losses.parquet";
/// The seed's path of the summary, under a job's results directory.
pub const SUMMARY_FILE: &str = "summary.json";
/// The seed's path of the per-replicate table, under a job's results directory.
pub const REPLICATES_FILE: &str = "replicates.parquet";

/// The directory of a job's results in the results store: `results/{job_id}`.
pub fn results_dir(job: &JobId) -> String {
    format!("{RESULTS_PREFIX}/{job}")
}

/// The key of `name` (a file or a relative path such as a manifest's `files` entries) under a
/// job's results directory: `results/{job_id}/{name}`.
pub fn results_file(job: &JobId, name: &str) -> String {
    format!("{}/{name}", results_dir(job))
}

/// The files a table version has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFile {
    /// The loss table.
    Losses,
    /// The summary.
    Summary,
    /// The per-replicate table.
    Replicates,
}

impl TableFile {
    /// The name of version `version` of this file, relative to a job's results directory:
    /// `tables/losses-{version}.parquet`, `tables/summary-{version}.json` or
    /// `tables/replicates-{version}.parquet`.
    pub fn version_name(self, version: &str) -> String {
        let (stem, extension) = match self {
            Self::Losses => ("losses", "parquet"),
            Self::Summary => ("summary", "json"),
            Self::Replicates => ("replicates", "parquet"),
        };
        format!("{TABLES_DIR}/{stem}-{version}.{extension}")
    }
}

/// Why bytes are not a manifest or a summary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a loss-table {file}: {message}")]
pub struct FormatError {
    /// `manifest` or `summary`.
    pub file: &'static str,
    /// What serde_json found wrong, with its line and column.
    pub message: String,
}

impl FormatError {
    fn new(file: &'static str, error: &serde_json::Error) -> Self {
        Self {
            file,
            message: error.to_string(),
        }
    }
}

/// Row counts of a table (the manifest's `counts`); a count missing from a manifest is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RowCounts {
    /// All rows.
    pub total: u64,
    /// Rows with a loss.
    pub ok: u64,
    /// Rows without an aggregation.
    pub missing: u64,
    /// Rows whose aggregation is malformed or has a non-finite loss.
    pub failed: u64,
}

/// `results/{job_id}/manifest.json`: the commit point of a table, written after the versions it
/// names in `files`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The table's schema version ([`SCHEMA_VERSION`]).
    #[serde(default)]
    pub schema_version: u64,
    /// The job.
    pub job_id: String,
    /// The job's bundle ref (`sha256:…`).
    #[serde(default)]
    pub bundle_digest: String,
    /// The hash of every input of the table: a build with the same one writes nothing.
    #[serde(default)]
    pub input_fingerprint: String,
    /// When the table was committed (Python `isoformat()`).
    #[serde(default)]
    pub indexed_at: String,
    /// The table's row counts.
    #[serde(default)]
    pub counts: RowCounts,
    /// The target entrypoints, in spec order.
    pub targets: Vec<String>,
    /// The lowest loss over all targets, if any row is ok.
    pub min_loss: Option<f64>,
    /// The highest loss over all targets, if any row is ok.
    pub max_loss: Option<f64>,
    /// The table's column names, in order.
    pub columns: Vec<String>,
    /// The committed versions (the seed's paths when absent).
    #[serde(default)]
    pub files: ManifestFiles,
    /// The first failed rows and why they failed.
    pub errors: Vec<ManifestError>,
    /// What a reader of many jobs needs of the table without opening its files (absent in
    /// manifests written before it: readers open the summary and the table's footer instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableFacts>,
}

/// The manifest's `table`: the figures a catalog of many jobs keeps, so that knowing a job costs
/// one read (the manifest) instead of four (manifest, summary, the table's footer, its size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableFacts {
    /// The loss table's Arrow schema as its Parquet footer holds it under `ARROW:schema`: the
    /// base64 of an Arrow IPC schema message.
    pub arrow_schema: String,
    /// The earliest and latest `computed_at` of the table's rows (µs since the epoch), if any
    /// row has one.
    pub computed_at: Option<[i64; 2]>,
    /// Per target, in spec order: the summary's counts, loss range and best rows' losses.
    pub targets: Vec<TargetFacts>,
}

/// One target's figures in [`TableFacts`]: its [`TargetSummary`] without the mean and the best
/// rows' parameter values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetFacts {
    /// The target entrypoint.
    pub target: String,
    /// Rows for this target, by status.
    pub counts: RowCounts,
    /// The lowest loss, if any row is ok.
    pub min_loss: Option<f64>,
    /// The highest loss, if any row is ok.
    pub max_loss: Option<f64>,
    /// The best rows' parameter-set ids and losses, ascending (as the summary's `best`).
    pub best: Vec<BestLoss>,
}

/// A best row's parameter-set id and loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestLoss {
    /// The parameter-set id.
    pub param_id: String,
    /// Its loss.
    pub loss: f64,
}

/// The files a manifest commits, relative to the job's results directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFiles {
    /// The loss table's version (`tables/losses-{v}.parquet`).
    #[serde(default = "seed_losses")]
    pub losses: String,
    /// The loss table's size in bytes (0 in manifests from before immutable versions).
    #[serde(default)]
    pub losses_bytes: u64,
    /// The summary's version (`tables/summary-{v}.json`).
    #[serde(default = "seed_summary")]
    pub summary: String,
    /// The per-replicate table's version, when the results carry per-replicate losses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicates: Option<String>,
    /// The per-replicate table's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicates_bytes: Option<u64>,
    /// The per-replicate table's rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicates_rows: Option<u64>,
}

fn seed_losses() -> String {
    LOSSES_FILE.to_owned()
}

fn seed_summary() -> String {
    SUMMARY_FILE.to_owned()
}

impl Default for ManifestFiles {
    /// The seed's paths, as manifests from before immutable versions name them.
    fn default() -> Self {
        Self {
            losses: seed_losses(),
            losses_bytes: 0,
            summary: seed_summary(),
            replicates: None,
            replicates_bytes: None,
            replicates_rows: None,
        }
    }
}

/// A failed row, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestError {
    /// The parameter-set id.
    pub param_id: String,
    /// The target entrypoint.
    pub target: String,
    /// Why the row failed (paths relative to the provenance store).
    pub error: String,
}

impl Manifest {
    /// The manifest as written: pretty JSON, two-space indent.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest serializes: its keys are strings")
    }

    /// Reads a manifest.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, FormatError> {
        serde_json::from_slice(bytes).map_err(|e| FormatError::new("manifest", &e))
    }
}

/// A JSON object's entries in the order they were written or read (serde_json's `Map` sorts its
/// keys): written as a JSON object, read back in the file's order; a repeated key is an error.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderedObject<V>(pub Vec<(String, V)>);

impl<V> Default for OrderedObject<V> {
    /// No entries.
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V: Serialize> Serialize for OrderedObject<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedObject<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Collects the entries of a JSON object in order.
        struct EntriesVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = OrderedObject<V>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(256));
                let mut seen = HashSet::new();
                while let Some((key, value)) = map.next_entry::<String, V>()? {
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
                    }
                    entries.push((key, value));
                }
                Ok(OrderedObject(entries))
            }
        }

        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

/// `summary.json` (and its versions `tables/summary-{v}.json`): per target, its counts, loss
/// range and best rows. The same rows give the same bytes (it holds no time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The job.
    pub job_id: String,
    /// The table's schema version ([`SCHEMA_VERSION`]).
    pub schema_version: u64,
    /// Per target entrypoint, in spec order.
    #[serde(default)]
    pub targets: OrderedObject<TargetSummary>,
}

/// One target's figures in a [`Summary`]. Only ok rows, whose losses are finite, count towards
/// the losses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSummary {
    /// Rows for this target.
    #[serde(default)]
    pub count: u64,
    /// Rows with a loss.
    #[serde(default)]
    pub ok: u64,
    /// Rows without an aggregation.
    #[serde(default)]
    pub missing: u64,
    /// Rows whose aggregation is malformed or has a non-finite loss.
    #[serde(default)]
    pub failed: u64,
    /// The lowest loss, if any row is ok.
    pub min_loss: Option<f64>,
    /// The mean loss of the ok rows, if any.
    pub mean_loss: Option<f64>,
    /// The highest loss, if any row is ok.
    pub max_loss: Option<f64>,
    /// The rows with the lowest losses, ascending (ties by parameter-set id).
    #[serde(default)]
    pub best: Vec<BestRow>,
}

/// One of a target's best rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestRow {
    /// The parameter-set id.
    pub param_id: String,
    /// Its loss.
    pub loss: f64,
    /// Its parameter values, in the spec's order ([`param_values`]).
    pub params: OrderedObject<Value>,
}

impl Summary {
    /// The summary as written: pretty JSON, two-space indent.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a summary serializes: its maps have string keys")
    }

    /// Reads a summary.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, FormatError> {
        serde_json::from_slice(bytes).map_err(|e| FormatError::new("summary", &e))
    }
}

/// A parameter set's values as a [`BestRow`] holds them, in their order. JSON numbers cannot hold
/// what a spec may: an int beyond 64 bits is its decimal text (as the table's utf8 column holds
/// it), and a non-finite float is `null` (studies refuse them).
pub fn param_values(values: &PyObject) -> OrderedObject<Value> {
    OrderedObject(values.iter().map(|(name, value)| (name.to_owned(), json_value(value))).collect())
}

fn json_value(value: &PyValue) -> Value {
    match value {
        PyValue::Null => Value::Null,
        PyValue::Bool(b) => Value::Bool(*b),
        PyValue::Int(i) => Value::Number((*i).into()),
        PyValue::BigInt(text) => text.parse::<u64>().map_or_else(|_| Value::String(text.clone()), |u| Value::Number(u.into())),
        PyValue::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        PyValue::Str(s) => Value::String(s.clone()),
        PyValue::List(items) => Value::Array(items.iter().map(json_value).collect()),
        PyValue::Object(object) => Value::Object(object.iter().map(|(k, v)| (k.to_owned(), json_value(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            schema_version: SCHEMA_VERSION,
            job_id: "job-1".into(),
            bundle_digest: "sha256:0123".into(),
            input_fingerprint: "ab".repeat(32),
            indexed_at: "2026-01-01T00:00:00.000001+00:00".into(),
            counts: RowCounts {
                total: 4,
                ok: 2,
                missing: 1,
                failed: 1,
            },
            targets: vec!["targets.prev:prevalence_target".into(), "targets.deaths/deaths_target".into()],
            min_loss: Some(0.1),
            max_loss: Some(1e-5 + 2.0),
            columns: vec!["job_id".into(), "param_id".into(), "param_beta".into(), "loss".into()],
            files: ManifestFiles {
                losses: TableFile::Losses.version_name("0123456789abcdef"),
                losses_bytes: 1234,
                summary: TableFile::Summary.version_name("0123456789abcdef"),
                replicates: Some(TableFile::Replicates.version_name("0123456789abcdef")),
                replicates_bytes: Some(99),
                replicates_rows: Some(7),
            },
            errors: vec![ManifestError {
                param_id: "p1".into(),
                target: "targets.prev:prevalence_target".into(),
                error: "result.json: invalid JSON \"é\"".into(),
            }],
            table: Some(TableFacts {
                arrow_schema: "/////w==".into(),
                computed_at: Some([1, 2]),
                targets: vec![TargetFacts {
                    target: "targets.prev:prevalence_target".into(),
                    counts: RowCounts {
                        total: 2,
                        ok: 1,
                        missing: 1,
                        failed: 0,
                    },
                    min_loss: Some(0.1),
                    max_loss: Some(0.1),
                    best: vec![BestLoss {
                        param_id: "p1".into(),
                        loss: 0.1,
                    }],
                }],
            }),
        }
    }

    fn summary() -> Summary {
        let mut values = PyObject::new();
        values.insert("gamma", PyValue::Float(0.5));
        values.insert("beta", PyValue::Int(3));
        values.insert("region", "São Paulo".into());
        let target = |ok: u64| TargetSummary {
            count: 3,
            ok,
            missing: 3 - ok,
            failed: 0,
            min_loss: (ok > 0).then_some(0.25),
            mean_loss: (ok > 0).then_some(0.5),
            max_loss: (ok > 0).then_some(0.75),
            best: (0..ok)
                .map(|i| BestRow {
                    param_id: format!("p{i}"),
                    loss: 0.25 * (i + 1) as f64,
                    params: param_values(&values),
                })
                .collect(),
        };
        Summary {
            job_id: "job-1".into(),
            schema_version: SCHEMA_VERSION,
            // Not in key order: the writer's order is kept.
            targets: OrderedObject(vec![("zeta:t".into(), target(2)), ("alpha:t".into(), target(0)), ("mid/t".into(), target(1))]),
        }
    }

    /// The keys of a JSON object, in the file's order.
    fn keys(bytes: &[u8], path: &[&str]) -> Vec<String> {
        let mut value = &crate::pyjson::parse(bytes).unwrap();
        for step in path {
            value = match value {
                PyValue::Object(object) => object.get(step).unwrap(),
                PyValue::List(items) => &items[step.parse::<usize>().unwrap()],
                other => panic!("{other:?} at {step}"),
            };
        }
        value.as_object().unwrap().keys().map(str::to_owned).collect()
    }

    #[test]
    fn a_manifest_round_trips() {
        let manifest = manifest();
        let bytes = manifest.to_json_bytes();
        assert_eq!(Manifest::from_json_bytes(&bytes).unwrap(), manifest);
        assert!(bytes.starts_with(b"{\n  \"schema_version\": 1,\n  \"job_id\": \"job-1\",\n"), "{}", String::from_utf8_lossy(&bytes));
        assert!(!bytes.ends_with(b"\n"));
    }

    #[test]
    fn a_manifest_has_exactly_the_keys_readers_know() {
        let bytes = manifest().to_json_bytes();
        let expected = [
            "schema_version",
            "job_id",
            "bundle_digest",
            "input_fingerprint",
            "indexed_at",
            "counts",
            "targets",
            "min_loss",
            "max_loss",
            "columns",
            "files",
            "errors",
            "table",
        ];
        assert_eq!(keys(&bytes, &[]), expected);
        assert_eq!(keys(&bytes, &["table"]), ["arrow_schema", "computed_at", "targets"]);
        assert_eq!(keys(&bytes, &["table", "targets", "0"]), ["target", "counts", "min_loss", "max_loss", "best"]);
        assert_eq!(keys(&bytes, &["counts"]), ["total", "ok", "missing", "failed"]);
        assert_eq!(keys(&bytes, &["files"]), ["losses", "losses_bytes", "summary", "replicates", "replicates_bytes", "replicates_rows"]);
        assert_eq!(keys(&bytes, &["errors", "0"]), ["param_id", "target", "error"]);
        assert_eq!(
            manifest().files.losses,
            "tables/losses-0123456789abcdef.parquet",
            "versions are named as the indexer has always named them"
        );

        // Without per-replicate losses, no `replicates` keys at all.
        let mut without = manifest();
        without.files.replicates = None;
        without.files.replicates_bytes = None;
        without.files.replicates_rows = None;
        without.min_loss = None;
        without.table = None;
        let bytes = without.to_json_bytes();
        assert_eq!(keys(&bytes, &["files"]), ["losses", "losses_bytes", "summary"]);
        assert!(!keys(&bytes, &[]).contains(&"table".to_owned()), "manifests without facts read as before");
        assert!(String::from_utf8(bytes).unwrap().contains("\"min_loss\": null"), "a missing loss is written as null");
    }

    #[test]
    fn manifests_from_before_immutable_versions_read_with_the_seed_paths() {
        // No `files` at all, and `files` naming the seed's paths (the first indexer's manifests).
        let old = br#"{"schema_version": 1, "job_id": "job-1", "bundle_digest": "sha256:0123",
            "input_fingerprint": "ff", "indexed_at": "2026-01-01T00:00:00+00:00",
            "counts": {"total": 2, "ok": 2, "missing": 0, "failed": 0},
            "targets": ["t:a"], "min_loss": 0.5, "max_loss": 1.5, "columns": ["job_id"], "errors": []}"#;
        let manifest = Manifest::from_json_bytes(old).unwrap();
        assert_eq!((manifest.files.losses.as_str(), manifest.files.summary.as_str()), (LOSSES_FILE, SUMMARY_FILE));
        assert_eq!(manifest.files.replicates, None);
        assert_eq!(manifest.counts.ok, 2);

        let seeds = br#"{"job_id": "job-1", "targets": [], "min_loss": null, "max_loss": null, "columns": [], "errors": [],
            "counts": {"total": 0}, "files": {"losses": "losses.parquet", "summary": "summary.json"}}"#;
        let manifest = Manifest::from_json_bytes(seeds).unwrap();
        assert_eq!(manifest.files, ManifestFiles::default());
        assert_eq!((manifest.counts, manifest.input_fingerprint.as_str()), (RowCounts::default(), ""));

        assert_eq!(Manifest::from_json_bytes(b"[]").unwrap_err().file, "manifest");
    }

    #[test]
    fn a_summary_keeps_the_writers_target_and_parameter_order() {
        let summary = summary();
        let bytes = summary.to_json_bytes();
        assert_eq!(keys(&bytes, &["targets"]), ["zeta:t", "alpha:t", "mid/t"]);
        assert_eq!(keys(&bytes, &["targets", "zeta:t", "best", "0", "params"]), ["gamma", "beta", "region"]);
        let read = Summary::from_json_bytes(&bytes).unwrap();
        assert_eq!(read, summary);
        assert_eq!(read.to_json_bytes(), bytes, "the same values give the same bytes");
    }

    #[test]
    fn a_summary_has_exactly_the_keys_readers_know() {
        let bytes = summary().to_json_bytes();
        assert_eq!(keys(&bytes, &[]), ["job_id", "schema_version", "targets"]);
        assert_eq!(
            keys(&bytes, &["targets", "zeta:t"]),
            ["count", "ok", "missing", "failed", "min_loss", "mean_loss", "max_loss", "best"]
        );
        assert_eq!(keys(&bytes, &["targets", "zeta:t", "best", "0"]), ["param_id", "loss", "params"]);
    }

    #[test]
    fn a_summary_with_a_repeated_target_is_refused() {
        let twice = br#"{"job_id": "j", "schema_version": 1, "targets": {"t": {"best": []}, "t": {"best": []}}}"#;
        let error = Summary::from_json_bytes(twice).unwrap_err();
        assert!(error.message.contains("duplicate key \"t\""), "{error}");
    }

    #[test]
    fn parameter_values_json_cannot_hold_become_text_or_null() {
        let mut values = PyObject::new();
        values.insert("big", PyValue::BigInt("123456789012345678901234567890".into()));
        values.insert("u64", PyValue::BigInt(u64::MAX.to_string()));
        values.insert("nan", PyValue::Float(f64::NAN));
        values.insert("x", PyValue::Float(1.5));
        let params = param_values(&values);
        let bytes = serde_json::to_vec(&params).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"big":"123456789012345678901234567890","u64":18446744073709551615,"nan":null,"x":1.5}"#
        );
    }

    #[test]
    fn results_paths() {
        let job = JobId::new("job-1").unwrap();
        assert_eq!(results_dir(&job), "results/job-1");
        assert_eq!(results_file(&job, MANIFEST_FILE), "results/job-1/manifest.json");
        assert_eq!(results_file(&job, &TableFile::Summary.version_name("00ff")), "results/job-1/tables/summary-00ff.json");
        assert_eq!(TableFile::Replicates.version_name("00ff"), "tables/replicates-00ff.parquet");
    }
}
