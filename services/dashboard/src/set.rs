//! The page of one parameter set of a job, `/jobs/{job_id}/sets/{param_id}`, which every point,
//! line and best row of the job page opens: its values; its loss for each target with its rank;
//! the loss of each replicate (from the per-replicate table, when the results carry them); the
//! model outputs of its simulations as a band over replicates (see [`crate::outputs`]); every
//! simulation and aggregation of it with its path and the other jobs that own it; and the same
//! in Python.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use axum::extract::{Path, State};
use maud::{Markup, html};
use modelops_attribution_client::{ResultOwner, ResultRef};
use modelops_core::pyjson::PyObject;
use modelops_core::study::JobSpec;
use modelops_query::Command;
use modelops_query::command::LossesQuery;

use crate::error::DashboardError;
use crate::{Dashboard, layout};

/// Results whose owners are looked up, at most (a set has one simulation per replicate and one
/// aggregation per target).
pub const MAX_OWNER_LOOKUPS: usize = 64;

/// A parameter-set id from a path: 1 to 128 characters of `[0-9A-Za-z._-]` (upstream's are 64
/// hex digits).
pub fn param_id(raw: &str) -> Result<&str, DashboardError> {
    let valid = !raw.is_empty() && raw.len() <= 128 && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid { Ok(raw) } else { Err(DashboardError::BadRequest(format!("param_id {:?}: expected 1 to 128 characters of 0-9, a-z, A-Z, '.', '_', '-'", raw.get(..64).unwrap_or(raw)))) }
}

/// The set's row of one target in the loss table.
#[derive(Debug, Clone, PartialEq)]
struct TargetRow {
    target: String,
    loss: Option<f64>,
    status: String,
    n_replicates: Option<i64>,
    cache_hit: bool,
    /// 1 + the rows of the target with a lower loss, and the rows with a loss.
    rank: Option<(usize, usize)>,
}

/// One replicate's loss.
#[derive(Debug, Clone, PartialEq)]
struct Replicate {
    target: String,
    index: i64,
    seed: Option<i64>,
    loss: Option<f64>,
}

/// The set's rows of each target in `batches` (a job's loss table), each ranked in its target.
fn target_rows(batches: &[RecordBatch], param_id: &str) -> Vec<TargetRow> {
    let mut rows: Vec<TargetRow> = Vec::new();
    let text = crate::text_column::TextColumn::named;
    for batch in batches {
        let (Some(ids), Some(targets), Some(status)) = (text(batch, "param_id"), text(batch, "target"), text(batch, "status")) else { continue };
        let loss = batch.column_by_name("loss").and_then(|c| c.as_primitive_opt::<Float64Type>().cloned());
        let replicates = batch.column_by_name("n_replicates").and_then(|c| c.as_primitive_opt::<Int64Type>().cloned());
        let cache_hit = batch.column_by_name("cache_hit").and_then(|c| c.as_boolean_opt().cloned());
        for row in 0..batch.num_rows() {
            if ids.value(row) == param_id {
                rows.push(TargetRow {
                    target: targets.value(row).to_owned(),
                    loss: loss.as_ref().filter(|l| !l.is_null(row)).map(|l| l.value(row)).filter(|l| l.is_finite()),
                    status: status.value(row).to_owned(),
                    n_replicates: replicates.as_ref().filter(|r| !r.is_null(row)).map(|r| r.value(row)),
                    cache_hit: cache_hit.as_ref().is_some_and(|c| c.value(row)),
                    rank: None,
                });
            }
        }
    }
    // Ranks: a second pass counting, per target, the rows with a loss and those below the set's.
    let mut counts: Vec<(usize, usize)> = vec![(0, 0); rows.len()];
    for batch in batches {
        let (Some(targets), Some(loss)) = (text(batch, "target"), batch.column_by_name("loss").and_then(|c| c.as_primitive_opt::<Float64Type>().cloned())) else { continue };
        for row in 0..batch.num_rows() {
            if loss.is_null(row) || !loss.value(row).is_finite() {
                continue;
            }
            for (i, set_row) in rows.iter().enumerate() {
                if set_row.target == targets.value(row) {
                    counts[i].1 += 1;
                    if set_row.loss.is_some_and(|l| loss.value(row) < l) {
                        counts[i].0 += 1;
                    }
                }
            }
        }
    }
    for (row, (below, of)) in rows.iter_mut().zip(counts) {
        row.rank = row.loss.map(|_| (below + 1, of));
    }
    rows
}

