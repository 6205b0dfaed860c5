//! Versioned key-value storage for job state: bytes in, bytes out, every write a compare-and-swap.
//!
//! [`VersionedStore`] is upstream's `VersionedStore` protocol (UPSTREAM-FORMAT.md §6.1) with
//! async methods: `get` returns the value and an opaque [`Version`], `put_if_version` writes only
//! if the key is still at that version, `create_if_absent` only if the key is new. Conflicts are
//! answers (`None`), never errors. JSON lives a layer up, in the registry.
//!
//! Backends, chosen by URL in [`open`]:
//!
//! | URL | backend | version token |
//! |---|---|---|
//! | `memory://` | [`memory::MemoryStore`] | one global counter, as upstream's in-memory store |
//! | `embedded:///dir` or `file:///dir` | [`embedded::EmbeddedStore`] (redb, durable, one process) | a global sequence |
//! | `etcd://host:2379[,host:2379]/prefix` (`etcds://` for TLS) | [`etcd::EtcdStore`] | the key's `mod_revision` |
//! | `az://`, `s3://`, `gs://` | [`object::ObjectStoreBackend`] | ETag (+ generation on GCS) |
//!
//! S3 ETags are content hashes, so a key that goes A → B → A has A's ETag again and a writer still
//! holding it would win. The registry therefore puts a revision counter inside every value it
//! stores, so no two writes have the same bytes.

pub mod conformance;
pub mod embedded;
pub mod etcd;
pub mod memory;
pub mod object;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// An opaque version token (an ETag, a revision or a counter, depending on the backend).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    /// Wraps a backend's token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stored value and its version.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    /// The bytes.
    pub value: Bytes,
    /// The version they were read at.
    pub version: Version,
}

/// A change seen on a backend's change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreChange {
    /// The key that changed.
    pub key: String,
    /// Its new value, or `None` if it was deleted.
    pub value: Option<Versioned>,
}

/// What a polled change feed ([`VersionedStore::changes`]) delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeFeedItem {
    /// A key changed (or, on the feed's first poll, exists).
    Changed(StoreChange),
    /// Every change written before `before` (by this process's clock) has been delivered.
    CaughtUp {
        /// When the poll that found them began.
        before: std::time::SystemTime,
    },
}

/// What a feed in the store's revision order ([`VersionedStore::revision_feed`]) delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum RevisionFeedItem {
    /// The feed runs: every change it delivers from now on has a revision above this one, and
    /// none above it is skipped.
    Started {
        /// The revision the feed continues from.
        revision: u64,
    },
    /// One change.
    Change {
        /// The key that changed.
        key: String,
        /// Its new value, or `None` if it was deleted.
        value: Option<Bytes>,
        /// The store's revision of the change.
        revision: u64,
    },
}

/// Why a store operation failed (conflicts are not failures).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or answered with a transient error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The key cannot be stored (e.g. an invalid object path).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The URL does not name a usable registry store.
    #[error("invalid registry store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The backend and this store do not accept each other's credentials: a wrong password, a
    /// user without the right, or a server certificate this store does not trust. Not transient:
    /// retrying does not help until the configuration changes.
    #[error("store refused the credentials: {0}")]
    Unauthenticated(String),
    /// A change feed was asked to start from a revision the backend no longer keeps (etcd
    /// compacted its history through this revision).
    #[error("the store's history is compacted through revision {0}")]
    Compacted(u64),
    /// Any other backend failure.
    #[error("store error: {0}")]
    Backend(String),
}

/// Byte storage with compare-and-swap, the registry's only way to persist.
#[async_trait]
pub trait VersionedStore: Send + Sync + std::fmt::Debug {
    /// The value and version of `key`, or `None` if absent.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;

    /// Creates `key` if it does not exist. Returns the new version, or `None` if the key exists.
    async fn create_if_absent(&self, key: &str, value: Bytes) -> Result<Option<Version>, StoreError>;

    /// Replaces `key` if it is still at `expected`. Returns the new version, or `None` if the key
    /// changed or no longer exists.
    async fn put_if_version(&self, key: &str, value: Bytes, expected: &Version) -> Result<Option<Version>, StoreError>;

