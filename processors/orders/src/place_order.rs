//! PlaceOrder: validate, record the order, announce it, answer.

use crate::table::{OrderRead, OrderWrite};
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::orders::v1::{
    order_reply, Order, OrderPlaced, OrderRecord, OrderReply, OrderStatus, PlaceOrder,
};
use d2c_proto::Envelope;
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub fn apply(
    state: &dyn StateRead,
    envelope: &Envelope,
    command: PlaceOrder,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let reply_key = command.order_id.clone();
    if let Some(existing) = state.order(&command.order_id)? {
        let reply = if existing.request_hash == command.request_hash {
            OrderReply {
                result: existing.order.map(order_reply::Result::Order),
                replayed: true,
            }
        } else {
            rejected(Rejection {
                code: Code::Conflict as i32,
                field: "Idempotency-Key".into(),
                message: "this Idempotency-Key was already used with a different request".into(),
            })
        };
        effects.reply(&reply_key, &reply);
        return Ok(());
    }
    let order = match new_order(envelope, &command) {
        Ok(order) => order,
        Err(rejection) => {
            effects.reply(&reply_key, &rejected(rejection));
            return Ok(());
        }
    };
    effects.put_order(&OrderRecord {
        order: Some(order.clone()),
        request_hash: command.request_hash,
    });
    effects.send(
        topic::ORDERS_EVENTS,
        &order.order_id,
        &OrderPlaced {
            order: Some(order.clone()),
        },
    );
    effects.reply(
        &reply_key,
        &OrderReply {
            result: Some(order_reply::Result::Order(order)),
            replayed: false,
        },
    );
    Ok(())
}

