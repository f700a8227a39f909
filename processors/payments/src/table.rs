//! The payments table: order id → PaymentRecord (protobuf), and the answers
//! to orders that follow from a record.

use d2c_proto::payments::v1::{PaymentRecord, PaymentResult, PaymentStatus, RefundRecord};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::{StateRead, Table};
use d2c_topology::topic;
use prost::Message;

/// The provider idempotency key of an order's charge. Fixed per order, so
/// every attempt (retries, replays, a second worker) is one charge.
pub fn charge_idempotency_key(order_id: &str) -> String {
    format!("d2c-charge-{order_id}")
}

/// The provider idempotency key of one refund of an order.
pub fn refund_idempotency_key(order_id: &str, refund_id: &str) -> String {
    format!("d2c-refund-{order_id}-{refund_id}")
}

/// The provider idempotency key of an order's capture.
pub fn capture_idempotency_key(order_id: &str) -> String {
    format!("d2c-capture-{order_id}")
}

/// The provider idempotency key of an order's void.
pub fn void_idempotency_key(order_id: &str) -> String {
    format!("d2c-void-{order_id}")
}

pub trait PaymentRead {
    fn payment(&self, order_id: &str) -> Result<Option<PaymentRecord>, HandlerError>;
}

impl<S: StateRead + ?Sized> PaymentRead for S {
    fn payment(&self, order_id: &str) -> Result<Option<PaymentRecord>, HandlerError> {
        let Some(bytes) = self.get(Table::Payments, order_id.as_bytes())? else {
            return Ok(None);
        };
        PaymentRecord::decode(bytes.as_slice())
            .map(Some)
            .map_err(|error| {
                HandlerError::State(d2c_state::StateError::Corrupt(format!(
                    "payment {order_id}: {error}"
                )))
            })
    }
}

pub(crate) fn put_payment(effects: &mut Effects, record: &PaymentRecord) {
    effects.put_record(Table::Payments, &record.order_id, record);
}

pub(crate) fn status_of(record: &PaymentRecord) -> PaymentStatus {
    PaymentStatus::try_from(record.status).unwrap_or(PaymentStatus::Unspecified)
}

/// The answer to AuthorizePayment for a decided authorization: AUTHORIZED
/// (also once captured, voided or refunded: the authorization itself was
/// given) or DECLINED. `None` while it is undecided.
pub(crate) fn charge_result(record: &PaymentRecord) -> Option<PaymentResult> {
    match status_of(record) {
        PaymentStatus::Authorized
        | PaymentStatus::CaptureRequested
        | PaymentStatus::Captured
        | PaymentStatus::CaptureFailed
        | PaymentStatus::VoidRequested
        | PaymentStatus::Voided
        | PaymentStatus::RefundRequested
        | PaymentStatus::Refunded
        | PaymentStatus::RefundFailed => Some(PaymentResult {
            order_id: record.order_id.clone(),
            status: PaymentStatus::Authorized as i32,
            provider_ref: record.provider_ref.clone(),
            ..PaymentResult::default()
        }),
        PaymentStatus::Declined => Some(PaymentResult {
            order_id: record.order_id.clone(),
            status: PaymentStatus::Declined as i32,
            provider_ref: record.provider_ref.clone(),
            decline_code: record.decline_code.clone(),
            message: record.message.clone(),
            ..PaymentResult::default()
        }),
        PaymentStatus::Requested | PaymentStatus::Unspecified => None,
    }
}

/// A result about `record` with `status` and nothing else.
pub(crate) fn result(record: &PaymentRecord, status: PaymentStatus) -> PaymentResult {
    PaymentResult {
        order_id: record.order_id.clone(),
        status: status as i32,
        provider_ref: record.provider_ref.clone(),
        ..PaymentResult::default()
    }
}

/// The answer about one refund once it is decided; `None` while pending.
pub(crate) fn refund_result(
    record: &PaymentRecord,
    refund: &RefundRecord,
) -> Option<PaymentResult> {
    let status = PaymentStatus::try_from(refund.status).unwrap_or_default();
    matches!(
        status,
        PaymentStatus::Refunded | PaymentStatus::RefundFailed
    )
    .then(|| PaymentResult {
        order_id: record.order_id.clone(),
        status: status as i32,
        provider_ref: refund.provider_ref.clone(),
        message: refund.message.clone(),
        refund_id: refund.refund_id.clone(),
        amount_minor: refund.amount_minor,
        ..PaymentResult::default()
    })
}

/// What may still be refunded: captured minus every refund not refused.
pub(crate) fn refundable(record: &PaymentRecord) -> i64 {
    let committed: i64 = record
        .refunds
        .iter()
        .filter(|refund| refund.status != PaymentStatus::RefundFailed as i32)
        .map(|refund| refund.amount_minor)
        .sum();
    record.captured_minor - committed
}

/// Send a result to the orders saga, keyed by order id.
pub(crate) fn answer_orders(effects: &mut Effects, result: &PaymentResult) {
    effects.send(topic::ORDERS_MESSAGES, &result.order_id, result);
}
