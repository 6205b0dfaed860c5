//! Building a job's table: read each aggregation's `result.json` and `metadata.json` with
//! bounded concurrency, in table order; stream the rows into Parquet at a staging key while
//! hashing every input into a fingerprint; then either discard the staging file (the inputs are
//! those of the current table) or move it to `results/{job_id}/losses.parquet` and write
//! `summary.json` and, last, `manifest.json`. Aggregations whose results carry per-replicate
//! losses also stream into a second staging file, the per-replicate table, committed the same
//! way. A crash at any point leaves the previous table, summary and manifest as they were; the
//! same inputs give the same table, summary and per-replicate bytes. The manifest, the summary
//! and every path under `results/` are those of [`modelops_core::loss_table`].

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use futures::StreamExt;
use modelops_core::job::JobId;
use modelops_core::loss_table::{
    self, BestLoss, BestRow, LOSSES_FILE, MANIFEST_FILE, Manifest, ManifestError, ManifestFiles, REPLICATES_FILE, RowCounts, SCHEMA_VERSION, SUMMARY_FILE, Summary,
    TABLES_DIR, TableFacts, TableFile, TargetFacts, TargetSummary, results_dir, results_file,
};
use modelops_core::pyjson::PyObject;
use modelops_core::records::{self, RecordError};
use modelops_core::store::Store;
use modelops_core::study::SimJobSpec;
use modelops_core::time::{now_iso, parse_iso};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::columns::{ParamColumn, param_columns};
use crate::error::IndexError;
use crate::locate::AggLocation;
use crate::replicates::{self, REPLICATES_VERSION, ReplicateLosses, ReplicateRow};
use crate::table::{self, Row, RowStatus};

/// How an index run reads and writes.
#[derive(Debug, Clone, Copy)]
pub struct IndexOptions {
    /// Aggregations read at once (each two requests to a remote store, sent together).
    pub concurrency: usize,
    /// Rows per record batch handed to the writer.
    pub batch_rows: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// The largest record file read (`result.json`, `metadata.json`); a larger one is a failed
    /// row.
    pub max_record_bytes: u64,
    /// The first wait before a job whose backends were unavailable is built again (doubling
    /// with each failure in a row, up to a minute).
    pub retry_backoff: std::time::Duration,
    /// How long a replaced table version stays readable (a stream that started on it finishes)
    /// before it is collected.
    pub table_grace: std::time::Duration,
    /// How often the indexer lists the finished jobs that have no table or were left being built
    /// (a safety net for events missed while the registry was unreachable).
    pub resync_interval: std::time::Duration,
    /// Write the table and manifest again even if the inputs are those of the current table (a
    /// forced index request).
    pub rewrite_unchanged: bool,
}

/// Default of [`IndexOptions::concurrency`]: a cloud store answers each request in 10–30 ms, so
/// reading is bound by requests in flight (256 here); a local store reads in chunks whatever
/// this is.
pub const DEFAULT_CONCURRENCY: usize = 128;

/// Default of [`IndexOptions::table_grace`].
pub const DEFAULT_TABLE_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Default of [`IndexOptions::max_record_bytes`]: upstream's records are a few KiB.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;

impl Default for IndexOptions {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            batch_rows: 8192,
            row_group_rows: 128 * 1024,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            retry_backoff: std::time::Duration::from_secs(1),
            table_grace: DEFAULT_TABLE_GRACE,
            resync_interval: std::time::Duration::from_secs(30),
            rewrite_unchanged: false,
        }
    }
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

    fn to_facts(&self, target: &str) -> TargetFacts {
        TargetFacts {
            target: target.to_owned(),
            counts: self.counts,
            min_loss: self.min,
            max_loss: self.max,
            best: self.best.iter().map(|(loss, param_id, _)| BestLoss { param_id: param_id.clone(), loss: *loss }).collect(),
        }
    }

    fn to_summary(&self) -> TargetSummary {
        TargetSummary {
            count: self.counts.total,
            ok: self.counts.ok,
            missing: self.counts.missing,
            failed: self.counts.failed,
            min_loss: self.min,
            mean_loss: (self.counts.ok > 0).then(|| self.sum / self.counts.ok as f64),
            max_loss: self.max,
            best: self
                .best
                .iter()
                .map(|(loss, param_id, values)| BestRow {
                    param_id: param_id.clone(),
                    loss: *loss,
                    params: loss_table::param_values(values),
                })
                .collect(),
        }
    }
}

