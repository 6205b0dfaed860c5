//! Parallel coordinates of a job's parameter sets: one vertical axis per numeric parameter and
//! one for the loss, each set a line across them coloured by its loss (brighter is lower), the
//! lowest sets drawn on top in full colour. At most [`MAX_LINES`] lines (the lowest, then an
//! even sample of the rest), so the bytes are bounded whatever the table's size.
//!
//! Brushing is the page script's: dragging along an axis keeps only the lines whose value on it
//! lies in the dragged range (every brushed axis must agree); each line carries its values in
//! `data-values` and each axis its scale, so nothing is asked of the server.

use maud::{Markup, html};

use crate::explore::{Axis, Explorer, Lines};
use crate::heatmap::{colour, px};
use crate::layout;
use crate::plots::tick;

/// Most lines drawn.
pub const MAX_LINES: usize = 1_000;

const HEIGHT: f64 = 380.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 28.0;
const SPACING: f64 = 150.0;
const SIDE: f64 = 72.0;

/// The parallel coordinates of `lines` (each parameter on its default scale, the loss on the
/// page's).
pub fn plot(explorer: &Explorer, lines: &Lines) -> Markup {
    let n_axes = explorer.params.len() + 1;
    let width = SIDE * 2.0 + SPACING * (n_axes - 1) as f64;
    let h = HEIGHT - TOP - BOTTOM;
    let axes: Vec<Option<Axis>> = (0..explorer.params.len())
        .map(|p| Axis::over(lines.rows.iter().map(|(values, _)| values[p]), explorer.log_by_default(p)))
        .chain(std::iter::once(Axis::over(lines.rows.iter().map(|(_, loss)| *loss), explorer.log_loss)))
        .collect();
    let names: Vec<&str> = explorer.params.iter().map(String::as_str).chain(std::iter::once("loss")).collect();
    let x = |k: usize| SIDE + SPACING * k as f64;
    let y = |axis: &Option<Axis>, v: f64| axis.as_ref().map(|a| TOP + (1.0 - a.fraction(v)) * h);
    let path = |(values, loss): &(Vec<f64>, f64)| {
        let mut d = String::with_capacity(16 * axes.len());
        for (k, axis) in axes.iter().enumerate() {
            let v = if k < values.len() { values[k] } else { *loss };
            if let Some(at) = y(axis, v).filter(|at| at.is_finite()) {
                d.push_str(if d.is_empty() { "M" } else { " L" });
                d.push_str(&px(x(k)));
                d.push(' ');
                d.push_str(&px(at));
            }
        }
        d
    };
    let shown = lines.rows.len().max(1);
    html! {
        svg.parallel xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (px(width)) " " (HEIGHT) } width=(px(width)) height=(HEIGHT)
            role="img" aria-label="parallel coordinates of the parameter sets" data-top=(TOP) data-height=(h) {
            // Sampled lines first, the lowest on top of them, the very lowest last.
            @for (k, row) in lines.rows.iter().enumerate().rev() {
                @let values: Vec<String> = row.0.iter().chain(std::iter::once(&row.1)).map(|v| v.to_string()).collect();
                path.line d=(path(row)) fill="none" stroke=(colour(1.0 - k as f64 / shown as f64))
                    stroke-width=(if k < lines.top { "2" } else { "1" }) stroke-opacity=(if k < lines.top { "1" } else { "0.35" })
                    data-values=(values.join(",")) data-top[k < lines.top] data-rank=(k + 1) data-param-id=[lines.names[k].as_deref()]
                    data-hover=[lines.names[k].as_deref().map(|id| format!("#{} {id}\nloss {}", k + 1, crate::layout::number(row.1)))] {}
            }
            @for (k, axis) in axes.iter().enumerate() {
                @if let Some(axis) = axis {
                    g.axis data-index=(k) data-name=(names[k]) data-lo=(axis.lo) data-hi=(axis.hi) data-log=(axis.log) data-x=(x(k)) {
                        line x1=(px(x(k))) x2=(px(x(k))) y1=(TOP) y2=(TOP + h) stroke="#1d2330" stroke-width="1.5" {}
                        @for (f, label) in crate::heatmap::ticks(axis) {
                            line x1=(px(x(k) - 4.0)) x2=(px(x(k))) y1=(px(TOP + (1.0 - f) * h)) y2=(px(TOP + (1.0 - f) * h)) stroke="#1d2330" {}
                            text.tick x=(px(x(k) - 6.0)) y=(px(TOP + (1.0 - f) * h + 4.0)) text-anchor="end" { (label) }
                        }
                        text.axis x=(px(x(k))) y=(TOP - 14.0) text-anchor="middle" { (names[k]) (if axis.log { " (log)" } else { "" }) }
                        // The area the pointer drags along to brush this axis.
                        rect.brush-area x=(px(x(k) - 12.0)) y=(TOP) width="24" height=(h) fill="#000000" fill-opacity="0" {}
                        rect.brush x=(px(x(k) - 8.0)) y=(TOP) width="16" height="0" fill="#2456c7" fill-opacity="0.25" stroke="#2456c7" {}
                    }
                }
            }
        }
    }
}

/// The parallel-coordinates section: the plot and what it draws.
pub fn section(explorer: &Explorer, lines: &Lines, target: &str) -> Markup {
    html! {
        section.parallel id="parallel" {
            h2 { "Parallel coordinates" }
            p.note {
                "The " (lines.rows.len()) " parameter sets drawn of " (lines.of) " of " code { (target) }
                @if lines.rows.len() < lines.of { " (the " (lines.top) " lowest and an even sample of the rest)" }
                ", coloured by loss (brighter is lower), the " (lines.top) " lowest in full colour. Drag along an axis to keep only the sets in that range; drag again elsewhere on it to clear. "
                span data-brushed { (lines.rows.len()) " of " (lines.rows.len()) " shown" } "."
            }
            figure.parallel { (plot(explorer, lines)) }
            @if let Some((values, loss)) = lines.rows.first() {
                p.note { "Lowest: loss " (layout::number(*loss)) " at "
                    @for (k, name) in explorer.params.iter().enumerate() { (name) " " (tick(&values[k])) (if k + 1 < explorer.params.len() { ", " } else { "" }) } "." }
            }
        }
    }
}
