//! The checkout saga's later steps: inventory's and payments' answers move
//! the order on, and each settled step answers whoever waits for it.
//!
//! Answers are matched against the order's state, never trusted blindly: an
//! answer that arrives twice, or for a step the order has left, changes
//! nothing (Kafka redelivers, and a replayed processor re-sends).

use crate::status::{self, label, transition, CANCEL_REFUND_ID};
use crate::table::{OrderRead, OrderWrite};
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::inventory::v1::{CommitStock, ReleaseStock, ReservationResult};
use d2c_proto::orders::v1::{
    order_reply, LineStatus, Order, OrderCancelled, OrderConfirmed, OrderRecord, OrderRejected,
    OrderReply, OrderStatus, RefundStatus,
};
use d2c_proto::payments::v1::{AuthorizePayment, PaymentResult, PaymentStatus, VoidPayment};
use d2c_proto::ReplyTo;
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

/// Inventory answered one line's ReserveStock.
pub fn on_reservation(
    state: &dyn StateRead,
    result: ReservationResult,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let Some(mut record) = state.order(&result.order_id)? else {
        return Ok(());
    };
    let Some(order) = record.order.as_ref() else {
        return Ok(());
    };
    if status::status_of(order) != OrderStatus::Placed {
        return Ok(());
    }
    let Some(index) = order.lines.iter().position(|line| line.sku == result.sku) else {
        return Ok(());
    };
    if record.line_status.get(index).copied() != Some(LineStatus::Pending as i32) {
        return Ok(());
    }
    let answered = if result.reserved {
        LineStatus::Reserved
    } else {
        LineStatus::Refused
    };
    record.line_status[index] = answered as i32;
    if !result.reserved {
        note_refusal(&mut record, index, &result);
    }
    if record.line_status.contains(&(LineStatus::Pending as i32)) {
        effects.put_order(&record);
        return Ok(());
    }
    all_lines_answered(record, effects)
}

/// Payments answered AuthorizePayment, CapturePayment, VoidPayment or
/// RefundPayment.
pub fn on_payment(
    state: &dyn StateRead,
    result: PaymentResult,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let Some(record) = state.order(&result.order_id)? else {
        return Ok(());
    };
    let current = record
        .order
        .as_ref()
        .map(status::status_of)
        .unwrap_or_default();
    let payment = PaymentStatus::try_from(result.status).unwrap_or_default();
    match (current, payment) {
        (OrderStatus::Placed, PaymentStatus::Authorized) => {
            authorized_first(record, result, effects)
        }
        (OrderStatus::AwaitingPayment, PaymentStatus::Authorized) => {
            confirm(record, result.provider_ref, effects)
        }
        (OrderStatus::Placed | OrderStatus::AwaitingPayment, PaymentStatus::Declined) => {
            decline(record, result, effects)
        }
        (OrderStatus::Fulfilling | OrderStatus::CaptureFailed, PaymentStatus::Captured) => {
            captured(record, result, effects)
        }
        (OrderStatus::Fulfilling, PaymentStatus::CaptureFailed) => {
            capture_failed(record, result, effects)
        }
        (OrderStatus::Cancelling, PaymentStatus::Voided) => finish_cancel(record, effects),
        // An authorization that arrives after the order gave up on it (its
        // deadline passed): release the hold it made.
        (OrderStatus::Rejected, PaymentStatus::Authorized) => {
            void_hold(effects, &result.order_id);
            Ok(())
        }
        (_, PaymentStatus::Refunded | PaymentStatus::RefundFailed) => {
            refund_settled(record, result, effects)
        }
        // A duplicate, or an answer for a step this order has left.
        _ => Ok(()),
    }
}

/// What payments is asked to hold for `order`.
pub(crate) fn authorization(order: &Order, payment_method: &str) -> AuthorizePayment {
    AuthorizePayment {
        order_id: order.order_id.clone(),
        customer_id: order.customer_id.clone(),
        amount_minor: order.total_minor,
        currency: order.currency.clone(),
        payment_method: payment_method.to_owned(),
    }
}

/// The hold came before every line was reserved: kept for the last
/// reservation's answer, which confirms (or rejects and voids it).
fn authorized_first(
    mut record: OrderRecord,
    result: PaymentResult,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    if record.authorized {
        return Ok(());
    }
    record.authorized = true;
    record.authorization_ref = result.provider_ref;
    effects.put_order(&record);
    Ok(())
}

fn captured(
    record: OrderRecord,
    result: PaymentResult,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    step_updated(record, effects, OrderStatus::Fulfilled, |order, _| {
        order.captured_minor = if result.amount_minor > 0 {
            result.amount_minor
        } else {
            order.total_minor
        };
        order.reason.clear();
    })
}

