//! A job's loss landscape, reduced on the server so a page costs the same for any table size:
//!
//! - every row is read once; the loss histogram and the status counts cover every row;
//! - each landscape plot shows at most [`MAX_POINTS`] points (each target's lowest ringed): the [`KEEP_BEST`] lowest losses and
//!   an even sample (evenly spaced in table order) of the rest;
//! - the best parameter sets are the [`BEST_PER_TARGET`] lowest losses of each target.
//!
//! Rendered landscapes are kept per (job, indexing time) in a small cache (at most 8 jobs and
//! [`MAX_CACHED_ROWS`] rows), so revisiting a page costs nothing and a re-indexed job is
//! rendered afresh.

use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use modelops_query::catalog::JobEntry;
use modelops_query::Engine;

use crate::error::DashboardError;
use crate::memo::Memo;
use crate::plots::{self, Series};
use crate::text_column::TextColumn;

/// Most points drawn in one landscape plot.
pub const MAX_POINTS: usize = 2_000;
/// Lowest losses always drawn.
pub const KEEP_BEST: usize = 200;
/// Rows of each target in the best-parameters table.
pub const BEST_PER_TARGET: usize = 10;
/// Rows the landscape cache holds in all, beyond the newest landscape (whatever its size): about
/// 200 MB for three parameters (8 B per parameter, 24 B of loss and row order per row).
pub const MAX_CACHED_ROWS: usize = 4_000_000;
/// Rows without a loss listed on the page, at most.
pub const MAX_UNLOSSED_LISTED: usize = 200;

/// A row without a loss (missing or failed), as the page lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct UnlossedRow {
    /// Target.
    pub target: String,
    /// Parameter-set id.
    pub param_id: String,
    /// `missing` or `failed`.
    pub status: String,
    /// Each parameter's value as text (empty where the set lacks it).
    pub params: Vec<String>,
}

/// One row of the best-parameters table.
#[derive(Debug, Clone, PartialEq)]
pub struct BestRow {
    /// Target.
    pub target: String,
    /// Parameter-set id.
    pub param_id: String,
    /// Loss.
    pub loss: f64,
    /// Replicates aggregated.
    pub n_replicates: Option<i64>,
    /// Whether the result came from the cache.
    pub cache_hit: bool,
    /// Each parameter's value as text (empty where the set lacks it).
    pub params: Vec<String>,
}

/// A plot's axes: (log parameter axis, log loss axis).
type AxesKey = (bool, bool);

/// One parameter's plot: its points, drawn on request on the axes asked for, each choice of
/// axes drawn once.
#[derive(Debug)]
pub struct ParamPlot {
    /// The parameter's name (its column without `param_`).
    pub name: String,
    /// The drawn points of each target, (value, loss) as stored.
    series: Vec<Series>,
    /// Whether every drawn value is positive, so a log axis is possible.
    positive: bool,
    /// Whether the log axis is the default: positive values spanning over 100×.
    pub log_default: bool,
    /// The SVGs drawn so far, by (log parameter axis, log loss axis).
    drawn: Memo<AxesKey, Arc<str>>,
}

impl ParamPlot {
    fn new(name: &str, series: Vec<Series>) -> Self {
        let xs = || series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).filter(|x| x.is_finite());
        let positive = xs().next().is_some() && xs().all(|x| x > 0.0);
        let (lo, hi) = xs().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
        Self {
            name: name.to_owned(),
            log_default: positive && hi / lo > 100.0,
            positive,
            series,
            drawn: Memo::new(4),
        }
    }

    /// The SVG with the parameter on a log axis when `log_x` asks for one (`None`: the default)
    /// and every value is positive, and the loss on a log axis when `log_loss` (the caller checks
    /// that every loss is positive); with whether the parameter's axis is log.
    pub fn svg(&self, log_x: Option<bool>, log_loss: bool) -> Result<(Arc<str>, bool), DashboardError> {
        let log_x = log_x.unwrap_or(self.log_default) && self.positive;
        let svg = self.drawn.get_or_try_insert((log_x, log_loss), || self.draw(log_x, log_loss))?;
        Ok((svg, log_x))
    }

    /// Draws the SVG on the axes given.
    fn draw(&self, log_x: bool, log_loss: bool) -> Result<Arc<str>, DashboardError> {
        let scale = |log: bool, v: f64| if log { v.log10() } else { v };
        let series: Vec<Series> = self
            .series
            .iter()
            .map(|one| Series {
                label: one.label.clone(),
                points: one.points.iter().map(|&(x, loss)| (scale(log_x, x), scale(log_loss, loss))).collect(),
            })
            .collect();
        Ok(plots::landscape(&self.name, &series, log_loss, log_x).map_err(DashboardError::Plot)?.into())
    }
}

