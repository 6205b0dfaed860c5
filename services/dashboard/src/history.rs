//! The history page: is the calibration improving? For one target (and optionally one bundle),
//! every indexed job is a point at the time its table was committed (which follows its end)
//! and its lowest loss of that target, with the best loss so far as a step line through them.
//! Read from the query service's catalog in memory, so 20,000 jobs cost one pass; at most
//! [`MAX_DRAWN`] points are drawn (every job that improved the best, then an even sample).

use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use crate::error::DashboardError;
use crate::explore::Axis;
use crate::heatmap::px;
use crate::{Dashboard, layout};

/// Most points drawn.
pub const MAX_DRAWN: usize = 2_000;

/// The history page's query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HistoryQuery {
    /// The target, by its exact name (default: the target of the latest indexed job).
    #[serde(default)]
    pub target: String,
    /// Only jobs of this bundle (its ref, or a prefix of at least 12 hex digits); empty: all.
    #[serde(default)]
    pub bundle: String,
}

/// One job on the history.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The job.
    pub job_id: String,
    /// When its table was committed.
    pub at: DateTime<Utc>,
    /// Its lowest loss of the target.
    pub loss: f64,
    /// Its bundle.
    pub bundle: String,
    /// Whether it lowered the best loss so far.
    pub improved: bool,
    /// The best loss up to and including it.
    pub best_so_far: f64,
}

/// The history of `target` over `jobs` (`bundle` matched as the catalog matches bundles), in
/// time order with the best loss so far.
pub fn history(jobs: &[std::sync::Arc<modelops_query::catalog::JobEntry>], target: &str, bundle: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = jobs
        .iter()
        .filter(|job| bundle.is_empty() || job.is_of_bundle(bundle))
        .filter_map(|job| {
            let loss = job.targets.iter().find(|t| &*t.target == target)?.min_loss.filter(|l| l.is_finite())?;
            let at = DateTime::parse_from_rfc3339(&job.indexed_at).ok()?.with_timezone(&Utc);
            Some(Entry {
                job_id: job.job_id.clone(),
                at,
                loss,
                bundle: job.bundle_digest.to_string(),
                improved: false,
                best_so_far: loss,
            })
        })
        .collect();
    entries.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.job_id.cmp(&b.job_id)));
    let mut best = f64::INFINITY;
    for entry in &mut entries {
        entry.improved = entry.loss < best;
        best = best.min(entry.loss);
        entry.best_so_far = best;
    }
    entries
}

/// The entries drawn: every improvement, then an even sample of the rest, at most [`MAX_DRAWN`].
fn drawn(entries: &[Entry]) -> Vec<usize> {
    let improved: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].improved).collect();
    if entries.len() <= MAX_DRAWN {
        return (0..entries.len()).collect();
    }
    let others: Vec<usize> = (0..entries.len()).filter(|&i| !entries[i].improved).collect();
    let room = MAX_DRAWN.saturating_sub(improved.len());
    let mut chosen: Vec<usize> = improved.into_iter().take(MAX_DRAWN).collect();
    chosen.extend((0..room.min(others.len())).map(|k| others[k * others.len() / room.min(others.len())]));
    chosen.sort_unstable();
    chosen
}

const WIDTH: f64 = 980.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 56.0;

