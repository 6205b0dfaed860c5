//! One conformance suite for every [`VersionedStore`] backend: upstream's versioned-store tests
//! (UPSTREAM-FORMAT.md §10) plus concurrent creates and conflicting writers. Backends run it from
//! their unit tests (memory, embedded) or from the integration tests against the real service
//! (etcd, Azurite, moto). Every key lives under `ns`, so shared backends can run it in parallel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use modelops_core::pyjson::{self, PyObject, PyValue};

use super::{Versioned, VersionedStore};
use crate::retry::{self, RetryError, RetryPolicy, Update};

/// Runs every check against `store`, with keys under `ns` (e.g. `"conformance-1/"`).
pub async fn run_all(store: &dyn VersionedStore, ns: &str) {
    create_if_absent_keeps_the_first_value(store, ns).await;
    get_of_a_missing_key_is_none(store, ns).await;
    cas_update_succeeds_and_changes_the_version(store, ns).await;
    stale_versions_are_rejected(store, ns).await;
    list_and_scan_match_string_prefixes(store, ns).await;
    delete_reports_whether_the_key_existed(store, ns).await;
    concurrent_creates_have_exactly_one_winner(store, ns, 20).await;
    concurrent_updates_with_retry_lose_nothing(store, ns, 10).await;
    raw_concurrent_increments_count_exactly(store, ns).await;
    retry_helpers_behave_like_upstream(store, ns).await;
    clearing_empties_the_namespace(store, ns).await;
}

fn json(bytes: &[u8]) -> PyObject {
    pyjson::parse(bytes).expect("valid JSON").as_object().expect("object").clone()
}

fn to_bytes(object: &PyObject) -> Bytes {
    Bytes::from(pyjson::to_indent2(&PyValue::Object(object.clone())))
}

/// Upstream test 1.
pub async fn create_if_absent_keeps_the_first_value(store: &dyn VersionedStore, ns: &str) {
    let key = format!("{ns}jobs/create/state.json");
    assert!(store.create_if_absent(&key, "first".into()).await.unwrap().is_some());
    assert!(store.create_if_absent(&key, "second".into()).await.unwrap().is_none());
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, "first");
}

/// Upstream test 2.
pub async fn get_of_a_missing_key_is_none(store: &dyn VersionedStore, ns: &str) {
    assert!(store.get(&format!("{ns}jobs/none/state.json")).await.unwrap().is_none());
}

/// Upstream test 3.
pub async fn cas_update_succeeds_and_changes_the_version(store: &dyn VersionedStore, ns: &str) {
    let key = format!("{ns}jobs/cas/state.json");
    let v1 = store.create_if_absent(&key, "v1".into()).await.unwrap().unwrap();
    let read = store.get(&key).await.unwrap().unwrap();
    assert_eq!(read.version, v1);
    let v2 = store.put_if_version(&key, "v2".into(), &v1).await.unwrap().expect("current version wins");
    assert_ne!(v1, v2);
    let read = store.get(&key).await.unwrap().unwrap();
    assert_eq!((read.value.as_ref(), &read.version), (&b"v2"[..], &v2));
}

/// Upstream test 4, and a put on a missing key.
pub async fn stale_versions_are_rejected(store: &dyn VersionedStore, ns: &str) {
    let key = format!("{ns}jobs/stale/state.json");
    let v1 = store.create_if_absent(&key, "v1".into()).await.unwrap().unwrap();
    let v2 = store.put_if_version(&key, "update-1".into(), &v1).await.unwrap().unwrap();
    assert!(store.put_if_version(&key, "update-2".into(), &v1).await.unwrap().is_none());
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, "update-1");
    assert!(store.put_if_version(&format!("{ns}jobs/missing/state.json"), "x".into(), &v2).await.unwrap().is_none());
    assert!(store.get(&format!("{ns}jobs/missing/state.json")).await.unwrap().is_none(), "a failed put creates nothing");
}