/// What the job page shows of a table.
#[derive(Debug)]
pub struct Landscape {
    /// Every parameter's name, in column order.
    pub param_names: Vec<String>,
    /// Plots of the numeric parameters.
    pub plots: Vec<ParamPlot>,
    /// Parameters not plotted (text values).
    pub unplotted: Vec<String>,
    /// The loss histogram's SVGs drawn so far, by log loss axis.
    histograms: Memo<bool, Arc<str>>,
    /// The best parameter sets, grouped by target.
    pub best: Vec<BestRow>,
    /// The targets, in order of first appearance.
    pub targets: Vec<String>,
    /// Rows in the table.
    pub rows: usize,
    /// Rows with a finite loss.
    pub ok_rows: usize,
    /// The first rows without a loss (at most [`MAX_UNLOSSED_LISTED`]), in table order.
    pub unlossed: Vec<UnlossedRow>,
    /// Points drawn in each plot.
    pub plotted: usize,
    /// Whether losses are drawn on a log scale by default: every loss positive, spanning over
    /// 1000×.
    pub log_loss: bool,
    /// Whether every loss is positive, so a log loss axis is possible.
    pub losses_positive: bool,
    /// The rows with a loss as columns, for the two-parameter views.
    pub explorer: crate::explore::Explorer,
    /// How long reading and reducing the table took, when built by [`build`].
    pub built: Option<(std::time::Duration, std::time::Duration)>,
    /// The rows shown whose parameter-set ids were not read (table position, where shown).
    unnamed: Vec<(u64, Unnamed)>,
}

/// Where a row whose parameter-set id the reduction did not read is shown.
#[derive(Debug, Clone, Copy)]
enum Unnamed {
    /// `unlossed[i]`.
    Unlossed(usize),
    /// `best[i]`.
    Best(usize),
    /// The explorer's row `r` (one of a target's lowest).
    Lowest(u32),
}

/// A row with a loss, as the reduction keeps it.
use crate::explore::LossRow as Point;

/// A parameter column and how it is drawn.
struct ParamColumn {
    index: usize,
    name: String,
    numeric: bool,
}

/// A parameter column as numbers: downcast once, then read by row.
pub(crate) enum Numeric<'a> {
    Float(&'a arrow::array::Float64Array),
    Int(&'a arrow::array::Int64Array),
    Bool(&'a arrow::array::BooleanArray),
    Other,
}

impl<'a> Numeric<'a> {
    /// `array` downcast (`Other` when it is not float64, int64 or bool).
    pub(crate) fn of(array: &'a dyn Array) -> Self {
        match array.data_type() {
            DataType::Float64 => Self::Float(array.as_primitive::<Float64Type>()),
            DataType::Int64 => Self::Int(array.as_primitive::<Int64Type>()),
            DataType::Boolean => Self::Bool(array.as_boolean()),
            _ => Self::Other,
        }
    }

    /// Row `r` as a float (booleans as 0 and 1), `None` when null or not numeric.
    pub(crate) fn get(&self, r: usize) -> Option<f64> {
        match self {
            Self::Float(a) if a.is_valid(r) => Some(a.value(r)),
            Self::Int(a) if a.is_valid(r) => Some(a.value(r) as f64),
            Self::Bool(a) if a.is_valid(r) => Some(f64::from(u8::from(a.value(r)))),
            _ => None,
        }
    }

    /// Row `r` as a float, NaN when null or not numeric.
    pub(crate) fn value(&self, r: usize) -> f64 {
        self.get(r).unwrap_or(f64::NAN)
    }
}

fn column_text(array: &dyn Array, row: usize) -> String {
    if array.is_null(row) {
        return String::new();
    }
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).to_owned(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).to_owned(),
        DataType::Float64 => crate::layout::number(array.as_primitive::<Float64Type>().value(row)),
        _ => arrow::util::display::array_value_to_string(array, row).unwrap_or_default(),
    }
}

fn utf8_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<TextColumn<'a>, DashboardError> {
    TextColumn::named(batch, name).ok_or_else(|| DashboardError::NotFound(format!("the loss table has no text column {name}")))
}

