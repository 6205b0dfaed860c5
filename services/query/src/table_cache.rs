//! Whole tables kept decoded in memory, so a table read again is not decoded again.
//!
//! The tables read whole are the ones users pull right after a job ends: `get_losses`, the
//! dashboard's job page, its CSV download, `mops results losses`. Decoding a 1M-row table from
//! Parquet costs about as much CPU as sending it, so the most recently read tables stay decoded,
//! up to a byte budget (`--table-cache-mb`), least recently read evicted first. An entry belongs
//! to one version of a job's table: a re-indexed job (another commit time, size or ETag) is read
//! from its new file, and the old entry dropped. A table is kept from its second read on: most
//! tables are read once (right after their job ends), and keeping a table costs its first read
//! fresh memory for every batch (about 2.5× the time of a read that frees as it goes), so one-off
//! reads neither pay that nor evict tables that are read again. A read fills the cache only when
//! it ran to the end, and only with a table whose decoded size fits the budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;

use crate::budgeted::Budgeted;
use crate::catalog::JobEntry;

/// Which version of a job's table an entry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TableVersion {
    indexed_at: String,
    size: u64,
    e_tag: Option<String>,
}

impl TableVersion {
    fn of(job: &JobEntry) -> Self {
        Self {
            indexed_at: job.indexed_at.to_string(),
            size: job.table.size,
            e_tag: job.table.e_tag.clone(),
        }
    }
}

/// One cached table.
#[derive(Debug)]
struct Entry {
    version: TableVersion,
    batches: Arc<[RecordBatch]>,
}

/// What the cache holds, behind its lock.
#[derive(Debug, Default)]
struct Entries {
    by_job: Budgeted<String, Entry>,
    /// Tables read once and not kept, by job: the next read of the same version keeps it.
    read_once: HashMap<String, TableVersion>,
}

/// How many tables read once are remembered; past this the memory starts over.
const READ_ONCE_REMEMBERED: usize = 4096;

/// Decoded tables, least recently read evicted first; cheap to clone (one cache).
#[derive(Debug, Clone)]
pub struct TableCache {
    budget: usize,
    entries: Arc<Mutex<Entries>>,
}

impl TableCache {
    /// A cache holding at most `budget` bytes of decoded batches (0: none).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            entries: Arc::default(),
        }
    }

    /// The byte budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Decoded bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().by_job.bytes()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic elsewhere while holding the lock leaves consistent entries: recover them.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `job`'s table, if this version of it is held.
    pub fn get(&self, job: &JobEntry) -> Option<Arc<[RecordBatch]>> {
        let mut entries = self.lock();
        if entries.by_job.peek(&job.job_id)?.version != TableVersion::of(job) {
            entries.by_job.remove(&job.job_id);
            tracing::debug!(job = %job.job_id, "table cache: dropped a replaced table");
            return None;
        }
        entries.by_job.get(&job.job_id).map(|entry| Arc::clone(&entry.batches))
    }

    /// Whether a read of `job`'s table that finds it not held should keep its batches for
    /// [`Self::insert`]: from the table's second read on, when its `uncompressed` size (as its
    /// footer states it) fits the budget.
    pub fn should_keep(&self, job: &JobEntry, uncompressed: u64) -> bool {
        if usize::try_from(uncompressed).map_or(true, |bytes| bytes > self.budget) {
            return false;
        }
        let version = TableVersion::of(job);
        let mut entries = self.lock();
        if entries.read_once.get(&job.job_id) == Some(&version) {
            entries.read_once.remove(&job.job_id);
            return true;
        }
        if entries.read_once.len() >= READ_ONCE_REMEMBERED {
            entries.read_once.clear();
        }
        entries.read_once.insert(job.job_id.clone(), version);
        false
    }

    /// Holds `batches` as `job`'s table, evicting the least recently read tables to make room.
    /// A table larger than the budget is not held.
    pub fn insert(&self, job: &JobEntry, batches: Vec<RecordBatch>) {
        let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        if bytes > self.budget {
            tracing::debug!(job = %job.job_id, bytes, budget = self.budget, "table cache: table larger than the budget");
            return;
        }
        let entry = Entry {
            version: TableVersion::of(job),
            batches: batches.into(),
        };
        self.lock().by_job.insert(job.job_id.clone(), entry, bytes, self.budget, |evicted, bytes| {
            tracing::debug!(job = %evicted, bytes, "table cache: evicted");
        });
    }
}
