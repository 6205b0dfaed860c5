//! Answering commands: prune jobs on the catalog, then stream. One job's whole table streams
//! straight from its Parquet file; everything else (filters across jobs, best parameters,
//! comparisons, SQL) runs through DataFusion over just the files that survived pruning. Nothing
//! is collected first: every answer is a stream of record batches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::functions::expr_fn::ends_with;
use datafusion::logical_expr::ExprFunctionExt as _;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{DataFrame, Expr, SessionConfig, SessionContext, col, lit};
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::catalog::{Catalog, JobEntry, target_matches};
use crate::command::{Command, LossesQuery, Order, StatusFilter};
use crate::error::QueryError;
use crate::footers::OpenedTable;
use crate::table_cache::TableCache;
use modelops_core::parquet_file::ParquetObject;

/// The URL under which DataFusion sees the results store.
const RESULTS_URL: &str = "mops://results";

/// Rows per batch a scan over many tables answers in.
const BATCH_ROWS: usize = 64 * 1024;

/// Rows per batch decoded from Parquet. Smaller than [`BATCH_ROWS`]: a text column's values
/// are gathered into one buffer per batch, grown page by page, so a batch spanning four or five
/// pages (64k rows of `param_id`, 1 MB pages) copied most of its values again as the buffer
/// doubled, and into fresh memory. 16k rows of a loss table is also about one Flight message
/// ([`crate::flight_body::MAX_MESSAGE_BODY_BYTES`]), so batches are seldom sliced to be sent. A
/// whole 1M-row table read with 16k or 32k rows a batch took 10–20% less time than with 64k.
const DECODE_BATCH_ROWS: usize = 16 * 1024;

/// The loss table's text columns that hold one value or a few per table: a job's whole table
/// is served with them as dictionaries ([`served_schema`]), decoded from Parquet's own
/// dictionary pages and sent as such, where plain strings would repeat the job id and the bundle
/// ref on every row (most of a table's bytes).
pub const DICTIONARY_COLUMNS: [&str; 4] = ["job_id", "target", "bundle_digest", "status"];

/// A loss table's `stored` schema as a job's whole table is served (one job's losses, the
/// table cache, [`Engine::table_columns`]): its [`DICTIONARY_COLUMNS`] that are utf8 become
/// dictionaries of utf8 with int32 keys; every other column, and every answer across jobs, is
/// as stored.
pub fn served_schema(stored: &Schema) -> Schema {
    let fields: Vec<Field> = stored
        .fields()
        .iter()
        .map(|field| {
            let field = field.as_ref().clone();
            if DICTIONARY_COLUMNS.contains(&field.name().as_str()) && field.data_type() == &DataType::Utf8 {
                field.with_data_type(DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)))
            } else {
                field
            }
        })
        .collect();
    Schema::new_with_metadata(fields, stored.metadata().clone())
}

