//! Where each row's aggregation is: for every parameter set × target of the job, the
//! aggregation directory from the job's attribution edges (or none: the row is missing).
//!
//! [`locate`] works on edges in memory; [`EdgeIndex`] holds a job's aggregation edges in about
//! 50 bytes each, for jobs of millions of rows whose edges arrive as a stream.

use std::collections::HashMap;

use crate::error::IndexError;

use modelops_attribution_client::AggEdge;
use modelops_core::study::SimJobSpec;

/// One row to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggLocation {
    /// Index of the parameter set in the job's task groups.
    pub group: usize,
    /// The target entrypoint.
    pub target: String,
    /// The aggregation directory, if the job has one.
    pub path: Option<String>,
    /// Whether the job found it in the cache.
    pub cache_hit: bool,
}

/// Rows in table order (parameter sets in task order, targets in spec order), located by the
/// job's aggregation `edges`.
pub fn locate<'a>(job: &SimJobSpec, edges: impl IntoIterator<Item = AggEdge<'a>>) -> Vec<AggLocation> {
    let by_key: HashMap<(&str, &str), AggEdge<'a>> = edges.into_iter().map(|e| ((e.param_id, e.target), e)).collect();
    let targets = job.target_entrypoints();
    let mut rows = Vec::new();
    for (group, params) in job.task_groups().iter().enumerate() {
        for target in &targets {
            let edge = by_key.get(&(params.param_id, target.as_str()));
            rows.push(AggLocation {
                group,
                target: target.clone(),
                path: edge.map(|e| e.path.to_owned()),
                cache_hit: edge.is_some_and(|e| e.cache_hit),
            });
        }
    }
    rows
}

/// 128 bits of BLAKE2b over `parts`, each followed by a zero byte (so `["ab", "c"]` and
/// `["a", "bc"]` differ): keys for parameter sets and parameter set × target pairs without
/// keeping their strings.
pub(crate) fn key128(parts: &[&str]) -> u128 {
    let mut state = blake2b_simd::Params::new().hash_length(16).to_state();
    for part in parts {
        state.update(part.as_bytes()).update(&[0]);
    }
    u128::from_le_bytes(state.finalize().as_bytes().try_into().expect("16-byte digest"))
}

/// Where one edge points: its directory's parent with the `/` (interned) and last segment (in
/// an arena).
#[derive(Debug, Clone, Copy)]
struct Slot {
    parent: u32,
    leaf_start: u32,
    leaf_len: u32,
    cache_hit: bool,
}

/// A job's aggregation edges keyed by parameter set × target, compactly: a sorted vector of
/// 128-bit keys, each aggregation directory split into its parent, interned (one per bundle
/// and target in practice), and its last segment, kept in one string. Filled with
/// [`EdgeIndex::insert`], then [`EdgeIndex::finish`]ed before lookups; for one key the last
/// edge inserted wins, as in [`locate`].
#[derive(Debug, Default)]
pub struct EdgeIndex {
    entries: Vec<(u128, Slot)>,
    parents: Vec<String>,
    parent_ids: HashMap<String, u32>,
    leaves: String,
    finished: bool,
}

impl EdgeIndex {
    /// Adds the edge of `param_id` × `target` to the directory `path`.
    pub fn insert(&mut self, param_id: &str, target: &str, path: &str, cache_hit: bool) -> Result<(), IndexError> {
        let too_many = || IndexError::Invalid("the job's aggregation edges exceed 4 GiB of paths".into());
        // The parent keeps its trailing `/`, so parent + leaf is the path exactly.
        let (parent, leaf) = path.split_at(path.rfind('/').map_or(0, |i| i + 1));
        let parent = match self.parent_ids.get(parent) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.parents.len()).map_err(|_| too_many())?;
                self.parents.push(parent.to_owned());
                self.parent_ids.insert(parent.to_owned(), id);
                id
            }
        };
        let leaf_start = u32::try_from(self.leaves.len()).map_err(|_| too_many())?;
        self.leaves.push_str(leaf);
        let leaf_len = u32::try_from(leaf.len()).map_err(|_| too_many())?;
        self.entries.push((
            key128(&[param_id, target]),
            Slot {
                parent,
                leaf_start,
                leaf_len,
                cache_hit,
            },
        ));
        self.finished = false;
        Ok(())
    }

    /// Sorts the edges for lookups, keeping the last inserted of each key.
    pub fn finish(&mut self) {
        // Reversed, a stable sort puts the last inserted edge of a key first, which dedup keeps.
        self.entries.reverse();
        self.entries.sort_by_key(|(key, _)| *key);
        self.entries.dedup_by_key(|(key, _)| *key);
        self.entries.shrink_to_fit();
        self.finished = true;
    }

    /// How many parameter set × target pairs have an edge.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no edges.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where `param_id` × `target`'s aggregation is: its directory and whether the job found
    /// it in the cache.
    pub fn get(&self, param_id: &str, target: &str) -> Option<(String, bool)> {
        debug_assert!(self.finished, "EdgeIndex::get before finish");
        let key = key128(&[param_id, target]);
        let slot = self.entries.binary_search_by_key(&key, |(k, _)| *k).ok().map(|i| self.entries[i].1)?;
        let parent = &self.parents[slot.parent as usize];
        let leaf = &self.leaves[slot.leaf_start as usize..(slot.leaf_start + slot.leaf_len) as usize];
        Some((format!("{parent}{leaf}"), slot.cache_hit))
    }
}
