//! Handler tests without Kafka: a real RocksDB partition store in a temporary
//! directory, and messages handled the way a partition worker handles them
//! (read through the batch's overlay, then commit the changes).

use crate::handler::Destination;
use crate::handler::{Effects, Handler, HandlerError, Incoming, Outgoing};
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

/// The first message's sent-at in a [`TestEnv`]; each next one is a second
/// later.
pub const T0: i64 = 1_700_000_000_000;

/// One handler driven message by message against a temporary store, the
/// way a partition worker drives it: every processor's handler tests use it
/// (with their own domain helpers on top).
pub struct TestEnv<H> {
    pub test: TestStore,
    pub handler: H,
    next_id: u128,
}

impl<H: Handler> TestEnv<H> {
    pub fn new(handler: H) -> Self {
        Self {
            test: TestStore::new(),
            handler,
            next_id: 1,
        }
    }

    /// The partition's store, to read what the handler committed.
    pub fn store(&self) -> &PartitionStore {
        &self.test.store
    }

    /// An envelope of type `M` sent one second after the previous one,
    /// asking for an answer on the gateway's reply partition 0 with
    /// correlation id `corr-<n>`.
    pub fn envelope<M: prost::Name>(&mut self) -> Envelope {
        let mut envelope = Envelope::new(
            M::full_name(),
            uuid::Uuid::from_u128(self.next_id),
            T0 + 1_000 * self.next_id as i64,
        );
        envelope.correlation_id = Some(format!("corr-{}", self.next_id));
        envelope.reply_to = Some(d2c_proto::ReplyTo {
            topic: "gateway.replies".into(),
            partition: 0,
        });
        self.next_id += 1;
        envelope
    }

    /// Handles `payload` under `envelope` and commits its changes.
    pub fn try_handle_as(
        &self,
        envelope: &Envelope,
        payload: &[u8],
    ) -> Result<Effects, HandlerError> {
        self.test.handle(&self.handler, envelope, payload)
    }

    /// # Panics
    /// When the handler refuses the message (tests only).
    pub fn handle_as(&self, envelope: &Envelope, payload: &[u8]) -> Effects {
        self.try_handle_as(envelope, payload).expect("handled")
    }

    /// Handles `message` in a fresh envelope, commits, returns the effects.
    ///
    /// # Panics
    /// When the handler refuses the message (tests only).
    pub fn handle<M: prost::Message + prost::Name>(&mut self, message: &M) -> Effects {
        self.try_handle(message).expect("handled")
    }

    /// [`TestEnv::handle`], or the handler's refusal.
    pub fn try_handle<M: prost::Message + prost::Name>(
        &mut self,
        message: &M,
    ) -> Result<Effects, HandlerError> {
        let envelope = self.envelope::<M>();
        self.try_handle_as(&envelope, &message.encode_to_vec())
    }
}

/// The replies among `effects` (answers to a parked request).
pub fn replies(effects: &Effects) -> Vec<&Outgoing> {
    effects
        .outgoing()
        .iter()
        .filter(|out| matches!(out.destination, Destination::Reply(_)))
        .collect()
}

/// What `effects` sends to the logical topic `topic`.
pub fn on_topic<'a>(effects: &'a Effects, topic: &str) -> Vec<&'a Outgoing> {
    effects
        .outgoing()
        .iter()
        .filter(|out| out.destination == Destination::Topic(topic.into()))
        .collect()
}

/// The messages of type `M` sent to `topic`, decoded.
///
/// # Panics
/// When one does not decode (tests only).
pub fn sent<M: prost::Message + prost::Name + Default>(effects: &Effects, topic: &str) -> Vec<M> {
    on_topic(effects, topic)
        .into_iter()
        .filter(|out| out.envelope.message_type == M::full_name())
        .map(|out| M::decode(out.payload.as_slice()).expect("decodes"))
        .collect()
}
