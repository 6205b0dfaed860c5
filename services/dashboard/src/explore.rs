//! A job's parameter space, held for exploring: every row with a loss as columns (each numeric
//! parameter, the loss, the target), from which the job page computes on request
//!
//! - a **two-parameter landscape**: the plane of two parameters cut into a grid of cells, each
//!   cell holding the minimum (or mean) loss of its rows, with the lowest rows as points;
//! - per target, once per table version, a cheap **sensitivity** measure: with every parameter
//!   cut into `B` equal-width bins (on a log axis when it is positive and spans more than 100×),
//!   a parameter's *importance* is the share of the loss variance its binned marginal means
//!   explain, `Σ_b n_b (m_b − m)² / Σ_r (y_r − m)²` (a first-order index, as a binned fANOVA
//!   estimates it), and a pair's *interaction* is the share its cells' means explain beyond both
//!   marginals, `Σ_c n_c (m_c − m_i − m_j + m)² / Σ_r (y_r − m)²`. The loss enters on the scale
//!   the page draws it (log10 when it spans over three orders of magnitude), and
//!   `B = clamp(⌊√(n/5)⌋, 2, 8)` keeps about five rows per cell in small tables. The default
//!   pair of the landscape is the pair with the strongest interaction: on the demo, β and γ,
//!   whose ratio R0 = β/γ decides the epidemic.
//!
//! Filters apply to the landscape: one target, the best `keep` percent of its rows, log axes,
//! the minimum or mean per cell, the `top` lowest rows drawn as points. All are bounded: the
//! grid has at most [`MAX_GRID`]² cells, at most [`MAX_TOP`] points are drawn, and parameter-set
//! ids are kept only for each target's [`MAX_TOP`] lowest rows.

use std::collections::HashMap;

use arrow::array::{AsArray, RecordBatch};

use crate::error::DashboardError;
use crate::memo::Memo;

/// Most cells along one side of a landscape's grid.
pub const MAX_GRID: usize = 32;
/// Most cells along one side of a pair matrix's small grids.
pub const MATRIX_GRID: usize = 12;
/// Most rows drawn as points on a landscape (and named by their parameter-set id).
pub const MAX_TOP: usize = 200;
/// Rows drawn as points when the page does not say.
pub const DEFAULT_TOP: usize = 10;
/// Most parameters of a pair matrix (28 pairs).
pub const MAX_MATRIX_PARAMS: usize = 8;

/// One axis of a plot: the range of a parameter, linear or log10.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axis {
    /// Lowest value, on the axis' scale (log10 of it on a log axis).
    pub lo: f64,
    /// Highest value, on the axis' scale.
    pub hi: f64,
    /// Whether the axis is log10.
    pub log: bool,
}

impl Axis {
    /// The axis over `values` (the finite ones), log10 when `log` and every value is positive;
    /// `None` without a finite value.
    pub fn over(values: impl Iterator<Item = f64>, log: bool) -> Option<Self> {
        let (mut lo, mut hi, mut positive) = (f64::INFINITY, f64::NEG_INFINITY, true);
        for value in values.filter(|v| v.is_finite()) {
            lo = lo.min(value);
            hi = hi.max(value);
            positive &= value > 0.0;
        }
        if lo > hi {
            return None;
        }
        let log = log && positive;
        let (lo, hi) = if log { (lo.log10(), hi.log10()) } else { (lo, hi) };
        // A single value still gets a width, so it sits in the middle of the axis: half a decade
        // on a log axis, half its size (or ±0.5 for zero) on a linear one.
        let (lo, hi) = if hi - lo <= f64::EPSILON * lo.abs().max(1.0) {
            let pad = if log || lo == 0.0 { 0.5 } else { lo.abs() * 0.5 };
            (lo - pad, hi + pad)
        } else {
            (lo, hi)
        };
        Some(Self { lo, hi, log })
    }

    /// `value` on the axis' scale.
    pub fn scaled(&self, value: f64) -> f64 {
        if self.log { value.log10() } else { value }
    }

    /// Where `value` lies on the axis, 0 at `lo` and 1 at `hi` (outside for values outside).
    pub fn fraction(&self, value: f64) -> f64 {
        (self.scaled(value) - self.lo) / (self.hi - self.lo)
    }