async fn read_optional(store: &dyn ObjectStore, path: &Path) -> Result<Option<Bytes>, IndexError> {
    match records::read_file(store, path).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(RecordError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// One record file of an aggregation as read: absent, its bytes, or why it cannot be used (a
/// failed row, never a failed job: one bad aggregation does not stop the others).
#[derive(Debug, Clone, PartialEq)]
enum RecordRead {
    /// The file does not exist.
    Absent,
    /// The file's bytes.
    Bytes(Bytes),
    /// The file exists but is not a record to read, and why (paths relative to the store).
    Unusable(String),
}

impl RecordRead {
    fn too_large(path: &Path, size: u64, max: u64) -> Self {
        Self::Unusable(format!("{path}: {size} bytes, over the limit of {max} (--max-record-bytes)"))
    }
}

/// Reads a record through the object store, refusing one over `max_bytes` before its body.
async fn read_remote_record(store: &dyn ObjectStore, path: &Path, max_bytes: u64) -> Result<RecordRead, IndexError> {
    let read = records::read_bounded(store, path, max_bytes).await.map_err(|source| RecordError::Store {
        path: path.to_string(),
        source,
    })?;
    Ok(match read {
        records::BoundedRead::Absent => RecordRead::Absent,
        records::BoundedRead::Refused(why) => RecordRead::Unusable(why),
        records::BoundedRead::TooLarge(size) => RecordRead::too_large(path, size, max_bytes),
        records::BoundedRead::Bytes(bytes) => RecordRead::Bytes(bytes),
    })
}

/// A row read: the row, its error (failed rows), the digest of its inputs (location and
/// every byte read), computed by the reader so the fingerprint costs the writer 32 bytes a row,
/// and the aggregation's per-replicate losses when its result carries them.
type ReadRow = (Row, Option<String>, [u8; 32], Option<ReplicateLosses>);

fn input_digest(param_id: &str, location: &AggLocation, result: &RecordRead, metadata: &RecordRead) -> [u8; 32] {
    let mut state = blake2b_simd::Params::new().hash_length(32).to_state();
    state.update(param_id.as_bytes());
    state.update(b"|");
    state.update(location.target.as_bytes());
    state.update(b"|");
    state.update(location.path.as_deref().unwrap_or("-").as_bytes());
    state.update(if location.cache_hit { b"|1|" } else { b"|0|" });
    for read in [result, metadata] {
        match read {
            RecordRead::Bytes(bytes) => {
                state.update(&(bytes.len() as u64).to_le_bytes());
                state.update(bytes);
            }
            RecordRead::Absent => {
                state.update(&u64::MAX.to_le_bytes());
            }
            RecordRead::Unusable(reason) => {
                state.update(&(u64::MAX - 1).to_le_bytes());
                state.update(reason.as_bytes());
            }
        }
    }
    state.finalize().as_bytes().try_into().expect("32-byte digest")
}

/// The row of one aggregation from what was read of its two files, with its per-replicate
/// losses when its `result.json` parses and carries them (whatever the row's status).
fn row_from(source: RowSource, result: RecordRead, metadata: RecordRead) -> ReadRow {
    let RowSource {
        param_id,
        values,
        seeds,
        location,
    } = source;
    let location = &location;
    let inputs = input_digest(&param_id, location, &result, &metadata);
    let mut row = Row {
        param_id,
        values,
        target: location.target.clone(),
        loss: None,
        n_replicates: None,
        computed_at: None,
        cache_hit: location.cache_hit,
        status: RowStatus::Missing,
    };
    let Some(dir) = location.path.as_deref() else { return (row, None, inputs, None) };
    let result = match result {
        RecordRead::Absent => return (row, None, inputs, None),
        RecordRead::Unusable(reason) => {
            row.status = RowStatus::Failed;
            return (row, Some(reason), inputs, None);
        }
        RecordRead::Bytes(bytes) => bytes,
    };
    let result_path = Path::from(format!("{dir}/{}", records::RESULT_FILE));
    let metadata_path = Path::from(format!("{dir}/{}", records::METADATA_FILE));
    row.status = RowStatus::Failed;
    match &metadata {
        RecordRead::Absent => {}
        RecordRead::Unusable(reason) => return (row, Some(reason.clone()), inputs, None),
        RecordRead::Bytes(metadata) => match records::parse_agg_metadata(&metadata_path, metadata) {
            Ok(m) => row.computed_at = parse_iso(&m.timestamp).map(|t| t.timestamp_micros()),
            Err(e) => return (row, Some(e.to_string()), inputs, None),
        },
    }
    match records::parse_agg_result(&result_path, &result) {
        Ok(parsed) => {
            let replicates = parsed.per_replicate_losses.map(|losses| ReplicateLosses { losses, seeds });
            if parsed.loss.is_finite() {
                row.status = RowStatus::Ok;
                row.loss = Some(parsed.loss);
                row.n_replicates = Some(parsed.n_replicates);
                (row, None, inputs, replicates)
            } else {
                (row, Some(format!("{result_path}: loss is {}", parsed.loss)), inputs, replicates)
            }
        }
        Err(e) => (row, Some(e.to_string()), inputs, None),
    }
}

fn check_dir(dir: &str) -> Result<Path, IndexError> {
    Path::parse(dir).map_err(|e| IndexError::Invalid(format!("aggregation path {dir:?}: {e}")))
}

/// One row to read: a parameter set × target and where its aggregation is.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSource {
    /// The parameter-set id.
    pub param_id: String,
    /// Its parameter values.
    pub values: PyObject,
    /// The seeds of its tasks, in spec order (replicate `i` has the `i`-th).
    pub seeds: Arc<[u64]>,
    /// Where its aggregation for the row's target is.
    pub location: AggLocation,
}

/// Reads one aggregation through the object store.
async fn read_remote(provenance: &dyn ObjectStore, source: RowSource, max_bytes: u64) -> Result<ReadRow, IndexError> {
    let (result, metadata) = match source.location.path.as_deref() {
        Some(dir) => {
            let dir = check_dir(dir)?;
            // Both requests at once: against a store answering in 10–30 ms, one after the
            // other would double the time per aggregation.
            let (result, metadata) = (dir.clone().join(records::RESULT_FILE), dir.join(records::METADATA_FILE));
            futures::try_join!(read_remote_record(provenance, &result, max_bytes), read_remote_record(provenance, &metadata, max_bytes))?
        }
        None => (RecordRead::Absent, RecordRead::Absent),
    };
    Ok(row_from(source, result, metadata))
}

/// A local provenance root, resolved once: records are read only from beneath it.
#[derive(Debug, Clone)]
struct LocalRoot {
    /// The root as configured.
    root: std::path::PathBuf,
    /// The root with every symbolic link resolved.
    canonical: std::path::PathBuf,
}

impl LocalRoot {
    fn new(root: std::path::PathBuf) -> Self {
        let canonical = std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone());
        Self { root, canonical }
    }

    /// Reads the two record files of the aggregation directory `dir`. A directory that resolves
    /// outside the root (through a symbolic link), a file that is itself a link, not a regular
    /// file (a directory, a FIFO: opened without blocking), over `max_bytes`, or unreadable is
    /// [`RecordRead::Unusable`]; messages name paths relative to the store.
    fn read_aggregation(&self, dir: &Path, max_bytes: u64) -> (RecordRead, RecordRead) {
        let local = self.root.join(dir.as_ref());
        match std::fs::canonicalize(&local) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (RecordRead::Absent, RecordRead::Absent),
            Err(e) => {
                let reason = RecordRead::Unusable(format!("{dir}: cannot be resolved ({})", e.kind()));
                return (reason.clone(), reason);
            }
            Ok(resolved) if !resolved.starts_with(&self.canonical) => {
                let reason = RecordRead::Unusable(format!("{dir}: leads outside the provenance store through a symbolic link"));
                return (reason.clone(), reason);
            }
            Ok(_) => {}
        }
        let read = |name: &str| read_local_record(&local.join(name), &dir.clone().join(name), max_bytes);
        (read(records::RESULT_FILE), read(records::METADATA_FILE))
    }
}

