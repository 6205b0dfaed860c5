//! A `file://` store that reads only regular files beneath its root: object_store's
//! `LocalFileSystem` follows symbolic links anywhere and opens a FIFO with a blocking `open`
//! (a reader then hangs forever). Every read here first checks, without following a final link
//! and without opening, that the key is a regular file whose directory resolves beneath the
//! root; anything else is `PermissionDenied` naming the key, never an absolute path.
//! Writes, listings, copies and renames go to `LocalFileSystem` as they are (renames stay
//! atomic).

use std::ops::Range;
use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, Result,
};

/// See the module documentation.
#[derive(Debug)]
pub struct ConfinedFileSystem {
    inner: LocalFileSystem,
    root: PathBuf,
    /// The root with every link resolved, what resolved directories must start with.
    canonical_root: PathBuf,
}

/// Why a key may not be read.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
struct Refused {
    key: String,
    reason: &'static str,
}

impl ConfinedFileSystem {
    /// A store of the files beneath `root`.
    pub fn new(root: PathBuf, inner: LocalFileSystem) -> Self {
        let canonical_root = std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone());
        Self { inner, root, canonical_root }
    }

    /// Checks that `location` may be read (see the module documentation). A key that does not
    /// exist passes: the inner store answers NotFound for it.
    async fn check(&self, location: &Path) -> Result<()> {
        let local = self.root.join(location.as_ref());
        let canonical_root = self.canonical_root.clone();
        let key = location.to_string();
        let verdict = tokio::task::spawn_blocking(move || -> Option<&'static str> {
            match std::fs::symlink_metadata(&local) {
                Err(_) => return None,
                Ok(meta) if meta.file_type().is_symlink() => return Some("is a symbolic link; only files inside the store are read"),
                Ok(meta) if meta.is_dir() => return None,
                Ok(meta) if !meta.is_file() => return Some("is not a regular file"),
                Ok(_) => {}
            }
            let parent = local.parent()?;
            match std::fs::canonicalize(parent) {
                Ok(resolved) if !resolved.starts_with(&canonical_root) => Some("leads outside the store through a symbolic link"),
                _ => None,
            }
        })
        .await
        .unwrap_or(Some("could not be checked"));
        match verdict {
            None => Ok(()),
            Some(reason) => Err(object_store::Error::PermissionDenied {
                path: key.clone(),
                source: Box::new(Refused { key, reason }),
            }),
        }
    }
}

impl std::fmt::Display for ConfinedFileSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConfinedFileSystem({})", self.root.display())
    }
}

#[async_trait]
impl ObjectStore for ConfinedFileSystem {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.check(location).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.check(location).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.check(from).await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt as _;

    use super::*;

    #[tokio::test]
    async fn links_fifos_and_escaping_directories_are_refused_and_regular_files_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.json"), b"{}").unwrap();
        std::fs::write(root.join("a/ok.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(outside.join("secret.json"), root.join("a/link.json")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(root.join("a/fifo.json")).status().unwrap().success());
        let store = ConfinedFileSystem::new(root.clone(), LocalFileSystem::new_with_prefix(&root).unwrap());

        assert_eq!(store.get(&Path::from("a/ok.json")).await.unwrap().bytes().await.unwrap().as_ref(), b"{}");
        assert!(matches!(store.get(&Path::from("a/missing.json")).await, Err(object_store::Error::NotFound { .. })));
        for refused in ["a/link.json", "escape/secret.json", "a/fifo.json"] {
            // The FIFO would block a plain open forever: a refusal proves it was never opened.
            let err = store.get(&Path::from(refused)).await.unwrap_err();
            assert!(matches!(err, object_store::Error::PermissionDenied { .. }), "{refused}: {err}");
            assert!(!err.to_string().contains(dir.path().to_str().unwrap()), "{err}");
            assert!(store.head(&Path::from(refused)).await.is_err(), "{refused}");
        }
        // Writes and renames still work.
        store.put(&Path::from("b/new.json"), PutPayload::from_static(b"1")).await.unwrap();
        store.rename(&Path::from("b/new.json"), &Path::from("b/moved.json")).await.unwrap();
        assert_eq!(store.get(&Path::from("b/moved.json")).await.unwrap().bytes().await.unwrap().as_ref(), b"1");
    }
}
