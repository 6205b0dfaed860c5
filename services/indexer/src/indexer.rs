//! The indexer's work loop, independent of gRPC: which jobs to index and when (a job reaching
//! succeeded, partial or failed; a catch-up scan at start; on demand), one claim per job in the
//! registry so replicas never index the same job at once, edges from attribution (derived when a
//! job has none), inputs streamed from the stores ([`crate::source`]), and the index state
//! recorded back in the registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use modelops_attribution_client::SharedAttribution;
use modelops_core::job::{JobId, JobStatus};
use modelops_core::loss_table::{self, Manifest, RowCounts};
use modelops_core::store::Store;
use modelops_core::job::IndexState;
use modelops_registry_client::{JobEvent, SharedRegistry, WatchFrom};
use futures::StreamExt as _;
use tokio::sync::broadcast;
use tracing::Instrument as _;
use tokio_util::sync::CancellationToken;

use crate::build::{IndexOptions, index_rows};
use crate::error::IndexError;
use crate::locate::EdgeIndex;
use crate::source::{self, SpecBlob};

/// A job waiting for a worker: its id, the `traceparent` of what asked for it, and whether the
/// table is rebuilt even if its inputs are unchanged (a forced request).
type Queued = (JobId, Option<String>, bool);

/// The purpose under which indexers claim a job in the registry.
pub const CLAIM_PURPOSE: &str = "index";
/// The longest wait between two builds of a job whose backends are unavailable.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);
/// How long a claim lasts without renewal, by default.
pub const DEFAULT_CLAIM_TTL: Duration = Duration::from_secs(60);

/// Where a job's indexing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Never indexed.
    NotIndexed,
    /// Waiting for a worker.
    Queued,
    /// Being built.
    Running,
    /// The table is current.
    Done,
    /// The last attempt failed.
    Failed,
}

/// A job's index status.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The job.
    pub job_id: JobId,
    /// The phase.
    pub phase: Phase,
    /// Row counts (when done) or so far.
    pub counts: RowCounts,
    /// Rows read / expected, while running.
    pub processed: u64,
    /// Rows expected.
    pub expected: u64,
    /// The input fingerprint of the table.
    pub fingerprint: String,
    /// `results/{job_id}/`.
    pub results_path: String,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// When the last attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The last run found its inputs unchanged and wrote nothing.
    pub unchanged: bool,
}

impl Status {
    fn new(job_id: JobId, phase: Phase) -> Self {
        Self {
            results_path: loss_table::results_dir(&job_id) + "/",
            job_id,
            phase,
            counts: RowCounts::default(),
            processed: 0,
            expected: 0,
            fingerprint: String::new(),
            error: None,
            started_at: None,
            finished_at: None,
            unchanged: false,
        }
    }
}

/// Why an index request is refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The registry failed or the job is unknown: its status.
    #[error("{}", .0.message())]
    Registry(#[from] tonic::Status),
    /// The job is not in a terminal state and the request was not forced.
    #[error("job {0} is {1}; only succeeded, partial or failed jobs are indexed (use force)")]
    NotFinished(JobId, JobStatus),
}

/// Called with a job whose table was just committed, before its status turns done (so a reader
/// in the same process that waits for done finds the table already known).
pub type CommitHook = Arc<dyn Fn(JobId) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// The hooks registered with [`Indexer::on_commit`].
#[derive(Default)]
struct CommitHooks(std::sync::RwLock<Vec<CommitHook>>);

impl std::fmt::Debug for CommitHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} commit hooks", self.0.read().map_or(0, |hooks| hooks.len()))
    }
}

/// The indexer.
#[derive(Debug, Clone)]
pub struct Indexer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: SharedRegistry,
    attribution: SharedAttribution,
    provenance: Store,
    results: Store,
    holder: String,
    options: IndexOptions,
    claim_ttl: Duration,
    statuses: Mutex<HashMap<JobId, Status>>,
    /// Transient failures in a row, per job being retried.
    retries: Mutex<HashMap<JobId, u32>>,
    updates: broadcast::Sender<Status>,
    /// Jobs to index, each with the `traceparent` of what asked for it.
    queue: tokio::sync::mpsc::UnboundedSender<Queued>,
    queue_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Queued>>>,
    on_commit: CommitHooks,
}

fn indexable(status: JobStatus) -> bool {
    matches!(status, JobStatus::Succeeded | JobStatus::Partial | JobStatus::Failed)
}