/// `schema` with each dictionary column as its values' type: the inverse of [`served_schema`].
pub fn expanded_schema(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Dictionary(_, values) => field.as_ref().clone().with_data_type(values.as_ref().clone()),
            _ => field.as_ref().clone(),
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// `batch` with each dictionary column expanded to its values ([`expanded_schema`]): a served
/// table as its Parquet file stores it.
pub fn expanded(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| matches!(f.data_type(), DataType::Dictionary(..))) {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .map(|column| match column.data_type() {
            DataType::Dictionary(_, values) => arrow::compute::cast(column, values),
            _ => Ok(Arc::clone(column)),
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    RecordBatch::try_new(Arc::new(expanded_schema(&schema)), columns)
}

/// `table` to be decoded in its [`served_schema`].
fn served(table: OpenedTable) -> Result<OpenedTable, QueryError> {
    let schema = Arc::new(served_schema(table.footer.schema()));
    let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_schema(schema);
    let footer = parquet::arrow::arrow_reader::ArrowReaderMetadata::try_new(Arc::clone(table.footer.metadata()), options)?;
    Ok(OpenedTable { footer, ..table })
}

/// The columns every loss table ends with, after its `param_*` columns.
const TAIL_COLUMNS: [&str; 7] = ["loss", "n_replicates", "target", "bundle_digest", "computed_at", "cache_hit", "status"];

/// `stream`, ended with a [`QueryTimeout`] error once `timeout` has passed; the query's own
/// stream is dropped then, which cancels its work.
fn with_deadline(stream: BatchStream, timeout: Duration) -> BatchStream {
    let schema = stream.schema();
    let limited = Deadline {
        inner: Some(stream),
        deadline: Box::pin(tokio::time::sleep(timeout)),
        timeout,
    };
    Box::pin(RecordBatchStreamAdapter::new(schema, limited))
}

/// See [`with_deadline`].
struct Deadline {
    /// The query's stream, until it ends or the deadline passes.
    inner: Option<BatchStream>,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl futures::Stream for Deadline {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future as _;
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else { return std::task::Poll::Ready(None) };
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.inner = None;
            let timeout = QueryTimeout(this.timeout);
            return std::task::Poll::Ready(Some(Err(datafusion::error::DataFusionError::External(Box::new(timeout)))));
        }
        let next = inner.as_mut().poll_next(cx);
        if let std::task::Poll::Ready(None) = next {
            this.inner = None;
        }
        next
    }
}

/// The error a query past its deadline ends with.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the query ran longer than its limit of {} s (set by --sql-timeout-seconds)", .0.as_secs())]
pub struct QueryTimeout(pub Duration);

/// A stream of record batches with its schema.
pub type BatchStream = SendableRecordBatchStream;

/// What the queries DataFusion runs (SQL, best parameters, comparisons, cross-job filters) may
/// use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    /// Memory for sorts, joins and aggregations, shared by the queries running at once; a query
    /// that needs more fails with RESOURCE_EXHAUSTED (nothing spills to disk).
    pub memory_bytes: usize,
    /// How long one query may run, its result stream included; then it ends with
    /// DEADLINE_EXCEEDED.
    pub timeout: Duration,
}

/// Default of [`SqlLimits::memory_bytes`].
pub const DEFAULT_SQL_MEMORY_BYTES: usize = 512 * 1024 * 1024;
/// Default of [`SqlLimits::timeout`].
pub const DEFAULT_SQL_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for SqlLimits {
    fn default() -> Self {
        Self {
            memory_bytes: DEFAULT_SQL_MEMORY_BYTES,
            timeout: DEFAULT_SQL_TIMEOUT,
        }
    }
}

/// Plans and runs commands over the catalog.
#[derive(Debug, Clone)]
pub struct Engine {
    catalog: Catalog,
    runtime: Arc<RuntimeEnv>,
    tables: TableCache,
    limits: SqlLimits,
}

impl Engine {
    /// An engine over `catalog`'s results store with the default [`SqlLimits`], keeping no table
    /// decoded (see [`Self::with_table_cache`]).
    pub fn new(catalog: Catalog) -> Result<Self, QueryError> {
        Self::with_limits(catalog, SqlLimits::default())
    }

    /// An engine over `catalog`'s results store whose queries stay within `limits`.
    pub fn with_limits(catalog: Catalog, limits: SqlLimits) -> Result<Self, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(limits.memory_bytes)))
            // A query over its memory fails instead of writing the excess to disk.
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .build_arc()?;
        let url = url::Url::parse(RESULTS_URL).expect("a valid URL");
        runtime.register_object_store(&url, Arc::clone(catalog.store()));
        Ok(Self {
            catalog,
            runtime,
            tables: TableCache::new(0),
            limits,
        })
    }

    /// The same engine, keeping the tables it reads whole in `tables`.
    pub fn with_table_cache(mut self, tables: TableCache) -> Self {
        self.tables = tables;
        self
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn session(&self) -> SessionContext {
        let mut config = SessionConfig::new().with_information_schema(true).with_batch_size(8192);
        // Filters are evaluated while decoding (late materialization): a selective loss range
        // reads the loss column, and the other columns only where rows match.
        config.options_mut().execution.parquet.pushdown_filters = true;
        config.options_mut().execution.parquet.reorder_filters = true;
        // The catalog already pruned by job; file statistics would cost a footer read per file
        // at planning time for no further pruning (each job's ranges are in the catalog).
        config.options_mut().execution.collect_statistics = false;
        // Loss values are spread across every page; the page index prunes nothing but costs a
        // read per file.
        config.options_mut().execution.parquet.enable_page_index = false;
        SessionContext::new_with_config_rt(config, Arc::clone(&self.runtime))
    }

    /// Refuses a target name that names several targets: a bare name (`prevalence_target`)
    /// matches every entrypoint ending in `:prevalence_target`, and two jobs (or one) may have
    /// two such targets, whose losses must not be mixed or ranked together.
    fn check_target(&self, command: &Command) -> Result<(), QueryError> {
        let wanted = match command {
            Command::Losses(query) => query.target.as_deref(),
            Command::BestParameters { target, .. } => Some(target.as_str()),
            Command::Compare { target, .. } => target.as_deref(),
            Command::Jobs | Command::Replicates { .. } | Command::Sql { .. } => None,
        };
        let Some(wanted) = wanted else { return Ok(()) };
        let matching: std::collections::BTreeSet<String> = self
            .catalog
            .jobs()
            .iter()
            .flat_map(|job| job.targets.iter().filter(|t| target_matches(&t.target, wanted)).map(|t| t.target.to_string()))
            .collect();
        if matching.len() > 1 {
            return Err(QueryError::InvalidArgument {
                field: "target".into(),
                message: format!(
                    "{wanted:?} names {} targets: {}; give one of them whole",
                    matching.len(),
                    matching.into_iter().collect::<Vec<_>>().join(", ")
                ),
            });
        }
        Ok(())
    }

    /// The schema `command` answers with, without running it.
    pub async fn schema(&self, command: &Command) -> Result<SchemaRef, QueryError> {
        self.check_target(command)?;
        match command {
            Command::Losses(query) => match query.single_table() {
                Some(job) => Ok(Arc::new(served_schema(&self.catalog.job(job).await?.schema))),
                None => Ok(unified_schema(&self.prune_losses(query).await?)),
            },
            Command::Jobs => Ok(jobs_schema()),
            Command::Replicates { job_id } => Ok(Arc::clone(self.open_replicates(job_id).await?.footer.schema())),
            _ => Ok(Arc::new(self.dataframe(command).await?.schema().as_arrow().clone())),
        }
    }

    /// Runs `command`.
    pub async fn execute(&self, command: &Command) -> Result<BatchStream, QueryError> {
        self.check_target(command)?;
        match command {
            Command::Losses(query) if query.single_table().is_some() => {
                let job = self.catalog.job(query.single_table().expect("checked")).await?;
                self.table_stream(job).await
            }
            Command::Losses(query) if query.order == Order::None => {
                let jobs = self.prune_losses(query).await?;
                Ok(self.scan(jobs, query))
            }
            Command::Jobs => {
                let batch = jobs_batch(&self.catalog.jobs())?;
                let schema = batch.schema();
                Ok(Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::once(async { Ok(batch) }))))
            }
            Command::Replicates { job_id } => {
                let table = self.open_replicates(job_id).await?;
                Ok(self.replicates_stream(table))
            }
            _ => {
                let planned = tokio::time::timeout(self.limits.timeout, async { self.dataframe(command).await?.execute_stream().await.map_err(QueryError::from) });
                let stream = planned.await.map_err(|_| QueryError::Timeout(self.limits.timeout))??;
                Ok(with_deadline(stream, self.limits.timeout))
            }
        }
    }

    /// Row count and byte size of what `command` returns, when known before running it.
    pub async fn size_hint(&self, command: &Command) -> Result<(i64, i64), QueryError> {
        if let Command::Losses(query) = command
            && let Some(job) = query.single_table()
        {
            let entry = self.catalog.job(job).await?;
            return Ok((entry.counts[0] as i64, entry.table_bytes as i64));
        }
        if let Command::Jobs = command {
            return Ok((self.catalog.jobs().len() as i64, -1));
        }
        if let Command::Replicates { job_id } = command {
            let entry = self.catalog.job(job_id).await?;
            let table = entry.replicates.as_ref().ok_or_else(|| QueryError::NoReplicates(job_id.clone()))?;
            return Ok((table.rows as i64, table.file.size as i64));
        }
        Ok((-1, -1))
    }

    /// One job's table in its [`served_schema`], rows in order: from the table cache when it
    /// holds this version of the table, else from Parquet, decoded on both cores
    /// ([`decoded_stream`]). A second read that runs to the end fills the cache.
    async fn table_stream(&self, job: Arc<JobEntry>) -> Result<BatchStream, QueryError> {
        let schema = Arc::new(served_schema(&job.schema));
        if let Some(batches) = self.tables.get(&job) {
            tracing::debug!(job = %job.job_id, "table read from the table cache");
            let batches: Vec<_> = batches.iter().cloned().map(Ok).collect();
            return Ok(Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::iter(batches))));
        }
        let opened = served(self.catalog.footers().open(self.catalog.store(), &job.table).await?)?;
        let keep = self.tables.should_keep(&job, opened.uncompressed_bytes());
        let decoded = decoded_stream(Arc::clone(self.catalog.store()), opened, None);
        let decoded = if keep { filling(self.tables.clone(), job, decoded).boxed() } else { decoded };
        let batches = decoded.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    /// The columns of the table version `job` names (an entry of this engine's catalog) named in
    /// `columns` (those it has, in the table's order), in its [`served_schema`]: for a reader that
    /// needs a few columns of a large table (the dashboard), which then decodes only those. From
    /// the table cache when it holds the table; a read of some columns never fills it.
    pub async fn table_columns(&self, job: &JobEntry, columns: &[&str]) -> Result<BatchStream, QueryError> {
        let indices: Vec<usize> = (0..job.schema.fields().len()).filter(|&i| columns.contains(&job.schema.field(i).name().as_str())).collect();
        let schema = Arc::new(served_schema(&job.schema).project(&indices)?);
        if let Some(batches) = self.tables.get(job) {
            let projected: Vec<_> = batches.iter().map(|batch| batch.project(&indices).map_err(datafusion::error::DataFusionError::from)).collect();
            return Ok(Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::iter(projected))));
        }
        let opened = served(self.catalog.footers().open(self.catalog.store(), &job.table).await?)?;
        let decoded = decoded_stream(Arc::clone(self.catalog.store()), opened, Some(indices));
        let batches = decoded.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    /// The values of the text column `column` of the table version `entry` names at the table
    /// rows `rows` (positions in the table's order, strictly ascending), as text. For a reader
    /// that needs a large column at a few rows only (the dashboard's parameter-set ids of its best
    /// rows, after [`Engine::table_columns`] of the same entry): only the pages of those rows are
    /// decoded, so a million ids are never held at once.
    pub async fn text_at(&self, entry: &JobEntry, column: &str, rows: &[u64]) -> Result<Vec<String>, QueryError> {
        use arrow::array::AsArray as _;
        let index = entry.schema.index_of(column).map_err(|_| QueryError::invalid("column", format!("the loss table has no column {column:?}")))?;
        if entry.schema.field(index).data_type() != &DataType::Utf8 {
            return Err(QueryError::invalid("column", format!("{column} is not a text column")));
        }
        let total = entry.counts[0];
        if !rows.windows(2).all(|pair| pair[0] < pair[1]) || rows.last().is_some_and(|&last| last >= total) {
            return Err(QueryError::invalid("rows", format!("expected strictly ascending rows under {total}")));
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut values = Vec::with_capacity(rows.len());
        if let Some(batches) = self.tables.get(entry) {
            // Held as served: a dictionary column's values are read through it.
            let (mut start, mut wanted) = (0_u64, rows.iter().peekable());
            for batch in batches.iter() {
                let end = start + batch.num_rows() as u64;
                let text = arrow::compute::cast(batch.column(index), &DataType::Utf8)?;
                let text = text.as_string::<i32>();
                while let Some(&&row) = wanted.peek().filter(|&&&row| row < end) {
                    values.push(text.value((row - start) as usize).to_owned());
                    wanted.next();
                }
                start = end;
            }
        } else {
            let opened = self.catalog.footers().open(self.catalog.store(), &entry.table).await?;
            let mut selectors = Vec::with_capacity(rows.len() * 2);
            let mut next = 0_u64;
            for &row in rows {
                if row > next {
                    selectors.push(parquet::arrow::arrow_reader::RowSelector::skip((row - next) as usize));
                }
                selectors.push(parquet::arrow::arrow_reader::RowSelector::select(1));
                next = row + 1;
            }
            let batches = decode_columns(Arc::clone(self.catalog.store()), opened, None, None, Some(vec![index]), Some(selectors.into())).await?;
            for batch in &batches {
                let text = batch.column(0).as_string_opt::<i32>().ok_or_else(|| QueryError::Catalog(format!("{column} was not decoded as text")))?;
                values.extend(text.iter().map(|value| value.unwrap_or_default().to_owned()));
            }
        }
        // A manifest that counts more rows than its table holds.
        if values.len() != rows.len() {
            return Err(QueryError::Catalog(format!("{} rows of {column} read for {} asked", values.len(), rows.len())));
        }
        Ok(values)
    }

    /// `job`'s per-replicate table, opened; [`QueryError::NoReplicates`] when it has none.
    async fn open_replicates(&self, job: &str) -> Result<OpenedTable, QueryError> {
        let entry = self.catalog.job(job).await?;
        let table = entry.replicates.as_ref().ok_or_else(|| QueryError::NoReplicates(job.to_owned()))?;
        self.catalog.footers().open(self.catalog.store(), &table.file).await
    }

    /// A job's per-replicate table as stored, in order: row groups decoded in tasks of their
    /// own, two at a time, as [`Self::table_stream`] does (without the table cache).
    fn replicates_stream(&self, table: OpenedTable) -> BatchStream {
        let schema = Arc::clone(table.footer.schema());
        let store = Arc::clone(self.catalog.store());
        let decoded = futures::stream::iter(0..table.row_groups())
            .map(move |group| decode_file(Arc::clone(&store), table.clone(), Some(vec![group]), None))
            .buffered(2)
            .flat_map(batches_of)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)));
        Box::pin(RecordBatchStreamAdapter::new(schema, decoded))
    }

    /// The rows of `jobs` that `query` selects, job after job, in the unified schema: each
    /// table is decoded in a task of its own and filtered with Arrow kernels. Consecutive jobs
    /// are read in chunks of about [`SCAN_CHUNK_ROWS`] rows (a larger job is a chunk of its
    /// own), [`SCAN_TABLES_IN_FLIGHT`] tables of a chunk at once and two chunks at a time: the
    /// reads of many small tables overlap, large tables are decoded two at a time. Stops reading
    /// once `limit` rows are sent.
    fn scan(&self, jobs: Vec<Arc<JobEntry>>, query: &LossesQuery) -> BatchStream {
        let schema = unified_schema(&jobs);
        let (store, footers) = (Arc::clone(self.catalog.store()), self.catalog.footers().clone());
        let filter = Arc::new(query.clone());
        // Jobs a compacted part stands for are read from it, the others from their own tables.
        let (jobs, part_scans) = self.catalog.parts().split(jobs);
        let from_parts = {
            let (store, footers, filter, schema) = (Arc::clone(&store), footers.clone(), Arc::clone(&filter), Arc::clone(&schema));
            futures::stream::iter(part_scans)
                .map(move |scan| read_part(Arc::clone(&store), footers.clone(), scan, Arc::clone(&filter), Arc::clone(&schema)))
                .buffered(2)
                .flat_map(batches_of)
        };
        let target_schema = Arc::clone(&schema);
        let read = move |job: Arc<JobEntry>| {
            let loss_range = (filter.min_loss, filter.max_loss);
            let (store, footers, filter, schema) = (Arc::clone(&store), footers.clone(), Arc::clone(&filter), Arc::clone(&target_schema));
            async move {
                let opened = footers.open(&store, &job.table).await?;
                decode_file(store, opened, None, Some(loss_range))
                    .await?
                    .iter()
                    .map(|batch| select_rows(batch, &filter).and_then(|b| conform(&b, &schema)))
                    .filter(|selected| selected.as_ref().map_or(true, |b| b.num_rows() > 0))
                    .collect::<Result<Vec<_>, QueryError>>()
            }
        };
        let batches = futures::stream::iter(chunks_by_rows(jobs, SCAN_CHUNK_ROWS))
            .map(move |chunk| futures::stream::iter(chunk).map(read.clone()).buffered(SCAN_TABLES_IN_FLIGHT).collect::<Vec<_>>())
            .buffered(2)
            .flat_map(futures::stream::iter)
            .flat_map(batches_of);
        let batches = coalesced(from_parts.chain(batches), Arc::clone(&schema), BATCH_ROWS)
            .scan(query.limit.unwrap_or(usize::MAX), |left, batch| {
                if *left == 0 {
                    return futures::future::ready(None);
                }
                let batch = batch.map(|b| {
                    let keep = b.num_rows().min(*left);
                    *left -= keep;
                    b.slice(0, keep)
                });
                futures::future::ready(Some(batch))
            })
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)));
        Box::pin(RecordBatchStreamAdapter::new(schema, batches))
    }

    /// The jobs a losses query can touch, by the catalog alone.
    async fn prune_losses(&self, query: &LossesQuery) -> Result<Vec<Arc<JobEntry>>, QueryError> {
        let candidates = match &query.job_ids {
            Some(ids) => {
                let mut jobs = Vec::with_capacity(ids.len());
                for id in ids {
                    jobs.push(self.catalog.job(id).await?);
                }
                jobs
            }
            None => self.catalog.jobs(),
        };
        let since = query.since.map(|t| t.timestamp_micros());
        let until = query.until.map(|t| t.timestamp_micros());
        let loss_bounded = query.min_loss.is_some() || query.max_loss.is_some();
        let kept = candidates
            .into_iter()
            .filter(|job| query.bundle_digest.as_deref().is_none_or(|b| job.is_of_bundle(b)))
            .filter(|job| {
                let (min, max, ok) = match &query.target {
                    Some(target) => match job.target(target) {
                        Some(t) => (t.min_loss, t.max_loss, t.ok),
                        None => return false,
                    },
                    None => (job.min_loss, job.max_loss, job.counts[1]),
                };
                if loss_bounded || query.status == Some(StatusFilter::Ok) {
                    if ok == 0 {
                        return false;
                    }
                    if query.min_loss.is_some_and(|lo| max.is_some_and(|max| max < lo)) || query.max_loss.is_some_and(|hi| min.is_some_and(|min| min > hi)) {
                        return false;
                    }
                }
                true
            })
            .filter(|job| match query.status {
                None | Some(StatusFilter::Ok) => true,
                Some(StatusFilter::Missing) => job.counts[2] > 0,
                Some(StatusFilter::Failed) => job.counts[3] > 0,
            })
            .filter(|job| {
                if since.is_none() && until.is_none() {
                    return true;
                }
                match job.computed_at_range {
                    None => false,
                    Some((first, last)) => since.is_none_or(|s| last >= s) && until.is_none_or(|u| first < u),
                }
            })
            .collect();
        Ok(kept)
    }

    /// A DataFusion table over the tables of `jobs`, typed as their unified schema.
    fn losses_table(&self, jobs: &[Arc<JobEntry>]) -> Result<Arc<dyn datafusion::catalog::TableProvider>, QueryError> {
        let schema = unified_schema(jobs);
        if jobs.is_empty() {
            return Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?));
        }
        let urls = jobs
            .iter()
            .map(|job| ListingTableUrl::parse(format!("{RESULTS_URL}/{}", job.table.location)))
            .collect::<Result<Vec<_>, _>>()?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(schema);
        Ok(Arc::new(ListingTable::try_new(config)?))
    }

    async fn dataframe(&self, command: &Command) -> Result<DataFrame, QueryError> {
        let ctx = self.session();
        match command {
            Command::Losses(query) => {
                let jobs = self.prune_losses(query).await?;
                let mut frame = ctx.read_table(self.losses_table(&jobs)?)?;
                let mut filters = Vec::new();
                if let Some(target) = &query.target {
                    filters.push(target_filter(target));
                }
                if let Some(status) = query.status {
                    filters.push(col("status").eq(lit(status.as_str())));
                }
                if let Some(lo) = query.min_loss {
                    filters.push(col("loss").gt_eq(lit(lo)));
                }
                if let Some(hi) = query.max_loss {
                    filters.push(col("loss").lt_eq(lit(hi)));
                }
                if let Some(since) = query.since {
                    filters.push(col("computed_at").gt_eq(timestamp(since.timestamp_micros())));
                }
                if let Some(until) = query.until {
                    filters.push(col("computed_at").lt(timestamp(until.timestamp_micros())));
                }
                if let Some(filter) = filters.into_iter().reduce(Expr::and) {
                    frame = frame.filter(filter)?;
                }
                match query.order {
                    Order::None => {}
                    Order::LossAsc | Order::LossDesc => {
                        let ascending = query.order == Order::LossAsc;
                        frame = frame.sort(vec![
                            col("loss").sort(ascending, false),
                            col("job_id").sort(true, false),
                            col("param_id").sort(true, false),
                            col("target").sort(true, false),
                        ])?;
                    }
                }
                if let Some(limit) = query.limit {
                    frame = frame.limit(0, Some(limit))?;
                }
                Ok(frame)
            }
            Command::BestParameters { target, n, bundle_digest } => {
                let jobs = self.best_candidates(target, *n, bundle_digest.as_deref());
                let threshold = jobs.1;
                let mut filter = target_filter(target).and(col("status").eq(lit("ok")));
                if let Some(threshold) = threshold {
                    filter = filter.and(col("loss").lt_eq(lit(threshold)));
                }
                // One row per parameter set and target: a set several jobs share (computed by
                // one, a cache hit in the others) is one of the best once, at its lowest loss,
                // from the job that computed it, else the first job.
                let first_of_set = datafusion::functions_window::expr_fn::row_number()
                    .partition_by(vec![col("param_id"), col("target")])
                    .order_by(vec![col("loss").sort(true, false), col("cache_hit").sort(true, false), col("job_id").sort(true, false)])
                    .build()?
                    .alias(SET_RANK);
                let frame = ctx.read_table(self.losses_table(&jobs.0)?)?.filter(filter)?;
                let columns: Vec<Expr> = frame.schema().columns().into_iter().map(Expr::Column).collect();
                Ok(frame
                    .window(vec![first_of_set])?
                    .filter(col(SET_RANK).eq(lit(1u64)))?
                    .sort(vec![col("loss").sort(true, false), col("job_id").sort(true, false), col("param_id").sort(true, false)])?
                    .limit(0, Some(*n))?
                    .select(columns)?)
            }
            Command::Compare { job_a, job_b, target } => {
                let a = self.catalog.job(job_a).await?;
                let b = self.catalog.job(job_b).await?;
                ctx.register_table("a", self.losses_table(std::slice::from_ref(&a))?)?;
                ctx.register_table("b", self.losses_table(std::slice::from_ref(&b))?)?;
                let params: Vec<String> = a
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name())
                    .filter(|name| name.starts_with("param_") && name.as_str() != "param_id")
                    .map(|name| format!("a.{}", quote_ident(name)))
                    .collect();
                let params = if params.is_empty() { String::new() } else { format!("{}, ", params.join(", ")) };
                let sql = format!(
                    "SELECT a.param_id, a.target, {params}a.loss AS loss_a, b.loss AS loss_b, b.loss - a.loss AS delta, \
                     a.status AS status_a, b.status AS status_b \
                     FROM a JOIN b ON a.param_id = b.param_id AND a.target = b.target \
                     ORDER BY a.param_id, a.target"
                );
                let joined = ctx.sql(&sql).await?;
                Ok(match target {
                    Some(target) => joined.filter(target_filter(target))?,
                    None => joined,
                })
            }
            Command::Jobs => {
                ctx.register_table("jobs", self.jobs_table()?)?;
                Ok(ctx.table("jobs").await?)
            }
            Command::Replicates { job_id } => {
                let table = self.open_replicates(job_id).await?;
                let url = ListingTableUrl::parse(format!("{RESULTS_URL}/{}", table.file.location))?;
                let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
                let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(Arc::clone(table.footer.schema()));
                Ok(ctx.read_table(Arc::new(ListingTable::try_new(config)?))?)
            }
            Command::Sql { query } => self.sql_frame(&ctx, query).await,
        }
    }

    /// `query` planned over `losses` and `jobs`, read-only (no DDL, DML or statements).
    async fn sql_frame(&self, ctx: &SessionContext, query: &str) -> Result<DataFrame, QueryError> {
        let jobs = self.catalog.jobs();
        ctx.register_table("losses", self.losses_table(&jobs)?)?;
        ctx.register_table("jobs", self.jobs_table()?)?;
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        Ok(ctx.sql_with_options(query, options).await?)
    }

    /// The parameters `query` takes (`$1`, `$2`, …), in order, with their types where the plan
    /// tells them.
    pub async fn sql_parameters(&self, query: &str) -> Result<Vec<(String, Option<arrow::datatypes::DataType>)>, QueryError> {
        let frame = self.sql_frame(&self.session(), query).await?;
        let mut parameters: Vec<(String, Option<arrow::datatypes::DataType>)> = frame.logical_plan().get_parameter_types()?.into_iter().collect();
        parameters.sort_by_key(|(name, _)| name.trim_start_matches('$').parse::<u64>().unwrap_or(u64::MAX));
        Ok(parameters)
    }

    /// `query` with `params` bound to its placeholders (`$1` is the first): its schema.
    pub async fn bound_sql_schema(&self, query: &str, params: Vec<ScalarValue>) -> Result<SchemaRef, QueryError> {
        let frame = self.sql_frame(&self.session(), query).await?.with_param_values(params)?;
        Ok(Arc::new(frame.schema().as_arrow().clone()))
    }

    /// Runs `query` with `params` bound to its placeholders, under the same limits as any query.
    pub async fn execute_bound_sql(&self, query: &str, params: Vec<ScalarValue>) -> Result<BatchStream, QueryError> {
        let planned = tokio::time::timeout(self.limits.timeout, async {
            let frame = self.sql_frame(&self.session(), query).await?.with_param_values(params)?;
            frame.execute_stream().await.map_err(QueryError::from)
        });
        let stream = planned.await.map_err(|_| QueryError::Timeout(self.limits.timeout))??;
        Ok(with_deadline(stream, self.limits.timeout))
    }

    fn jobs_table(&self) -> Result<Arc<dyn datafusion::catalog::TableProvider>, QueryError> {
        let batch = jobs_batch(&self.catalog.jobs())?;
        Ok(Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?))
    }

    /// The jobs that can hold one of the best `n` rows of `target`, and the loss no such row
    /// exceeds. Each summary lists its job's lowest losses per target: once `n` listed losses
    /// are known, the n-th smallest bounds the answer, and a job whose lowest loss is above it
    /// is never read.
    fn best_candidates(&self, target: &str, n: usize, bundle: Option<&str>) -> (Vec<Arc<JobEntry>>, Option<f64>) {
        let jobs: Vec<Arc<JobEntry>> = self
            .catalog
            .jobs()
            .into_iter()
            .filter(|job| bundle.is_none_or(|b| job.is_of_bundle(b)))
            .filter(|job| job.targets.iter().any(|t| target_matches(&t.target, target) && t.ok > 0))
            .collect();
        // The best listed loss of each parameter set: a set several jobs list counts once.
        let mut by_set: std::collections::HashMap<u64, f64> = std::collections::HashMap::new();
        for (param_id, loss) in jobs
            .iter()
            .flat_map(|job| job.targets.iter().filter(|t| target_matches(&t.target, target)).flat_map(|t| t.best.iter()))
        {
            let lowest = by_set.entry(*param_id).or_insert(*loss);
            *lowest = lowest.min(*loss);
        }
        let mut known: Vec<f64> = by_set.into_values().collect();
        if known.len() < n {
            return (jobs, None);
        }
        known.sort_by(f64::total_cmp);
        let threshold = known[n - 1];
        let kept = jobs
            .into_iter()
            .filter(|job| {
                job.targets
                    .iter()
                    .filter(|t| target_matches(&t.target, target))
                    .any(|t| t.min_loss.is_some_and(|min| min <= threshold))
            })
            .collect();
        (kept, Some(threshold))
    }
}