    /// The bin of `value` among `bins` equal ones, `None` when it is not finite or off the axis.
    pub fn bin(&self, value: f64, bins: usize) -> Option<usize> {
        let at = self.fraction(value);
        (at.is_finite() && (0.0..=1.0).contains(&at)).then(|| ((at * bins as f64) as usize).min(bins - 1))
    }

    /// The parameter's value at `fraction` of the axis.
    pub fn value_at(&self, fraction: f64) -> f64 {
        let scaled = self.lo + fraction * (self.hi - self.lo);
        if self.log { 10f64.powf(scaled) } else { scaled }
    }
}

/// The sensitivity of one target's loss to the parameters (see the module's documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct Sensitivity {
    /// Rows of the target with a loss.
    pub rows: usize,
    /// Each parameter's importance, in [0, 1], in parameter order.
    pub importance: Vec<f64>,
    /// Every pair's interaction, in [0, 1], strongest first: (parameter, parameter, share).
    pub interactions: Vec<(usize, usize, f64)>,
}

/// A job's rows with a loss, as columns (see the module's documentation).
#[derive(Debug)]
pub struct Explorer {
    /// The numeric parameters, in column order (names without `param_`).
    pub params: Vec<String>,
    /// The targets, in order of first appearance.
    pub targets: Vec<String>,
    /// Whether the loss is drawn on a log scale.
    pub log_loss: bool,
    /// Per target, its sensitivity: computed when the target is first viewed, then kept.
    sensitivity: Vec<std::sync::OnceLock<Sensitivity>>,
    /// `columns[p][r]`: parameter `p` of row `r` (NaN where the set lacks it).
    columns: Vec<Vec<f64>>,
    /// Each row's loss.
    loss: Vec<f64>,
    /// Each row's loss on the drawn scale (log10 of it on a log scale).
    drawn: Vec<f64>,
    /// Each target's rows, from the lowest loss up (ties in table order).
    by_target: Vec<Vec<u32>>,
    /// Each target's rows in table order, so a pass over them reads the columns in sequence.
    in_table_order: Vec<Vec<u32>>,
    /// The parameter-set ids of each target's lowest rows.
    names: HashMap<u32, String>,
    /// Whether each parameter is best read on a log axis (see [`spans_decades`]).
    log_default: Vec<bool>,
    /// The pair matrix's grids of the last [`MATRIX_CACHE`] (target, keep) choices.
    matrix: Memo<(usize, u64), std::sync::Arc<Vec<Grid>>>,
    /// The two-parameter sections drawn for the last [`MATRIX_CACHE`] views, by view.
    pub(crate) sections: Memo<String, maud::Markup>,
}

/// A table row with a loss, as the landscape reads it: 24 bytes, a million of them for a large
/// table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossRow {
    /// Its batch.
    pub batch: u32,
    /// Its row in the batch.
    pub row: u32,
    /// Its target (index in the landscape's targets).
    pub target: u32,
    /// Its loss.
    pub loss: f64,
}

/// A row as an overlay draws it: its parameter values (in parameter order) and loss.
pub type OverlayRow = (Vec<f64>, f64);

/// (target, keep) choices whose pair matrix is kept.
pub const MATRIX_CACHE: usize = 8;

/// A row as the landscape draws it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The row's parameter-set id.
    pub param_id: String,
    /// Its loss.
    pub loss: f64,
    /// Its value of every numeric parameter, in parameter order.
    pub values: Vec<f64>,
}

/// One cell of a landscape's grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    /// Rows in the cell.
    pub count: u32,
    /// Their lowest loss.
    pub min: f64,
    /// Their mean loss (on the drawn scale).
    pub mean: f64,
}

/// How a cell sums up its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellValue {
    /// The lowest loss: where the good sets are.
    Min,
    /// The mean loss (on the drawn scale): how the whole region does.
    Mean,
}

/// A two-parameter landscape of one target.
#[derive(Debug, Clone)]
pub struct Grid {
    /// The target.
    pub target: usize,
    /// The parameter across.
    pub x: usize,
    /// The parameter up.
    pub y: usize,
    /// Its axes.
    pub x_axis: Axis,
    /// See `x_axis`.
    pub y_axis: Axis,
    /// Cells along each side.
    pub size: usize,
    /// `size × size` cells, row by row from the bottom (`cells[j * size + i]`, `i` across);
    /// `None` where no row falls.
    pub cells: Vec<Option<Cell>>,
    /// The lowest rows, lowest first.
    pub points: Vec<Point>,
    /// Rows in the grid (after the filter).
    pub rows: usize,
    /// The highest loss kept by `keep`, when it dropped rows (`keep` keeps the ceiling of that
    /// percent of the target's rows, lowest first).
    pub threshold: Option<f64>,
}

