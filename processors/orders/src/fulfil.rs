//! FulfilOrder (an operator ships the order): a confirmed order's payment is
//! captured. The requester is answered when the capture settles (saga.rs);
//! asking again meanwhile answers the order as it stands.

use crate::reply::{announce, as_it_stands, illegal, not_found, rejected, wait_here};
use crate::status::{label, status_of, transition};
use crate::table::{OrderRead, OrderWrite};
use d2c_proto::orders::v1::{FulfilOrder, OrderStatus};
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
