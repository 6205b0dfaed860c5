//! The job page (state, attribution, loss landscape, best parameter sets) and the downloads of
//! a job's table as Parquet (the stored file, streamed) and CSV (encoded batch by batch).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use http::header;
use maud::{Markup, html};
use modelops_core::job::{JobId, JobStatus};
use modelops_query::catalog::JobEntry;
use modelops_query::command::LossesQuery;
use modelops_query::{Command, QueryError};

use crate::error::DashboardError;
use crate::jobs::JobRow;
use crate::landscape::Landscape;
use crate::{Dashboard, layout, plots};

/// The job id of a path, refused unless it is a valid id (so it never leaves its prefix).
pub fn job_id(raw: &str) -> Result<JobId, DashboardError> {
    JobId::new(raw).map_err(|e| DashboardError::BadRequest(format!("job id {raw:?}: {e}")))
}

/// The catalog entry of an indexed job, `None` when it is not indexed (or queries are not served).
async fn indexed(dashboard: &Dashboard, job: &JobId) -> Result<Option<Arc<JobEntry>>, DashboardError> {
    let Some(engine) = &dashboard.engine else { return Ok(None) };
    match engine.catalog().job(job.as_str()).await {
        Ok(entry) => Ok(Some(entry)),
        Err(QueryError::JobNotFound(_)) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// `GET /jobs/{job_id}`.
#[tracing::instrument(name = "dashboard_job", skip(dashboard))]
pub async fn page(State(dashboard): State<Dashboard>, Path(raw): Path<String>, Query(params): Query<crate::pairs::ViewParams>) -> Result<Response, DashboardError> {
    let started = std::time::Instant::now();
    let job = job_id(&raw)?;
    params.axes()?;
    let state = match &dashboard.registry {
        Some(registry) => registry.get_job(&job).await?,
        None => None,
    };
    let entry = indexed(&dashboard, &job).await?;
    if state.is_none() && entry.is_none() {
        return Err(DashboardError::NotFound(format!("no job {:?}", job.as_str())));
    }
    let row = state.as_ref().map(JobRow::of);
    let attribution = match (&dashboard.attribution, &state) {
        (Some(attribution), Some(_)) => Some(attribution.counts(&job).await.map_err(DashboardError::Attribution)?),
        _ => None,
    };
    let state_done = started.elapsed();
    let landscape = match (&dashboard.engine, &entry) {
        (Some(engine), Some(entry)) => Some(dashboard.landscapes.get(engine, entry).await?),
        _ => None,
    };
    let landscape_done = started.elapsed();
    // Without a table, the aggregations recorded so far, marked provisional.
    let provisional = match (&entry, &state, dashboard.live_sources()) {
        (None, Some(_), Some(sources)) => Some(dashboard.live.get(&sources, &job).await?),
        (Some(_), _, _) => {
            dashboard.live.forget(job.as_str());
            None
        }
        _ => None,
    };
    let live_done = started.elapsed();
    let shown = landscape.clone().or_else(|| provisional.as_ref().and_then(|p| p.landscape.clone()));
    let drawn = draw(job.as_str(), shown, &params).await?;
    let drawn_done = started.elapsed();
    // A cancelled job never gets a table on its own (only when forced): its page waits for none.
    let cancelled = state.as_ref().is_some_and(|s| s.status() == JobStatus::Cancelled);
    let reload_when_indexed = entry.is_none() && !cancelled && row.as_ref().is_some_and(|r| r.index_state != "failed");

    let markup = layout::page(
        job.as_str(),
        "jobs",
        html! {
            section.job data-job=(job.as_str()) data-live-job=(job.as_str()) data-reload-when-indexed[reload_when_indexed] {
                h1 { "Job " code { (job.as_str()) } }
                @if let Some(row) = &row {
                    dl.state {
                        dt { "Status" } dd { (layout::status_badge(row.status)) }
                        dt { "Progress" } dd { (layout::progress(row.completed, row.total)) }
                        dt { "Created" } dd { (layout::time(&row.created_at, "created_at")) }
                        dt { "Updated" } dd { (layout::time(&row.updated_at, "updated_at")) }
                        dt { "Loss table" } dd data-field="index_state" { (row.index_state) }
                        dt { "Error" } dd.error data-field="error" { (row.error.as_deref().unwrap_or("")) }
                        dt { "See also" } dd { a href="/jobs" { "all jobs" } " · " a href={ "/compare?a=" (job.as_str()) } { "compare with another job" } }
                    }
                } @else {
                    p.note { "This server does not run the job registry; only the loss table is shown." }
                }
            }
            @if let Some(counts) = &attribution {
                section.attribution {
                    h2 { "Attribution" }
                    table.data.counts {
                        thead { tr { th { "" } th { "Recorded" } th { "Computed" } th { "Cache hits" } } }
                        tbody {
                            tr data-kind="sims" {
                                th { "Simulations" } td.num data-count="sims" { (counts.sims) }
                                td.num data-count="sims_computed" { (counts.sims_computed) } td.num data-count="sims_cache_hits" { (counts.sims_cache_hits) }
                            }
                            tr data-kind="aggs" {
                                th { "Aggregations" } td.num data-count="aggs" { (counts.aggs) }
                                td.num data-count="aggs_computed" { (counts.aggs_computed) } td.num data-count="aggs_cache_hits" { (counts.aggs_cache_hits) }
                            }
                        }
                    }
                    dl.counts {
                        dt { "Missing" } dd data-count="missing" { (counts.expected_missing) }
                        @if counts.unknown > 0 { dt { "Role unknown" } dd data-count="unknown" { (counts.unknown) } }
                        dt { "Sealed" } dd { (if counts.sealed { "yes" } else { "no" }) }
                    }
                }
            }
            @match (&entry, &landscape, &provisional) {
                (Some(entry), Some(landscape), _) => { (landscape_section(entry, landscape, drawn.as_ref())) }
                (None, _, Some(provisional)) => {
                    div #landscape data-live-url={ "/jobs/" (job.as_str()) "/live" } {
                        (provisional_section(job.as_str(), provisional, drawn.as_ref()))
                    }
                }
                _ => {
                    section.landscape-missing {
                        h2 { "Loss landscape" }
                        @if dashboard.engine.is_none() {
                            p.note { "This server does not serve queries." }
                        } @else if cancelled {
                            p.note { "A cancelled job gets no loss table on its own. To build one from the results recorded before it was cancelled, run "
                                code { "mops results index --force " (job.as_str()) } "." }
                        } @else {
                            p.note { "Not indexed yet. The page reloads by itself when the loss table is ready (or run "
                                code { "mops results index " (job.as_str()) } ")." }
                        }
                    }
                }
            }
        },
    );
    // Where the time went, for the browser's developer tools and the benchmarks: the job's state
    // and counts, the landscape (read and reduced when not cached: `read` and `reduce` say how
    // long that took when it was built), the provisional landscape of a job without a table
    // (`live`), drawing the views, and writing the page.
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let mut timing = format!(
        "state;dur={:.1}, landscape;dur={:.1}, live;dur={:.1}, draw;dur={:.1}, page;dur={:.1}",
        ms(state_done),
        ms(landscape_done - state_done),
        ms(live_done - landscape_done),
        ms(drawn_done - live_done),
        ms(started.elapsed() - drawn_done)
    );
    if let Some(drawn) = &drawn {
        let [pairs, plots, histogram] = drawn.timings;
        timing.push_str(&format!(", pairs;dur={:.1}, plots;dur={:.1}, histogram;dur={:.1}", ms(pairs), ms(plots), ms(histogram)));
    }
    if let Some((read, reduce)) = landscape.as_ref().and_then(|l| l.built) {
        timing.push_str(&format!(", read;dur={:.1}, reduce;dur={:.1}", ms(read), ms(reduce)));
    }
    Ok(([(http::HeaderName::from_static("server-timing"), timing)], markup).into_response())
}

/// A parameter's plot as drawn (with whether its axis is log), or why not.
type DrawnPlot = Result<(Arc<str>, bool), DashboardError>;

/// What the page draws of a landscape: the two-parameter views, and the per-parameter plots and
/// the histogram on the axes asked for.
#[derive(Debug)]
pub struct Drawn {
    /// The two-parameter section (absent without a loss or two numeric parameters).
    pairs: Option<Markup>,
    /// Each parameter's plot, and whether its axis is log.
    plots: Vec<(String, DrawnPlot)>,
    /// The histogram.
    histogram: Result<Option<Arc<str>>, DashboardError>,
    /// Whether the loss axes are log.
    log_loss: bool,
    /// How long the two-parameter views, the plots and the histogram took.
    timings: [std::time::Duration; 3],
}

/// Draws `landscape` as the URL's `params` ask, off the async runtime (a 1M-row job's grids and
/// plots take a while).
async fn draw(job: &str, landscape: Option<Arc<Landscape>>, params: &crate::pairs::ViewParams) -> Result<Option<Drawn>, DashboardError> {
    let Some(landscape) = landscape else { return Ok(None) };
    let (job, params) = (job.to_owned(), params.clone());
    tokio::task::spawn_blocking(move || {
        let axes = params.axes()?;
        let view = match landscape.ok_rows {
            0 => None,
            _ => params.resolve(&landscape.explorer)?,
        };
        // The two-parameter views on a second thread while this one draws the plots: the
        // machine's second core halves a first view's drawing.
        let started = std::time::Instant::now();
        let log_loss = landscape.log_loss_for(axes.loss);
        let (pairs, plots, histogram, timings) = std::thread::scope(|scope| {
            let pairs = scope.spawn(|| {
                let pairs = view.map(|view| crate::pairs::section_cached(&job, &landscape.explorer, &view, axes));
                (pairs, started.elapsed())
            });
            let plots: Vec<(String, DrawnPlot)> = landscape.plots.iter().map(|plot| (plot.name.clone(), plot.svg(axes.slices, log_loss))).collect();
            let plots_done = started.elapsed();
            let histogram = landscape.histogram(log_loss);
            let histogram_done = started.elapsed();
            let (pairs, pairs_done) = pairs.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (pairs, plots, histogram, [pairs_done, plots_done, histogram_done - plots_done])
        });
        Ok(Some(Drawn {
            pairs,
            plots,
            histogram,
            log_loss,
            timings,
        }))
    })
    .await
    .map_err(|e| DashboardError::Plot(format!("drawing task failed: {e}")))?
}

/// A colour swatch for a target (SVG, as the page allows no inline styles).
pub fn swatch(index: usize) -> Markup {
    html! { svg.swatch width="12" height="12" viewBox="0 0 12 12" aria-hidden="true" { circle cx="6" cy="6" r="5" fill=(plots::colour_hex(index)) {} } }
}

/// The loss table's sections: its summary, then [`landscape_body`].
fn landscape_section(entry: &JobEntry, landscape: &Landscape, drawn: Option<&Drawn>) -> Markup {
    let [total, ok, missing, failed] = entry.counts;
    html! {
        section.table-summary {
            h2 { "Loss table" }
            p {
                (total) " rows: " (ok) " ok, " (missing) " missing, " (failed) " failed · bundle "
                code title=(entry.bundle_digest) { (entry.bundle_digest.get(..19).unwrap_or(&entry.bundle_digest)) }
                " · indexed " (layout::time(&entry.indexed_at, "indexed_at"))
            }
            p.downloads {
                a.download href={ "/jobs/" (entry.job_id) "/losses.parquet" } download { "Download Parquet" }
                a.download href={ "/jobs/" (entry.job_id) "/losses.csv" } download { "Download CSV" }
            }
            (targets(landscape))
        }
        @if let Some(drawn) = drawn { (landscape_body(&entry.job_id, landscape, drawn, missing, failed)) }
    }
}

fn targets(landscape: &Landscape) -> Markup {
    html! {
        ul.targets {
            @for (index, target) in landscape.targets.iter().enumerate() {
                li { (swatch(index)) " " (target) }
            }
        }
    }
}

/// The provisional landscape of a job without a table: how much of it was read, then
/// [`landscape_body`] of those rows.
pub fn provisional_section(job: &str, provisional: &crate::live::Provisional, drawn: Option<&Drawn>) -> Markup {
    let failed = provisional.landscape.as_ref().map_or(0, |l| l.rows - l.ok_rows);
    html! {
        section.table-summary.provisional data-provisional-rows=(provisional.rows) data-expected=(provisional.expected) {
            h2 { "Provisional landscape" }
            p.note {
                strong { "Provisional: " }
                (provisional.rows) " of the " (provisional.expected) " aggregations this job expects have been read so far"
                @if provisional.pending > 0 { " (" (provisional.pending) " more recorded, their results not read yet)" }
                ". It grows as the job reports results; the final loss table replaces it when the job is indexed."
            }
            @if let Some(error) = &provisional.error {
                p.error data-refresh-error { "The last refresh failed: " (error) }
            }
            @if let Some(landscape) = &provisional.landscape { (targets(landscape)) }
        }
        @if let (Some(landscape), Some(drawn)) = (&provisional.landscape, drawn) {
            (landscape_body(job, landscape, drawn, 0, failed as u64))
        }
    }
}

/// The two-parameter views (`pairs`), the landscapes per parameter, the rows without a loss and
/// the best sets (each a link to its page) of `job`'s landscape with `missing` and `failed` rows,
/// the per-parameter plots and the histogram on the axes `axes` asks for.
fn landscape_body(job: &str, landscape: &Landscape, drawn: &Drawn, missing: u64, failed: u64) -> Markup {
    html! {
        @if let Some(pairs) = &drawn.pairs { (pairs) }
        @if landscape.ok_rows == 0 {
            section.landscapes {
                h2 { "Loss against each parameter" }
                p.note.no-losses { "No row of this table has a loss (" (missing) " missing, " (failed) " failed), so there is nothing to plot. The rows without a loss are listed below." }
            }
        } @else {
        section.landscapes {
            h2 { "Loss against each parameter" }
            p.note {
                "Each plot draws " (landscape.plotted) " of the " (landscape.ok_rows) " rows with a loss"
                @if landscape.plotted < landscape.ok_rows { " (the " (crate::landscape::KEEP_BEST) " lowest losses and an even sample of the rest)" }
                "; the histogram counts every row."
                @if drawn.log_loss { " Losses are drawn on a log scale." }
                " Axes: " a href="#pairs" { "chosen above" } "."
            }
            div.plots {
                @for (name, plot) in &drawn.plots {
                    @match plot {
                        Ok((svg, log)) => { figure.landscape data-param=(name) data-xscale=(if *log { "log" } else { "linear" }) data-loss-scale=(if drawn.log_loss { "log" } else { "linear" }) { (layout::svg(svg)) } }
                        Err(error) => { p.error { (name) ": " (error) } }
                    }
                }
            }
            @if !landscape.unplotted.is_empty() {
                p.note { "Not plotted (text values): " (landscape.unplotted.join(", ")) }
            }
            @match &drawn.histogram {
                Ok(Some(histogram)) => { figure.histogram data-loss-scale=(if drawn.log_loss { "log" } else { "linear" }) { (layout::svg(histogram)) } }
                Ok(None) => {}
                Err(error) => { p.error { "histogram: " (error) } }
            }
        }
        }
        @if !landscape.unlossed.is_empty() {
            section.unlossed {
                h2 { "Rows without a loss" }
                p.note {
                    (missing + failed) " rows have no loss: a missing row's aggregation is not in the provenance store, a failed row's result is malformed or its loss not finite."
                    @if ((missing + failed) as usize) > landscape.unlossed.len() { " The first " (landscape.unlossed.len()) " are listed; the CSV download has them all." }
                }
                table id="unlossed" class="data" {
                    thead { tr {
                        th { "Target" } th { "param_id" } th { "Status" }
                        @for name in &landscape.param_names { th { (name) } }
                    } }
                    tbody {
                        @for row in &landscape.unlossed {
                            tr data-target=(row.target) data-param-id=(row.param_id) data-status=(row.status) {
                                td { (row.target) }
                                td { code title=(row.param_id) { (row.param_id.get(..12).unwrap_or(&row.param_id)) } }
                                td { (row.status) }
                                @for value in &row.params { td.num { (value) } }
                            }
                        }
                    }
                }
            }
        }
        @if landscape.ok_rows > 0 {
        section.best {
            h2 { "Best parameter sets" }
            p.note {
                "Click a set for its replicates, outputs and results. Model outputs of the three best sets of "
                @for (index, target) in landscape.targets.iter().enumerate() {
                    @if index > 0 { ", " }
                    a.outputs href={ "/jobs/" (job) "/outputs?target=" (url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()) } { code { (target) } }
                }
                "."
            }
            table id="best" class="data" {
                thead { tr {
                    th { "Target" } th { "Rank" } th { "param_id" } th { "Loss" } th { "Replicates" } th { "Cache hit" }
                    @for name in &landscape.param_names { th { (name) } }
                } }
                tbody {
                    @for (rank, row) in ranked(&landscape.best) {
                        tr data-target=(row.target) data-param-id=(row.param_id) data-loss=(row.loss) {
                            td { (row.target) } td { (rank) }
                            td { a.set href={ "/jobs/" (job) "/sets/" (row.param_id) } { code title=(row.param_id) { (row.param_id.get(..12).unwrap_or(&row.param_id)) } } }
                            td.num { (layout::number(row.loss)) }
                            td.num { (row.n_replicates.map(|n| n.to_string()).unwrap_or_default()) }
                            td { (if row.cache_hit { "yes" } else { "" }) }
                            @for value in &row.params { td.num { (value) } }
                        }
                    }
                }
            }
        }
        }
    }
}

/// The best rows with their rank within their target.
fn ranked(rows: &[crate::landscape::BestRow]) -> impl Iterator<Item = (usize, &crate::landscape::BestRow)> {
    let mut rank = 0;
    let mut previous: Option<&str> = None;
    rows.iter().map(move |row| {
        rank = if previous == Some(row.target.as_str()) { rank + 1 } else { 1 };
        previous = Some(row.target.as_str());
        (rank, row)
    })
}

/// The query engine and the catalog entry of the indexed job `raw`, for the downloads.
async fn require_entry<'a>(dashboard: &'a Dashboard, raw: &str) -> Result<(&'a modelops_query::Engine, Arc<JobEntry>), DashboardError> {
    let engine = dashboard.engine.as_ref().ok_or(DashboardError::ServiceNotRunning("query service"))?;
    let job = job_id(raw)?;
    let entry = indexed(dashboard, &job)
        .await?
        .ok_or_else(|| DashboardError::NotFound(format!("job {:?} has no loss table", job.as_str())))?;
    Ok((engine, entry))
}

