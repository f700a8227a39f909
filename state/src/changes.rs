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
}
