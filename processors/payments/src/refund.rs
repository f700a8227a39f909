//! RefundPayment: give back part (or the rest) of a captured payment, once
//! per refund id, never more than was captured. The provider worker makes
//! the call (RefundRequested); its outcome answers orders.

use crate::table::{
    answer_orders, put_payment, refund_idempotency_key, refund_result, refundable, status_of,
    PaymentRead,
};
use d2c_proto::payments::v1::{
    PaymentRecord, PaymentResult, PaymentStatus, RefundPayment, RefundRecord, RefundRequested,
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
    let Some(mut record) = state.payment(&command.order_id)? else {
        answer_orders(effects, &nothing_to_refund(&command));
        return Ok(());
    };
    if let Some(known) = record
        .refunds
        .iter()
        .find(|refund| refund.refund_id == command.refund_id)
    {
        // A repeat: answer once decided; a pending one answers by itself.
        if let Some(result) = refund_result(&record, known) {
            answer_orders(effects, &result);
        }
        return Ok(());
    }
    match status_of(&record) {
        PaymentStatus::Captured => {}
        // Nothing was taken (declined, voided, never authorized).
        PaymentStatus::Declined
        | PaymentStatus::Voided
        | PaymentStatus::VoidRequested
        | PaymentStatus::Unspecified => {
            answer_orders(effects, &nothing_to_refund(&command));
            return Ok(());
        }
        // Held but not taken, or a step in flight: orders refunds only
        // captured payments, so this is a stray command.
        _ => {
            answer_orders(
                effects,
                &refused(&command, "only a captured payment can be refunded"),
            );
            return Ok(());
        }
    }
    let left = refundable(&record);
    let amount = if command.amount_minor == 0 {
        left
    } else {
        command.amount_minor
    };
    if amount <= 0 || amount > left {
        answer_orders(
            effects,
            &refused(
                &command,
                &format!("{amount} exceeds what is left to refund ({left})"),
            ),
        );
        return Ok(());
    }
    request_refund(&mut record, &command.refund_id, amount, effects);
    Ok(())
}

fn request_refund(record: &mut PaymentRecord, refund_id: &str, amount: i64, effects: &mut Effects) {
    record.refunds.push(RefundRecord {
        refund_id: refund_id.to_owned(),
        amount_minor: amount,
        status: PaymentStatus::RefundRequested as i32,
        ..RefundRecord::default()
    });
    put_payment(effects, record);
    effects.send(
        topic::PAYMENTS_PROVIDER_REQUESTS,
        &record.order_id,
        &RefundRequested {
            order_id: record.order_id.clone(),
            provider_ref: record.provider_ref.clone(),
            amount_minor: amount,
            currency: record.currency.clone(),
            idempotency_key: refund_idempotency_key(&record.order_id, refund_id),
            refund_id: refund_id.to_owned(),
        },
    );
}

fn nothing_to_refund(command: &RefundPayment) -> PaymentResult {
    PaymentResult {
        order_id: command.order_id.clone(),
        status: PaymentStatus::Refunded as i32,
        message: NOTHING_TO_REFUND.into(),
        refund_id: command.refund_id.clone(),
        ..PaymentResult::default()
    }
}

fn refused(command: &RefundPayment, message: &str) -> PaymentResult {
    PaymentResult {
        order_id: command.order_id.clone(),
        status: PaymentStatus::RefundFailed as i32,
        decline_code: "invalid_request".into(),
        message: message.to_owned(),
        refund_id: command.refund_id.clone(),
        amount_minor: command.amount_minor,
        ..PaymentResult::default()
    }
}