/// Indices of the points to draw: the `KEEP_BEST` lowest losses, then every k-th of the rest.
fn sample(points: &[Point]) -> Vec<usize> {
    if points.len() <= MAX_POINTS {
        return (0..points.len()).collect();
    }
    let mut by_loss: Vec<usize> = (0..points.len()).collect();
    by_loss.select_nth_unstable_by(KEEP_BEST, |&a, &b| points[a].loss.total_cmp(&points[b].loss));
    let mut chosen = vec![false; points.len()];
    for &i in &by_loss[..KEEP_BEST] {
        chosen[i] = true;
    }
    let rest = MAX_POINTS - KEEP_BEST;
    let others: Vec<usize> = (0..points.len()).filter(|&i| !chosen[i]).collect();
    for k in 0..rest {
        chosen[others[k * others.len() / rest]] = true;
    }
    (0..points.len()).filter(|&i| chosen[i]).collect()
}

/// Reduces and renders the loss landscape of `entry`'s table.
#[tracing::instrument(name = "dashboard_landscape", skip_all, fields(job = %entry.job_id))]
pub async fn build(engine: &Engine, entry: &JobEntry) -> Result<Landscape, DashboardError> {
    let started = std::time::Instant::now();
    // Every column but those the same for every row or not shown: a job's id and bundle as a
    // string per row are most of a large table's decoded bytes.
    let columns: Vec<&str> = entry
        .schema
        .fields()
        .iter()
        .map(|field| field.name().as_str())
        .filter(|name| !UNREAD_COLUMNS.contains(name))
        .collect();
    let batches = modelops_query::engine::collect(engine.table_columns(entry, &columns).await?).await?;
    let read = started.elapsed();
    let mut landscape = tokio::task::spawn_blocking(move || reduce(&batches))
        .await
        .map_err(|e| DashboardError::Plot(format!("rendering task failed: {e}")))??;
    // The few ids the page shows, read at their rows only, of the same table version.
    let rows = landscape.rows_to_name();
    if !rows.is_empty() {
        let ids = engine.text_at(entry, "param_id", &rows).await?;
        landscape.name_rows(&rows, ids);
    }
    landscape.built = Some((read, started.elapsed() - read));
    Ok(landscape)
}

/// The loss table's columns the landscape does not read: the job's id and bundle are the same
/// on every row, and the parameter-set ids (a large table's largest column) are read afterwards
/// at the few rows the page shows ([`Landscape::rows_to_name`]).
const UNREAD_COLUMNS: [&str; 4] = ["job_id", "bundle_digest", "computed_at", "param_id"];

