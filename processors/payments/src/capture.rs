//! CapturePayment (fulfilment takes the held money) and VoidPayment (a
//! cancel before fulfilment releases the hold): each asks the provider
//! worker through an event, and a repeat answers with what is known.

use crate::table::{
    answer_orders, capture_idempotency_key, put_payment, result, status_of, void_idempotency_key,
    PaymentRead,
};
use d2c_proto::payments::v1::{
    CapturePayment, CaptureRequested, PaymentResult, PaymentStatus, VoidPayment, VoidRequested,
};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub fn apply_capture(
    state: &dyn StateRead,
    command: CapturePayment,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let Some(mut record) = state.payment(&command.order_id)? else {
        answer_orders(
            effects,
            &nothing_to(&command.order_id, PaymentStatus::CaptureFailed, "capture"),
        );
        return Ok(());
    };
    match status_of(&record) {
        PaymentStatus::Authorized => {
            record.status = PaymentStatus::CaptureRequested as i32;
            put_payment(effects, &record);
            effects.send(
                topic::PAYMENTS_PROVIDER_REQUESTS,
                &record.order_id,
                &CaptureRequested {
                    order_id: record.order_id.clone(),
                    provider_ref: record.provider_ref.clone(),
                    amount_minor: record.amount_minor,
                    currency: record.currency.clone(),
                    idempotency_key: capture_idempotency_key(&record.order_id),
                },
            );
        }
        PaymentStatus::Captured => {
            let mut captured = result(&record, PaymentStatus::Captured);
            captured.amount_minor = record.captured_minor;
            answer_orders(effects, &captured);
        }
        PaymentStatus::CaptureFailed => {
            let mut failed = result(&record, PaymentStatus::CaptureFailed);
            failed.decline_code = record.decline_code.clone();
            failed.message = record.message.clone();
            answer_orders(effects, &failed);
        }
        // In flight: its outcome answers.
        PaymentStatus::CaptureRequested | PaymentStatus::Requested => {}
        other => answer_orders(
            effects,
            &nothing_to(&record.order_id, PaymentStatus::CaptureFailed, label(other)),
        ),
    }
    Ok(())
}

pub fn apply_void(
    state: &dyn StateRead,
    command: VoidPayment,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let Some(mut record) = state.payment(&command.order_id)? else {
        answer_orders(
            effects,
            &nothing_to(&command.order_id, PaymentStatus::Voided, "void"),
        );
        return Ok(());
    };
    match status_of(&record) {
        PaymentStatus::Authorized => {
            record.status = PaymentStatus::VoidRequested as i32;
            put_payment(effects, &record);
            effects.send(
                topic::PAYMENTS_PROVIDER_REQUESTS,
                &record.order_id,
                &VoidRequested {
                    order_id: record.order_id.clone(),
                    provider_ref: record.provider_ref.clone(),
                    idempotency_key: void_idempotency_key(&record.order_id),
                },
            );
        }
        PaymentStatus::Voided => answer_orders(effects, &result(&record, PaymentStatus::Voided)),
        // Nothing is held: the void is trivially done.
        PaymentStatus::Declined | PaymentStatus::Unspecified => answer_orders(
            effects,
            &nothing_to(&record.order_id, PaymentStatus::Voided, "void"),
        ),
        // REQUESTED: the authorization is in flight and the void is not
        // queued behind it; orders asks again when its deadline passes.
        // VOID_REQUESTED: in flight. Captured money is refunded, not voided.
        _ => {}
    }
    Ok(())
}

fn nothing_to(order_id: &str, status: PaymentStatus, what: &str) -> PaymentResult {
    PaymentResult {
        order_id: order_id.to_owned(),
        status: status as i32,
        message: format!("nothing to {what}"),
        ..PaymentResult::default()
    }
}

fn label(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Declined => "capture: the authorization was declined",
        PaymentStatus::Voided | PaymentStatus::VoidRequested => {
            "capture: the authorization was voided"
        }
        _ => "capture",
    }
}
