//! Test support: runs the handler the way the runtime does, against a real
//! (temporary) RocksDB store, committing each message's changes.

use crate::prices::CatalogView;
use d2c_proto::catalog::v1::{Price, Product, Variant};
use d2c_proto::orders::v1::{OrderReply, PlaceOrder, RequestedLine};
use d2c_proto::{Envelope, ReplyTo};
use d2c_runtime::router::Router;
use d2c_runtime::testing::TestEnv;
use d2c_runtime::Effects;
use d2c_state::PartitionStore;
use prost::{Message, Name};

/// The orders handler on a temporary store ([`TestEnv`]), with a catalog
/// that sells SKU-1 at 12.50 and SKU-2 at 5.00 EUR.
pub struct Harness {
    env: TestEnv<Router>,
    catalog: std::sync::Arc<CatalogView>,
}

impl Harness {
    pub fn new() -> Self {
        let catalog = std::sync::Arc::new(CatalogView::default());
        catalog.put(&product("p-1", 1, "SKU-1", 1_250));
        catalog.put(&product("p-2", 1, "SKU-2", 500));
        Self {
            env: TestEnv::new(crate::handler(catalog.clone())),
            catalog,
        }
    }

    pub fn handler(&self) -> &Router {
        &self.env.handler
    }

    pub fn catalog(&self) -> &CatalogView {
        &self.catalog
    }

    pub fn store(&self) -> &PartitionStore {
        self.env.store()
    }

    /// Handles `message` under `envelope` (given: tests choose whether it
    /// asks for a reply), retyped as `M`.
    pub fn handle<M: Message + Name>(&self, envelope: &Envelope, message: &M) -> Effects {
        let mut envelope = envelope.clone();
        envelope.message_type = M::full_name();
        self.env.handle_as(&envelope, &message.encode_to_vec())
    }
}

pub fn command(order_id: &str, hash: &[u8]) -> PlaceOrder {
    PlaceOrder {
        order_id: order_id.into(),
        customer_id: "cust-1".into(),
        lines: vec![
            RequestedLine {
                sku: "SKU-1".into(),
                quantity: 2,
                unit_price_minor: Some(1_250),
            },
            RequestedLine {
                sku: "SKU-2".into(),
                quantity: 1,
                unit_price_minor: Some(500),
            },
        ],
        currency: "EUR".into(),
        idempotency_key: "key-1".into(),
        request_hash: hash.to_vec(),
        payment_method: "pm_card_visa".into(),
        cart_id: String::new(),
    }
}

/// A product of one variant sold in EUR.
pub fn product(product_id: &str, version: i64, sku: &str, amount_minor: i64) -> Product {
    Product {
        product_id: product_id.into(),
        version,
        variants: vec![Variant {
            sku: sku.into(),
            prices: vec![Price {
                currency: "EUR".into(),
                amount_minor,
            }],
            ..Variant::default()
        }],
        ..Product::default()
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
    d2c_runtime::testing::replies(effects)
        .first()
        .map(|reply| OrderReply::decode(reply.payload.as_slice()).expect("reply decodes"))
}

pub use d2c_runtime::testing::sent as sent_of;

/// Places order `o-1` (SKU-1 ×2, SKU-2 ×1), reserves both lines and
/// authorizes it: the effects of the authorization, which confirms it.
pub fn confirmed_order(harness: &Harness) -> Effects {
    use d2c_proto::inventory::v1::ReservationResult;
    use d2c_proto::payments::v1::{PaymentResult, PaymentStatus};
    harness.handle(&envelope(1), &command("o-1", b"h"));
    for (id, sku) in [(2, "SKU-1"), (3, "SKU-2")] {
        let reserved = ReservationResult {
            order_id: "o-1".into(),
            sku: sku.into(),
            reserved: true,
            requested: 1,
            available: 10,
        };
        harness.handle(&from_service(id), &reserved);
    }
    let authorized = PaymentResult {
        order_id: "o-1".into(),
        status: PaymentStatus::Authorized as i32,
        ..PaymentResult::default()
    };
    harness.handle(&from_service(4), &authorized)
}
