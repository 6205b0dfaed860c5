//! The job page's two-parameter section: the chosen landscape as a heat map, the matrix of every
//! pair, and each parameter's importance with the strongest interactions. Every choice (target,
//! pair, scales, what a cell shows, the best percent kept, points drawn) is in the query string,
//! so a view can be linked, and every wrong value is refused with the values that would work.

use maud::{Markup, html};
use serde::Deserialize;

use crate::error::DashboardError;
use crate::explore::{CellValue, DEFAULT_TOP, Explorer, MAX_GRID, MAX_MATRIX_PARAMS, MAX_TOP, View};
use crate::heatmap;

/// The best-percent choices the form offers (any value in (0, 100] is accepted).
const KEEP_CHOICES: [f64; 6] = [100.0, 50.0, 25.0, 10.0, 5.0, 1.0];
/// The point-count choices the form offers (any count up to [`MAX_TOP`] is accepted).
const TOP_CHOICES: [usize; 4] = [1, 10, 50, MAX_TOP];

/// The job page's query string: what the two-parameter view shows (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ViewParams {
    /// The target (default: the first).
    #[serde(default)]
    pub target: String,
    /// The parameter across (default: the strongest interacting pair's first).
    #[serde(default)]
    pub x: String,
    /// The parameter up.
    #[serde(default)]
    pub y: String,
    /// `linear` or `log` (default: log when the parameter is positive and spans over 100×).
    #[serde(default)]
    pub xscale: String,
    /// See `xscale`.
    #[serde(default)]
    pub yscale: String,
    /// `min` (default) or `mean`.
    #[serde(default)]
    pub cell: String,
    /// The best percent of the target's rows kept, in (0, 100] (default 100).
    #[serde(default)]
    pub keep: String,
    /// Lowest rows drawn as points, 0 to [`MAX_TOP`] (default [`DEFAULT_TOP`]).
    #[serde(default)]
    pub top: String,
    /// The parameter axes of the plots of loss against each parameter: `linear`, `log` (for
    /// parameters whose values are all positive) or `auto` (default: log when the parameter
    /// spans over 100×).
    #[serde(default)]
    pub slices: String,
    /// The loss axes of the per-parameter plots and the histogram: `linear`, `log` (when every
    /// loss is positive) or `auto` (default: log when the losses span over 1000×).
    #[serde(default)]
    pub loss: String,
    /// A zoom on the parameter across: `lo,hi` in its units (default: all its rows).
    #[serde(default)]
    pub xrange: String,
    /// See `xrange`.
    #[serde(default)]
    pub yrange: String,
}

/// The axes chosen for the per-parameter plots and the histogram (`None`: the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Axes {
    /// Log parameter axes.
    pub slices: Option<bool>,
    /// A log loss axis.
    pub loss: Option<bool>,
}

fn auto_scale(raw: &str, what: &str) -> Result<Option<bool>, DashboardError> {
    match raw {
        "" | "auto" => Ok(None),
        "linear" => Ok(Some(false)),
        "log" => Ok(Some(true)),
        other => Err(bad(what, other, "auto, linear or log")),
    }
}

/// A range `lo,hi` of two finite numbers with lo < hi; empty is none.
fn range(raw: &str, what: &str) -> Result<Option<(f64, f64)>, DashboardError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let parsed = raw.split_once(',').and_then(|(lo, hi)| Some((lo.trim().parse::<f64>().ok()?, hi.trim().parse::<f64>().ok()?)));
    match parsed {
        Some((lo, hi)) if lo.is_finite() && hi.is_finite() && lo < hi => Ok(Some((lo, hi))),
        _ => Err(bad(what, raw, "two finite numbers lo,hi with lo < hi")),
    }
}

fn bad(what: &str, got: &str, expected: impl std::fmt::Display) -> DashboardError {
    DashboardError::BadRequest(format!("{what}: expected {expected}; got {got:?}"))
}

fn one_of(names: &[String]) -> String {
    format!("one of {}", names.join(", "))
}

