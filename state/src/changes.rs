//! The state changes of a batch of messages, built up before they are
//! committed. Later writes to a key win; reads see the batch's own writes.

use crate::{StateError, StateRead, Table};
use std::collections::HashMap;

/// One change as it goes to RocksDB and to the changelog: full key (table
/// prefix included) and the new value, `None` for a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

#[derive(Debug, Default, Clone)]
pub struct ChangeSet {
    entries: Vec<Entry>,
    latest: HashMap<Vec<u8>, usize>,
}

impl ChangeSet {
    pub fn put(&mut self, table: Table, key: &[u8], value: Vec<u8>) {
        self.push(Entry {
            key: table.key(key),
            value: Some(value),
        });
    }

    pub fn delete(&mut self, table: Table, key: &[u8]) {
        self.push(Entry {
            key: table.key(key),
            value: None,
        });
    }

    pub fn push(&mut self, entry: Entry) {
        self.latest.insert(entry.key.clone(), self.entries.len());
        self.entries.push(entry);
    }

    pub fn extend(&mut self, other: ChangeSet) {
        for entry in other.entries {
            self.push(entry);
        }
    }

    /// `Some(None)` when the batch deleted the key, `None` when it never
    /// touched it.
    pub fn lookup(&self, full_key: &[u8]) -> Option<Option<&[u8]>> {
        self.latest
            .get(full_key)
            .map(|index| self.entries[*index].value.as_deref())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entries in write order with superseded writes to the same key removed.
    pub fn into_entries(self) -> Vec<Entry> {
        let latest = self.latest;
        self.entries
            .into_iter()
            .enumerate()
            .filter(|(index, entry)| latest.get(&entry.key) == Some(index))
            .map(|(_, entry)| entry)
            .collect()
    }
}

/// A store seen through the uncommitted changes of the current batch, so the
/// second message of a batch sees what the first one wrote.
pub struct Overlay<'a, S: StateRead + ?Sized> {
    pub base: &'a S,
    pub changes: &'a ChangeSet,
}

impl<S: StateRead + ?Sized> StateRead for Overlay<'_, S> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        match self.changes.lookup(&table.key(key)) {
            Some(value) => Ok(value.map(<[u8]>::to_vec)),
            None => self.base.get(table, key),
        }
    }

    /// The store's range with the batch's own writes and deletes applied.
    fn range(
        &self,
        table: Table,
        from: &[u8],
        until: &[u8],
        limit: usize,
    ) -> Result<crate::KeyValues, StateError> {
        let (low, high) = (table.key(from), table.key(until));
        let touched: Vec<(&Vec<u8>, Option<&[u8]>)> = self
            .changes
            .latest
            .iter()
            .filter(|(key, _)| key.as_slice() >= low.as_slice() && key.as_slice() < high.as_slice())
            .map(|(key, index)| (key, self.changes.entries[*index].value.as_deref()))
            .collect();
        // Enough from the store that deletes in the batch cannot leave fewer
        // than `limit` when more exist.
        let base = self.base.range(table, from, until, limit + touched.len())?;
        let mut merged: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = base.into_iter().collect();
        for (full_key, value) in touched {
            let key = full_key[1..].to_vec();
            match value {
                Some(value) => merged.insert(key, value.to_vec()),
                None => merged.remove(&key),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_writes_win_and_are_deduplicated() {
        let mut changes = ChangeSet::default();
        changes.put(Table::Orders, b"a", b"1".to_vec());
        changes.put(Table::Orders, b"b", b"1".to_vec());
        changes.put(Table::Orders, b"a", b"2".to_vec());
        changes.delete(Table::Orders, b"b");
        assert_eq!(
            changes.lookup(&Table::Orders.key(b"a")),
            Some(Some(b"2".as_slice()))
        );
        assert_eq!(changes.lookup(&Table::Orders.key(b"b")), Some(None));
        assert_eq!(changes.lookup(&Table::Orders.key(b"c")), None);
        let entries = changes.into_entries();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].value.as_deref(), Some(b"2".as_slice()));
        assert_eq!(entries[1].value, None);
    }

    /// A store of a few fixed entries.
    struct Fixed(Vec<(Vec<u8>, Vec<u8>)>);

    impl StateRead for Fixed {
        fn get(&self, _: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
            Ok(self
                .0
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone()))
        }

        fn range(
            &self,
            _: Table,
            from: &[u8],
            until: &[u8],
            limit: usize,
        ) -> Result<crate::KeyValues, StateError> {
            Ok(self
                .0
                .iter()
                .filter(|(k, _)| k.as_slice() >= from && k.as_slice() < until)
                .take(limit)
                .cloned()
                .collect())
        }
    }

    #[test]
    fn ranges_see_the_batch_writes_and_deletes() {
        let base = Fixed(vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"1".to_vec()),
            (b"d".to_vec(), b"1".to_vec()),
        ]);
        let mut changes = ChangeSet::default();
        changes.delete(Table::Deadlines, b"a");
        changes.put(Table::Deadlines, b"c", b"2".to_vec());
        changes.put(Table::Orders, b"c", b"x".to_vec());
        let overlay = Overlay {
            base: &base,
            changes: &changes,
        };
        let keys: Vec<Vec<u8>> = overlay
            .range(Table::Deadlines, b"a", b"d", 10)
            .expect("range")
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(keys, [b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(
            overlay
                .range(Table::Deadlines, b"a", b"z", 1)
                .expect("range")
                .len(),
            1
        );
    }
}
