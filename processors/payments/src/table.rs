//! The payments table: order id → PaymentRecord (protobuf), and the answers
//! to orders that follow from a record.

use d2c_proto::payments::v1::{PaymentRecord, PaymentResult, PaymentStatus};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::{StateRead, Table};
use d2c_topology::topic;
use prost::Message;

/// The provider idempotency key of an order's charge. Fixed per order, so
/// every attempt (retries, replays, a second worker) is one charge.
pub fn charge_idempotency_key(order_id: &str) -> String {
    format!("d2c-charge-{order_id}")
}

/// The provider idempotency key of an order's refund.
pub fn refund_idempotency_key(order_id: &str) -> String {
    format!("d2c-refund-{order_id}")
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

/// The answer to AuthorizePayment for a decided charge: AUTHORIZED (also once
/// a refund started: the charge itself was authorized) or DECLINED. `None`
/// while the charge is undecided.
pub(crate) fn charge_result(record: &PaymentRecord) -> Option<PaymentResult> {
    match status_of(record) {
        PaymentStatus::Authorized | PaymentStatus::RefundRequested | PaymentStatus::Refunded => {
            Some(PaymentResult {
                order_id: record.order_id.clone(),
                status: PaymentStatus::Authorized as i32,
                provider_ref: record.provider_ref.clone(),
                decline_code: String::new(),
                message: String::new(),
            })
        }
        PaymentStatus::Declined => Some(PaymentResult {
            order_id: record.order_id.clone(),
            status: PaymentStatus::Declined as i32,
            provider_ref: record.provider_ref.clone(),
            decline_code: record.decline_code.clone(),
            message: record.message.clone(),
        }),
        PaymentStatus::Requested | PaymentStatus::Unspecified => None,
    }
}

/// The answer to RefundPayment once the refund is done.
pub(crate) fn refunded_result(record: &PaymentRecord) -> PaymentResult {
    PaymentResult {
        order_id: record.order_id.clone(),
        status: PaymentStatus::Refunded as i32,
        provider_ref: record.refund_ref.clone(),
        decline_code: String::new(),
        message: String::new(),
    }
}

/// Send a result to the orders saga, keyed by order id.
pub(crate) fn answer_orders(effects: &mut Effects, result: &PaymentResult) {
    effects.send(topic::ORDERS_MESSAGES, &result.order_id, result);
}
