//! The embedded store: one redb file (`{dir}/registry.redb`), durable (every commit is synced),
//! for a single `mops serve` process. redb serialises writers, so compare-and-swap is a check and
//! an insert inside one write transaction. Versions come from one global sequence, kept in the
//! file, which is also the store's revision order: a compacted change log (each key's last
//! revision, deletions included) lets a feed start after any earlier revision, so watch positions
//! survive a restart of the process.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::broadcast;

use super::{RevisionFeedItem, StoreError, Version, Versioned, VersionedStore};

const ENTRIES: TableDefinition<'static, &str, (u64, &[u8])> = TableDefinition::new("entries");
const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");
/// The compacted change log: revision → the key written (or deleted) at it, one row per key (its
/// last revision).
const CHANGES: TableDefinition<'static, u64, &str> = TableDefinition::new("changes");
/// Deleted keys → the revision of their deletion (their row in the change log), until written again.
const TOMBSTONES: TableDefinition<'static, &str, u64> = TableDefinition::new("tombstones");
const SEQUENCE: &str = "sequence";

/// How many committed changes a feed may fall behind before it ends (and is resumed from the log).
const FEED_CAPACITY: usize = 1024;

/// One committed change, as feeds receive it.
#[derive(Debug, Clone)]
struct Committed {
    revision: u64,
    key: Arc<str>,
    value: Option<Bytes>,
}

impl Committed {
    fn into_feed_item(self) -> RevisionFeedItem {
        RevisionFeedItem::Change {
            key: self.key.to_string(),
            value: self.value,
            revision: self.revision,
        }
    }
}

/// A versioned store in a local redb file.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    /// Held from a write's transaction to its announcement, so feeds get commits in order.
    writing: Arc<Mutex<()>>,
    committed: broadcast::Sender<Committed>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("embedded store: {e}"))
}

fn version(sequence: u64) -> Version {
    Version::new(sequence.to_string())
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in directory `dir`.
    pub async fn open(dir: &Path) -> Result<Self, StoreError> {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| backend(format!("cannot create {}: {e}", dir.display())))?;
            let path = dir.join("registry.redb");
            let db = Database::create(&path).map_err(|e| backend(format!("cannot open {}: {e}", path.display())))?;
            let txn = db.begin_write().map_err(backend)?;
            {
                let entries = txn.open_table(ENTRIES).map_err(backend)?;
                txn.open_table(META).map_err(backend)?;
                txn.open_table(TOMBSTONES).map_err(backend)?;
                let mut changes = txn.open_table(CHANGES).map_err(backend)?;
                // A file written before the log existed: each key's revision is its version.
                if changes.is_empty().map_err(backend)? {
                    for item in entries.iter().map_err(backend)? {
                        let (key, value) = item.map_err(backend)?;
                        changes.insert(value.value().0, key.value()).map_err(backend)?;
                    }
                }
            }
            txn.commit().map_err(backend)?;
            Ok(Self {
                db: Arc::new(db),
                path,
                writing: Arc::default(),
                committed: broadcast::channel(FEED_CAPACITY).0,
            })
        })
        .await
        .map_err(backend)?
    }

    /// Commits one change under the write lock: takes the next revision, moves the key's row in
    /// the change log to it, and announces it to feeds. `write` gets the key's current revision
    /// and decides: `None` leaves everything as it is, `Some(Some(value))` writes, `Some(None)`
    /// deletes. Returns the new revision, if anything was committed.
    fn commit_change(&self, key: &str, write: impl FnOnce(Option<u64>) -> Option<Option<Bytes>>) -> Result<Option<u64>, StoreError> {
        let _writing = self.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let txn = self.db.begin_write().map_err(backend)?;
        let committed = {
            let mut entries = txn.open_table(ENTRIES).map_err(backend)?;
            let current = entries.get(key).map_err(backend)?.map(|guard| guard.value().0);
            match write(current) {
                None => None,
                Some(value) => {
                    let mut meta = txn.open_table(META).map_err(backend)?;
                    let next = meta.get(SEQUENCE).map_err(backend)?.map_or(0, |g| g.value()) + 1;
                    meta.insert(SEQUENCE, next).map_err(backend)?;
                    let mut changes = txn.open_table(CHANGES).map_err(backend)?;
                    let mut tombstones = txn.open_table(TOMBSTONES).map_err(backend)?;
                    // The key's previous row in the log: its last write, or its deletion.
                    let previous = match current {
                        Some(revision) => Some(revision),
                        None => tombstones.remove(key).map_err(backend)?.map(|guard| guard.value()),
                    };
                    if let Some(previous) = previous {
                        changes.remove(previous).map_err(backend)?;
                    }
                    changes.insert(next, key).map_err(backend)?;
                    match &value {
                        Some(bytes) => {
                            entries.insert(key, (next, bytes.as_ref())).map_err(backend)?;
                        }
                        None => {
                            entries.remove(key).map_err(backend)?;
                            tombstones.insert(key, next).map_err(backend)?;
                        }
                    }
                    Some((next, value))
                }
            }
        };
        let Some((revision, value)) = committed else {
            txn.abort().map_err(backend)?;
            return Ok(None);
        };
        txn.commit().map_err(backend)?;
        // No feed is fine: nobody follows.
        let _ = self.committed.send(Committed {
            revision,
            key: Arc::from(key),
            value,
        });
        Ok(Some(revision))
    }

    /// The store's revision and every change under `prefix` after `after` (each key's last).
    fn log_after(db: &Database, prefix: &str, after: u64) -> Result<(u64, Vec<Committed>), StoreError> {
        let txn = db.begin_read().map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        let revision = meta.get(SEQUENCE).map_err(backend)?.map_or(0, |g| g.value());
        let changes = txn.open_table(CHANGES).map_err(backend)?;
        let entries = txn.open_table(ENTRIES).map_err(backend)?;
        let mut found = Vec::new();
        for item in changes.range(after.saturating_add(1)..).map_err(backend)? {
            let (logged, key) = item.map_err(backend)?;
            let key = key.value();
            if !key.starts_with(prefix) {
                continue;
            }
            let value = entries.get(key).map_err(backend)?.map(|guard| Bytes::copy_from_slice(guard.value().1));
            found.push(Committed {
                revision: logged.value(),
                key: Arc::from(key),
                value,
            });
        }
        Ok((revision, found))
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(backend)?
    }

    /// Writes `value` under `key` if `check` accepts the current version (`None` when absent).
    async fn write_if(&self, key: &str, value: Bytes, check: impl FnOnce(Option<u64>) -> bool + Send + 'static) -> Result<Option<Version>, StoreError> {
        let store = self.clone();
        let key = key.to_owned();
        let written = tokio::task::spawn_blocking(move || store.commit_change(&key, |current| check(current).then_some(Some(value))))
            .await
            .map_err(backend)??;
        Ok(written.map(version))
    }

    fn range(db: &Database, prefix: &str, with_values: bool) -> Result<Vec<(String, Option<Versioned>)>, StoreError> {
        let txn = db.begin_read().map_err(backend)?;
        let entries = txn.open_table(ENTRIES).map_err(backend)?;
        let mut out = Vec::new();
        for item in entries.range(prefix..).map_err(backend)? {
            let (key, value) = item.map_err(backend)?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            let versioned = with_values.then(|| {
                let (sequence, bytes) = value.value();
                Versioned {
                    value: Bytes::copy_from_slice(bytes),
                    version: version(sequence),
                }
            });
            out.push((key.to_owned(), versioned));
        }
        Ok(out)
    }
}