/// Upstream test 5, with string-prefix (not directory) semantics.
pub async fn list_and_scan_match_string_prefixes(store: &dyn VersionedStore, ns: &str) {
    let base = format!("{ns}list/");
    for key in ["jobs/a/state.json", "jobs/ab/state.json", "events/a/chunk_0.json"] {
        store.create_if_absent(&format!("{base}{key}"), key.into()).await.unwrap().unwrap();
    }
    let mut all = store.list(&base).await.unwrap();
    all.sort();
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(store.list(&format!("{base}jobs/")).await.unwrap().len(), 2);
    assert_eq!(store.list(&format!("{base}events/")).await.unwrap().len(), 1);
    let mut a = store.list(&format!("{base}jobs/a")).await.unwrap();
    a.sort();
    assert_eq!(a, [format!("{base}jobs/a/state.json"), format!("{base}jobs/ab/state.json")]);
    let scanned = store.scan(&format!("{base}jobs/")).await.unwrap();
    assert_eq!(scanned.len(), 2);
    for (key, Versioned { value, version }) in scanned {
        assert!(key.ends_with(std::str::from_utf8(&value).unwrap()), "{key}");
        assert_eq!(store.get(&key).await.unwrap().unwrap().version, version);
    }
}

/// Upstream test 6.
pub async fn delete_reports_whether_the_key_existed(store: &dyn VersionedStore, ns: &str) {
    let key = format!("{ns}jobs/delete/state.json");
    store.create_if_absent(&key, "x".into()).await.unwrap().unwrap();
    assert!(store.delete(&key).await.unwrap());
    assert!(store.get(&key).await.unwrap().is_none());
    assert!(!store.delete(&key).await.unwrap());
}

/// `n` concurrent creates of one key: exactly one wins and its value is stored.
pub async fn concurrent_creates_have_exactly_one_winner(store: &dyn VersionedStore, ns: &str, n: usize) {
    let key = format!("{ns}jobs/race/state.json");
    let attempts = (0..n).map(|i| {
        let key = key.clone();
        async move { store.create_if_absent(&key, Bytes::from(format!("writer-{i}"))).await.unwrap().map(|_| i) }
    });
    let winners: Vec<usize> = join_all(attempts).await.into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let stored = store.get(&key).await.unwrap().unwrap();
    assert_eq!(stored.value, format!("writer-{}", winners[0]));
}

fn counter_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 60,
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(100),
    }
}

/// Upstream test 7: `n` writers increment one JSON counter and append to a list through
/// `update_with_retry`; nothing is lost.
pub async fn concurrent_updates_with_retry_lose_nothing(store: &dyn VersionedStore, ns: &str, n: usize) {
    let key = format!("{ns}jobs/counter/state.json");
    store
        .create_if_absent(&key, Bytes::from_static(b"{\"count\": 0, \"entries\": []}"))
        .await
        .unwrap()
        .unwrap();
    let conflicts = Arc::new(AtomicU32::new(0));
    let writers = (0..n).map(|i| {
        let key = key.clone();
        let conflicts = Arc::clone(&conflicts);
        async move {
            retry::update_with_retry(
                store,
                &key,
                counter_policy(),
                |current| -> Result<_, std::convert::Infallible> {
                    let mut object = json(&current.value);
                    let count = object.get("count").and_then(PyValue::as_i64).unwrap();
                    object.insert("count", (count + 1).into());
                    let mut entries = object.get("entries").and_then(PyValue::as_list).unwrap().to_vec();
                    entries.push(PyValue::Int(i as i64));
                    object.insert("entries", PyValue::List(entries));
                    Ok(Update::Write(to_bytes(&object), ()))
                },
                || {
                    conflicts.fetch_add(1, Ordering::Relaxed);
                },
            )
            .await
            .unwrap()
        }
    });
    join_all(writers).await;
    let object = json(&store.get(&key).await.unwrap().unwrap().value);
    assert_eq!(object.get("count").and_then(PyValue::as_i64), Some(n as i64));
    let mut entries: Vec<i64> = object.get("entries").and_then(PyValue::as_list).unwrap().iter().filter_map(PyValue::as_i64).collect();
    entries.sort_unstable();
    assert_eq!(entries, (0..n as i64).collect::<Vec<_>>());
}

