//! The object-store backend: Azure Blob (If-Match on the ETag), S3 (If-Match) and GCS
//! (generation), through object_store's conditional puts. It reads and writes the same keys as
//! upstream's `AzureVersionedStore` (container `job-registry`, key `jobs/{job_id}/state.json`), so
//! a registry written by the Python ModelOps is served as is.
//!
//! Object stores have no change feed; [`ObjectStoreBackend::changes`] polls listings and reports
//! objects whose ETag changed. Each object's `Last-Modified` (the store's clock) answers
//! [`VersionedStore::modified_since`], which is what lets a watch resume on any replica.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use futures::stream::BoxStream;
use modelops_core::store::Store;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{ChangeFeedItem, StoreChange, StoreError, Version, Versioned, VersionedStore};

/// How often [`ObjectStoreBackend::changes`] lists the prefix.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A versioned store on an object store with conditional puts.
#[derive(Debug, Clone)]
pub struct ObjectStoreBackend {
    store: Store,
    poll_interval: Duration,
}

impl ObjectStoreBackend {
    /// Wraps an opened store.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }

    /// The objects whose keys start with `prefix` (object stores list by directory, so the
    /// prefix's directory is listed and filtered).
    async fn list_metas(&self, prefix: &str) -> Result<Vec<object_store::ObjectMeta>, StoreError> {
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .object_store
            .list(list_dir(prefix).as_ref())
            .try_collect()
            .await
            .map_err(map_error)?;
        Ok(metas.into_iter().filter(|meta| meta.location.as_ref().starts_with(prefix)).collect())
    }

    /// Sets how often the change feed polls.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }
}