#[async_trait]
impl VersionedStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let entries = txn.open_table(ENTRIES).map_err(backend)?;
            Ok(entries.get(key.as_str()).map_err(backend)?.map(|guard| {
                let (sequence, bytes) = guard.value();
                Versioned {
                    value: Bytes::copy_from_slice(bytes),
                    version: version(sequence),
                }
            }))
        })
        .await
    }

    async fn create_if_absent(&self, key: &str, value: Bytes) -> Result<Option<Version>, StoreError> {
        self.write_if(key, value, |current| current.is_none()).await
    }

    async fn put_if_version(&self, key: &str, value: Bytes, expected: &Version) -> Result<Option<Version>, StoreError> {
        let Ok(expected) = expected.as_str().parse::<u64>() else { return Ok(None) };
        self.write_if(key, value, move |current| current == Some(expected)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix = prefix.to_owned();
        let found = self.blocking(move |db| Self::range(db, &prefix, false)).await?;
        Ok(found.into_iter().map(|(k, _)| k).collect())
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        let prefix = prefix.to_owned();
        let found = self.blocking(move |db| Self::range(db, &prefix, true)).await?;
        Ok(found.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let store = self.clone();
        let key = key.to_owned();
        let deleted = tokio::task::spawn_blocking(move || store.commit_change(&key, |current| current.map(|_| None)))
            .await
            .map_err(backend)??;
        Ok(deleted.is_some())
    }

    fn orders_revisions(&self) -> bool {
        true
    }

    async fn current_revision(&self) -> Result<Option<u64>, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let meta = txn.open_table(META).map_err(backend)?;
            Ok(Some(meta.get(SEQUENCE).map_err(backend)?.map_or(0, |g| g.value())))
        })
        .await
    }

    /// The log's changes after `after` (each key's last: a revision superseded by a later write
    /// to its key is not delivered), then commits as they happen. A feed that falls more than
    /// [`FEED_CAPACITY`] commits behind ends with [`StoreError::Unavailable`]; resumed after its
    /// last revision, it reads the rest from the log.
    fn revision_feed(&self, prefix: &str, after: Option<u64>) -> Option<BoxStream<'static, Result<RevisionFeedItem, StoreError>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let db = Arc::clone(&self.db);
        let prefix = prefix.to_owned();
        // Subscribed before the log is read: a commit between the two is skipped live.
        let mut live = self.committed.subscribe();
        tokio::spawn(async move {
            let read_prefix = prefix.clone();
            let read = tokio::task::spawn_blocking(move || Self::log_after(&db, &read_prefix, after.unwrap_or(u64::MAX))).await.map_err(backend);
            let (current, logged) = match read.and_then(|read| read) {
                Ok(read) => read,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let started = after.map_or(current, |after| after.min(current));
            if tx.send(Ok(RevisionFeedItem::Started { revision: started })).await.is_err() {
                return;
            }
            for change in logged {
                if tx.send(Ok(change.into_feed_item())).await.is_err() {
                    return;
                }
            }
            let mut last = current;
            loop {
                let change = tokio::select! {
                    () = tx.closed() => return,
                    change = live.recv() => change,
                };
                match change {
                    Ok(change) if change.revision > last && change.key.starts_with(prefix.as_str()) => {
                        last = change.revision;
                        if tx.send(Ok(change.into_feed_item())).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let _ = tx.send(Err(StoreError::Unavailable(format!("the change feed fell {missed} commits behind")))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Some(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }

    fn describe(&self) -> String {
        format!("embedded:{}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        super::super::conformance::run_all(&store, "ns/").await;
    }

    #[tokio::test]
    async fn survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let version = {
            let store = EmbeddedStore::open(dir.path()).await.unwrap();
            store.create_if_absent("jobs/a/state.json", "kept".into()).await.unwrap().unwrap()
        };
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        let read = store.get("jobs/a/state.json").await.unwrap().unwrap();
        assert_eq!((read.value.as_ref(), &read.version), (&b"kept"[..], &version));
        let next = store.create_if_absent("jobs/b/state.json", "x".into()).await.unwrap().unwrap();
        assert_ne!(next, version, "the sequence continues after a restart");
    }

    async fn next_item(feed: &mut BoxStream<'static, Result<RevisionFeedItem, StoreError>>) -> RevisionFeedItem {
        tokio::time::timeout(std::time::Duration::from_secs(10), feed.next()).await.unwrap().unwrap().unwrap()
    }

    fn change(key: &str, value: Option<&str>, revision: u64) -> RevisionFeedItem {
        RevisionFeedItem::Change {
            key: key.into(),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            revision,
        }
    }

    async fn create(store: &EmbeddedStore, key: &str, value: &'static str) -> Version {
        store.create_if_absent(key, value.into()).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_feed_resumes_after_any_revision_from_the_log_even_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let store = EmbeddedStore::open(dir.path()).await.unwrap();
            let first = create(&store, "jobs/a/state.json", "a1").await;
            let b = create(&store, "jobs/b/state.json", "b1").await;
            store.put_if_version("jobs/b/state.json", "b2".into(), &b).await.unwrap().unwrap();
            create(&store, "other/c", "c").await;
            create(&store, "jobs/d/state.json", "d").await;
            assert!(store.delete("jobs/d/state.json").await.unwrap());
            first.as_str().parse::<u64>().unwrap()
        };
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        assert_eq!(store.current_revision().await.unwrap(), Some(6));
        // After a's write: b's last write (its first is superseded) and d's deletion, not c.
        let mut feed = store.revision_feed("jobs/", Some(first)).unwrap();
        assert_eq!(next_item(&mut feed).await, RevisionFeedItem::Started { revision: first });
        assert_eq!(next_item(&mut feed).await, change("jobs/b/state.json", Some("b2"), 3));
        assert_eq!(next_item(&mut feed).await, change("jobs/d/state.json", None, 6));
        // Then live, in commit order; a re-created key leaves its tombstone.
        create(&store, "jobs/d/state.json", "d2").await;
        create(&store, "other/e", "e").await;
        create(&store, "jobs/f/state.json", "f").await;
        assert_eq!(next_item(&mut feed).await, change("jobs/d/state.json", Some("d2"), 7));
        assert_eq!(next_item(&mut feed).await, change("jobs/f/state.json", Some("f"), 9));
        // From the start: every key once, at its last revision.
        let mut feed = store.revision_feed("jobs/", Some(0)).unwrap();
        let mut items = Vec::new();
        for _ in 0..5 {
            items.push(next_item(&mut feed).await);
        }
        assert_eq!(
            items,
            [
                RevisionFeedItem::Started { revision: 0 },
                change("jobs/a/state.json", Some("a1"), 1),
                change("jobs/b/state.json", Some("b2"), 3),
                change("jobs/d/state.json", Some("d2"), 7),
                change("jobs/f/state.json", Some("f"), 9),
            ]
        );
        // From now: only what comes.
        let mut feed = store.revision_feed("jobs/", None).unwrap();
        assert_eq!(next_item(&mut feed).await, RevisionFeedItem::Started { revision: 9 });
    }

    #[tokio::test]
    async fn concurrent_writers_reach_a_feed_in_revision_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        let mut feed = store.revision_feed("jobs/", None).unwrap();
        assert_eq!(next_item(&mut feed).await, RevisionFeedItem::Started { revision: 0 });
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..25 {
                        store.create_if_absent(&format!("jobs/{w}-{i}/state.json"), "x".into()).await.unwrap().unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        for expected in 1..=200 {
            let RevisionFeedItem::Change { revision, .. } = next_item(&mut feed).await else { panic!("a change") };
            assert_eq!(revision, expected);
        }
    }
}
