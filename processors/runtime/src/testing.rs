//! Handler tests without Kafka: a real RocksDB partition store in a temporary
//! directory, and messages handled the way a partition worker handles them
//! (read through the batch's overlay, then commit the changes).

use crate::{Effects, Handler, HandlerError, Incoming};
use d2c_proto::Envelope;
use d2c_state::{ChangeSet, Overlay, PartitionStore, Store, StoreOptions};

pub struct TestStore {
    _dir: tempfile::TempDir,
    pub store: PartitionStore,
}

impl TestStore {
    /// A fresh, empty store for partition 0.
    ///
    /// # Panics
    /// When no temporary store can be created (tests only).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("store");
        let partition = store.create_partition(0).expect("partition");
        Self {
            _dir: dir,
            store: partition,
        }
    }

    /// Handles one message and commits its changes; the effects are returned
    /// for the test to inspect.
    ///
    /// # Panics
    /// When the changes cannot be committed (tests only).
    pub fn handle(
        &self,
        handler: &dyn Handler,
        envelope: &Envelope,
        payload: &[u8],
    ) -> Result<Effects, HandlerError> {
        let incoming = Incoming {
            envelope,
            key: None,
            payload,
            partition: 0,
            offset: 0,
        };
        let mut effects = Effects::new(envelope);
        let empty = ChangeSet::default();
        let state = Overlay {
            base: &self.store,
            changes: &empty,
        };
        handler.handle(&state, &incoming, &mut effects)?;
        self.store
            .write(&effects.changes().clone().into_entries())
            .expect("committed");
        Ok(effects)
    }
}

impl Default for TestStore {
    fn default() -> Self {
        Self::new()
    }
}
