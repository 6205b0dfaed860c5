//! The provisional landscape of a job that has no loss table yet (it runs, or waits for its
//! index): the aggregations recorded so far, drawn as the final table would be and marked
//! provisional. The final table replaces it on the page as soon as the job is indexed.
//!
//! Where it comes from, through the services' APIs and the provenance store only:
//! - the parameter values from the job's spec, read once per job through the registry;
//! - the aggregations from the job's attribution edges, listed again at each refresh; each
//!   aggregation's `result.json` is read once from the provenance store (at most
//!   [`MAX_READS_PER_REFRESH`] per refresh, [`READ_CONCURRENCY`] at once, none over
//!   [`MAX_RESULT_BYTES`]). A result not there yet is read again at the next refresh.
//!
//! What it costs: a refresh happens only when someone views the job (the page, or its live
//! fragment after a progress event) and at most once per [`MIN_REFRESH_INTERVAL`] or five times
//! the last refresh's duration, whichever is longer, however many viewers there are; so the
//! reads stay under a fifth of one reader's time, and a job nobody views costs nothing. The
//! runners' reporting (edges, progress) is never waited on. At most [`MAX_LIVE_JOBS`] jobs are
//! held, the least recently viewed dropped first.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use futures::StreamExt;
use modelops_attribution_client::SharedAttribution;
use modelops_core::job::JobId;
use modelops_core::param_columns::{self, ParamColumn, ParamType};
use modelops_core::pyjson::{PyObject, PyValue};
use modelops_core::records;
use modelops_core::store::Store;
use modelops_core::study::JobSpec;
use modelops_registry_client::SharedRegistry;
use object_store::path::Path;

use crate::error::DashboardError;
use crate::landscape::Landscape;

/// Aggregation results read in one refresh, at most: a larger job fills in over several.
pub const MAX_READS_PER_REFRESH: usize = 20_000;
/// Results read at once.
pub const READ_CONCURRENCY: usize = 16;
/// The largest `result.json` read (upstream's are a few hundred bytes); a larger one is a failed
/// row.
pub const MAX_RESULT_BYTES: u64 = 1 << 20;
/// The shortest time between two refreshes of one job.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// Jobs whose provisional landscape is held.
pub const MAX_LIVE_JOBS: usize = 4;

/// A provisional landscape, as the page shows it.
#[derive(Debug)]
pub struct Provisional {
    /// The landscape of the rows read so far (absent before the first result).
    pub landscape: Option<Arc<Landscape>>,
    /// Aggregations read (rows).
    pub rows: usize,
    /// Aggregations the spec expects: parameter sets × targets.
    pub expected: usize,
    /// Recorded aggregations whose result is not in the provenance store yet, or left for the
    /// next refresh.
    pub pending: usize,
    /// Why the last refresh failed, if it did (the rows are those of the refresh before).
    pub error: Option<String>,
    /// When the rows were read.
    pub refreshed: Instant,
}

/// One row read from an aggregation's result.
#[derive(Debug, Clone)]
struct LiveRow {
    param_id: String,
    target: String,
    /// The loss, when the result holds a finite one.
    loss: Option<f64>,
    n_replicates: Option<i64>,
    cache_hit: bool,
}

/// The job's parameter sets, from its spec.
#[derive(Debug)]
struct SpecParams {
    columns: Vec<ParamColumn>,
    values: HashMap<String, PyObject>,
    targets: usize,
}

/// What is held of one job.
#[derive(Debug, Default)]
struct LiveJob {
    spec: Option<Arc<SpecParams>>,
    read: HashSet<String>,
    rows: Vec<LiveRow>,
    took: Duration,
    shown: Option<Arc<Provisional>>,
}

/// What a refresh reads through.
#[derive(Debug, Clone)]
pub struct LiveSources {
    /// The job's spec.
    pub registry: SharedRegistry,
    /// The job's aggregation edges.
    pub attribution: SharedAttribution,
    /// The aggregation results.
    pub provenance: Store,
}

/// The provisional landscapes of the jobs viewed last.
#[derive(Debug)]
pub struct LiveLandscapes {
    /// The shortest time between two refreshes of a job.
    min_interval: Duration,
    /// Also at least this many times the last refresh's duration.
    took_factor: u32,
    jobs: Mutex<Vec<(String, Arc<tokio::sync::Mutex<LiveJob>>)>>,
}

impl Default for LiveLandscapes {
    /// Refreshed at most once per [`MIN_REFRESH_INTERVAL`] or five times the last refresh's
    /// duration.
    fn default() -> Self {
        Self {
            min_interval: MIN_REFRESH_INTERVAL,
            took_factor: 5,
            jobs: Mutex::default(),
        }
    }
}