fn scale(raw: &str, what: &str, default: bool) -> Result<bool, DashboardError> {
    match raw {
        "" => Ok(default),
        "linear" => Ok(false),
        "log" => Ok(true),
        other => Err(bad(what, other, "linear or log")),
    }
}

impl ViewParams {
    /// The axis of the per-parameter plots: `None` for each parameter's default, else whether
    /// log.
    pub fn slices(&self) -> Result<Option<bool>, DashboardError> {
        auto_scale(&self.slices, "slices")
    }

    /// The loss axis of the per-parameter plots and the histogram: `None` for the default, else
    /// whether log.
    pub fn loss(&self) -> Result<Option<bool>, DashboardError> {
        auto_scale(&self.loss, "loss")
    }

    /// The choices of axes of the per-parameter plots and the histogram.
    pub fn axes(&self) -> Result<Axes, DashboardError> {
        Ok(Axes {
            slices: self.slices()?,
            loss: self.loss()?,
        })
    }

    /// The view these parameters choose on `explorer`'s table, `None` when it has fewer than two
    /// numeric parameters; an unknown name or a value out of range is a bad request that lists
    /// what would work.
    pub fn resolve(&self, explorer: &Explorer) -> Result<Option<View>, DashboardError> {
        let target = match self.target.as_str() {
            "" => 0,
            wanted => explorer
                .targets
                .iter()
                .position(|t| t == wanted)
                .ok_or_else(|| bad("target", wanted, one_of(&explorer.targets)))?,
        };
        let param = |raw: &str, what: &str| -> Result<Option<usize>, DashboardError> {
            match raw {
                "" => Ok(None),
                wanted => explorer.params.iter().position(|p| p == wanted).map(Some).ok_or_else(|| bad(what, wanted, one_of(&explorer.params))),
            }
        };
        let (x, y) = (param(&self.x, "x")?, param(&self.y, "y")?);
        let Some((default_x, default_y)) = explorer.default_pair(target) else {
            return Ok(None);
        };
        let (x, y) = match (x, y) {
            (None, None) => (default_x, default_y),
            (Some(x), None) => (x, if x == default_y { default_x } else { default_y }),
            (None, Some(y)) => (if y == default_x { default_y } else { default_x }, y),
            (Some(x), Some(y)) => (x, y),
        };
        if x == y {
            return Err(DashboardError::BadRequest(format!("x and y are both {:?}: choose two different parameters", explorer.params[x])));
        }
        let value = match self.cell.as_str() {
            "" | "min" => CellValue::Min,
            "mean" => CellValue::Mean,
            other => return Err(bad("cell", other, "min or mean")),
        };
        let keep = match self.keep.as_str() {
            "" => 100.0,
            raw => raw
                .parse::<f64>()
                .ok()
                .filter(|k| *k > 0.0 && *k <= 100.0)
                .ok_or_else(|| bad("keep", raw, "a percent above 0 and at most 100"))?,
        };
        let top = match self.top.as_str() {
            "" => DEFAULT_TOP,
            raw => raw
                .parse::<usize>()
                .ok()
                .filter(|t| *t <= MAX_TOP)
                .ok_or_else(|| bad("top", raw, format!("a count from 0 to {MAX_TOP}")))?,
        };
        Ok(Some(View {
            target,
            x,
            y,
            log_x: scale(&self.xscale, "xscale", explorer.log_by_default(x))?,
            log_y: scale(&self.yscale, "yscale", explorer.log_by_default(y))?,
            keep,
            top,
            value,
            x_range: range(&self.xrange, "xrange")?,
            y_range: range(&self.yrange, "yrange")?,
        }))
    }
}

