//! The compare page: two jobs' losses on their shared parameter sets (a scatter of loss_b
//! against loss_a, the largest differences as a table); the two jobs overlaid whether or not
//! they share sets (their loss distributions, and loss against each parameter they both have,
//! one colour per job); and the best parameter sets of one target across every indexed job.

use std::collections::BTreeSet;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Float64Type;
use axum::extract::{Query, State};
use maud::{Markup, html};
use modelops_query::Command;
use serde::Deserialize;

use crate::error::DashboardError;
use crate::plots::{self, Series};
use crate::{Dashboard, layout};

/// Rows of the largest-difference table.
const LARGEST_DIFFERENCES: usize = 20;

/// The compare page's query string.
#[derive(Debug, Default, Deserialize)]
pub struct CompareQuery {
    /// First job.
    #[serde(default)]
    pub a: String,
    /// Second job.
    #[serde(default)]
    pub b: String,
    /// Only this target in the comparison.
    #[serde(default)]
    pub target: String,
    /// Target of the best-parameters table (default: the first target known).
    #[serde(default)]
    pub best_target: String,
    /// Rows of the best-parameters table.
    pub n: Option<usize>,
}

async fn collect(engine: &modelops_query::Engine, command: &Command) -> Result<Vec<RecordBatch>, DashboardError> {
    Ok(modelops_query::engine::collect(engine.execute(command).await?).await?)
}

/// Columns the best-across-jobs table leaves out: one value for the whole table (target) or
/// too long to read (the bundle digest is on each job's page).
const HIDDEN_COLUMNS: [&str; 3] = ["target", "bundle_digest", "status"];

