//! The jobs page and its live feed. The page lists the jobs matching its filters, newest first,
//! [`JOBS_PER_PAGE`] at a time, each page linking to the older ones (the registry's page token in
//! the URL), so every job is reachable however many there are. Its script then follows
//! `/jobs/events`, a server-sent event stream of every job change the registry's change hub sees
//! (starting right after the last change the page already shows), and updates rows in place;
//! the first page also inserts new jobs at its top. Nothing polls.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use maud::{Markup, html};
use modelops_core::job::{JobState, JobStatus};
use modelops_core::job::IndexState;
use modelops_registry_client::{ListQuery, SharedRegistry, WatchFrom};
use serde::{Deserialize, Serialize};

use crate::error::DashboardError;
use crate::layout;
use crate::Dashboard;

/// The filters of the jobs page (query string).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobFilter {
    /// `active`, `terminal`, one status, or empty for all.
    #[serde(default)]
    pub status: String,
    /// `1h`, `24h`, `7d`, or empty for any age.
    #[serde(default)]
    pub since: String,
    /// Where the page starts: the registry's page token of the previous page (empty: the newest).
    #[serde(default)]
    pub page: String,
}

/// Jobs on one page of the list. A page of 100 is what a modeller scans by eye; older pages are
/// a link away, and rendering stays cheap with tens of thousands of jobs in the registry.
pub const JOBS_PER_PAGE: usize = 100;

/// The age choices of the filter, with their lengths.
const AGES: [(&str, &str, i64); 3] = [("1h", "last hour", 3600), ("24h", "last 24 hours", 86_400), ("7d", "last 7 days", 604_800)];

impl JobFilter {
    /// The statuses this filter keeps (empty: all).
    pub fn statuses(&self) -> Result<Vec<JobStatus>, DashboardError> {
        Ok(match self.status.as_str() {
            "" | "all" => Vec::new(),
            "active" => JobStatus::ALL.into_iter().filter(|s| s.is_active()).collect(),
            "terminal" => JobStatus::ALL.into_iter().filter(|s| s.is_terminal()).collect(),
            other => vec![other.parse().map_err(|e: modelops_core::job::UnknownStatus| DashboardError::BadRequest(e.to_string()))?],
        })
    }

    /// The oldest creation time this filter keeps.
    pub fn since(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, DashboardError> {
        match self.since.as_str() {
            "" | "all" => Ok(None),
            wanted => AGES
                .iter()
                .find(|(key, _, _)| *key == wanted)
                .map(|(_, _, seconds)| Some(now - chrono::Duration::seconds(*seconds)))
                .ok_or_else(|| DashboardError::BadRequest(format!("since: expected one of 1h, 24h, 7d, all; got {wanted:?}"))),
        }
    }
}

/// One job as the page shows it, and as the event stream sends it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobRow {
    /// The job id.
    pub job_id: String,
    /// Its status.
    pub status: &'static str,
    /// Whether the status is terminal.
    pub terminal: bool,
    /// Tasks completed.
    pub completed: i64,
    /// Tasks in all.
    pub total: i64,
    /// Creation time (ISO 8601).
    pub created_at: String,
    /// Last change (ISO 8601).
    pub updated_at: String,
    /// The error message, if any.
    pub error: Option<String>,
    /// The loss table's state: none, running, done or failed.
    pub index_state: &'static str,
    /// What the loss table holds, once the job is indexed.
    pub table: Option<TableSummary>,
}

/// What a job's loss table holds, as the jobs list shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableSummary {
    /// The first target (in spec order).
    pub target: String,
    /// Its lowest loss, if any row has one.
    pub best_loss: Option<f64>,
    /// Other targets.
    pub more_targets: usize,
    /// Parameter sets (rows of the target with the most).
    pub sets: u64,
}

impl TableSummary {
    /// The summary of a catalog entry (`None` without a target).
    pub fn of(entry: &modelops_query::catalog::JobEntry) -> Option<Self> {
        let first = entry.targets.first()?;
        Some(Self {
            target: first.target.to_string(),
            best_loss: first.min_loss,
            more_targets: entry.targets.len() - 1,
            sets: entry.targets.iter().map(|t| t.count).max().unwrap_or(0),
        })
    }
}

