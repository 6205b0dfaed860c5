//! Values held within a byte budget, the least recently used evicted first: what the table
//! cache keeps of decoded tables and the footer cache of Parquet footers.

use std::collections::HashMap;
use std::hash::Hash;

/// One held value.
#[derive(Debug)]
struct Held<V> {
    value: V,
    bytes: usize,
    last_used: u64,
}

/// Values by key with their sizes; the caller holds it behind its lock.
#[derive(Debug)]
pub(crate) struct Budgeted<K, V> {
    held: HashMap<K, Held<V>>,
    bytes: usize,
    clock: u64,
}

impl<K, V> Default for Budgeted<K, V> {
    fn default() -> Self {
        Self {
            held: HashMap::new(),
            bytes: 0,
            clock: 0,
        }
    }
}

impl<K: Eq + Hash + Clone, V> Budgeted<K, V> {
    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The value of `key`, without marking it used.
    pub(crate) fn peek(&self, key: &K) -> Option<&V> {
        self.held.get(key).map(|held| &held.value)
    }

    /// The value of `key`, marked as used now.
    pub(crate) fn get(&mut self, key: &K) -> Option<&V> {
        self.clock += 1;
        let clock = self.clock;
        let held = self.held.get_mut(key)?;
        held.last_used = clock;
        Some(&held.value)
    }

    /// Removes the value of `key`.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let held = self.held.remove(key)?;
        self.bytes -= held.bytes;
        Some(held.value)
    }

    /// Holds `value`, of `bytes`, as `key`'s (replacing what it held), after evicting the least
    /// recently used values until it fits `budget`; `evicted` is told each key evicted and its
    /// bytes. The caller refuses a value larger than the budget first.
    pub(crate) fn insert(&mut self, key: K, value: V, bytes: usize, budget: usize, mut evicted: impl FnMut(&K, usize)) {
        self.remove(&key);
        while self.bytes + bytes > budget {
            let Some(oldest) = self.held.iter().min_by_key(|(_, held)| held.last_used).map(|(key, _)| key.clone()) else {
                break;
            };
            let gone = self.held.remove(&oldest).expect("just found");
            self.bytes -= gone.bytes;
            evicted(&oldest, gone.bytes);
        }
        self.clock += 1;
        self.bytes += bytes;
        let last_used = self.clock;
        self.held.insert(key, Held { value, bytes, last_used });
    }
}
