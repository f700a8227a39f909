//! Partition stores on RocksDB.
//!
//! One RocksDB instance per processor process; one column family per owned
//! input partition, so a partition's state can be dropped or restored on its
//! own when the partition moves. Every key starts with a [`Table`] prefix
//! byte. The consumed offset lives in the [`Table::Meta`] table and is written
//! in the same `WriteBatch` as the state change it produced: after a crash the
//! store is either before or after a message, never half-way.

mod changes;
mod store;

pub use changes::{ChangeSet, Entry, Overlay};
pub use store::{PartitionStore, Store, StoreOptions};

/// Key prefixes. Each table owns one byte forever: a retired prefix is never
/// reused, so an old changelog can't be misread as a new table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Table {
    /// Runtime bookkeeping: applied offset, restore marker.
    Meta = 0x00,
    /// Message ids already handled (receiver-side de-duplication).
    SeenMessages = 0x01,
    /// Orders by order id.
    Orders = 0x10,
    /// Stock per SKU (inventory).
    Stock = 0x20,
    /// Reservations by (SKU, order id) (inventory).
    Reservations = 0x21,
    /// Stock adjustment ids already applied, by (SKU, adjustment id).
    StockAdjustments = 0x22,
    /// Payments by order id.
    Payments = 0x30,
    /// Products by product id (catalog).
    Products = 0x40,
    /// Customers by customer id, with their credential (customers).
    Customers = 0x50,
    /// Carts by (customer id, cart id) (customers).
    Carts = 0x51,
    /// Order deadlines by (due time, order id) (orders).
    Deadlines = 0x11,
}

impl Table {
    pub fn key(self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(key.len() + 1);
        full.push(self as u8);
        full.extend_from_slice(key);
        full
    }
}

/// Meta keys.
pub(crate) const APPLIED_OFFSET: &[u8] = b"applied-offset";
pub(crate) const RESTORED: &[u8] = b"restored";
/// The changelog offset after the last entry this instance wrote and saw
/// acknowledged (local only, never in the changelog).
pub(crate) const CHANGELOG_NEXT: &[u8] = b"changelog-next";
/// The entries of the last batch until the changelog has acknowledged them
/// (local only): committed with the batch, cleared after the append.
pub(crate) const CHANGELOG_OUTBOX: &[u8] = b"changelog-outbox";

/// The full key of the applied-offset record, as it appears in the changelog.
pub fn applied_offset_key() -> Vec<u8> {
    Table::Meta.key(APPLIED_OFFSET)
}

/// The local-only outbox entry holding `entries` until the changelog has them.
pub fn changelog_outbox_entry(entries: &[Entry]) -> Entry {
    Entry {
        key: Table::Meta.key(CHANGELOG_OUTBOX),
        value: Some(encode_entries(entries)),
    }
}

/// The local-only checkpoint: the changelog holds this store's state up to
/// `next` (Kafka Streams' `.checkpoint`), written with the state it covers.
pub fn changelog_checkpoint_entry(next: i64) -> Entry {
    Entry {
        key: Table::Meta.key(CHANGELOG_NEXT),
        value: Some(encode_offset(next)),
    }
}

/// Length-prefixed encoding of entries (key, then optional value).
pub fn encode_entries(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        out.extend_from_slice(&(entry.key.len() as u32).to_be_bytes());
        out.extend_from_slice(&entry.key);
        match &entry.value {
            Some(value) => {
                out.push(1);
                out.extend_from_slice(&(value.len() as u32).to_be_bytes());
                out.extend_from_slice(value);
            }
            None => out.push(0),
        }
    }
    out
}

pub fn decode_entries(mut bytes: &[u8]) -> Result<Vec<Entry>, StateError> {
    fn take<'a>(bytes: &mut &'a [u8], len: usize) -> Result<&'a [u8], StateError> {
        if bytes.len() < len {
            return Err(StateError::Corrupt("truncated entry list".into()));
        }
        let (head, tail) = bytes.split_at(len);
        *bytes = tail;
        Ok(head)
    }
    fn length(bytes: &mut &[u8]) -> Result<usize, StateError> {
        let raw: [u8; 4] = take(bytes, 4)?
            .try_into()
            .map_err(|_| StateError::Corrupt("bad length".into()))?;
        Ok(u32::from_be_bytes(raw) as usize)
    }
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let key_len = length(&mut bytes)?;
        let key = take(&mut bytes, key_len)?.to_vec();
        let value = match take(&mut bytes, 1)?[0] {
            0 => None,
            _ => {
                let value_len = length(&mut bytes)?;
                Some(take(&mut bytes, value_len)?.to_vec())
            }
        };
        entries.push(Entry { key, value });
    }
    Ok(entries)
}

pub fn encode_offset(offset: i64) -> Vec<u8> {
    offset.to_be_bytes().to_vec()
}

pub fn decode_offset(bytes: &[u8]) -> Result<i64, StateError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StateError::Corrupt("applied offset is not 8 bytes".into()))?;
    Ok(i64::from_be_bytes(array))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_lists_round_trip() {
        let entries = vec![
            Entry {
                key: b"a".to_vec(),
                value: Some(b"1".to_vec()),
            },
            Entry {
                key: b"b".to_vec(),
                value: None,
            },
            Entry {
                key: Vec::new(),
                value: Some(Vec::new()),
            },
        ];
        assert_eq!(
            decode_entries(&encode_entries(&entries)).expect("decodes"),
            entries
        );
        assert!(decode_entries(&[0, 0, 0, 9, 1]).is_err());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("RocksDB failed: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("partition {0} has no store on this instance")]
    UnknownPartition(i32),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StateError {
    /// RocksDB I/O errors may pass (disk full, busy); corrupt data will not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StateError::Rocks(_))
    }
}

/// Entries of a range read: (key without the table prefix, value).
pub type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// Read access to one partition's state, as a handler sees it.
pub trait StateRead {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;

    /// Up to `limit` entries of `table` with keys in `[from, until)`, in key
    /// order (keys without the table prefix).
    fn range(
        &self,
        table: Table,
        from: &[u8],
        until: &[u8],
        limit: usize,
    ) -> Result<KeyValues, StateError>;
}