fn timestamp(micros: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into())))
}

/// Rows of a chunk of consecutive jobs a multi-job scan reads together (two chunks are in
/// flight at once).
const SCAN_CHUNK_ROWS: u64 = 128 * 1024;
/// Tables of a chunk a multi-job scan decodes at once, at most.
const SCAN_TABLES_IN_FLIGHT: usize = 8;

/// `jobs` in order, cut into runs of at most `rows` rows in all (a job of more is a run of its
/// own).
fn chunks_by_rows(jobs: Vec<Arc<JobEntry>>, rows: u64) -> Vec<Vec<Arc<JobEntry>>> {
    let mut chunks = Vec::new();
    let (mut chunk, mut in_chunk) = (Vec::new(), 0);
    for job in jobs {
        if !chunk.is_empty() && in_chunk + job.counts[0] > rows {
            chunks.push(std::mem::take(&mut chunk));
            in_chunk = 0;
        }
        in_chunk += job.counts[0];
        chunk.push(job);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// Decodes `row_groups` (all when `None`) of the opened `table` in a task of its own, keeping
/// the rows whose loss is within `loss_range` when one is given (the caller still applies every
/// filter to what comes out; this one only saves decoding).
async fn decode_file(
    store: Arc<dyn object_store::ObjectStore>,
    table: OpenedTable,
    row_groups: Option<Vec<usize>>,
    loss_range: Option<(Option<f64>, Option<f64>)>,
) -> Result<Vec<RecordBatch>, QueryError> {
    decode_columns(store, table, row_groups, loss_range, None, None).await
}

/// Every row of the opened `table`, as stored, decoded in a task of its own.
pub(crate) async fn decode_whole(store: Arc<dyn object_store::ObjectStore>, table: OpenedTable) -> Result<Vec<RecordBatch>, QueryError> {
    decode_file(store, table, None, None).await
}

/// [`decode_file`] of only the top-level `columns` (all when `None`), and of only the rows
/// `selection` selects (all when `None`).
async fn decode_columns(
    store: Arc<dyn object_store::ObjectStore>,
    table: OpenedTable,
    row_groups: Option<Vec<usize>>,
    loss_range: Option<(Option<f64>, Option<f64>)>,
    columns: Option<Vec<usize>>,
    selection: Option<parquet::arrow::arrow_reader::RowSelection>,
) -> Result<Vec<RecordBatch>, QueryError> {
    let filter = loss_range.and_then(|(lo, hi)| loss_row_filter(&table.footer, lo, hi));
    let projection = columns.map(|columns| parquet::arrow::ProjectionMask::roots(table.footer.metadata().file_metadata().schema_descr(), columns));
    let task = tokio::spawn(async move {
        if let Some(bytes) = table.bytes {
            let builder = configured(ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, table.footer), row_groups, filter, projection, selection);
            return Ok(builder.build()?.collect::<Result<Vec<RecordBatch>, _>>()?);
        }
        let reader = ParquetObject::new(store, table.file.location, table.file.size);
        let builder = configured(ParquetRecordBatchStreamBuilder::new_with_metadata(reader, table.footer), row_groups, filter, projection, selection);
        Ok::<_, QueryError>(builder.build()?.try_collect::<Vec<RecordBatch>>().await?)
    });
    task.await.map_err(|e| QueryError::Catalog(format!("table reader task failed: {e}")))?
}

/// `builder` reading `row_groups`, keeping what `filter` keeps, of the columns in `projection`,
/// the rows in `selection` (each when given), in batches of [`DECODE_BATCH_ROWS`]: the same choices for
/// the reader of bytes in memory and the reader by ranges.
fn configured<T>(
    builder: parquet::arrow::arrow_reader::ArrowReaderBuilder<T>,
    row_groups: Option<Vec<usize>>,
    filter: Option<parquet::arrow::arrow_reader::RowFilter>,
    projection: Option<parquet::arrow::ProjectionMask>,
    selection: Option<parquet::arrow::arrow_reader::RowSelection>,
) -> parquet::arrow::arrow_reader::ArrowReaderBuilder<T> {
    let mut builder = builder.with_batch_size(DECODE_BATCH_ROWS);
    if let Some(row_groups) = row_groups {
        builder = builder.with_row_groups(row_groups);
    }
    if let Some(filter) = filter {
        builder = builder.with_row_filter(filter);
    }
    if let Some(projection) = projection {
        builder = builder.with_projection(projection);
    }
    if let Some(selection) = selection {
        builder = builder.with_row_selection(selection);
    }
    builder
}

/// The `columns` (top-level indices, ascending; all when `None`) of the opened `table`, in
/// order. A table of one large row group is decoded as two halves of its columns at once
/// ([`decode_halves`]); a small table read whole at once; otherwise row groups are decoded in
/// tasks of their own, two at a time, so decoding uses both cores and overlaps sending, holding
/// at most two decoded row groups.
fn decoded_stream(
    store: Arc<dyn object_store::ObjectStore>,
    table: OpenedTable,
    columns: Option<Vec<usize>>,
) -> futures::stream::BoxStream<'static, Result<RecordBatch, QueryError>> {
    let one_large_group = table.row_groups() == 1 && table.footer.metadata().file_metadata().num_rows() >= SPLIT_GROUP_ROWS;
    if one_large_group {
        let columns = columns.unwrap_or_else(|| (0..table.footer.schema().fields().len()).collect());
        return futures::stream::once(decode_halves(store, table, columns)).flat_map(batches_of).boxed();
    }
    if table.bytes.is_some() {
        return futures::stream::once(decode_columns(store, table, None, None, columns, None)).flat_map(batches_of).boxed();
    }
    futures::stream::iter(0..table.row_groups())
        .map(move |group| decode_columns(Arc::clone(&store), table.clone(), Some(vec![group]), None, columns.clone(), None))
        .buffered(2)
        .flat_map(batches_of)
        .boxed()
}