/// The reduction and rendering behind [`build`], over a table's batches.
pub fn reduce(batches: &[RecordBatch]) -> Result<Landscape, DashboardError> {
    let Some(first) = batches.first() else {
        return Ok(Landscape {
            param_names: Vec::new(),
            plots: Vec::new(),
            unplotted: Vec::new(),
            histograms: Memo::new(2),
            best: Vec::new(),
            targets: Vec::new(),
            rows: 0,
            ok_rows: 0,
            unlossed: Vec::new(),
            plotted: 0,
            log_loss: false,
            losses_positive: false,
            explorer: crate::explore::Explorer::new(&[], &[], &[], Vec::new(), false)?,
            built: None,
            unnamed: Vec::new(),
        });
    };
    let schema = first.schema();
    let params: Vec<ParamColumn> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name().starts_with("param_") && f.name() != "param_id")
        .map(|(index, f)| ParamColumn {
            index,
            name: f.name().trim_start_matches("param_").to_owned(),
            numeric: matches!(f.data_type(), DataType::Float64 | DataType::Int64 | DataType::Boolean),
        })
        .collect();

    // Parameter-set ids come from the batches when they hold them; otherwise each row shown is
    // noted by its position in the table, for the caller to name ([`Landscape::name_rows`]).
    let with_ids = schema.column_with_name("param_id").is_some();
    let starts: Vec<u64> = batches
        .iter()
        .scan(0_u64, |at, batch| {
            let start = *at;
            *at += batch.num_rows() as u64;
            Some(start)
        })
        .collect();
    let mut unnamed: Vec<(u64, Unnamed)> = Vec::new();
    let id_at = |b: usize, row: usize| -> Result<Option<String>, DashboardError> {
        Ok(if with_ids { Some(utf8_column(&batches[b], "param_id")?.value(row).to_owned()) } else { None })
    };
    let mut targets: Vec<String> = Vec::new();
    // Room for every row at once: grown by doubling, a large table's rows would touch about
    // twice their bytes of fresh memory.
    let mut points = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    let mut unlossed = Vec::new();
    let mut rows = 0;
    for (b, batch) in batches.iter().enumerate() {
        rows += batch.num_rows();
        let target = utf8_column(batch, "target")?;
        let status = utf8_column(batch, "status")?;
        let loss = batch
            .column_by_name("loss")
            .and_then(|c| c.as_primitive_opt::<Float64Type>())
            .ok_or_else(|| DashboardError::NotFound("the loss table has no float64 loss column".into()))?;
        for row in 0..batch.num_rows() {
            let name = target.value(row);
            // Tables have a few targets: a scan of them costs less than hashing every row's.
            let t = match targets.iter().position(|t| t == name) {
                Some(t) => t,
                None => {
                    targets.push(name.to_owned());
                    targets.len() - 1
                }
            };
            if status.value(row) != "ok" || loss.is_null(row) || !loss.value(row).is_finite() {
                if unlossed.len() < MAX_UNLOSSED_LISTED {
                    let param_id = id_at(b, row)?.unwrap_or_else(|| {
                        unnamed.push((starts[b] + row as u64, Unnamed::Unlossed(unlossed.len())));
                        String::new()
                    });
                    unlossed.push(UnlossedRow {
                        target: target.value(row).to_owned(),
                        param_id,
                        status: status.value(row).to_owned(),
                        params: params.iter().map(|p| column_text(batch.column(p.index).as_ref(), row)).collect(),
                    });
                }
                continue;
            }
            points.push(Point {
                batch: b as u32,
                row: row as u32,
                target: t as u32,
                loss: loss.value(row),
            });
        }
    }

    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.loss), hi.max(p.loss)));
    let log_loss = plots::spans_log_scale(lo, hi);

    let drawn = sample(&points);
    let mut plots = Vec::new();
    let mut unplotted = Vec::new();
    // Without a single loss there is nothing to plot: the page lists the rows instead.
    for param in params.iter().filter(|_| !points.is_empty()) {
        if !param.numeric {
            unplotted.push(param.name.clone());
            continue;
        }
        let mut series: Vec<Series> = targets.iter().map(|t| Series::new(t)).collect();
        for &i in &drawn {
            let point = &points[i];
            let column = batches[point.batch as usize].column(param.index);
            if let Some(x) = Numeric::of(column.as_ref()).get(point.row as usize) {
                series[point.target as usize].points.push((x, point.loss));
            }
        }
        plots.push(ParamPlot::new(&param.name, series));
    }

    let numeric: Vec<(usize, String)> = params.iter().filter(|p| p.numeric).map(|p| (p.index, p.name.clone())).collect();
    let explorer = crate::explore::Explorer::new(batches, &numeric, &points, targets.clone(), log_loss)?;
    for r in explorer.rows_to_name() {
        let point = &points[r as usize];
        unnamed.push((starts[point.batch as usize] + u64::from(point.row), Unnamed::Lowest(r)));
    }

    // The best rows of each target: the explorer holds each target's rows in loss order, and its
    // rows are `points` in order.
    let mut best = Vec::new();
    for (t, name) in targets.iter().enumerate() {
        for index in explorer.lowest(t).take(BEST_PER_TARGET) {
            let point = &points[index];
            let batch = &batches[point.batch as usize];
            let row = point.row as usize;
            let param_id = id_at(point.batch as usize, row)?.unwrap_or_else(|| {
                unnamed.push((starts[point.batch as usize] + row as u64, Unnamed::Best(best.len())));
                String::new()
            });
            best.push(BestRow {
                target: name.clone(),
                param_id,
                loss: point.loss,
                n_replicates: batch
                    .column_by_name("n_replicates")
                    .and_then(|c| c.as_primitive_opt::<Int64Type>())
                    .and_then(|c| (!c.is_null(row)).then(|| c.value(row))),
                cache_hit: batch
                    .column_by_name("cache_hit")
                    .and_then(|c| c.as_boolean_opt())
                    .is_some_and(|c| c.value(row)),
                params: params.iter().map(|p| column_text(batch.column(p.index).as_ref(), row)).collect(),
            });
        }
    }


    Ok(Landscape {
        param_names: params.iter().map(|p| p.name.clone()).collect(),
        plots,
        unplotted,
        histograms: Memo::new(2),
        best,
        targets,
        rows,
        ok_rows: points.len(),
        unlossed,
        plotted: drawn.len(),
        log_loss,
        losses_positive: !points.is_empty() && lo > 0.0,
        explorer,
        built: None,
        unnamed,
    })
}

impl Landscape {
    /// The table rows (positions, ascending) whose parameter-set ids the page shows and the
    /// reduction did not read: it reads none when the batches have no `param_id`.
    pub fn rows_to_name(&self) -> Vec<u64> {
        let mut rows: Vec<u64> = self.unnamed.iter().map(|(row, _)| *row).collect();
        rows.sort_unstable();
        rows.dedup();
        rows
    }