fn path(key: &str) -> Result<Path, StoreError> {
    Path::parse(key).map_err(|e| StoreError::InvalidKey {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// ETag and generation, joined, as one opaque token.
fn token(e_tag: Option<String>, version: Option<String>) -> Version {
    Version::new(format!("{}\n{}", e_tag.unwrap_or_default(), version.unwrap_or_default()))
}

fn untoken(version: &Version) -> UpdateVersion {
    let (e_tag, generation) = version.as_str().split_once('\n').unwrap_or((version.as_str(), ""));
    UpdateVersion {
        e_tag: (!e_tag.is_empty()).then(|| e_tag.to_owned()),
        version: (!generation.is_empty()).then(|| generation.to_owned()),
    }
}

fn map_error(error: object_store::Error) -> StoreError {
    match error {
        object_store::Error::InvalidPath { source } => StoreError::InvalidKey {
            key: String::new(),
            reason: source.to_string(),
        },
        object_store::Error::NotSupported { .. } | object_store::Error::NotImplemented { .. } => {
            StoreError::Backend(format!("this object store cannot do conditional updates: {error}"))
        }
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            StoreError::Backend(error.to_string())
        }
        // Everything else from a remote store is transport, throttling or a server error.
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// The directory part of a string prefix, for listing (object stores list by directory).
fn list_dir(prefix: &str) -> Option<Path> {
    let dir = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
    (!dir.is_empty()).then(|| Path::from(dir))
}

#[async_trait]
impl VersionedStore for ObjectStoreBackend {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let result = match self.store.object_store.get(&path(key)?).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(map_error(e)),
        };
        let version = token(result.meta.e_tag.clone(), result.meta.version.clone());
        let value = result.bytes().await.map_err(map_error)?;
        Ok(Some(Versioned { value, version }))
    }

    async fn create_if_absent(&self, key: &str, value: Bytes) -> Result<Option<Version>, StoreError> {
        let options = PutOptions::from(PutMode::Create);
        match self.store.object_store.put_opts(&path(key)?, PutPayload::from_bytes(value), options).await {
            Ok(result) => Ok(Some(token(result.e_tag, result.version))),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(None),
            Err(e) => Err(map_error(e)),
        }
    }

    async fn put_if_version(&self, key: &str, value: Bytes, expected: &Version) -> Result<Option<Version>, StoreError> {
        let options = PutOptions::from(PutMode::Update(untoken(expected)));
        match self.store.object_store.put_opts(&path(key)?, PutPayload::from_bytes(value), options).await {
            Ok(result) => Ok(Some(token(result.e_tag, result.version))),
            Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_error(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.list_metas(prefix).await?.into_iter().map(|meta| meta.location.to_string()).collect())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let location = path(key)?;
        match self.store.object_store.head(&location).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(map_error(e)),
        }
        match self.store.object_store.delete(&location).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(map_error(e)),
        }
    }

    fn changes(&self, prefix: &str) -> Option<BoxStream<'static, Result<ChangeFeedItem, StoreError>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let backend = self.clone();
        let prefix = prefix.to_owned();
        tokio::spawn(async move {
            // None until a first poll succeeds: that one reports every key.
            let mut known: Option<HashMap<String, String>> = None;
            loop {
                let before = std::time::SystemTime::now();
                match poll_once(&backend, &prefix, known.as_ref()).await {
                    Ok((changes, seen)) => {
                        for change in changes {
                            if tx.send(Ok(ChangeFeedItem::Changed(change))).await.is_err() {
                                return;
                            }
                        }
                        known = Some(seen);
                        if tx.send(Ok(ChangeFeedItem::CaughtUp { before })).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(backend.poll_interval) => {}
                    () = tx.closed() => return,
                }
            }
        });
        Some(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    fn keeps_modification_times(&self) -> bool {
        true
    }

    async fn modified_since(&self, prefix: &str, since: std::time::SystemTime) -> Result<Option<Vec<String>>, StoreError> {
        let since = chrono::DateTime::<chrono::Utc>::from(since);
        let metas = self.list_metas(prefix).await?;
        Ok(Some(metas.into_iter().filter(|meta| meta.last_modified >= since).map(|meta| meta.location.to_string()).collect()))
    }

    fn describe(&self) -> String {
        self.store.url.clone()
    }
}

/// How many objects a poll reads at once.
const POLL_READS: usize = 16;

/// One listing: the keys whose ETag changed since `known` (every key when there is no `known`
/// yet), with their values, and the keys that disappeared; and what the listing saw.
async fn poll_once(
    backend: &ObjectStoreBackend,
    prefix: &str,
    known: Option<&HashMap<String, String>>,
) -> Result<(Vec<StoreChange>, HashMap<String, String>), StoreError> {
    use futures::StreamExt as _;
    let metas = backend.list_metas(prefix).await?;
    let mut seen = HashMap::with_capacity(metas.len());
    let mut changed = Vec::new();
    for meta in metas {
        let key = meta.location.to_string();
        let e_tag = meta.e_tag.clone().unwrap_or_else(|| meta.last_modified.to_rfc3339());
        if known.is_none_or(|known| known.get(&key) != Some(&e_tag)) {
            changed.push(key.clone());
        }
        seen.insert(key, e_tag);
    }
    let read: Vec<Result<StoreChange, StoreError>> = futures::stream::iter(changed)
        .map(|key| async move {
            let value = backend.get(&key).await?;
            Ok(StoreChange { key, value })
        })
        .buffered(POLL_READS)
        .collect()
        .await;
    let mut changes = read.into_iter().collect::<Result<Vec<_>, _>>()?;
    if let Some(known) = known {
        for gone in known.keys().filter(|k| !seen.contains_key(*k)) {
            changes.push(StoreChange {
                key: gone.clone(),
                value: None,
            });
        }
    }
    Ok((changes, seen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn conformance_on_object_stores_in_memory() {
        // object_store's InMemory implements conditional puts like Azure and S3 do.
        let backend = ObjectStoreBackend::new(Store::in_memory());
        super::super::conformance::run_all(&backend, "ns/").await;
    }

    #[tokio::test]
    async fn change_feed_reports_writes_and_deletes() {
        let backend = ObjectStoreBackend::new(Store::in_memory()).with_poll_interval(Duration::from_millis(20));
        backend.create_if_absent("jobs/old/state.json", "0".into()).await.unwrap();
        let mut feed = backend.changes("jobs/").unwrap();
        let mut next = async || tokio::time::timeout(Duration::from_secs(5), feed.next()).await.unwrap().unwrap().unwrap();
        // The first poll reports what exists, then that it caught up with what came before it.
        let ChangeFeedItem::Changed(change) = next().await else { panic!("the existing key first") };
        assert_eq!((change.key.as_str(), change.value.unwrap().value.as_ref()), ("jobs/old/state.json", &b"0"[..]));
        let ChangeFeedItem::CaughtUp { before: first_poll } = next().await else { panic!("caught up") };
        backend.create_if_absent("jobs/new/state.json", "1".into()).await.unwrap();
        let change = loop {
            match next().await {
                ChangeFeedItem::Changed(change) => break change,
                ChangeFeedItem::CaughtUp { before } => assert!(before >= first_poll),
            }
        };
        assert_eq!(change.key, "jobs/new/state.json");
        assert_eq!(change.value.unwrap().value, "1");
        backend.delete("jobs/old/state.json").await.unwrap();
        let change = loop {
            if let ChangeFeedItem::Changed(change) = next().await {
                break change;
            }
        };
        assert_eq!((change.key.as_str(), change.value), ("jobs/old/state.json", None));
    }

    #[tokio::test]
    async fn modified_since_answers_by_the_store_clock() {
        let backend = ObjectStoreBackend::new(Store::in_memory());
        backend.create_if_absent("jobs/a/state.json", "a".into()).await.unwrap();
        let between = std::time::SystemTime::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        backend.create_if_absent("jobs/b/state.json", "b".into()).await.unwrap();
        let since = |at| backend.modified_since("jobs/", at);
        assert_eq!(since(between).await.unwrap().unwrap(), ["jobs/b/state.json"]);
        let mut all = since(std::time::UNIX_EPOCH).await.unwrap().unwrap();
        all.sort();
        assert_eq!(all, ["jobs/a/state.json", "jobs/b/state.json"]);
    }

    #[test]
    fn tokens_round_trip() {
        let v = token(Some("\"abc\"".into()), Some("17".into()));
        let u = untoken(&v);
        assert_eq!((u.e_tag.as_deref(), u.version.as_deref()), (Some("\"abc\""), Some("17")));
        let u = untoken(&token(Some("e".into()), None));
        assert_eq!((u.e_tag.as_deref(), u.version), (Some("e"), None));
    }
}
