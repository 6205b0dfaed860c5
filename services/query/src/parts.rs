//! The compacted parts the catalog knows ([`modelops_core::compacted`]), and which job each
//! one may stand for.
//!
//! A part is known from its manifest alone. What the catalog keeps per member job is one entry
//! of an index (64-bit hashes of the job id and of the table version the part copied, and which
//! part): about 30 bytes a job. A scan asks [`Parts::split`] which jobs to read from which part:
//! a job is read from its part only while that hash is the one of the version its own manifest
//! names now, and each job from one part at most. A part listed by several manifests' members
//! (two writers with different views) is harmless: the index keeps one part per job, the last
//! loaded.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use modelops_core::compacted::PartManifest;
use object_store::ObjectMeta;
use object_store::path::Path;

use crate::catalog::{JobEntry, hash64};

/// One compacted part.
#[derive(Debug)]
pub struct Part {
    /// Its id (32 hex digits).
    pub id: String,
    /// Its rows file, with the size its manifest gives.
    pub file: ObjectMeta,
    /// The rows' schema (shared with the member jobs of that schema).
    pub schema: SchemaRef,
    /// The bundle ref of every member.
    pub bundle_digest: Arc<str>,
    /// How many jobs it holds.
    pub members: usize,
    /// Rows in all.
    pub rows: u64,
}

/// The jobs of a scan that one part stands for.
#[derive(Debug)]
pub struct PartScan {
    /// The part.
    pub part: Arc<Part>,
    /// The jobs to keep rows of: the scan's jobs the part holds at their current version.
    pub jobs: std::collections::HashSet<String>,
}

/// Every known part and, per member job, which part holds it at which version.
#[derive(Debug, Default)]
pub struct Parts {
    /// Parts by slot; a forgotten part leaves `None`, so slots stay valid.
    slots: Vec<Option<Arc<Part>>>,
    /// A part's slot by id.
    by_id: HashMap<String, usize>,
    /// Per member job, by the hash of its id ([`job_hash`]): the hash of the table version
    /// copied ([`version_hash`]) and the slot. Two jobs sharing an id hash share an entry: the
    /// one whose version it does not hold is read from its own table.
    by_job: HashMap<u64, (u64, u32)>,
}

/// A 64-bit hash of a job id, the key of the index.
pub fn job_hash(job: &str) -> u64 {
    hash64(job)
}

/// A 64-bit hash of a table version: its key and size. Two versions sharing one (about one
/// chance in 10¹⁹ for a job's two versions) would read a job's earlier rows; the key names an
/// immutable version, so this needs the same name and size for different bytes too.
pub fn version_hash(key: &str, size: u64) -> u64 {
    hash64(&(key, size))
}

impl Parts {
    /// Whether part `id` is known (also when none of its members is any more).
    pub fn knows(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// The ids of every known part.
    pub fn ids(&self) -> Vec<String> {
        self.by_id.keys().cloned().collect()
    }

    /// Every known part.
    pub fn all(&self) -> Vec<Arc<Part>> {
        self.slots.iter().flatten().cloned().collect()
    }

    /// How many jobs some part holds (at whatever version).
    pub fn jobs_held(&self) -> usize {
        self.by_job.len()
    }

    /// Adds a part from its `manifest`; its members now point to it. Member keys were checked
    /// when the manifest was read.
    pub fn add(&mut self, part: Part, manifest: &PartManifest) {
        if self.by_id.contains_key(&part.id) {
            return;
        }
        let slot = self.slots.len();
        let Ok(slot_index) = u32::try_from(slot) else { return };
        self.by_id.insert(part.id.clone(), slot);
        self.slots.push(Some(Arc::new(part)));
        for member in &manifest.members {
            let Ok(key) = member.table_key() else { continue };
            self.by_job.insert(job_hash(&member.job_id), (version_hash(&key, member.losses_bytes), slot_index));
        }
    }

    /// Forgets part `id` and the members that point to it.
    pub fn forget(&mut self, id: &str) {
        let Some(slot) = self.by_id.remove(id) else { return };
        self.slots[slot] = None;
        let slot = slot as u32;
        self.by_job.retain(|_, (_, of)| *of != slot);
    }

    /// Forgets the members that are no job the catalog knows (`known` holds the [`job_hash`] of
    /// each; deleted since the part was written), and the parts left without any: their index entries would be kept for
    /// nothing. Such a part's id stays known, so its manifest is not read again.
    pub fn keep_jobs(&mut self, known: &std::collections::HashSet<u64>) {
        self.by_job.retain(|job, _| known.contains(job));
        let mut held = vec![false; self.slots.len()];
        for (_, slot) in self.by_job.values() {
            held[*slot as usize] = true;
        }
        for (part, held) in self.slots.iter_mut().zip(held) {
            if !held {
                *part = None;
            }
        }
    }

    /// The part standing for `job` now, if one does: it holds the job at the version the
    /// job's manifest names.
    pub fn part_of(&self, job: &JobEntry) -> Option<&Arc<Part>> {
        let (hash, slot) = self.by_job.get(&job_hash(&job.job_id))?;
        if *hash != version_hash(job.table.location.as_ref(), job.table.size) {
            return None;
        }
        self.slots.get(*slot as usize)?.as_ref()
    }

    /// `jobs` split into those to read from their own tables and, per part, those to read from
    /// it (each job in one place).
    pub fn split(&self, jobs: Vec<Arc<JobEntry>>) -> (Vec<Arc<JobEntry>>, Vec<PartScan>) {
        if self.by_job.is_empty() {
            return (jobs, Vec::new());
        }
        let mut own = Vec::new();
        let mut scans: HashMap<usize, PartScan> = HashMap::new();
        for job in jobs {
            match self.part_of(&job) {
                Some(part) => {
                    let slot = self.by_id[&part.id];
                    let scan = scans.entry(slot).or_insert_with(|| PartScan {
                        part: Arc::clone(part),
                        jobs: std::collections::HashSet::new(),
                    });
                    scan.jobs.insert(job.job_id.clone());
                }
                None => own.push(job),
            }
        }
        let mut scans: Vec<PartScan> = scans.into_values().collect();
        scans.sort_by(|a, b| a.part.id.cmp(&b.part.id));
        (own, scans)
    }
}

/// The rows file of part `id` as its manifest describes it.
pub fn rows_file(id: &str, manifest: &PartManifest, last_modified: chrono::DateTime<chrono::Utc>) -> ObjectMeta {
    ObjectMeta {
        location: Path::from(modelops_core::compacted::part_rows_file(id)),
        last_modified,
        size: manifest.rows_bytes,
        e_tag: None,
        version: None,
    }
}