/// Reads one record file at `local` (named `key` in messages) without following a final
/// symbolic link and without blocking on a FIFO.
fn read_local_record(local: &std::path::Path, key: &Path, max_bytes: u64) -> RecordRead {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(local);
    let file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return RecordRead::Absent,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return RecordRead::Unusable(format!("{key}: is a symbolic link; records are read only inside the provenance store"));
        }
        Err(e) => return RecordRead::Unusable(format!("{key}: cannot be opened ({})", e.kind())),
    };
    let size = match file.metadata() {
        Ok(meta) if !meta.is_file() => return RecordRead::Unusable(format!("{key}: is not a regular file")),
        Ok(meta) => meta.len(),
        Err(e) => return RecordRead::Unusable(format!("{key}: cannot be read ({})", e.kind())),
    };
    if size > max_bytes {
        return RecordRead::too_large(key, size, max_bytes);
    }
    // The file may grow after the check: never read more than the limit.
    let mut bytes = Vec::with_capacity(size as usize);
    match file.take(max_bytes + 1).read_to_end(&mut bytes) {
        Ok(_) if bytes.len() as u64 > max_bytes => RecordRead::too_large(key, bytes.len() as u64, max_bytes),
        Ok(_) => RecordRead::Bytes(Bytes::from(bytes)),
        Err(e) => RecordRead::Unusable(format!("{key}: cannot be read ({})", e.kind())),
    }
}

