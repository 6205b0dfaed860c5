//! The embedded store: one redb file (`{dir}/registry.redb`), durable (every commit is synced),
//! for a single `mops serve` process. redb serialises writers, so compare-and-swap is a check and
//! an insert inside one write transaction. Versions come from one global sequence.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{StoreError, Version, Versioned, VersionedStore};

const ENTRIES: TableDefinition<'static, &str, (u64, &[u8])> = TableDefinition::new("entries");
const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");
const SEQUENCE: &str = "sequence";

/// A versioned store in a local redb file.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
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
            txn.open_table(ENTRIES).map_err(backend)?;
            txn.open_table(META).map_err(backend)?;
            txn.commit().map_err(backend)?;
            Ok(Self { db: Arc::new(db), path })
        })
        .await
        .map_err(backend)?
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(backend)?
    }

    /// Writes `value` under `key` if `check` accepts the current version (`None` when absent).
    async fn write_if(&self, key: &str, value: Bytes, check: impl FnOnce(Option<u64>) -> bool + Send + 'static) -> Result<Option<Version>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            let written = {
                let mut entries = txn.open_table(ENTRIES).map_err(backend)?;
                let current = entries.get(key.as_str()).map_err(backend)?.map(|guard| guard.value().0);
                if check(current) {
                    let mut meta = txn.open_table(META).map_err(backend)?;
                    let next = meta.get(SEQUENCE).map_err(backend)?.map_or(0, |g| g.value()) + 1;
                    meta.insert(SEQUENCE, next).map_err(backend)?;
                    entries.insert(key.as_str(), (next, value.as_ref())).map_err(backend)?;
                    Some(next)
                } else {
                    None
                }
            };
            match written {
                Some(next) => {
                    txn.commit().map_err(backend)?;
                    Ok(Some(version(next)))
                }
                None => {
                    txn.abort().map_err(backend)?;
                    Ok(None)
                }
            }
        })
        .await
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
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            let existed = {
                let mut entries = txn.open_table(ENTRIES).map_err(backend)?;
                entries.remove(key.as_str()).map_err(backend)?.is_some()
            };
            txn.commit().map_err(backend)?;
            Ok(existed)
        })
        .await
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
}