    /// The keys that start with `prefix` (plain string prefix), in no particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// The keys that start with `prefix` with their values. The default reads them one by one,
    /// a few at a time; backends that can do better override it.
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        use futures::StreamExt;
        let keys = self.list(prefix).await?;
        let found: Vec<Result<Option<(String, Versioned)>, StoreError>> = futures::stream::iter(keys)
            .map(|key| async move { Ok(self.get(&key).await?.map(|v| (key, v))) })
            .buffer_unordered(16)
            .collect()
            .await;
        found.into_iter().filter_map(Result::transpose).collect()
    }

    /// Deletes `key`. Returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;

    /// A feed of changes under `prefix` made by anyone, including other processes, if the backend
    /// has one (etcd watches, object stores are polled). `None` when this process is the only
    /// possible writer (memory, embedded). A polled feed first reports every key, then what
    /// changed, and after each poll how far it has [caught up](ChangeFeedItem::CaughtUp).
    fn changes(&self, _prefix: &str) -> Option<BoxStream<'static, Result<ChangeFeedItem, StoreError>>> {
        None
    }

    /// Whether the store keeps when each key was last written, by its own clock (object stores'
    /// `Last-Modified`), so that [`VersionedStore::modified_since`] answers.
    fn keeps_modification_times(&self) -> bool {
        false
    }

    /// For a store that [keeps modification times](VersionedStore::keeps_modification_times):
    /// the keys under `prefix` last written at or after `since` (`None` for other stores).
    async fn modified_since(&self, _prefix: &str, _since: std::time::SystemTime) -> Result<Option<Vec<String>>, StoreError> {
        Ok(None)
    }

    /// Whether every change of this store has a revision from one increasing sequence shared by
    /// all its clients (etcd), so that a position in it means the same on every replica.
    fn orders_revisions(&self) -> bool {
        false
    }

    /// For a store that [orders revisions](VersionedStore::orders_revisions): its current
    /// revision (`None` for other stores).
    async fn current_revision(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// For a store that [orders revisions](VersionedStore::orders_revisions): the changes under
    /// `prefix` in revision order, none skipped or repeated, starting after `after` (`None`: from
    /// now). A revision older than the store's history ends the feed with
    /// [`StoreError::Compacted`]. `None` for other stores.
    fn revision_feed(&self, _prefix: &str, _after: Option<u64>) -> Option<BoxStream<'static, Result<RevisionFeedItem, StoreError>>> {
        None
    }

    /// A short description for logs (never credentials).
    fn describe(&self) -> String;
}

/// Opens the registry store named by `url` (an etcd store without TLS files or credentials).
pub async fn open(url: &str) -> Result<Arc<dyn VersionedStore>, StoreError> {
    open_with(url, &etcd::EtcdOptions::default()).await
}

/// Opens the registry store named by `url`; an `etcd://` or `etcds://` store uses the TLS files
/// and credentials in `etcd`, which other backends ignore.
pub async fn open_with(url: &str, etcd: &etcd::EtcdOptions) -> Result<Arc<dyn VersionedStore>, StoreError> {
    let invalid = |reason: &str| StoreError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let scheme = url.split_once("://").map(|(s, _)| s).ok_or_else(|| invalid("expected scheme://…"))?;
    if !matches!(scheme, "etcd" | "etcds") && *etcd != etcd::EtcdOptions::default() {
        tracing::warn!(scheme, "the etcd TLS and credential settings are ignored: the registry store is not etcd");
    }
    match scheme {
        "memory" => Ok(Arc::new(memory::MemoryStore::new())),
        "embedded" | "file" => {
            let path = url.split_once("://").map(|(_, p)| p).unwrap_or_default();
            if !path.starts_with('/') {
                return Err(invalid("needs an absolute directory, e.g. embedded:///var/lib/mops/registry"));
            }
            Ok(Arc::new(embedded::EmbeddedStore::open(std::path::Path::new(path)).await?))
        }
        "etcd" | "etcds" => Ok(Arc::new(etcd::EtcdStore::connect_with(url, etcd).await?)),
        "az" | "azure" | "abfs" | "s3" | "gs" => {
            let store = modelops_core::store::Store::open(url).map_err(|e| invalid(&e.to_string()))?;
            Ok(Arc::new(object::ObjectStoreBackend::new(store)))
        }
        other => Err(invalid(&format!(
            "unsupported scheme {other:?}; use memory, embedded, file, etcd, etcds, az, s3 or gs"
        ))),
    }
}