/// A table with one row group of at least this many rows is decoded as two halves of its
/// columns at once ([`decode_halves`]): one row group is otherwise one core's work.
const SPLIT_GROUP_ROWS: i64 = 16 * 1024;

/// The `columns` (ascending) of `table`, its only row group decoded as a first and a last half
/// of those columns in two tasks at once, put side by side again. Both halves come in batches of
/// the same rows (the same batch size over the same rows, no filter).
async fn decode_halves(store: Arc<dyn object_store::ObjectStore>, table: OpenedTable, columns: Vec<usize>) -> Result<Vec<RecordBatch>, QueryError> {
    let schema = Arc::new(table.footer.schema().project(&columns)?);
    let (first, last) = columns.split_at(columns.len() / 2);
    let first = decode_columns(Arc::clone(&store), table.clone(), None, None, Some(first.to_vec()), None);
    let last = decode_columns(store, table, None, None, Some(last.to_vec()), None);
    let (first, last) = futures::try_join!(first, last)?;
    if first.len() != last.len() {
        return Err(QueryError::Catalog(format!("the two halves of a table came in {} and {} batches", first.len(), last.len())));
    }
    first
        .into_iter()
        .zip(last)
        .map(|(a, b)| Ok(RecordBatch::try_new(Arc::clone(&schema), a.columns().iter().chain(b.columns()).cloned().collect())?))
        .collect()
}