/// The plot of `entries`: each drawn job a point (linking to its page), the best so far a step
/// line, losses on a log axis when they span over three orders of magnitude.
fn plot(entries: &[Entry]) -> Markup {
    let log = {
        let (lo, hi) = entries.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), e| (lo.min(e.loss), hi.max(e.loss)));
        crate::plots::spans_log_scale(lo, hi)
    };
    // The jobs' span and a margin of 5 % (at least 30 s) on each side, so no point sits on an edge.
    let times = {
        let seconds: Vec<f64> = entries.iter().map(|e| e.at.timestamp_micros() as f64 / 1e6).collect();
        let (lo, hi) = seconds.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &t| (lo.min(t), hi.max(t)));
        let margin = ((hi - lo) * 0.05).max(30.0);
        (lo <= hi).then_some(Axis { lo: lo - margin, hi: hi + margin, log: false })
    };
    let losses = Axis::over(entries.iter().map(|e| e.loss), log).map(|a| {
        let margin = (a.hi - a.lo) * 0.05;
        Axis { lo: a.lo - margin, hi: a.hi + margin, ..a }
    });
    let (Some(times), Some(losses)) = (times, losses) else { return html! {} };
    let (w, h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |e: &Entry| LEFT + times.fraction(e.at.timestamp_micros() as f64 / 1e6) * w;
    let y = |loss: f64| TOP + (1.0 - losses.fraction(loss)) * h;
    let mut steps = String::new();
    for (k, e) in entries.iter().enumerate() {
        if k == 0 {
            steps += &format!("M{} {}", px(x(e)), px(y(e.best_so_far)));
        } else {
            steps += &format!(" H{} V{}", px(x(e)), px(y(e.best_so_far)));
        }
    }
    if let Some(last) = entries.last() {
        steps += &format!(" H{}", px(LEFT + w.max(x(last) - LEFT)));
    }
    // Labels as precise as the axis needs: seconds within an hour, minutes within a few days.
    let span = times.hi - times.lo;
    let format = if span < 3600.0 { "%H:%M:%S" } else if span < 3.0 * 86_400.0 { "%m-%d %H:%M" } else { "%Y-%m-%d" };
    let time_label = |f: f64| {
        let seconds = times.value_at(f);
        DateTime::<Utc>::from_timestamp(seconds as i64, 0).map(|t| t.format(format).to_string()).unwrap_or_default()
    };
    html! {
        svg.history xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width=(WIDTH) height=(HEIGHT) role="img" aria-label="best loss over time" {
            rect x=(LEFT) y=(TOP) width=(w) height=(h) fill="#ffffff" stroke="#dde1e8" {}
            @for k in 0..5 {
                @let f = k as f64 / 4.0;
                line x1=(px(LEFT + f * w)) x2=(px(LEFT + f * w)) y1=(TOP + h) y2=(TOP + h + 5.0) stroke="#5b6475" {}
                text.tick x=(px(LEFT + f * w)) y=(TOP + h + 19.0) text-anchor=(if k == 0 { "start" } else if k == 4 { "end" } else { "middle" }) { (time_label(f)) }
            }
            @for (f, label) in crate::heatmap::ticks(&losses) {
                line x1=(LEFT - 5.0) x2=(LEFT) y1=(px(TOP + (1.0 - f) * h)) y2=(px(TOP + (1.0 - f) * h)) stroke="#5b6475" {}
                text.tick x=(LEFT - 8.0) y=(px(TOP + (1.0 - f) * h + 4.0)) text-anchor="end" { (label) }
            }
            text.axis x=(LEFT + w / 2.0) y=(HEIGHT - 10.0) text-anchor="middle" { "table committed (UTC)" }
            text.axis transform={ "translate(16 " (TOP + h / 2.0) ") rotate(-90)" } text-anchor="middle" { "lowest loss" (if log { " (log scale)" } else { "" }) }
            path.best-so-far d=(steps) fill="none" stroke="#d7191c" stroke-width="2" {}
            @for i in drawn(entries) {
                @let e = &entries[i];
                a href={ "/jobs/" (e.job_id) } {
                    circle.job cx=(px(x(e))) cy=(px(y(e.loss))) r=(if e.improved { 5 } else { 3 })
                        fill=(if e.improved { "#d7191c" } else { "#2456c7" }) fill-opacity="0.7"
                        data-job=(e.job_id) data-loss=(e.loss) data-improved[e.improved]
                        data-hover={ (e.job_id) "\nlowest loss " (layout::number(e.loss)) (if e.improved { " (a new best)" } else { "" })
                            "\nbest so far " (layout::number(e.best_so_far)) "\nbundle " (e.bundle.get(..19).unwrap_or(&e.bundle)) "\n" (e.at.to_rfc3339()) } {}
                }
            }
        }
    }
}

