//! Reading a changelog: its records, gathered into the groups that batches
//! appended (each ends with its applied-offset record), and where a store
//! may resume reading it. Shared by the restore and the warm standby.

use crate::error::RuntimeError;
use d2c_state::{Entry, PartitionStore};
use rdkafka::message::Message;
use std::collections::HashMap;

/// Where reading the changelog `[low, high)` may resume for `store`, or
/// `None` when the store must be rebuilt: a restore that never finished, an
/// outbox of an at-least-once life under exactly-once (committed locally
/// and maybe never appended: only the changelog is trusted there), or a
/// checkpoint outside the changelog.
pub(crate) fn resumable_checkpoint(
    store: &PartitionStore,
    low: i64,
    high: i64,
    exactly_once: bool,
) -> Result<Option<i64>, RuntimeError> {
    if !store.is_restored()? || (exactly_once && store.changelog_outbox()?.is_some()) {
        return Ok(None);
    }
    let next = store.changelog_next()?.unwrap_or(0);
    Ok((low..=high).contains(&next).then_some(next))
}

/// (partition, offset, entry) of a changelog record.
pub(crate) fn changelog_record(
    message: &rdkafka::message::BorrowedMessage<'_>,
) -> (i32, i64, Entry) {
    let entry = Entry {
        key: message.key().unwrap_or_default().to_vec(),
        value: message.payload().map(<[u8]>::to_vec),
    };
    (message.partition(), message.offset(), entry)
}

/// Changelog records of followed partitions, gathered into whole groups:
/// the unit both the restore and a warm standby apply.
#[derive(Default)]
pub(crate) struct Groups {
    partitions: HashMap<i32, Gathering>,
}

struct Gathering {
    /// The offset the next record may have; lower ones were applied (a
    /// record fetched before a release and handed out after a re-follow).
    next: i64,
    entries: Vec<Entry>,
}

impl Groups {
    pub fn follow(&mut self, partition: i32, from: i64) {
        self.partitions.insert(
            partition,
            Gathering {
                next: from,
                entries: Vec::new(),
            },
        );
    }

    /// Forget `partition` and its unfinished group; whether it was followed.
    pub fn release(&mut self, partition: i32) -> bool {
        self.partitions.remove(&partition).is_some()
    }

    pub fn is_followed(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    pub fn followed(&self) -> Vec<i32> {
        self.partitions.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.partitions.len()
    }

    /// Entries of `partition` waiting for their group's last record.
    pub fn unfinished(&self, partition: i32) -> usize {
        self.partitions
            .get(&partition)
            .map_or(0, |gathering| gathering.entries.len())
    }

    /// A record of `partition` at `offset`: the whole group it completes,
    /// if it is the group's applied-offset record, with the checkpoint
    /// after it.
    pub fn record(
        &mut self,
        partition: i32,
        offset: i64,
        entry: Entry,
        marker: &[u8],
    ) -> Option<(Vec<Entry>, i64)> {
        let gathering = self.partitions.get_mut(&partition)?;
        if offset < gathering.next {
            return None;
        }
        gathering.next = offset + 1;
        let ends_group = entry.key == marker;
        gathering.entries.push(entry);
        ends_group.then(|| (std::mem::take(&mut gathering.entries), offset + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::Groups;

    fn entry(key: &[u8]) -> d2c_state::Entry {
        d2c_state::Entry {
            key: key.to_vec(),
            value: Some(b"v".to_vec()),
        }
    }

    const MARKER: &[u8] = b"marker";

    #[test]
    fn a_group_is_handed_over_only_once_its_marker_arrives_with_the_checkpoint_after_it() {
        let mut groups = Groups::default();
        groups.follow(3, 10);
        assert!(groups.record(3, 10, entry(b"a"), MARKER).is_none());
        assert!(groups.record(3, 11, entry(b"b"), MARKER).is_none());
        // Offset 12 was a commit marker, never handed to the application.
        let (group, next) = groups
            .record(3, 13, entry(MARKER), MARKER)
            .expect("the marker completes the group");
        assert_eq!(group.len(), 3);
        assert_eq!(next, 14);
        assert!(groups.record(3, 15, entry(b"c"), MARKER).is_none());
    }

    #[test]
    fn records_of_unfollowed_partitions_and_already_applied_offsets_are_ignored() {
        let mut groups = Groups::default();
        assert!(groups.record(1, 0, entry(MARKER), MARKER).is_none());
        groups.follow(1, 20);
        assert!(groups.record(1, 19, entry(MARKER), MARKER).is_none());
        assert!(groups.record(1, 20, entry(MARKER), MARKER).is_some());
        assert!(groups.record(1, 20, entry(MARKER), MARKER).is_none());
    }

    #[test]
    fn a_released_partition_drops_its_unfinished_group() {
        let mut groups = Groups::default();
        groups.follow(2, 0);
        assert!(groups.record(2, 0, entry(b"half"), MARKER).is_none());
        assert!(groups.release(2));
        assert!(!groups.release(2));
        groups.follow(2, 0);
        let (group, _) = groups.record(2, 1, entry(MARKER), MARKER).expect("group");
        assert_eq!(group.len(), 1, "the half group before the release is gone");
    }
}
