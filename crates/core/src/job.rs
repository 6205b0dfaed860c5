//! The job model of upstream ModelOps: job ids, `JobStatus` and its transition table, and the
//! `state.json` document (UPSTREAM-FORMAT.md §5).
//!
//! [`JobState`] keeps the stored JSON object as it was read, because upstream updates act on the
//! raw dict: key order and unknown keys survive a rewrite, and missing defaults are not filled in.

use std::fmt;
use std::str::FromStr;

use crate::pyjson::{self, PyObject, PyValue};

/// Longest job id accepted.
pub const MAX_JOB_ID_LEN: usize = 128;

/// A validated job id: `[a-z0-9][a-z0-9._-]*`, at most 128 characters. It can be placed in any
/// key prefix without escaping it (no `/`, cannot be `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

/// Why a string is not a job id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobIdError {
    /// The id is empty.
    #[error("job id is empty")]
    Empty,
    /// The id is longer than [`MAX_JOB_ID_LEN`].
    #[error("job id is {0} characters long, at most {MAX_JOB_ID_LEN} are allowed")]
    TooLong(usize),
    /// The id has a character outside `[a-z0-9._-]` or does not start with `[a-z0-9]`.
    #[error("job id {0:?} must match [a-z0-9][a-z0-9._-]*")]
    Invalid(String),
}

impl JobId {
    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<Self, JobIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(JobIdError::Empty);
        }
        if id.len() > MAX_JOB_ID_LEN {
            return Err(JobIdError::TooLong(id.len()));
        }
        let mut bytes = id.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
        if !(first_ok && rest_ok) {
            return Err(JobIdError::Invalid(id));
        }
        Ok(Self(id))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for JobId {
    type Err = JobIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for JobId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The state of a job, with upstream's string values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobStatus {
    /// Registered, not yet submitted.
    Pending,
    /// Being submitted to Kubernetes.
    Submitting,
    /// The Kubernetes job exists.
    Scheduled,
    /// Running.
    Running,
    /// Finished running; outputs are being checked.
    Validating,
    /// Finished with every output present (terminal).
    Succeeded,
    /// Finished with some outputs missing (terminal). Upstream's member is PARTIAL_SUCCESS, its
    /// value `"partial"`.
    Partial,
    /// Failed (terminal).
    Failed,
    /// Cancelled (terminal).
    Cancelled,
}

