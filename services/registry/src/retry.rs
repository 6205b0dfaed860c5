//! Read-modify-write with compare-and-swap, retried on conflict with exponential backoff and
//! jitter (upstream `update_with_retry`, §6.4): read, apply the update function, write if the
//! key is still at the version read; on a conflict wait `2^attempt × initial_delay` plus up to
//! `initial_delay` of jitter, and try again. Errors from the update function stop at once.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;

use crate::store::{StoreError, Version, Versioned, VersionedStore};

/// How often and how patiently to retry on conflict.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// The first backoff; doubles on every conflict.
    pub initial_delay: Duration,
    /// The longest single backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The wait after a conflict on attempt `attempt` (0-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self.initial_delay.saturating_mul(1u32 << attempt.min(16)).min(self.max_delay);
        let jitter_ms = u64::try_from(self.initial_delay.as_millis()).unwrap_or(u64::MAX).max(1);
        exponential + Duration::from_millis(rand::rng().random_range(0..jitter_ms))
    }
}

/// Why a read-modify-write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RetryError<E> {
    /// The key does not exist.
    #[error("key {0} not found")]
    NotFound(String),
    /// Every attempt met a conflicting write.
    #[error("failed to update {key} after {attempts} attempts")]
    TooManyRetries {
        /// The key.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The update function refused.
    #[error("update refused: {0}")]
    Update(E),
}

/// What an update function decides.
#[derive(Debug)]
pub enum Update<T> {
    /// Write these bytes and return `T`.
    Write(Bytes, T),
    /// Write nothing and return `T` (the update is a no-op).
    Keep(T),
}

/// The outcome of a successful read-modify-write.
#[derive(Debug)]
pub struct Updated<T> {
    /// What the update function returned.
    pub value: T,
    /// The value now stored and its version (the new one if something was written).
    pub stored: Versioned,
    /// Whether a write happened.
    pub written: bool,
}

/// Reads `key`, applies `update`, and writes the result if nobody wrote in between; retries on
/// conflict. Returns `update`'s value and the version now stored.
pub async fn update_with_retry<T, E>(
    store: &dyn VersionedStore,
    key: &str,
    policy: RetryPolicy,
    update: impl FnMut(&Versioned) -> Result<Update<T>, E>,
    on_conflict: impl FnMut(),
) -> Result<(T, Version), RetryError<E>> {
    let updated = update_from(store, key, policy, None, update, on_conflict).await?;
    Ok((updated.value, updated.stored.version))
}

/// Like [`update_with_retry`], but the first attempt starts from `guess` (e.g. what this process
/// last wrote) instead of reading the store. A stale guess only costs one refused write, after
/// which the key is read as usual; compare-and-swap keeps it correct.
pub async fn update_from<T, E>(
    store: &dyn VersionedStore,
    key: &str,
    policy: RetryPolicy,
    mut guess: Option<Versioned>,
    mut update: impl FnMut(&Versioned) -> Result<Update<T>, E>,
    mut on_conflict: impl FnMut(),
) -> Result<Updated<T>, RetryError<E>> {
    // What the last conflict read back: the next attempt's current value.
    let mut fresh: Option<Versioned> = None;
    for attempt in 0..policy.max_attempts {
        let (current, guessed) = match (guess.take(), fresh.take()) {
            (Some(guessed), _) => (guessed, true),
            (None, Some(read)) => (read, false),
            (None, None) => (store.get(key).await?.ok_or_else(|| RetryError::NotFound(key.to_owned()))?, false),
        };
        let decided = update(&current);
        if guessed && !matches!(decided, Ok(Update::Write(..))) {
            // A refusal or a no-op decided on a guess may rest on stale data: only a write is
            // checked by the store, so decide again on a fresh read.
            continue;
        }
        match decided.map_err(RetryError::Update)? {
            Update::Keep(value) => {
                return Ok(Updated {
                    value,
                    stored: current,
                    written: false,
                });
            }
            Update::Write(bytes, value) => {
                if let Some(version) = store.put_if_version(key, bytes.clone(), &current.version).await? {
                    return Ok(Updated {
                        value,
                        stored: Versioned { value: bytes, version },
                        written: true,
                    });
                }
                // A write whose answer was lost on the way back is sent again by the store's
                // client, and that retry conflicts with the write itself: if the stored bytes
                // are this write's (each write bumps the revision inside them), it happened.
                let now = store.get(key).await?.ok_or_else(|| RetryError::NotFound(key.to_owned()))?;
                if now.value == bytes {
                    return Ok(Updated {
                        value,
                        stored: now,
                        written: true,
                    });
                }
                fresh = Some(now);
                if guessed {
                    // The guess was stale; read and try again at once, without counting it.
                    continue;
                }
            }
        }
        on_conflict();
        if attempt + 1 < policy.max_attempts {
            tokio::time::sleep(policy.backoff(attempt)).await;
        }
    }
    Err(RetryError::TooManyRetries {
        key: key.to_owned(),
        attempts: policy.max_attempts,
    })
}

