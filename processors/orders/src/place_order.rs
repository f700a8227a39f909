//! PlaceOrder: validate, price every line from the catalog, record the
//! order, announce it, answer.
//!
//! The client never sets a price: each line is priced from the catalog view
//! ([`crate::prices`]). A price the storefront says it showed is only
//! compared: a different one refuses the order with PRICE_CHANGED (409)
//! naming the line and the current price; a SKU the catalog does not sell
//! (unknown, archived, not in the currency) refuses it as INVALID (422). A
//! cart refused this way is reopened with current prices (ReopenCart), since
//! nothing was held for it yet.

use crate::prices::PriceBook;
use crate::reply::rejected;
use crate::table::{OrderRead, OrderWrite};
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::customers::v1::{ReopenCart, RepricedLine};
use d2c_proto::inventory::v1::ReserveStock;
use d2c_proto::orders::v1::{
    order_reply, LineStatus, Order, OrderLine, OrderPlaced, OrderRecord, OrderReply, OrderStatus,
    PlaceOrder,
};
use d2c_proto::Envelope;
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub fn apply(
    state: &dyn StateRead,
    prices: &dyn PriceBook,
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
    if let Err(rejection) = check_request(&command) {
        effects.reply(&reply_key, &rejected(rejection));
        return Ok(());
    }
    let order = match price_lines(prices, &command) {
        Ok(lines) => new_order(envelope, &command, lines),
        Err(rejection) => {
            reopen_cart(prices, &command, effects);
            effects.reply(&reply_key, &rejected(rejection));
            return Ok(());
        }
    };
    let order = match order {
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
    // Payments authorizes while inventory reserves: the saga waits for the
    // slower of the two instead of both in a row (two hops fewer on the way
    // to `confirmed`). A hold for an order that then runs out of stock is
    // voided (saga.rs).
    effects.send(
        topic::PAYMENTS_MESSAGES,
        &order.order_id,
        &crate::saga::authorization(&order, &command.payment_method),
    );
    effects.send(
        topic::ORDERS_EVENTS,
        &order.order_id,
        &OrderPlaced {
            order: Some(order.clone()),
        },
    );
    let (reply_to, correlation_id) = crate::reply::requester(effects);
    effects.put_order(&OrderRecord {
        line_status: vec![LineStatus::Pending as i32; order.lines.len()],
        order: Some(order),
        request_hash: command.request_hash,
        reply_to,
        correlation_id,
        payment_method: command.payment_method,
        refund_waiters: Vec::new(),
        deadline_ms: 0,
        authorization_requested: true,
        authorized: false,
        authorization_ref: String::new(),
    });
    Ok(())
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
fn check_request(command: &PlaceOrder) -> Result<(), Rejection> {
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
    for (index, line) in command.lines.iter().enumerate() {
        if let Err(error) = d2c_proto::identifiers::Sku::parse(&line.sku) {
            return Err(invalid(format!("lines[{index}].sku"), error.to_string()));
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
    }
    Ok(())
}

/// Each line at the catalog's current price, or why the catalog does not
/// sell it at the price shown.
fn price_lines(prices: &dyn PriceBook, command: &PlaceOrder) -> Result<Vec<OrderLine>, Rejection> {
    let mut lines = Vec::with_capacity(command.lines.len());
    let mut changed: Option<Rejection> = None;
    for (index, line) in command.lines.iter().enumerate() {
        let current = current_price(prices, &line.sku, &command.currency)
            .map_err(|message| invalid(format!("lines[{index}].sku"), message))?;
        match line.unit_price_minor {
            Some(shown) if shown != current => {
                note_price_change(&mut changed, index, &line.sku, shown, current)
            }
            _ => {}
        }
        lines.push(OrderLine {
            sku: line.sku.clone(),
            quantity: line.quantity,
            unit_price_minor: current,
        });
    }
    match changed {
        Some(rejection) => Err(rejection),
        None => Ok(lines),
    }
}

fn current_price(prices: &dyn PriceBook, sku: &str, currency: &str) -> Result<i64, String> {
    let Some(offer) = prices.offer(sku) else {
        return Err(format!("{sku} is not in the catalog"));
    };
    if offer.archived {
        return Err(format!("{sku} is no longer sold"));
    }
    offer
        .price_in(currency)
        .ok_or_else(|| format!("{sku} is not sold in {currency}"))
}

/// The first changed line is named in `field` with its current price; every
/// changed SKU is listed, and the message gives each new price.
fn note_price_change(
    changed: &mut Option<Rejection>,
    index: usize,
    sku: &str,
    shown: i64,
    current: i64,
) {
    let rejection = changed.get_or_insert_with(|| Rejection {
        code: Code::PriceChanged as i32,
        field: format!("lines[{index}].unit_price_minor"),
        message: "the price changed:".into(),
        current_price_minor: Some(current),
        ..Rejection::default()
    });
    rejection.skus.push(sku.to_owned());
    let separator = if rejection.skus.len() == 1 { " " } else { "; " };
    rejection.message = format!(
        "{}{separator}{sku} now costs {current} (shown {shown})",
        rejection.message
    );
}

/// A cart whose checkout was refused on price opens again, repriced.
fn reopen_cart(prices: &dyn PriceBook, command: &PlaceOrder, effects: &mut Effects) {
    if command.cart_id.is_empty() {
        return;
    }
    let lines = command
        .lines
        .iter()
        .map(|line| RepricedLine {
            sku: line.sku.clone(),
            unit_price_minor: current_price(prices, &line.sku, &command.currency).ok(),
        })
        .collect();
    effects.send(
        topic::CUSTOMERS_MESSAGES,
        &command.customer_id,
        &ReopenCart {
            customer_id: command.customer_id.clone(),
            cart_id: command.cart_id.clone(),
            order_id: command.order_id.clone(),
            lines,
        },
    );
}

fn new_order(
    envelope: &Envelope,
    command: &PlaceOrder,
    lines: Vec<OrderLine>,
) -> Result<Order, Rejection> {
    let mut total: i64 = 0;
    for (index, line) in lines.iter().enumerate() {
        total = line
            .quantity
            .checked_mul(line.unit_price_minor)
            .and_then(|amount| total.checked_add(amount))
            .ok_or_else(|| invalid(format!("lines[{index}]"), "order total is too large"))?;
    }
    Ok(Order {
        order_id: command.order_id.clone(),
        customer_id: command.customer_id.clone(),
        lines,
        currency: command.currency.clone(),
        total_minor: total,
        status: OrderStatus::Placed as i32,
        placed_at_ms: envelope.sent_at_ms,
        idempotency_key: command.idempotency_key.clone(),
        rejection: None,
        payment_ref: String::new(),
        updated_at_ms: envelope.sent_at_ms,
        ..Order::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{command, envelope, product, reply_of, sent_of, Harness};
    use d2c_proto::customers::v1::ReopenCart;
    use d2c_proto::payments::v1::AuthorizePayment;
    use prost::Name;

    #[test]
    fn new_order_reserves_each_line_authorizes_the_total_and_is_announced() {
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
        let authorize: Vec<AuthorizePayment> = sent_of(&effects, topic::PAYMENTS_MESSAGES);
        assert_eq!(authorize.len(), 1, "in parallel with the reservations");
        assert_eq!(
            (
                authorize[0].amount_minor,
                authorize[0].payment_method.as_str()
            ),
            (3_000, "pm_card_visa")
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
        assert!(record.authorization_requested && !record.authorized);
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

    fn rejection_of(effects: &Effects) -> Rejection {
        match reply_of(effects).and_then(|reply| reply.result) {
            Some(order_reply::Result::Rejected(rejection)) => rejection,
            other => panic!("rejection expected, got {other:?}"),
        }
    }

    #[test]
    fn lines_are_priced_from_the_catalog_when_no_price_was_shown() {
        let harness = Harness::new();
        let mut unpriced = command("o-1", b"h");
        for line in &mut unpriced.lines {
            line.unit_price_minor = None;
        }
        harness.handle(&envelope(1), &unpriced);
        let order = harness
            .store()
            .order("o-1")
            .expect("read")
            .expect("stored")
            .order
            .expect("order");
        let prices: Vec<i64> = order
            .lines
            .iter()
            .map(|line| line.unit_price_minor)
            .collect();
        assert_eq!(prices, [1_250, 500]);
        assert_eq!(order.total_minor, 3_000);
    }

    #[test]
    fn a_tampered_price_is_refused_naming_the_line_and_the_current_price() {
        let harness = Harness::new();
        let mut tampered = command("o-1", b"h");
        tampered.lines[1].unit_price_minor = Some(0);
        let effects = harness.handle(&envelope(1), &tampered);
        let rejection = rejection_of(&effects);
        assert_eq!(rejection.code, Code::PriceChanged as i32);
        assert_eq!(rejection.field, "lines[1].unit_price_minor");
        assert_eq!(rejection.current_price_minor, Some(500));
        assert_eq!(rejection.skus, ["SKU-2"]);
        assert!(effects.changes().is_empty(), "nothing stored");
        assert!(sent_of::<ReserveStock>(&effects, topic::INVENTORY_MESSAGES).is_empty());
    }

    #[test]
    fn a_price_changed_since_it_was_shown_is_refused() {
        let harness = Harness::new();
        harness.catalog().put(&product("p-1", 2, "SKU-1", 1_300));
        let rejection = rejection_of(&harness.handle(&envelope(1), &command("o-1", b"h")));
        assert_eq!(rejection.code, Code::PriceChanged as i32);
        assert_eq!(rejection.field, "lines[0].unit_price_minor");
        assert_eq!(rejection.current_price_minor, Some(1_300));
    }

    #[test]
    fn unknown_archived_or_unpriced_skus_are_invalid_naming_the_line() {
        let harness = Harness::new();
        let mut unknown = command("o-1", b"h");
        unknown.lines[1].sku = "NOPE".into();
        let rejection = rejection_of(&harness.handle(&envelope(1), &unknown));
        assert_eq!(
            (rejection.code, rejection.field.as_str()),
            (Code::Invalid as i32, "lines[1].sku")
        );

        let mut archived = product("p-2", 2, "SKU-2", 500);
        archived.archived = true;
        harness.catalog().put(&archived);
        let rejection = rejection_of(&harness.handle(&envelope(2), &command("o-2", b"h")));
        assert_eq!(rejection.field, "lines[1].sku");
        assert!(
            rejection.message.contains("no longer sold"),
            "{}",
            rejection.message
        );

        let mut in_dollars = command("o-3", b"h");
        in_dollars.currency = "USD".into();
        let rejection = rejection_of(&harness.handle(&envelope(3), &in_dollars));
        assert_eq!(rejection.field, "lines[0].sku");
        assert!(
            rejection.message.contains("not sold in USD"),
            "{}",
            rejection.message
        );
    }

    #[test]
    fn a_cart_refused_on_price_is_reopened_with_current_prices() {
        let harness = Harness::new();
        harness.catalog().put(&product("p-1", 2, "SKU-1", 1_300));
        let mut from_cart = command("o-1", b"h");
        from_cart.cart_id = "cart-1".into();
        let effects = harness.handle(&envelope(1), &from_cart);
        let reopened: Vec<ReopenCart> = sent_of(&effects, topic::CUSTOMERS_MESSAGES);
        assert_eq!(reopened.len(), 1);
        assert_eq!(reopened[0].cart_id, "cart-1");
        assert_eq!(reopened[0].order_id, "o-1");
        let prices: Vec<_> = reopened[0]
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.unit_price_minor))
            .collect();
        assert_eq!(prices, [("SKU-1", Some(1_300)), ("SKU-2", Some(500))]);
        // A direct order has no cart to reopen.
        let direct = harness.handle(&envelope(2), &command("o-2", b"h"));
        assert!(sent_of::<ReopenCart>(&direct, topic::CUSTOMERS_MESSAGES).is_empty());
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