/// A status string that is not one of upstream's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job status {0:?}; expected one of pending, submitting, scheduled, running, validating, succeeded, partial, failed, cancelled")]
pub struct UnknownStatus(pub String);

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 9] = [
        Self::Pending,
        Self::Submitting,
        Self::Scheduled,
        Self::Running,
        Self::Validating,
        Self::Succeeded,
        Self::Partial,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The value stored in `state.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Submitting => "submitting",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Validating => "validating",
            Self::Succeeded => "succeeded",
            Self::Partial => "partial",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether no further transition is allowed.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Partial | Self::Failed | Self::Cancelled)
    }

    /// Whether the job is still in flight (upstream `get_active_jobs`).
    pub fn is_active(self) -> bool {
        !self.is_terminal()
    }

    /// The statuses reachable in one step (upstream `TRANSITIONS`).
    pub fn allowed_next(self) -> &'static [Self] {
        match self {
            Self::Pending => &[Self::Submitting, Self::Cancelled],
            Self::Submitting => &[Self::Scheduled, Self::Failed],
            Self::Scheduled => &[Self::Running, Self::Failed, Self::Cancelled],
            Self::Running => &[Self::Validating, Self::Succeeded, Self::Failed, Self::Cancelled],
            Self::Validating => &[Self::Succeeded, Self::Partial, Self::Failed],
            Self::Succeeded | Self::Partial | Self::Failed | Self::Cancelled => &[],
        }
    }

    /// Whether `self → next` is a legal transition.
    pub fn can_transition_to(self, next: Self) -> bool {
        self.allowed_next().contains(&next)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Why bytes are not a usable `state.json`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobStateError {
    /// Not JSON.
    #[error("state is not valid JSON: {0}")]
    Json(#[from] pyjson::ParseError),
    /// JSON, but not an object.
    #[error("state must be a JSON object")]
    NotAnObject,
    /// A required field is absent (upstream raises TypeError).
    #[error("state lacks required field {0:?}")]
    MissingField(&'static str),
    /// A field has the wrong type.
    #[error("state field {field:?} must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// The status is not one of upstream's values.
    #[error(transparent)]
    Status(#[from] UnknownStatus),
    /// The job id is not valid.
    #[error(transparent)]
    JobId(#[from] JobIdError),
}

/// Names of the 21 upstream `JobState` fields in declaration (= first-write key) order.
pub const JOB_STATE_FIELDS: [&str; 21] = [
    "job_id",
    "status",
    "created_at",
    "updated_at",
    "k8s_name",
    "k8s_namespace",
    "k8s_uid",
    "tasks_total",
    "tasks_completed",
    "error_message",
    "error_code",
    "results_path",
    "expected_outputs",
    "verified_outputs",
    "missing_outputs",
    "tasks_verified",
    "validation_started_at",
    "validation_completed_at",
    "validation_attempts",
    "last_validation_error",
    "metadata",
];

/// What a listing needs of a stored `state.json` before reading it whole: its id, status and
/// creation time. Read without building the object, so a registry lists tens of thousands of
/// jobs and reads whole only the page it returns.
#[derive(Debug, Clone, PartialEq)]
pub struct StateHead {
    /// The job.
    pub job_id: JobId,
    /// Its status.
    pub status: JobStatus,
    /// Its `created_at`, as stored.
    pub created_at: String,
}

impl StateHead {
    /// The head of a stored state, when the quick reading holds: `None` for anything it does not
    /// take (Python's `NaN` in the metadata, a repeated key, a malformed document);
    /// [`JobState::from_json`] then reads it whole and decides. Where both read a state they give
    /// the same id, status and creation time; a state only this reads (a lone surrogate in a field
    /// it skips) fails when read whole.
    pub fn read(bytes: &[u8]) -> Option<Self> {
        /// The required fields, borrowed where no escape needs undoing; others are skipped.
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            job_id: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            status: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            created_at: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            #[allow(dead_code, reason = "required, as JobState::from_json requires it")]
            updated_at: std::borrow::Cow<'a, str>,
        }
        let head: Head<'_> = serde_json::from_slice(bytes).ok()?;
        Some(Self {
            job_id: JobId::new(head.job_id.as_ref()).ok()?,
            status: head.status.parse().ok()?,
            created_at: head.created_at.into_owned(),
        })
    }

    /// The head of a state read whole.
    pub fn of(state: &JobState) -> Self {
        Self {
            job_id: state.job_id().clone(),
            status: state.status(),
            created_at: state.created_at().to_owned(),
        }
    }
}

/// A job's `state.json`: the stored object, with typed accessors over it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobState {
    raw: PyObject,
    job_id: JobId,
    status: JobStatus,
}

impl JobState {
    /// A freshly registered job, with the 21 fields in upstream order and their defaults.
    pub fn registered(
        job_id: JobId,
        created_at: &str,
        k8s_name: Option<&str>,
        k8s_namespace: Option<&str>,
        metadata: PyObject,
    ) -> Self {
        let mut raw = PyObject::new();
        raw.insert("job_id", job_id.as_str().into());
        raw.insert("status", JobStatus::Pending.as_str().into());
        raw.insert("created_at", created_at.into());
        raw.insert("updated_at", created_at.into());
        raw.insert("k8s_name", k8s_name.into());
        raw.insert("k8s_namespace", k8s_namespace.into());
        raw.insert("k8s_uid", PyValue::Null);
        raw.insert("tasks_total", PyValue::Int(0));
        raw.insert("tasks_completed", PyValue::Int(0));
        raw.insert("error_message", PyValue::Null);
        raw.insert("error_code", PyValue::Null);
        raw.insert("results_path", PyValue::Null);
        raw.insert("expected_outputs", PyValue::List(Vec::new()));
        raw.insert("verified_outputs", PyValue::List(Vec::new()));
        raw.insert("missing_outputs", PyValue::List(Vec::new()));
        raw.insert("tasks_verified", PyValue::Int(0));
        raw.insert("validation_started_at", PyValue::Null);
        raw.insert("validation_completed_at", PyValue::Null);
        raw.insert("validation_attempts", PyValue::Int(0));
        raw.insert("last_validation_error", PyValue::Null);
        raw.insert("metadata", PyValue::Object(metadata));
        Self {
            raw,
            job_id,
            status: JobStatus::Pending,
        }
    }

    /// Reads a stored `state.json`. Unknown keys are kept; `job_id`, `status`, `created_at` and
    /// `updated_at` are required, as upstream's dataclass requires them.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JobStateError> {
        match pyjson::parse(bytes)? {
            PyValue::Object(raw) => Self::from_object(raw),
            _ => Err(JobStateError::NotAnObject),
        }
    }

    /// Builds a state from an already parsed object.
    pub fn from_object(raw: PyObject) -> Result<Self, JobStateError> {
        let string = |field: &'static str| -> Result<&str, JobStateError> {
            raw.get(field)
                .ok_or(JobStateError::MissingField(field))?
                .as_str()
                .ok_or(JobStateError::WrongType { field, expected: "a string" })
        };
        let job_id = JobId::new(string("job_id")?)?;
        let status = string("status")?.parse()?;
        string("created_at")?;
        string("updated_at")?;
        Ok(Self { raw, job_id, status })
    }

    /// The bytes upstream writes: `json.dumps(state, indent=2)`.
    pub fn to_json(&self) -> String {
        pyjson::to_indent2(&PyValue::Object(self.raw.clone()))
    }

    /// The stored object.
    pub fn raw(&self) -> &PyObject {
        &self.raw
    }

    /// The job id.
    pub fn job_id(&self) -> &JobId {
        &self.job_id
    }

    /// The status.
    pub fn status(&self) -> JobStatus {
        self.status
    }

    /// Sets the status (no transition check; see [`JobStatus::can_transition_to`]).
    pub fn set_status(&mut self, status: JobStatus) {
        self.status = status;
        self.raw.insert("status", status.as_str().into());
    }

    /// Sets any field, keeping its position or appending it, as Python `d[key] = value` does.
    /// `job_id` and `status` have their own setters.
    pub fn set(&mut self, key: &str, value: PyValue) {
        debug_assert!(key != "job_id" && key != "status", "use set_status");
        self.raw.insert(key, value);
    }

    /// A field's value, if present.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        self.raw.get(key)
    }

    /// A string field, `None` when absent or null.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.raw.get(key).and_then(PyValue::as_str)
    }

    /// An int field, 0 when absent (upstream's default for the counters).
    pub fn get_count(&self, key: &str) -> i64 {
        self.raw.get(key).and_then(PyValue::as_i64).unwrap_or(0)
    }

    /// `created_at` as stored.
    pub fn created_at(&self) -> &str {
        self.get_str("created_at").unwrap_or_default()
    }

    /// `updated_at` as stored.
    pub fn updated_at(&self) -> &str {
        self.get_str("updated_at").unwrap_or_default()
    }

    /// `tasks_total`.
    pub fn tasks_total(&self) -> i64 {
        self.get_count("tasks_total")
    }

    /// `tasks_completed`.
    pub fn tasks_completed(&self) -> i64 {
        self.get_count("tasks_completed")
    }

    /// Upstream's `progress_percent`: completed / total × 100 when total > 0.
    pub fn progress_percent(&self) -> Option<f64> {
        let total = self.tasks_total();
        (total > 0).then(|| self.tasks_completed() as f64 / total as f64 * 100.0)
    }

    /// The `metadata` object (empty when absent or not an object).
    pub fn metadata(&self) -> PyObject {
        self.raw.get("metadata").and_then(PyValue::as_object).cloned().unwrap_or_default()
    }
}

/// The key inside `state.json` holding the registry's revision counter (absent in states written
/// by upstream, which has none).
pub const REVISION_KEY: &str = "_revision";
/// The key inside `state.json` holding the loss index state.
pub const INDEX_STATE_KEY: &str = "index_state";
/// The key inside `state.json` holding why indexing last failed.
pub const INDEX_ERROR_KEY: &str = "index_error";

impl JobState {
    /// The registry revision of this state (0 for a state written by upstream).
    pub fn revision(&self) -> u64 {
        self.get(REVISION_KEY).and_then(PyValue::as_u64).unwrap_or(0)
    }

    /// The loss index state recorded in this state.
    pub fn index_state(&self) -> IndexState {
        IndexState::of(self)
    }
}

/// The loss index state recorded in a job's state by the indexer (through the registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexState {
    /// Not indexed.
    None,
    /// Being built.
    Running,
    /// Built and current.
    Done,
    /// The last attempt failed.
    Failed,
}

impl IndexState {
    /// The value stored in `state.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    /// The index state of a job's state (`None` when never set).
    pub fn of(state: &JobState) -> Self {
        match state.get_str(INDEX_STATE_KEY) {
            Some("running") => Self::Running,
            Some("done") => Self::Done,
            Some("failed") => Self::Failed,
            _ => Self::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_head_reads_what_the_whole_state_reads_or_leaves_it_to_it() {
        let state = JobState::registered(JobId::new("job-head").unwrap(), "2026-01-01T00:00:00.000001+00:00", Some("k8s"), None, PyObject::new());
        let bytes = state.to_json();
        let head = StateHead::read(bytes.as_bytes()).expect("a registered state's head");
        assert_eq!(head, StateHead::of(&state));
        // An escaped creation time is read as the whole state reads it.
        let escaped = bytes.replace("2026-01-01T00:00:00.000001+00:00", "2026-01-01T00:00:00\\u00e9");
        let whole = JobState::from_json(escaped.as_bytes()).unwrap();
        assert_eq!(StateHead::read(escaped.as_bytes()).unwrap().created_at, whole.created_at());
        // What the quick reading does not take, the whole reading decides: NaN in the metadata,
        // a repeated key (the last value counts), a lone surrogate.
        let nan = bytes.replace("\"metadata\": {}", "\"metadata\": {\"x\": NaN}");
        assert!(nan.contains("NaN") && StateHead::read(nan.as_bytes()).is_none());
        assert!(JobState::from_json(nan.as_bytes()).is_ok());
        let repeated = bytes.replacen("\"status\": \"pending\"", "\"status\": \"pending\", \"status\": \"running\"", 1);
        assert!(StateHead::read(repeated.as_bytes()).is_none());
        assert_eq!(JobState::from_json(repeated.as_bytes()).unwrap().status(), JobStatus::Running);
        // A lone surrogate in a field the head skips is read (the whole reading refuses it: a
        // listing skips such a state when it reads its page).
        let surrogate = bytes.replace("\"k8s\"", "\"\\ud800\"");
        assert!(StateHead::read(surrogate.as_bytes()).is_some() && JobState::from_json(surrogate.as_bytes()).is_err());
        let surrogate = bytes.replace("\"job-head\"", "\"job-\\ud800\"");
        assert!(StateHead::read(surrogate.as_bytes()).is_none());
        // Hostile: wrong types, a bad id or status, missing fields, not JSON.
        for bad in [
            bytes.replace("\"job_id\": \"job-head\"", "\"job_id\": 7"),
            bytes.replace("\"job_id\": \"job-head\"", "\"job_id\": \"../x\""),
            bytes.replace("\"status\": \"pending\"", "\"status\": \"done\""),
            bytes.replace("\"updated_at\"", "\"updated\""),
            "[]".to_owned(),
            "{".repeat(100_000),
        ] {
            assert!(StateHead::read(bad.as_bytes()).is_none(), "{}", &bad[..bad.len().min(80)]);
        }
    }

    #[test]
    fn job_ids_never_escape_a_prefix() {
        for good in ["job-5b718dc8", "calib-0a1b2c3d", "a", "0.9_x-y", &"a".repeat(128)] {
            assert!(JobId::new(good).is_ok(), "{good}");
        }
        for bad in ["", "..", ".", "a/b", "../x", "Job-1", "-x", "_x", "a b", "é", "a\0", &"a".repeat(129)] {
            assert!(JobId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn transition_table_is_upstreams() {
        use JobStatus::*;
        assert!(Pending.can_transition_to(Submitting));
        assert!(Pending.can_transition_to(Cancelled));
        assert!(!Pending.can_transition_to(Running));
        assert!(!Submitting.can_transition_to(Cancelled));
        assert!(!Submitting.can_transition_to(Succeeded));
        assert!(Running.can_transition_to(Succeeded));
        assert!(!Validating.can_transition_to(Cancelled));
        assert!(Validating.can_transition_to(Partial));
        for terminal in [Succeeded, Partial, Failed, Cancelled] {
            assert!(terminal.is_terminal());
            assert!(terminal.allowed_next().is_empty());
        }
        assert_eq!("partial".parse::<JobStatus>().unwrap(), Partial);
        assert!("PARTIAL_SUCCESS".parse::<JobStatus>().is_err());
    }

    #[test]
    fn registered_state_has_upstream_field_order() {
        let state = JobState::registered(JobId::new("job-1").unwrap(), "2026-11-22T20:05:11+00:00", Some("job-1"), None, PyObject::new());
        assert_eq!(state.raw().keys().collect::<Vec<_>>(), JOB_STATE_FIELDS);
        let again = JobState::from_json(state.to_json().as_bytes()).unwrap();
        assert_eq!(again, state);
        assert_eq!(again.progress_percent(), None);
    }

    #[test]
    fn unknown_keys_and_order_survive() {
        let text = "{\n  \"status\": \"running\",\n  \"job_id\": \"job-1\",\n  \"created_at\": \"x\",\n  \"updated_at\": \"y\",\n  \"extra\": [\n    1\n  ],\n  \"tasks_total\": 4,\n  \"tasks_completed\": 1\n}";
        let mut state = JobState::from_json(text.as_bytes()).unwrap();
        assert_eq!(state.to_json(), text);
        assert_eq!(state.progress_percent(), Some(25.0));
        state.set_status(JobStatus::Succeeded);
        state.set("results_path", "r".into());
        assert_eq!(state.to_json(), text.replace("running", "succeeded").replace("  \"tasks_completed\": 1\n}", "  \"tasks_completed\": 1,\n  \"results_path\": \"r\"\n}"));
    }

    #[test]
    fn malformed_states_are_typed_errors() {
        assert!(matches!(JobState::from_json(b"[]"), Err(JobStateError::NotAnObject)));
        assert!(matches!(JobState::from_json(b"{\"job_id\": \"a\""), Err(JobStateError::Json(_))));
        assert!(matches!(JobState::from_json(b"{\"job_id\": \"a\"}"), Err(JobStateError::MissingField("status"))));
        assert!(matches!(
            JobState::from_json(br#"{"job_id": "a", "status": "bogus", "created_at": "", "updated_at": ""}"#),
            Err(JobStateError::Status(_))
        ));
        assert!(matches!(
            JobState::from_json(br#"{"job_id": "../a", "status": "pending", "created_at": "", "updated_at": ""}"#),
            Err(JobStateError::JobId(_))
        ));
    }
}
