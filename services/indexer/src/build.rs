//! Building a job's table: read each aggregation's `result.json` and `metadata.json` with
//! bounded concurrency, in table order; stream the rows into Parquet at a staging key while
//! hashing every input into a fingerprint; then either discard the staging file (the inputs are
//! those of the current table) or move it to `results/{job_id}/losses.parquet` and write
//! `summary.json` and, last, `manifest.json`. A crash at any point leaves the previous table,
//! summary and manifest as they were; the same inputs give the same table and summary bytes.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use modelops_core::job::JobId;
use modelops_core::pyjson::{self, PyObject, PyValue};
use modelops_core::records::{self, RecordError};
use modelops_core::study::{JobSpec, SimJobSpec};
use modelops_core::time::{now_iso, parse_iso};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::columns::param_columns;
use crate::error::IndexError;
use crate::locate::AggLocation;
use crate::table::{self, Row, RowStatus, SCHEMA_VERSION};

/// How an index run reads and writes.
#[derive(Debug, Clone, Copy)]
pub struct IndexOptions {
    /// Aggregations read at once.
    pub concurrency: usize,
    /// Rows per record batch handed to the writer.
    pub batch_rows: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self {
            concurrency: 64,
            batch_rows: 8192,
            row_group_rows: 128 * 1024,
        }
    }
}

/// Row counts of a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

/// What an index run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexOutcome {
    /// The table's row counts.
    pub counts: RowCounts,
    /// The input fingerprint.
    pub fingerprint: String,
    /// True when the inputs were unchanged and nothing was written.
    pub unchanged: bool,
    /// `results/{job_id}/`.
    pub results_path: String,
}

/// How many failed rows the manifest details.
const MAX_ERRORS_LISTED: usize = 1000;
/// Best rows per target in the summary.
const BEST_PER_TARGET: usize = 10;

/// The results directory of a job.
pub fn results_dir(job: &JobId) -> String {
    format!("results/{job}")
}

/// Per-target statistics for the summary.
#[derive(Debug, Default)]
struct TargetStats {
    counts: RowCounts,
    min: Option<f64>,
    max: Option<f64>,
    sum: f64,
    best: Vec<(f64, String, PyObject)>,
}

impl TargetStats {
    fn add(&mut self, row: &Row) {
        self.counts.total += 1;
        match row.status {
            RowStatus::Ok => self.counts.ok += 1,
            RowStatus::Missing => self.counts.missing += 1,
            RowStatus::Failed => self.counts.failed += 1,
        }
        let Some(loss) = row.loss.filter(|_| row.status == RowStatus::Ok) else { return };
        self.min = Some(self.min.map_or(loss, |m| m.min(loss)));
        self.max = Some(self.max.map_or(loss, |m| m.max(loss)));
        self.sum += loss;
        let entry = (loss, row.param_id.clone(), row.values.clone());
        let position = self.best.partition_point(|(l, p, _)| (*l, p.as_str()) <= (loss, row.param_id.as_str()));
        if position < BEST_PER_TARGET {
            self.best.insert(position, entry);
            self.best.truncate(BEST_PER_TARGET);
        }
    }

    fn to_object(&self) -> PyObject {
        let mut object = PyObject::new();
        object.insert("count", self.counts.total.into());
        object.insert("ok", self.counts.ok.into());
        object.insert("missing", self.counts.missing.into());
        object.insert("failed", self.counts.failed.into());
        object.insert("min_loss", self.min.into());
        let mean = (self.counts.ok > 0).then(|| self.sum / self.counts.ok as f64);
        object.insert("mean_loss", mean.into());
        object.insert("max_loss", self.max.into());
        let best = self
            .best
            .iter()
            .map(|(loss, param_id, values)| {
                let mut entry = PyObject::new();
                entry.insert("param_id", param_id.as_str().into());
                entry.insert("loss", (*loss).into());
                entry.insert("params", PyValue::Object(values.clone()));
                PyValue::Object(entry)
            })
            .collect();
        object.insert("best", PyValue::List(best));
        object
    }
}

