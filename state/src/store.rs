use crate::{
    decode_entries, decode_offset, encode_offset, Entry, StateError, StateRead, Table,
    APPLIED_OFFSET, CHANGELOG_NEXT, CHANGELOG_OUTBOX, RESTORED,
};
use rocksdb::{
    ColumnFamilyDescriptor, DBWithThreadMode, MultiThreaded, Options, WriteBatch, WriteOptions,
};
use std::path::Path;
use std::sync::Arc;

type Db = DBWithThreadMode<MultiThreaded>;

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// fsync the WAL on every commit. Off by default: the WAL reaches the OS
    /// before `commit` returns, which survives a killed process; a lost
    /// machine is covered by the changelog topic.
    pub sync_writes: bool,
    /// Memtable size per partition; many small partitions share one process.
    pub write_buffer_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            sync_writes: false,
            write_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

/// All partition stores of one processor instance.
#[derive(Clone)]
pub struct Store {
    db: Arc<Db>,
    options: StoreOptions,
}

impl Store {
    pub fn open(path: &Path, options: StoreOptions) -> Result<Self, StateError> {
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        // A missing database simply has no column families yet.
        let existing = Db::list_cf(&db_options, path).unwrap_or_default();
        let descriptors = existing
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, column_family_options(&options)));
        let db = Db::open_cf_descriptors(&db_options, path, descriptors)?;
        Ok(Self {
            db: Arc::new(db),
            options,
        })
    }

    fn column_family(partition: i32) -> String {
        format!("partition-{partition}")
    }

    /// The store of `partition`, if this instance has one.
    pub fn partition(&self, partition: i32) -> Option<PartitionStore> {
        let name = Self::column_family(partition);
        self.db.cf_handle(&name)?;
        Some(self.partition_store(partition, name))
    }

    pub fn create_partition(&self, partition: i32) -> Result<PartitionStore, StateError> {
        let name = Self::column_family(partition);
        if self.db.cf_handle(&name).is_none() {
            self.db
                .create_cf(&name, &column_family_options(&self.options))?;
        }
        Ok(self.partition_store(partition, name))
    }

    /// Forget a partition's state, e.g. a restore that did not finish.
    pub fn drop_partition(&self, partition: i32) -> Result<(), StateError> {
        let name = Self::column_family(partition);
        if self.db.cf_handle(&name).is_some() {
            self.db.drop_cf(&name)?;
        }
        Ok(())
    }

    fn partition_store(&self, partition: i32, column_family: String) -> PartitionStore {
        PartitionStore {
            db: Arc::clone(&self.db),
            column_family,
            partition,
            sync_writes: self.options.sync_writes,
        }
    }
}

fn column_family_options(options: &StoreOptions) -> Options {
    let mut cf = Options::default();
    cf.set_write_buffer_size(options.write_buffer_bytes);
    cf
}

/// The state of one input partition.
#[derive(Clone)]
pub struct PartitionStore {
    db: Arc<Db>,
    column_family: String,
    partition: i32,
    sync_writes: bool,
}

impl PartitionStore {
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The offset of the last input message whose effects are in this store.
    pub fn applied_offset(&self) -> Result<Option<i64>, StateError> {
        self.get(Table::Meta, APPLIED_OFFSET)?
            .map(|bytes| decode_offset(&bytes))
            .transpose()
    }

    /// Whether a restore from the changelog ran to its end (or none was needed).
    pub fn is_restored(&self) -> Result<bool, StateError> {
        Ok(self.get(Table::Meta, RESTORED)?.is_some())
    }

    /// Where this instance's next changelog entry will land, as far as it knows.
    pub fn changelog_next(&self) -> Result<Option<i64>, StateError> {
        self.get(Table::Meta, CHANGELOG_NEXT)?
            .map(|bytes| decode_offset(&bytes))
            .transpose()
    }

    /// Entries committed locally but not yet acknowledged by the changelog.
    pub fn changelog_outbox(&self) -> Result<Option<Vec<Entry>>, StateError> {
        self.get(Table::Meta, CHANGELOG_OUTBOX)?
            .map(|bytes| decode_entries(&bytes))
            .transpose()
    }

    /// The changelog holds everything up to `next`: clear the outbox.
    pub fn changelog_appended(&self, next: i64) -> Result<(), StateError> {
        self.write(&[
            Entry {
                key: Table::Meta.key(CHANGELOG_OUTBOX),
                value: None,
            },
            Entry {
                key: Table::Meta.key(CHANGELOG_NEXT),
                value: Some(encode_offset(next)),
            },
        ])
    }

    /// An empty store that will follow the changelog from `next` (a warm
    /// standby's): nothing before `next` is owed to it, so it counts as
    /// restored, with its checkpoint there.
    pub fn begin_at(&self, next: i64) -> Result<(), StateError> {
        self.write(&[
            Entry {
                key: Table::Meta.key(RESTORED),
                value: Some(vec![1]),
            },
            crate::changelog_checkpoint_entry(next),
        ])
    }

