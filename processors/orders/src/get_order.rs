//! GetOrder: a query answered by the partition that owns the order.

use crate::table::OrderRead;
use d2c_proto::actor::Actor;
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::orders::v1::{order_reply, GetOrder, OrderReply};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;

pub fn apply(
    state: &dyn StateRead,
    query: GetOrder,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let result = match state.order_of(
        &query.order_id,
        &Actor::from_customer_id(&query.customer_id),
    )? {
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

#[cfg(test)]
mod tests {
    use crate::testing::{command, envelope, reply_of, Harness};
    use d2c_proto::common::v1::rejection::Code;
    use d2c_proto::orders::v1::{order_reply, GetOrder};

    fn answer(harness: &Harness, customer_id: &str) -> order_reply::Result {
        let query = GetOrder {
            order_id: "o-1".into(),
            customer_id: customer_id.into(),
        };
        reply_of(&harness.handle(&envelope(5), &query))
            .and_then(|reply| reply.result)
            .expect("answered")
    }

    #[test]
    fn an_order_is_shown_to_its_customer_and_operators_only() {
        let harness = Harness::new();
        harness.handle(&envelope(1), &command("o-1", b"h"));
        for reader in ["cust-1", ""] {
            assert!(
                matches!(answer(&harness, reader), order_reply::Result::Order(order) if order.order_id == "o-1"),
                "{reader:?} reads it"
            );
        }
        match answer(&harness, "cust-2") {
            order_reply::Result::Rejected(rejection) => {
                assert_eq!(rejection.code, Code::NotFound as i32);
                assert_eq!(rejection.message, "order o-1 does not exist");
            }
            other => panic!("another customer must not see it: {other:?}"),
        }
    }
}
