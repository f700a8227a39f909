//! Tick: fire the deadlines that are due at the tick's sent-at (see
//! [`crate::deadlines`] for what each expiry does and why).

use crate::deadlines::{self, parse_timer_key, timer_key, waiting_step};
use crate::saga::{
    answer_refund_waiter, finish_cancel, release, step_updated, step_with_event, void_hold,
};
use crate::status::{status_of, CANCEL_REFUND_ID};
use crate::table::{OrderRead, OrderWrite};
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::orders::v1::{
    Order, OrderDeadlineExpired, OrderRecord, OrderRejected, OrderStatus, RefundStatus,
};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::{StateRead, Table};
use d2c_topology::topic;

/// Timers fired per tick at most; the rest wait for the next tick.
const FIRE_PER_TICK: usize = 256;

pub fn on_tick(state: &dyn StateRead, effects: &mut Effects) -> Result<(), HandlerError> {
    let now = effects.cause().sent_at_ms;
    let due = state.range(
        Table::Deadlines,
        &timer_key(0, ""),
        &timer_key(now.saturating_add(1), ""),
        FIRE_PER_TICK,
    )?;
    for (key, _) in due {
        let Some((due_ms, order_id)) = parse_timer_key(&key) else {
            effects.delete(Table::Deadlines, &key);
            continue;
        };
        // Read through this batch's changes: an earlier expiry in the same
        // tick may have moved another order, never this one.
        match state.order(&order_id)? {
            Some(record) if record.deadline_ms == due_ms => expire(record, due_ms, effects)?,
            // A timer its order no longer has (it moved on in the meantime).
            _ => effects.delete(Table::Deadlines, &key),
        }
    }
    Ok(())
}

fn expire(mut record: OrderRecord, due_ms: i64, effects: &mut Effects) -> Result<(), HandlerError> {
    let Some((step, _, _)) = waiting_step(&record) else {
        return Ok(());
    };
    let Some(order) = record.order.as_mut() else {
        return Ok(());
    };
    effects.send(
        topic::ORDERS_EVENTS,
        &order.order_id,
        &OrderDeadlineExpired {
            order_id: order.order_id.clone(),
            step: step.to_owned(),
            due_ms,
        },
    );
    let now = effects.cause().sent_at_ms;
    let message = deadlines::describe(&record, step);
    let Some(order) = record.order.as_mut() else {
        return Ok(());
    };
    let hold_may_exist = record.authorization_requested || step == "authorization";
    match status_of(order) {
        OrderStatus::Placed | OrderStatus::AwaitingPayment => {
            let rejected = |order: &mut Order, effects: &mut Effects| {
                order.rejection = Some(Rejection {
                    code: Code::TimedOut as i32,
                    field: step.to_owned(),
                    message: format!("the order was rejected: {message}"),
                    ..Rejection::default()
                });
                order.reason = message;
                let skus = order.lines.iter().map(|line| line.sku.clone()).collect();
                release(effects, &order.order_id, skus);
                // Checkout asks for the authorization with the reservations,
                // so a hold may exist (or still come) whichever step expired.
                if hold_may_exist {
                    void_hold(effects, &order.order_id);
                }
            };
            step_with_event(record, effects, OrderStatus::Rejected, rejected, |order| {
                OrderRejected { order: Some(order) }
            })
        }
        OrderStatus::Fulfilling => {
            step_updated(record, effects, OrderStatus::CaptureFailed, |order, _| {
                order.reason =
                    format!("{message}: the payment provider did not confirm the capture");
            })
        }
        OrderStatus::Cancelling if step == "refund" => {
            mark_failed(&mut record, CANCEL_REFUND_ID, now);
            step_updated(record, effects, OrderStatus::RefundFailed, |order, _| {
                order.reason =
                    format!("{message}: the payment provider did not confirm the refund");
            })
        }
        OrderStatus::Cancelling => {
            // Nothing was captured; a hold nobody voids lapses by itself.
            order.reason = format!("{message}: the void was not confirmed; nothing was taken");
            finish_cancel(record, effects)
        }
        OrderStatus::Fulfilled => expire_partial_refunds(record, now, effects),
        _ => {
            effects.put_order(&record);
            Ok(())
        }
    }
}

/// Every partial refund pending past its deadline is marked failed and its
/// requester answered; a late success still counts (saga.rs).
fn expire_partial_refunds(
    mut record: OrderRecord,
    now: i64,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let limit = deadlines::current().refund.as_millis() as i64;
    let expired: Vec<String> = record
        .order
        .iter()
        .flat_map(|order| &order.refunds)
        .filter(|refund| {
            refund.status == RefundStatus::Pending as i32 && refund.requested_at_ms + limit <= now
        })
        .map(|refund| refund.refund_id.clone())
        .collect();
    for refund_id in &expired {
        mark_failed(&mut record, refund_id, now);
        if let Some(order) = record.order.clone() {
            crate::reply::announce(effects, &order, "refund_failed");
            answer_refund_waiter(&mut record, effects, refund_id, order);
        }
    }
    effects.put_order(&record);
    Ok(())
}

