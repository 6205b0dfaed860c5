//! The two-parameter views drawn as SVG by hand (through `maud`, which escapes every text and
//! attribute): a landscape's heat map with its lowest rows as points, the matrix of every pair,
//! and the importance bars. Drawn by hand rather than with `plotters` because every cell and
//! point carries its data (`data-*` attributes and a `data-hover` text) for the page's script to
//! show on hover and for tests to read, and the bytes stay bounded by the grid, not the table.
//!
//! Colours follow viridis; the lowest loss is the brightest.

use maud::{Markup, html};

use crate::explore::{Axis, CellValue, Explorer, Grid, pick};
use crate::layout;
use crate::plots::tick;

/// viridis at five stops, from the highest loss (dark) to the lowest (bright).
const VIRIDIS: [(f64, f64, f64); 5] = [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];

/// The colour of `fraction` of the way from the highest loss (0) to the lowest (1).
pub fn colour(fraction: f64) -> String {
    let at = fraction.clamp(0.0, 1.0) * (VIRIDIS.len() - 1) as f64;
    let k = (at.floor() as usize).min(VIRIDIS.len() - 2);
    let t = at - k as f64;
    let (a, b) = (VIRIDIS[k], VIRIDIS[k + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * t).round() as u8;
    format!("#{:02x}{:02x}{:02x}", mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The scale of the colours: losses on the drawn scale, lowest brightest.
struct Shades {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Shades {
    fn over(values: impl Iterator<Item = f64>, log: bool) -> Self {
        let scaled = |v: f64| if log { v.log10() } else { v };
        let (lo, hi) = values
            .map(scaled)
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        Self { lo, hi, log }
    }

    fn colour(&self, loss: f64) -> String {
        let v = if self.log { loss.log10() } else { loss };
        if self.hi > self.lo { colour(1.0 - (v - self.lo) / (self.hi - self.lo)) } else { colour(1.0) }
    }

    /// The loss `fraction` of the way from the lowest to the highest.
    fn loss_at(&self, fraction: f64) -> f64 {
        let v = self.lo + fraction * (self.hi - self.lo);
        if self.log { 10f64.powf(v) } else { v }
    }
}

/// A parameter's value range of cell `k` of `size` along `axis`.
fn cell_range(axis: &Axis, k: usize, size: usize) -> (f64, f64) {
    (axis.value_at(k as f64 / size as f64), axis.value_at((k + 1) as f64 / size as f64))
}

/// The ticks of an axis as (fraction of the axis, label): round values (steps of 1, 2 or 5 times
/// a power of ten, about five of them) on a linear axis, whole decades on a log axis that spans
/// two or more, and otherwise five evenly spread values to three significant digits.
pub(crate) fn ticks(axis: &Axis) -> Vec<(f64, String)> {
    let span = axis.hi - axis.lo;
    if !(span.is_finite() && span > 0.0) {
        return vec![(0.5, short(axis.value_at(0.5)))];
    }
    if axis.log {
        if span >= 2.0 {
            let step = (span / 5.0).ceil().max(1.0);
            let first = (axis.lo / step).ceil() as i64;
            let last = (axis.hi / step).floor() as i64;
            return (first..=last).map(|k| k as f64 * step).map(|e| ((e - axis.lo) / span, format!("1e{e}"))).collect();
        }
        return (0..5).map(|k| k as f64 / 4.0).map(|f| (f, short(axis.value_at(f)))).collect();
    }
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let first = (axis.lo / step).ceil() as i64;
    let last = (axis.hi / step).floor() as i64;
    (first..=last)
        .map(|k| k as f64 * step)
        .map(|v| ((v - axis.lo) / span, tick(&((v / step).round() * step))))
        .collect()
}

/// A number to three significant digits, as a label: `0.0123`, `4.57`, `1.2e-5`.
pub(crate) fn short(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return if value.is_finite() { "0".into() } else { value.to_string() };
    }
    let magnitude = value.abs().log10().floor() as i32;
    if (-3..5).contains(&magnitude) {
        let decimals = (2 - magnitude).max(0) as usize;
        let fixed = format!("{value:.decimals$}");
        if fixed.contains('.') { fixed.trim_end_matches('0').trim_end_matches('.').to_owned() } else { fixed }
    } else {
        tick(&format!("{value:.2e}").parse::<f64>().unwrap_or(value))
    }
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 560.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 120.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 56.0;

/// The heat map of `grid`: each cell coloured by its `value`, the grid's points ringed, every
/// cell and point with its data and hover text.
pub fn landscape(explorer: &Explorer, grid: &Grid, value: CellValue) -> Markup {
    let (x_name, y_name) = (&explorer.params[grid.x], &explorer.params[grid.y]);
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let (cw, ch) = (plot_w / grid.size as f64, plot_h / grid.size as f64);
    let shades = Shades::over(grid.cells.iter().flatten().map(|c| pick(c, value)), explorer.log_loss);
    let at_x = |v: f64| LEFT + grid.x_axis.fraction(v) * plot_w;
    let at_y = |v: f64| TOP + (1.0 - grid.y_axis.fraction(v)) * plot_h;
    let value_name = match value {
        CellValue::Min => "lowest loss",
        CellValue::Mean => "mean loss",
    };
    let best = grid.best_cell(value);
    html! {
        svg.heatmap xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width=(WIDTH) height=(HEIGHT)
            role="img" aria-label={ (value_name) " of " (x_name) " × " (y_name) }
            data-x=(x_name) data-y=(y_name) data-size=(grid.size) data-log-x=(grid.x_axis.log) data-log-y=(grid.y_axis.log)
            data-plot={ (LEFT) "," (TOP) "," (plot_w) "," (plot_h) } data-x-axis={ (grid.x_axis.lo) "," (grid.x_axis.hi) } data-y-axis={ (grid.y_axis.lo) "," (grid.y_axis.hi) } {
            rect.plot-area x=(LEFT) y=(TOP) width=(plot_w) height=(plot_h) fill="#f2f3f6" {}
            @for (at, cell) in grid.cells.iter().enumerate() {
                @if let Some(cell) = cell {
                    @let (i, j) = (at % grid.size, at / grid.size);
                    @let (x0, x1) = cell_range(&grid.x_axis, i, grid.size);
                    @let (y0, y1) = cell_range(&grid.y_axis, j, grid.size);
                    rect.cell x=(px(LEFT + i as f64 * cw)) y=(px(TOP + (grid.size - 1 - j) as f64 * ch)) width=(px(cw + 0.3)) height=(px(ch + 0.3))
                        fill=(shades.colour(pick(cell, value)))
                        data-x0=(x0) data-x1=(x1) data-y0=(y0) data-y1=(y1)
                        data-value=(pick(cell, value)) data-count=(cell.count) data-best[best == Some((i, j))]
                        data-hover={ (x_name) " " (short(x0)) "–" (short(x1)) " · " (y_name) " " (short(y0)) "–" (short(y1)) "\n"
                            "lowest loss " (layout::number(cell.min)) " · mean " (layout::number(cell.mean)) " · " (cell.count) (if cell.count == 1 { " row" } else { " rows" }) } {}
                }
            }
            // Lowest last, so it is on top; transparent fills, so the whole disc answers the pointer.
            @for (rank, point) in grid.points.iter().enumerate().rev() {
                circle.point cx=(px(at_x(point.values[grid.x]))) cy=(px(at_y(point.values[grid.y]))) r=(if rank == 0 { 6 } else { 4 })
                    fill="#ffffff" fill-opacity="0" stroke=(if rank == 0 { "#d7191c" } else { "#ffffff" }) stroke-width="2"
                    data-param-id=(point.param_id) data-loss=(point.loss) data-rank=(rank + 1)
                    data-hover=(point_hover(explorer, point, rank, &explorer.targets[grid.target])) {}
            }
            // Axes, ticks and names.
            @for (f, label) in ticks(&grid.x_axis) {
                @let x = LEFT + f * plot_w;
                line x1=(px(x)) x2=(px(x)) y1=(TOP + plot_h) y2=(TOP + plot_h + 5.0) stroke="#5b6475" {}
                text.tick x=(px(x)) y=(TOP + plot_h + 19.0) text-anchor="middle" { (label) }
            }
            @for (f, label) in ticks(&grid.y_axis) {
                @let y = TOP + (1.0 - f) * plot_h;
                line x1=(LEFT - 5.0) x2=(LEFT) y1=(px(y)) y2=(px(y)) stroke="#5b6475" {}
                text.tick x=(LEFT - 8.0) y=(px(y + 4.0)) text-anchor="end" { (label) }
            }
            text.axis x=(LEFT + plot_w / 2.0) y=(HEIGHT - 12.0) text-anchor="middle" { (x_name) (if grid.x_axis.log { " (log scale)" } else { "" }) }
            text.axis transform={ "translate(16 " (TOP + plot_h / 2.0) ") rotate(-90)" } text-anchor="middle" { (y_name) (if grid.y_axis.log { " (log scale)" } else { "" }) }
            // The colour bar.
            @let bar_x = WIDTH - RIGHT + 24.0;
            @for k in 0..40 {
                @let f = k as f64 / 40.0;
                rect x=(bar_x) y=(px(TOP + f * plot_h)) width="16" height=(px(plot_h / 40.0 + 0.3)) fill=(colour(1.0 - f)) {}
            }
            @for k in 0..5 {
                @let f = k as f64 / 4.0;
                text.tick x=(bar_x + 22.0) y=(px(TOP + f * plot_h + 4.0)) { (short(shades.loss_at(f))) }
            }
            text.tick x=(bar_x + 8.0) y=(TOP + plot_h + 19.0) text-anchor="middle" { (value_name) }
            rect.zoom x="0" y="0" width="0" height="0" fill="#1f6feb" fill-opacity="0.15" stroke="#1f6feb" pointer-events="none" {}
        }
    }
}

/// The hover text of the `rank`-th lowest row of `target`: its rank, id, loss, target and
/// parameters.
fn point_hover(explorer: &Explorer, point: &crate::explore::Point, rank: usize, target: &str) -> String {
    let params: Vec<String> = explorer.params.iter().zip(&point.values).map(|(name, v)| format!("{name} {}", tick(v))).collect();
    format!("#{} {}\nloss {} ({target})\n{}", rank + 1, point.param_id, layout::number(point.loss), params.join(" · "))
}

/// A pixel position as SVG text: two decimals are plenty. Written from whole hundredths: the
/// page writes thousands of these, and `{:.2}` on a float takes the slow exact path.
pub(crate) fn px(v: f64) -> String {
    if !v.is_finite() {
        return "0.00".into();
    }
    let hundredths = (v * 100.0).round() as i64;
    let sign = if hundredths < 0 { "-" } else { "" };
    let abs = hundredths.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// The matrix of every pair of parameters (lower triangle): a small heat map of the lowest loss
/// per cell, each linking to its landscape (`href_of(x, y)`), the selected pair outlined; the
/// diagonal names each parameter with its importance.
pub fn matrix(explorer: &Explorer, grids: &[Grid], importance: &[f64], selected: (usize, usize), href_of: impl Fn(usize, usize) -> String) -> Markup {
    const SIDE: f64 = 96.0;
    const GAP: f64 = 6.0;
    let n = explorer.params.len();
    let size = n as f64 * (SIDE + GAP);
    html! {
        svg.pairs xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (size) " " (size) } width=(size) height=(size) role="img" aria-label="every pair of parameters" {
            @for (k, name) in explorer.params.iter().enumerate() {
                @let origin = k as f64 * (SIDE + GAP);
                rect x=(origin) y=(origin) width=(SIDE) height=(SIDE) fill="#ffffff" stroke="#dde1e8" {}
                text.axis x=(origin + SIDE / 2.0) y=(origin + SIDE / 2.0 - 6.0) text-anchor="middle" { (name) }
                rect x=(origin + 10.0) y=(origin + SIDE / 2.0 + 6.0) width=(px((SIDE - 20.0) * importance.get(k).copied().unwrap_or(0.0))) height="8" fill="#2456c7" {}
                text.tick x=(origin + SIDE / 2.0) y=(origin + SIDE / 2.0 + 30.0) text-anchor="middle" { (format!("{:.0} %", 100.0 * importance.get(k).copied().unwrap_or(0.0))) }
            }
            @for grid in grids {
                // Row y, column x, below the diagonal.
                @let (col, row) = (grid.x.min(grid.y), grid.x.max(grid.y));
                @let (ox, oy) = (col as f64 * (SIDE + GAP), row as f64 * (SIDE + GAP));
                @let cell = SIDE / grid.size as f64;
                @let shades = Shades::over(grid.cells.iter().flatten().map(|c| c.min), explorer.log_loss);
                @let chosen = (grid.x, grid.y) == selected || (grid.y, grid.x) == selected;
                a.pair href=(href_of(grid.x, grid.y)) data-x=(explorer.params[grid.x]) data-y=(explorer.params[grid.y]) {
                    title { (explorer.params[grid.x]) " × " (explorer.params[grid.y]) }
                    rect x=(ox) y=(oy) width=(SIDE) height=(SIDE) fill="#f2f3f6" {}
                    @for (at, c) in grid.cells.iter().enumerate() {
                        @if let Some(c) = c {
                            rect x=(px(ox + (at % grid.size) as f64 * cell)) y=(px(oy + (grid.size - 1 - at / grid.size) as f64 * cell))
                                width=(px(cell + 0.3)) height=(px(cell + 0.3)) fill=(shades.colour(c.min)) {}
                        }
                    }
                    rect x=(ox) y=(oy) width=(SIDE) height=(SIDE) fill="none" stroke=(if chosen { "#d7191c" } else { "#dde1e8" }) stroke-width=(if chosen { 3 } else { 1 }) {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_values_inside_the_axis() {
        let axis = Axis { lo: 0.101953, hi: 0.598047, log: false };
        let labels: Vec<String> = ticks(&axis).into_iter().map(|(_, l)| l).collect();
        assert_eq!(labels, ["0.2", "0.3", "0.4", "0.5"]);
        assert!(ticks(&axis).iter().all(|(f, _)| (0.0..=1.0).contains(f)));
        let decades = Axis { lo: -4.2, hi: -0.5, log: true };
        assert_eq!(ticks(&decades).into_iter().map(|(_, l)| l).collect::<Vec<_>>(), ["1e-4", "1e-3", "1e-2", "1e-1"]);
        let narrow = Axis { lo: -1.0, hi: -0.5, log: true };
        assert_eq!(ticks(&narrow)[0].1, "0.1");
        assert_eq!((short(0.00653891), short(1.6561e-4), short(123.456), short(-0.0)), ("0.00654".into(), "1.66e-4".into(), "123".into(), "0".into()));
    }

    #[test]
    fn colours_run_from_dark_to_bright() {
        assert_eq!(colour(0.0), "#440154");
        assert_eq!(colour(1.0), "#fde725");
        assert_eq!(colour(-3.0), colour(0.0));
        assert_eq!(colour(0.5), "#21918c");
        let shades = Shades::over([1e-3, 1.0].into_iter(), true);
        assert_eq!(shades.colour(1e-3), "#fde725");
        assert!((shades.loss_at(0.5) - 10f64.powf(-1.5)).abs() < 1e-12);
    }
}