    /// Names the rows of [`Landscape::rows_to_name`]: `ids[i]` is the id of `rows[i]`.
    pub fn name_rows(&mut self, rows: &[u64], ids: Vec<String>) {
        let id_of = |row: u64| rows.binary_search(&row).ok().and_then(|i| ids.get(i)).cloned().unwrap_or_default();
        let mut lowest = Vec::new();
        for (row, shown) in std::mem::take(&mut self.unnamed) {
            match shown {
                Unnamed::Unlossed(i) => self.unlossed[i].param_id = id_of(row),
                Unnamed::Best(i) => self.best[i].param_id = id_of(row),
                Unnamed::Lowest(r) => lowest.push((r, id_of(row))),
            }
        }
        self.explorer.name_rows(lowest);
    }

    /// Whether the loss axes are log: as `asked` (`None`: the default), where every loss is
    /// positive.
    pub fn log_loss_for(&self, asked: Option<bool>) -> bool {
        asked.unwrap_or(self.log_loss) && self.losses_positive
    }

    /// The histogram of every row's loss, one layer per target, on a log axis when `log` (see
    /// [`Landscape::log_loss_for`]); `None` without a loss. Each axis is drawn once.
    pub fn histogram(&self, log: bool) -> Result<Option<Arc<str>>, DashboardError> {
        if self.ok_rows == 0 {
            return Ok(None);
        }
        let svg = self.histograms.get_or_try_insert(log, || {
            let per_target = self.explorer.losses_by_target();
            let series: Vec<(&str, Vec<f64>)> = self
                .targets
                .iter()
                .map(String::as_str)
                .zip(per_target.into_iter().map(|losses| if log { losses.into_iter().map(f64::log10).collect() } else { losses }))
                .collect();
            Ok::<Arc<str>, DashboardError>(plots::histogram(&series, log).map_err(DashboardError::Plot)?.into())
        })?;
        Ok(Some(svg))
    }
}

/// Drops the oldest of `entries` (oldest first) until at most `capacity` remain and, beyond the
/// newest, they hold at most [`MAX_CACHED_ROWS`] rows: each holds its rows as columns.
fn evict<K>(entries: &mut Vec<(K, Arc<Landscape>)>, capacity: usize) {
    while entries.len() > 1 && (entries.len() > capacity || entries.iter().map(|(_, l)| l.rows).sum::<usize>() > MAX_CACHED_ROWS) {
        entries.remove(0);
    }
}

/// A cached landscape's key: the job and the time its table was indexed.
type LandscapeKey = (String, String);

/// Rendered landscapes of the last few jobs viewed, keyed by job and indexing time.
#[derive(Debug)]
pub struct LandscapeCache {
    capacity: usize,
    entries: Mutex<Vec<(LandscapeKey, Arc<Landscape>)>>,
}

impl LandscapeCache {
    /// A cache of at most `capacity` landscapes.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// The landscape of `entry`, rendered now unless cached for the same indexing.
    pub async fn get(&self, engine: &Engine, entry: &JobEntry) -> Result<Arc<Landscape>, DashboardError> {
        let key = (entry.job_id.clone(), entry.indexed_at.to_string());
        {
            let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(at) = entries.iter().position(|(k, _)| *k == key) {
                let hit = entries.remove(at);
                let landscape = Arc::clone(&hit.1);
                entries.push(hit);
                return Ok(landscape);
            }
        }
        let landscape = Arc::new(build(engine, entry).await?);
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.retain(|(k, _)| k.0 != key.0);
        entries.push((key, Arc::clone(&landscape)));
        evict(&mut entries, self.capacity);
        Ok(landscape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_the_newest_landscapes_within_its_count_and_rows() {
        let of_rows = |rows: usize| {
            let mut landscape = reduce(&[]).unwrap();
            landscape.rows = rows;
            Arc::new(landscape)
        };
        let mut entries: Vec<(usize, Arc<Landscape>)> = (0..10).map(|k| (k, of_rows(10))).collect();
        evict(&mut entries, 8);
        assert_eq!(entries.iter().map(|e| e.0).collect::<Vec<_>>(), (2..10).collect::<Vec<_>>());
        entries.push((10, of_rows(MAX_CACHED_ROWS - 50)));
        evict(&mut entries, 8);
        assert_eq!(entries.iter().map(|e| e.0).collect::<Vec<_>>(), vec![5, 6, 7, 8, 9, 10]);
        // One landscape over the budget still stays: it is the one just viewed.
        entries.push((11, of_rows(MAX_CACHED_ROWS * 2)));
        evict(&mut entries, 8);
        assert_eq!(entries.iter().map(|e| e.0).collect::<Vec<_>>(), vec![11]);
    }
}