/// Reads a chunk of aggregations from a local directory with plain file I/O, in one blocking
/// task (object_store's local backend spends two blocking-pool round trips per file).
async fn read_local(root: LocalRoot, chunk: Vec<RowSource>, max_bytes: u64) -> Result<Vec<ReadRow>, IndexError> {
    tokio::task::spawn_blocking(move || {
        chunk
            .into_iter()
            .map(|source| {
                let (result, metadata) = match source.location.path.as_deref() {
                    Some(dir) => root.read_aggregation(&check_dir(dir)?, max_bytes),
                    None => (RecordRead::Absent, RecordRead::Absent),
                };
                Ok(row_from(source, result, metadata))
            })
            .collect()
    })
    .await
    .map_err(|e| IndexError::Invalid(format!("reader task failed: {e}")))?
}

/// Rows per blocking read task on local stores, at most.
const LOCAL_CHUNK: usize = 512;

/// What a job's table takes from its spec: identity, bundle, targets (in spec order) and the
/// typed parameter columns.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// The job.
    pub job_id: JobId,
    /// The job's bundle ref.
    pub bundle_ref: String,
    /// The target entrypoints, in spec order.
    pub targets: Vec<String>,
    /// The parameter columns.
    pub columns: Vec<ParamColumn>,
}

impl TableSpec {
    /// The table of an in-memory spec.
    pub fn of(job: &SimJobSpec) -> Self {
        Self {
            job_id: job.job_id.clone(),
            bundle_ref: job.bundle_ref.clone(),
            targets: job.target_entrypoints(),
            columns: param_columns(job),
        }
    }
}

/// Builds the table of `job` from the aggregations at `locations` (in table order), reading
/// from `provenance` and writing under `results/{job_id}/` in `results`. `progress(done, total)`
/// follows the rows. The spec and locations are in memory; [`index_rows`] takes any stream.
pub async fn index_job(
    provenance: &Store,
    results: Arc<dyn ObjectStore>,
    job: &SimJobSpec,
    locations: &[AggLocation],
    options: IndexOptions,
    progress: impl FnMut(usize, usize),
) -> Result<IndexOutcome, IndexError> {
    let groups = job.task_groups();
    if let Some(bad) = locations.iter().find(|l| l.group >= groups.len()) {
        return Err(IndexError::Invalid(format!(
            "location of parameter set {} beyond the job's {}",
            bad.group,
            groups.len()
        )));
    }
    let seeds: Vec<Arc<[u64]>> = groups.iter().map(|group| group.tasks.iter().map(|task| task.seed).collect()).collect();
    let rows = futures::stream::iter(locations.iter().map(|location| {
        let group = &groups[location.group];
        Ok(RowSource {
            param_id: group.param_id.to_owned(),
            values: group.values.clone(),
            seeds: Arc::clone(&seeds[location.group]),
            location: location.clone(),
        })
    }));
    index_rows(provenance, results, TableSpec::of(job), rows.boxed(), locations.len(), options, progress).await
}