/// A table of `batches`' first `limit` rows as text: job ids link to their page, parameter-set
/// ids are shortened (whole in the tooltip).
fn batch_table(batches: &[RecordBatch], limit: usize, id: &str) -> Markup {
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return html! { p.empty { "No rows." } };
    };
    let shown: Vec<(usize, &str)> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| (i, f.name().as_str()))
        .filter(|(_, name)| !HIDDEN_COLUMNS.contains(name))
        .collect();
    let rows = batches
        .iter()
        .flat_map(|batch| (0..batch.num_rows()).map(move |row| (batch, row)))
        .take(limit);
    html! {
        table.data id=(id) {
            thead { tr { @for (_, name) in &shown { th { (if *name == "param_id" { name } else { name.trim_start_matches("param_") }) } } } }
            tbody {
                @for (batch, row) in rows {
                    tr {
                        @for (i, name) in &shown {
                            @let value = cell(batch.column(*i).as_ref(), row);
                            @match *name {
                                "job_id" => { td { a href={ "/jobs/" (value) } { (value) } } }
                                "param_id" => { td { code title=(value) { (value.get(..12).unwrap_or(&value)) } } }
                                _ => { td { (value) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn cell(column: &dyn Array, row: usize) -> String {
    if column.is_null(row) {
        return String::new();
    }
    match column.as_primitive_opt::<Float64Type>() {
        Some(floats) => layout::number(floats.value(row)),
        None => arrow::util::display::array_value_to_string(column, row).unwrap_or_default(),
    }
}

/// What the comparison of two jobs shows.
struct Comparison {
    shared: usize,
    both_ok: usize,
    b_lower: usize,
    svg: String,
    largest: Vec<(String, String, f64, f64, f64)>,
}

fn compare_batches(a: &str, b: &str, batches: &[RecordBatch]) -> Result<Comparison, DashboardError> {
    let mut targets: Vec<String> = Vec::new();
    let mut series: Vec<Series> = Vec::new();
    let mut pairs = Vec::new();
    let mut shared = 0;
    for batch in batches {
        shared += batch.num_rows();
        let column = |name: &str| batch.column_by_name(name).ok_or_else(|| DashboardError::NotFound(format!("comparison has no {name} column")));
        let param_id = column("param_id")?.as_string::<i32>().clone();
        let target = column("target")?.as_string::<i32>().clone();
        let loss_a = column("loss_a")?.as_primitive::<Float64Type>().clone();
        let loss_b = column("loss_b")?.as_primitive::<Float64Type>().clone();
        for row in 0..batch.num_rows() {
            if loss_a.is_null(row) || loss_b.is_null(row) || !loss_a.value(row).is_finite() || !loss_b.value(row).is_finite() {
                continue;
            }
            let t = match targets.iter().position(|t| t == target.value(row)) {
                Some(t) => t,
                None => {
                    targets.push(target.value(row).to_owned());
                    series.push(Series::new(target.value(row)));
                    targets.len() - 1
                }
            };
            pairs.push((t, param_id.value(row).to_owned(), loss_a.value(row), loss_b.value(row)));
        }
    }
    let (lo, hi) = pairs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.2.min(p.3)), hi.max(p.2.max(p.3))));
    let log = plots::spans_log_scale(lo, hi);
    let scale = |v: f64| if log { v.log10() } else { v };
    let stride = pairs.len().div_ceil(crate::landscape::MAX_POINTS).max(1);
    for (i, (t, _, la, lb)) in pairs.iter().enumerate() {
        if i % stride == 0 {
            series[*t].points.push((scale(*la), scale(*lb)));
        }
    }
    let svg = plots::comparison(a, b, &series, log).map_err(DashboardError::Plot)?;
    let b_lower = pairs.iter().filter(|p| p.3 < p.2).count();
    let both_ok = pairs.len();
    pairs.sort_by(|x, y| (y.3 - y.2).abs().total_cmp(&(x.3 - x.2).abs()));
    let largest = pairs
        .into_iter()
        .take(LARGEST_DIFFERENCES)
        .map(|(t, id, la, lb)| (targets[t].clone(), id, la, lb, lb - la))
        .collect();
    Ok(Comparison {
        shared,
        both_ok,
        b_lower,
        svg,
        largest,
    })
}

/// Two jobs overlaid on one target: SVGs of their loss distributions and of loss against each
/// parameter both have.
struct Overlay {
    target: String,
    rows: (usize, usize),
    histogram: String,
    params: Vec<(String, String)>,
}

/// Overlays target `target` of two jobs' landscapes (`None` when either lacks it).
fn overlay(a: (&str, &crate::landscape::Landscape), b: (&str, &crate::landscape::Landscape), target: &str) -> Result<Option<Overlay>, DashboardError> {
    let max = crate::landscape::MAX_POINTS / 2;
    let keep = crate::landscape::KEEP_BEST / 2;
    let (Some((losses_a, rows_a)), Some((losses_b, rows_b))) = (a.1.explorer.sample_of(target, max, keep), b.1.explorer.sample_of(target, max, keep)) else {
        return Ok(None);
    };
    let (lo, hi) = losses_a.iter().chain(&losses_b).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &l| (lo.min(l), hi.max(l)));
    let log = plots::spans_log_scale(lo, hi);
    let y = |loss: f64| if log { loss.log10() } else { loss };
    let label = |job: &str, side: &str| format!("{side}: {job}");
    let (label_a, label_b) = (label(a.0, "A"), label(b.0, "B"));
    let histogram = plots::histogram(&[(label_a.as_str(), losses_a.iter().map(|&l| y(l)).collect()), (label_b.as_str(), losses_b.iter().map(|&l| y(l)).collect())], log).map_err(DashboardError::Plot)?;
    let mut params = Vec::new();
    for (pa, name) in a.1.explorer.params.iter().enumerate() {
        let Some(pb) = b.1.explorer.params.iter().position(|n| n == name) else { continue };
        let points = |rows: &[(Vec<f64>, f64)], p: usize| rows.iter().filter(|(v, _)| v[p].is_finite()).map(|(v, l)| (v[p], y(*l))).collect::<Vec<_>>();
        let mut series = [Series::new(&label_a), Series::new(&label_b)];
        series[0].points = points(&rows_a, pa);
        series[1].points = points(&rows_b, pb);
        params.push((name.clone(), plots::landscape(name, &series, log, false).map_err(DashboardError::Plot)?));
    }
    Ok(Some(Overlay {
        target: target.to_owned(),
        rows: (losses_a.len(), losses_b.len()),
        histogram,
        params,
    }))
}

/// `GET /compare`.
#[tracing::instrument(name = "dashboard_compare", skip(dashboard))]
pub async fn page(State(dashboard): State<Dashboard>, Query(query): Query<CompareQuery>) -> Result<Markup, DashboardError> {
    let engine = dashboard.engine.as_ref().ok_or(DashboardError::ServiceNotRunning("query service"))?;
    let mut jobs = engine.catalog().jobs();
    jobs.sort_by(|x, y| y.indexed_at.cmp(&x.indexed_at).then_with(|| x.job_id.cmp(&y.job_id)));
    let targets: BTreeSet<&str> = jobs.iter().flat_map(|j| j.targets.iter().map(|t| &*t.target)).collect();

    let comparison = if !query.a.is_empty() && !query.b.is_empty() {
        let a = crate::job::job_id(&query.a)?;
        let b = crate::job::job_id(&query.b)?;
        let command = Command::Compare {
            job_a: a.as_str().to_owned(),
            job_b: b.as_str().to_owned(),
            target: (!query.target.is_empty()).then(|| query.target.clone()),
        };
        let batches = collect(engine, &command).await?;
        let (entry_a, entry_b) = (engine.catalog().job(a.as_str()).await?, engine.catalog().job(b.as_str()).await?);
        let (landscape_a, landscape_b) = (dashboard.landscapes.get(engine, &entry_a).await?, dashboard.landscapes.get(engine, &entry_b).await?);
        let target = if query.target.is_empty() {
            landscape_a.targets.iter().find(|t| landscape_b.targets.contains(t)).or(landscape_a.targets.first()).cloned().unwrap_or_default()
        } else {
            query.target.clone()
        };
        Some(
            tokio::task::spawn_blocking(move || {
                let comparison = compare_batches(a.as_str(), b.as_str(), &batches)?;
                let overlay = overlay((a.as_str(), &landscape_a), (b.as_str(), &landscape_b), &target)?;
                Ok::<_, DashboardError>((comparison, overlay))
            })
            .await
            .map_err(|e| DashboardError::Plot(e.to_string()))??,
        )
    } else {
        None
    };

    let best_target = if query.best_target.is_empty() { targets.iter().next().map(|t| (*t).to_owned()) } else { Some(query.best_target.clone()) };
    let n = query.n.unwrap_or(10).clamp(1, 1000);
    let best = match &best_target {
        Some(target) => Some(
            collect(
                engine,
                &Command::BestParameters {
                    target: target.clone(),
                    n,
                    bundle_digest: None,
                },
            )
            .await?,
        ),
        None => None,
    };

    Ok(layout::page(
        "Compare",
        "compare",
        html! {
            h1 { "Compare jobs" }
            form.filters method="get" action="/compare" {
                label { "Job A " select name="a" { option value="" { "—" } @for job in &jobs { option value=(job.job_id) selected[query.a == job.job_id] { (job.job_id) } } } }
                label { "Job B " select name="b" { option value="" { "—" } @for job in &jobs { option value=(job.job_id) selected[query.b == job.job_id] { (job.job_id) } } } }
                label { "Target " select name="target" { option value="" { "all" } @for t in &targets { option value=(t) selected[query.target == *t] { (t) } } } }
                input type="hidden" name="best_target" value=(query.best_target);
                button type="submit" { "Compare" }
            }
            @if let Some((c, overlay)) = &comparison {
                section.comparison {
                    p { (c.shared) " shared rows (parameter set × target); " (c.both_ok) " with a loss in both; B is lower on " (c.b_lower) "." }
                    figure.compare { (layout::svg(&c.svg)) }
                    h2 { "Largest differences" }
                    table id="largest" class="data" {
                        thead { tr { th { "Target" } th { "param_id" } th { "loss A" } th { "loss B" } th { "B − A" } } }
                        tbody { @for (target, id, la, lb, delta) in &c.largest {
                            tr { td { (target) } td { code title=(id) { (id.get(..12).unwrap_or(id)) } } td.num { (layout::number(*la)) } td.num { (layout::number(*lb)) } td.num { (layout::number(*delta)) } }
                        } }
                    }
                }
                @match overlay {
                    Some(o) => {
                        section.overlay data-target=(o.target) data-rows-a=(o.rows.0) data-rows-b=(o.rows.1) {
                            h2 { "Both jobs overlaid" }
                            p.note {
                                "Every row of " code { (o.target) } " in each job, shared sets or not: " (o.rows.0) " of A and " (o.rows.1) " of B, A in the first colour, B in the second (each plot draws at most "
                                (crate::landscape::MAX_POINTS / 2) " of each job: the lowest and an even sample)."
                            }
                            figure.histogram { (layout::svg(&o.histogram)) }
                            div.plots {
                                @for (name, svg) in &o.params {
                                    figure.landscape data-param=(name) { (layout::svg(svg)) }
                                }
                            }
                        }
                    }
                    None => { p.note { "The two jobs have no target in common to overlay." } }
                }
            } @else if jobs.len() < 2 {
                p.note { "Comparing needs two indexed jobs." }
            }
            h1 { "Best parameter sets across jobs" }
            form.filters method="get" action="/compare" {
                input type="hidden" name="a" value=(query.a);
                input type="hidden" name="b" value=(query.b);
                input type="hidden" name="target" value=(query.target);
                label { "Target " select name="best_target" { @for t in &targets { option value=(t) selected[best_target.as_deref() == Some(*t)] { (t) } } } }
                label { "Rows " input type="number" name="n" min="1" max="1000" value=(n); }
                button type="submit" { "Show" }
            }
            @match &best {
                Some(batches) => { (batch_table(batches, n, "best-across")) }
                None => { p.empty { "No indexed jobs yet." } }
            }
        },
    ))
}