impl LiveLandscapes {
    /// Provisional landscapes refreshed on every view, for tests that step a job's reports.
    pub fn refreshed_on_every_view() -> Self {
        Self {
            min_interval: Duration::ZERO,
            took_factor: 0,
            jobs: Mutex::default(),
        }
    }

    /// The provisional landscape of `job`, refreshed first unless it was refreshed recently.
    /// Viewers of one job share a refresh: a second one waits for the first's result.
    pub async fn get(&self, sources: &LiveSources, job: &JobId) -> Result<Arc<Provisional>, DashboardError> {
        let held = {
            let mut jobs = self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let held = match jobs.iter().position(|(id, _)| id == job.as_str()) {
                Some(at) => jobs.remove(at).1,
                None => Arc::default(),
            };
            jobs.push((job.as_str().to_owned(), Arc::clone(&held)));
            if jobs.len() > MAX_LIVE_JOBS {
                jobs.remove(0);
            }
            held
        };
        let mut live = held.lock().await;
        if let Some(shown) = &live.shown
            && shown.refreshed.elapsed() < self.min_interval.max(live.took * self.took_factor)
        {
            return Ok(Arc::clone(shown));
        }
        let started = Instant::now();
        let outcome = live.refresh(sources, job).await;
        let (pending, error) = match outcome {
            Ok(pending) => (pending, None),
            Err(error) => {
                tracing::warn!(job = job.as_str(), %error, "provisional landscape: refresh failed");
                (live.shown.as_ref().map_or(0, |s| s.pending), Some(error.to_string()))
            }
        };
        let unchanged = live.shown.as_ref().is_some_and(|shown| shown.rows == live.rows.len());
        let landscape = match &live.spec {
            // Nothing new was read: the landscape drawn last still holds.
            _ if unchanged => live.shown.as_ref().and_then(|shown| shown.landscape.clone()),
            Some(spec) if !live.rows.is_empty() => {
                // Built off the async runtime, on the rows lent to the task and taken back.
                let (spec, rows) = (Arc::clone(spec), std::mem::take(&mut live.rows));
                let joined = tokio::task::spawn_blocking(move || {
                    let landscape = batch(&spec, &rows).and_then(|batch| crate::landscape::reduce(&[batch]));
                    (rows, landscape)
                })
                .await;
                let (rows, landscape) = match joined {
                    Ok(done) => done,
                    Err(error) => {
                        // The rows went down with the task: read every result again next time.
                        live.read.clear();
                        return Err(DashboardError::Plot(format!("rendering task failed: {error}")));
                    }
                };
                live.rows = rows;
                Some(Arc::new(landscape?))
            }
            _ => None,
        };
        // The whole refresh, rebuilding included, paces the next one.
        live.took = started.elapsed();
        let shown = Arc::new(Provisional {
            landscape,
            rows: live.rows.len(),
            expected: live.spec.as_ref().map_or(0, |s| s.values.len() * s.targets),
            pending,
            error,
            refreshed: Instant::now(),
        });
        live.shown = Some(Arc::clone(&shown));
        Ok(shown)
    }

    /// Forgets `job` (its table is committed: the page reads that now).
    pub fn forget(&self, job: &str) {
        self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|(id, _)| id != job);
    }
}

impl LiveJob {
    /// Reads the spec (once) and the results recorded since the last refresh; returns how many
    /// recorded aggregations are still to be read.
    async fn refresh(&mut self, sources: &LiveSources, job: &JobId) -> Result<usize, DashboardError> {
        let spec = match &self.spec {
            Some(spec) => Arc::clone(spec),
            None => {
                let spec = Arc::new(spec_params(&sources.registry, job).await?);
                self.spec = Some(Arc::clone(&spec));
                spec
            }
        };
        let mut fresh: Vec<(String, String, String, bool)> = Vec::new();
        let mut recorded_unread = 0usize;
        let read = &self.read;
        sources
            .attribution
            .visit_agg_edges(job, &mut |edge| {
                if read.contains(edge.path) || !spec.values.contains_key(edge.param_id) {
                    return;
                }
                recorded_unread += 1;
                if fresh.len() < MAX_READS_PER_REFRESH {
                    fresh.push((edge.path.to_owned(), edge.param_id.to_owned(), edge.target.to_owned(), edge.cache_hit));
                }
            })
            .await
            .map_err(DashboardError::Attribution)?;
        let store = Arc::clone(&sources.provenance.object_store);
        let mut reads = futures::stream::iter(fresh)
            .map(|(path, param_id, target, cache_hit)| {
                let store = Arc::clone(&store);
                async move {
                    let read = read_result(store.as_ref(), &path).await;
                    (path, param_id, target, cache_hit, read)
                }
            })
            .buffer_unordered(READ_CONCURRENCY);
        while let Some((path, param_id, target, cache_hit, read)) = reads.next().await {
            let result = match read? {
                ResultRead::Absent => continue,
                ResultRead::Result(result) => Some(result),
                ResultRead::Unusable => None,
            };
            recorded_unread -= 1;
            self.read.insert(path);
            self.rows.push(LiveRow {
                param_id,
                target,
                loss: result.as_ref().map(|r| r.loss).filter(|l| l.is_finite()),
                n_replicates: result.map(|r| r.n_replicates),
                cache_hit,
            });
        }
        Ok(recorded_unread)
    }
}