fn capture_failed(
    record: OrderRecord,
    result: PaymentResult,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    step_updated(record, effects, OrderStatus::CaptureFailed, |order, _| {
        order.reason = format!(
            "the payment provider refused the capture: {}",
            provider_words(&result)
        );
    })
}

/// A refund settled: the cancellation's ends the cancel, a partial one
/// answers whoever asked for it. A success arriving after its deadline
/// marked it failed still counts.
fn refund_settled(
    mut record: OrderRecord,
    result: PaymentResult,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let refunded = result.status == PaymentStatus::Refunded as i32;
    let now = effects.cause().sent_at_ms;
    let Some(order) = record.order.as_mut() else {
        return Ok(());
    };
    let Some(refund) = order.refunds.iter_mut().find(|refund| {
        refund.refund_id == result.refund_id
            && (refund.status == RefundStatus::Pending as i32
                || (refunded && refund.status == RefundStatus::Failed as i32))
    }) else {
        return Ok(());
    };
    if refunded {
        refund.status = RefundStatus::Refunded as i32;
        refund.message.clear();
        order.refunded_minor += refund.amount_minor;
    } else {
        refund.status = RefundStatus::Failed as i32;
        refund.message = provider_words(&result);
    }
    order.updated_at_ms = now;
    if result.refund_id != CANCEL_REFUND_ID {
        let change = if refunded {
            "refunded"
        } else {
            "refund_failed"
        };
        crate::reply::announce(effects, order, change);
        let order = order.clone();
        answer_refund_waiter(&mut record, effects, &result.refund_id, order);
        effects.put_order(&record);
        return Ok(());
    }
    let status = status::status_of(order);
    if refunded && matches!(status, OrderStatus::Cancelling | OrderStatus::RefundFailed) {
        return finish_cancel(record, effects);
    }
    if !refunded && status == OrderStatus::Cancelling {
        return step_updated(record, effects, OrderStatus::RefundFailed, |order, _| {
            order.reason = format!(
                "the payment provider refused the cancellation's refund: {}",
                provider_words(&result)
            );
        });
    }
    effects.put_order(&record);
    Ok(())
}

fn provider_words(result: &PaymentResult) -> String {
    match (result.decline_code.is_empty(), result.message.is_empty()) {
        (_, false) => result.message.clone(),
        (false, true) => result.decline_code.clone(),
        (true, true) => "no reason given".into(),
    }
}

/// A later step settled: announce it as OrderUpdated, answer whoever waits,
/// store the order.
pub(crate) fn settle_step(
    mut record: OrderRecord,
    effects: &mut Effects,
    change: &str,
) -> Result<(), HandlerError> {
    let Some(order) = record.order.clone() else {
        return Ok(());
    };
    crate::reply::announce(effects, &order, change);
    answer_waiter(&mut record, effects, order);
    effects.put_order(&record);
    Ok(())
}

/// Replies to the request that asked for refund `refund_id`, once.
pub(crate) fn answer_refund_waiter(
    record: &mut OrderRecord,
    effects: &mut Effects,
    refund_id: &str,
    order: Order,
) {
    let Some(index) = record
        .refund_waiters
        .iter()
        .position(|waiter| waiter.refund_id == refund_id)
    else {
        return;
    };
    let waiter = record.refund_waiters.remove(index);
    reply_with_order(effects, &waiter.reply_to, waiter.correlation_id, order);
}

fn note_refusal(record: &mut OrderRecord, index: usize, result: &ReservationResult) {
    let Some(order) = record.order.as_mut() else {
        return;
    };
    let rejection = order.rejection.get_or_insert_with(|| Rejection {
        code: Code::OutOfStock as i32,
        field: format!("lines[{index}].sku"),
        ..Rejection::default()
    });
    rejection.skus.push(result.sku.clone());
    let detail = format!(
        "{} (requested {}, available {})",
        result.sku,
        result.requested,
        result.available.max(0)
    );
    rejection.message = if rejection.message.is_empty() {
        format!("out of stock: {detail}")
    } else {
        format!("{}; {detail}", rejection.message)
    };
}

