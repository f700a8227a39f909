//! Test support: runs the handler the way the runtime does, against a real
//! (temporary) RocksDB store, committing each message's changes.

use crate::OrdersHandler;
use d2c_proto::orders::v1::{OrderLine, OrderReply, PlaceOrder};
use d2c_proto::{Envelope, ReplyTo};
use d2c_runtime::handler::Destination;
use d2c_runtime::testing::TestStore;
use d2c_runtime::Effects;
use d2c_state::PartitionStore;
use prost::{Message, Name};

/// A temporary store driven by the orders handler.
pub struct Harness(TestStore);

impl Harness {
    pub fn new() -> Self {
        Self(TestStore::new())
    }

    pub fn store(&self) -> &PartitionStore {
        &self.0.store
    }

    pub fn handle<M: Message + Name>(&self, envelope: &Envelope, message: &M) -> Effects {
        let mut envelope = envelope.clone();
        envelope.message_type = M::full_name();
        self.0
            .handle(&OrdersHandler, &envelope, &message.encode_to_vec())
            .expect("handled")
    }
}

pub fn command(order_id: &str, hash: &[u8]) -> PlaceOrder {
    PlaceOrder {
        order_id: order_id.into(),
        customer_id: "cust-1".into(),
        lines: vec![
            OrderLine {
                sku: "SKU-1".into(),
                quantity: 2,
                unit_price_minor: 1_250,
            },
            OrderLine {
                sku: "SKU-2".into(),
                quantity: 1,
                unit_price_minor: 500,
            },
        ],
        currency: "EUR".into(),
        idempotency_key: "key-1".into(),
        request_hash: hash.to_vec(),
        payment_method: "pm_card_visa".into(),
    }
}

/// An envelope as the gateway sends it: a reply address and correlation id.
pub fn envelope(id: u128) -> Envelope {
    let mut envelope = Envelope::new(
        PlaceOrder::full_name(),
        uuid::Uuid::from_u128(id),
        1_700_000_000_000,
    );
    envelope.reply_to = Some(ReplyTo {
        topic: "gateway.replies".into(),
        partition: 0,
    });
    envelope.correlation_id = Some(format!("corr-{id}"));
    envelope
}

/// An envelope as another processor sends it: no reply address.
pub fn from_service(id: u128) -> Envelope {
    let mut envelope = envelope(id);
    envelope.reply_to = None;
    envelope.correlation_id = None;
    envelope
}

/// The reply to the gateway, if any.
pub fn reply_of(effects: &Effects) -> Option<OrderReply> {
    effects
        .outgoing()
        .iter()
        .find(|out| matches!(out.destination, Destination::Reply(_)))
        .map(|reply| OrderReply::decode(reply.payload.as_slice()).expect("reply decodes"))
}

/// The messages of type `M` sent to `topic`.
pub fn sent_of<M: Message + Name + Default>(effects: &Effects, topic: &str) -> Vec<M> {
    effects
        .outgoing()
        .iter()
        .filter(|out| {
            out.destination == Destination::Topic(topic.into())
                && out.envelope.message_type == M::full_name()
        })
        .map(|out| M::decode(out.payload.as_slice()).expect("decodes"))
        .collect()
}