fn mark_failed(record: &mut OrderRecord, refund_id: &str, now: i64) {
    let Some(order) = record.order.as_mut() else {
        return;
    };
    if let Some(refund) = order.refunds.iter_mut().find(|refund| {
        refund.refund_id == refund_id && refund.status == RefundStatus::Pending as i32
    }) {
        refund.status = RefundStatus::Failed as i32;
        refund.message = "the payment provider did not confirm the refund in time".into();
    }
    order.updated_at_ms = now;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{command, confirmed_order, envelope, from_service, sent_of, Harness};
    use d2c_proto::common::v1::Tick;
    use d2c_proto::inventory::v1::{ReleaseStock, ReservationResult};
    use d2c_proto::orders::v1::{FulfilOrder, OrderUpdated};
    use d2c_proto::payments::v1::{PaymentResult, PaymentStatus, VoidPayment};
    use d2c_proto::Envelope;
    use prost::Name;

    const PLACED_AT: i64 = 1_700_000_000_000;

    fn tick_at(harness: &Harness, id: u128, at_ms: i64) -> Effects {
        let tick = Envelope::new(Tick::full_name(), uuid::Uuid::from_u128(id), at_ms);
        harness.handle(&tick, &Tick {})
    }

    fn stored(harness: &Harness) -> OrderRecord {
        harness.store().order("o-1").expect("read").expect("stored")
    }

    fn expired(effects: &Effects) -> Vec<String> {
        sent_of::<OrderDeadlineExpired>(effects, topic::ORDERS_EVENTS)
            .into_iter()
            .map(|expired| expired.step)
            .collect()
    }

    #[test]
    fn a_reservation_that_never_answers_rejects_the_order_once() {
        let harness = Harness::new();
        harness.handle(&envelope(1), &command("o-1", b"h"));
        let limit = deadlines::current().reservation.as_millis() as i64;
        assert_eq!(stored(&harness).deadline_ms, PLACED_AT + limit);
        let early = tick_at(&harness, 2, PLACED_AT + limit - 1);
        assert!(
            early.outgoing().is_empty() && early.changes().is_empty(),
            "not due yet"
        );

        let due = tick_at(&harness, 3, PLACED_AT + limit);
        assert_eq!(expired(&due), ["reservation"]);
        assert_eq!(
            sent_of::<ReleaseStock>(&due, topic::INVENTORY_MESSAGES).len(),
            2
        );
        // The authorization went out with the reservations.
        assert_eq!(
            sent_of::<VoidPayment>(&due, topic::PAYMENTS_MESSAGES).len(),
            1
        );
        let record = stored(&harness);
        let order = record.order.expect("order");
        assert_eq!(order.status, OrderStatus::Rejected as i32);
        assert_eq!(order.rejection.expect("why").code, Code::TimedOut as i32);
        assert_eq!(record.deadline_ms, 0, "nothing left to wait for");

        let again = tick_at(&harness, 4, PLACED_AT + limit + 10_000);
        assert!(again.outgoing().is_empty(), "a deadline fires once");
        // A reservation answered late changes nothing.
        let late = ReservationResult {
            order_id: "o-1".into(),
            sku: "SKU-1".into(),
            reserved: true,
            requested: 2,
            available: 10,
        };
        assert!(harness
            .handle(&from_service(5), &late)
            .outgoing()
            .is_empty());
    }

    #[test]
    fn a_capture_that_never_answers_fails_visibly_and_a_late_one_still_counts() {
        let harness = Harness::new();
        confirmed_order(&harness);
        assert_eq!(
            stored(&harness).deadline_ms,
            0,
            "a confirmed order waits for nothing"
        );
        let fulfil_at = PLACED_AT + 5_000;
        let mut fulfil = envelope(5);
        fulfil.sent_at_ms = fulfil_at;
        harness.handle(
            &fulfil,
            &FulfilOrder {
                order_id: "o-1".into(),
            },
        );
        let limit = deadlines::current().capture.as_millis() as i64;
        assert_eq!(stored(&harness).deadline_ms, fulfil_at + limit);

        let due = tick_at(&harness, 6, fulfil_at + limit + 1);
        assert_eq!(expired(&due), ["capture"]);
        let updated: Vec<OrderUpdated> = sent_of(&due, topic::ORDERS_EVENTS);
        assert_eq!(updated[0].change, "capture_failed");
        let order = stored(&harness).order.expect("order");
        assert_eq!(order.status, OrderStatus::CaptureFailed as i32);
        assert!(
            order.reason.contains("did not finish in time"),
            "{}",
            order.reason
        );

        let captured = PaymentResult {
            order_id: "o-1".into(),
            status: PaymentStatus::Captured as i32,
            amount_minor: 3_000,
            ..PaymentResult::default()
        };
        harness.handle(&from_service(7), &captured);
        assert_eq!(
            stored(&harness).order.expect("order").status,
            OrderStatus::Fulfilled as i32
        );
    }
}