/// The parameter sets of `job`'s spec.
async fn spec_params(registry: &SharedRegistry, job: &JobId) -> Result<SpecParams, DashboardError> {
    let (_, bytes) = registry.spec_bytes(job).await?;
    let spec = match JobSpec::from_json(&bytes) {
        Ok(JobSpec::Simulation(spec)) => spec,
        Ok(JobSpec::Calibration { .. }) => {
            return Err(DashboardError::NotFound(format!("job {:?} is a calibration job; its sets are not in its spec", job.as_str())));
        }
        Err(error) => return Err(DashboardError::NotFound(format!("job {:?}: its spec is unreadable: {error}", job.as_str()))),
    };
    let columns = param_columns::param_columns(&spec);
    let values = spec.task_groups().into_iter().map(|g| (g.param_id.to_owned(), g.values.clone())).collect();
    Ok(SpecParams {
        columns,
        values,
        targets: spec.target_entrypoints().len().max(1),
    })
}

/// What reading one aggregation's result gave.
enum ResultRead {
    /// Not written yet (or gone).
    Absent,
    /// Its loss and replicates.
    Result(records::AggResult),
    /// Too large, malformed or unreadable: a failed row.
    Unusable,
}

async fn read_result(store: &dyn object_store::ObjectStore, dir: &str) -> Result<ResultRead, DashboardError> {
    let Ok(dir) = Path::parse(dir) else { return Ok(ResultRead::Unusable) };
    let path = dir.clone().join(records::RESULT_FILE);
    Ok(match records::read_bounded(store, &path, MAX_RESULT_BYTES).await? {
        records::BoundedRead::Absent => ResultRead::Absent,
        records::BoundedRead::Refused(_) | records::BoundedRead::TooLarge(_) => ResultRead::Unusable,
        records::BoundedRead::Bytes(bytes) => records::parse_agg_result(&path, &bytes).map_or(ResultRead::Unusable, ResultRead::Result),
    })
}

/// The rows as a batch of the loss table's columns that the landscape reads.
fn batch(spec: &SpecParams, rows: &[LiveRow]) -> Result<RecordBatch, DashboardError> {
    let mut fields = vec![Field::new("param_id", DataType::Utf8, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.param_id.as_str())))];
    for column in &spec.columns {
        let value = |row: &LiveRow| spec.values.get(&row.param_id).and_then(|v| v.get(&column.name));
        let (data_type, array): (DataType, ArrayRef) = match column.kind {
            ParamType::Int | ParamType::Float => (DataType::Float64, Arc::new(rows.iter().map(|r| value(r).and_then(PyValue::as_f64)).collect::<Float64Array>())),
            ParamType::Bool => (
                DataType::Boolean,
                Arc::new(rows.iter().map(|r| match value(r) { Some(PyValue::Bool(b)) => Some(*b), _ => None }).collect::<BooleanArray>()),
            ),
            ParamType::Text => (DataType::Utf8, Arc::new(rows.iter().map(|r| value(r).map(param_columns::text_of)).collect::<StringArray>())),
        };
        fields.push(Field::new(column.column_name(), data_type, true));
        columns.push(array);
    }
    fields.extend([
        Field::new("loss", DataType::Float64, true),
        Field::new("n_replicates", DataType::Int64, true),
        Field::new("target", DataType::Utf8, false),
        Field::new("cache_hit", DataType::Boolean, false),
        Field::new("status", DataType::Utf8, false),
    ]);
    columns.extend([
        Arc::new(rows.iter().map(|r| r.loss).collect::<Float64Array>()) as ArrayRef,
        Arc::new(rows.iter().map(|r| r.n_replicates).collect::<Int64Array>()),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.target.as_str()))),
        Arc::new(rows.iter().map(|r| Some(r.cache_hit)).collect::<BooleanArray>()),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| if r.loss.is_some() { "ok" } else { "failed" }))),
    ]);
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}