impl Grid {
    /// The cell of the lowest value (of `value`), as (across, up).
    pub fn best_cell(&self, value: CellValue) -> Option<(usize, usize)> {
        self.cells
            .iter()
            .enumerate()
            .filter_map(|(at, cell)| cell.map(|c| (at, pick(&c, value))))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(at, _)| (at % self.size, at / self.size))
    }
}

/// A cell's value of `value`.
pub fn pick(cell: &Cell, value: CellValue) -> f64 {
    match value {
        CellValue::Min => cell.min,
        CellValue::Mean => cell.mean,
    }
}

/// What a landscape shows: which target and pair, and the filters.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The target.
    pub target: usize,
    /// The parameter across.
    pub x: usize,
    /// The parameter up.
    pub y: usize,
    /// Log axes.
    pub log_x: bool,
    /// See `log_x`.
    pub log_y: bool,
    /// The best percent of the target's rows kept, in (0, 100].
    pub keep: f64,
    /// Rows drawn as points.
    pub top: usize,
    /// What each cell shows.
    pub value: CellValue,
    /// Only rows whose parameter across lies in this range (a zoom), the axis spanning it.
    pub x_range: Option<(f64, f64)>,
    /// See `x_range`.
    pub y_range: Option<(f64, f64)>,
}

/// Cells along each side for `rows` rows: about three rows a cell, within [4, `max`].
pub fn grid_size(rows: usize, max: usize) -> usize {
    (((rows as f64) / 3.0).sqrt().round() as usize).clamp(4, max)
}

/// Bins along each parameter for the sensitivity of `rows` rows.
fn sensitivity_bins(rows: usize) -> usize {
    (((rows as f64) / 5.0).sqrt().floor() as usize).clamp(2, 8)
}

/// Whether a parameter's values suit a log axis: positive and spanning more than 100×.
fn spans_decades(values: impl Iterator<Item = f64>) -> bool {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for value in values.filter(|v| v.is_finite()) {
        lo = lo.min(value);
        hi = hi.max(value);
    }
    lo > 0.0 && hi / lo > 100.0
}

impl Explorer {
    /// The explorer of a table's batches: the rows at `rows` ((batch, row) with target index and
    /// loss), the numeric parameter columns `params` ((column index, name)).
    pub fn new(
        batches: &[RecordBatch],
        params: &[(usize, String)],
        rows: &[LossRow],
        targets: Vec<String>,
        log_loss: bool,
    ) -> Result<Self, DashboardError> {
        let mut columns: Vec<Vec<f64>> = vec![Vec::with_capacity(rows.len()); params.len()];
        let mut loss = Vec::with_capacity(rows.len());
        let mut by_target: Vec<Vec<u32>> = vec![Vec::new(); targets.len()];
        // Each batch's parameter columns, downcast once (not once per value).
        let typed: Vec<Vec<crate::landscape::Numeric<'_>>> = batches.iter().map(|batch| params.iter().map(|(index, _)| crate::landscape::Numeric::of(batch.column(*index).as_ref())).collect()).collect();
        for (k, row) in rows.iter().enumerate() {
            for (column, numeric) in columns.iter_mut().zip(&typed[row.batch as usize]) {
                column.push(numeric.value(row.row as usize));
            }
            loss.push(row.loss);
            by_target[row.target as usize].push(k as u32);
        }
        // Each target's rows from the lowest loss up; the ids of the lowest, so points can be named
        // (when the batches hold no ids, the caller names them: [`Explorer::rows_to_name`]).
        let mut names = HashMap::new();
        let in_table_order = by_target.clone();
        for of_target in &mut by_target {
            // Sorted as (loss, row) pairs: the comparisons read neighbours, not the loss column at
            // random.
            let mut keyed: Vec<(f64, u32)> = of_target.iter().map(|&r| (loss[r as usize], r)).collect();
            keyed.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            *of_target = keyed.into_iter().map(|(_, r)| r).collect();
            for &r in of_target.iter().take(MAX_TOP) {
                let LossRow { batch, row, .. } = rows[r as usize];
                if let Some(ids) = batches[batch as usize].column_by_name("param_id").and_then(|c| c.as_string_opt::<i32>()) {
                    names.insert(r, ids.value(row as usize).to_owned());
                }
            }
        }
        let mut explorer = Self {
            params: params.iter().map(|(_, name)| name.clone()).collect(),
            targets,
            log_loss,
            sensitivity: Vec::new(),
            drawn: if log_loss { loss.iter().map(|l| l.log10()).collect() } else { loss.clone() },
            columns,
            loss,
            by_target,
            in_table_order,
            names,
            log_default: Vec::new(),
            matrix: Memo::new(MATRIX_CACHE),
            sections: Memo::new(MATRIX_CACHE),
        };
        explorer.log_default = explorer.columns.iter().map(|c| spans_decades(c.iter().copied())).collect();
        explorer.sensitivity = (0..explorer.targets.len()).map(|_| std::sync::OnceLock::new()).collect();
        Ok(explorer)
    }

