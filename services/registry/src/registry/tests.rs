//! The upstream job-registry tests (UPSTREAM-FORMAT.md §10, `tests/test_job_registry.py`, all 21)
//! ported to this registry, plus what it adds: specs, coalesced progress, claims, pages,
//! watches and the revision counter.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use modelops_core::job::{JobId, JobStatus};
use modelops_core::pyjson::{self, PyObject, PyValue};
use modelops_core::store::Store;

use super::*;
use crate::store::memory::MemoryStore;

fn id(s: &str) -> JobId {
    JobId::new(s).unwrap()
}

fn meta(json: &str) -> PyObject {
    pyjson::parse(json.as_bytes()).unwrap().as_object().unwrap().clone()
}

fn new_registry() -> JobRegistry {
    let config = RegistryConfig {
        progress_flush_interval: Duration::from_millis(20),
        ..RegistryConfig::default()
    };
    JobRegistry::new(Arc::new(MemoryStore::new()), Store::in_memory(), config, &prometheus::Registry::new())
}

fn started(registry: &JobRegistry) -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    registry.start(token.clone(), &tokio_util::task::TaskTracker::new());
    token
}

async fn register(registry: &JobRegistry, job: &str) -> JobState {
    registry
        .register(Registration {
            job_id: Some(id(job)),
            k8s_name: Some(job.into()),
            k8s_namespace: Some("modelops-dask-dev".into()),
            metadata: meta(r#"{"type": "SimJob"}"#),
            spec: None,
        })
        .await
        .unwrap()
        .0
}

async fn to(registry: &JobRegistry, job: &str, status: JobStatus) -> Result<(JobState, bool), RegistryError> {
    registry.update_status(&id(job), StatusUpdate::to(status)).await
}

async fn walk(registry: &JobRegistry, job: &str, path: &[JobStatus]) {
    for status in path {
        to(registry, job, *status).await.unwrap();
    }
}

use JobStatus::*;

// 1
#[tokio::test]
async fn register_job() {
    let registry = new_registry();
    let state = register(&registry, "job-1").await;
    assert_eq!(state.status(), Pending);
    assert_eq!(state.get_str("k8s_name"), Some("job-1"));
    assert_eq!(state.get_str("k8s_namespace"), Some("modelops-dask-dev"));
    assert_eq!(state.metadata().get("type").and_then(PyValue::as_str), Some("SimJob"));
    assert!(!state.created_at().is_empty() && !state.updated_at().is_empty());
}

// 2
#[tokio::test]
async fn register_duplicate_job() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    let again = registry
        .register(Registration {
            job_id: Some(id("job-1")),
            ..Registration::default()
        })
        .await;
    assert!(matches!(again, Err(RegistryError::AlreadyExists(_))));
}

// 3
#[tokio::test]
async fn update_status_valid_transitions() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    walk(&registry, "job-1", &[Submitting, Scheduled, Running]).await;
    let update = StatusUpdate {
        results_path: Some("results/job-1/".into()),
        ..StatusUpdate::to(Succeeded)
    };
    let (state, changed) = registry.update_status(&id("job-1"), update).await.unwrap();
    assert!(changed);
    assert_eq!((state.status(), state.get_str("results_path")), (Succeeded, Some("results/job-1/")));
}

// 4
#[tokio::test]
async fn update_status_invalid_transitions() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    assert!(matches!(to(&registry, "job-1", Running).await, Err(RegistryError::InvalidTransition { from: Pending, to: Running, .. })));
    to(&registry, "job-1", Submitting).await.unwrap();
    assert!(matches!(to(&registry, "job-1", Succeeded).await, Err(RegistryError::InvalidTransition { .. })));
}

// 5
#[tokio::test]
async fn update_terminal_state() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    walk(&registry, "job-1", &[Submitting, Scheduled, Running, Succeeded]).await;
    assert!(matches!(to(&registry, "job-1", Failed).await, Err(RegistryError::TerminalState { status: Succeeded, .. })));
    let before = registry.require(&id("job-1")).await.unwrap();
    let (after, changed) = to(&registry, "job-1", Succeeded).await.unwrap();
    assert!(!changed, "succeeded → succeeded is a no-op");
    assert_eq!(after.to_json(), before.to_json(), "and writes nothing");
}

// 6
#[tokio::test]
async fn update_status_with_metadata() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    walk(&registry, "job-1", &[Submitting, Scheduled]).await;
    let update = StatusUpdate {
        k8s_uid: Some("uid-123".into()),
        ..StatusUpdate::to(Running)
    };
    assert_eq!(registry.update_status(&id("job-1"), update).await.unwrap().0.get_str("k8s_uid"), Some("uid-123"));
    register(&registry, "job-2").await;
    walk(&registry, "job-2", &[Submitting, Scheduled]).await;
    let update = StatusUpdate {
        error_message: Some("Pod evicted".into()),
        error_code: Some("EVICTED".into()),
        ..StatusUpdate::to(Failed)
    };
    let state = registry.update_status(&id("job-2"), update).await.unwrap().0;
    assert_eq!((state.get_str("error_message"), state.get_str("error_code")), (Some("Pod evicted"), Some("EVICTED")));
}