impl JobRow {
    /// The row of `state`.
    pub fn of(state: &JobState) -> Self {
        Self {
            job_id: state.job_id().as_str().to_owned(),
            status: state.status().as_str(),
            terminal: state.status().is_terminal(),
            completed: state.tasks_completed(),
            total: state.tasks_total(),
            created_at: state.created_at().to_owned(),
            updated_at: state.updated_at().to_owned(),
            error: layout::job_error(state).map(str::to_owned),
            index_state: IndexState::of(state).as_str(),
            table: None,
        }
    }

    /// This row with its table's summary from `engine`'s catalog, when the job is indexed. A job
    /// the catalog has not loaded yet is read from the results store here, so on a slow store
    /// that one event waits for the read.
    pub async fn with_table(mut self, engine: Option<&modelops_query::Engine>) -> Self {
        if let (Some(engine), "done") = (engine, self.index_state) {
            self.table = engine.catalog().job(&self.job_id).await.ok().and_then(|entry| TableSummary::of(&entry));
        }
        self
    }

    fn markup(&self) -> Markup {
        html! {
            tr data-job=(self.job_id) data-status=(self.status) data-created=(self.created_at) {
                td { a.job-link href={ "/jobs/" (self.job_id) } { (self.job_id) } }
                td { (layout::status_badge(self.status)) }
                td { (layout::progress(self.completed, self.total)) }
                td { (layout::time(&self.created_at, "created_at")) }
                td { (layout::time(&self.updated_at, "updated_at")) }
                td data-field="index_state" { (self.index_state) }
                td.num data-field="best_loss" { (self.table.as_ref().and_then(|t| t.best_loss).map(layout::number).unwrap_or_default()) }
                td data-field="target" title=(self.table.as_ref().map(|t| t.target.as_str()).unwrap_or("")) {
                    (self.table.as_ref().map(|t| t.target.as_str()).unwrap_or(""))
                    @if let Some(table) = self.table.as_ref().filter(|t| t.more_targets > 0) { span.more { " +" (table.more_targets) } }
                }
                td.num data-field="sets" { (self.table.as_ref().map(|t| t.sets.to_string()).unwrap_or_default()) }
                td.error data-field="error" { (self.error.as_deref().unwrap_or("")) }
            }
        }
    }
}

fn registry(dashboard: &Dashboard) -> Result<&SharedRegistry, DashboardError> {
    dashboard.registry.as_ref().ok_or(DashboardError::ServiceNotRunning("job registry"))
}

/// `GET /jobs`.
#[tracing::instrument(name = "dashboard_jobs", skip(dashboard))]
pub async fn page(State(dashboard): State<Dashboard>, Query(filter): Query<JobFilter>) -> Result<Markup, DashboardError> {
    let registry = registry(&dashboard)?;
    let since = filter.since(Utc::now())?;
    let statuses = filter.statuses()?;
    // The statuses the filter keeps, comma-separated, for the script (empty: all).
    let kept_statuses = statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
    let first_page = filter.page.is_empty();
    if !first_page {
        // Refused here with the reason, whichever registry (embedded or remote) would read it.
        modelops_core::page_token::PageToken::decode(&filter.page).map_err(|e| DashboardError::BadRequest(e.to_string()))?;
    }
    let query = ListQuery {
        statuses,
        since,
        limit: JOBS_PER_PAGE,
        page_token: (!first_page).then(|| filter.page.clone()),
    };
    // The listing carries the registry's watch position taken before it: every change after
    // it reaches the page as an event, so none falls between this listing and the stream.
    let listed = registry.list_jobs(query).await?;
    let seq = listed.watch_revision;
    // Each listed job's table summary, from the catalog in memory.
    let table = |job: &str| -> Option<TableSummary> {
        let entry = dashboard.engine.as_ref()?.catalog().known(job)?;
        TableSummary::of(&entry)
    };
    let rows: Vec<JobRow> = listed
        .jobs
        .iter()
        .map(|state| JobRow { table: table(state.job_id().as_str()), ..JobRow::of(state) })
        .collect();
    let status_choices = ["active", "terminal"].into_iter().chain(JobStatus::ALL.iter().map(|s| s.as_str()));
    Ok(layout::page(
        "Jobs",
        "jobs",
        html! {
            h1 { "Jobs" }
            form.filters method="get" action="/jobs" {
                label { "Status "
                    select name="status" data-autosubmit {
                        option value="" selected[filter.status.is_empty()] { "all" }
                        @for choice in status_choices {
                            option value=(choice) selected[filter.status == choice] { (choice) }
                        }
                    }
                }
                label { "Created "
                    select name="since" data-autosubmit {
                        option value="" selected[filter.since.is_empty()] { "any time" }
                        @for (key, label, _) in AGES {
                            option value=(key) selected[filter.since == key] { (label) }
                        }
                    }
                }
                noscript { button type="submit" { "Filter" } }
                span.live data-live-indicator { "live" }
            }
            table id="jobs" class="jobs" data-events={ "/jobs/events?after=" (seq) } data-insert[first_page]
                data-filter-statuses=(kept_statuses) data-filter-since=(since.map(|t| t.to_rfc3339()).unwrap_or_default()) {
                thead { tr { th { "Job" } th { "Status" } th { "Progress" } th { "Created" } th { "Updated" } th { "Index" } th { "Best loss" } th { "Target" } th { "Sets" } th { "Error" } } }
                tbody {
                    @for row in &rows { (row.markup()) }
                }
            }
            @if rows.is_empty() { p.empty { "No jobs match." } }
            nav.pages {
                @if !first_page { a href=(page_link(&filter, None)) { "← Newest" } }
                @if let Some(next) = &listed.next_page_token { a rel="next" href=(page_link(&filter, Some(next))) { "Older →" } }
            }
            template id="job-row" { (JobRow { job_id: String::new(), status: "pending", terminal: false, completed: 0, total: 0, created_at: String::new(), updated_at: String::new(), error: None, index_state: "none", table: None }.markup()) }
        },
    ))
}