    /// The rows whose parameter-set ids the views show (each target's [`MAX_TOP`] lowest) and
    /// that have none yet: for [`Explorer::name_rows`].
    pub fn rows_to_name(&self) -> Vec<u32> {
        self.by_target.iter().flat_map(|rows| rows.iter().take(MAX_TOP)).copied().filter(|r| !self.names.contains_key(r)).collect()
    }

    /// Names `rows` (as [`Explorer::rows_to_name`] gave them) with their parameter-set ids.
    pub fn name_rows(&mut self, names: impl IntoIterator<Item = (u32, String)>) {
        self.names.extend(names);
    }

    /// Rows with a loss.
    pub fn rows(&self) -> usize {
        self.loss.len()
    }

    /// The loss of row `r` on the drawn scale.
    fn drawn_loss(&self, r: usize) -> f64 {
        self.drawn[r]
    }

    /// The rows of target `t`, from the lowest loss up, as indices into the rows given to
    /// [`Explorer::new`].
    pub fn lowest(&self, t: usize) -> impl Iterator<Item = usize> + '_ {
        self.by_target.get(t).into_iter().flatten().map(|&r| r as usize)
    }

    /// Whether parameter `p` is best read on a log axis (see [`spans_decades`]).
    pub fn log_by_default(&self, p: usize) -> bool {
        self.log_default[p]
    }

    /// Every row's loss, per target (in loss order).
    pub fn losses_by_target(&self) -> Vec<Vec<f64>> {
        self.by_target.iter().map(|rows| rows.iter().map(|&r| self.loss[r as usize]).collect()).collect()
    }

    /// The grids of every pair of parameters for the matrix (at most [`MATRIX_GRID`] cells a
    /// side, each parameter on its default axis) of target `t` keeping the best `keep` percent:
    /// computed once per (target, keep), the last [`MATRIX_CACHE`] kept.
    pub fn matrix_grids(&self, t: usize, keep: f64) -> std::sync::Arc<Vec<Grid>> {
        self.matrix.get_or_insert((t, keep.to_bits()), || std::sync::Arc::new(self.pair_grids(t, keep)))
    }

    /// The grids of every pair, computed (see [`Explorer::matrix_grids`]).
    fn pair_grids(&self, t: usize, keep: f64) -> Vec<Grid> {
        let n = self.params.len();
        (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .filter_map(|(x, y)| {
                let pair = View {
                    target: t,
                    x,
                    y,
                    log_x: self.log_by_default(x),
                    log_y: self.log_by_default(y),
                    keep,
                    top: 0,
                    value: CellValue::Min,
                    x_range: None,
                    y_range: None,
                };
                self.grid(&pair, MATRIX_GRID)
            })
            .collect()
    }

    /// The sensitivity of target `t` (see the module's documentation), computed on first use.
    pub fn sensitivity(&self, t: usize) -> &Sensitivity {
        self.sensitivity[t].get_or_init(|| self.sensitivity_of(t))
    }

    /// The rows of the target named `target`, for an overlay: every row's loss, and at most
    /// `max` rows (the `keep` lowest, then an even sample of the rest) as their parameter values
    /// (in [`Explorer::params`] order) and loss. `None` when the job has no such target.
    pub fn sample_of(&self, target: &str, max: usize, keep: usize) -> Option<(Vec<f64>, Vec<OverlayRow>)> {
        let t = self.targets.iter().position(|name| name == target)?;
        let rows: Vec<usize> = self.lowest(t).collect();
        let losses = rows.iter().map(|&r| self.loss[r]).collect();
        let chosen = first_then_even(&rows, keep, max);
        Some((losses, chosen.into_iter().map(|r| (self.columns.iter().map(|c| c[r]).collect(), self.loss[r])).collect()))
    }

    fn sensitivity_of(&self, t: usize) -> Sensitivity {
        // In table order, so the columns are read in sequence.
        let rows: Vec<usize> = self.in_table_order.get(t).into_iter().flatten().map(|&r| r as usize).filter(|&r| self.drawn[r].is_finite()).collect();
        let n_params = self.params.len();
        let bins = sensitivity_bins(rows.len());
        // Each row's bin along each parameter (None where the value is missing).
        let binned: Vec<Vec<Option<u8>>> = (0..n_params)
            .map(|p| {
                let axis = Axis::over(rows.iter().map(|&r| self.columns[p][r]), self.log_by_default(p));
                rows.iter()
                    .map(|&r| axis.and_then(|a| a.bin(self.columns[p][r], bins)).map(|b| b as u8))
                    .collect()
            })
            .collect();
        let n = rows.len() as f64;
        let mean = rows.iter().map(|&r| self.drawn_loss(r)).sum::<f64>() / n.max(1.0);
        let total: f64 = rows.iter().map(|&r| (self.drawn_loss(r) - mean).powi(2)).sum();
        if rows.len() < 4 || total <= 0.0 {
            return Sensitivity {
                rows: rows.len(),
                importance: vec![0.0; n_params],
                interactions: pairs(n_params).map(|(i, j)| (i, j, 0.0)).collect(),
            };
        }
        // Marginal means per parameter and bin.
        let marginals: Vec<Vec<(f64, f64)>> = (0..n_params)
            .map(|p| {
                let mut sums = vec![(0.0, 0.0); bins];
                for (k, &r) in rows.iter().enumerate() {
                    if let Some(b) = binned[p][k] {
                        sums[b as usize].0 += self.drawn_loss(r);
                        sums[b as usize].1 += 1.0;
                    }
                }
                sums
            })
            .collect();
        let marginal_mean = |p: usize, b: u8| {
            let (sum, count) = marginals[p][b as usize];
            sum / count
        };
        let importance = marginals
            .iter()
            .map(|sums| sums.iter().filter(|(_, c)| *c > 0.0).map(|(s, c)| c * (s / c - mean).powi(2)).sum::<f64>() / total)
            .map(|share| share.clamp(0.0, 1.0))
            .collect();
        let mut interactions: Vec<(usize, usize, f64)> = pairs(n_params)
            .map(|(i, j)| {
                let mut cells = vec![(0.0, 0.0); bins * bins];
                for (k, &r) in rows.iter().enumerate() {
                    if let (Some(a), Some(b)) = (binned[i][k], binned[j][k]) {
                        let cell = &mut cells[a as usize * bins + b as usize];
                        cell.0 += self.drawn_loss(r);
                        cell.1 += 1.0;
                    }
                }
                let explained: f64 = cells
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.1 > 0.0)
                    .map(|(at, (sum, count))| {
                        let (a, b) = ((at / bins) as u8, (at % bins) as u8);
                        count * (sum / count - marginal_mean(i, a) - marginal_mean(j, b) + mean).powi(2)
                    })
                    .sum();
                (i, j, (explained / total).clamp(0.0, 1.0))
            })
            .collect();
        interactions.sort_by(|a, b| b.2.total_cmp(&a.2));
        Sensitivity {
            rows: rows.len(),
            importance,
            interactions,
        }
    }

    /// The default pair of target `t`: its strongest interaction (the first two parameters
    /// when it has none to compare).
    pub fn default_pair(&self, t: usize) -> Option<(usize, usize)> {
        if self.params.len() < 2 {
            return None;
        }
        Some(self.sensitivity(t).interactions.first().map_or((0, 1), |&(i, j, _)| (i, j)))
    }

    /// The landscape of `view` on a grid of at most `max_grid` cells a side.
    pub fn grid(&self, view: &View, max_grid: usize) -> Option<Grid> {
        // The best `keep` percent of the target's rows: those at or before the `kept`-th in
        // (loss, row) order, taken in table order so the columns are read in sequence.
        let of_target = self.by_target.get(view.target)?;
        let kept = kept_rows(of_target.len(), view.keep);
        let last = (kept > 0).then(|| of_target[kept - 1] as usize);
        let threshold = last.filter(|_| kept < of_target.len()).map(|r| self.loss[r]);
        let inside = |v: f64, range: Option<(f64, f64)>| v.is_finite() && range.is_none_or(|(lo, hi)| (lo..=hi).contains(&v));
        let within = |r: usize| match last {
            _ if kept == of_target.len() => true,
            Some(last) => match self.loss[r].total_cmp(&self.loss[last]) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Equal => r <= last,
                std::cmp::Ordering::Greater => false,
            },
            None => false,
        };
        let in_order: Vec<usize> = self.in_table_order[view.target]
            .iter()
            .map(|&r| r as usize)
            .filter(|&r| within(r))
            .filter(|&r| inside(self.columns[view.x][r], view.x_range) && inside(self.columns[view.y][r], view.y_range))
            .collect();
        // A zoomed axis spans its range exactly; another spans its rows.
        let axis = |p: usize, range: Option<(f64, f64)>, log: bool| match range {
            Some((lo, hi)) => Axis::over([lo, hi].into_iter(), log),
            None => Axis::over(in_order.iter().map(|&r| self.columns[p][r]), log),
        };
        let x_axis = axis(view.x, view.x_range, view.log_x)?;
        let y_axis = axis(view.y, view.y_range, view.log_y)?;
        let size = grid_size(in_order.len(), max_grid);
        let mut sums = vec![(0u32, f64::INFINITY, 0.0f64); size * size];
        for &r in &in_order {
            let (Some(i), Some(j)) = (x_axis.bin(self.columns[view.x][r], size), y_axis.bin(self.columns[view.y][r], size)) else { continue };
            let cell = &mut sums[j * size + i];
            cell.0 += 1;
            cell.1 = cell.1.min(self.loss[r]);
            cell.2 += self.drawn_loss(r);
        }
        let cells = sums
            .into_iter()
            .map(|(count, min, sum)| {
                (count > 0).then(|| Cell {
                    count,
                    min,
                    mean: if self.log_loss { 10f64.powf(sum / f64::from(count)) } else { sum / f64::from(count) },
                })
            })
            .collect();
        // The lowest rows, named (only the lowest have names: the walk stops there).
        let points = of_target[..kept]
            .iter()
            .take(MAX_TOP)
            .map(|&r| r as usize)
            .filter(|&r| inside(self.columns[view.x][r], view.x_range) && inside(self.columns[view.y][r], view.y_range))
            .filter_map(|r| self.names.get(&(r as u32)).map(|name| (r, name)))
            .take(view.top.min(MAX_TOP))
            .map(|(r, name)| Point {
                param_id: name.clone(),
                loss: self.loss[r],
                values: self.columns.iter().map(|c| c[r]).collect(),
            })
            .collect();
        Some(Grid {
            target: view.target,
            x: view.x,
            y: view.y,
            x_axis,
            y_axis,
            size,
            cells,
            points,
            rows: in_order.len(),
            threshold,
        })
    }
}

