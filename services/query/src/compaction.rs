//! Writing compacted parts ([`modelops_core::compacted`]): the small jobs of one bundle and
//! one table schema, once enough of them are held by no part, are read and written again as
//! one Parquet file sorted by loss, then committed by its manifest. Queries across jobs then
//! read a part's few row groups that meet their loss range instead of every small job's file.
//!
//! A part's members are the jobs it read, at the table version it read; a job re-indexed later
//! is read from its own table again (the catalog's rule), and joins a new part with other jobs
//! once enough of them wait. Parts are never rewritten or deleted here: a part whose members
//! have all moved on is only bytes no scan reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::compute::{SortColumn, SortOptions};
use futures::{StreamExt, TryStreamExt};
use modelops_core::compacted::{PartManifest, PartMember, part_manifest_file, part_rows_file};
use modelops_core::loss_table::SCHEMA_VERSION;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, JobEntry};
use crate::error::QueryError;

/// Which jobs are compacted, and into parts of what size.
#[derive(Debug, Clone, Copy)]
pub struct CompactionOptions {
    /// Jobs of at most this many rows are small enough to compact.
    pub small_rows: u64,
    /// A part is written once at least this many small jobs of one bundle and schema wait.
    pub min_jobs: usize,
    /// A part holds at most about this many rows (a job is never split).
    pub part_rows: u64,
    /// Rows per row group of a part: a query's loss range decodes whole row groups.
    pub row_group_rows: usize,
}

impl Default for CompactionOptions {
    /// Jobs of up to 16,384 rows, 32 at least per part, parts of up to 262,144 rows in row
    /// groups of 16,384.
    fn default() -> Self {
        Self {
            small_rows: 16 * 1024,
            min_jobs: 32,
            part_rows: 256 * 1024,
            row_group_rows: 16 * 1024,
        }
    }
}

/// What one round of compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Parts written.
    pub parts: usize,
    /// Jobs they hold.
    pub jobs: usize,
    /// Rows they hold.
    pub rows: u64,
}

/// Writes a part for every group of at least `options.min_jobs` small jobs of one bundle and
/// schema that no part stands for, then reads the new parts into the catalog.
#[tracing::instrument(name = "compaction", skip_all)]
pub async fn compact(catalog: &Catalog, options: &CompactionOptions) -> Result<Compacted, QueryError> {
    let mut groups: BTreeMap<(String, usize), Vec<Arc<JobEntry>>> = BTreeMap::new();
    // The jobs first, then the parts: the catalog's two locks are never held together.
    let jobs = catalog.jobs();
    {
        let parts = catalog.parts();
        for job in jobs {
            let small = job.counts[0] > 0 && job.counts[0] <= options.small_rows;
            // Only immutable versions: a seed-path table changes under its name.
            let versioned = job.table.location.as_ref().contains("/tables/losses-");
            if small && versioned && parts.part_of(&job).is_none() {
                let key = (job.bundle_digest.to_string(), Arc::as_ptr(&job.schema) as usize);
                groups.entry(key).or_default().push(job);
            }
        }
    }
    let mut done = Compacted::default();
    for (_, mut jobs) in groups {
        jobs.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        for members in in_parts(jobs, options.part_rows) {
            if members.len() < options.min_jobs {
                continue;
            }
            let rows = write_part(catalog, &members, options).await?;
            done.parts += 1;
            done.jobs += members.len();
            done.rows += rows;
        }
    }
    if done.parts > 0 {
        catalog.refresh_parts().await?;
        tracing::info!(parts = done.parts, jobs = done.jobs, rows = done.rows, "compacted small jobs");
    }
    Ok(done)
}

/// `jobs` (in order) cut into runs of at most `part_rows` rows.
fn in_parts(jobs: Vec<Arc<JobEntry>>, part_rows: u64) -> Vec<Vec<Arc<JobEntry>>> {
    let mut parts: Vec<Vec<Arc<JobEntry>>> = vec![Vec::new()];
    let mut rows = 0;
    for job in jobs {
        if rows + job.counts[0] > part_rows && !parts.last().is_some_and(Vec::is_empty) {
            parts.push(Vec::new());
            rows = 0;
        }
        rows += job.counts[0];
        parts.last_mut().expect("one part at least").push(job);
    }
    parts
}