/// Builds a job's table from `rows` (in table order, `total` of them), reading each row's
/// aggregation from `provenance` with bounded concurrency and writing under
/// `results/{job_id}/` in `results`. Nothing but a bounded window of rows is in memory.
pub async fn index_rows(
    provenance: &Store,
    results: Arc<dyn ObjectStore>,
    spec: TableSpec,
    rows: futures::stream::BoxStream<'_, Result<RowSource, IndexError>>,
    total: usize,
    options: IndexOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<IndexOutcome, IndexError> {
    let mut table = TableWriter::new(results, &spec.job_id, &spec.bundle_ref, spec.targets.clone(), spec.columns, options)?;
    let mut fingerprint = blake2b_simd::Params::new().hash_length(32).to_state();
    // What the table takes from the spec: identity, bundle, targets and typed columns; each row's
    // parameter-set id (the hash of its values) goes into the row digests.
    fingerprint.update(format!("losses-v{SCHEMA_VERSION}\n{}\n{}\n", spec.job_id, spec.bundle_ref).as_bytes());
    for target in &spec.targets {
        fingerprint.update(format!("target {target}\n").as_bytes());
    }
    for field in table.schema().fields() {
        fingerprint.update(format!("column {} {}\n", field.name(), field.data_type()).as_bytes());
    }
    let concurrency = options.concurrency.max(1);
    let max_bytes = options.max_record_bytes;
    let mut reads: futures::stream::BoxStream<'_, Result<ReadRow, IndexError>> = match provenance.local_root() {
        // `concurrency` reads at once: chunks of up to 512 rows, up to 4 chunks in flight.
        Some(root) => {
            let root = LocalRoot::new(root);
            rows.chunks((concurrency * 8).clamp(8, LOCAL_CHUNK))
            .map(move |chunk| {
                let root = root.clone();
                async move { read_local(root, chunk.into_iter().collect::<Result<Vec<_>, _>>()?, max_bytes).await }
            })
            .buffered((concurrency / 16).clamp(1, 4))
            .flat_map(|chunk| {
                let rows: Vec<Result<ReadRow, IndexError>> = match chunk {
                    Ok(rows) => rows.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                };
                futures::stream::iter(rows)
            })
            .boxed()
        }
        None => {
            let store = provenance.object_store.as_ref();
            rows.map(move |source| async move { read_remote(store, source?, max_bytes).await })
                .buffered(concurrency)
                .boxed()
        }
    };
    let mut done = 0;
    while let Some(read) = reads.next().await {
        let (row, error, inputs, replicates) = read?;
        fingerprint.update(&inputs);
        // The row's digest covers the losses (its result's bytes); their seeds come from the
        // spec. Jobs without replicates keep the fingerprint they had before replicates.
        if let Some(replicates) = &replicates {
            fingerprint.update(format!("replicates-v{REPLICATES_VERSION} {}\n", replicates.seeds.len()).as_bytes());
            for seed in replicates.seeds.iter() {
                fingerprint.update(&seed.to_le_bytes());
            }
            table.push_replicates(&row.param_id, &row.target, replicates).await?;
        }
        table.push(row, error).await?;
        done += 1;
        progress(done, total);
    }
    if done != total {
        return Err(IndexError::Invalid(format!("{done} rows read where {total} were expected")));
    }
    table.commit(fingerprint.finalize().to_hex().to_string()).await
}

/// Copies the committed versions named in a manifest's `files` to the seed's paths,
/// `losses.parquet`, `summary.json` and `replicates.parquet`, unless they are there already (the
/// tables by their size); removes a `replicates.parquet` the manifest does not name (left by an
/// earlier build whose results carried per-replicate losses). A manifest from before immutable
/// versions names the seed's paths themselves: nothing to copy.
async fn restore_seed_copies(results: &dyn ObjectStore, job: &JobId, files: &ManifestFiles) -> Result<(), IndexError> {
    let versioned = |name: &str| name.starts_with(TABLES_DIR);
    if !versioned(&files.losses) || !versioned(&files.summary) {
        return Ok(());
    }
    let copy_table = |version: &str, seed: &'static str, bytes: Option<u64>| {
        let (version, seed_path) = (Path::from(results_file(job, version)), Path::from(results_file(job, seed)));
        async move {
            let current = match results.head(&seed_path).await {
                Ok(meta) => Some(meta.size),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => return Err(IndexError::from(e)),
            };
            if current != bytes {
                results.copy(&version, &seed_path).await?;
            }
            Ok(())
        }
    };
    copy_table(&files.losses, LOSSES_FILE, Some(files.losses_bytes)).await?;
    results.copy(&Path::from(results_file(job, &files.summary)), &Path::from(results_file(job, SUMMARY_FILE))).await?;
    match files.replicates.as_deref().filter(|name| versioned(name)) {
        Some(replicates) => copy_table(replicates, REPLICATES_FILE, files.replicates_bytes).await?,
        None => match results.delete(&Path::from(results_file(job, REPLICATES_FILE))).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        },
    }
    Ok(())
}