/// The rows of `scan`'s part that `query` selects, of the jobs the part stands for in this
/// scan only, in `schema`: only the row groups whose loss statistics meet the query's loss
/// range are decoded (a part is sorted by loss, so a narrow range reads one or two).
async fn read_part(
    store: Arc<dyn object_store::ObjectStore>,
    footers: crate::footers::FooterCache,
    scan: crate::parts::PartScan,
    query: Arc<LossesQuery>,
    schema: SchemaRef,
) -> Result<Vec<RecordBatch>, QueryError> {
    let opened = footers.open(&store, &scan.part.file).await?;
    let groups = row_groups_meeting(&opened.footer, query.min_loss, query.max_loss);
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let every_member = scan.jobs.len() == scan.part.members;
    let decoded = decode_file(store, opened, Some(groups), Some((query.min_loss, query.max_loss))).await?;
    decoded
        .iter()
        .map(|batch| {
            let selected = select_rows(batch, &query)?;
            let selected = if every_member { selected } else { rows_of_jobs(&selected, &scan.jobs)? };
            conform(&selected, &schema)
        })
        .filter(|selected| selected.as_ref().map_or(true, |b| b.num_rows() > 0))
        .collect()
}

/// The row groups of a table whose `loss` statistics meet `[lo, hi]` (all without bounds, and
/// any without statistics).
fn row_groups_meeting(footer: &parquet::arrow::arrow_reader::ArrowReaderMetadata, lo: Option<f64>, hi: Option<f64>) -> Vec<usize> {
    use parquet::file::statistics::Statistics;
    let metadata = footer.metadata();
    let leaf = loss_leaf(footer);
    (0..metadata.num_row_groups())
        .filter(|&group| {
            let Some(leaf) = leaf else { return true };
            match metadata.row_group(group).column(leaf).statistics() {
                Some(Statistics::Double(stats)) => {
                    let below = matches!((stats.max_opt(), lo), (Some(max), Some(lo)) if *max < lo);
                    let above = matches!((stats.min_opt(), hi), (Some(min), Some(hi)) if *min > hi);
                    let unlossed = stats.min_opt().is_none() && (lo.is_some() || hi.is_some());
                    !(below || above || unlossed)
                }
                _ => true,
            }
        })
        .collect()
}