/// The set's replicates in `batches` (a job's per-replicate table).
fn replicates(batches: &[RecordBatch], param_id: &str) -> Vec<Replicate> {
    let mut out = Vec::new();
    for batch in batches {
        let ids = batch.column_by_name("param_id").and_then(|c| c.as_string_opt::<i32>());
        let targets = batch.column_by_name("target").and_then(|c| c.as_string_opt::<i32>());
        let index = batch.column_by_name("replicate_idx").and_then(|c| c.as_primitive_opt::<Int64Type>());
        let seed = batch.column_by_name("seed").and_then(|c| c.as_primitive_opt::<Int64Type>());
        let loss = batch.column_by_name("loss").and_then(|c| c.as_primitive_opt::<Float64Type>());
        let (Some(ids), Some(targets), Some(index), Some(seed), Some(loss)) = (ids, targets, index, seed, loss) else { continue };
        for row in 0..batch.num_rows() {
            if ids.value(row) == param_id {
                out.push(Replicate {
                    target: targets.value(row).to_owned(),
                    index: index.value(row),
                    seed: (!seed.is_null(row)).then(|| seed.value(row)),
                    loss: (!loss.is_null(row)).then(|| loss.value(row)),
                });
            }
        }
    }
    out.sort_by(|a, b| (a.target.as_str(), a.index).cmp(&(b.target.as_str(), b.index)));
    out
}