/// Deletes the table versions (and abandoned staging files) of a job other than `keep` that are
/// older than `grace`. Failures only leave files for the next build to collect.
async fn collect_old_versions(results: &dyn ObjectStore, job: &JobId, keep: &[&str], grace: std::time::Duration) {
    use futures::TryStreamExt as _;
    let dir = results_dir(job);
    let prefix = Path::from(results_file(job, TABLES_DIR));
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let listed: Vec<object_store::ObjectMeta> = match results.list(Some(&prefix)).try_collect().await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::debug!(%dir, error = %e, "cannot list old table versions");
            return;
        }
    };
    for meta in listed {
        let name = meta.location.as_ref().strip_prefix(dir.as_str()).unwrap_or_default().trim_start_matches('/');
        if keep.contains(&name) || meta.last_modified > cutoff {
            continue;
        }
        match results.delete(&meta.location).await {
            Ok(()) => tracing::debug!(file = %meta.location, "old table version collected"),
            Err(e) => tracing::debug!(file = %meta.location, error = %e, "cannot collect an old table version"),
        }
    }
}

/// Streams the rows of a job's table into Parquet at a staging key, gathering the counts and
/// per-target statistics, then commits: unless the committed manifest already has this input
/// fingerprint, it moves the table to `results/{job_id}/losses.parquet` and writes
/// `summary.json` and, last, `manifest.json`. [`index_job`] feeds it from the provenance store;
/// anything else that produces rows (benchmarks, imports) can too.
pub struct TableWriter {
    results: Arc<dyn ObjectStore>,
    job: JobId,
    bundle_ref: String,
    staging: Path,
    schema: SchemaRef,
    columns: Vec<ParamColumn>,
    writer: AsyncArrowWriter<BufWriter>,
    stats: Vec<(String, TargetStats)>,
    counts: RowCounts,
    errors: Vec<ManifestError>,
    pending: Vec<Row>,
    batch_rows: usize,
    /// How long replaced table versions stay readable.
    grace: std::time::Duration,
    /// Commit even if the inputs are unchanged.
    rewrite: bool,
    /// How the tables are written.
    properties: WriterProperties,
    /// The per-replicate table, from the first aggregation that carries per-replicate losses.
    replicates: Option<ReplicatesWriter>,
    /// The earliest and latest `computed_at` of the rows pushed.
    computed_at: Option<[i64; 2]>,
}

/// The per-replicate table being written at its staging key.
struct ReplicatesWriter {
    staging: Path,
    schema: SchemaRef,
    writer: AsyncArrowWriter<BufWriter>,
    pending: Vec<ReplicateRow>,
    rows: u64,
}

/// A Parquet writer of `schema` at `path` (the writer buffers; the file appears on close).
fn parquet_writer(results: &Arc<dyn ObjectStore>, path: &Path, schema: &SchemaRef, properties: &WriterProperties) -> Result<AsyncArrowWriter<BufWriter>, IndexError> {
    Ok(AsyncArrowWriter::try_new(
        BufWriter::new(Arc::clone(results), path.clone()),
        Arc::clone(schema),
        Some(properties.clone()),
    )?)
}

/// A staging key beside the versions it becomes one of (a rename within one directory leaves
/// no empty directory behind); an abandoned one is collected with the old versions.
fn staging_path(job: &JobId) -> Path {
    Path::from(results_file(job, &format!("{TABLES_DIR}/staging-{}.parquet", uuid::Uuid::new_v4().simple())))
}

impl std::fmt::Debug for TableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriter").field("job_id", &self.job).field("counts", &self.counts).finish_non_exhaustive()
    }
}