/// Every line has an answer: confirm if the payment is already held, else
/// wait for it; or give back what was reserved, void any hold, and reject.
fn all_lines_answered(mut record: OrderRecord, effects: &mut Effects) -> Result<(), HandlerError> {
    let now = effects.cause().sent_at_ms;
    let all_reserved = record
        .line_status
        .iter()
        .all(|line| *line == LineStatus::Reserved as i32);
    if all_reserved && record.authorized {
        let provider_ref = std::mem::take(&mut record.authorization_ref);
        return confirm(record, provider_ref, effects);
    }
    let Some(order) = record.order.as_mut() else {
        return Ok(());
    };
    if all_reserved {
        order.rejection = None;
        transition(order, OrderStatus::AwaitingPayment, now).map_err(illegal)?;
        // A record stored before checkout authorized in parallel.
        if !record.authorization_requested {
            record.authorization_requested = true;
            let authorize = authorization(order, &record.payment_method);
            effects.send(topic::PAYMENTS_MESSAGES, &order.order_id, &authorize);
        }
        effects.put_order(&record);
        return Ok(());
    }
    let reserved: Vec<String> = order
        .lines
        .iter()
        .zip(&record.line_status)
        .filter(|(_, status)| **status == LineStatus::Reserved as i32)
        .map(|(line, _)| line.sku.clone())
        .collect();
    let authorized = record.authorized;
    let rejected = |order: &mut Order, effects: &mut Effects| {
        // A hold still on its way is voided when it arrives (on_payment).
        if authorized {
            void_hold(effects, &order.order_id);
        }
        release(effects, &order.order_id, reserved);
    };
    step_with_event(record, effects, OrderStatus::Rejected, rejected, |order| {
        OrderRejected { order: Some(order) }
    })
}

fn confirm(
    record: OrderRecord,
    provider_ref: String,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let confirmed = |order: &mut Order, effects: &mut Effects| {
        order.payment_ref = provider_ref;
        for line in &order.lines {
            effects.send(
                topic::INVENTORY_MESSAGES,
                &line.sku,
                &CommitStock {
                    order_id: order.order_id.clone(),
                    sku: line.sku.clone(),
                },
            );
        }
    };
    step_with_event(
        record,
        effects,
        OrderStatus::Confirmed,
        confirmed,
        |order| OrderConfirmed { order: Some(order) },
    )
}

fn decline(
    record: OrderRecord,
    result: PaymentResult,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let declined = |order: &mut Order, effects: &mut Effects| {
        let message = if result.message.is_empty() {
            format!("the payment was declined ({})", result.decline_code)
        } else {
            format!("the payment was declined: {}", result.message)
        };
        order.rejection = Some(Rejection {
            code: Code::PaymentDeclined as i32,
            field: "payment_method".into(),
            message,
            reason: result.decline_code,
            ..Rejection::default()
        });
        let skus = order.lines.iter().map(|line| line.sku.clone()).collect();
        release(effects, &order.order_id, skus);
    };
    step_with_event(record, effects, OrderStatus::Rejected, declined, |order| {
        OrderRejected { order: Some(order) }
    })
}

pub(crate) fn finish_cancel(
    record: OrderRecord,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    step_with_event(
        record,
        effects,
        OrderStatus::Cancelled,
        |_, _| {},
        |order| OrderCancelled { order: Some(order) },
    )
}

/// One step of the saga: the order moves to `to` at the cause's time (an
/// illegal move refuses the whole message), `decide` writes what the step
/// decided and sends what it asks of others, and the step ends as
/// `OrderUpdated` named after the new status, answered and stored.
pub(crate) fn step_updated(
    mut record: OrderRecord,
    effects: &mut Effects,
    to: OrderStatus,
    decide: impl FnOnce(&mut Order, &mut Effects),
) -> Result<(), HandlerError> {
    if !advance(&mut record, effects, to, decide)? {
        return Ok(());
    }
    settle_step(record, effects, label(to))
}

/// [`step_updated`], ending with an event of its own (`event`) instead.
pub(crate) fn step_with_event<E: prost::Message + prost::Name>(
    mut record: OrderRecord,
    effects: &mut Effects,
    to: OrderStatus,
    decide: impl FnOnce(&mut Order, &mut Effects),
    event: impl FnOnce(Order) -> E,
) -> Result<(), HandlerError> {
    if !advance(&mut record, effects, to, decide)? {
        return Ok(());
    }
    settle(record, effects, event)
}

/// The transition and the step's decision; false for a record without an
/// order (nothing to move).
fn advance(
    record: &mut OrderRecord,
    effects: &mut Effects,
    to: OrderStatus,
    decide: impl FnOnce(&mut Order, &mut Effects),
) -> Result<bool, HandlerError> {
    let now = effects.cause().sent_at_ms;
    let Some(order) = record.order.as_mut() else {
        return Ok(false);
    };
    transition(order, to, now).map_err(illegal)?;
    decide(order, effects);
    Ok(true)
}

/// Asks payments to release the money held for `order_id` (nothing to do
/// if nothing is held; an authorization still in flight is voided by the
/// saga when its answer comes).
pub(crate) fn void_hold(effects: &mut Effects, order_id: &str) {
    let void = VoidPayment {
        order_id: order_id.to_owned(),
    };
    effects.send(topic::PAYMENTS_MESSAGES, order_id, &void);
}