// 7
#[tokio::test]
async fn update_progress() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    let state = registry.set_progress(&id("job-1"), Some(5), Some(100)).await.unwrap();
    assert_eq!(state.progress_percent(), Some(5.0));
    let state = registry.set_progress(&id("job-1"), Some(50), None).await.unwrap();
    assert_eq!((state.tasks_completed(), state.tasks_total()), (50, 100));
    walk(&registry, "job-1", &[Submitting, Scheduled, Running, Succeeded]).await;
    let state = registry.set_progress(&id("job-1"), Some(100), None).await.unwrap();
    assert_eq!(state.progress_percent(), Some(100.0), "progress is allowed after succeeded");
}

// 8
#[tokio::test]
async fn get_job() {
    let registry = new_registry();
    assert!(registry.get(&id("nope")).await.unwrap().is_none());
    register(&registry, "job-1").await;
    assert_eq!(registry.get(&id("job-1")).await.unwrap().unwrap().status(), Pending);
}

// 9
#[tokio::test]
async fn list_jobs() {
    let registry = new_registry();
    for job in ["job-1", "job-2", "job-3"] {
        register(&registry, job).await;
    }
    walk(&registry, "job-2", &[Submitting]).await;
    walk(&registry, "job-3", &[Cancelled]).await;
    let all = registry.list(ListQuery::default()).await.unwrap().jobs;
    assert_eq!(all.len(), 3);
    let pending = registry
        .list(ListQuery {
            statuses: vec![Pending],
            ..ListQuery::default()
        })
        .await
        .unwrap()
        .jobs;
    assert_eq!(pending.iter().map(|j| j.job_id().as_str()).collect::<Vec<_>>(), ["job-1"]);
    let two = registry
        .list(ListQuery {
            statuses: vec![Pending, Submitting],
            ..ListQuery::default()
        })
        .await
        .unwrap()
        .jobs;
    assert_eq!(two.len(), 2);
    let limited = registry
        .list(ListQuery {
            limit: 2,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.jobs.len(), 2);
    assert!(limited.next_page_token.is_some());
}

#[tokio::test]
async fn listing_reads_states_the_quick_head_reading_leaves_and_skips_unreadable_ones() {
    let store = Arc::new(MemoryStore::new());
    let registry = JobRegistry::new(Arc::clone(&store) as Arc<dyn crate::store::VersionedStore>, Store::in_memory(), RegistryConfig::default(), &prometheus::Registry::new());
    for job in ["job-1", "job-2"] {
        register(&registry, job).await;
    }
    let stored = |job: &str, created: &str, extra: &str| {
        format!(r#"{{"job_id": "{job}", "status": "running", "created_at": "{created}", "updated_at": "{created}", "metadata": {extra}}}"#)
    };
    // Read whole only: NaN (Python's JSON), a repeated key (the last value counts).
    let nan = stored("job-nan", "2099-01-01T00:00:03+00:00", r#"{"x": NaN}"#);
    let repeated = stored("job-twice", "2099-01-01T00:00:02+00:00", "{}").replacen(r#""status": "running""#, r#""status": "pending", "status": "running""#, 1);
    // Unreadable: a lone surrogate (its head reads, the whole does not), not JSON, a bad status.
    let surrogate = stored("job-lone", "2099-01-01T00:00:01+00:00", r#"{"x": "\ud800"}"#);
    let broken = "{not json".to_owned();
    let bad_status = stored("job-bad", "2099-01-01T00:00:00+00:00", "{}").replace("running", "done");
    for (job, bytes) in [("job-nan", nan), ("job-twice", repeated), ("job-lone", surrogate), ("job-broken", broken), ("job-bad", bad_status)] {
        store.create_if_absent(&format!("{JOBS_PREFIX}{job}/state.json"), bytes.into()).await.unwrap();
    }
    let listed = |limit: usize, page_token: Option<String>| {
        let registry = registry.clone();
        async move { registry.list(ListQuery { limit, page_token, ..ListQuery::default() }).await.unwrap() }
    };
    let all = listed(0, None).await;
    let ids: Vec<String> = all.jobs.iter().map(|j| j.job_id().as_str().to_owned()).collect();
    assert_eq!(ids[..2], ["job-nan", "job-twice"], "newest first: {ids:?}");
    assert_eq!(all.jobs[1].status(), Running, "the repeated key's last value");
    assert_eq!(ids.len(), 4, "the unreadable ones skipped: {ids:?}");
    // Filters see the heads of states read whole too.
    let running = registry.list(ListQuery { statuses: vec![Running], ..ListQuery::default() }).await.unwrap();
    assert_eq!(running.jobs.len(), 2);
    // Pages of one: every readable job once, in order (the unreadable state's page is empty).
    let (mut seen, mut token) = (Vec::new(), None);
    loop {
        let page = listed(1, token).await;
        seen.extend(page.jobs.iter().map(|j| j.job_id().as_str().to_owned()));
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

// 10
#[tokio::test]
async fn list_jobs_by_time() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    let since = |hours: i64| ListQuery {
        since: Some(Utc::now() + chrono::Duration::hours(hours)),
        ..ListQuery::default()
    };
    assert_eq!(registry.list(since(-1)).await.unwrap().jobs.len(), 1);
    assert_eq!(registry.list(since(1)).await.unwrap().jobs.len(), 0);
}

// 11
#[tokio::test]
async fn finalize_job_success() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    walk(&registry, "job-1", &[Submitting, Scheduled, Running]).await;
    let state = registry.finalize(&id("job-1"), Succeeded, Some("results/job-1/".into()), None, None).await.unwrap();
    assert_eq!((state.status(), state.get_str("results_path"), state.get_str("error_message")), (Succeeded, Some("results/job-1/"), None));
}

// 12
#[tokio::test]
async fn finalize_job_failure() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    walk(&registry, "job-1", &[Submitting, Scheduled]).await;
    let state = registry
        .finalize(&id("job-1"), Failed, None, Some("OOM".into()), Some("OOMKilled".into()))
        .await
        .unwrap();
    assert_eq!((state.status(), state.get_str("error_message"), state.get_str("error_code")), (Failed, Some("OOM"), Some("OOMKilled")));
    assert_eq!(state.get_str("results_path"), None);
}

// 13
#[tokio::test]
async fn finalize_non_terminal_is_refused() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    assert!(matches!(registry.finalize(&id("job-1"), Running, None, None, None).await, Err(RegistryError::InvalidArgument(_))));
}

// 14
#[tokio::test]
async fn cancel_job() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    walk(&registry, "job-1", &[Submitting, Scheduled, Running]).await;
    let state = registry.cancel(&id("job-1"), Some("User requested")).await.unwrap();
    assert_eq!(state.status(), Cancelled);
    assert!(state.get_str("error_message").unwrap().contains("Cancelled: User requested"));
    assert!(matches!(to(&registry, "job-1", Running).await, Err(RegistryError::TerminalState { .. })));
}

// 15
#[tokio::test]
async fn count_jobs_by_status() {
    let registry = new_registry();
    for job in ["job-p", "job-r", "job-s", "job-f"] {
        register(&registry, job).await;
    }
    walk(&registry, "job-r", &[Submitting, Scheduled, Running]).await;
    walk(&registry, "job-s", &[Submitting, Scheduled, Running, Succeeded]).await;
    walk(&registry, "job-f", &[Submitting, Failed]).await;
    let counts = registry.count_by_status().await.unwrap();
    assert_eq!(counts.len(), 9, "every status appears");
    for (status, count) in counts {
        let expected = u64::from(matches!(status, Pending | Running | Succeeded | Failed));
        assert_eq!(count, expected, "{status}");
    }
}

// 16
#[tokio::test]
async fn get_active_jobs() {
    let registry = new_registry();
    for job in ["job-p", "job-r", "job-s"] {
        register(&registry, job).await;
    }
    walk(&registry, "job-r", &[Submitting, Scheduled, Running]).await;
    walk(&registry, "job-s", &[Submitting, Scheduled, Running, Succeeded]).await;
    let mut active: Vec<String> = registry.active_jobs().await.unwrap().iter().map(|j| j.job_id().to_string()).collect();
    active.sort();
    assert_eq!(active, ["job-p", "job-r"]);
}

// 17
#[tokio::test]
async fn get_recent_jobs() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    assert_eq!(registry.recent_jobs(24.0).await.unwrap().len(), 1);
    assert!(registry.recent_jobs(0.0).await.unwrap().len() <= 1);
}

// 18
#[tokio::test]
async fn concurrent_conflicting_transitions_have_one_winner() {
    for round in 0..20 {
        let registry = new_registry();
        let job = format!("job-{round}");
        register(&registry, &job).await;
        let (a, b) = tokio::join!(to(&registry, &job, Submitting), to(&registry, &job, Cancelled));
        let winners = [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count();
        assert_eq!(winners, 1, "{a:?} {b:?}");
        let loser = match (a, b) {
            (Ok(_), Err(loser)) | (Err(loser), _) => loser,
            (Ok(_), Ok(_)) => unreachable!("one winner, checked above"),
        };
        assert!(matches!(loser, RegistryError::InvalidTransition { .. } | RegistryError::TerminalState { .. }), "{loser}");
    }
}

// 19
#[tokio::test]
async fn metadata_is_shallow_merged() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    let update = StatusUpdate {
        metadata: Some(meta(r#"{"image": "runner:2", "nested": {"a": 1}}"#)),
        ..StatusUpdate::to(Submitting)
    };
    let state = registry.update_status(&id("job-1"), update).await.unwrap().0;
    let metadata = state.metadata();
    assert_eq!(metadata.keys().collect::<Vec<_>>(), ["type", "image", "nested"]);
    let update = StatusUpdate {
        metadata: Some(meta(r#"{"nested": {"b": 2}}"#)),
        ..StatusUpdate::to(Scheduled)
    };
    let state = registry.update_status(&id("job-1"), update).await.unwrap().0;
    assert_eq!(state.metadata().get("nested"), Some(&PyValue::Object(meta(r#"{"b": 2}"#))), "shallow: replaced, not merged");
}

// 20
#[tokio::test]
async fn job_state_serialization_round_trips() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    walk(&registry, "job-1", &[Submitting, Scheduled]).await;
    let update = StatusUpdate {
        k8s_uid: Some("uid".into()),
        tasks_total: Some(10),
        ..StatusUpdate::to(Running)
    };
    let state = registry.update_status(&id("job-1"), update).await.unwrap().0;
    let again = JobState::from_json(state.to_json().as_bytes()).unwrap();
    assert_eq!(again, state);
    assert_eq!((again.get_str("k8s_uid"), again.tasks_total()), (Some("uid"), 10));
}

// 21
#[tokio::test]
async fn operations_on_unknown_jobs_are_not_found() {
    let registry = new_registry();
    let nope = id("nope");
    assert!(matches!(registry.update_status(&nope, StatusUpdate::to(Submitting)).await, Err(RegistryError::NotFound(_))));
    assert!(matches!(registry.set_progress(&nope, Some(1), None).await, Err(RegistryError::NotFound(_))));
    assert!(matches!(registry.cancel(&nope, None).await, Err(RegistryError::NotFound(_))));
    assert!(matches!(registry.finalize(&nope, Failed, None, None, None).await, Err(RegistryError::NotFound(_))));
    let token = started(&registry);
    assert!(matches!(registry.add_progress(&nope, 1, 0, false).await, Err(RegistryError::NotFound(_))));
    assert!(matches!(registry.add_progress(&nope, 1, 0, true).await, Err(RegistryError::NotFound(_))));
    token.cancel();
}

// --- beyond upstream ---------------------------------------------------------------------

const BUNDLE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn studies_are_expanded_and_stored_as_upstream_specs() {
    let registry = new_registry();
    let study = include_str!("../../../../crates/core/tests/fixtures/upstream/study_plain.json");
    let (state, spec_key) = registry
        .register(Registration {
            job_id: Some(id("job-5b718dc8")),
            spec: Some(SpecInput::Study {
                study_json: study.into(),
                bundle_ref: BUNDLE.into(),
            }),
            ..Registration::default()
        })
        .await
        .unwrap();
    assert_eq!(spec_key.as_deref(), Some("jobs/simulation/job-5b718dc8.json"));
    assert_eq!(state.tasks_total(), 9);
    assert_eq!(state.metadata().get("blob_key").and_then(PyValue::as_str), Some("jobs/simulation/job-5b718dc8.json"));
    let (job_type, json) = registry.get_spec(&id("job-5b718dc8")).await.unwrap();
    assert_eq!(job_type, "simulation");
    assert_eq!(json, include_str!("../../../../crates/core/tests/fixtures/upstream/study_plain.simjob.json"));

    // A different spec under the same id never overwrites the stored one.
    let other = registry
        .register(Registration {
            job_id: Some(id("job-5b718dc8")),
            spec: Some(SpecInput::Study {
                study_json: study.replace("0.3", "0.31"),
                bundle_ref: BUNDLE.into(),
            }),
            ..Registration::default()
        })
        .await;
    assert!(matches!(other, Err(RegistryError::AlreadyExists(_))));
    assert_eq!(registry.get_spec(&id("job-5b718dc8")).await.unwrap().1, json);

    // Spec and id must agree; bad specs name their field.
    let mismatch = registry
        .register(Registration {
            job_id: Some(id("job-other")),
            spec: Some(SpecInput::JobSpecJson(json.clone())),
            ..Registration::default()
        })
        .await;
    assert!(matches!(mismatch, Err(RegistryError::InvalidArgument(_))));
    let bad = registry
        .register(Registration {
            spec: Some(SpecInput::Study {
                study_json: "{\"model\": \"m.x\"}".into(),
                bundle_ref: BUNDLE.into(),
            }),
            ..Registration::default()
        })
        .await;
    assert!(matches!(bad, Err(RegistryError::Spec(_))));
    assert!(registry.get_spec(&id("job-nope")).await.is_err());
}

#[tokio::test]
async fn progress_from_many_reporters_is_coalesced_and_complete() {
    let registry = new_registry();
    let token = started(&registry);
    register(&registry, "job-1").await;
    registry.set_progress(&id("job-1"), None, Some(16 * 100)).await.unwrap();
    let writes_before = registry.inner.metrics.writes.with_label_values(&["progress"]).get();
    let reporters = (0..16).map(|r| {
        let registry = registry.clone();
        async move {
            for i in 0..100 {
                registry.add_progress(&id("job-1"), 1, 0, r % 2 == 0 && i % 3 == 0).await.unwrap();
            }
        }
    });
    futures::future::join_all(reporters).await;
    registry.flush_progress().await;
    let state = registry.require(&id("job-1")).await.unwrap();
    assert_eq!(state.tasks_completed(), 16 * 100, "no increment lost");
    let writes = registry.inner.metrics.writes.with_label_values(&["progress"]).get() - writes_before;
    assert!(writes < 16 * 100 / 10, "{writes} writes for 1600 increments");
    token.cancel();
}

#[tokio::test]
async fn every_write_bumps_the_revision_and_conditional_updates_check_it() {
    let registry = new_registry();
    let state = register(&registry, "job-1").await;
    assert_eq!(revision(&state), 1);
    let state = to(&registry, "job-1", Submitting).await.unwrap().0;
    assert_eq!(revision(&state), 2);
    let stale = StatusUpdate {
        expected_revision: Some(1),
        ..StatusUpdate::to(Scheduled)
    };
    assert!(matches!(
        registry.update_status(&id("job-1"), stale).await,
        Err(RegistryError::RevisionMismatch { expected: 1, actual: 2, .. })
    ));
    let current = StatusUpdate {
        expected_revision: Some(2),
        ..StatusUpdate::to(Scheduled)
    };
    assert_eq!(revision(&registry.update_status(&id("job-1"), current).await.unwrap().0), 3);
}

#[tokio::test]
async fn pages_walk_every_job_once() {
    let registry = new_registry();
    for i in 0..7 {
        register(&registry, &format!("job-{i}")).await;
    }
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = registry
            .list(ListQuery {
                limit: 3,
                page_token: token,
                ..ListQuery::default()
            })
            .await
            .unwrap();
        seen.extend(page.jobs.iter().map(|j| j.job_id().to_string()));
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 7, "{seen:?}");
    assert!(matches!(
        registry
            .list(ListQuery {
                page_token: Some("zz".into()),
                ..ListQuery::default()
            })
            .await,
        Err(RegistryError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn claims_exclude_other_holders_until_released_or_expired() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    let job = id("job-1");
    assert!(registry.claim(&job, "index", "a", Duration::from_secs(60)).await.unwrap().granted);
    assert!(registry.claim(&job, "index", "a", Duration::from_secs(60)).await.unwrap().granted, "renewal");
    let other = registry.claim(&job, "index", "b", Duration::from_secs(60)).await.unwrap();
    assert!(!other.granted);
    assert_eq!(other.holder, "a");
    assert!(!registry.release_claim(&job, "index", "b").await.unwrap(), "only the holder releases");
    assert!(registry.release_claim(&job, "index", "a").await.unwrap());
    assert!(registry.claim(&job, "index", "b", Duration::from_millis(1)).await.unwrap().granted);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(registry.claim(&job, "index", "c", Duration::from_secs(60)).await.unwrap().granted, "an expired claim is taken over");
    assert!(matches!(registry.claim(&id("nope"), "index", "a", Duration::from_secs(1)).await, Err(RegistryError::NotFound(_))));
    assert!(matches!(registry.claim(&job, "../x", "a", Duration::from_secs(1)).await, Err(RegistryError::InvalidArgument(_))));
}

#[tokio::test]
async fn watchers_see_changes_in_order() {
    let registry = new_registry();
    let (_, mut live) = registry.hub().subscribe(0).unwrap();
    register(&registry, "job-1").await;
    walk(&registry, "job-1", &[Submitting, Scheduled]).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = live.recv().await.unwrap();
        seen.push((event.state.status(), event.previous));
    }
    assert_eq!(seen, [(Pending, None), (Submitting, Some(Pending)), (Scheduled, Some(Submitting))]);
    registry.set_index_state(&id("job-1"), IndexState::Done, Some("results/job-1/".into()), None).await.unwrap();
    let event = live.recv().await.unwrap();
    assert_eq!(IndexState::of(&event.state), IndexState::Done);
}

// Hardening: what one request may make the registry hold or store.

#[tokio::test]
async fn a_study_over_the_task_limit_is_refused_before_it_is_expanded() {
    let registry = new_registry();
    let bundle = format!("sha256:{}", "ab".repeat(32));
    let study = |n_replicates: &str| {
        format!(r#"{{"model": "m.x", "scenario": "s", "n_replicates": {n_replicates}, "parameter_sets": [{{"a": 1}}, {{"a": 2}}]}}"#)
    };
    let register_study = |job: &str, study_json: String| {
        registry.register(Registration {
            job_id: Some(id(job)),
            spec: Some(SpecInput::Study {
                study_json,
                bundle_ref: bundle.clone(),
            }),
            ..Registration::default()
        })
    };
    // 2 × 10^12 tasks would need 8 TB to expand: refused at once, naming the limit.
    let err = register_study("job-huge", study("1000000000000")).await.unwrap_err();
    assert!(matches!(err, RegistryError::LimitExceeded { flag: "max-job-tasks", value: Some(2_000_000_000_000), .. }), "{err}");
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::ResourceExhausted);
    // A count that overflows u64 is refused too.
    let err = register_study("job-overflow", study(&u64::MAX.to_string())).await.unwrap_err();
    assert!(matches!(err, RegistryError::LimitExceeded { value: None, .. }), "{err}");
    // Nothing of either was stored; a study within the limit registers.
    assert!(registry.get(&id("job-huge")).await.unwrap().is_none());
    assert!(registry.get_spec(&id("job-huge")).await.is_err());
    let (state, _) = register_study("job-ok", study("3")).await.unwrap();
    assert_eq!(state.tasks_total(), 6);
}

#[tokio::test]
async fn states_over_the_size_limit_are_refused_and_nothing_changes() {
    let registry = new_registry();
    let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(DEFAULT_MAX_STATE_BYTES));
    let err = registry
        .register(Registration {
            job_id: Some(id("job-big")),
            metadata: meta(&big),
            ..Registration::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::LimitExceeded { flag: "max-state-bytes", .. }), "{err}");
    assert!(registry.get(&id("job-big")).await.unwrap().is_none());
    // A status update that would grow a state past the limit leaves it as it was.
    let before = register(&registry, "job-1").await;
    let update = StatusUpdate {
        metadata: Some(meta(&big)),
        ..StatusUpdate::to(Submitting)
    };
    let err = registry.update_status(&id("job-1"), update).await.unwrap_err();
    assert!(matches!(err, RegistryError::LimitExceeded { .. }), "{err}");
    assert_eq!(registry.require(&id("job-1")).await.unwrap().to_json(), before.to_json());
}

#[tokio::test]
async fn task_counters_saturate_instead_of_wrapping_and_are_never_negative() {
    let registry = new_registry();
    let token = started(&registry);
    register(&registry, "job-1").await;
    registry.set_progress(&id("job-1"), Some(i64::MAX), Some(i64::MAX)).await.unwrap();
    assert_eq!(registry.add_progress(&id("job-1"), 1, 1, false).await.unwrap(), (i64::MAX, i64::MAX));
    register(&registry, "job-2").await;
    // Two increments of i64::MAX, coalesced into one write or not, stop at i64::MAX.
    let job2 = id("job-2");
    let (a, b) = tokio::join!(
        registry.add_progress(&job2, i64::MAX, 0, false),
        registry.add_progress(&job2, i64::MAX, 0, false)
    );
    assert_eq!(a.unwrap().0.max(b.unwrap().0), i64::MAX);
    assert_eq!(registry.require(&id("job-2")).await.unwrap().tasks_completed(), i64::MAX);
    // UpdateStatus refuses negative counts as SetProgress does.
    let update = StatusUpdate {
        tasks_completed: Some(-1),
        ..StatusUpdate::to(Submitting)
    };
    let err = registry.update_status(&id("job-2"), update).await.unwrap_err();
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::InvalidArgument);
    assert_eq!(registry.require(&id("job-2")).await.unwrap().status(), Pending);
    token.cancel();
}

#[tokio::test]
async fn claims_longer_than_the_limit_are_refused() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    let err = registry
        .claim(&id("job-1"), "index", "a", Duration::from_secs(u64::from(u32::MAX)))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::LimitExceeded { flag: "max-claim-ttl-seconds", .. }), "{err}");
    // Nothing was claimed: another holder gets it at once.
    assert!(registry.claim(&id("job-1"), "index", "b", DEFAULT_MAX_CLAIM_TTL).await.unwrap().granted);
}

#[tokio::test]
async fn validation_fields_are_set_and_nullable_fields_cleared_as_upstream_does() {
    let registry = new_registry();
    register(&registry, "job-1").await;
    walk(&registry, "job-1", &[Submitting, Scheduled, Running]).await;
    // upstream `transition_to_validating`
    let validating = StatusUpdate {
        validation: ValidationFields {
            started_at: Some("2026-11-29T00:00:00+00:00".into()),
            attempts: Some(1),
            ..ValidationFields::default()
        },
        error_message: Some("transient".into()),
        ..StatusUpdate::to(Validating)
    };
    registry.update_status(&id("job-1"), validating).await.unwrap();
    // upstream `finalize_with_validation` (partial), clearing the message on the way
    let finalized = StatusUpdate {
        validation: ValidationFields {
            completed_at: Some("2026-11-29T00:01:00+00:00".into()),
            tasks_verified: Some(3),
            verified_outputs: Some(vec!["a".into(), "b".into(), "c".into()]),
            missing_outputs: Some(vec!["d".into()]),
            last_error: Some("1 output missing".into()),
            ..ValidationFields::default()
        },
        clear: vec!["error_message".into()],
        ..StatusUpdate::to(Partial)
    };
    let (state, _) = registry.update_status(&id("job-1"), finalized).await.unwrap();
    assert_eq!(state.get_str("validation_started_at"), Some("2026-11-29T00:00:00+00:00"));
    assert_eq!(state.get_str("validation_completed_at"), Some("2026-11-29T00:01:00+00:00"));
    assert_eq!(state.get_count("validation_attempts"), 1);
    assert_eq!(state.get_count("tasks_verified"), 3);
    assert_eq!(state.get("missing_outputs"), Some(&PyValue::List(vec!["d".into()])));
    assert_eq!(state.get_str("last_validation_error"), Some("1 output missing"));
    assert_eq!(state.get("error_message"), Some(&PyValue::Null), "cleared");
    // Only upstream's nullable whitelisted fields can be cleared; nothing changes otherwise.
    let bad = StatusUpdate {
        clear: vec!["status".into()],
        ..StatusUpdate::to(Partial)
    };
    let err = registry.update_status(&id("job-1"), bad).await.unwrap_err();
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::InvalidArgument);
    assert_eq!(registry.require(&id("job-1")).await.unwrap().to_json(), state.to_json());
}

#[tokio::test]
async fn a_spec_blob_that_is_a_fifo_or_a_link_is_refused_not_waited_on() {
    // Submitters write the jobs store too: a spec there may be anything. The registry's store is
    // opened confined (as `mops serve` opens it), so `ReadJobSpec` neither follows a link nor
    // waits on a FIFO, and its error names the key, not the server's directory.
    let dir = tempfile::tempdir().unwrap();
    let specs = Store::open_confined(&format!("file://{}", dir.path().display())).unwrap();
    let registry = JobRegistry::new(Arc::new(MemoryStore::new()), specs, RegistryConfig::default(), &prometheus::Registry::new());
    std::fs::create_dir_all(dir.path().join("jobs/simulation")).unwrap();
    let fifo = dir.path().join("jobs/simulation/job-fifo.json");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::fs::write(dir.path().join("elsewhere.json"), b"{}").unwrap();
    std::os::unix::fs::symlink(dir.path().join("elsewhere.json"), dir.path().join("jobs/simulation/job-link.json")).unwrap();
    for job in ["job-fifo", "job-link"] {
        register(&registry, job).await;
        // A guard, not a synchronisation: a reader blocked on the FIFO would never return.
        let read = tokio::time::timeout(Duration::from_secs(30), registry.read_spec(&id(job))).await.expect("refused at once");
        let error = tonic::Status::from(read.err().expect("refused"));
        assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
        assert!(error.message().contains(job) && !error.message().contains(&dir.path().display().to_string()), "{error:?}");
    }
}

/// The next event of a watch, within 10 s.
async fn next_event(watch: &mut futures::stream::BoxStream<'static, Result<crate::watch::JobEvent, RegistryError>>) -> crate::watch::JobEvent {
    use futures::StreamExt as _;
    tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap().unwrap()
}

#[tokio::test]
async fn on_the_embedded_store_a_watch_resumes_its_position_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = |dir: std::path::PathBuf| async move {
        let store = crate::store::embedded::EmbeddedStore::open(&dir).await.unwrap();
        let registry = JobRegistry::new(Arc::new(store), Store::in_memory(), RegistryConfig::default(), &prometheus::Registry::new());
        let (token, tracker) = (tokio_util::sync::CancellationToken::new(), tokio_util::task::TaskTracker::new());
        registry.start(token.clone(), &tracker);
        (registry, token, tracker)
    };
    let (registry, token, tracker) = open(dir.path().to_owned()).await;
    register(&registry, "job-1").await;
    let mut watch = registry.watch(0, false, token.clone()).await.unwrap();
    register(&registry, "job-2").await;
    // job-1 comes too when the store's feed had not delivered it yet.
    let mut seen = next_event(&mut watch).await;
    if seen.state.job_id().as_str() == "job-1" {
        seen = next_event(&mut watch).await;
    }
    assert_eq!((seen.state.job_id().as_str(), seen.replayed), ("job-2", false));
    let position = seen.seq;
    walk(&registry, "job-2", &[Submitting]).await;
    drop(watch);
    token.cancel();
    tracker.close();
    tracker.wait().await;
    drop(registry);

    // Another process on the same file, later: the position still means the same change.
    let (registry, token, _tracker) = open(dir.path().to_owned()).await;
    register(&registry, "job-3").await;
    let mut watch = registry.watch(position, false, token.clone()).await.unwrap();
    let resumed = [next_event(&mut watch).await, next_event(&mut watch).await];
    let resumed: Vec<_> = resumed.iter().map(|e| (e.state.job_id().as_str().to_owned(), e.state.status(), e.seq > position)).collect();
    assert_eq!(resumed, [("job-2".to_owned(), Submitting, true), ("job-3".to_owned(), Pending, true)]);
}

#[tokio::test]
async fn on_an_object_store_a_watch_resumes_on_another_replica_with_what_changed_since_its_position() {
    // Two replicas (and a direct writer, as the Python ModelOps) on one object store.
    let objects = Store::in_memory();
    let backend = || crate::store::object::ObjectStoreBackend::new(objects.clone()).with_poll_interval(Duration::from_millis(20));
    let replica = || {
        let registry = JobRegistry::new(Arc::new(backend()), Store::in_memory(), RegistryConfig::default(), &prometheus::Registry::new());
        let token = started(&registry);
        (registry, token)
    };
    let ((a, token), (b, _b_token)) = (replica(), replica());
    register(&a, "job-1").await;
    let between = crate::watch::micros(std::time::SystemTime::now());
    tokio::time::sleep(Duration::from_millis(5)).await;

    let mut watch = a.watch(0, false, token.clone()).await.unwrap();
    register(&a, "job-2").await;
    let seen = next_event(&mut watch).await;
    assert_eq!(seen.state.job_id().as_str(), "job-2");
    let position = seen.seq;
    assert!(position >= between - 11_000_000 && position <= between, "a time on the store's clock, less the margin");
    drop(watch);
    // While the watcher is away: a transition on A, and a job written straight into the store.
    walk(&a, "job-2", &[Submitting]).await;
    let direct = register(&new_registry(), "job-3").await;
    backend().create_if_absent("jobs/job-3/state.json", bytes::Bytes::from(direct.to_json())).await.unwrap().unwrap();

    // B never handed out this position, and may not have polled since: it asks the store.
    let mut resumed = b.watch(position, false, token.clone()).await.unwrap();
    let mut got: Vec<(String, JobStatus, bool)> = Vec::new();
    while !got.iter().any(|(job, ..)| job == "job-3") || !got.iter().any(|(job, status, _)| job == "job-2" && *status == Submitting) {
        let event = next_event(&mut resumed).await;
        got.push((event.state.job_id().as_str().to_owned(), event.state.status(), event.replayed));
    }
    assert!(got.iter().all(|(.., replayed)| !replayed), "changes, not a replay: {got:?}");
    assert!(!got.iter().any(|(job, status, _)| job == "job-2" && *status == Pending), "nothing older than what was sent: {got:?}");
    // A position past job-1's write does not bring it again.
    let mut later = b.watch(between, false, token.clone()).await.unwrap();
    let mut jobs = vec![next_event(&mut later).await.state.job_id().as_str().to_owned(), next_event(&mut later).await.state.job_id().as_str().to_owned()];
    jobs.sort();
    assert_eq!(jobs, ["job-2", "job-3"]);
    // Live events follow on B, A's writes included.
    walk(&a, "job-3", &[Submitting]).await;
    let live = next_event(&mut later).await;
    assert_eq!((live.state.job_id().as_str(), live.state.status()), ("job-3", Submitting));
    // A position that is not a time on any clock (an etcd revision, an old counter) is refused.
    for foreign in [5, 1 << 62] {
        assert!(matches!(b.watch(foreign, false, token.clone()).await.map(|_| ()), Err(RegistryError::WatchElsewhere { .. })));
    }
}

/// The embedded store, unreachable for its first few revision reads (a replica started while
/// etcd is down).
#[derive(Debug)]
struct DownAtFirst {
    store: crate::store::embedded::EmbeddedStore,
    failures_left: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl VersionedStore for DownAtFirst {
    async fn get(&self, key: &str) -> Result<Option<crate::store::Versioned>, crate::store::StoreError> {
        self.store.get(key).await
    }
    async fn create_if_absent(&self, key: &str, value: bytes::Bytes) -> Result<Option<crate::store::Version>, crate::store::StoreError> {
        self.store.create_if_absent(key, value).await
    }
    async fn put_if_version(&self, key: &str, value: bytes::Bytes, expected: &crate::store::Version) -> Result<Option<crate::store::Version>, crate::store::StoreError> {
        self.store.put_if_version(key, value, expected).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, crate::store::StoreError> {
        self.store.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<bool, crate::store::StoreError> {
        self.store.delete(key).await
    }
    fn orders_revisions(&self) -> bool {
        true
    }
    async fn current_revision(&self) -> Result<Option<u64>, crate::store::StoreError> {
        use std::sync::atomic::Ordering;
        if self.failures_left.load(Ordering::SeqCst) > 0 {
            self.failures_left.fetch_sub(1, Ordering::SeqCst);
            return Err(crate::store::StoreError::Unavailable("down".into()));
        }
        self.store.current_revision().await
    }
    fn revision_feed(&self, prefix: &str, after: Option<u64>) -> Option<futures::stream::BoxStream<'static, Result<crate::store::RevisionFeedItem, crate::store::StoreError>>> {
        self.store.revision_feed(prefix, after)
    }
    fn describe(&self) -> String {
        "down at first".into()
    }
}

#[tokio::test]
async fn a_replica_started_while_its_store_is_down_still_resumes_earlier_positions() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::embedded::EmbeddedStore::open(dir.path()).await.unwrap();
    // Changes made before this replica started, through another (the same file here).
    let earlier = JobRegistry::new(Arc::new(store.clone()), Store::in_memory(), RegistryConfig::default(), &prometheus::Registry::new());
    register(&earlier, "job-1").await;
    register(&earlier, "job-2").await;
    let flaky = DownAtFirst {
        store,
        failures_left: std::sync::atomic::AtomicU32::new(3),
    };
    let registry = JobRegistry::new(Arc::new(flaky), Store::in_memory(), RegistryConfig::default(), &prometheus::Registry::new());
    let token = started(&registry);
    // Position 1 (job-1's registration) comes from before the replica started; once the store
    // answers, the replica follows from its window and resumes it.
    let mut watch = registry.watch(1, false, token.clone()).await.unwrap();
    let resumed = next_event(&mut watch).await;
    assert_eq!((resumed.state.job_id().as_str(), resumed.seq), ("job-2", 2));
}