/// The query string of `view` on `explorer`, with `x` and `y` replaced.
fn href(job: &str, explorer: &Explorer, view: &View, axes: Axes, x: usize, y: usize) -> String {
    let scale = |log: bool| if log { "log" } else { "linear" };
    let (log_x, log_y) = if (x, y) == (view.x, view.y) { (view.log_x, view.log_y) } else { (explorer.log_by_default(x), explorer.log_by_default(y)) };
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("target", &explorer.targets[view.target])
        .append_pair("x", &explorer.params[x])
        .append_pair("y", &explorer.params[y])
        .append_pair("xscale", scale(log_x))
        .append_pair("yscale", scale(log_y))
        .append_pair("cell", if view.value == CellValue::Mean { "mean" } else { "min" })
        .append_pair("keep", &view.keep.to_string())
        .append_pair("top", &view.top.to_string())
        .append_pair("slices", auto_name(axes.slices))
        .append_pair("loss", auto_name(axes.loss))
        .finish();
    format!("/jobs/{job}?{query}#pairs")
}

fn auto_name(choice: Option<bool>) -> &'static str {
    match choice {
        None => "auto",
        Some(false) => "linear",
        Some(true) => "log",
    }
}

/// The two-parameter section of `job`'s page for `view` and `axes`, drawn once per view and kept
/// with the landscape (the last [`crate::explore::MATRIX_CACHE`] views), so a view seen again
/// costs nothing.
pub fn section_cached(job: &str, explorer: &Explorer, view: &View, axes: Axes) -> Markup {
    explorer.sections.get_or_insert(format!("{job}|{view:?}|{axes:?}"), || section(job, explorer, view, axes))
}