/// The first 20 of `names`, comma-separated, with how many more there are.
fn listed<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    let total = names.len();
    let shown: Vec<&str> = names.take(20).collect();
    if total > shown.len() { format!("{}, and {} more", shown.join(", "), total - shown.len()) } else { shown.join(", ") }
}

/// `GET /history`.
#[tracing::instrument(name = "dashboard_history", skip(dashboard))]
pub async fn page(State(dashboard): State<Dashboard>, Query(query): Query<HistoryQuery>) -> Result<Markup, DashboardError> {
    let engine = dashboard.engine.as_ref().ok_or(DashboardError::ServiceNotRunning("query service"))?;
    let jobs = engine.catalog().jobs();
    let targets: std::collections::BTreeSet<&str> = jobs.iter().flat_map(|j| j.targets.iter().map(|t| &*t.target)).collect();
    let target = if query.target.is_empty() {
        jobs.iter().max_by(|a, b| a.indexed_at.cmp(&b.indexed_at)).and_then(|j| j.targets.first()).map(|t| t.target.to_string()).unwrap_or_default()
    } else if targets.contains(query.target.as_str()) {
        query.target.clone()
    } else {
        return Err(DashboardError::BadRequest(format!(
            "target: expected one of {}; got {:?}",
            listed(targets.iter().copied()),
            query.target
        )));
    };
    let bundles: std::collections::BTreeSet<&str> = jobs
        .iter()
        .filter(|j| j.targets.iter().any(|t| *t.target == *target))
        .map(|j| &*j.bundle_digest)
        .collect();
    if !query.bundle.is_empty() && !bundles.iter().any(|b| modelops_query::catalog::bundle_matches(b, &query.bundle)) {
        return Err(DashboardError::BadRequest(format!(
            "bundle: expected the ref of a bundle with jobs of this target, or at least 12 hex digits of its digest ({}); got {:?}",
            listed(bundles.iter().copied()),
            query.bundle
        )));
    }
    let entries = history(&jobs, &target, &query.bundle);
    let improvements: Vec<&Entry> = entries.iter().filter(|e| e.improved).collect();
    Ok(layout::page(
        "History",
        "history",
        html! {
            h1 { "History" }
            form.filters method="get" action="/history" {
                label { "Target "
                    select name="target" data-autosubmit {
                        @for t in &targets { option value=(t) selected[*t == target] { (t) } }
                    }
                }
                label { "Bundle "
                    select name="bundle" data-autosubmit {
                        option value="" selected[query.bundle.is_empty()] { "all" }
                        @for b in &bundles { option value=(b) selected[*b == query.bundle] { (b.get(..19).unwrap_or(b)) } }
                    }
                }
                noscript { button type="submit" { "Show" } }
            }
            @if entries.is_empty() {
                p.empty { "No indexed job has a loss for this target." }
            } @else {
                p.note {
                    (entries.len()) (if entries.len() == 1 { " job" } else { " jobs" }) " with a loss for " code { (target) } ", each at the time its loss table was committed; "
                    (improvements.len()) " lowered the best loss (red, joined by the best-so-far line). Best now: "
                    strong data-best=(entries.last().map_or(f64::NAN, |e| e.best_so_far)) { (layout::number(entries.last().map_or(f64::NAN, |e| e.best_so_far))) } "."
                    @if entries.len() > MAX_DRAWN { " Drawn: every improvement and an even sample of the rest, " (MAX_DRAWN) " points in all." }
                }
                figure.history { (plot(&entries)) }
                h2 { "Each new best" }
                table.data id="improvements" {
                    thead { tr { th { "Job" } th { "Committed" } th { "Lowest loss" } th { "Bundle" } } }
                    tbody {
                        @for e in improvements.iter().rev() {
                            tr data-job=(e.job_id) data-loss=(e.loss) {
                                td { a href={ "/jobs/" (e.job_id) } { (e.job_id) } }
                                td { (layout::time(&e.at.to_rfc3339(), "at")) }
                                td.num { (layout::number(e.loss)) }
                                td { code title=(e.bundle) { (e.bundle.get(..19).unwrap_or(&e.bundle)) } }
                            }
                        }
                    }
                }
            }
        },
    ))
}
