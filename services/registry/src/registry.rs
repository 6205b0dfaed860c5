//! The job registry's domain logic, independent of gRPC: registration with job specs, status
//! changes under upstream's rules, progress, listing, claims and index state, all by
//! compare-and-swap on upstream's `state.json` (UPSTREAM-FORMAT.md §5).
//!
//! Job specs ([`specs`]), listing ([`listing`]) and claims ([`claims`]) have modules of their own.
//!
//! Every write also bumps `_revision` inside the JSON (so no two writes have the same bytes, which
//! defeats S3's content-hash ETags) and is published to the [`ChangeHub`] for watchers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use modelops_core::job::{JobId, JobState, JobStatus};
use modelops_core::paths;
use modelops_core::pyjson::{self, PyObject, PyValue};
use modelops_core::store::Store;
use modelops_core::study::{JobSpec, SimulationStudy};
use modelops_core::time::now_iso;

use crate::error::RegistryError;
use crate::metrics::RegistryMetrics;
use crate::progress::ProgressQueue;
use crate::retry::{self, RetryError, RetryPolicy, Update};
use crate::store::{Versioned, VersionedStore};
use crate::watch::ChangeHub;

pub use modelops_core::job::{INDEX_ERROR_KEY, INDEX_STATE_KEY, IndexState, REVISION_KEY};
/// Where job states live in the registry store.
pub const JOBS_PREFIX: &str = "jobs/";
/// Where claims live in the registry store.
pub const CLAIMS_PREFIX: &str = "claims/";
/// Default and largest page sizes of [`JobRegistry::list`].
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The largest page size of [`JobRegistry::list`].
pub const MAX_PAGE_SIZE: usize = 1000;

/// The registry revision of a state (0 for states written by upstream, which has none).
pub fn revision(state: &JobState) -> u64 {
    state.revision()
}

/// A job spec given at registration.
#[derive(Debug, Clone)]
pub enum SpecInput {
    /// A spec blob in upstream form.
    JobSpecJson(String),
    /// A Calabaria study to expand with a bundle ref.
    Study {
        /// `study.json`.
        study_json: String,
        /// The bundle to bind it to.
        bundle_ref: String,
    },
}

/// What to register.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// The id; generated as upstream does when absent (and no spec names one).
    pub job_id: Option<JobId>,
    /// Kubernetes Job name.
    pub k8s_name: Option<String>,
    /// Kubernetes namespace.
    pub k8s_namespace: Option<String>,
    /// Metadata.
    pub metadata: PyObject,
    /// The spec.
    pub spec: Option<SpecInput>,
}

/// A status change and the fields set with it (upstream's whitelist).
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    /// The new status.
    pub status: JobStatus,
    /// `error_message`.
    pub error_message: Option<String>,
    /// `error_code`.
    pub error_code: Option<String>,
    /// `results_path`.
    pub results_path: Option<String>,
    /// `tasks_completed`.
    pub tasks_completed: Option<i64>,
    /// `tasks_total`.
    pub tasks_total: Option<i64>,
    /// `k8s_uid`.
    pub k8s_uid: Option<String>,
    /// Keys shallow-merged into `metadata`.
    pub metadata: Option<PyObject>,
    /// Apply only at this revision.
    pub expected_revision: Option<u64>,
    /// Upstream's validation fields set with the status.
    pub validation: ValidationFields,
    /// Nullable whitelisted fields set back to null first ([`CLEARABLE_FIELDS`]).
    pub clear: Vec<String>,
}

/// Upstream's validation fields of `state.json`, as `transition_to_validating` and
/// `finalize_with_validation` set them; unset ones are left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationFields {
    /// `validation_started_at`.
    pub started_at: Option<String>,
    /// `validation_completed_at`.
    pub completed_at: Option<String>,
    /// `validation_attempts`.
    pub attempts: Option<i64>,
    /// `last_validation_error`.
    pub last_error: Option<String>,
    /// `tasks_verified`.
    pub tasks_verified: Option<i64>,
    /// `verified_outputs`.
    pub verified_outputs: Option<Vec<String>>,
    /// `missing_outputs`.
    pub missing_outputs: Option<Vec<String>>,
}