fn rejected(rejection: Rejection) -> OrderReply {
    OrderReply {
        result: Some(order_reply::Result::Rejected(rejection)),
        replayed: false,
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Rejection {
    Rejection {
        code: Code::Invalid as i32,
        field: field.into(),
        message: message.into(),
    }
}

/// The gateway validates first; this is the owner's own check, since a
/// command may come from anywhere that can write to the topic.
fn new_order(envelope: &Envelope, command: &PlaceOrder) -> Result<Order, Rejection> {
    if command.order_id.is_empty() {
        return Err(invalid("order_id", "order_id is required"));
    }
    if command.customer_id.is_empty() {
        return Err(invalid("customer_id", "customer_id is required"));
    }
    if command.currency.len() != 3 || !command.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            "currency",
            "currency must be an ISO 4217 code such as EUR",
        ));
    }
    if command.lines.is_empty() {
        return Err(invalid("lines", "an order needs at least one line"));
    }
    let mut total: i64 = 0;
    for (index, line) in command.lines.iter().enumerate() {
        if line.sku.is_empty() {
            return Err(invalid(format!("lines[{index}].sku"), "sku is required"));
        }
        if line.quantity <= 0 {
            return Err(invalid(
                format!("lines[{index}].quantity"),
                "quantity must be at least 1",
            ));
        }
        if line.unit_price_minor < 0 {
            return Err(invalid(
                format!("lines[{index}].unit_price_minor"),
                "price cannot be negative",
            ));
        }
        total = line
            .quantity
            .checked_mul(line.unit_price_minor)
            .and_then(|amount| total.checked_add(amount))
            .ok_or_else(|| invalid(format!("lines[{index}]"), "order total is too large"))?;
    }
    Ok(Order {
        order_id: command.order_id.clone(),
        customer_id: command.customer_id.clone(),
        lines: command.lines.clone(),
        currency: command.currency.clone(),
        total_minor: total,
        status: OrderStatus::Placed as i32,
        placed_at_ms: envelope.sent_at_ms,
        idempotency_key: command.idempotency_key.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OrdersHandler;
    use d2c_proto::orders::v1::OrderLine;
    use d2c_proto::ReplyTo;
    use d2c_runtime::handler::Destination;
    use d2c_runtime::{Handler, Incoming};
    use d2c_state::{Overlay, Store, StoreOptions};
    use prost::{Message, Name};

    fn command(order_id: &str, hash: &[u8]) -> PlaceOrder {
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
        }
    }

    fn envelope(id: u128) -> Envelope {
        let mut envelope = Envelope::new(
            PlaceOrder::full_name(),
            uuid::Uuid::from_u128(id),
            1_700_000_000_000,
        );
        envelope.reply_to = Some(ReplyTo {
            topic: "gateway.replies".into(),
            partition: 0,
        });
        envelope
    }

    /// Runs the handler the way the runtime does, against a real (temporary)
    /// RocksDB store, committing the changes.
    fn handle(
        store: &d2c_state::PartitionStore,
        envelope: &Envelope,
        command: &PlaceOrder,
    ) -> Effects {
        let payload = command.encode_to_vec();
        let incoming = Incoming {
            envelope,
            key: None,
            payload: &payload,
            partition: 0,
            offset: 0,
        };
        let mut effects = Effects::new(envelope);
        let empty = d2c_state::ChangeSet::default();
        OrdersHandler
            .handle(
                &Overlay {
                    base: store,
                    changes: &empty,
                },
                &incoming,
                &mut effects,
            )
            .expect("handled");
        store
            .write(&effects.changes().clone().into_entries())
            .expect("committed");
        effects
    }

    fn reply_of(effects: &Effects) -> OrderReply {
        let reply = effects
            .outgoing()
            .iter()
            .find(|out| matches!(out.destination, Destination::Reply(_)))
            .expect("a reply");
        OrderReply::decode(reply.payload.as_slice()).expect("reply decodes")
    }

    fn temp_store() -> (tempfile::TempDir, d2c_state::PartitionStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("store");
        let partition = store.create_partition(0).expect("partition");
        (dir, partition)
    }

    #[test]
    fn new_order_is_recorded_announced_and_answered() {
        let (_dir, store) = temp_store();
        let effects = handle(&store, &envelope(1), &command("o-1", b"h"));
        let reply = reply_of(&effects);
        let Some(order_reply::Result::Order(order)) = reply.result else {
            panic!("order expected")
        };
        assert_eq!(order.total_minor, 3_000);
        assert_eq!(order.placed_at_ms, 1_700_000_000_000);
        assert!(!reply.replayed);
        let events: Vec<_> = effects
            .outgoing()
            .iter()
            .filter(|out| out.destination == Destination::Topic(topic::ORDERS_EVENTS.into()))
            .collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].envelope.message_type, OrderPlaced::full_name());
        assert!(store.order("o-1").expect("read").is_some());
    }

    #[test]
    fn retry_answers_the_same_order_and_emits_nothing() {
        let (_dir, store) = temp_store();
        let first = reply_of(&handle(&store, &envelope(1), &command("o-1", b"h")));
        let retry = handle(&store, &envelope(2), &command("o-1", b"h"));
        assert_eq!(retry.outgoing().len(), 1, "only the reply");
        assert!(retry.changes().is_empty());
        let again = reply_of(&retry);
        assert!(again.replayed);
        assert_eq!(again.result, first.result);
    }

    #[test]
    fn same_key_different_request_is_a_conflict() {
        let (_dir, store) = temp_store();
        handle(&store, &envelope(1), &command("o-1", b"h1"));
        let reply = reply_of(&handle(&store, &envelope(2), &command("o-1", b"h2")));
        let Some(order_reply::Result::Rejected(rejection)) = reply.result else {
            panic!("rejection expected")
        };
        assert_eq!(rejection.code, Code::Conflict as i32);
    }

    #[test]
    fn invalid_lines_are_rejected_naming_the_field() {
        let (_dir, store) = temp_store();
        let mut bad = command("o-2", b"h");
        bad.lines[1].quantity = 0;
        let effects = handle(&store, &envelope(3), &bad);
        let Some(order_reply::Result::Rejected(rejection)) = reply_of(&effects).result else {
            panic!("rejection expected")
        };
        assert_eq!(rejection.field, "lines[1].quantity");
        assert!(effects.changes().is_empty());
        let mut overflow = command("o-3", b"h");
        overflow.lines[0].quantity = i64::MAX;
        let Some(order_reply::Result::Rejected(rejection)) =
            reply_of(&handle(&store, &envelope(4), &overflow)).result
        else {
            panic!("rejection expected")
        };
        assert_eq!(rejection.field, "lines[0]");
    }

    #[test]
    fn replaying_a_message_gives_identical_effects() {
        let (_dir_a, store_a) = temp_store();
        let (_dir_b, store_b) = temp_store();
        let a = handle(&store_a, &envelope(9), &command("o-9", b"h"));
        let b = handle(&store_b, &envelope(9), &command("o-9", b"h"));
        assert_eq!(a.outgoing(), b.outgoing());
    }
}