/// The index of a table's `loss` column among its Parquet leaves.
fn loss_leaf(footer: &parquet::arrow::arrow_reader::ArrowReaderMetadata) -> Option<usize> {
    footer.metadata().file_metadata().schema_descr().columns().iter().position(|column| column.path().string() == "loss")
}

/// The rows of `batch` whose `job_id` is in `jobs`.
fn rows_of_jobs(batch: &RecordBatch, jobs: &std::collections::HashSet<String>) -> Result<RecordBatch, QueryError> {
    use arrow::array::AsArray as _;
    let ids = batch
        .column_by_name("job_id")
        .and_then(|column| column.as_string_opt::<i32>())
        .ok_or_else(|| QueryError::Catalog("a compacted part without a utf8 job_id column".into()))?;
    let keep: arrow::array::BooleanArray = ids.iter().map(|id| Some(id.is_some_and(|id| jobs.contains(id)))).collect();
    Ok(arrow::compute::filter_record_batch(batch, &keep)?)
}

/// A Parquet row filter keeping rows whose loss is within `[lo, hi]`: the loss column is
/// decoded first, and the other columns only for the rows it keeps (late materialization).
fn loss_row_filter(footer: &parquet::arrow::arrow_reader::ArrowReaderMetadata, lo: Option<f64>, hi: Option<f64>) -> Option<parquet::arrow::arrow_reader::RowFilter> {
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::{ArrowPredicateFn, RowFilter};
    if lo.is_none() && hi.is_none() {
        return None;
    }
    let schema = footer.metadata().file_metadata().schema_descr();
    let leaf = loss_leaf(footer)?;
    let predicate = ArrowPredicateFn::new(ProjectionMask::leaves(schema, [leaf]), move |batch: RecordBatch| {
        let mask = loss_in_range(batch.column(0), lo, hi)?.expect("a bound is set");
        Ok(nulls_never_match(mask))
    });
    Some(RowFilter::new(vec![Box::new(predicate)]))
}