/// Creates `key` with `value` unless it exists (upstream `create_with_retry`): transient store
/// errors are retried, an existing key is `Ok(false)`.
pub async fn create_with_retry(store: &dyn VersionedStore, key: &str, value: Bytes, policy: RetryPolicy) -> Result<bool, StoreError> {
    let mut attempt = 0;
    loop {
        match store.create_if_absent(key, value.clone()).await {
            Ok(Some(_)) => return Ok(true),
            // As for updates: a create retried by the store's client after its answer was lost
            // finds the key it made; the stored bytes say so.
            Ok(None) => return Ok(store.get(key).await?.is_some_and(|stored| stored.value == value)),
            Err(StoreError::Unavailable(reason)) if attempt + 1 < policy.max_attempts => {
                tracing::debug!(key, %reason, attempt, "create failed, retrying");
                tokio::time::sleep(policy.backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn stale_guesses_are_never_trusted() {
        let store = MemoryStore::new();
        let v1 = store.create_if_absent("k", "pending".into()).await.unwrap().unwrap();
        let stale = Versioned {
            value: "pending".into(),
            version: v1.clone(),
        };
        store.put_if_version("k", "submitting".into(), &v1).await.unwrap().unwrap();
        // Decided on the stale guess this would be refused; on the real value it is allowed.
        let refuse_unless_submitting = |current: &Versioned| -> Result<Update<()>, &'static str> {
            if current.value == "submitting" {
                Ok(Update::Write("scheduled".into(), ()))
            } else {
                Err("invalid transition")
            }
        };
        let updated = update_from(&store, "k", RetryPolicy::default(), Some(stale.clone()), refuse_unless_submitting, || {})
            .await
            .unwrap();
        assert!(updated.written);
        assert_eq!(store.get("k").await.unwrap().unwrap().value, "scheduled");
        // A write decided on a stale guess is refused by the store, then redone on fresh data.
        let append = |current: &Versioned| -> Result<Update<()>, &'static str> {
            Ok(Update::Write(bytes::Bytes::from(format!("{}+", std::str::from_utf8(&current.value).unwrap())), ()))
        };
        update_from(&store, "k", RetryPolicy::default(), Some(stale), append, || {}).await.unwrap();
        assert_eq!(store.get("k").await.unwrap().unwrap().value, "scheduled+");
    }

    /// A store whose client loses the answer to each write and sends it again (as object_store
    /// does on a dropped connection): the write lands, the retry conflicts with it.
    #[derive(Debug)]
    struct LostAnswers(MemoryStore);

    #[async_trait::async_trait]
    impl VersionedStore for LostAnswers {
        async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
            self.0.get(key).await
        }
        async fn create_if_absent(&self, key: &str, value: Bytes) -> Result<Option<crate::store::Version>, StoreError> {
            self.0.create_if_absent(key, value.clone()).await?;
            self.0.create_if_absent(key, value).await
        }
        async fn put_if_version(&self, key: &str, value: Bytes, expected: &crate::store::Version) -> Result<Option<crate::store::Version>, StoreError> {
            self.0.put_if_version(key, value.clone(), expected).await?;
            self.0.put_if_version(key, value, expected).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            self.0.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<bool, StoreError> {
            self.0.delete(key).await
        }
        fn describe(&self) -> String {
            "lost answers".into()
        }
    }

    #[tokio::test]
    async fn a_write_whose_retry_conflicts_with_itself_is_reported_done_once() {
        let store = LostAnswers(MemoryStore::new());
        assert!(create_with_retry(&store, "k", "pending".into(), RetryPolicy::default()).await.unwrap(), "created, though the retry found the key");
        assert!(!create_with_retry(&store, "k", "other".into(), RetryPolicy::default()).await.unwrap(), "another value is another writer's");
        let mut decisions = 0;
        let to_running = |current: &Versioned| -> Result<Update<()>, &'static str> {
            decisions += 1;
            match current.value.as_ref() {
                b"pending" => Ok(Update::Write("running".into(), ())),
                _ => Err("invalid transition from running to running"),
            }
        };
        let updated = update_from(&store, "k", RetryPolicy::default(), None, to_running, || {}).await.unwrap();
        assert!(updated.written);
        assert_eq!((store.get("k").await.unwrap().unwrap().value, decisions), (bytes::Bytes::from("running"), 1));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        };
        let b0 = policy.backoff(0);
        assert!(b0 >= Duration::from_millis(10) && b0 < Duration::from_millis(20), "{b0:?}");
        let b2 = policy.backoff(2);
        assert!(b2 >= Duration::from_millis(40) && b2 < Duration::from_millis(50), "{b2:?}");
        let b9 = policy.backoff(9);
        assert!(b9 >= Duration::from_millis(50) && b9 < Duration::from_millis(60), "{b9:?}");
    }
}