/// Rows of a target for parallel coordinates: the lowest first, then an even sample of the rest.
#[derive(Debug, Clone)]
pub struct Lines {
    /// Each line's parameter values (parameter order) and loss, lowest loss first.
    pub rows: Vec<(Vec<f64>, f64)>,
    /// Each line's parameter-set id, where known (the lowest rows of each target).
    pub names: Vec<Option<String>>,
    /// How many of them are the lowest (drawn highlighted).
    pub top: usize,
    /// Rows of the target after the filter.
    pub of: usize,
}

impl Explorer {
    /// At most `max` rows of `view`'s target (its best `keep` percent): its `top` lowest, then
    /// an even sample of the rest, for parallel coordinates.
    pub fn lines(&self, view: &View, max: usize) -> Lines {
        let mut rows: Vec<usize> = self.lowest(view.target).collect();
        rows.truncate(kept_rows(rows.len(), view.keep));
        let of = rows.len();
        let top = view.top.min(max).min(of);
        let chosen = first_then_even(&rows, top, max);
        Lines {
            names: chosen.iter().map(|r| self.names.get(&(*r as u32)).cloned()).collect(),
            rows: chosen.into_iter().map(|r| (self.columns.iter().map(|c| c[r]).collect(), self.loss[r])).collect(),
            top,
            of,
        }
    }
}