/// Upstream test 13, made exact: raw get/put increments from 10 tasks; the stored value equals
/// the number of puts that succeeded (no lost or phantom write).
pub async fn raw_concurrent_increments_count_exactly(store: &dyn VersionedStore, ns: &str) {
    let key = format!("{ns}jobs/raw/state.json");
    store.create_if_absent(&key, "0".into()).await.unwrap().unwrap();
    let tasks = (0..10).map(|_| {
        let key = key.clone();
        async move {
            let mut succeeded = 0u64;
            for _ in 0..10 {
                let current = store.get(&key).await.unwrap().unwrap();
                let n: u64 = std::str::from_utf8(&current.value).unwrap().parse().unwrap();
                if store.put_if_version(&key, Bytes::from((n + 1).to_string()), &current.version).await.unwrap().is_some() {
                    succeeded += 1;
                }
            }
            succeeded
        }
    });
    let succeeded: u64 = join_all(tasks).await.into_iter().sum();
    let stored: u64 = std::str::from_utf8(&store.get(&key).await.unwrap().unwrap().value).unwrap().parse().unwrap();
    assert!(succeeded > 0);
    assert_eq!(stored, succeeded);
}

/// Upstream tests 8–12: the retry helpers.
pub async fn retry_helpers_behave_like_upstream(store: &dyn VersionedStore, ns: &str) {
    let key = format!("{ns}jobs/retry/state.json");
    assert!(retry::create_with_retry(store, &key, Bytes::from_static(b"{\"value\": 1}"), RetryPolicy::default()).await.unwrap());
    assert!(!retry::create_with_retry(store, &key, Bytes::from_static(b"{\"value\": 9}"), RetryPolicy::default()).await.unwrap());

    let increment = |current: &Versioned| -> Result<Update<i64>, String> {
        let mut object = json(&current.value);
        let value = object.get("value").and_then(PyValue::as_i64).unwrap() + 1;
        object.insert("value", value.into());
        Ok(Update::Write(to_bytes(&object), value))
    };
    let (value, _) = retry::update_with_retry(store, &key, RetryPolicy::default(), increment, || {}).await.unwrap();
    assert_eq!(value, 2);
    assert_eq!(json(&store.get(&key).await.unwrap().unwrap().value).get("value"), Some(&PyValue::Int(2)));

    let missing = retry::update_with_retry(store, &format!("{ns}jobs/nope/state.json"), RetryPolicy::default(), increment, || {}).await;
    assert!(matches!(missing, Err(RetryError::NotFound(k)) if k.ends_with("nope/state.json")));

    let mut calls = 0;
    let refused = retry::update_with_retry(
        store,
        &key,
        RetryPolicy::default(),
        |_| -> Result<Update<()>, String> {
            calls += 1;
            Err("bad value".into())
        },
        || {},
    )
    .await;
    assert!(matches!(refused, Err(RetryError::Update(ref m)) if m == "bad value"));
    assert_eq!(calls, 1, "update errors are not retried");
    assert_eq!(json(&store.get(&key).await.unwrap().unwrap().value).get("value"), Some(&PyValue::Int(2)));

    // Non-JSON bytes are the JSON layer's problem: the store returns them as they are.
    let raw = format!("{ns}jobs/raw-bytes/state.json");
    store.create_if_absent(&raw, Bytes::from_static(b"\xffnot json")).await.unwrap().unwrap();
    assert!(pyjson::parse(&store.get(&raw).await.unwrap().unwrap().value).is_err());
}

/// Upstream test 14 (`clear`): deleting everything under the namespace leaves nothing listed.
pub async fn clearing_empties_the_namespace(store: &dyn VersionedStore, ns: &str) {
    for key in store.list(ns).await.unwrap() {
        assert!(store.delete(&key).await.unwrap(), "{key}");
    }
    assert!(store.list(ns).await.unwrap().is_empty());
    assert!(store.get(&format!("{ns}jobs/create/state.json")).await.unwrap().is_none());
}

