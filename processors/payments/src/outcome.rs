//! ProviderOutcome: what the provider said about a charge or a refund, from
//! the provider worker (or a verified webhook). Only the first outcome of an
//! in-flight call counts; duplicates change nothing.

use crate::table::{
    answer_orders, charge_result, put_payment, refunded_result, status_of, PaymentRead,
};
use d2c_proto::payments::v1::{
    provider_outcome::Kind, PaymentAuthorized, PaymentDeclined, PaymentRecord, PaymentRefunded,
    PaymentStatus, ProviderOutcome,
};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub fn apply(
    state: &dyn StateRead,
    outcome: ProviderOutcome,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let kind = Kind::try_from(outcome.kind).unwrap_or(Kind::Unspecified);
    if kind == Kind::Unspecified {
        return Err(HandlerError::Malformed(format!(
            "ProviderOutcome for order {:?} has no kind",
            outcome.order_id
        )));
    }
    let Some(record) = state.payment(&outcome.order_id)? else {
        // Not ours (a webhook for another system's payment): nothing to do.
        return Ok(());
    };
    match (kind, status_of(&record)) {
        (Kind::Charge, PaymentStatus::Requested) => charge_decided(record, outcome, effects),
        (Kind::Refund, PaymentStatus::RefundRequested) if outcome.approved => {
            refunded(record, outcome, effects)
        }
        // A refund the provider did not approve stays REFUND_REQUESTED: the
        // worker retries it until it is approved. Anything else is a
        // duplicate or late outcome.
        _ => {}
    }
    Ok(())
}

fn charge_decided(mut record: PaymentRecord, outcome: ProviderOutcome, effects: &mut Effects) {
    record.provider_ref = outcome.provider_ref;
    if outcome.approved {
        record.status = PaymentStatus::Authorized as i32;
        effects.send(
            topic::PAYMENTS_EVENTS,
            &record.order_id,
            &PaymentAuthorized {
                order_id: record.order_id.clone(),
                amount_minor: record.amount_minor,
                currency: record.currency.clone(),
                provider_ref: record.provider_ref.clone(),
            },
        );
    } else {
        record.status = PaymentStatus::Declined as i32;
        record.decline_code = outcome.decline_code;
        record.message = outcome.message;
        effects.send(
            topic::PAYMENTS_EVENTS,
            &record.order_id,
            &PaymentDeclined {
                order_id: record.order_id.clone(),
                decline_code: record.decline_code.clone(),
                message: record.message.clone(),
            },
        );
    }
    put_payment(effects, &record);
    if let Some(result) = charge_result(&record) {
        answer_orders(effects, &result);
    }
}

fn refunded(mut record: PaymentRecord, outcome: ProviderOutcome, effects: &mut Effects) {
    record.status = PaymentStatus::Refunded as i32;
    record.refund_ref = outcome.provider_ref;
    put_payment(effects, &record);
    effects.send(
        topic::PAYMENTS_EVENTS,
        &record.order_id,
        &PaymentRefunded {
            order_id: record.order_id.clone(),
            amount_minor: record.amount_minor,
            provider_ref: record.refund_ref.clone(),
        },
    );
    answer_orders(effects, &refunded_result(&record));
}