/// `GET /jobs/{job_id}/sets/{param_id}`.
#[tracing::instrument(name = "dashboard_set", skip(dashboard))]
pub async fn page(State(dashboard): State<Dashboard>, Path((raw_job, raw_set)): Path<(String, String)>) -> Result<Markup, DashboardError> {
    let job = crate::job::job_id(&raw_job)?;
    let set = param_id(&raw_set)?;
    let values: Option<PyObject> = match &dashboard.registry {
        Some(registry) => match registry.spec_bytes(&job).await {
            Ok((_, bytes)) => match JobSpec::from_json(&bytes) {
                Ok(JobSpec::Simulation(spec)) => spec.task_groups().into_iter().find(|g| g.param_id == set).map(|g| g.values.clone()),
                _ => None,
            },
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => return Err(status.into()),
        },
        None => None,
    };
    let entry = match &dashboard.engine {
        Some(engine) => match engine.catalog().job(job.as_str()).await {
            Ok(entry) => Some(entry),
            Err(modelops_query::QueryError::JobNotFound(_)) => None,
            Err(error) => return Err(error.into()),
        },
        None => None,
    };
    let (rows, replicate_rows) = match (&dashboard.engine, &entry) {
        (Some(engine), Some(entry)) => {
            let table = modelops_query::engine::collect(engine.execute(&Command::Losses(LossesQuery::whole_table(&entry.job_id))).await?).await?;
            let reps = match &entry.replicates {
                Some(_) => modelops_query::engine::collect(engine.execute(&Command::Replicates { job_id: entry.job_id.clone() }).await?).await?,
                None => Vec::new(),
            };
            // Scanned off the async runtime: a table of a million rows takes a while.
            let wanted = set.to_owned();
            tokio::task::spawn_blocking(move || (target_rows(&table, &wanted), replicates(&reps, &wanted)))
                .await
                .map_err(|e| DashboardError::Plot(format!("scanning task failed: {e}")))?
        }
        _ => (Vec::new(), Vec::new()),
    };
    let results: Vec<ResultRef> = match &dashboard.attribution {
        Some(attribution) => attribution.param_set_results(&job, set).await.map_err(DashboardError::Attribution)?,
        None => Vec::new(),
    };
    if values.is_none() && rows.is_empty() && results.is_empty() {
        return Err(DashboardError::NotFound(format!("job {:?} has no parameter set {set:?}", job.as_str())));
    }
    let mut owners: Vec<Option<Vec<ResultOwner>>> = Vec::new();
    if let Some(attribution) = &dashboard.attribution {
        for result in results.iter().take(MAX_OWNER_LOOKUPS) {
            owners.push(Some(attribution.owners(&result.path).await.map_err(DashboardError::Attribution)?));
        }
    }
    let bands = match &dashboard.provenance {
        Some(provenance) => {
            let sims: Vec<crate::outputs::SimSource> = results.iter().filter(|r| !r.aggregation).map(|r| crate::outputs::SimSource { dir: r.path.clone(), group: 0 }).collect();
            Some(crate::outputs::read_bands(provenance, &sims).await?)
        }
        None => None,
    };
    let short = set.get(..12).unwrap_or(set);
    Ok(layout::page(
        &format!("{short} · {}", job.as_str()),
        "jobs",
        html! {
            section.set data-job=(job.as_str()) data-param-id=(set) {
                h1 { "Parameter set " code title=(set) { (short) } " of job " a href={ "/jobs/" (job.as_str()) } { code { (job.as_str()) } } }
                p.note { "param_id " code.id { (set) } }
                @if let Some(values) = &values {
                    table.data.values {
                        thead { tr { th { "Parameter" } th { "Value" } } }
                        tbody { @for (name, value) in values.iter() { tr data-name=(name) { td { (name) } td.num { (modelops_core::param_columns::text_of(value)) } } } }
                    }
                }
            }
            section.set-losses {
                h2 { "Loss" }
                @if rows.is_empty() {
                    p.note { "The job has no loss table yet." }
                } @else {
                    table.data.losses {
                        thead { tr { th { "Target" } th { "Loss" } th { "Rank" } th { "Replicates" } th { "Cache hit" } th { "Status" } } }
                        tbody {
                            @for row in &rows {
                                tr data-target=(row.target) data-loss=[row.loss] data-rank=[row.rank.map(|r| r.0)] {
                                    td { (row.target) }
                                    td.num { (row.loss.map(layout::number).unwrap_or_default()) }
                                    td.num { @if let Some((rank, of)) = row.rank { (rank) " of " (of) } }
                                    td.num { (row.n_replicates.map(|n| n.to_string()).unwrap_or_default()) }
                                    td { (if row.cache_hit { "yes" } else { "" }) }
                                    td { (row.status) }
                                }
                            }
                        }
                    }
                }
            }
            @if !replicate_rows.is_empty() {
                section.set-replicates {
                    h2 { "Replicates" }
                    p.note { "The loss of each replicate, as the aggregation result reported it (" code { "diagnostics.per_replicate_losses" } "), against the aggregated loss." }
                    (replicate_strips(&rows, &replicate_rows))
                    table.data.replicates {
                        thead { tr { th { "Target" } th { "Replicate" } th { "Seed" } th { "Loss" } } }
                        tbody {
                            @for r in &replicate_rows {
                                tr data-target=(r.target) data-replicate=(r.index) data-loss=[r.loss] {
                                    td { (r.target) } td.num { (r.index) }
                                    td.num { (r.seed.map(|s| s.to_string()).unwrap_or_default()) }
                                    td.num { (r.loss.map(layout::number).unwrap_or_default()) }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(bands) = &bands {
                section.set-outputs {
                    h2 { "Model outputs" }
                    @if bands.bands.is_empty() {
                        p.note { "No simulation output of this set could be read from the provenance store." }
                    } @else {
                        p.note { "Each column of each output over the " (results.iter().filter(|r| !r.aggregation).count().min(crate::outputs::MAX_SIMS)) " replicates: the band spans the lowest to the highest value at each point, the line is their mean (" (bands.bytes / 1024) " KiB read)." }
                    }
                    (crate::outputs::figures(bands))
                }
            }
            section.set-results {
                h2 { "Results" }
                @if results.is_empty() {
                    p.note { "Attribution has no result of this set for this job." }
                } @else {
                    table.data.results {
                        thead { tr { th { "Kind" } th { "Seed or target" } th { "Role" } th { "Path" } th { "Other jobs owning it" } } }
                        tbody {
                            @for (i, result) in results.iter().enumerate() {
                                tr data-kind=(if result.aggregation { "agg" } else { "sim" }) data-path=(result.path) {
                                    td { (if result.aggregation { "aggregation" } else { "simulation" }) }
                                    td { @if let Some(seed) = result.seed { (seed) } @else { (result.target.as_deref().unwrap_or("")) } }
                                    td { (if result.cache_hit { "cache hit" } else { "computed" }) }
                                    td { code { (result.path) } }
                                    td.owners {
                                        @match owners.get(i) {
                                            Some(Some(list)) => {
                                                @for owner in list.iter().filter(|o| o.job_id != job.as_str()) {
                                                    a.owner href={ "/jobs/" (owner.job_id) "/sets/" (set) } data-owner=(owner.job_id) { (owner.job_id) }
                                                    " "
                                                }
                                            }
                                            _ => { "" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section.set-python {
                h2 { "In Python" }
                pre.python { code { (python_snippet(job.as_str(), set)) } }
                button.copy type="button" data-copy="pre.python" { "Copy" }
            }
        },
    ))
}

/// Each target's replicate losses as dots on one axis, with the aggregated loss as a tick.
fn replicate_strips(rows: &[TargetRow], replicates: &[Replicate]) -> Markup {
    const WIDTH: f64 = 720.0;
    const ROW: f64 = 34.0;
    let mut targets: Vec<&str> = Vec::new();
    for r in replicates {
        if !targets.contains(&r.target.as_str()) {
            targets.push(&r.target);
        }
    }
    let finite: Vec<f64> = replicates.iter().filter_map(|r| r.loss).chain(rows.iter().filter_map(|r| r.loss)).filter(|l| l.is_finite()).collect();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 0.5, hi + 0.5) };
    let px = |v: f64| 16.0 + (v - lo) / (hi - lo) * (WIDTH - 32.0);
    let height = ROW * targets.len() as f64 + 24.0;
    html! {
        svg.replicates xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (height) } width=(WIDTH) height=(height) {
            @for (t, target) in targets.iter().enumerate() {
                @let y = ROW * t as f64 + 20.0;
                line.axis x1="16" y1=(y) x2=(WIDTH - 16.0) y2=(y) {}
                text.tick x="16" y=(y - 8.0) { (target) }
                @for r in replicates.iter().filter(|r| r.target == *target) {
                    @if let Some(loss) = r.loss {
                        circle.replicate cx=(format!("{:.1}", px(loss))) cy=(y) r="4" fill=(crate::plots::colour_hex(t)) data-loss=(loss)
                            data-hover={ "replicate " (r.index) " (seed " (r.seed.map(|s| s.to_string()).unwrap_or_default()) "): loss " (layout::number(loss)) } {}
                    }
                }
                @if let Some(loss) = rows.iter().find(|r| r.target == *target).and_then(|r| r.loss) {
                    line.aggregated x1=(format!("{:.1}", px(loss))) y1=(y - 9.0) x2=(format!("{:.1}", px(loss))) y2=(y + 9.0) stroke="#111" stroke-width="2"
                        data-hover={ "aggregated loss " (layout::number(loss)) } {}
                }
            }
            text.tick x="16" y=(height - 2.0) { (crate::heatmap::short(lo)) }
            text.tick x=(WIDTH - 16.0) y=(height - 2.0) text-anchor="end" { (crate::heatmap::short(hi)) }
        }
    }
}

/// The set's rows, replicates and results through the Python client.
fn python_snippet(job: &str, set: &str) -> String {
    format!(
        "from modelops_results import JobClient, ResultClient\n\
         \n\
         endpoint = \"http://127.0.0.1:50051\"  # this server's gRPC address\n\
         losses = ResultClient(endpoint).get_losses(\"{job}\")\n\
         rows = losses[losses.param_id == \"{set}\"]\n\
         results = JobClient(endpoint).list_job_results(\"{job}\", param_id=\"{set}\")\n"
    )
}
