//! The payments processor: owns each order's payment (keyed by order id) and
//! answers the orders saga with a `PaymentResult` on `orders.messages`.
//!
//! Two parts, one process:
//!
//! * [`PaymentsHandler`], a pure handler run by the shared runtime on
//!   `payments.messages`. It never calls the provider: it records what is
//!   wanted (`PaymentRequested`, `RefundRequested` on `payments.events`) and
//!   applies what the provider said (`ProviderOutcome`).
//! * The provider worker ([`worker`]), the only place with I/O: its own
//!   consumer group on `payments.events` calls the [`PaymentProvider`] for each
//!   request and reports the answer as a `ProviderOutcome` on
//!   `payments.messages`. Its offset is stored only after the outcome is
//!   acknowledged, so a crash repeats a provider call, never loses one; the
//!   provider idempotency key is fixed per order (`d2c-charge-{order_id}`,
//!   `d2c-refund-{order_id}`), so a repeated call charges once.
//! * Provider webhooks ([`webhook_route`]): `POST /webhooks/provider` on the
//!   admin endpoint takes the provider's signed events (`Stripe-Signature`,
//!   secret `D2C_PAYMENT_WEBHOOK_SECRET`) and produces what they report as a
//!   `ProviderOutcome` to `payments.messages`, keyed by order id, with a
//!   message id derived from the event id; it answers `200` once the broker
//!   has it (`503` otherwise, so the provider redelivers), `400` for a bad
//!   signature or an unreadable event, and `200` `"ignored": true` for events
//!   we do not act on. A webhook can settle a payment while the worker's call
//!   is still stuck; whichever outcome comes second changes nothing.
//!
//! # Payment states
//!
//! ```text
//!                AuthorizePayment              ProviderOutcome(charge, approved)
//!   (none) ─────────────────────────▶ REQUESTED ───────────────────────────▶ AUTHORIZED
//!     │ invalid request                   │ ProviderOutcome(charge, declined)      │ RefundPayment
//!     ▼                                   ▼                                        ▼
//!   DECLINED ◀────────────────────────────┘                               REFUND_REQUESTED
//!                                                                                  │ ProviderOutcome(refund, approved)
//!                                                                                  ▼
//!                                                                              REFUNDED
//! ```
//!
//! | state            | AuthorizePayment            | RefundPayment                         | ProviderOutcome          |
//! |------------------|-----------------------------|---------------------------------------|--------------------------|
//! | (none)           | validate → REQUESTED        | result REFUNDED "nothing to refund"   | ignored                  |
//! | REQUESTED        | nothing (call in flight)    | nothing (see below)                   | charge → AUTHORIZED / DECLINED |
//! | AUTHORIZED       | re-send result AUTHORIZED   | → REFUND_REQUESTED                    | ignored (duplicate)      |
//! | DECLINED         | re-send result DECLINED     | result REFUNDED "nothing to refund"   | ignored (duplicate)      |
//! | REFUND_REQUESTED | re-send result AUTHORIZED   | nothing (refund in flight)            | refund approved → REFUNDED; refund failed → stays |
//! | REFUNDED         | re-send result AUTHORIZED   | re-send result REFUNDED               | ignored (duplicate)      |
//!
//! Every answer to orders is sent with `Effects::send` to `orders.messages`
//! keyed by order id (orders is a saga, not a caller waiting on a reply-to);
//! orders ignores a result it already has, so re-sending is harmless.
//!
//! Decisions worth knowing:
//!
//! * An invalid `AuthorizePayment` (empty payment method, negative amount, a
//!   currency that is not three upper-case letters) is DECLINED with
//!   `decline_code = "invalid_request"` and recorded, so a repeat gets the same
//!   answer and a provider is never called for it. (An empty order id cannot be
//!   recorded: it is only answered.)
//! * `RefundPayment` while the charge is still REQUESTED does nothing: the
//!   refund is not queued behind the in-flight charge. Orders will get the
//!   charge's `PaymentResult` later and must send `RefundPayment` again if it
//!   still wants the money back (an AUTHORIZED result while compensating).
//! * A refund the provider refused (a decline, or a request it rejects as
//!   invalid) leaves the payment in REFUND_REQUESTED and is logged as an
//!   error for an operator: retrying with the same idempotency key could only
//!   return the same stored refusal. Transient errors are retried until the
//!   provider answers.
//! * Only the first charge outcome counts; later outcomes for the same payment
//!   (worker replays, webhooks) change nothing.
//!
//! # Sandbox test tokens
//!
//! The [`SandboxProvider`] (the default provider, in-process and
//! deterministic) decides by payment method token:
//!
//! | token                                     | charge result                                    |
//! |-------------------------------------------|--------------------------------------------------|
//! | `pm_card_visa`, `pm_card_mastercard`      | approved                                         |
//! | `pm_card_chargeDeclined`                  | declined, `card_declined`                        |
//! | `pm_card_chargeDeclinedInsufficientFunds` | declined, `insufficient_funds`                   |
//! | `pm_card_transientError`                  | transient error on the first attempt per idempotency key, approved on retry |
//! | anything else                             | declined, `invalid_payment_method`               |
//!
//! Provider references are `sb_pi_` / `sb_re_` followed by the first 16 hex
//! digits of SHA-256(idempotency key): the same key always gives the same
//! reference. Refunds are always approved.

pub mod authorize;
pub mod config;
pub mod http_provider;
pub mod outcome;
pub mod provider;
pub mod refund;
pub mod sandbox;
mod table;
pub mod webhook;
pub mod webhook_route;
pub mod worker;

#[cfg(test)]
mod handler_tests;

pub use config::{PaymentsConfig, ProviderKind};
pub use http_provider::HttpProvider;
pub use provider::{
    ChargeRequest, PaymentProvider, ProviderDecision, ProviderError, RefundRequest,
};
pub use sandbox::SandboxProvider;
pub use table::{charge_idempotency_key, refund_idempotency_key, PaymentRead};
pub use worker::{run_worker, RetryPolicy, WorkerSettings};

use d2c_proto::payments::v1::{AuthorizePayment, ProviderOutcome, RefundPayment};
use d2c_runtime::{Effects, Handler, HandlerError, Incoming};
use d2c_state::StateRead;
use prost::Name;

pub const SERVICE: &str = "payments";
/// Admin port (/health, /ready, /metrics) when D2C_ADMIN_ADDR is not set.
pub const DEFAULT_ADMIN_PORT: u16 = 9103;

#[derive(Debug, Default)]
pub struct PaymentsHandler;

impl Handler for PaymentsHandler {
    fn handle(
        &self,
        state: &dyn StateRead,
        message: &Incoming<'_>,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let message_type = message.envelope.message_type.as_str();
        if message_type == AuthorizePayment::full_name() {
            authorize::apply(state, message.decode()?, effects)
        } else if message_type == ProviderOutcome::full_name() {
            outcome::apply(state, message.decode()?, effects)
        } else if message_type == RefundPayment::full_name() {
            refund::apply(state, message.decode()?, effects)
        } else {
            Err(HandlerError::Malformed(format!(
                "payments does not handle {message_type}"
            )))
        }
    }
}