/// Gives back stock held (or sold) for `order_id` on each SKU.
pub(crate) fn release(effects: &mut Effects, order_id: &str, skus: Vec<String>) {
    for sku in skus {
        let release = ReleaseStock {
            order_id: order_id.to_owned(),
            sku,
        };
        effects.send(topic::INVENTORY_MESSAGES, &release.sku, &release);
    }
}

/// A step settled: announce it, answer whoever waits, and store the order.
pub(crate) fn settle<E: prost::Message + prost::Name>(
    mut record: OrderRecord,
    effects: &mut Effects,
    event: impl FnOnce(Order) -> E,
) -> Result<(), HandlerError> {
    let Some(order) = record.order.clone() else {
        return Ok(());
    };
    effects.send(topic::ORDERS_EVENTS, &order.order_id, &event(order.clone()));
    answer_waiter(&mut record, effects, order);
    effects.put_order(&record);
    Ok(())
}

/// Replies to the request parked at the address kept in the record, once.
pub(crate) fn answer_waiter(record: &mut OrderRecord, effects: &mut Effects, order: Order) {
    let address = std::mem::take(&mut record.reply_to);
    let correlation_id = std::mem::take(&mut record.correlation_id);
    reply_with_order(effects, &address, correlation_id, order);
}

/// Answers the request parked at `address` (`topic/partition`; none when
/// empty or unreadable) with `order`.
fn reply_with_order(effects: &mut Effects, address: &str, correlation_id: String, order: Order) {
    let Ok(address) = ReplyTo::parse(address) else {
        return;
    };
    let reply = OrderReply {
        result: Some(order_reply::Result::Order(order.clone())),
        replayed: false,
    };
    let correlation_id = (!correlation_id.is_empty()).then_some(correlation_id);
    effects.reply_to(address, correlation_id, &order.order_id, &reply);
}

