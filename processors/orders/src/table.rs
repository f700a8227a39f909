//! The orders table: order id → OrderRecord (protobuf).

use d2c_proto::actor::Actor;
use d2c_proto::orders::v1::OrderRecord;
use d2c_runtime::{Effects, HandlerError};
use d2c_state::{StateRead, Table};
use prost::Message;

pub trait OrderRead {
    fn order(&self, order_id: &str) -> Result<Option<OrderRecord>, HandlerError>;

    /// The order as `actor` may see it: another customer's order is `None`,
    /// exactly like a missing one, so ids cannot be probed; an operator sees
    /// every order.
    fn order_of(&self, order_id: &str, actor: &Actor) -> Result<Option<OrderRecord>, HandlerError> {
        Ok(self.order(order_id)?.filter(|record| {
            record
                .order
                .as_ref()
                .map_or(*actor == Actor::Operator, |order| {
                    actor.may_see(&order.customer_id)
                })
        }))
    }
}

pub trait OrderWrite {
    fn put_order(&mut self, record: &OrderRecord);
}

impl<S: StateRead + ?Sized> OrderRead for S {
    fn order(&self, order_id: &str) -> Result<Option<OrderRecord>, HandlerError> {
        let Some(bytes) = self.get(Table::Orders, order_id.as_bytes())? else {
            return Ok(None);
        };
        OrderRecord::decode(bytes.as_slice())
            .map(Some)
            .map_err(|error| {
                HandlerError::State(d2c_state::StateError::Corrupt(format!(
                    "order {order_id}: {error}"
                )))
            })
    }
}

impl OrderWrite for Effects {
    /// Stores the record with its deadline timer in step with its status
    /// (see [`crate::deadlines`]).
    fn put_order(&mut self, record: &OrderRecord) {
        let mut record = record.clone();
        crate::deadlines::reschedule(&mut record, self);
        let order_id = record
            .order
            .as_ref()
            .map(|order| order.order_id.clone())
            .unwrap_or_default();
        self.put(Table::Orders, order_id.as_bytes(), record.encode_to_vec());
    }
}
