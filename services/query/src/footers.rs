//! Opening a Parquet table to decode it: a small table is read whole in one request and its
//! footer parsed from those bytes; a large one is read by ranges from its footer, which is kept
//! in a [`FooterCache`] bounded by bytes (the catalog keeps no footer: at tens of thousands of
//! jobs they were most of its memory).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};

use crate::budgeted::Budgeted;
use crate::error::QueryError;
use modelops_core::parquet_file::ParquetObject;

/// Tables up to this size are read whole, in one request, instead of footer first and then by
/// column chunks (two requests at least, and a footer to keep).
pub const WHOLE_READ_BYTES: u64 = 1024 * 1024;

/// Default byte budget of a [`FooterCache`].
pub const DEFAULT_FOOTER_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// A table ready to decode: its footer and, when small, all its bytes.
#[derive(Debug, Clone)]
pub struct OpenedTable {
    /// The file.
    pub file: ObjectMeta,
    /// Its decoded footer (with the Arrow schema).
    pub footer: ArrowReaderMetadata,
    /// The whole file, when it was read whole (small enough: [`WHOLE_READ_BYTES`]).
    pub bytes: Option<Bytes>,
}

impl OpenedTable {
    /// Its row groups.
    pub fn row_groups(&self) -> usize {
        self.footer.metadata().num_row_groups()
    }

    /// Its size decoded, as its footer states it.
    pub fn uncompressed_bytes(&self) -> u64 {
        let sizes = self.footer.metadata().row_groups().iter().map(|group| group.total_byte_size());
        sizes.map(|size| u64::try_from(size).unwrap_or(0)).sum()
    }
}

/// One kept footer.
#[derive(Debug)]
struct Kept {
    footer: ArrowReaderMetadata,
    /// The file's size when read: a footer is only reused for the same bytes.
    size: u64,
}

/// Footers of large tables, least recently used evicted past a byte budget. Table files are
/// immutable versions (their names change when a job is indexed again), so a footer read once
/// stays right for its path and size.
#[derive(Debug, Clone)]
pub struct FooterCache {
    budget: usize,
    /// Tables up to this size are read whole ([`WHOLE_READ_BYTES`] unless changed).
    whole_read_bytes: u64,
    footers: Arc<Mutex<Budgeted<Path, Kept>>>,
}

impl Default for FooterCache {
    fn default() -> Self {
        Self::new(DEFAULT_FOOTER_CACHE_BYTES)
    }
}

impl FooterCache {
    /// A cache holding at most `budget` bytes of footers.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            whole_read_bytes: WHOLE_READ_BYTES,
            footers: Arc::default(),
        }
    }

    /// The same cache, reading tables of up to `bytes` whole instead of [`WHOLE_READ_BYTES`].
    pub fn reading_whole_up_to(mut self, bytes: u64) -> Self {
        self.whole_read_bytes = bytes;
        self
    }

    /// Bytes of footers held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Budgeted<Path, Kept>> {
        self.footers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, file: &ObjectMeta) -> Option<ArrowReaderMetadata> {
        let mut footers = self.lock();
        if footers.peek(&file.location)?.size != file.size {
            return None;
        }
        footers.get(&file.location).map(|kept| kept.footer.clone())
    }

    fn insert(&self, file: &ObjectMeta, footer: &ArrowReaderMetadata) {
        let bytes = footer.metadata().memory_size();
        if bytes > self.budget / 4 {
            return;
        }
        let kept = Kept {
            footer: footer.clone(),
            size: file.size,
        };
        self.lock().insert(file.location.clone(), kept, bytes, self.budget, |_, _| {});
    }

    /// Opens `file` to decode it: read whole when small, else its footer from the cache or the
    /// store (and kept).
    pub async fn open(&self, store: &Arc<dyn ObjectStore>, file: &ObjectMeta) -> Result<OpenedTable, QueryError> {
        if file.size <= self.whole_read_bytes {
            // Exactly the bytes the catalog knows of: a file longer than its manifest says
            // fails to parse rather than being read past the bound.
            let bytes = store.get_range(&file.location, 0..file.size).await?;
            let footer = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::default())?;
            return Ok(OpenedTable {
                file: file.clone(),
                footer,
                bytes: Some(bytes),
            });
        }
        let footer = match self.get(file) {
            Some(footer) => footer,
            None => {
                let mut reader = ParquetObject::new(Arc::clone(store), file.location.clone(), file.size);
                let footer = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::default()).await?;
                self.insert(file, &footer);
                footer
            }
        };
        Ok(OpenedTable {
            file: file.clone(),
            footer,
            bytes: None,
        })
    }
}