impl ReplicatesWriter {
    async fn flush(&mut self, job_id: &str) -> Result<(), IndexError> {
        let batch = replicates::to_batch(&self.schema, job_id, &self.pending)?;
        self.writer.write(&batch).await?;
        self.pending.clear();
        Ok(())
    }

    /// Writes what is pending and closes the file at the staging key.
    async fn close(mut self, job_id: &str) -> Result<(Path, u64), IndexError> {
        if !self.pending.is_empty() {
            self.flush(job_id).await?;
        }
        self.writer.close().await?;
        Ok((self.staging, self.rows))
    }
}

impl TableWriter {
    /// A writer of `job`'s table with these targets (in spec order) and parameter columns.
    pub fn new(results: Arc<dyn ObjectStore>, job: &JobId, bundle_ref: &str, targets: Vec<String>, columns: Vec<ParamColumn>, options: IndexOptions) -> Result<Self, IndexError> {
        let schema = table::schema(&columns);
        let staging = staging_path(job);
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_max_row_group_row_count(Some(options.row_group_rows))
            .set_statistics_enabled(EnabledStatistics::Page)
            .build();
        let writer = parquet_writer(&results, &staging, &schema, &properties)?;
        Ok(Self {
            results,
            job: job.clone(),
            bundle_ref: bundle_ref.to_owned(),
            staging,
            schema,
            columns,
            writer,
            stats: targets.into_iter().map(|t| (t, TargetStats::default())).collect(),
            computed_at: None,
            counts: RowCounts::default(),
            errors: Vec::new(),
            pending: Vec::with_capacity(options.batch_rows),
            batch_rows: options.batch_rows.max(1),
            grace: options.table_grace,
            rewrite: options.rewrite_unchanged,
            properties,
            replicates: None,
        })
    }

    /// The table's Arrow schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Appends a row; `error` is why a failed row failed (listed in the manifest).
    pub async fn push(&mut self, row: Row, error: Option<String>) -> Result<(), IndexError> {
        self.counts.total += 1;
        match row.status {
            RowStatus::Ok => self.counts.ok += 1,
            RowStatus::Missing => self.counts.missing += 1,
            RowStatus::Failed => self.counts.failed += 1,
        }
        if let Some(error) = error
            && self.errors.len() < MAX_ERRORS_LISTED
        {
            self.errors.push(ManifestError {
                param_id: row.param_id.clone(),
                target: row.target.clone(),
                error,
            });
        }
        if let Some((_, target_stats)) = self.stats.iter_mut().find(|(t, _)| *t == row.target) {
            target_stats.add(&row);
        }
        if let Some(at) = row.computed_at {
            self.computed_at = Some(self.computed_at.map_or([at, at], |[first, last]| [first.min(at), last.max(at)]));
        }
        self.pending.push(row);
        if self.pending.len() >= self.batch_rows {
            self.flush().await?;
        }
        Ok(())
    }

