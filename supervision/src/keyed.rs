//! An ordered map for keys that only ever grow: children are inserted with increasing keys
//! (their spec order), so a sorted `Vec` holds them densely and finds one by binary search.
//! A `BTreeMap` filled in key order leaves its nodes about half empty, which a district
//! supervisor of 100,000 children pays twice (its children and their snapshots).

/// Entries sorted by key; [`insert`](Self::insert) expects a key above every present one.
#[derive(Debug, Clone)]
pub(crate) struct KeyedVec<V> {
    entries: Vec<(u64, V)>,
}

impl<V> Default for KeyedVec<V> {
    fn default() -> Self {
        Self { entries: Vec::new() }
    }
}

impl<V> KeyedVec<V> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self { entries: Vec::with_capacity(n) }
    }

    fn find(&self, key: u64) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&key, |(k, _)| *k)
    }

    /// Insert (or replace). O(1) for a key above every present one, O(n) otherwise.
    pub(crate) fn insert(&mut self, key: u64, value: V) {
        if self.entries.last().is_none_or(|(k, _)| *k < key) {
            self.entries.push((key, value));
            return;
        }
        match self.find(key) {
            Ok(i) => self.entries[i].1 = value,
            Err(i) => self.entries.insert(i, (key, value)),
        }
    }

    pub(crate) fn get(&self, key: u64) -> Option<&V> {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    pub(crate) fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        self.find(key).ok().map(|i| &mut self.entries[i].1)
    }

    pub(crate) fn contains_key(&self, key: u64) -> bool {
        self.find(key).is_ok()
    }

    /// O(n): only run-time removals (terminate, temporary children) use it.
    pub(crate) fn remove(&mut self, key: u64) -> Option<V> {
        self.find(key).ok().map(|i| self.entries.remove(i).1)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn first_key(&self) -> Option<u64> {
        self.entries.first().map(|(k, _)| *k)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        self.entries.iter().map(|(k, v)| (*k, v))
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut V)> {
        self.entries.iter_mut().map(|(k, v)| (*k, v))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::KeyedVec;

    #[test]
    fn keeps_key_order_and_finds_by_key() {
        let mut m = KeyedVec::default();
        for k in [0, 1, 2, 5, 9] {
            m.insert(k, k * 10);
        }
        m.insert(3, 30);
        assert_eq!(m.get(5), Some(&50));
        assert_eq!(m.remove(2), Some(20));
        assert_eq!(m.get(2), None);
        *m.get_mut(9).expect("present") += 1;
        assert_eq!(m.iter().map(|(k, v)| (k, *v)).collect::<Vec<_>>(), [(0, 0), (1, 10), (3, 30), (5, 50), (9, 91)]);
        assert_eq!(m.first_key(), Some(0));
        assert_eq!(m.len(), 5);
    }
}