impl Indexer {
    /// An indexer reading jobs from `registry`, edges from `attribution`, results from
    /// `provenance`, writing tables to `results`. `holder` names it in claims, which last
    /// `claim_ttl` unless renewed (a crashed indexer's claim is taken over after that).
    pub fn new(
        registry: impl Into<SharedRegistry>,
        attribution: impl Into<SharedAttribution>,
        provenance: Store,
        results: Store,
        holder: String,
        options: IndexOptions,
        claim_ttl: Duration,
    ) -> Self {
        let (updates, _) = broadcast::channel(1024);
        let (queue, queue_rx) = tokio::sync::mpsc::unbounded_channel();
        Self {
            inner: Arc::new(Inner {
                registry: registry.into(),
                attribution: attribution.into(),
                provenance,
                results,
                holder,
                options,
                claim_ttl,
                statuses: Mutex::default(),
                retries: Mutex::default(),
                updates,
                queue,
                queue_rx: Mutex::new(Some(queue_rx)),
                on_commit: CommitHooks::default(),
            }),
        }
    }

    /// How long to wait before building `job` again after a transient failure: doubling from
    /// [`IndexOptions::retry_backoff`] with each failure in a row, up to [`MAX_RETRY_BACKOFF`].
    fn retry_delay(&self, job: &JobId) -> Duration {
        let mut retries = self.inner.retries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let attempt = retries.entry(job.clone()).or_insert(0);
        let delay = self.inner.options.retry_backoff.saturating_mul(1 << (*attempt).min(16)).min(MAX_RETRY_BACKOFF);
        *attempt += 1;
        delay
    }