/// The URL of the jobs page with `filter`'s status and age, starting after `page` (the newest
/// page when `None`).
fn page_link(filter: &JobFilter, page: Option<&str>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in [("status", filter.status.as_str()), ("since", filter.since.as_str()), ("page", page.unwrap_or(""))] {
        if !value.is_empty() {
            query.append_pair(key, value);
        }
    }
    let query = query.finish();
    if query.is_empty() { "/jobs".to_owned() } else { format!("/jobs?{query}") }
}

/// Query of the event stream.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Send changes after this hub sequence number (0: only future ones).
    #[serde(default)]
    pub after: u64,
}

fn job_event(seq: u64, row: &JobRow) -> Event {
    Event::default()
        .event("job")
        .id(seq.to_string())
        .data(serde_json::to_string(row).unwrap_or_default())
}

/// `GET /jobs/events`: every job change as a `job` event with the job's row as JSON and the hub's
/// sequence number as id (a reconnecting browser resumes from `Last-Event-ID`). When the hub no
/// longer holds the changes asked for (or never did: a position from before a restart), or this
/// stream falls behind, it sends every job once.
pub async fn events(
    State(dashboard): State<Dashboard>,
    Query(query): Query<EventsQuery>,
    headers: http::HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, DashboardError> {
    let registry = std::sync::Arc::clone(registry(&dashboard)?);
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(query.after);
    tracing::debug!(after = resume, "dashboard job stream opened");
    let stream = job_events(registry, dashboard.engine.clone(), resume, dashboard.shutdown.clone());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The events after `after`, then live ones, fed by a task that ends when the client goes or
/// the server shuts down. When the registry no longer holds the changes asked for (or never
/// did: a position from before a restart or of another replica), or this stream falls too far
/// behind, every job's current row is sent once and live changes follow.
fn job_events(
    registry: SharedRegistry,
    engine: Option<modelops_query::Engine>,
    after: u64,
    shutdown: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let mut from = WatchFrom { after, replay_current: false };
        loop {
            let watched = tokio::select! {
                () = sender.closed() => return,
                () = shutdown.cancelled() => return,
                watched = registry.watch_jobs(from) => watched,
            };
            let mut events = match watched {
                Ok(events) => events,
                Err(status) if status.code() == tonic::Code::OutOfRange && !from.replay_current => {
                    from = WatchFrom { after: 0, replay_current: true };
                    continue;
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), reason = status.message(), "dashboard: cannot watch jobs");
                    return;
                }
            };
            loop {
                let event = tokio::select! {
                    () = sender.closed() => return,
                    () = shutdown.cancelled() => return,
                    event = events.next() => event,
                };
                match event {
                    Some(Ok(event)) => {
                        let row = JobRow::of(&event.state).with_table(engine.as_ref()).await;
                        if sender.send(job_event(event.seq, &row)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(status)) if status.code() == tonic::Code::OutOfRange => {
                        tracing::info!(reason = status.message(), "dashboard job stream fell behind; sending every job");
                        from = WatchFrom { after: 0, replay_current: true };
                        break;
                    }
                    // The browser reconnects (EventSource) and resumes from its last event id.
                    Some(Err(_)) | None => return,
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver).map(Ok)
}
