//! Which jobs own a result: an in-memory index over every sealed edge set (and over batches this
//! process recorded), so an owners query never scans files. Entries are 16 bytes (a 64-bit hash
//! of the path, the job's position, role, source and kind), kept sorted and binary-searched:
//! 10 million edges take about 160 MB. Two paths sharing a 64-bit BLAKE2b hash would be
//! conflated; at 10 million paths the chance is about 3 in a million.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use modelops_core::ids;
use modelops_core::job::JobId;

use crate::edge::{Edge, Kind, Role, Source};
use crate::error::AttributionError;
use crate::store::EdgeStore;

/// One owner of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The owning job.
    pub job_id: JobId,
    /// Sim or agg.
    pub kind: Kind,
    /// Its role.
    pub role: Role,
    /// Reported or derived.
    pub source: Source,
}

#[derive(Debug, Default)]
struct Index {
    jobs: Vec<JobId>,
    positions: HashMap<JobId, u32>,
    /// (path hash, job position, role, source, kind).
    entries: Vec<(u64, u32, u8, u8, u8)>,
    sorted: bool,
    sealed_loaded: HashSet<JobId>,
    refreshed: Option<Instant>,
}

/// How long sealed jobs listed by another replica may take to appear.
const REFRESH_EVERY: Duration = Duration::from_secs(5);

fn path_hash(path: &str) -> u64 {
    u64::from_str_radix(&ids::blake2b_hex(path.as_bytes(), 8), 16).unwrap_or(0)
}

fn role_code(role: Role) -> u8 {
    match role {
        Role::Unknown => 0,
        Role::CacheHit => 1,
        Role::Computed => 2,
    }
}

fn role_of(code: u8) -> Role {
    match code {
        2 => Role::Computed,
        1 => Role::CacheHit,
        _ => Role::Unknown,
    }
}

/// The owner index.
#[derive(Debug, Default)]
pub struct OwnerIndex {
    index: RwLock<Index>,
}

impl OwnerIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds edges of one job.
    pub fn add(&self, job: &JobId, edges: &[Edge]) {
        let mut index = self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let position = match index.positions.get(job) {
            Some(p) => *p,
            None => {
                let p = u32::try_from(index.jobs.len()).unwrap_or(u32::MAX);
                index.jobs.push(job.clone());
                index.positions.insert(job.clone(), p);
                p
            }
        };
        index.entries.reserve(edges.len());
        for edge in edges {
            let source = u8::from(edge.source == Source::Reported);
            let kind = u8::from(edge.kind == Kind::Agg);
            index.entries.push((path_hash(&edge.path), position, role_code(edge.role), source, kind));
        }
        index.sorted = false;
    }

    /// Loads sealed edge sets not seen yet (at most every few seconds).
    pub async fn refresh(&self, store: &EdgeStore) -> Result<(), AttributionError> {
        {
            let index = self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if index.refreshed.is_some_and(|at| at.elapsed() < REFRESH_EVERY) {
                return Ok(());
            }
        }
        let sealed = store.sealed_jobs().await?;
        for job in sealed {
            let known = self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner).sealed_loaded.contains(&job);
            if known {
                continue;
            }
            if let Some(seal) = store.seal(&job).await? {
                let edges = store.sealed_edges(&job, &seal).await?;
                self.add(&job, &edges);
            }
            self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner).sealed_loaded.insert(job);
        }
        self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner).refreshed = Some(Instant::now());
        Ok(())
    }

    /// Marks a job's sealed edges as already in the index (they were added while recording).
    pub fn mark_sealed(&self, job: &JobId) {
        self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner).sealed_loaded.insert(job.clone());
    }

    /// The owners of `path`, one per job (the strongest role if a job has several entries).
    pub fn owners(&self, path: &str) -> Vec<Owner> {
        let needs_sort = !self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner).sorted;
        if needs_sort {
            let mut index = self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !index.sorted {
                index.entries.sort_unstable();
                index.entries.dedup();
                index.sorted = true;
            }
        }
        let index = self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let hash = path_hash(path);
        let start = index.entries.partition_point(|e| e.0 < hash);
        let mut by_job: HashMap<u32, (u8, u8, u8)> = HashMap::new();
        for entry in index.entries[start..].iter().take_while(|e| e.0 == hash) {
            let slot = by_job.entry(entry.1).or_insert((entry.2, entry.3, entry.4));
            *slot = (slot.0.max(entry.2), slot.1.max(entry.3), entry.4);
        }
        let mut owners: Vec<Owner> = by_job
            .into_iter()
            .map(|(position, (role, source, kind))| Owner {
                job_id: index.jobs[position as usize].clone(),
                kind: if kind == 1 { Kind::Agg } else { Kind::Sim },
                role: role_of(role),
                source: if source == 1 { Source::Reported } else { Source::Derived },
            })
            .collect();
        owners.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        owners
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner).entries.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
