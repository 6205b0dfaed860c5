//! Store URLs to object stores.
//!
//! Every store this project touches (job specs, provenance, results, and object-store registries)
//! is named by a URL:
//!
//! | URL | backend |
//! |---|---|
//! | `file:///abs/dir` | local directory (created if missing); puts are staged and renamed |
//! | `memory://` / `memory://name` | in-process; a named one is shared within the process |
//! | `az://container/prefix` | Azure Blob; credentials from `AZURE_STORAGE_CONNECTION_STRING` (as upstream), else `AZURE_STORAGE_ACCOUNT_NAME`/`AZURE_STORAGE_ACCOUNT_KEY` and the other `AZURE_*` variables object_store reads; `?emulator=true` or `UseDevelopmentStorage=true` for Azurite |
//! | `s3://bucket/prefix` | S3; `AWS_*` variables, `?endpoint=http://127.0.0.1:5000` for moto or MinIO |
//! | `gs://bucket/prefix` | Google Cloud Storage; `GOOGLE_*` variables |
//!
//! A path after the bucket or container becomes a key prefix.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use url::Url;

/// Why a store URL cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    /// Not a URL.
    #[error("invalid store URL {url:?}: {source}")]
    Parse {
        /// The URL given.
        url: String,
        /// The parser's complaint.
        source: url::ParseError,
    },
    /// A scheme this project does not support.
    #[error("unsupported store URL scheme {scheme:?} in {url:?}; use file, memory, az, s3 or gs")]
    Scheme {
        /// The URL given.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// A URL that is missing a part it needs.
    #[error("invalid store URL {url:?}: {reason}")]
    Invalid {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The backend refused the configuration.
    #[error("cannot open store {url:?}: {source}")]
    Backend {
        /// The URL given.
        url: String,
        /// The backend's error.
        source: object_store::Error,
    },
    /// A local directory could not be created.
    #[error("cannot create directory for {url:?}: {source}")]
    Io {
        /// The URL given.
        url: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The kind of backend behind a store URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// `file://`.
    File,
    /// `memory://`.
    Memory,
    /// `az://`.
    Azure,
    /// `s3://`.
    S3,
    /// `gs://`.
    Gcs,
}

/// An opened store: the object store and the URL it came from (credentials never included).
#[derive(Clone)]
pub struct Store {
    /// The object store, already scoped to the URL's prefix.
    pub object_store: Arc<dyn ObjectStore>,
    /// The URL it was opened from.
    pub url: String,
    /// The kind of backend.
    pub kind: StoreKind,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("url", &self.url).field("kind", &self.kind).finish()
    }
}

impl Store {
    /// Opens the store named by `url`.
    pub fn open(url: &str) -> Result<Self, StoreUrlError> {
        let parsed = Url::parse(url).map_err(|source| StoreUrlError::Parse {
            url: url.to_owned(),
            source,
        })?;
        let invalid = |reason: &str| StoreUrlError::Invalid {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let backend = |source| StoreUrlError::Backend {
            url: url.to_owned(),
            source,
        };
        let query: HashMap<String, String> = parsed.query_pairs().into_owned().collect();
        let prefix = parsed.path().trim_matches('/').to_owned();
        let host = parsed.host_str().unwrap_or_default().to_owned();

        let (object_store, kind): (Arc<dyn ObjectStore>, StoreKind) = match parsed.scheme() {
            "file" => {
                let dir = parsed.to_file_path().map_err(|()| invalid("file URLs need an absolute path"))?;
                std::fs::create_dir_all(&dir).map_err(|source| StoreUrlError::Io {
                    url: url.to_owned(),
                    source,
                })?;
                let local = LocalFileSystem::new_with_prefix(&dir).map_err(backend)?;
                return Ok(Self {
                    object_store: Arc::new(local.with_automatic_cleanup(false)),
                    url: url.to_owned(),
                    kind: StoreKind::File,
                });
            }
            "memory" => (named_memory_store(&host), StoreKind::Memory),
            "az" | "azure" | "abfs" => {
                if host.is_empty() {
                    return Err(invalid("az URLs name a container: az://container/prefix"));
                }
                let builder = azure_builder(&query).with_container_name(&host);
                (Arc::new(builder.build().map_err(backend)?), StoreKind::Azure)
            }
            "s3" => {
                if host.is_empty() {
                    return Err(invalid("s3 URLs name a bucket: s3://bucket/prefix"));
                }
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(&host);
                if let Some(endpoint) = query.get("endpoint") {
                    builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
                }
                if let Some(region) = query.get("region") {
                    builder = builder.with_region(region);
                }
                (Arc::new(builder.build().map_err(backend)?), StoreKind::S3)
            }
            "gs" => {
                if host.is_empty() {
                    return Err(invalid("gs URLs name a bucket: gs://bucket/prefix"));
                }
                let builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(&host);
                (Arc::new(builder.build().map_err(backend)?), StoreKind::Gcs)
            }
            scheme => {
                return Err(StoreUrlError::Scheme {
                    url: url.to_owned(),
                    scheme: scheme.to_owned(),
                });
            }
        };
        let object_store = if prefix.is_empty() {
            object_store
        } else {
            Arc::new(PrefixStore::new(object_store, prefix.as_str()))
        };
        Ok(Self {
            object_store,
            url: url.to_owned(),
            kind,
        })
    }

    /// Opens the store named by `url` for files written by others (the provenance store, which
    /// every runner writes): a `file://` store then reads only regular files beneath its root
    /// ([`crate::confined_fs`]); other stores are opened as [`Store::open`] opens them.
    pub fn open_confined(url: &str) -> Result<Self, StoreUrlError> {
        let store = Self::open(url)?;
        match (store.kind, store.local_root()) {
            (StoreKind::File, Some(root)) => {
                let local = LocalFileSystem::new_with_prefix(&root)
                    .map_err(|source| StoreUrlError::Backend {
                        url: url.to_owned(),
                        source,
                    })?
                    .with_automatic_cleanup(false);
                Ok(Self {
                    object_store: Arc::new(crate::confined_fs::ConfinedFileSystem::new(root, local)),
                    ..store
                })
            }
            _ => Ok(store),
        }
    }

    /// The directory of a `file://` store (for readers that go faster with plain file I/O).
    pub fn local_root(&self) -> Option<std::path::PathBuf> {
        match self.kind {
            StoreKind::File => Url::parse(&self.url).ok()?.to_file_path().ok(),
            _ => None,
        }
    }

    /// A fresh, unnamed in-memory store (for tests).
    pub fn in_memory() -> Self {
        Self {
            object_store: Arc::new(InMemory::new()),
            url: "memory://".to_owned(),
            kind: StoreKind::Memory,
        }
    }
}

fn named_memory_store(name: &str) -> Arc<dyn ObjectStore> {
    if name.is_empty() {
        return Arc::new(InMemory::new());
    }
    static NAMED: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let mut named = NAMED.get_or_init(Default::default).lock().expect("memory store registry poisoned");
    let store = named.entry(name.to_owned()).or_insert_with(|| Arc::new(InMemory::new()));
    Arc::clone(store) as Arc<dyn ObjectStore>
}

/// The parts of an Azure connection string this project uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AzureConnectionString {
    /// `AccountName`.
    pub account_name: Option<String>,
    /// `AccountKey`.
    pub account_key: Option<String>,
    /// `BlobEndpoint`.
    pub blob_endpoint: Option<String>,
    /// `DefaultEndpointsProtocol`.
    pub protocol: Option<String>,
    /// `UseDevelopmentStorage=true`.
    pub use_development_storage: bool,
}

impl AzureConnectionString {
    /// Parses `Key=Value;Key=Value` (values may contain `=`, as base64 keys do).
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else { continue };
            let value = value.to_owned();
            match key.trim() {
                "AccountName" => out.account_name = Some(value),
                "AccountKey" => out.account_key = Some(value),
                "BlobEndpoint" => out.blob_endpoint = Some(value),
                "DefaultEndpointsProtocol" => out.protocol = Some(value),
                "UseDevelopmentStorage" => out.use_development_storage = value.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        out
    }
}

fn azure_builder(query: &HashMap<String, String>) -> MicrosoftAzureBuilder {
    let mut builder = MicrosoftAzureBuilder::from_env();
    if let Ok(text) = std::env::var("AZURE_STORAGE_CONNECTION_STRING") {
        let conn = AzureConnectionString::parse(&text);
        if conn.use_development_storage {
            builder = builder.with_use_emulator(true);
        }
        if let Some(account) = conn.account_name {
            builder = builder.with_account(account);
        }
        if let Some(key) = conn.account_key {
            builder = builder.with_access_key(key);
        }
        if let Some(endpoint) = conn.blob_endpoint {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
    }
    if query.get("emulator").is_some_and(|v| v == "true") {
        builder = builder.with_use_emulator(true);
    }
    if let Some(account) = query.get("account") {
        builder = builder.with_account(account);
    }
    if let Some(endpoint) = query.get("endpoint") {
        builder = builder
            .with_allow_http(endpoint.starts_with("http://"))
            .with_endpoint(endpoint.clone());
    }
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::path::Path;

    #[test]
    fn connection_strings_parse() {
        let conn = AzureConnectionString::parse(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=abc==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
        );
        assert_eq!(conn.account_name.as_deref(), Some("devstoreaccount1"));
        assert_eq!(conn.account_key.as_deref(), Some("abc=="));
        assert_eq!(conn.blob_endpoint.as_deref(), Some("http://127.0.0.1:10000/devstoreaccount1"));
        assert!(AzureConnectionString::parse("UseDevelopmentStorage=true").use_development_storage);
    }

    #[test]
    fn bad_urls_are_errors() {
        assert!(matches!(Store::open("nope"), Err(StoreUrlError::Parse { .. })));
        assert!(matches!(Store::open("ftp://x/y"), Err(StoreUrlError::Scheme { .. })));
        assert!(matches!(Store::open("s3:///prefix"), Err(StoreUrlError::Invalid { .. })));
        assert!(matches!(Store::open("file://otherhost/x"), Err(StoreUrlError::Invalid { .. })));
    }

    #[tokio::test]
    async fn file_and_named_memory_stores_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/nested/root", dir.path().display());
        let store = Store::open(&url).unwrap();
        let key = Path::from("a/b.json");
        store.object_store.put(&key, "x".into()).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("nested/root/a/b.json")).unwrap(), b"x");

        let a = Store::open("memory://shared-test/p").unwrap();
        let b = Store::open("memory://shared-test/p").unwrap();
        a.object_store.put(&key, "y".into()).await.unwrap();
        let got = b.object_store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"y");
        let other = Store::open("memory://").unwrap();
        assert!(other.object_store.get(&key).await.is_err());
    }
}