    /// Queues `job` again after `delay`.
    fn requeue_after(&self, job: &JobId, delay: Duration) {
        let indexer = self.clone();
        let job = job.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = indexer.inner.queue.send((job, None, false));
        });
    }

    fn forget_retries(&self, job: &JobId) {
        self.inner.retries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(job);
    }

    fn set_status(&self, status: Status) {
        self.inner.statuses.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(status.job_id.clone(), status.clone());
        let _ = self.inner.updates.send(status);
    }

    /// Registers `hook`, called after each committed table and before the job's status turns
    /// done (e.g. the query service's catalog in the same process).
    pub fn on_commit(&self, hook: CommitHook) {
        self.inner.on_commit.0.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(hook);
    }

    /// Subscribes to status changes of every job.
    pub fn subscribe(&self) -> broadcast::Receiver<Status> {
        self.inner.updates.subscribe()
    }

    /// A job's status: this process's view if it indexed or queued it, else the registry's.
    pub async fn status(&self, job: &JobId) -> Result<Status, RequestError> {
        if let Some(status) = self.inner.statuses.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(job).cloned() {
            return Ok(status);
        }
        let state = self.inner.registry.require_job(job).await?;
        let phase = match IndexState::of(&state) {
            IndexState::None => Phase::NotIndexed,
            IndexState::Running => Phase::Running,
            IndexState::Done => Phase::Done,
            IndexState::Failed => Phase::Failed,
        };
        let mut status = Status::new(job.clone(), phase);
        status.error = state.get_str(modelops_core::job::INDEX_ERROR_KEY).map(str::to_owned);
        if phase == Phase::Done
            && let Some((counts, fingerprint)) = self.committed(job).await
        {
            status.counts = counts;
            status.fingerprint = fingerprint;
        }
        Ok(status)
    }

    /// The counts and fingerprint of a job's committed table, from its manifest (indexed before a
    /// restart, or by another replica).
    async fn committed(&self, job: &JobId) -> Option<(RowCounts, String)> {
        use object_store::ObjectStoreExt as _;
        let path = object_store::path::Path::from(loss_table::results_file(job, loss_table::MANIFEST_FILE));
        let bytes = self.inner.results.object_store.get(&path).await.ok()?.bytes().await.ok()?;
        let manifest = Manifest::from_json_bytes(&bytes).ok()?;
        Some((manifest.counts, manifest.input_fingerprint))
    }

    /// Queues `job` for indexing (refusing unfinished jobs unless `force`); the build joins the
    /// caller's trace.
    pub async fn request(&self, job: &JobId, force: bool) -> Result<Status, RequestError> {
        self.request_traced(job, force, modelops_runtime::telemetry::current_traceparent()).await
    }

    /// [`Indexer::request`] on behalf of the trace `traceparent` (a change event's).
    pub async fn request_traced(&self, job: &JobId, force: bool, traceparent: Option<String>) -> Result<Status, RequestError> {
        let state = self.inner.registry.require_job(job).await?;
        if !force && !indexable(state.status()) {
            return Err(RequestError::NotFinished(job.clone(), state.status()));
        }
        let current = self.status(job).await?;
        if matches!(current.phase, Phase::Queued | Phase::Running) && self.inner.statuses.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key(job) {
            return Ok(current);
        }
        let status = Status::new(job.clone(), Phase::Queued);
        self.set_status(status.clone());
        let _ = self.inner.queue.send((job.clone(), traceparent, force));
        Ok(status)
    }

    /// Builds `job`'s table now, under a claim. Returns the final status (also when it failed).
    pub async fn run(&self, job: &JobId) -> Status {
        self.run_with(job, false).await
    }

    /// [`Indexer::run`], rebuilding the table even if its inputs are unchanged when `rewrite`.
    pub async fn run_with(&self, job: &JobId, rewrite: bool) -> Status {
        let mut status = Status::new(job.clone(), Phase::Running);
        status.started_at = Some(Utc::now());
        let registry = &self.inner.registry;
        let ttl = self.inner.claim_ttl;
        match registry.claim_job(job, CLAIM_PURPOSE, &self.inner.holder, ttl).await {
            Ok(claim) if claim.granted => {}
            Ok(claim) => {
                // Another indexer has it, or had it and died: try again once its claim expires,
                // unless the table is done by then. A lost claim only delays the work.
                tracing::info!(%job, holder = %claim.holder, expires_at = %claim.expires_at, "another indexer holds this job");
                status.phase = Phase::Queued;
                status.error = Some(format!("claimed by {} until {}", claim.holder, claim.expires_at));
                self.set_status(status.clone());
                let wait = (claim.expires_at - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100);
                let indexer = self.clone();
                let job = job.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    match indexer.inner.registry.get_job(&job).await {
                        Ok(Some(state)) if IndexState::of(&state) == IndexState::Done => {
                            let mut done = Status::new(job.clone(), Phase::Done);
                            done.error = None;
                            indexer.set_status(done);
                        }
                        _ => {
                            let _ = indexer.inner.queue.send((job, modelops_runtime::telemetry::current_traceparent(), false));
                        }
                    }
                });
                return status;
            }
            Err(e) if IndexError::registry(&e).is_transient() => {
                // The registry or its store is down: try again after a backoff, as for a build.
                let delay = self.retry_delay(job);
                tracing::warn!(%job, error = %e, retry_ms = delay.as_millis() as u64, "cannot claim the job; retrying");
                status.phase = Phase::Queued;
                status.error = Some(modelops_runtime::messages::scrubbed(&format!("{}; retrying in {} ms", e.message(), delay.as_millis())));
                self.set_status(status.clone());
                self.requeue_after(job, delay);
                return status;
            }
            Err(e) => {
                status.phase = Phase::Failed;
                status.error = Some(modelops_runtime::messages::scrubbed(e.message()));
                self.set_status(status.clone());
                return status;
            }
        }
        self.set_status(status.clone());
        let renew = CancellationToken::new();
        let renewer = {
            let (registry, job, holder, renew) = (Arc::clone(registry), job.clone(), self.inner.holder.clone(), renew.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = renew.cancelled() => return,
                        () = tokio::time::sleep(ttl / 3) => {
                            if let Err(e) = registry.claim_job(&job, CLAIM_PURPOSE, &holder, ttl).await {
                                tracing::warn!(%job, error = %e, "cannot renew the index claim");
                            }
                        }
                    }
                }
            })
        };
        let result = self.build(job, &mut status, rewrite).await;
        renew.cancel();
        let _ = renewer.await;
        status.finished_at = Some(Utc::now());
        match result {
            Ok(outcome) => {
                self.forget_retries(job);
                let hooks = self.inner.on_commit.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                for hook in hooks {
                    hook(job.clone()).await;
                }
                status.phase = Phase::Done;
                status.counts = outcome.counts;
                status.fingerprint = outcome.fingerprint;
                status.unchanged = outcome.unchanged;
                if let Err(e) = registry.set_index_state(job, IndexState::Done, Some(outcome.results_path), None).await {
                    tracing::warn!(%job, error = %e, "cannot record the index state");
                }
            }
            Err(e) if e.is_transient() => {
                // A backend is down: the job stays queued and is built again after a backoff
                // (its index state stays running, so a restarted indexer takes it up too).
                let delay = self.retry_delay(job);
                let reason = modelops_runtime::messages::scrubbed(&format!("{e}; retrying in {} ms", delay.as_millis()));
                tracing::warn!(%job, error = %e, retry_ms = delay.as_millis() as u64, "indexing failed on an unavailable backend; retrying");
                status.phase = Phase::Queued;
                status.error = Some(reason.clone());
                if let Err(e) = registry.set_index_state(job, IndexState::Running, None, Some(reason)).await {
                    tracing::debug!(%job, error = %e, "cannot record the index state");
                }
                self.requeue_after(job, delay);
            }
            Err(e) => {
                tracing::warn!(%job, error = %e, "indexing failed");
                self.forget_retries(job);
                status.phase = Phase::Failed;
                status.error = Some(modelops_runtime::messages::scrubbed(&e.to_string()));
                if let Err(e) = registry.set_index_state(job, IndexState::Failed, None, Some(modelops_runtime::messages::scrubbed(&e.to_string()))).await {
                    tracing::warn!(%job, error = %e, "cannot record the index state");
                }
            }
        }
        if let Err(e) = registry.release_claim(job, CLAIM_PURPOSE, &self.inner.holder).await {
            tracing::debug!(%job, error = %e, "cannot release the index claim (it expires)");
        }
        self.set_status(status.clone());
        status
    }

    /// Builds `job`'s table from its stored inputs, streamed (see [`crate::source`]).
    async fn build(&self, job: &JobId, status: &mut Status, rewrite: bool) -> Result<crate::build::IndexOutcome, IndexError> {
        let registry = &self.inner.registry;
        registry.set_index_state(job, IndexState::Running, None, None).await.map_err(|e| IndexError::registry(&e))?;
        let blob = SpecBlob::new(Arc::clone(registry), job.clone());
        let mut edges = self.edge_index(job).await?;
        if edges.is_empty() {
            // A job without reported edges (it ran before attribution): derive them.
            self.inner.attribution.derive_edges(job).await.map_err(|e| IndexError::attribution(&e))?;
            edges = self.edge_index(job).await?;
        }
        let outline = source::outline(&blob).await?;
        status.expected = outline.rows() as u64;
        self.set_status(status.clone());
        let mut last_report = std::time::Instant::now();
        let report = status.clone();
        let rows = source::rows(blob, &outline, Arc::new(edges));
        let outcome = index_rows(
            &self.inner.provenance,
            Arc::clone(&self.inner.results.object_store),
            outline.table.clone(),
            rows,
            outline.rows(),
            crate::build::IndexOptions {
                rewrite_unchanged: rewrite,
                ..self.inner.options
            },
            |done, _| {
                if last_report.elapsed() > Duration::from_millis(200) {
                    last_report = std::time::Instant::now();
                    let mut progress = report.clone();
                    progress.processed = done as u64;
                    self.set_status(progress);
                }
            },
        )
        .await?;
        status.processed = status.expected;
        Ok(outcome)
    }

    /// The job's aggregation edges, streamed into an index.
    async fn edge_index(&self, job: &JobId) -> Result<EdgeIndex, IndexError> {
        let mut edges = EdgeIndex::default();
        let mut refused = None;
        self.inner
            .attribution
            .visit_agg_edges(job, &mut |edge| {
                if refused.is_none()
                    && let Err(e) = edges.insert(edge.param_id, edge.target, edge.path, edge.cache_hit)
                {
                    refused = Some(e);
                }
            })
            .await
            .map_err(|e| IndexError::attribution(&e))?;
        if let Some(e) = refused {
            return Err(e);
        }
        edges.finish();
        Ok(edges)
    }

    /// Starts the work loop: a catch-up scan of finished jobs without a current table, then every
    /// job that reaches succeeded, partial or failed; `workers` jobs at a time. Stops when `token`
    /// is cancelled (a job being indexed finishes first).
    pub fn start(&self, workers: usize, token: CancellationToken, tracker: &tokio_util::task::TaskTracker) {
        let Some(mut queue) = self.inner.queue_rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() else {
            return;
        };
        let indexer = self.clone();
        let stop = token.clone();
        tracker.spawn(async move {
            let limit = Arc::new(tokio::sync::Semaphore::new(workers.max(1)));
            let mut running = tokio::task::JoinSet::new();
            loop {
                let job = tokio::select! {
                    () = stop.cancelled() => break,
                    job = queue.recv() => match job { Some(job) => job, None => break },
                };
                let (job, traceparent, rewrite) = job;
                let Ok(permit) = Arc::clone(&limit).acquire_owned().await else { break };
                let indexer = indexer.clone();
                // The build joins the trace of whatever asked for it (the request that finished
                // the job, or an IndexJob call).
                let span = tracing::info_span!("index_job", job = %job);
                if let Some(traceparent) = &traceparent {
                    modelops_runtime::telemetry::set_remote_parent(&span, traceparent);
                }
                running.spawn(
                    async move {
                        indexer.run_with(&job, rewrite).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            while running.join_next().await.is_some() {}
        });
        let indexer = self.clone();
        tracker.spawn(async move { indexer.follow_registry(token).await });
    }

    /// Follows the registry's job changes (`WatchJobs`) until `token` is cancelled, queueing every
    /// finished job without a table: first a catch-up of every finished job whose table is not
    /// done, then the current state of every job and live changes. A broken watch resumes where
    /// it stopped; one the registry cannot resume (another replica, a restart, too far behind)
    /// replays every job's current state again. A resync runs every
    /// [`IndexOptions::resync_interval`] whatever the watch does.
    async fn follow_registry(&self, token: CancellationToken) {
        const FIRST_BACKOFF: Duration = Duration::from_millis(200);
        let mut caught_up = self.catch_up().await;
        let mut resync = tokio::time::interval(self.inner.options.resync_interval.max(Duration::from_millis(100)));
        resync.tick().await;
        let mut from = WatchFrom {
            after: 0,
            replay_current: true,
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            let watched = tokio::select! {
                () = token.cancelled() => return,
                watched = self.inner.registry.watch_jobs(from) => watched,
            };
            let broke = match watched {
                Ok(mut events) => loop {
                    let event = tokio::select! {
                        () = token.cancelled() => return,
                        _ = resync.tick() => {
                            if !caught_up {
                                caught_up = self.catch_up().await;
                            }
                            self.resync().await;
                            continue;
                        }
                        event = events.next() => event,
                    };
                    match event {
                        Some(Ok(event)) => {
                            backoff = FIRST_BACKOFF;
                            from = WatchFrom {
                                after: event.seq,
                                replay_current: false,
                            };
                            self.on_job_event(&event).await;
                        }
                        Some(Err(status)) => break Some(status),
                        None => break None,
                    }
                },
                Err(status) => Some(status),
            };
            match broke {
                Some(status) if status.code() == tonic::Code::OutOfRange => {
                    // A position this registry cannot resume: start over from every job's state.
                    tracing::info!(reason = status.message(), "job watch cannot resume; replaying every job");
                    from = WatchFrom {
                        after: 0,
                        replay_current: true,
                    };
                    continue;
                }
                Some(status) => tracing::warn!(code = ?status.code(), reason = status.message(), retry_ms = backoff.as_millis() as u64, "job watch failed; retrying"),
                None => tracing::info!(retry_ms = backoff.as_millis() as u64, "job watch ended (the registry stopped); retrying"),
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Queues the job of a registry event if it is finished and has never been indexed, however
    /// it was first seen: a transition, or a state already terminal when this process first hears
    /// of it (written straight to the store by another writer between two polls of its change
    /// feed, replayed, or resynchronised). Returns whether the job was queued.
    pub async fn on_job_event(&self, event: &JobEvent) -> bool {
        let wanted = |state: &modelops_core::job::JobState| indexable(state.status()) && IndexState::of(state) == IndexState::None;
        if !wanted(&event.state) {
            return false;
        }
        // The event may be late (a change feed, a lagging replica): another indexer may have built
        // the table since. Its current state decides.
        match self.inner.registry.get_job(event.state.job_id()).await {
            Ok(Some(current)) if wanted(&current) => {}
            Ok(_) => return false,
            Err(e) => tracing::debug!(job = %event.state.job_id(), error = e.message(), "cannot re-read a finished job; queueing it"),
        }
        self.request_traced(event.state.job_id(), false, event.traceparent.clone()).await.is_ok()
    }

    /// Queues every finished job never indexed or left being built (by an indexer that died, or
    /// whose event this process missed while the registry was unreachable); a failed build
    /// waits for a request or a restart. Runs every [`IndexOptions::resync_interval`].
    pub async fn resync(&self) {
        match self.inner.registry.all_jobs().await {
            Ok(jobs) => {
                for state in jobs {
                    if indexable(state.status()) && matches!(IndexState::of(&state), IndexState::None | IndexState::Running) {
                        let _ = self.request(state.job_id(), false).await;
                    }
                }
            }
            Err(e) => tracing::debug!(error = e.message(), "resync scan failed; the next one retries"),
        }
    }

    /// Queues every finished job whose table is not done (never built, failed, or interrupted);
    /// returns whether the registry could be listed.
    pub async fn catch_up(&self) -> bool {
        match self.inner.registry.all_jobs().await {
            Ok(jobs) => {
                for state in jobs {
                    if indexable(state.status()) && IndexState::of(&state) != IndexState::Done {
                        let _ = self.request(state.job_id(), false).await;
                    }
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = e.message(), "catch-up scan failed; the next resync retries it");
                false
            }
        }
    }
}
