//! What a service writes: a handler from (state, message) to effects.

use d2c_proto::{Envelope, ReplyTo};
use d2c_state::{ChangeSet, StateError, StateRead, Table};

/// One consumed message, decoded as far as the runtime can.
#[derive(Debug)]
pub struct Incoming<'a> {
    pub envelope: &'a Envelope,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub partition: i32,
    pub offset: i64,
}

impl Incoming<'_> {
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, HandlerError> {
        M::decode(self.payload).map_err(|error| {
            HandlerError::Malformed(format!(
                "payload is not a valid {}: {error}",
                self.envelope.message_type
            ))
        })
    }
}

/// A message to produce. `topic` is logical (the runtime adds the prefix)
/// unless `partition` is set by a reply, whose address is already physical.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub destination: Destination,
    pub key: Vec<u8>,
    pub envelope: Envelope,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A declared topic, partitioned by key.
    Topic(String),
    /// An exact partition named by a reply-to header.
    Reply(ReplyTo),
}

/// What handling one message does: state changes and messages to send. The
/// runtime performs them; the handler only records them.
#[derive(Debug)]
pub struct Effects {
    cause: Envelope,
    changes: ChangeSet,
    outgoing: Vec<Outgoing>,
}

impl Effects {
    pub fn new(cause: &Envelope) -> Self {
        Self {
            cause: cause.clone(),
            changes: ChangeSet::default(),
            outgoing: Vec::new(),
        }
    }

    pub fn put(&mut self, table: Table, key: &[u8], value: Vec<u8>) {
        self.changes.put(table, key, value);
    }

    pub fn delete(&mut self, table: Table, key: &[u8]) {
        self.changes.delete(table, key);
    }

    /// Send `message` to a declared topic, keyed by `key`.
    pub fn send<M: prost::Message + prost::Name>(&mut self, topic: &str, key: &str, message: &M) {
        let envelope = self.caused_envelope::<M>();
        self.outgoing.push(Outgoing {
            destination: Destination::Topic(topic.to_owned()),
            key: key.as_bytes().to_vec(),
            envelope,
            payload: message.encode_to_vec(),
        });
    }

    /// Hand the request on to another service, which answers the original
    /// sender: the message keeps the cause's reply-to address and
    /// correlation id (e.g. a cart checkout becoming a PlaceOrder, answered
    /// by orders to the gateway that parked the HTTP request).
    pub fn forward<M: prost::Message + prost::Name>(
        &mut self,
        topic: &str,
        key: &str,
        message: &M,
    ) {
        let mut envelope = self.caused_envelope::<M>();
        envelope.reply_to = self.cause.reply_to.clone();
        self.outgoing.push(Outgoing {
            destination: Destination::Topic(topic.to_owned()),
            key: key.as_bytes().to_vec(),
            envelope,
            payload: message.encode_to_vec(),
        });
    }

    /// Answer the sender, if it asked for an answer (a `reply-to` header).
    pub fn reply<M: prost::Message + prost::Name>(&mut self, key: &str, message: &M) {
        let Some(reply_to) = self.cause.reply_to.clone() else {
            return;
        };
        let envelope = self.caused_envelope::<M>();
        self.outgoing.push(Outgoing {
            destination: Destination::Reply(reply_to),
            key: key.as_bytes().to_vec(),
            envelope,
            payload: message.encode_to_vec(),
        });
    }

    /// Answer someone who asked earlier (an address and correlation id kept in
    /// state), e.g. the gateway waiting for a saga to finish.
    pub fn reply_to<M: prost::Message + prost::Name>(
        &mut self,
        address: ReplyTo,
        correlation_id: Option<String>,
        key: &str,
        message: &M,
    ) {
        let mut envelope = self.caused_envelope::<M>();
        envelope.correlation_id = correlation_id;
        self.outgoing.push(Outgoing {
            destination: Destination::Reply(address),
            key: key.as_bytes().to_vec(),
            envelope,
            payload: message.encode_to_vec(),
        });
    }

    /// Store a protobuf record under `key` in `table`.
    pub fn put_record<M: prost::Message>(&mut self, table: Table, key: &str, record: &M) {
        self.put(table, key.as_bytes(), record.encode_to_vec());
    }

    /// The message that caused these effects.
    pub fn cause(&self) -> &Envelope {
        &self.cause
    }

    fn caused_envelope<M: prost::Name>(&self) -> Envelope {
        let index = self.outgoing.len() as u32;
        self.cause.caused(M::full_name(), index)
    }

    pub fn changes(&self) -> &ChangeSet {
        &self.changes
    }

    pub fn outgoing(&self) -> &[Outgoing] {
        &self.outgoing
    }

    pub fn into_parts(self) -> (ChangeSet, Vec<Outgoing>) {
        (self.changes, self.outgoing)
    }
}

/// A protobuf record stored under `key` in `table`, if there is one.
pub fn read_record<M: prost::Message + Default>(
    state: &dyn StateRead,
    table: Table,
    key: &str,
) -> Result<Option<M>, HandlerError> {
    let Some(bytes) = state.get(table, key.as_bytes())? else {
        return Ok(None);
    };
    M::decode(bytes.as_slice()).map(Some).map_err(|error| {
        HandlerError::State(d2c_state::StateError::Corrupt(format!(
            "{table:?} record {key}: {error}"
        )))
    })
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The message can never be handled (bad payload, unknown type): it goes
    /// to the dead-letter topic and the partition moves on.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Reading state failed; the runtime retries the batch.
    #[error(transparent)]
    State(#[from] StateError),
}

impl HandlerError {
    pub fn is_retryable(&self) -> bool {
        match self {
            HandlerError::Malformed(_) => false,
            HandlerError::State(error) => error.is_retryable(),
        }
    }
}

/// A service's message handling. Implementations must be deterministic: the
/// same state and message give the same effects (use the envelope's sent-at
/// as the time), because a replay must repeat, not diverge.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        state: &dyn StateRead,
        message: &Incoming<'_>,
        effects: &mut Effects,
    ) -> Result<(), HandlerError>;

    /// Called once a batch is committed (state and offset durable), with
    /// every message the batch's handling sent, in order. The place for
    /// business counters: `handle` runs again when a batch is replayed, this
    /// runs once per commit. Must not block; the default does nothing.
    fn committed(&self, outgoing: &[Outgoing]) {
        let _ = outgoing;
    }

    /// Whether the runtime drops copies of a message it handled before (same
    /// message id; see [`crate::dedupe`]). For handlers that are not
    /// idempotent when a message is applied twice; it costs one state entry
    /// per message.
    fn dedupe_by_message_id(&self) -> bool {
        false
    }

    /// How often this handler wants a `d2c.common.v1.Tick` on each partition
    /// it owns (for timers kept in its state); `None`: never.
    fn tick_interval(&self) -> Option<std::time::Duration> {
        None
    }
}
