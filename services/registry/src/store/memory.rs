//! The in-memory store, for tests: upstream's `InMemoryVersionedStore` semantics, including one
//! global version counter across keys (versions are never reused, not even after a delete).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{StoreError, Version, Versioned, VersionedStore};

#[derive(Debug, Default)]
struct State {
    counter: u64,
    entries: BTreeMap<String, (u64, Bytes)>,
}

/// An in-process versioned store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated (every update is one
        // insert), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn version(counter: u64) -> Version {
    Version::new(counter.to_string())
}

#[async_trait]
impl VersionedStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.lock().entries.get(key).map(|(v, value)| Versioned {
            value: value.clone(),
            version: version(*v),
        }))
    }

    async fn create_if_absent(&self, key: &str, value: Bytes) -> Result<Option<Version>, StoreError> {
        let mut state = self.lock();
        if state.entries.contains_key(key) {
            return Ok(None);
        }
        state.counter += 1;
        let counter = state.counter;
        state.entries.insert(key.to_owned(), (counter, value));
        Ok(Some(version(counter)))
    }

    async fn put_if_version(&self, key: &str, value: Bytes, expected: &Version) -> Result<Option<Version>, StoreError> {
        let mut state = self.lock();
        match state.entries.get(key) {
            Some((current, _)) if version(*current) == *expected => {}
            _ => return Ok(None),
        }
        state.counter += 1;
        let counter = state.counter;
        state.entries.insert(key.to_owned(), (counter, value));
        Ok(Some(version(counter)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .lock()
            .entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        Ok(self
            .lock()
            .entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, value))| {
                (
                    k.clone(),
                    Versioned {
                        value: value.clone(),
                        version: version(*v),
                    },
                )
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.lock().entries.remove(key).is_some())
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        super::super::conformance::run_all(&MemoryStore::new(), "").await;
    }

    #[tokio::test]
    async fn versions_come_from_one_global_counter() {
        let store = MemoryStore::new();
        let a = store.create_if_absent("a", "1".into()).await.unwrap().unwrap();
        let b = store.create_if_absent("b", "1".into()).await.unwrap().unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("1", "2"));
        assert!(store.delete("a").await.unwrap());
        let again = store.create_if_absent("a", "1".into()).await.unwrap().unwrap();
        assert_eq!(again.as_str(), "3", "versions are never reused");
    }
}
