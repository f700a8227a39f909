//! RefundPayment: the saga's compensation. Refund an authorized charge in
//! full (by announcing `RefundRequested` to the provider worker).

use crate::table::{
    answer_orders, put_payment, refund_idempotency_key, refunded_result, status_of, PaymentRead,
};
use d2c_proto::payments::v1::{
    PaymentRecord, PaymentResult, PaymentStatus, RefundPayment, RefundRequested,
};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub const NOTHING_TO_REFUND: &str = "nothing to refund";

pub fn apply(
    state: &dyn StateRead,
    command: RefundPayment,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let Some(record) = state.payment(&command.order_id)? else {
        nothing_to_refund(&command.order_id, effects);
        return Ok(());
    };
    match status_of(&record) {
        PaymentStatus::Authorized => refund_requested(record, effects),
        PaymentStatus::Refunded => answer_orders(effects, &refunded_result(&record)),
        // Nothing was charged: the refund is trivially done.
        PaymentStatus::Declined | PaymentStatus::Unspecified => {
            nothing_to_refund(&command.order_id, effects);
        }
        // REFUND_REQUESTED: the refund is in flight; its outcome answers.
        // REQUESTED: the charge is in flight and the refund is not queued
        // behind it. Orders gets the charge's result and asks again if it
        // still wants the money back.
        PaymentStatus::RefundRequested | PaymentStatus::Requested => {}
    }
    Ok(())
}

fn refund_requested(mut record: PaymentRecord, effects: &mut Effects) {
    record.status = PaymentStatus::RefundRequested as i32;
    put_payment(effects, &record);
    effects.send(
        topic::PAYMENTS_EVENTS,
        &record.order_id,
        &RefundRequested {
            order_id: record.order_id.clone(),
            provider_ref: record.provider_ref.clone(),
            amount_minor: record.amount_minor,
            currency: record.currency.clone(),
            idempotency_key: refund_idempotency_key(&record.order_id),
        },
    );
}

fn nothing_to_refund(order_id: &str, effects: &mut Effects) {
    answer_orders(
        effects,
        &PaymentResult {
            order_id: order_id.to_owned(),
            status: PaymentStatus::Refunded as i32,
            message: NOTHING_TO_REFUND.into(),
            ..PaymentResult::default()
        },
    );
}
