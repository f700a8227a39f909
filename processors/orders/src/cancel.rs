//! CancelOrder: a confirmed order gives its stock back and is refunded (the
//! saga's compensation, run in reverse). The requester is answered when the
//! refund is done (see saga.rs); asking again meanwhile answers the order as
//! it stands.

use crate::place_order::rejected;
use crate::saga::release;
use crate::status::{label, status_of, transition};
use crate::table::{OrderRead, OrderWrite};
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::orders::v1::{
    order_reply, CancelOrder, OrderCancellationRequested, OrderReply, OrderStatus,
};
use d2c_proto::payments::v1::RefundPayment;
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub fn apply(
    state: &dyn StateRead,
    command: CancelOrder,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let Some(mut record) = state.order_of(&command.order_id, &command.customer_id)? else {
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
        OrderStatus::Cancelling | OrderStatus::Cancelled => {
            let reply = OrderReply {
                result: Some(order_reply::Result::Order(order)),
                replayed: true,
            };
            effects.reply(&command.order_id, &reply);
            return Ok(());
        }
        OrderStatus::Confirmed => {}
        other => {
            effects.reply(
                &command.order_id,
                &rejected(Rejection {
                    code: Code::IllegalTransition as i32,
                    field: "status".into(),
                    message: format!(
                        "only a confirmed order can be cancelled; this one is {}",
                        label(other)
                    ),
                    ..Rejection::default()
                }),
            );
            return Ok(());
        }
    }
    let now = effects.cause().sent_at_ms;
    // Checked just above; the table still has the last word.
    transition(&mut order, OrderStatus::Cancelling, now)
        .map_err(|error| HandlerError::Malformed(error.to_string()))?;
    let skus = order.lines.iter().map(|line| line.sku.clone()).collect();
    release(effects, &order.order_id, skus);
    effects.send(
        topic::PAYMENTS_MESSAGES,
        &order.order_id,
        &RefundPayment {
            order_id: order.order_id.clone(),
        },
    );
    effects.send(
        topic::ORDERS_EVENTS,
        &order.order_id,
        &OrderCancellationRequested {
            order: Some(order.clone()),
        },
    );
    let cause = effects.cause();
    record.reply_to = cause
        .reply_to
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    record.correlation_id = cause.correlation_id.clone().unwrap_or_default();
    record.order = Some(order);
    effects.put_order(&record);
    Ok(())
}