fn attachment(job: &str, extension: &str, content_type: &'static str, body: Body) -> Response {
    let disposition = format!("attachment; filename=\"{job}-losses.{extension}\"");
    ([(header::CONTENT_TYPE, content_type.to_owned()), (header::CONTENT_DISPOSITION, disposition)], body).into_response()
}

/// `GET /jobs/{job_id}/live`: the provisional landscape alone, for the page to swap in as the job
/// reports progress (the page's own filters apply); 404 once the job has a table (the page
/// reloads then).
#[tracing::instrument(name = "dashboard_live", skip(dashboard))]
pub async fn live_fragment(State(dashboard): State<Dashboard>, Path(raw): Path<String>, Query(params): Query<crate::pairs::ViewParams>) -> Result<Markup, DashboardError> {
    let job = job_id(&raw)?;
    params.axes()?;
    let sources = dashboard.live_sources().ok_or(DashboardError::ServiceNotRunning("registry, attribution or provenance store"))?;
    if indexed(&dashboard, &job).await?.is_some() {
        dashboard.live.forget(job.as_str());
        return Err(DashboardError::NotFound(format!("job {:?} has its loss table", job.as_str())));
    }
    if let Some(registry) = &dashboard.registry {
        registry.require_job(&job).await?;
    }
    let provisional = dashboard.live.get(&sources, &job).await?;
    let drawn = draw(job.as_str(), provisional.landscape.clone(), &params).await?;
    Ok(provisional_section(job.as_str(), &provisional, drawn.as_ref()))
}