/// The two-parameter section of `job`'s page for `view`, its form also choosing the axes of the
/// per-parameter plots and the histogram (`axes`).
pub fn section(job: &str, explorer: &Explorer, view: &View, axes: Axes) -> Markup {
    // The pair's grid here while a second thread computes the importance and the matrix's grids
    // (each a pass over the target's rows): on a first view of a large job, the machine's other
    // core is otherwise idle by then.
    let (grid, (sensitivity, grids)) = std::thread::scope(|scope| {
        let others = scope.spawn(|| {
            let sensitivity = explorer.sensitivity(view.target);
            // Every pair depends on the target and the rows kept only: computed once for them.
            let grids = (explorer.params.len() <= MAX_MATRIX_PARAMS).then(|| explorer.matrix_grids(view.target, view.keep));
            (sensitivity, grids)
        });
        let grid = explorer.grid(view, MAX_GRID);
        (grid, others.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    });
    let Some(grid) = grid else {
        return html! { section.pairs id="pairs" { h2 { "Two parameters at once" } p.note { "No row of this target has both parameters." } } };
    };
    let matrix = grids.map(|grids| heatmap::matrix(explorer, &grids, &sensitivity.importance, (view.x, view.y), |x, y| href(job, explorer, view, axes, x, y)));
    let scale_name = |log: bool| if log { "log" } else { "linear" };
    html! {
        section.pairs id="pairs" data-target=(explorer.targets[view.target]) {
            h2 { "Two parameters at once" }
            form.filters method="get" action={ "/jobs/" (job) } {
                label { "Target "
                    select name="target" data-autosubmit {
                        @for (t, name) in explorer.targets.iter().enumerate() { option value=(name) selected[t == view.target] { (name) } }
                    }
                }
                label { "Across "
                    select name="x" data-autosubmit {
                        @for (p, name) in explorer.params.iter().enumerate() { option value=(name) selected[p == view.x] { (name) } }
                    }
                    select name="xscale" data-autosubmit {
                        @for choice in ["linear", "log"] { option value=(choice) selected[scale_name(view.log_x) == choice] { (choice) } }
                    }
                }
                label { "Up "
                    select name="y" data-autosubmit {
                        @for (p, name) in explorer.params.iter().enumerate() { option value=(name) selected[p == view.y] { (name) } }
                    }
                    select name="yscale" data-autosubmit {
                        @for choice in ["linear", "log"] { option value=(choice) selected[scale_name(view.log_y) == choice] { (choice) } }
                    }
                }
                label { "Each cell "
                    select name="cell" data-autosubmit {
                        option value="min" selected[view.value == CellValue::Min] { "lowest loss" }
                        option value="mean" selected[view.value == CellValue::Mean] { "mean loss" }
                    }
                }
                label { "Rows "
                    select name="keep" data-autosubmit {
                        @if !KEEP_CHOICES.contains(&view.keep) { option value=(view.keep) selected { "best " (view.keep) " %" } }
                        @for keep in KEEP_CHOICES {
                            option value=(keep) selected[keep == view.keep] { @if keep == 100.0 { "all" } @else { "best " (keep) " %" } }
                        }
                    }
                }
                label { "Points "
                    select name="top" data-autosubmit {
                        @if !TOP_CHOICES.contains(&view.top) { option value=(view.top) selected { (view.top) " lowest" } }
                        @for top in TOP_CHOICES { option value=(top) selected[top == view.top] { (top) " lowest" } }
                    }
                }
                label { "Per-parameter axes "
                    select name="slices" data-autosubmit {
                        @for choice in ["auto", "linear", "log"] { option value=(choice) selected[auto_name(axes.slices) == choice] { (choice) } }
                    }
                }
                label { "Loss axes "
                    select name="loss" data-autosubmit {
                        @for choice in ["auto", "linear", "log"] { option value=(choice) selected[auto_name(axes.loss) == choice] { (choice) } }
                    }
                }
                noscript { button type="submit" { "Show" } }
            }
            p.note {
                (grid.rows) " rows of " (explorer.targets[view.target])
                @if let Some(threshold) = grid.threshold { " (the best " (view.keep) " %, loss at most " (crate::layout::number(threshold)) ")" }
                " on a " (grid.size) " × " (grid.size) " grid; each cell is coloured by its "
                (if view.value == CellValue::Min { "lowest" } else { "mean" }) " loss (brighter is lower), the "
                (grid.points.len()) " lowest rows are ringed (the lowest in red). Hover a cell or a point for its values, click a point to open its set, drag across the map to zoom."
                @if view.x_range.is_some() || view.y_range.is_some() {
                    " Zoomed on "
                    @if let Some((lo, hi)) = view.x_range { (explorer.params[view.x]) " " (heatmap::short(lo)) "–" (heatmap::short(hi)) }
                    @if view.x_range.is_some() && view.y_range.is_some() { " × " }
                    @if let Some((lo, hi)) = view.y_range { (explorer.params[view.y]) " " (heatmap::short(lo)) "–" (heatmap::short(hi)) }
                    ": " a.unzoom href=(href(job, explorer, view, axes, view.x, view.y)) { "show all" } "."
                }
            }
            div.pair-views {
                figure.pair-landscape { (heatmap::landscape(explorer, &grid, view.value)) }
                @if let Some(matrix) = matrix {
                    figure.pair-matrix {
                        (matrix)
                        figcaption { "Every pair (lowest loss per cell); click one to show it. On the diagonal, each parameter's importance." }
                    }
                }
            }
            div.sensitivity {
                table.data id="importance" {
                    thead { tr { th { "Parameter" } th { "Importance" } } }
                    tbody {
                        @for (p, name) in explorer.params.iter().enumerate() {
                            tr data-param=(name) data-importance=(sensitivity.importance[p]) { td { (name) } td.num { (format!("{:.1} %", 100.0 * sensitivity.importance[p])) } }
                        }
                    }
                }
                table.data id="interactions" {
                    thead { tr { th { "Pair" } th { "Interaction" } } }
                    tbody {
                        @for &(i, j, share) in sensitivity.interactions.iter().take(5) {
                            tr data-x=(explorer.params[i]) data-y=(explorer.params[j]) data-interaction=(share) {
                                td { a href=(href(job, explorer, view, axes, i, j)) { (explorer.params[i]) " × " (explorer.params[j]) } }
                                td.num { (format!("{:.1} %", 100.0 * share)) }
                            }
                        }
                    }
                }
                p.note { "Importance: the share of the loss variance (on the drawn scale) explained by the parameter's binned means; interaction: the share a pair's cells explain beyond both parameters alone. Computed once per table over " (sensitivity.rows) " rows." }
            }
            (crate::parallel::section(explorer, &explorer.lines(view, crate::parallel::MAX_LINES), &explorer.targets[view.target]))
        }
    }
}