    /// Appends the per-replicate losses of the aggregation of `param_id` × `target` to the
    /// per-replicate table, which exists from the first call.
    pub async fn push_replicates(&mut self, param_id: &str, target: &str, losses: &ReplicateLosses) -> Result<(), IndexError> {
        if self.replicates.is_none() {
            let (staging, schema) = (staging_path(&self.job), replicates::schema());
            let writer = parquet_writer(&self.results, &staging, &schema, &self.properties)?;
            self.replicates = Some(ReplicatesWriter {
                staging,
                schema,
                writer,
                pending: Vec::with_capacity(self.batch_rows),
                rows: 0,
            });
        }
        let table = self.replicates.as_mut().expect("created above");
        for row in replicates::rows(param_id, target, losses) {
            table.pending.push(row);
            table.rows += 1;
            if table.pending.len() >= self.batch_rows {
                table.flush(self.job.as_str()).await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), IndexError> {
        let batch = table::to_batch(&self.schema, &self.columns, self.job.as_str(), &self.bundle_ref, &self.pending)?;
        self.writer.write(&batch).await?;
        self.pending.clear();
        Ok(())
    }

    /// Finishes the table and commits it under `fingerprint` (nothing changes when the committed
    /// manifest has the same one).
    pub async fn commit(mut self, fingerprint: String) -> Result<IndexOutcome, IndexError> {
        if !self.pending.is_empty() {
            self.flush().await?;
        }
        let Self {
            results,
            job,
            bundle_ref,
            staging,
            schema,
            writer,
            stats,
            counts,
            errors,
            grace,
            replicates,
            rewrite,
            computed_at,
            ..
        } = self;
        writer.close().await?;
        let replicates = match replicates {
            Some(table) => Some(table.close(job.as_str()).await?),
            None => None,
        };
        let results_path = format!("{}/", results_dir(&job));
        let manifest_path = Path::from(results_file(&job, MANIFEST_FILE));
        if !rewrite
            && let Some(current) = read_optional(results.as_ref(), &manifest_path).await?
            && let Ok(manifest) = Manifest::from_json_bytes(&current)
            && manifest.input_fingerprint == fingerprint
        {
            results.delete(&staging).await?;
            if let Some((replicates_staging, _)) = &replicates {
                results.delete(replicates_staging).await?;
            }
            // A crash between the commit and the copies leaves the seed's paths behind: redo them.
            restore_seed_copies(results.as_ref(), &job, &manifest.files).await?;
            tracing::info!(%job, %fingerprint, "inputs unchanged; table kept");
            return Ok(IndexOutcome {
                counts,
                fingerprint,
                unchanged: true,
                results_path,
            });
        }

        // The table and summary are immutable files named by their inputs; the manifest, written
        // last, names them (the commit point). A reader that read a manifest reads the files it
        // names, which stay for `table_grace` after a newer manifest replaces it.
        let version = &fingerprint[..fingerprint.len().min(16)];
        let table_name = TableFile::Losses.version_name(version);
        let summary_name = TableFile::Summary.version_name(version);
        let table_path = Path::from(results_file(&job, &table_name));
        results.rename(&staging, &table_path).await?;
        let table_bytes = results.head(&table_path).await?.size;
        let summary = Summary {
            job_id: job.to_string(),
            schema_version: SCHEMA_VERSION,
            targets: loss_table::OrderedObject(stats.iter().map(|(target, target_stats)| (target.clone(), target_stats.to_summary())).collect()),
        };
        let replicates = match replicates {
            Some((replicates_staging, rows)) => {
                let name = TableFile::Replicates.version_name(version);
                let path = Path::from(results_file(&job, &name));
                results.rename(&replicates_staging, &path).await?;
                Some((name, results.head(&path).await?.size, rows))
            }
            None => None,
        };
        results
            .put(&Path::from(results_file(&job, &summary_name)), PutPayload::from(summary.to_json_bytes()))
            .await?;

        let files = ManifestFiles {
            losses: table_name,
            losses_bytes: table_bytes,
            summary: summary_name,
            replicates: replicates.as_ref().map(|(name, _, _)| name.clone()),
            replicates_bytes: replicates.as_ref().map(|(_, bytes, _)| *bytes),
            replicates_rows: replicates.as_ref().map(|(_, _, rows)| *rows),
        };
        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            job_id: job.to_string(),
            bundle_digest: bundle_ref,
            input_fingerprint: fingerprint.clone(),
            indexed_at: now_iso(),
            counts,
            targets: stats.iter().map(|(target, _)| target.clone()).collect(),
            min_loss: stats.iter().filter_map(|(_, s)| s.min).reduce(f64::min),
            max_loss: stats.iter().filter_map(|(_, s)| s.max).reduce(f64::max),
            columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
            files,
            errors,
            table: Some(TableFacts {
                arrow_schema: parquet::arrow::encode_arrow_schema(&schema),
                computed_at,
                targets: stats.iter().map(|(target, target_stats)| target_stats.to_facts(target)).collect(),
            }),
        };
        results.put(&manifest_path, PutPayload::from(manifest.to_json_bytes())).await?;
        // Committed. The seed's paths, for readers that open them without the manifest.
        let files = &manifest.files;
        restore_seed_copies(results.as_ref(), &job, files).await?;
        let mut keep = vec![files.losses.as_str(), files.summary.as_str()];
        keep.extend(files.replicates.as_deref());
        collect_old_versions(results.as_ref(), &job, &keep, grace).await;
        tracing::info!(%job, rows = counts.total, ok = counts.ok, missing = counts.missing, failed = counts.failed, "job indexed");
        Ok(IndexOutcome {
            counts,
            fingerprint,
            unchanged: false,
            results_path,
        })
    }
}
