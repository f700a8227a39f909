//! RefundOrder (an operator gives part of the money back): a fulfilled
//! order's refund of `amount_minor`, once per refund id, never more than was
//! captured minus what is refunded or being refunded. The requester is
//! answered when the provider settles it (saga.rs).

use crate::reply::{announce, as_it_stands, illegal, not_found, rejected, requester};
use crate::status::{label, status_of};
use crate::table::{OrderRead, OrderWrite};
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::orders::v1::{
    Order, OrderRefund, OrderStatus, RefundOrder, RefundStatus, RefundWaiter,
};
use d2c_proto::payments::v1::RefundPayment;
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub fn apply(
    state: &dyn StateRead,
    command: RefundOrder,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let Some(mut record) = state.order(&command.order_id)? else {
        effects.reply(&command.order_id, &rejected(not_found(&command.order_id)));
        return Ok(());
    };
    let Some(mut order) = record.order.clone() else {
        return Ok(());
    };
    if let Some(known) = order
        .refunds
        .iter()
        .find(|r| r.refund_id == command.refund_id)
    {
        let reply = if known.amount_minor == command.amount_minor {
            as_it_stands(order.clone())
        } else {
            rejected(Rejection {
                code: Code::Conflict as i32,
                field: "Idempotency-Key".into(),
                message: "this Idempotency-Key was already used for a refund of another amount"
                    .into(),
                ..Rejection::default()
            })
        };
        effects.reply(&command.order_id, &reply);
        return Ok(());
    }
    if let Err(rejection) = check(&order, &command) {
        effects.reply(&command.order_id, &rejected(rejection));
        return Ok(());
    }
    start_refund(
        &mut order,
        &command.refund_id,
        command.amount_minor,
        effects,
    );
    let (reply_to, correlation_id) = requester(effects);
    record.refund_waiters.push(RefundWaiter {
        refund_id: command.refund_id.clone(),
        reply_to,
        correlation_id,
    });
    record.order = Some(order);
    effects.put_order(&record);
    Ok(())
}

fn check(order: &Order, command: &RefundOrder) -> Result<(), Rejection> {
    let status = status_of(order);
    if status != OrderStatus::Fulfilled {
        return Err(illegal(format!(
            "only a fulfilled order can be refunded in part; this one is {}",
            label(status)
        )));
    }
    if command.refund_id.is_empty() {
        return Err(invalid(
            "Idempotency-Key",
            "a refund needs an idempotency key".into(),
        ));
    }
    let left = refundable(order);
    if command.amount_minor <= 0 || command.amount_minor > left {
        return Err(invalid(
            "amount_minor",
            format!("amount_minor must be between 1 and {left}, what is left to refund"),
        ));
    }
    Ok(())
}

/// Captured minus refunded minus pending: what a new refund may take.
pub(crate) fn refundable(order: &Order) -> i64 {
    let pending: i64 = order
        .refunds
        .iter()
        .filter(|refund| refund.status == RefundStatus::Pending as i32)
        .map(|refund| refund.amount_minor)
        .sum();
    order.captured_minor - order.refunded_minor - pending
}

/// Records the refund as pending, asks payments, announces it.
pub(crate) fn start_refund(order: &mut Order, refund_id: &str, amount: i64, effects: &mut Effects) {
    let now = effects.cause().sent_at_ms;
    order.refunds.push(OrderRefund {
        refund_id: refund_id.to_owned(),
        amount_minor: amount,
        status: RefundStatus::Pending as i32,
        requested_at_ms: now,
        message: String::new(),
    });
    order.updated_at_ms = now;
    effects.send(
        topic::PAYMENTS_MESSAGES,
        &order.order_id,
        &RefundPayment {
            order_id: order.order_id.clone(),
            refund_id: refund_id.to_owned(),
            amount_minor: amount,
        },
    );
    announce(effects, order, "refund_requested");
}

fn invalid(field: &str, message: String) -> Rejection {
    Rejection {
        code: Code::Invalid as i32,
        field: field.to_owned(),
        message,
        ..Rejection::default()
    }
}