/// The fields a status update may set back to null (upstream's nullable whitelisted fields).
pub const CLEARABLE_FIELDS: [&str; 7] = [
    "error_message",
    "error_code",
    "results_path",
    "k8s_uid",
    "validation_started_at",
    "validation_completed_at",
    "last_validation_error",
];

impl StatusUpdate {
    /// A bare status change.
    pub fn to(status: JobStatus) -> Self {
        Self {
            status,
            error_message: None,
            error_code: None,
            results_path: None,
            tasks_completed: None,
            tasks_total: None,
            k8s_uid: None,
            metadata: None,
            expected_revision: None,
            validation: ValidationFields::default(),
            clear: Vec::new(),
        }
    }
}

/// Tunables of a registry.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Compare-and-swap retries of ordinary updates.
    pub retry: RetryPolicy,
    /// How often queued progress increments are written.
    pub progress_flush_interval: Duration,
    /// How many past changes a watch can resume from.
    pub watch_retention: usize,
    /// What one request may ask of the registry.
    pub limits: RegistryLimits,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            progress_flush_interval: Duration::from_millis(200),
            watch_retention: 4096,
            limits: RegistryLimits::default(),
        }
    }
}

/// The registry's bounds on what a request may store (docs/LIMITS.md lists them with their flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryLimits {
    /// The most tasks one job may have: a study's parameter sets × replicates, or a spec's tasks
    /// (`--max-job-tasks`).
    pub max_job_tasks: u64,
    /// The largest `state.json` a write may leave, in bytes, metadata included
    /// (`--max-state-bytes`).
    pub max_state_bytes: usize,
    /// The longest claim (`--max-claim-ttl-seconds`).
    pub max_claim_ttl: Duration,
}

/// Default of [`RegistryLimits::max_job_tasks`]: eight times the seeds' 128,000-task study.
pub const DEFAULT_MAX_JOB_TASKS: u64 = 1_000_000;
/// Default of [`RegistryLimits::max_state_bytes`]: upstream's states are a few KiB.
pub const DEFAULT_MAX_STATE_BYTES: usize = 256 * 1024;
/// Default of [`RegistryLimits::max_claim_ttl`].
pub const DEFAULT_MAX_CLAIM_TTL: Duration = Duration::from_secs(3600);

impl Default for RegistryLimits {
    fn default() -> Self {
        Self {
            max_job_tasks: DEFAULT_MAX_JOB_TASKS,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
            max_claim_ttl: DEFAULT_MAX_CLAIM_TTL,
        }
    }
}

/// The job registry. Cheap to clone; all clones share state.
#[derive(Debug, Clone)]
pub struct JobRegistry {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) store: Arc<dyn VersionedStore>,
    pub(crate) specs: Store,
    pub(crate) hub: ChangeHub,
    pub(crate) progress: ProgressQueue,
    pub(crate) metrics: RegistryMetrics,
    pub(crate) config: RegistryConfig,
    /// What this process last wrote per key, to skip the read of the next update.
    pub(crate) last_written: std::sync::Mutex<std::collections::HashMap<String, Versioned>>,
}

/// How many keys [`Inner::last_written`] remembers.
const LAST_WRITTEN_CAPACITY: usize = 4096;

fn state_key(job_id: &JobId) -> String {
    paths::job_state_key(job_id)
}

fn encode(state: &JobState) -> Bytes {
    Bytes::from(state.to_json())
}

