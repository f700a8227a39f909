//! GetOrder: a query answered by the partition that owns the order.

use crate::table::OrderRead;
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::orders::v1::{order_reply, GetOrder, OrderReply};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;

pub fn apply(
    state: &dyn StateRead,
    query: GetOrder,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let result = match state.order(&query.order_id)? {
        Some(record) => record.order.map(order_reply::Result::Order),
        None => Some(order_reply::Result::Rejected(Rejection {
            code: Code::NotFound as i32,
            field: "order_id".into(),
            message: format!("order {} does not exist", query.order_id),
            ..Rejection::default()
        })),
    };
    effects.reply(
        &query.order_id,
        &OrderReply {
            result,
            replayed: false,
        },
    );
    Ok(())
}