    /// One whole changelog group (entries up to and including the
    /// applied-offset record), applied with the checkpoint after it in one
    /// write. A group appended by another owner makes this store's outbox
    /// moot (that owner handled the batch again), so the outbox goes too.
    pub fn apply_changelog_group(&self, group: &[Entry], next: i64) -> Result<(), StateError> {
        let mut entries = Vec::with_capacity(group.len() + 2);
        entries.extend_from_slice(group);
        entries.push(Entry {
            key: Table::Meta.key(CHANGELOG_OUTBOX),
            value: None,
        });
        entries.push(crate::changelog_checkpoint_entry(next));
        self.write(&entries)
    }

    pub fn mark_restored(&self) -> Result<(), StateError> {
        self.write(&[Entry {
            key: Table::Meta.key(RESTORED),
            value: Some(vec![1]),
        }])
    }

    /// Write entries atomically, in order. The runtime puts the applied offset
    /// among them, which is what makes "state changed" and "message consumed"
    /// one event.
    pub fn write(&self, entries: &[Entry]) -> Result<(), StateError> {
        let handle = self.handle()?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            match &entry.value {
                Some(value) => batch.put_cf(&handle, &entry.key, value),
                None => batch.delete_cf(&handle, &entry.key),
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(self.sync_writes);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    fn handle(&self) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>, StateError> {
        self.db
            .cf_handle(&self.column_family)
            .ok_or(StateError::UnknownPartition(self.partition))
    }
}

impl StateRead for PartitionStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let handle = self.handle()?;
        Ok(self.db.get_cf(&handle, table.key(key))?)
    }

    fn range(
        &self,
        table: Table,
        from: &[u8],
        until: &[u8],
        limit: usize,
    ) -> Result<crate::KeyValues, StateError> {
        let handle = self.handle()?;
        let (low, high) = (table.key(from), table.key(until));
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(high);
        let iterator = self.db.iterator_cf_opt(
            &handle,
            options,
            rocksdb::IteratorMode::From(&low, rocksdb::Direction::Forward),
        );
        let mut found = Vec::new();
        for item in iterator.take(limit) {
            let (key, value) = item?;
            found.push((key[1..].to_vec(), value.to_vec()));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{applied_offset_key, encode_offset, ChangeSet};

    fn open(dir: &Path) -> Store {
        Store::open(dir, StoreOptions::default()).expect("store opens")
    }

    #[test]
    fn state_and_offset_commit_together_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = open(dir.path());
            let partition = store.create_partition(7).expect("partition");
            assert_eq!(partition.applied_offset().expect("read"), None);
            let mut changes = ChangeSet::default();
            changes.put(Table::Orders, b"o-1", b"order".to_vec());
            let mut entries = changes.into_entries();
            entries.push(Entry {
                key: applied_offset_key(),
                value: Some(encode_offset(41)),
            });
            partition.write(&entries).expect("commit");
        }
        let store = open(dir.path());
        let partition = store.partition(7).expect("partition survives reopen");
        assert_eq!(partition.applied_offset().expect("read"), Some(41));
        assert_eq!(
            partition.get(Table::Orders, b"o-1").expect("read"),
            Some(b"order".to_vec())
        );
        assert!(store.partition(8).is_none());
    }

    #[test]
    fn a_followed_group_lands_with_its_checkpoint_and_clears_the_outbox() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let partition = store.create_partition(2).expect("partition");
        partition.begin_at(5).expect("begin");
        assert!(partition.is_restored().expect("read"));
        assert_eq!(partition.changelog_next().expect("read"), Some(5));
        partition
            .write(&[crate::changelog_outbox_entry(&[])])
            .expect("outbox");
        let group = [
            Entry {
                key: Table::Stock.key(b"sku-1"),
                value: Some(b"7".to_vec()),
            },
            Entry {
                key: applied_offset_key(),
                value: Some(encode_offset(12)),
            },
        ];
        partition.apply_changelog_group(&group, 9).expect("apply");
        assert_eq!(partition.changelog_next().expect("read"), Some(9));
        assert_eq!(partition.applied_offset().expect("read"), Some(12));
        assert_eq!(
            partition.get(Table::Stock, b"sku-1").expect("read"),
            Some(b"7".to_vec())
        );
        assert!(partition.changelog_outbox().expect("read").is_none());
    }

    #[test]
    fn dropped_partition_starts_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let partition = store.create_partition(1).expect("partition");
        partition.mark_restored().expect("mark");
        assert!(partition.is_restored().expect("read"));
        store.drop_partition(1).expect("drop");
        assert!(store.partition(1).is_none());
        let again = store.create_partition(1).expect("recreate");
        assert!(!again.is_restored().expect("read"));
    }
}