fn decode(key: &str, versioned: &Versioned) -> Result<JobState, RegistryError> {
    JobState::from_json(&versioned.value).map_err(|e| RegistryError::CorruptState {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// Marks a state as written now: `updated_at` (unless `touch` is false) and the revision.
fn stamp(state: &mut JobState, touch: bool) {
    if touch {
        state.set("updated_at", now_iso().into());
    }
    let next = revision(state) + 1;
    state.set(REVISION_KEY, next.into());
}

fn generated_job_id() -> JobId {
    let hex = uuid_hex8();
    JobId::new(format!("job-{hex}")).expect("generated ids are valid")
}

fn uuid_hex8() -> String {
    use rand::Rng;
    format!("{:08x}", rand::rng().random::<u32>())
}

/// Refuses negative task counters (upstream's counters count tasks).
fn check_counters(values: [Option<i64>; 2]) -> Result<(), RegistryError> {
    if values.into_iter().flatten().any(|v| v < 0) {
        return Err(RegistryError::InvalidArgument("task counters cannot be negative".into()));
    }
    Ok(())
}

/// Why an update function refused: mapped to [`RegistryError`] by the caller.
type Refusal = RegistryError;

impl JobRegistry {
    /// A registry over `store` (job states) and `specs` (job spec blobs). Metrics are registered
    /// in `metrics`. Call [`JobRegistry::start`] to run the background work.
    pub fn new(store: Arc<dyn VersionedStore>, specs: Store, config: RegistryConfig, metrics: &prometheus::Registry) -> Self {
        // Watch positions come from the store: its revisions where it orders them (etcd,
        // embedded), its clock where it keeps modification times (object stores).
        let hub = if store.orders_revisions() {
            ChangeHub::at_store_revisions(config.watch_retention)
        } else if store.keeps_modification_times() {
            ChangeHub::at_store_clock(config.watch_retention)
        } else {
            ChangeHub::new(config.watch_retention)
        };
        Self {
            inner: Arc::new(Inner {
                store,
                specs,
                hub,
                progress: ProgressQueue::default(),
                metrics: RegistryMetrics::register(metrics),
                config,
                last_written: std::sync::Mutex::default(),
            }),
        }
    }

    /// The change hub, for watchers.
    pub fn hub(&self) -> &ChangeHub {
        &self.inner.hub
    }

    /// A description of the state store, for logs.
    pub fn describe_store(&self) -> String {
        self.inner.store.describe()
    }

    /// Starts the background work: the progress flusher and, for backends with a change feed,
    /// the follower that publishes other processes' writes to watchers. Both stop (the flusher
    /// after a last flush) when `token` is cancelled.
    pub fn start(&self, token: tokio_util::sync::CancellationToken, tracker: &tokio_util::task::TaskTracker) {
        tracker.spawn(flushing::run_flusher(self.clone(), token.clone()));
        tracker.spawn(refresh_job_gauge(self.clone(), token.clone()));
        // Other replicas and other writers (the Python ModelOps) change the store too; backends
        // without a change feed have this process as their only writer.
        // Decided as the hub's positions were (asking `changes` would start a feed, whose first
        // poll reads every job, only to drop it).
        if self.inner.store.orders_revisions() {
            tracker.spawn(following::follow_revisions(self.clone(), token));
        } else if self.inner.store.keeps_modification_times() {
            tracker.spawn(following::follow_store(self.clone(), token));
        }
    }

    fn policy(&self) -> RetryPolicy {
        self.inner.config.retry
    }

    /// Reads a job.
    pub async fn get(&self, job_id: &JobId) -> Result<Option<JobState>, RegistryError> {
        let key = state_key(job_id);
        match self.inner.store.get(&key).await? {
            Some(versioned) => Ok(Some(decode(&key, &versioned)?)),
            None => Ok(None),
        }
    }

    /// Reads a job that must exist.
    pub async fn require(&self, job_id: &JobId) -> Result<JobState, RegistryError> {
        self.get(job_id).await?.ok_or_else(|| RegistryError::NotFound(job_id.to_string()))
    }

    /// Registers a job in status pending, storing its spec first if one is given.
    pub async fn register(&self, registration: Registration) -> Result<(JobState, Option<String>), RegistryError> {
        let Registration {
            job_id,
            k8s_name,
            k8s_namespace,
            mut metadata,
            spec,
        } = registration;
        let limits = self.inner.config.limits;
        let too_many_tasks = |value: Option<u64>| RegistryError::LimitExceeded {
            what: "the job's task count",
            value,
            max: limits.max_job_tasks,
            flag: "max-job-tasks",
        };
        let spec = match spec {
            None => None,
            Some(SpecInput::JobSpecJson(json)) => {
                let spec = JobSpec::from_json(json.as_bytes())?;
                if let JobSpec::Simulation(job) = &spec {
                    let tasks = job.tasks.len() as u64;
                    if tasks > limits.max_job_tasks {
                        return Err(too_many_tasks(Some(tasks)));
                    }
                }
                Some(spec)
            }
            Some(SpecInput::Study { study_json, bundle_ref }) => {
                let study = SimulationStudy::from_json(study_json.as_bytes())?;
                // Counted before the expansion, which holds every task in memory.
                match study.task_count() {
                    Some(tasks) if tasks <= limits.max_job_tasks => {}
                    tasks => return Err(too_many_tasks(tasks)),
                }
                let id = job_id.clone().unwrap_or_else(generated_job_id);
                Some(JobSpec::Simulation(study.to_sim_job(&bundle_ref, Some(id))?))
            }
        };
        let job_id = match (job_id, &spec) {
            (Some(id), Some(spec)) if spec.job_id() != &id => {
                return Err(RegistryError::InvalidArgument(format!(
                    "job_id {id} differs from the spec's job_id {}",
                    spec.job_id()
                )));
            }
            (Some(id), _) => id,
            (None, Some(spec)) => spec.job_id().clone(),
            (None, None) => generated_job_id(),
        };
        let key = state_key(&job_id);
        // The metadata is most of a state: refuse an oversized one before the spec is stored.
        let metadata_bytes = pyjson::to_canonical(&PyValue::Object(metadata.clone())).len();
        if metadata_bytes > limits.max_state_bytes {
            return Err(RegistryError::LimitExceeded {
                what: "the job's metadata",
                value: Some(metadata_bytes as u64),
                max: limits.max_state_bytes as u64,
                flag: "max-state-bytes",
            });
        }
        if self.inner.store.get(&key).await?.is_some() {
            return Err(RegistryError::AlreadyExists(job_id.to_string()));
        }
        let mut tasks_total = 0;
        let spec_key = match &spec {
            Some(spec) => {
                let spec_key = paths::job_spec_key(spec.job_type(), &job_id);
                self.store_spec(&job_id, &spec_key, spec).await?;
                if let JobSpec::Simulation(job) = spec {
                    tasks_total = job.tasks.len() as i64;
                }
                if !metadata.contains_key("type") {
                    let kind = if spec.job_type() == "simulation" { "SimJob" } else { "CalibrationJob" };
                    metadata.insert("type", kind.into());
                }
                if !metadata.contains_key("blob_key") {
                    metadata.insert("blob_key", spec_key.as_str().into());
                }
                Some(spec_key)
            }
            None => None,
        };
        let now = now_iso();
        let mut state = JobState::registered(job_id.clone(), &now, k8s_name.as_deref(), k8s_namespace.as_deref(), metadata);
        state.set("tasks_total", tasks_total.into());
        state.set(REVISION_KEY, 1u64.into());
        let encoded = encode(&state);
        self.check_state_size(&encoded)?;
        self.inner.hub.will_write(&state);
        let created = retry::create_with_retry(self.inner.store.as_ref(), &key, encoded, self.policy()).await?;
        if !created {
            return Err(RegistryError::AlreadyExists(job_id.to_string()));
        }
        self.inner.metrics.writes.with_label_values(&["register"]).inc();
        self.inner.hub.publish(state.clone());
        tracing::info!(job = %job_id, spec = spec_key.as_deref().unwrap_or("none"), tasks_total, "job registered");
        Ok((state, spec_key))
    }

    /// Runs a compare-and-swap update of a job's state and publishes the result. With `bounded`
    /// (updates carrying caller-sized fields: messages, metadata), a state over
    /// [`RegistryLimits::max_state_bytes`] is refused instead of written.
    async fn update(
        &self,
        job_id: &JobId,
        op: &'static str,
        policy: RetryPolicy,
        bounded: bool,
        mut apply: impl FnMut(&mut JobState) -> Result<bool, Refusal>,
    ) -> Result<(JobState, bool), RegistryError> {
        let key = state_key(job_id);
        let metrics = &self.inner.metrics;
        let guess = self.last_written(&key);
        let result = retry::update_from(
            self.inner.store.as_ref(),
            &key,
            policy,
            guess,
            |current| {
                let mut state = decode(&key, current)?;
                if apply(&mut state)? {
                    let encoded = encode(&state);
                    if bounded {
                        self.check_state_size(&encoded)?;
                    }
                    self.inner.hub.will_write(&state);
                    Ok(Update::Write(encoded, (state, true)))
                } else {
                    Ok(Update::Keep((state, false)))
                }
            },
            || metrics.cas_conflicts.with_label_values(&[op]).inc(),
        )
        .await;
        match result {
            Ok(updated) => {
                let (state, changed) = updated.value;
                self.remember_written(key, updated.stored);
                if changed {
                    metrics.writes.with_label_values(&[op]).inc();
                    self.inner.hub.publish(state.clone());
                }
                Ok((state, changed))
            }
            Err(RetryError::NotFound(_)) => Err(RegistryError::NotFound(job_id.to_string())),
            Err(RetryError::TooManyRetries { attempts, .. }) => Err(RegistryError::Conflict {
                job: job_id.to_string(),
                attempts,
            }),
            Err(RetryError::Store(e)) => Err(e.into()),
            Err(RetryError::Update(e)) => Err(e),
        }
    }

    /// Refuses a state larger than [`RegistryLimits::max_state_bytes`].
    fn check_state_size(&self, encoded: &[u8]) -> Result<(), RegistryError> {
        let max = self.inner.config.limits.max_state_bytes;
        if encoded.len() > max {
            return Err(RegistryError::LimitExceeded {
                what: "the job's state.json",
                value: Some(encoded.len() as u64),
                max: max as u64,
                flag: "max-state-bytes",
            });
        }
        Ok(())
    }

    fn last_written(&self, key: &str) -> Option<Versioned> {
        self.inner.last_written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).cloned()
    }

    fn remember_written(&self, key: String, stored: Versioned) {
        let mut cache = self.inner.last_written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= LAST_WRITTEN_CAPACITY && !cache.contains_key(&key) {
            // Any entry will do: a missing one only costs a read.
            if let Some(evict) = cache.keys().next().cloned() {
                cache.remove(&evict);
            }
        }
        cache.insert(key, stored);
    }

    /// Changes a job's status under upstream's rules: legal transitions only; a terminal job set
    /// to its own status again is a no-op (`changed == false`); fields outside upstream's
    /// whitelist cannot be set; metadata is shallow-merged.
    pub async fn update_status(&self, job_id: &JobId, update: StatusUpdate) -> Result<(JobState, bool), RegistryError> {
        check_counters([update.tasks_completed, update.tasks_total])?;
        check_counters([update.validation.attempts, update.validation.tasks_verified])?;
        if let Some(field) = update.clear.iter().find(|f| !CLEARABLE_FIELDS.contains(&f.as_str())) {
            return Err(RegistryError::InvalidArgument(format!(
                "clear_fields: {field:?} cannot be cleared; these can: {}",
                CLEARABLE_FIELDS.join(", ")
            )));
        }
        let policy = self.policy();
        let job = job_id.to_string();
        self.update(job_id, "status", policy, true, |state| {
            if let Some(expected) = update.expected_revision {
                let actual = revision(state);
                if actual != expected {
                    return Err(RegistryError::RevisionMismatch {
                        job: job.clone(),
                        expected,
                        actual,
                    });
                }
            }
            let from = state.status();
            if from.is_terminal() {
                if from == update.status {
                    return Ok(false);
                }
                return Err(RegistryError::TerminalState {
                    job: job.clone(),
                    status: from,
                    to: update.status,
                });
            }
            if !from.can_transition_to(update.status) {
                return Err(RegistryError::InvalidTransition {
                    job: job.clone(),
                    from,
                    to: update.status,
                });
            }
            state.set_status(update.status);
            for field in &update.clear {
                state.set(field, PyValue::Null);
            }
            let text = |v: &Option<String>| v.as_deref().map(PyValue::from);
            let list = |v: &Option<Vec<String>>| v.as_ref().map(|items| PyValue::List(items.iter().map(|i| i.as_str().into()).collect()));
            let validation = &update.validation;
            for (key, value) in [
                ("error_message", text(&update.error_message)),
                ("error_code", text(&update.error_code)),
                ("results_path", text(&update.results_path)),
                ("k8s_uid", text(&update.k8s_uid)),
                ("tasks_completed", update.tasks_completed.map(PyValue::from)),
                ("tasks_total", update.tasks_total.map(PyValue::from)),
                ("validation_started_at", text(&validation.started_at)),
                ("validation_completed_at", text(&validation.completed_at)),
                ("validation_attempts", validation.attempts.map(PyValue::from)),
                ("last_validation_error", text(&validation.last_error)),
                ("tasks_verified", validation.tasks_verified.map(PyValue::from)),
                ("verified_outputs", list(&validation.verified_outputs)),
                ("missing_outputs", list(&validation.missing_outputs)),
            ] {
                if let Some(value) = value {
                    state.set(key, value);
                }
            }
            if let Some(extra) = &update.metadata {
                let mut metadata = state.metadata();
                for (k, v) in extra.iter() {
                    metadata.insert(k, v.clone());
                }
                state.set("metadata", PyValue::Object(metadata));
            }
            stamp(state, true);
            Ok(true)
        })
        .await
    }

    /// Sets the task counters to absolute values (upstream `update_progress`: allowed in any
    /// status, no monotonicity check).
    pub async fn set_progress(&self, job_id: &JobId, completed: Option<i64>, total: Option<i64>) -> Result<JobState, RegistryError> {
        check_counters([completed, total])?;
        let (state, _) = self
            .update(job_id, "progress", self.policy(), false, |state| {
                if let Some(completed) = completed {
                    state.set("tasks_completed", completed.into());
                }
                if let Some(total) = total {
                    state.set("tasks_total", total.into());
                }
                stamp(state, true);
                Ok(true)
            })
            .await?;
        Ok(state)
    }

    /// Adds to the task counters. Increments are queued and written in batches; the call
    /// returns once its increment is stored, or at once with `ack_when_queued`.
    pub async fn add_progress(&self, job_id: &JobId, completed: i64, total: i64, ack_when_queued: bool) -> Result<(i64, i64), RegistryError> {
        if completed < 0 || total < 0 {
            return Err(RegistryError::InvalidArgument("progress increments cannot be negative".into()));
        }
        self.inner.metrics.progress_increments.inc();
        if ack_when_queued && !self.inner.progress.is_known(job_id) {
            // Refuse increments for unknown jobs now, since nobody waits for the flush.
            let state = self.require(job_id).await?;
            self.inner.progress.remember(job_id.clone());
            if !self.inner.progress.enqueue(job_id.clone(), completed, total, None) {
                return Err(RegistryError::ShuttingDown);
            }
            return Ok((state.tasks_completed().saturating_add(completed), state.tasks_total().saturating_add(total)));
        }
        if ack_when_queued {
            if !self.inner.progress.enqueue(job_id.clone(), completed, total, None) {
                return Err(RegistryError::ShuttingDown);
            }
            return Ok((completed, total));
        }
        let (done, waiting) = tokio::sync::oneshot::channel();
        if !self.inner.progress.enqueue(job_id.clone(), completed, total, Some(done)) {
            return Err(RegistryError::ShuttingDown);
        }
        waiting.await.map_err(|_| RegistryError::ShuttingDown)?
    }

    /// Writes a batch of queued increments for one job (called by the flusher). Retries hard:
    /// losing increments is worse than waiting.
    pub(crate) async fn apply_progress_delta(&self, job_id: &JobId, completed: i64, total: i64) -> Result<JobState, RegistryError> {
        let policy = RetryPolicy {
            max_attempts: 30,
            ..self.policy()
        };
        let (state, _) = self
            .update(job_id, "progress", policy, false, |state| {
                // Saturating: counters stop at i64::MAX instead of wrapping to negative.
                state.set("tasks_completed", state.tasks_completed().saturating_add(completed).into());
                state.set("tasks_total", state.tasks_total().saturating_add(total).into());
                stamp(state, true);
                Ok(true)
            })
            .await?;
        self.inner.metrics.progress_flushes.inc();
        Ok(state)
    }

    /// Moves a job to a terminal status (upstream `finalize_job`).
    pub async fn finalize(
        &self,
        job_id: &JobId,
        status: JobStatus,
        results_path: Option<String>,
        error_message: Option<String>,
        error_code: Option<String>,
    ) -> Result<JobState, RegistryError> {
        if !status.is_terminal() {
            return Err(RegistryError::InvalidArgument(format!("{status} is not a terminal status")));
        }
        let update = StatusUpdate {
            results_path,
            error_message,
            error_code,
            ..StatusUpdate::to(status)
        };
        Ok(self.update_status(job_id, update).await?.0)
    }

    /// Cancels a job; its error message becomes `Cancelled: {reason}`.
    pub async fn cancel(&self, job_id: &JobId, reason: Option<&str>) -> Result<JobState, RegistryError> {
        let update = StatusUpdate {
            error_message: Some(format!("Cancelled: {}", reason.unwrap_or("no reason given"))),
            ..StatusUpdate::to(JobStatus::Cancelled)
        };
        Ok(self.update_status(job_id, update).await?.0)
    }

    /// Records the state of a job's loss index (any job status; `updated_at` is left alone).
    pub async fn set_index_state(&self, job_id: &JobId, index: IndexState, results_path: Option<String>, error: Option<String>) -> Result<JobState, RegistryError> {
        let (state, _) = self
            .update(job_id, "index_state", self.policy(), false, |state| {
                state.set(INDEX_STATE_KEY, index.as_str().into());
                state.set(INDEX_ERROR_KEY, error.as_deref().map_or(PyValue::Null, PyValue::from));
                if let Some(path) = &results_path {
                    state.set("results_path", path.as_str().into());
                }
                stamp(state, false);
                Ok(true)
            })
            .await?;
        Ok(state)
    }

    /// Flushes queued progress now (used on shutdown and by tests).
    pub async fn flush_progress(&self) {
        flushing::flush(self, false).await;
    }
}

/// Keeps the jobs-by-status gauge current for scrapes.
async fn refresh_job_gauge(registry: JobRegistry, token: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = every.tick() => {
                if let Err(e) = registry.count_by_status().await {
                    tracing::debug!(error = %e, "cannot refresh the jobs gauge");
                }
            }
        }
    }
}

pub mod claims;
mod flushing;
mod following;
pub mod listing;
pub mod specs;
#[cfg(test)]
mod tests;

pub use claims::Claim;
pub use listing::{JobPage, ListQuery};
