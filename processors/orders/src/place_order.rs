//! PlaceOrder: validate, record the order, announce it, answer.

use crate::table::{OrderRead, OrderWrite};
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::inventory::v1::ReserveStock;
use d2c_proto::orders::v1::{
    order_reply, LineStatus, Order, OrderPlaced, OrderRecord, OrderReply, OrderStatus, PlaceOrder,
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
                ..Rejection::default()
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
    // The gateway gets its answer when the saga settles (see saga.rs); a
    // retry meanwhile is answered at once with the order as it stands.
    for line in &order.lines {
        effects.send(
            topic::INVENTORY_MESSAGES,
            &line.sku,
            &ReserveStock {
                order_id: order.order_id.clone(),
                sku: line.sku.clone(),
                quantity: line.quantity,
            },
        );
    }
    effects.send(
        topic::ORDERS_EVENTS,
        &order.order_id,
        &OrderPlaced {
            order: Some(order.clone()),
        },
    );
    effects.put_order(&OrderRecord {
        line_status: vec![LineStatus::Pending as i32; order.lines.len()],
        order: Some(order),
        request_hash: command.request_hash,
        reply_to: envelope
            .reply_to
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        correlation_id: envelope.correlation_id.clone().unwrap_or_default(),
        payment_method: command.payment_method,
    });
    Ok(())
}

pub(crate) fn rejected(rejection: Rejection) -> OrderReply {
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
        ..Rejection::default()
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
    if command.payment_method.is_empty() {
        return Err(invalid("payment_method", "payment_method is required"));
    }
    if command.lines.is_empty() {
        return Err(invalid("lines", "an order needs at least one line"));
    }
    let mut total: i64 = 0;
    for (index, line) in command.lines.iter().enumerate() {
        if line.sku.is_empty() {
            return Err(invalid(format!("lines[{index}].sku"), "sku is required"));
        }
        if command.lines[..index]
            .iter()
            .any(|earlier| earlier.sku == line.sku)
        {
            return Err(invalid(
                format!("lines[{index}].sku"),
                "each SKU may appear on one line only",
            ));
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
        rejection: None,
        payment_ref: String::new(),
        updated_at_ms: envelope.sent_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{command, envelope, reply_of, sent_of, Harness};
    use prost::Name;

    #[test]
    fn new_order_reserves_each_line_and_is_announced() {
        let harness = Harness::new();
        let effects = harness.handle(&envelope(1), &command("o-1", b"h"));
        let reserves: Vec<ReserveStock> = sent_of(&effects, topic::INVENTORY_MESSAGES);
        assert_eq!(
            reserves
                .iter()
                .map(|r| (r.sku.as_str(), r.quantity))
                .collect::<Vec<_>>(),
            [("SKU-1", 2), ("SKU-2", 1)]
        );
        let events = effects
            .outgoing()
            .iter()
            .filter(|out| out.envelope.message_type == OrderPlaced::full_name())
            .count();
        assert_eq!(events, 1);
        assert!(
            reply_of(&effects).is_none(),
            "answered when the saga settles"
        );
        let record = harness.store().order("o-1").expect("read").expect("stored");
        let order = record.order.expect("order");
        assert_eq!(order.total_minor, 3_000);
        assert_eq!(order.placed_at_ms, 1_700_000_000_000);
        assert_eq!(record.reply_to, "gateway.replies/0");
        assert_eq!(record.line_status, [LineStatus::Pending as i32; 2]);
    }

    #[test]
    fn retry_answers_the_order_as_it_stands_and_emits_nothing() {
        let harness = Harness::new();
        harness.handle(&envelope(1), &command("o-1", b"h"));
        let retry = harness.handle(&envelope(2), &command("o-1", b"h"));
        assert_eq!(retry.outgoing().len(), 1, "only the reply");
        assert!(retry.changes().is_empty());
        let again = reply_of(&retry).expect("reply");
        assert!(again.replayed);
        let Some(order_reply::Result::Order(order)) = again.result else {
            panic!("order expected")
        };
        assert_eq!(order.status, OrderStatus::Placed as i32);
    }

    #[test]
    fn same_key_different_request_is_a_conflict() {
        let harness = Harness::new();
        harness.handle(&envelope(1), &command("o-1", b"h1"));
        let reply = reply_of(&harness.handle(&envelope(2), &command("o-1", b"h2")));
        let Some(order_reply::Result::Rejected(rejection)) = reply.expect("reply").result else {
            panic!("rejection expected")
        };
        assert_eq!(rejection.code, Code::Conflict as i32);
    }

    #[test]
    fn invalid_lines_are_rejected_naming_the_field() {
        let harness = Harness::new();
        let field_of = |order: &PlaceOrder, id: u128| {
            let effects = harness.handle(&envelope(id), order);
            assert!(effects.changes().is_empty());
            match reply_of(&effects).and_then(|reply| reply.result) {
                Some(order_reply::Result::Rejected(rejection)) => rejection.field,
                other => panic!("rejection expected, got {other:?}"),
            }
        };
        let mut bad = command("o-2", b"h");
        bad.lines[1].quantity = 0;
        assert_eq!(field_of(&bad, 3), "lines[1].quantity");
        let mut overflow = command("o-3", b"h");
        overflow.lines[0].quantity = i64::MAX;
        assert_eq!(field_of(&overflow, 4), "lines[0]");
        let mut twice = command("o-4", b"h");
        twice.lines[1].sku = "SKU-1".into();
        assert_eq!(field_of(&twice, 5), "lines[1].sku");
        let mut no_payment = command("o-5", b"h");
        no_payment.payment_method.clear();
        assert_eq!(field_of(&no_payment, 6), "payment_method");
    }

    #[test]
    fn replaying_a_message_gives_identical_effects() {
        let a = Harness::new().handle(&envelope(9), &command("o-9", b"h"));
        let b = Harness::new().handle(&envelope(9), &command("o-9", b"h"));
        assert_eq!(a.outgoing(), b.outgoing());
        assert_eq!(
            a.outgoing()[0].envelope.message_type,
            ReserveStock::full_name()
        );
    }
}