/// `batches` as they come, keeping a copy of each (the arrays are shared, not copied) to hold
/// in `cache` as `job`'s table once the stream has ended without an error.
fn filling(
    cache: TableCache,
    job: Arc<JobEntry>,
    batches: impl futures::Stream<Item = Result<RecordBatch, QueryError>> + Send + 'static,
) -> impl futures::Stream<Item = Result<RecordBatch, QueryError>> + Send + 'static {
    futures::stream::unfold((batches.boxed(), Some(Vec::new())), move |(mut batches, mut kept)| {
        let (cache, job) = (cache.clone(), Arc::clone(&job));
        async move {
            match batches.next().await {
                Some(Ok(batch)) => {
                    if let Some(kept) = kept.as_mut() {
                        kept.push(batch.clone());
                    }
                    Some((Ok(batch), (batches, kept)))
                }
                Some(Err(e)) => Some((Err(e), (batches, None))),
                None => {
                    if let Some(kept) = kept {
                        cache.insert(&job, kept);
                    }
                    None
                }
            }
        }
    })
}

/// `batches` gathered into batches of up to `rows` rows (one of `rows / 2` or more passes as it
/// is): a scan of many jobs that each select a few rows would otherwise send thousands of tiny
/// batches, each a Flight message of its own. Ends at the first error.
fn coalesced(
    batches: impl futures::Stream<Item = Result<RecordBatch, QueryError>> + Send + 'static,
    schema: SchemaRef,
    rows: usize,
) -> impl futures::Stream<Item = Result<RecordBatch, QueryError>> + Send + 'static {
    /// Where the input stands.
    enum Input {
        Open,
        Ended,
        Failed,
    }
    let coalescer = arrow::compute::BatchCoalescer::new(schema, rows).with_biggest_coalesce_batch_size(Some(rows / 2));
    futures::stream::unfold((batches.boxed(), coalescer, Input::Open), |(mut batches, mut coalescer, mut input)| async move {
        loop {
            if matches!(input, Input::Failed) {
                return None;
            }
            if let Some(batch) = coalescer.next_completed_batch() {
                return Some((Ok(batch), (batches, coalescer, input)));
            }
            if matches!(input, Input::Ended) {
                return None;
            }
            let pushed = match batches.next().await {
                Some(Ok(batch)) => coalescer.push_batch(batch),
                Some(Err(e)) => return Some((Err(e), (batches, coalescer, Input::Failed))),
                None => {
                    input = Input::Ended;
                    coalescer.finish_buffered_batch()
                }
            };
            if let Err(e) = pushed {
                return Some((Err(e.into()), (batches, coalescer, Input::Failed)));
            }
        }
    })
}

/// A decoded piece of a table as a stream of its batches (or its error).
fn batches_of(decoded: Result<Vec<RecordBatch>, QueryError>) -> futures::stream::Iter<std::vec::IntoIter<Result<RecordBatch, QueryError>>> {
    let items = match decoded {
        Ok(batches) => batches.into_iter().map(Ok).collect(),
        Err(e) => vec![Err(e)],
    };
    futures::stream::iter(items)
}