/// A transition the saga itself attempted was refused: the record disagrees
/// with the code's assumptions, so the message must not be half-applied.
pub(crate) fn illegal(error: status::IllegalTransition) -> HandlerError {
    HandlerError::Malformed(format!(
        "saga step refused ({error}); from {} to {}",
        label(error.from),
        label(error.to)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{command, envelope, from_service, reply_of, sent_of, Harness};
    use d2c_proto::orders::v1::{CancelOrder, FulfilOrder, OrderUpdated, RefundOrder};
    use d2c_proto::payments::v1::{CapturePayment, RefundPayment};
    use d2c_runtime::handler::Destination;
    use prost::Name;

    fn reservation(sku: &str, reserved: bool) -> ReservationResult {
        ReservationResult {
            order_id: "o-1".into(),
            sku: sku.into(),
            reserved,
            requested: 2,
            available: if reserved { 10 } else { 1 },
        }
    }

    fn payment(status: PaymentStatus) -> PaymentResult {
        PaymentResult {
            order_id: "o-1".into(),
            status: status as i32,
            provider_ref: "pi_1".into(),
            decline_code: "insufficient_funds".into(),
            message: "Your card has insufficient funds.".into(),
            ..PaymentResult::default()
        }
    }

    fn settled_order(effects: &Effects) -> Order {
        match reply_of(effects).and_then(|reply| reply.result) {
            Some(order_reply::Result::Order(order)) => order,
            other => panic!("an order reply expected, got {other:?}"),
        }
    }

    fn released(effects: &Effects) -> Vec<String> {
        sent_of::<ReleaseStock>(effects, topic::INVENTORY_MESSAGES)
            .into_iter()
            .map(|release| release.sku)
            .collect()
    }

    fn stored_status(harness: &Harness) -> OrderStatus {
        let record = harness.store().order("o-1").expect("read").expect("stored");
        status::status_of(record.order.as_ref().expect("order"))
    }

    fn voids(effects: &Effects) -> usize {
        sent_of::<VoidPayment>(effects, topic::PAYMENTS_MESSAGES).len()
    }

    /// Placed (the authorization asked for with the reservations) and both
    /// lines reserved: waiting for the payment.
    fn awaiting_payment(harness: &Harness) {
        let placed = harness.handle(&envelope(1), &command("o-1", b"h"));
        let authorize: Vec<AuthorizePayment> = sent_of(&placed, topic::PAYMENTS_MESSAGES);
        assert_eq!(authorize.len(), 1);
        assert_eq!(authorize[0].amount_minor, 3_000);
        assert_eq!(authorize[0].payment_method, "pm_card_visa");
        harness.handle(&from_service(2), &reservation("SKU-1", true));
        let effects = harness.handle(&from_service(3), &reservation("SKU-2", true));
        assert!(
            effects.outgoing().is_empty(),
            "authorization asked for once"
        );
        assert_eq!(stored_status(harness), OrderStatus::AwaitingPayment);
    }

    #[test]
    fn a_hold_before_the_last_reservation_confirms_on_it() {
        let harness = Harness::new();
        harness.handle(&envelope(1), &command("o-1", b"h"));
        harness.handle(&from_service(2), &reservation("SKU-1", true));
        let held = harness.handle(&from_service(3), &payment(PaymentStatus::Authorized));
        assert!(held.outgoing().is_empty(), "waits for the last line");
        assert_eq!(stored_status(&harness), OrderStatus::Placed);
        let again = harness.handle(&from_service(4), &payment(PaymentStatus::Authorized));
        assert!(again.outgoing().is_empty() && again.changes().is_empty());
        let effects = harness.handle(&from_service(5), &reservation("SKU-2", true));
        let order = settled_order(&effects);
        assert_eq!(order.status, OrderStatus::Confirmed as i32);
        assert_eq!(order.payment_ref, "pi_1");
        assert_eq!(
            sent_of::<CommitStock>(&effects, topic::INVENTORY_MESSAGES).len(),
            2
        );
        assert_eq!(
            sent_of::<OrderConfirmed>(&effects, topic::ORDERS_EVENTS).len(),
            1
        );
    }

    #[test]
    fn a_refused_line_after_the_hold_voids_it() {
        let harness = Harness::new();
        harness.handle(&envelope(1), &command("o-1", b"h"));
        harness.handle(&from_service(2), &payment(PaymentStatus::Authorized));
        harness.handle(&from_service(3), &reservation("SKU-1", true));
        let effects = harness.handle(&from_service(4), &reservation("SKU-2", false));
        assert_eq!(settled_order(&effects).status, OrderStatus::Rejected as i32);
        assert_eq!(released(&effects), ["SKU-1"]);
        assert_eq!(voids(&effects), 1);
    }

    #[test]
    fn a_refused_line_before_the_hold_voids_it_when_it_comes() {
        let harness = Harness::new();
        harness.handle(&envelope(1), &command("o-1", b"h"));
        harness.handle(&from_service(2), &reservation("SKU-1", true));
        let rejected = harness.handle(&from_service(3), &reservation("SKU-2", false));
        assert_eq!(
            settled_order(&rejected).status,
            OrderStatus::Rejected as i32
        );
        assert_eq!(voids(&rejected), 0, "nothing held yet");
        let late = harness.handle(&from_service(4), &payment(PaymentStatus::Authorized));
        assert_eq!(voids(&late), 1);
        assert_eq!(stored_status(&harness), OrderStatus::Rejected);
    }

    #[test]
    fn a_decline_while_lines_are_reserved_releases_every_line() {
        let harness = Harness::new();
        harness.handle(&envelope(1), &command("o-1", b"h"));
        harness.handle(&from_service(2), &reservation("SKU-1", true));
        let effects = harness.handle(&from_service(3), &payment(PaymentStatus::Declined));
        let order = settled_order(&effects);
        assert_eq!(order.status, OrderStatus::Rejected as i32);
        assert_eq!(
            order.rejection.expect("why").code,
            Code::PaymentDeclined as i32
        );
        // SKU-2's reservation is still on its way: its release follows it
        // on the same inventory partition.
        assert_eq!(released(&effects), ["SKU-1", "SKU-2"]);
        let late = harness.handle(&from_service(4), &reservation("SKU-2", true));
        assert!(late.outgoing().is_empty() && late.changes().is_empty());
    }

    #[test]
    fn an_order_placed_before_parallel_authorization_asks_once_reserved() {
        let harness = Harness::new();
        harness.handle(&envelope(1), &command("o-1", b"h"));
        let mut record = harness.store().order("o-1").expect("read").expect("stored");
        record.authorization_requested = false;
        harness
            .store()
            .write(&[d2c_state::Entry {
                key: d2c_state::Table::Orders.key(b"o-1"),
                value: Some(prost::Message::encode_to_vec(&record)),
            }])
            .expect("written");
        harness.handle(&from_service(2), &reservation("SKU-1", true));
        let effects = harness.handle(&from_service(3), &reservation("SKU-2", true));
        let authorize: Vec<AuthorizePayment> = sent_of(&effects, topic::PAYMENTS_MESSAGES);
        assert_eq!(authorize.len(), 1);
        assert_eq!(authorize[0].amount_minor, 3_000);
        assert_eq!(stored_status(&harness), OrderStatus::AwaitingPayment);
    }

    #[test]
    fn reserved_and_authorized_confirms_and_answers_the_waiting_request() {
        let harness = Harness::new();
        awaiting_payment(&harness);
        let effects = harness.handle(&from_service(4), &payment(PaymentStatus::Authorized));
        let order = settled_order(&effects);
        assert_eq!(order.status, OrderStatus::Confirmed as i32);
        assert_eq!(order.payment_ref, "pi_1");
        let reply = effects
            .outgoing()
            .iter()
            .find(|out| matches!(out.destination, Destination::Reply(_)))
            .expect("reply");
        assert_eq!(reply.envelope.correlation_id.as_deref(), Some("corr-1"));
        let commits: Vec<CommitStock> = sent_of(&effects, topic::INVENTORY_MESSAGES);
        assert_eq!(commits.len(), 2);
        assert_eq!(
            sent_of::<OrderConfirmed>(&effects, topic::ORDERS_EVENTS).len(),
            1
        );
        let record = harness.store().order("o-1").expect("read").expect("stored");
        assert!(record.reply_to.is_empty(), "the waiter is answered once");
    }

    #[test]
    fn a_refused_line_rejects_naming_the_sku_and_releases_the_reserved_ones() {
        let harness = Harness::new();
        harness.handle(&envelope(1), &command("o-1", b"h"));
        let first = harness.handle(&from_service(2), &reservation("SKU-1", true));
        assert!(first.outgoing().is_empty(), "waits for every line");
        let effects = harness.handle(&from_service(3), &reservation("SKU-2", false));
        let order = settled_order(&effects);
        assert_eq!(order.status, OrderStatus::Rejected as i32);
        let rejection = order.rejection.expect("why");
        assert_eq!(rejection.code, Code::OutOfStock as i32);
        assert_eq!(rejection.skus, ["SKU-2"]);
        assert_eq!(rejection.field, "lines[1].sku");
        assert_eq!(released(&effects), ["SKU-1"]);
        assert!(sent_of::<AuthorizePayment>(&effects, topic::PAYMENTS_MESSAGES).is_empty());
    }

    #[test]
    fn a_decline_rejects_and_releases_every_line() {
        let harness = Harness::new();
        awaiting_payment(&harness);
        let effects = harness.handle(&from_service(4), &payment(PaymentStatus::Declined));
        let order = settled_order(&effects);
        assert_eq!(order.status, OrderStatus::Rejected as i32);
        let rejection = order.rejection.expect("why");
        assert_eq!(rejection.code, Code::PaymentDeclined as i32);
        assert_eq!(rejection.reason, "insufficient_funds");
        assert_eq!(released(&effects), ["SKU-1", "SKU-2"]);
    }

    #[test]
    fn duplicate_and_late_answers_change_nothing() {
        let harness = Harness::new();
        awaiting_payment(&harness);
        for (id, late) in [(5, true), (6, false)] {
            let effects = harness.handle(&from_service(id), &reservation("SKU-1", late));
            assert!(effects.outgoing().is_empty() && effects.changes().is_empty());
        }
        harness.handle(&from_service(7), &payment(PaymentStatus::Authorized));
        for status in [PaymentStatus::Authorized, PaymentStatus::Declined] {
            let effects = harness.handle(&from_service(8), &payment(status));
            assert!(effects.outgoing().is_empty() && effects.changes().is_empty());
        }
        let order = harness.store().order("o-1").expect("read").expect("stored");
        assert_eq!(
            order.order.expect("order").status,
            OrderStatus::Confirmed as i32
        );
    }

    #[test]
    fn cancelling_a_confirmed_order_returns_stock_and_voids_once() {
        let harness = Harness::new();
        awaiting_payment(&harness);
        harness.handle(&from_service(4), &payment(PaymentStatus::Authorized));
        let cancel = CancelOrder {
            order_id: "o-1".into(),
            customer_id: "cust-1".into(),
        };
        let stranger = CancelOrder {
            order_id: "o-1".into(),
            customer_id: "cust-2".into(),
        };
        let refused = harness.handle(&envelope(9), &stranger);
        assert!(refused.changes().is_empty(), "another customer's cancel");
        assert!(matches!(
            reply_of(&refused).and_then(|reply| reply.result),
            Some(order_reply::Result::Rejected(Rejection { code, .. })) if code == Code::NotFound as i32
        ));
        let effects = harness.handle(&envelope(10), &cancel);
        assert_eq!(released(&effects), ["SKU-1", "SKU-2"]);
        assert_eq!(
            sent_of::<VoidPayment>(&effects, topic::PAYMENTS_MESSAGES).len(),
            1,
            "nothing was captured: the hold is released"
        );
        assert!(sent_of::<RefundPayment>(&effects, topic::PAYMENTS_MESSAGES).is_empty());
        assert!(reply_of(&effects).is_none(), "answered once voided");
        let again = harness.handle(&envelope(11), &cancel);
        assert!(sent_of::<VoidPayment>(&again, topic::PAYMENTS_MESSAGES).is_empty());
        let done = harness.handle(&from_service(12), &payment(PaymentStatus::Voided));
        assert_eq!(settled_order(&done).status, OrderStatus::Cancelled as i32);
        let reply = done
            .outgoing()
            .iter()
            .find(|out| matches!(out.destination, Destination::Reply(_)))
            .expect("reply");
        assert_eq!(reply.envelope.correlation_id.as_deref(), Some("corr-10"));
    }

    fn fulfilled(harness: &Harness) {
        awaiting_payment(harness);
        harness.handle(&from_service(4), &payment(PaymentStatus::Authorized));
        let fulfil = FulfilOrder {
            order_id: "o-1".into(),
        };
        let asked = harness.handle(&envelope(20), &fulfil);
        assert_eq!(
            sent_of::<CapturePayment>(&asked, topic::PAYMENTS_MESSAGES).len(),
            1
        );
        assert!(reply_of(&asked).is_none(), "answered once captured");
        let again = harness.handle(&envelope(21), &fulfil);
        assert!(sent_of::<CapturePayment>(&again, topic::PAYMENTS_MESSAGES).is_empty());
        assert_eq!(settled_order(&again).status, OrderStatus::Fulfilling as i32);
        let mut captured = payment(PaymentStatus::Captured);
        captured.amount_minor = 3_000;
        let done = harness.handle(&from_service(22), &captured);
        let order = settled_order(&done);
        assert_eq!(order.status, OrderStatus::Fulfilled as i32);
        assert_eq!(order.captured_minor, 3_000);
    }

    fn refund_order(refund_id: &str, amount_minor: i64) -> RefundOrder {
        RefundOrder {
            order_id: "o-1".into(),
            refund_id: refund_id.into(),
            amount_minor,
        }
    }

    fn refund_result(refund_id: &str, status: PaymentStatus, amount_minor: i64) -> PaymentResult {
        PaymentResult {
            order_id: "o-1".into(),
            status: status as i32,
            refund_id: refund_id.into(),
            amount_minor,
            message: "refused by the bank".into(),
            ..PaymentResult::default()
        }
    }

    fn rejection_code(effects: &Effects) -> (i32, String) {
        match reply_of(effects).and_then(|reply| reply.result) {
            Some(order_reply::Result::Rejected(rejection)) => (rejection.code, rejection.field),
            other => panic!("refusal expected, got {other:?}"),
        }
    }

    #[test]
    fn fulfilment_captures_and_a_refused_capture_is_visible_until_a_late_success() {
        let harness = Harness::new();
        awaiting_payment(&harness);
        harness.handle(&from_service(4), &payment(PaymentStatus::Authorized));
        harness.handle(
            &envelope(20),
            &FulfilOrder {
                order_id: "o-1".into(),
            },
        );
        let refused = harness.handle(&from_service(21), &payment(PaymentStatus::CaptureFailed));
        let order = settled_order(&refused);
        assert_eq!(order.status, OrderStatus::CaptureFailed as i32);
        assert!(
            order.reason.contains("refused the capture"),
            "{}",
            order.reason
        );
        let late = harness.handle(&from_service(22), &payment(PaymentStatus::Captured));
        let stored = harness.store().order("o-1").expect("read").expect("stored");
        assert!(late
            .outgoing()
            .iter()
            .any(|out| out.envelope.message_type == OrderUpdated::full_name()));
        assert_eq!(
            stored.order.expect("order").status,
            OrderStatus::Fulfilled as i32
        );
    }

    #[test]
    fn partial_refunds_add_up_to_at_most_the_capture_and_retries_change_nothing() {
        let harness = Harness::new();
        fulfilled(&harness);
        let first = harness.handle(&envelope(30), &refund_order("r-1", 1_000));
        let asked: Vec<RefundPayment> = sent_of(&first, topic::PAYMENTS_MESSAGES);
        assert_eq!(
            (asked[0].refund_id.as_str(), asked[0].amount_minor),
            ("r-1", 1_000)
        );
        assert!(reply_of(&first).is_none(), "answered once refunded");
        let retry = harness.handle(&envelope(31), &refund_order("r-1", 1_000));
        assert!(sent_of::<RefundPayment>(&retry, topic::PAYMENTS_MESSAGES).is_empty());
        assert!(retry.changes().is_empty());
        let other_amount = harness.handle(&envelope(32), &refund_order("r-1", 5));
        assert_eq!(rejection_code(&other_amount).0, Code::Conflict as i32);

        harness.handle(&envelope(33), &refund_order("r-2", 1_500));
        // 3,000 captured, 2,500 pending: 600 is more than is left.
        let too_much = harness.handle(&envelope(34), &refund_order("r-3", 600));
        assert_eq!(
            rejection_code(&too_much),
            (Code::Invalid as i32, "amount_minor".to_owned())
        );
        assert!(too_much.changes().is_empty());

        let done = harness.handle(
            &from_service(35),
            &refund_result("r-1", PaymentStatus::Refunded, 1_000),
        );
        let reply = done
            .outgoing()
            .iter()
            .find(|out| matches!(out.destination, Destination::Reply(_)))
            .expect("the refund's requester is answered");
        assert_eq!(reply.envelope.correlation_id.as_deref(), Some("corr-30"));
        let failed = harness.handle(
            &from_service(36),
            &refund_result("r-2", PaymentStatus::RefundFailed, 1_500),
        );
        let order = settled_order(&failed);
        assert_eq!(order.refunded_minor, 1_000);
        assert_eq!(order.refunds[1].status, RefundStatus::Failed as i32);
        assert_eq!(order.refunds[1].message, "refused by the bank");
        // The refused 1,500 is refundable again: 2,000 left.
        let rest = harness.handle(&envelope(37), &refund_order("r-4", 2_000));
        assert_eq!(
            sent_of::<RefundPayment>(&rest, topic::PAYMENTS_MESSAGES).len(),
            1
        );
    }

    #[test]
    fn cancelling_a_fulfilled_order_refunds_the_rest_and_a_refusal_is_visible() {
        let harness = Harness::new();
        fulfilled(&harness);
        harness.handle(&envelope(30), &refund_order("r-1", 1_000));
        let cancel = CancelOrder {
            order_id: "o-1".into(),
            ..CancelOrder::default()
        };
        let busy = harness.handle(&envelope(31), &cancel);
        assert_eq!(
            rejection_code(&busy).0,
            Code::IllegalTransition as i32,
            "a refund is in flight"
        );
        harness.handle(
            &from_service(32),
            &refund_result("r-1", PaymentStatus::Refunded, 1_000),
        );
        let asked = harness.handle(&envelope(33), &cancel);
        let refunds: Vec<RefundPayment> = sent_of(&asked, topic::PAYMENTS_MESSAGES);
        assert_eq!(
            (refunds[0].refund_id.as_str(), refunds[0].amount_minor),
            (CANCEL_REFUND_ID, 2_000)
        );
        assert!(sent_of::<VoidPayment>(&asked, topic::PAYMENTS_MESSAGES).is_empty());
        let refused = harness.handle(
            &from_service(34),
            &refund_result(CANCEL_REFUND_ID, PaymentStatus::RefundFailed, 2_000),
        );
        let order = settled_order(&refused);
        assert_eq!(order.status, OrderStatus::RefundFailed as i32);
        assert!(
            order.reason.contains("refused the cancellation's refund"),
            "{}",
            order.reason
        );
        let late = harness.handle(
            &from_service(35),
            &refund_result(CANCEL_REFUND_ID, PaymentStatus::Refunded, 2_000),
        );
        assert!(late
            .outgoing()
            .iter()
            .any(|out| out.envelope.message_type == OrderCancelled::full_name()));
        let stored = harness
            .store()
            .order("o-1")
            .expect("read")
            .expect("stored")
            .order
            .expect("order");
        assert_eq!(
            (stored.status, stored.refunded_minor),
            (OrderStatus::Cancelled as i32, 3_000)
        );
    }

    #[test]
    fn cancelling_an_unsettled_or_rejected_order_is_refused() {
        let harness = Harness::new();
        harness.handle(&envelope(1), &command("o-1", b"h"));
        let cancel = CancelOrder {
            order_id: "o-1".into(),
            ..CancelOrder::default()
        };
        let refused = |effects: &Effects| match reply_of(effects).and_then(|reply| reply.result) {
            Some(order_reply::Result::Rejected(rejection)) => rejection.code,
            other => panic!("refusal expected, got {other:?}"),
        };
        let effects = harness.handle(&envelope(2), &cancel);
        assert_eq!(refused(&effects), Code::IllegalTransition as i32);
        assert!(effects.changes().is_empty());
        let missing = harness.handle(
            &envelope(3),
            &CancelOrder {
                order_id: "nope".into(),
                ..CancelOrder::default()
            },
        );
        assert_eq!(refused(&missing), Code::NotFound as i32);
    }
}
