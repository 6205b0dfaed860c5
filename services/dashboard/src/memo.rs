//! Values computed once and kept by key: the pair matrix's grids, the two-parameter sections, the
//! drawn plots and histograms that hang off a landscape. Each keeps its last `capacity` keys; a
//! value is computed outside the lock, so a slow one never blocks readers of the others.

use std::sync::Mutex;

/// At most `capacity` values, by key, the oldest dropped first.
#[derive(Debug)]
pub struct Memo<K, V> {
    capacity: usize,
    entries: Mutex<Vec<(K, V)>>,
}

impl<K: PartialEq, V: Clone> Memo<K, V> {
    /// An empty memo keeping at most `capacity` values (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// The value kept for `key`, or the one `make` computes, kept.
    pub fn get_or_try_insert<E>(&self, key: K, make: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        if let Some((_, value)) = self.lock().iter().find(|(k, _)| *k == key) {
            return Ok(value.clone());
        }
        let value = make()?;
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.remove(0);
        }
        entries.push((key, value.clone()));
        Ok(value)
    }

    /// The value kept for `key`, or the one `make` computes, kept.
    pub fn get_or_insert(&self, key: K, make: impl FnOnce() -> V) -> V {
        self.get_or_try_insert(key, || Ok::<_, std::convert::Infallible>(make())).unwrap_or_else(|never| match never {})
    }

    /// Values kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(K, V)>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_computed_once_a_failure_is_not_kept_and_the_oldest_goes_first() {
        let memo: Memo<u32, u32> = Memo::new(2);
        assert_eq!(memo.get_or_try_insert(1, || Err::<u32, &str>("down")), Err("down"));
        assert!(memo.is_empty());
        assert_eq!(memo.get_or_insert(1, || 10), 10);
        assert_eq!(memo.get_or_insert(1, || unreachable!("kept")), 10);
        memo.get_or_insert(2, || 20);
        memo.get_or_insert(3, || 30);
        assert_eq!(memo.len(), 2);
        assert_eq!(memo.get_or_insert(1, || 11), 11, "the oldest was dropped");
    }
}
