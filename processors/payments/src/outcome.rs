//! ProviderOutcome: what the provider said about an authorization, capture,
//! void or refund, from the provider worker (or a verified webhook). Only
//! the first outcome of an in-flight call counts; duplicates change nothing.

use crate::table::{
    answer_orders, charge_result, put_payment, refund_result, result, status_of, PaymentRead,
};
use d2c_proto::payments::v1::{
    provider_outcome::Kind, PaymentAuthorized, PaymentCaptured, PaymentDeclined, PaymentRecord,
    PaymentRefunded, PaymentStatus, PaymentStepFailed, PaymentVoided, ProviderOutcome,
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
        (Kind::Capture, PaymentStatus::CaptureRequested) => {
            capture_decided(record, outcome, effects)
        }
        (Kind::Void, PaymentStatus::VoidRequested) => voided(record, outcome, effects),
        (Kind::Refund, _) => refund_decided(record, outcome, effects),
        // A duplicate or a late outcome.
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

fn capture_decided(mut record: PaymentRecord, outcome: ProviderOutcome, effects: &mut Effects) {
    let answer = if outcome.approved {
        record.status = PaymentStatus::Captured as i32;
        record.captured_minor = record.amount_minor;
        effects.send(
            topic::PAYMENTS_EVENTS,
            &record.order_id,
            &PaymentCaptured {
                order_id: record.order_id.clone(),
                amount_minor: record.captured_minor,
                currency: record.currency.clone(),
                provider_ref: record.provider_ref.clone(),
            },
        );
        let mut captured = result(&record, PaymentStatus::Captured);
        captured.amount_minor = record.captured_minor;
        captured
    } else {
        record.status = PaymentStatus::CaptureFailed as i32;
        record.decline_code = outcome.decline_code;
        record.message = outcome.message;
        step_failed(&record, Kind::Capture, "", effects);
        let mut failed = result(&record, PaymentStatus::CaptureFailed);
        failed.decline_code = record.decline_code.clone();
        failed.message = record.message.clone();
        failed
    };
    put_payment(effects, &record);
    answer_orders(effects, &answer);
}

/// A refused void still ends the hold for us: nothing was taken, and an
/// authorization that is not captured lapses at the provider.
fn voided(mut record: PaymentRecord, outcome: ProviderOutcome, effects: &mut Effects) {
    if !outcome.approved {
        tracing::warn!(order_id = %record.order_id, decline_code = %outcome.decline_code, message = %outcome.message,
            "The provider refused to void an authorization; it lapses uncaptured");
    }
    record.status = PaymentStatus::Voided as i32;
    put_payment(effects, &record);
    effects.send(
        topic::PAYMENTS_EVENTS,
        &record.order_id,
        &PaymentVoided {
            order_id: record.order_id.clone(),
            provider_ref: record.provider_ref.clone(),
        },
    );
    answer_orders(effects, &result(&record, PaymentStatus::Voided));
}

fn refund_decided(mut record: PaymentRecord, outcome: ProviderOutcome, effects: &mut Effects) {
    let Some(index) = record.refunds.iter().position(|refund| {
        refund.refund_id == outcome.refund_id
            && refund.status == PaymentStatus::RefundRequested as i32
    }) else {
        return;
    };
    let refund = &mut record.refunds[index];
    refund.provider_ref = outcome.provider_ref;
    if outcome.approved {
        refund.status = PaymentStatus::Refunded as i32;
        effects.send(
            topic::PAYMENTS_EVENTS,
            &record.order_id,
            &PaymentRefunded {
                order_id: record.order_id.clone(),
                amount_minor: refund.amount_minor,
                provider_ref: refund.provider_ref.clone(),
                refund_id: refund.refund_id.clone(),
            },
        );
    } else {
        refund.status = PaymentStatus::RefundFailed as i32;
        refund.message = if outcome.message.is_empty() {
            outcome.decline_code.clone()
        } else {
            outcome.message.clone()
        };
        record.decline_code = outcome.decline_code;
        let refund_id = refund.refund_id.clone();
        step_failed(&record, Kind::Refund, &refund_id, effects);
    }
    let answer = refund_result(&record, &record.refunds[index]);
    put_payment(effects, &record);
    if let Some(answer) = answer {
        answer_orders(effects, &answer);
    }
}

fn step_failed(record: &PaymentRecord, kind: Kind, refund_id: &str, effects: &mut Effects) {
    tracing::error!(
        order_id = %record.order_id,
        step = ?kind,
        refund_id,
        decline_code = %record.decline_code,
        "The provider refused a {} for good: an operator must look",
        if kind == Kind::Capture { "capture" } else { "refund" }
    );
    effects.send(
        topic::PAYMENTS_EVENTS,
        &record.order_id,
        &PaymentStepFailed {
            order_id: record.order_id.clone(),
            kind: kind as i32,
            refund_id: refund_id.to_owned(),
            decline_code: record.decline_code.clone(),
            message: record.message.clone(),
        },
    );
}
