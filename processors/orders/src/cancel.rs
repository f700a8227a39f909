//! CancelOrder: the order gives its stock back and its money. Before
//! fulfilment nothing was taken, so the authorization is voided; after it,
//! what is left of the capture is refunded (refund id `cancellation`). The
//! requester is answered when payments settles it (see saga.rs); asking
//! again meanwhile answers the order as it stands.

use crate::refund::{refundable, start_refund};
use crate::reply::{as_it_stands, illegal, rejected, wait_here};
use crate::saga::{finish_cancel, release};
use crate::status::{label, status_of, transition, CANCEL_REFUND_ID};
use crate::table::{OrderRead, OrderWrite};
use d2c_proto::actor::Actor;
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::orders::v1::{
    CancelOrder, OrderCancellationRequested, OrderRefund, OrderStatus, RefundStatus,
};
use d2c_proto::payments::v1::VoidPayment;
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub fn apply(
    state: &dyn StateRead,
    command: CancelOrder,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let Some(mut record) = state.order_of(
        &command.order_id,
        &Actor::from_customer_id(&command.customer_id),
    )?
    else {
        effects.reply(
            &command.order_id,
            &rejected(Rejection {
                code: Code::NotFound as i32,
                field: "order_id".into(),
                message: format!("order {} does not exist", command.order_id),
                ..Rejection::default()
            }),
        );
        return Ok(());
    };
    let Some(mut order) = record.order.clone() else {
        return Ok(());
    };
    match status_of(&order) {
        OrderStatus::Cancelling | OrderStatus::Cancelled | OrderStatus::RefundFailed => {
            effects.reply(&command.order_id, &as_it_stands(order));
            return Ok(());
        }
        OrderStatus::Fulfilled if order.refunds.iter().any(is_pending) => {
            let message =
                "a refund of this order is in flight; cancel it once that settles".to_owned();
            effects.reply(&command.order_id, &rejected(illegal(message)));
            return Ok(());
        }
        OrderStatus::Confirmed | OrderStatus::Fulfilled => {}
        other => {
            let message = format!(
                "only a confirmed or fulfilled order can be cancelled; this one is {}",
                label(other)
            );
            effects.reply(&command.order_id, &rejected(illegal(message)));
            return Ok(());
        }
    }
    let fulfilled = status_of(&order) == OrderStatus::Fulfilled;
    let now = effects.cause().sent_at_ms;
    // Checked just above; the table still has the last word.
    transition(&mut order, OrderStatus::Cancelling, now)
        .map_err(|error| HandlerError::Malformed(error.to_string()))?;
    let skus = order.lines.iter().map(|line| line.sku.clone()).collect();
    release(effects, &order.order_id, skus);
    effects.send(
        topic::ORDERS_EVENTS,
        &order.order_id,
        &OrderCancellationRequested {
            order: Some(order.clone()),
        },
    );
    wait_here(&mut record, effects);
    if !fulfilled {
        // Nothing was taken yet: release the hold.
        effects.send(
            topic::PAYMENTS_MESSAGES,
            &order.order_id,
            &VoidPayment {
                order_id: order.order_id.clone(),
            },
        );
    } else {
        let rest = refundable(&order);
        if rest > 0 {
            start_refund(&mut order, CANCEL_REFUND_ID, rest, effects);
        } else {
            record.order = Some(order);
            return finish_cancel(record, effects);
        }
    }
    record.order = Some(order);
    effects.put_order(&record);
    Ok(())
}

fn is_pending(refund: &OrderRefund) -> bool {
    refund.status == RefundStatus::Pending as i32
}
