//! The orders processor: owns each order (keyed by order id) and answers for
//! it. Handlers are pure: state and message in, effects out.
//!
//! # The checkout saga
//!
//! orders orchestrates; inventory (keyed by SKU) and payments (keyed by order
//! id) answer on `orders.messages`, keyed by order id, so every step of one
//! order is handled by the partition that owns it, in order, with no lock.
//!
//! ```text
//!   (none) --PlaceOrder--> PLACED          lines priced from the catalog; ReserveStock per line
//!                                          and AuthorizePayment, side by side
//!   PLACED --authorized--> PLACED                       the hold is remembered
//!   PLACED --all lines reserved, held--> CONFIRMED      CommitStock per line, 201 (money held)
//!   PLACED --all lines reserved--> AWAITING_PAYMENT     (waits for the authorization)
//!   PLACED --all answered, any refused--> REJECTED      ReleaseStock (reserved lines), VoidPayment if held, 409
//!   PLACED / AWAITING_PAYMENT --declined--> REJECTED    ReleaseStock per line, 402
//!   AWAITING_PAYMENT --authorized--> CONFIRMED          CommitStock per line, 201 (money held)
//!   REJECTED --authorized (late)--> REJECTED            VoidPayment
//!   CONFIRMED --FulfilOrder--> FULFILLING               CapturePayment
//!   FULFILLING --captured--> FULFILLED                  answer the fulfil
//!   FULFILLING --capture refused--> CAPTURE_FAILED      answer, reason (a late capture still counts)
//!   FULFILLED --RefundOrder--> FULFILLED                RefundPayment(id, amount): partial refunds
//!   CONFIRMED --CancelOrder--> CANCELLING               ReleaseStock + VoidPayment
//!   FULFILLED --CancelOrder--> CANCELLING               ReleaseStock + RefundPayment(the rest)
//!   CANCELLING --voided / refunded--> CANCELLED         answer the cancel
//!   CANCELLING --refund refused--> REFUND_FAILED        answer, reason (a late refund still counts)
//! ```
//!
//! The table lives in [`status::is_allowed`] and every change goes through
//! [`status::transition`]. A command that asks for an illegal step (cancel a
//! rejected order) is refused with ILLEGAL_TRANSITION; an answer that arrives
//! twice or after its step is over changes nothing.
//!
//! The request that started a step (the gateway's parked HTTP request) is
//! remembered as a reply address + correlation id and answered when the step
//! settles. A PlaceOrder for an order that exists is an idempotent retry: same
//! request → the order as it stands; same key with a different request →
//! refused as a conflict.

pub mod cancel;
pub mod deadlines;
mod expiry;
pub mod fulfil;
pub mod get_order;
pub mod metrics;
pub mod place_order;
pub mod prices;
pub mod refund;
mod reply;
pub mod saga;
pub mod status;
mod table;
#[cfg(test)]
mod testing;

pub use table::{OrderRead, OrderWrite};

use d2c_proto::common::v1::Tick;
use d2c_proto::inventory::v1::ReservationResult;
use d2c_proto::orders::v1::{CancelOrder, FulfilOrder, GetOrder, PlaceOrder, RefundOrder};
use d2c_proto::payments::v1::PaymentResult;
use d2c_runtime::router::Router;

pub const SERVICE: &str = "orders";
/// Admin port (/health, /ready, /metrics) when D2C_ADMIN_ADDR is not set.
pub const DEFAULT_ADMIN_PORT: u16 = 9101;

/// The orders handler: order state from the partition store, prices from
/// the catalog view every instance keeps. Deadlines ([`deadlines`]) need
/// ticks: the caller sets their interval (`.ticks(..)`).
pub fn handler(prices: std::sync::Arc<dyn prices::PriceBook>) -> Router {
    Router::new(SERVICE)
        .on_envelope::<PlaceOrder, _>(move |state, envelope, command, effects| {
            place_order::apply(state, prices.as_ref(), envelope, command, effects)
        })
        .on::<ReservationResult, _>(saga::on_reservation)
        .on::<PaymentResult, _>(saga::on_payment)
        .on::<CancelOrder, _>(cancel::apply)
        .on::<GetOrder, _>(get_order::apply)
        .on::<FulfilOrder, _>(fulfil::apply)
        .on::<RefundOrder, _>(refund::apply)
        .on::<Tick, _>(|state, _, effects| expiry::on_tick(state, effects))
        // Saga outcomes and revenue, from the order events of a committed batch.
        .on_commit(metrics::record)
}
