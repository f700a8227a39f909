//! FulfilOrder (an operator ships the order): a confirmed order's payment is
//! captured. The requester is answered when the capture settles (saga.rs);
//! asking again meanwhile answers the order as it stands.

use crate::place_order::rejected;
use crate::status::{label, status_of, transition};
use crate::table::{OrderRead, OrderWrite};
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::orders::v1::{
    order_reply, FulfilOrder, Order, OrderRecord, OrderReply, OrderStatus, OrderUpdated,
};
use d2c_proto::payments::v1::CapturePayment;
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub fn apply(
    state: &dyn StateRead,
    command: FulfilOrder,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let Some(mut record) = state.order(&command.order_id)? else {
        effects.reply(&command.order_id, &rejected(not_found(&command.order_id)));
        return Ok(());
    };
    let Some(mut order) = record.order.clone() else {
        return Ok(());
    };
    match status_of(&order) {
        OrderStatus::Confirmed => {}
        OrderStatus::Fulfilling | OrderStatus::Fulfilled | OrderStatus::CaptureFailed => {
            effects.reply(&command.order_id, &as_it_stands(order));
            return Ok(());
        }
        other => {
            let message = format!(
                "only a confirmed order can be fulfilled; this one is {}",
                label(other)
            );
            effects.reply(&command.order_id, &rejected(illegal(message)));
            return Ok(());
        }
    }
    let now = effects.cause().sent_at_ms;
    transition(&mut order, OrderStatus::Fulfilling, now)
        .map_err(|error| HandlerError::Malformed(error.to_string()))?;
    effects.send(
        topic::PAYMENTS_MESSAGES,
        &order.order_id,
        &CapturePayment {
            order_id: order.order_id.clone(),
        },
    );
    announce(effects, &order, "fulfilment_requested");
    wait_here(&mut record, effects);
    record.order = Some(order);
    effects.put_order(&record);
    Ok(())
}

/// The order on `orders.events` after a later step.
pub(crate) fn announce(effects: &mut Effects, order: &Order, change: &str) {
    effects.send(
        topic::ORDERS_EVENTS,
        &order.order_id,
        &OrderUpdated {
            order: Some(order.clone()),
            change: change.to_owned(),
        },
    );
}

/// The request being handled waits for the step it started.
pub(crate) fn wait_here(record: &mut OrderRecord, effects: &Effects) {
    (record.reply_to, record.correlation_id) = requester(effects);
}

/// Where the request being handled waits for its answer: its reply address
/// (`topic/partition`) and correlation id, empty when it waits nowhere.
pub(crate) fn requester(effects: &Effects) -> (String, String) {
    let cause = effects.cause();
    let reply_to = cause
        .reply_to
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    (reply_to, cause.correlation_id.clone().unwrap_or_default())
}

pub(crate) fn as_it_stands(order: Order) -> OrderReply {
    OrderReply {
        result: Some(order_reply::Result::Order(order)),
        replayed: true,
    }
}

pub(crate) fn not_found(order_id: &str) -> Rejection {
    Rejection {
        code: Code::NotFound as i32,
        field: "order_id".into(),
        message: format!("order {order_id} does not exist"),
        ..Rejection::default()
    }
}

pub(crate) fn illegal(message: String) -> Rejection {
    Rejection {
        code: Code::IllegalTransition as i32,
        field: "status".into(),
        message,
        ..Rejection::default()
    }
}