/// Reads `members`' tables, writes their rows sorted by loss (then job, parameter set and
/// target, so the same members give the same bytes) as a part, then its manifest. Returns the
/// part's rows.
async fn write_part(catalog: &Catalog, members: &[Arc<JobEntry>], options: &CompactionOptions) -> Result<u64, QueryError> {
    let schema = Arc::clone(&members[0].schema);
    let bundle_digest = members[0].bundle_digest.to_string();
    let store = Arc::clone(catalog.store());
    let tables: Vec<Vec<RecordBatch>> = futures::stream::iter(members.iter().cloned())
        .map(|job| {
            let (store, footers) = (Arc::clone(&store), catalog.footers().clone());
            async move {
                let opened = footers.open(&store, &job.table).await?;
                crate::engine::decode_whole(store, opened).await
            }
        })
        .buffered(8)
        .try_collect()
        .await?;
    let batches: Vec<RecordBatch> = tables.into_iter().flatten().collect();
    let all = arrow::compute::concat_batches(&schema, &batches)?;
    drop(batches);
    let sorted = sorted_by_loss(&all)?;
    drop(all);

    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(options.row_group_rows))
        .set_statistics_enabled(EnabledStatistics::Page)
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, Arc::clone(&schema), Some(properties))?;
    writer.write(&sorted)?;
    writer.close()?;

    let members: Vec<PartMember> = members
        .iter()
        .map(|job| PartMember {
            job_id: job.job_id.clone(),
            losses: relative_to_job(job),
            losses_bytes: job.table.size,
            rows: job.counts[0],
        })
        .collect();
    let rows = members.iter().map(|m| m.rows).sum::<u64>();
    if rows != sorted.num_rows() as u64 {
        return Err(QueryError::Catalog(format!("compaction read {} rows of jobs whose manifests give {rows}", sorted.num_rows())));
    }
    let id = PartManifest::id_of(&members);
    let manifest = PartManifest {
        schema_version: SCHEMA_VERSION,
        bundle_digest,
        arrow_schema: parquet::arrow::encode_arrow_schema(&schema),
        rows_bytes: bytes.len() as u64,
        rows,
        members,
    };
    // The rows first, then the manifest that commits them.
    store.put(&Path::from(part_rows_file(&id)), PutPayload::from(bytes)).await?;
    store.put(&Path::from(part_manifest_file(&id)), PutPayload::from(manifest.to_json_bytes())).await?;
    tracing::debug!(part = %id, jobs = manifest.members.len(), rows, "compacted part written");
    Ok(rows)
}

/// `job`'s table version relative to its results directory (`tables/losses-{v}.parquet`).
fn relative_to_job(job: &JobEntry) -> String {
    let location = job.table.location.as_ref();
    location.find("/tables/").map_or_else(|| location.to_owned(), |at| location[at + 1..].to_owned())
}

/// `batch` sorted by loss (nulls last), then job, parameter set and target.
fn sorted_by_loss(batch: &RecordBatch) -> Result<RecordBatch, QueryError> {
    let column = |name: &str| batch.column_by_name(name).cloned().ok_or_else(|| QueryError::Catalog(format!("a table without a {name} column")));
    let ascending = SortOptions {
        descending: false,
        nulls_first: false,
    };
    let keys = ["loss", "job_id", "param_id", "target"]
        .into_iter()
        .map(|name| Ok(SortColumn { values: column(name)?, options: Some(ascending) }))
        .collect::<Result<Vec<_>, QueryError>>()?;
    let order = arrow::compute::lexsort_to_indices(&keys, None)?;
    Ok(arrow::compute::take_record_batch(batch, &order)?)
}

/// Compacts every `interval` until `stop` is cancelled, the first time one interval after
/// start: a service that starts over thousands of jobs never compacted answers its first
/// queries before it reads them all again. Failures are logged; the next round tries again.
pub fn start(catalog: Catalog, options: CompactionOptions, interval: Duration, stop: CancellationToken, tracker: &tokio_util::task::TaskTracker) {
    tracker.spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(error) = compact(&catalog, &options).await {
                tracing::warn!(%error, "compaction failed; the next round tries again");
            }
        }
    });
}
