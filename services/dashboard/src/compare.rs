//! The compare page: two jobs' losses on their shared parameter sets (a scatter of loss_b
//! against loss_a, the largest differences as a table), and the best parameter sets of one
//! target across every indexed job.

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
    let log = !pairs.is_empty() && lo > 0.0 && hi / lo > 1e3;
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

/// `GET /compare`.
#[tracing::instrument(name = "dashboard_compare", skip(dashboard))]
pub async fn page(State(dashboard): State<Dashboard>, Query(query): Query<CompareQuery>) -> Result<Markup, DashboardError> {
    let engine = dashboard.engine.as_ref().ok_or(DashboardError::ServiceNotRunning("query service"))?;
    let mut jobs = engine.catalog().jobs();
    jobs.sort_by(|x, y| y.indexed_at.cmp(&x.indexed_at).then_with(|| x.job_id.cmp(&y.job_id)));
    let targets: BTreeSet<&str> = jobs.iter().flat_map(|j| j.targets.iter().map(|t| t.target.as_str())).collect();

    let comparison = if !query.a.is_empty() && !query.b.is_empty() {
        let a = crate::job::job_id(&query.a)?;
        let b = crate::job::job_id(&query.b)?;
        let command = Command::Compare {
            job_a: a.as_str().to_owned(),
            job_b: b.as_str().to_owned(),
            target: (!query.target.is_empty()).then(|| query.target.clone()),
        };
        let batches = collect(engine, &command).await?;
        Some(tokio::task::spawn_blocking(move || compare_batches(a.as_str(), b.as_str(), &batches)).await.map_err(|e| DashboardError::Plot(e.to_string()))??)
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
            @if let Some(c) = &comparison {
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
