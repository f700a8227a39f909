//! What several orders handlers answer and announce: the requester's
//! address, the order as it stands, the rejections they share, and the
//! order on `orders.events` after a step.

use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::orders::v1::{order_reply, Order, OrderRecord, OrderReply, OrderUpdated};
use d2c_runtime::Effects;
use d2c_topology::topic;

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

pub(crate) fn rejected(rejection: Rejection) -> OrderReply {
    OrderReply {
        result: Some(order_reply::Result::Rejected(rejection)),
        replayed: false,
    }
}