/// At most `max` of `rows`: the `first` of them, then an even sample of the rest.
fn first_then_even(rows: &[usize], first: usize, max: usize) -> Vec<usize> {
    let first = first.min(max).min(rows.len());
    let rest = &rows[first..];
    let room = max.saturating_sub(first).min(rest.len());
    rows[..first].iter().copied().chain((0..room).map(|k| rest[k * rest.len() / room])).collect()
}

/// Rows kept of `n` by the best `keep` percent: the ceiling, at least one when there are any.
fn kept_rows(n: usize, keep: f64) -> usize {
    if keep >= 100.0 { n } else { ((n as f64 * keep / 100.0).ceil() as usize).clamp(n.min(1), n) }
}

/// Every unordered pair of `n` parameters, (i, j) with i < j.
fn pairs(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).flat_map(move |i| (i + 1..n).map(move |j| (i, j)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An explorer over `rows` rows of one target whose loss is `loss(params)`, the parameters
    /// on a regular lattice.
    fn lattice(names: &[&str], side: usize, loss: impl Fn(&[f64]) -> f64) -> Explorer {
        let n = side.pow(names.len() as u32);
        let mut columns = vec![Vec::with_capacity(n); names.len()];
        let mut losses = Vec::with_capacity(n);
        for k in 0..n {
            let mut rest = k;
            let values: Vec<f64> = (0..names.len())
                .map(|_| {
                    let v = (rest % side) as f64 / (side - 1) as f64;
                    rest /= side;
                    0.1 + v
                })
                .collect();
            for (column, v) in columns.iter_mut().zip(&values) {
                column.push(*v);
            }
            losses.push(loss(&values));
        }
        let names_of_best = (0..n as u32).map(|r| (r, format!("set-{r}"))).collect();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by(|&a, &b| losses[a as usize].total_cmp(&losses[b as usize]));
        let mut explorer = Explorer {
            params: names.iter().map(|s| (*s).to_owned()).collect(),
            targets: vec!["t".into()],
            log_loss: false,
            sensitivity: Vec::new(),
            columns,
            drawn: losses.clone(),
            loss: losses,
            in_table_order: vec![(0..n as u32).collect()],
            by_target: vec![order],
            names: names_of_best,
            log_default: vec![false; names.len()],
            matrix: Memo::new(MATRIX_CACHE),
            sections: Memo::new(MATRIX_CACHE),
        };
        explorer.sensitivity = vec![std::sync::OnceLock::new()];
        explorer
    }

    #[test]
    fn importance_finds_the_parameter_the_loss_depends_on_and_interaction_the_pair_that_acts_together() {
        // The loss depends on a alone, plus b and c only through their ratio: c is a ridge with b.
        let explorer = lattice(&["a", "b", "c"], 9, |v| 0.2 * v[0] + (v[1] / v[2] - 1.0).powi(2));
        let s = explorer.sensitivity(0);
        assert_eq!(s.rows, 729);
        assert!(s.importance.iter().all(|i| (0.0..=1.0).contains(i)), "{s:?}");
        // b and c act together: their pair interacts most, and is the default pair.
        assert_eq!((s.interactions[0].0, s.interactions[0].1), (1, 2), "{s:?}");
        assert_eq!(explorer.default_pair(0), Some((1, 2)));
        // a adds to the loss on its own: no interaction with either.
        let with_a: Vec<f64> = s.interactions.iter().filter(|(i, _, _)| *i == 0).map(|x| x.2).collect();
        assert!(with_a.iter().all(|&x| x < 0.02), "{s:?}");

        // A loss of one parameter only: all its variance is that parameter's.
        let one = lattice(&["a", "b"], 10, |v| v[0]);
        let s = one.sensitivity(0);
        assert!(s.importance[0] > 0.9 && s.importance[1] < 1e-9, "{s:?}");
        assert!(s.interactions[0].2 < 1e-9, "{s:?}");
    }

    #[test]
    fn the_pair_matrix_is_computed_once_per_target_and_rows_kept() {
        let explorer = lattice(&["a", "b", "c"], 6, |v| v[0] / v[1] + v[2]);
        let first = explorer.matrix_grids(0, 100.0);
        assert_eq!(first.len(), 3);
        assert!(std::sync::Arc::ptr_eq(&first, &explorer.matrix_grids(0, 100.0)), "the second view reuses the first's grids");
        let kept = explorer.matrix_grids(0, 10.0);
        assert!(!std::sync::Arc::ptr_eq(&first, &kept));
        assert!(kept[0].rows < first[0].rows);
        for keep in 0..MATRIX_CACHE * 2 {
            explorer.matrix_grids(0, 1.0 + keep as f64);
        }
        assert_eq!(explorer.matrix.len(), MATRIX_CACHE, "bounded");
    }

    #[test]
    fn the_grid_holds_each_rows_loss_in_its_cell_and_names_the_lowest() {
        let explorer = lattice(&["a", "b"], 12, |v| (v[0] - 0.5).powi(2) + (v[1] - 0.9).powi(2));
        let view = View {
            target: 0,
            x: 0,
            y: 1,
            log_x: false,
            log_y: false,
            keep: 100.0,
            top: 3,
            value: CellValue::Min,
            x_range: None,
            y_range: None,
        };
        let grid = explorer.grid(&view, MAX_GRID).unwrap();
        assert_eq!(grid.rows, 144);
        assert_eq!(grid.size, grid_size(144, MAX_GRID));
        assert_eq!(grid.cells.iter().flatten().map(|c| c.count).sum::<u32>(), 144);
        // The best cell holds the lowest row, at (0.5, 0.9).
        let (i, j) = grid.best_cell(CellValue::Min).unwrap();
        let (x0, x1) = (grid.x_axis.value_at(i as f64 / grid.size as f64), grid.x_axis.value_at((i + 1) as f64 / grid.size as f64));
        let (y0, y1) = (grid.y_axis.value_at(j as f64 / grid.size as f64), grid.y_axis.value_at((j + 1) as f64 / grid.size as f64));
        let best = &grid.points[0];
        assert!(x0 <= best.values[0] && best.values[0] <= x1 && y0 <= best.values[1] && best.values[1] <= y1, "{best:?} in {x0}..{x1} × {y0}..{y1}");
        assert_eq!(grid.points.len(), 3);
        assert!(grid.points.windows(2).all(|w| w[0].loss <= w[1].loss));
        assert_eq!(best.loss, explorer.loss.iter().copied().fold(f64::INFINITY, f64::min));

        // Keeping the best 10 %: 15 rows (the ceiling), none above the threshold.
        let kept = explorer.grid(&View { keep: 10.0, ..view.clone() }, MAX_GRID).unwrap();
        assert_eq!(kept.rows, 15);
        let threshold = kept.threshold.unwrap();
        assert!(kept.cells.iter().flatten().all(|c| c.min <= threshold));
        // A log axis over values that are all positive; none over values that are not.
        let log = explorer.grid(&View { log_x: true, ..view.clone() }, MAX_GRID).unwrap();
        assert!(log.x_axis.log && (log.x_axis.lo - 0.1f64.log10()).abs() < 1e-12);
        assert!(Axis::over([-1.0, 2.0].into_iter(), true).is_some_and(|a| !a.log));
        // Parallel coordinates: the lowest first, then an even sample, never more than asked.
        let lines = explorer.lines(&View { top: 5, ..view.clone() }, 40);
        assert_eq!((lines.rows.len(), lines.top, lines.of), (40, 5, 144));
        let mut sorted = explorer.loss.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(lines.rows[..5].iter().map(|r| r.1).collect::<Vec<_>>(), sorted[..5].to_vec());
        assert_eq!(explorer.lines(&View { keep: 10.0, ..view.clone() }, 1000).rows.len(), 15);
        assert_eq!(Axis::over([f64::NAN].into_iter(), false), None);
        // Zoomed on a range of each: only the rows inside, on axes spanning the ranges exactly.
        let zoomed = explorer.grid(&View { x_range: Some((0.3, 0.6)), y_range: Some((0.5, 1.0)), ..view.clone() }, MAX_GRID).unwrap();
        let inside = (0..explorer.rows()).filter(|&r| (0.3..=0.6).contains(&explorer.columns[0][r]) && (0.5..=1.0).contains(&explorer.columns[1][r])).count();
        assert!(inside > 0 && inside < 144);
        assert_eq!(zoomed.rows, inside);
        assert_eq!(zoomed.cells.iter().flatten().map(|c| c.count as usize).sum::<usize>(), inside);
        assert_eq!((zoomed.x_axis.lo, zoomed.x_axis.hi, zoomed.y_axis.lo, zoomed.y_axis.hi), (0.3, 0.6, 0.5, 1.0));
        assert!(zoomed.points.iter().all(|p| (0.3..=0.6).contains(&p.values[0])));
    }
}