/// `GET /jobs/{job_id}/losses.parquet`: the stored table, byte for byte.
#[tracing::instrument(name = "dashboard_download_parquet", skip(dashboard))]
pub async fn download_parquet(State(dashboard): State<Dashboard>, Path(raw): Path<String>) -> Result<Response, DashboardError> {
    let (engine, entry) = require_entry(&dashboard, &raw).await?;
    let object = engine.catalog().store().get(&entry.table.location).await?;
    let body = Body::from_stream(object.into_stream());
    Ok(attachment(&entry.job_id, "parquet", "application/vnd.apache.parquet", body))
}

/// `GET /jobs/{job_id}/losses.csv`: the table as CSV with a header row, streamed, text cells
/// that look like formulas neutralised ([`crate::csv`]).
#[tracing::instrument(name = "dashboard_download_csv", skip(dashboard))]
pub async fn download_csv(State(dashboard): State<Dashboard>, Path(raw): Path<String>) -> Result<Response, DashboardError> {
    let (engine, entry) = require_entry(&dashboard, &raw).await?;
    let stream = engine.execute(&Command::Losses(LossesQuery::whole_table(&entry.job_id))).await?;
    let mut first = true;
    let body = stream.map_err(QueryError::from).map(move |batch| {
        let batch = batch.map_err(|e| std::io::Error::other(e.to_string()))?;
        let out = crate::csv::encode(&batch, first).map_err(|e| std::io::Error::other(e.to_string()))?;
        first = false;
        Ok::<_, std::io::Error>(out)
    });
    Ok(attachment(&entry.job_id, "csv", "text/csv; charset=utf-8", Body::from_stream(body)))
}