/// The rows of `batch` (one job's table) that `query`'s row filters select.
fn select_rows(batch: &RecordBatch, query: &LossesQuery) -> Result<RecordBatch, QueryError> {
    use arrow::array::{BooleanArray, Scalar};
    use arrow::array::AsArray as _;
    use arrow::compute::kernels::{boolean, cmp};
    let column = |name: &str| batch.column_by_name(name).ok_or_else(|| QueryError::Catalog(format!("table without a {name} column")));
    let mut masks: Vec<BooleanArray> = Vec::new();
    if let Some(target) = &query.target {
        let targets = column("target")?.as_string_opt::<i32>().ok_or_else(|| QueryError::Catalog("target is not utf8".into()))?;
        masks.push(targets.iter().map(|t| Some(t.is_some_and(|t| target_matches(t, target)))).collect());
    }
    if let Some(status) = query.status {
        masks.push(cmp::eq(column("status")?, &Scalar::new(arrow::array::StringArray::from(vec![status.as_str()])))?);
    }
    if query.min_loss.is_some() || query.max_loss.is_some() {
        masks.extend(loss_in_range(column("loss")?, query.min_loss, query.max_loss)?);
    }
    let micros = |t: chrono::DateTime<chrono::Utc>| TimestampMicrosecondArray::new_scalar(t.timestamp_micros());
    if let Some(since) = query.since {
        let at = arrow::compute::cast(column("computed_at")?, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        masks.push(cmp::gt_eq(&at, &micros(since))?);
    }
    if let Some(until) = query.until {
        let at = arrow::compute::cast(column("computed_at")?, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        masks.push(cmp::lt(&at, &micros(until))?);
    }
    let Some(mask) = masks.into_iter().map(Ok).reduce(|a: Result<BooleanArray, QueryError>, b| Ok(boolean::and(&a?, &b?)?)) else {
        return Ok(batch.clone());
    };
    Ok(arrow::compute::filter_record_batch(batch, &nulls_never_match(mask?))?)
}

/// Where `loss` is within `[lo, hi]` (either bound optional; `None` without any). A null loss
/// (a missing row) compares as null.
fn loss_in_range(loss: &dyn arrow::array::Array, lo: Option<f64>, hi: Option<f64>) -> Result<Option<arrow::array::BooleanArray>, arrow::error::ArrowError> {
    use arrow::compute::kernels::{boolean, cmp};
    let above = lo.map(|lo| cmp::gt_eq(&loss, &Float64Array::new_scalar(lo))).transpose()?;
    let below = hi.map(|hi| cmp::lt_eq(&loss, &Float64Array::new_scalar(hi))).transpose()?;
    Ok(match (above, below) {
        (Some(above), Some(below)) => Some(boolean::and(&above, &below)?),
        (one, other) => one.or(other),
    })
}

/// `mask` with its nulls as false: a row whose value is missing never matches.
fn nulls_never_match(mask: arrow::array::BooleanArray) -> arrow::array::BooleanArray {
    use arrow::array::Array as _;
    if mask.nulls().is_some() { arrow::compute::prep_null_mask_filter(&mask) } else { mask }
}

/// `batch` in `schema`: its columns cast where the schema widened them, absent ones null.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, QueryError> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(Arc::clone(column)),
            Some(column) => Ok(arrow::compute::cast(column, field.data_type())?),
            None => Ok(arrow::array::new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<ArrayRef>, QueryError>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Rows whose target is `wanted`, by entrypoint or by the name after its last `:`.
/// The column that ranks a parameter set's rows across jobs in the best-parameters query.
const SET_RANK: &str = "__set_rank";

fn target_filter(wanted: &str) -> Expr {
    let exact = col("target").eq(lit(wanted));
    if wanted.contains([':', '/']) {
        exact
    } else {
        exact
            .or(ends_with(col("target"), lit(format!(":{wanted}"))))
            .or(ends_with(col("target"), lit(format!("/{wanted}"))))
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The schema of several jobs' rows together: `job_id`, `param_id`, every `param_*` column of
/// any of them (first seen first; int and float widen to float64, other mixes to utf8), then
/// the common tail.
pub fn unified_schema(jobs: &[Arc<JobEntry>]) -> SchemaRef {
    let mut params: Vec<(String, DataType)> = Vec::new();
    let mut tail: BTreeMap<&str, Field> = BTreeMap::new();
    for job in jobs {
        for field in job.schema.fields() {
            let name = field.name();
            if name == "job_id" || name == "param_id" {
                continue;
            }
            if TAIL_COLUMNS.contains(&name.as_str()) {
                tail.entry(TAIL_COLUMNS.iter().find(|c| **c == name).expect("tail column")).or_insert_with(|| field.as_ref().clone());
                continue;
            }
            match params.iter_mut().find(|(n, _)| n == name) {
                None => params.push((name.clone(), field.data_type().clone())),
                Some((_, existing)) if existing == field.data_type() => {}
                Some((_, existing)) => {
                    *existing = match (existing.clone(), field.data_type()) {
                        (DataType::Int64 | DataType::Float64, DataType::Int64 | DataType::Float64) => DataType::Float64,
                        _ => DataType::Utf8,
                    }
                }
            }
        }
    }
    let mut fields = vec![Field::new("job_id", DataType::Utf8, false), Field::new("param_id", DataType::Utf8, false)];
    fields.extend(params.into_iter().map(|(name, data_type)| Field::new(name, data_type, true)));
    for column in TAIL_COLUMNS {
        fields.push(tail.remove(column).unwrap_or_else(|| default_tail_field(column)));
    }
    Arc::new(Schema::new(fields))
}

fn default_tail_field(column: &str) -> Field {
    match column {
        "loss" => Field::new(column, DataType::Float64, true),
        "n_replicates" => Field::new(column, DataType::Int64, true),
        "computed_at" => Field::new(column, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
        "cache_hit" => Field::new(column, DataType::Boolean, false),
        _ => Field::new(column, DataType::Utf8, false),
    }
}

/// The schema of the `jobs` command and SQL table.
pub fn jobs_schema() -> SchemaRef {
    let utc = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("job_id", DataType::Utf8, false),
        Field::new("bundle_digest", DataType::Utf8, false),
        Field::new("targets", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false),
        Field::new("rows", DataType::Int64, false),
        Field::new("ok", DataType::Int64, false),
        Field::new("missing", DataType::Int64, false),
        Field::new("failed", DataType::Int64, false),
        Field::new("min_loss", DataType::Float64, true),
        Field::new("max_loss", DataType::Float64, true),
        Field::new("first_computed_at", utc(), true),
        Field::new("last_computed_at", utc(), true),
        Field::new("indexed_at", utc(), true),
        Field::new("schema_version", DataType::Int64, false),
        Field::new("table_bytes", DataType::Int64, false),
    ]))
}

/// One row per job, in job id order.
pub fn jobs_batch(jobs: &[Arc<JobEntry>]) -> Result<RecordBatch, QueryError> {
    let count = |i: usize| -> ArrayRef { Arc::new(jobs.iter().map(|j| j.counts[i] as i64).collect::<Int64Array>()) };
    let mut targets = ListBuilder::new(StringBuilder::new());
    for job in jobs {
        for target in &job.targets {
            targets.values().append_value(&target.target);
        }
        targets.append(true);
    }
    let utc = |values: Vec<Option<i64>>| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC")) };
    let indexed_at = jobs
        .iter()
        .map(|j| chrono::DateTime::parse_from_rfc3339(&j.indexed_at).ok().map(|t| t.timestamp_micros()))
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(jobs.iter().map(|j| Some(j.job_id.as_str())).collect::<StringArray>()),
        Arc::new(jobs.iter().map(|j| Some(&*j.bundle_digest)).collect::<StringArray>()),
        Arc::new(targets.finish()),
        count(0),
        count(1),
        count(2),
        count(3),
        Arc::new(jobs.iter().map(|j| j.min_loss).collect::<Float64Array>()),
        Arc::new(jobs.iter().map(|j| j.max_loss).collect::<Float64Array>()),
        utc(jobs.iter().map(|j| j.computed_at_range.map(|r| r.0)).collect()),
        utc(jobs.iter().map(|j| j.computed_at_range.map(|r| r.1)).collect()),
        utc(indexed_at),
        Arc::new(jobs.iter().map(|j| j.schema_version as i64).collect::<Int64Array>()),
        Arc::new(jobs.iter().map(|j| j.table_bytes as i64).collect::<Int64Array>()),
    ];
    Ok(RecordBatch::try_new(jobs_schema(), columns)?)
}

/// Drains a stream into batches (tests and the CLI's small answers).
pub async fn collect(stream: BatchStream) -> Result<Vec<RecordBatch>, QueryError> {
    Ok(stream.try_collect().await?)
}
