//! AuthorizePayment: validate, record the request, ask the provider worker
//! (by announcing `PaymentRequested`). A repeat answers with what is known.

use crate::table::{
    answer_orders, charge_idempotency_key, charge_result, put_payment, PaymentRead,
};
use d2c_proto::payments::v1::{
    AuthorizePayment, PaymentDeclined, PaymentRecord, PaymentRequested, PaymentResult,
    PaymentStatus,
};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub const INVALID_REQUEST: &str = "invalid_request";

pub fn apply(
    state: &dyn StateRead,
    command: AuthorizePayment,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    if !command.order_id.is_empty() {
        if let Some(existing) = state.payment(&command.order_id)? {
            // REQUESTED: the provider call is in flight and its outcome will
            // answer. Decided: answer again (orders drops the duplicate).
            if let Some(result) = charge_result(&existing) {
                answer_orders(effects, &result);
            }
            return Ok(());
        }
    }
    if let Err(message) = validate(&command) {
        let result = PaymentResult {
            order_id: command.order_id.clone(),
            status: PaymentStatus::Declined as i32,
            provider_ref: String::new(),
            decline_code: INVALID_REQUEST.into(),
            message: message.clone(),
            ..PaymentResult::default()
        };
        if !command.order_id.is_empty() {
            put_payment(
                effects,
                &PaymentRecord {
                    status: PaymentStatus::Declined as i32,
                    decline_code: INVALID_REQUEST.into(),
                    message: message.clone(),
                    ..record_of(&command)
                },
            );
            effects.send(
                topic::PAYMENTS_EVENTS,
                &command.order_id,
                &PaymentDeclined {
                    order_id: command.order_id.clone(),
                    decline_code: INVALID_REQUEST.into(),
                    message,
                },
            );
        }
        answer_orders(effects, &result);
        return Ok(());
    }
    let record = record_of(&command);
    put_payment(effects, &record);
    effects.send(
        topic::PAYMENTS_PROVIDER_REQUESTS,
        &record.order_id,
        &PaymentRequested {
            order_id: record.order_id.clone(),
            amount_minor: record.amount_minor,
            currency: record.currency.clone(),
            payment_method: record.payment_method.clone(),
            idempotency_key: record.idempotency_key.clone(),
            customer_id: record.customer_id.clone(),
        },
    );
    Ok(())
}

fn record_of(command: &AuthorizePayment) -> PaymentRecord {
    PaymentRecord {
        order_id: command.order_id.clone(),
        customer_id: command.customer_id.clone(),
        amount_minor: command.amount_minor,
        currency: command.currency.clone(),
        payment_method: command.payment_method.clone(),
        status: PaymentStatus::Requested as i32,
        idempotency_key: charge_idempotency_key(&command.order_id),
        ..PaymentRecord::default()
    }
}

/// Orders validated the order; this is the owner's own check, since a
/// command may come from anywhere that can write to the topic.
fn validate(command: &AuthorizePayment) -> Result<(), String> {
    if command.order_id.is_empty() {
        return Err("order_id is required".into());
    }
    if command.payment_method.is_empty() {
        return Err("payment_method is required".into());
    }
    if command.amount_minor < 0 {
        return Err("amount_minor cannot be negative".into());
    }
    if command.currency.len() != 3 || !command.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("currency must be an ISO 4217 code such as EUR".into());
    }
    Ok(())
}