async fn read_optional(store: &dyn ObjectStore, path: &Path) -> Result<Option<Bytes>, IndexError> {
    match records::read_file(store, path).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(RecordError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// One located aggregation, read: its row and the bytes that went into it.
async fn read_row(provenance: &dyn ObjectStore, job: &SimJobSpec, location: &AggLocation) -> Result<(Row, Option<String>, Vec<Bytes>), IndexError> {
    let groups = job.task_groups();
    let group = &groups[location.group];
    let mut row = Row {
        param_id: group.param_id.to_owned(),
        values: group.values.clone(),
        target: location.target.clone(),
        loss: None,
        n_replicates: None,
        computed_at: None,
        cache_hit: location.cache_hit,
        status: RowStatus::Missing,
    };
    let Some(dir) = &location.path else { return Ok((row, None, Vec::new())) };
    let dir = Path::parse(dir).map_err(|e| IndexError::Invalid(format!("aggregation path {dir:?}: {e}")))?;
    let result_path = dir.clone().join(records::RESULT_FILE);
    let metadata_path = dir.clone().join(records::METADATA_FILE);
    let (result, metadata) = (read_optional(provenance, &result_path).await?, read_optional(provenance, &metadata_path).await?);
    let inputs: Vec<Bytes> = [result.clone(), metadata.clone()].into_iter().flatten().collect();
    let Some(result) = result else { return Ok((row, None, inputs)) };
    row.status = RowStatus::Failed;
    if let Some(metadata) = &metadata {
        match records::parse_agg_metadata(&metadata_path, metadata) {
            Ok(m) => row.computed_at = parse_iso(&m.timestamp).map(|t| t.timestamp_micros()),
            Err(e) => return Ok((row, Some(e.to_string()), inputs)),
        }
    }
    match records::parse_agg_result(&result_path, &result) {
        Ok(parsed) if parsed.loss.is_finite() => {
            row.status = RowStatus::Ok;
            row.loss = Some(parsed.loss);
            row.n_replicates = Some(parsed.n_replicates);
            Ok((row, None, inputs))
        }
        Ok(parsed) => Ok((row, Some(format!("{result_path}: loss is {}", parsed.loss)), inputs)),
        Err(e) => Ok((row, Some(e.to_string()), inputs)),
    }
}

async fn read_located<'a>(
    provenance: &dyn ObjectStore,
    job: &SimJobSpec,
    location: &'a AggLocation,
) -> (&'a AggLocation, Result<(Row, Option<String>, Vec<Bytes>), IndexError>) {
    (location, read_row(provenance, job, location).await)
}

/// Builds the table of `job` from the aggregations at `locations` (in table order), reading
/// from `provenance` and writing under `results/{job_id}/` in `results`. `progress(done, total)`
/// follows the rows.
pub async fn index_job(
    provenance: &dyn ObjectStore,
    results: Arc<dyn ObjectStore>,
    job: &SimJobSpec,
    locations: &[AggLocation],
    options: IndexOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<IndexOutcome, IndexError> {
    let columns = param_columns(job);
    let schema = table::schema(&columns);
    let dir = results_dir(&job.job_id);
    let staging = Path::from(format!("{dir}/.staging/{}/losses.parquet", uuid::Uuid::new_v4().simple()));
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(options.row_group_rows))
        .set_statistics_enabled(EnabledStatistics::Page)
        .build();
    let mut writer = AsyncArrowWriter::try_new(BufWriter::new(Arc::clone(&results), staging.clone()), Arc::clone(&schema), Some(properties))?;

    let mut fingerprint = blake2b_simd::Params::new().hash_length(32).to_state();
    fingerprint.update(format!("losses-v{SCHEMA_VERSION}\n").as_bytes());
    fingerprint.update(JobSpec::Simulation(job.clone()).to_json().as_bytes());
    let mut stats: Vec<(String, TargetStats)> = job.target_entrypoints().into_iter().map(|t| (t, TargetStats::default())).collect();
    let mut counts = RowCounts::default();
    let mut errors = Vec::new();
    let mut pending: Vec<Row> = Vec::with_capacity(options.batch_rows);
    let total = locations.len();
    // Indices, not references, so the closure has no lifetime to be general over (a future
    // holding it must be Send) and nothing but the bounded window of reads is ever in memory.
    let mut rows = futures::stream::iter(0..locations.len())
        .map(|i| read_located(provenance, job, &locations[i]))
        .buffered(options.concurrency.max(1));
    let mut done = 0;
    while let Some((location, read)) = rows.next().await {
        let (row, error, inputs) = read?;
        fingerprint.update(format!("\n{}|{}|{}|", location.target, location.path.as_deref().unwrap_or("-"), location.cache_hit).as_bytes());
        for bytes in &inputs {
            fingerprint.update(format!("{}:", bytes.len()).as_bytes());
            fingerprint.update(bytes);
        }
        counts.total += 1;
        match row.status {
            RowStatus::Ok => counts.ok += 1,
            RowStatus::Missing => counts.missing += 1,
            RowStatus::Failed => counts.failed += 1,
        }
        if let Some(error) = error
            && errors.len() < MAX_ERRORS_LISTED
        {
            errors.push((row.param_id.clone(), row.target.clone(), error));
        }
        if let Some((_, target_stats)) = stats.iter_mut().find(|(t, _)| *t == row.target) {
            target_stats.add(&row);
        }
        pending.push(row);
        if pending.len() >= options.batch_rows {
            writer.write(&table::to_batch(&schema, &columns, job.job_id.as_str(), &job.bundle_ref, &pending)?).await?;
            pending.clear();
        }
        done += 1;
        progress(done, total);
    }
    if !pending.is_empty() {
        writer.write(&table::to_batch(&schema, &columns, job.job_id.as_str(), &job.bundle_ref, &pending)?).await?;
    }
    writer.close().await?;
    let fingerprint = fingerprint.finalize().to_hex().to_string();
    let results_path = format!("{dir}/");

    let manifest_path = Path::from(format!("{dir}/manifest.json"));
    if let Some(current) = read_optional(results.as_ref(), &manifest_path).await?
        && let Ok(PyValue::Object(manifest)) = pyjson::parse(&current)
        && manifest.get("input_fingerprint").and_then(PyValue::as_str) == Some(fingerprint.as_str())
    {
        results.delete(&staging).await?;
        tracing::info!(job = %job.job_id, %fingerprint, "inputs unchanged; table kept");
        return Ok(IndexOutcome {
            counts,
            fingerprint,
            unchanged: true,
            results_path,
        });
    }

    results.rename(&staging, &Path::from(format!("{dir}/losses.parquet"))).await?;
    let mut summary = PyObject::new();
    summary.insert("job_id", job.job_id.as_str().into());
    summary.insert("schema_version", SCHEMA_VERSION.into());
    let mut targets = PyObject::new();
    for (target, target_stats) in &stats {
        targets.insert(target.as_str(), PyValue::Object(target_stats.to_object()));
    }
    summary.insert("targets", PyValue::Object(targets));
    results
        .put(&Path::from(format!("{dir}/summary.json")), PutPayload::from(pyjson::to_indent2(&PyValue::Object(summary))))
        .await?;

    let mut manifest = PyObject::new();
    manifest.insert("schema_version", SCHEMA_VERSION.into());
    manifest.insert("job_id", job.job_id.as_str().into());
    manifest.insert("bundle_digest", job.bundle_ref.as_str().into());
    manifest.insert("input_fingerprint", fingerprint.as_str().into());
    manifest.insert("indexed_at", now_iso().into());
    let mut row_counts = PyObject::new();
    for (key, value) in [("total", counts.total), ("ok", counts.ok), ("missing", counts.missing), ("failed", counts.failed)] {
        row_counts.insert(key, value.into());
    }
    manifest.insert("counts", PyValue::Object(row_counts));
    manifest.insert("targets", PyValue::List(stats.iter().map(|(t, _)| t.as_str().into()).collect()));
    let min = stats.iter().filter_map(|(_, s)| s.min).reduce(f64::min);
    let max = stats.iter().filter_map(|(_, s)| s.max).reduce(f64::max);
    manifest.insert("min_loss", min.into());
    manifest.insert("max_loss", max.into());
    manifest.insert("columns", PyValue::List(schema.fields().iter().map(|f| f.name().as_str().into()).collect()));
    let mut files = PyObject::new();
    files.insert("losses", "losses.parquet".into());
    files.insert("summary", "summary.json".into());
    manifest.insert("files", PyValue::Object(files));
    let errors = errors
        .into_iter()
        .map(|(param_id, target, error)| {
            let mut entry = PyObject::new();
            entry.insert("param_id", param_id.into());
            entry.insert("target", target.into());
            entry.insert("error", error.into());
            PyValue::Object(entry)
        })
        .collect();
    manifest.insert("errors", PyValue::List(errors));
    results.put(&manifest_path, PutPayload::from(pyjson::to_indent2(&PyValue::Object(manifest)))).await?;
    tracing::info!(job = %job.job_id, rows = counts.total, ok = counts.ok, missing = counts.missing, failed = counts.failed, "job indexed");
    Ok(IndexOutcome {
        counts,
        fingerprint,
        unchanged: false,
        results_path,
    })
}
