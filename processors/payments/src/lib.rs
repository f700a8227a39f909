//! The payments processor: owns each order's payment (keyed by order id) and
//! answers the orders saga with a `PaymentResult` on `orders.messages`.
//!
//! Two parts, one process:
//!
//! * [`handler`], a pure handler run by the shared runtime on
//!   `payments.messages`. It never calls the provider: it records what is
//!   wanted (`PaymentRequested`, `CaptureRequested`, `VoidRequested`,
//!   `RefundRequested` on its internal `payments.provider-requests`; its
//!   facts go to `payments.events`) and
//!   applies what the provider said (`ProviderOutcome`).
//! * The provider worker ([`worker`]), the only place with I/O: its own
//!   consumer group on `payments.provider-requests` calls the [`PaymentProvider`] for each
//!   request and reports the answer as a `ProviderOutcome` on
//!   `payments.messages`. Its offset is stored only after the outcome is
//!   acknowledged, so a crash repeats a provider call, never loses one; the
//!   provider idempotency key is fixed per step (see below), so a repeated
//!   call moves money once.
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
//! Checkout only authorizes: the provider holds the money. Fulfilment
//! captures it; a cancel before that voids the hold; captured money is
//! refunded in parts, each refund by its own id.
//!
//! ```text
//!          AuthorizePayment            outcome(charge, approved)           CapturePayment
//!   (none) ─────────────────▶ REQUESTED ─────────────────────▶ AUTHORIZED ─────────────▶ CAPTURE_REQUESTED
//!     │ invalid                  │ outcome(charge, declined)     │ VoidPayment               │ outcome(capture)
//!     ▼                          ▼                               ▼                           ▼
//!   DECLINED ◀──────────────────┘                         VOID_REQUESTED ──▶ VOIDED   CAPTURED / CAPTURE_FAILED
//!                                                                                       │ RefundPayment(id, amount)
//!                                                                                       ▼
//!                                                      refunds[id]: REFUND_REQUESTED ──▶ REFUNDED / REFUND_FAILED
//! ```
//!
//! * Every command in a state where its step is in flight does nothing (the
//!   outcome answers); in a state where it is done it answers again with the
//!   result; orders ignores a result it already has.
//! * A refund never exceeds what was captured minus every refund not
//!   refused; a refund id seen before is a repeat, whatever its amount.
//! * A capture or refund the provider refuses for good (a 402 or a request
//!   it rejects) is recorded as CAPTURE_FAILED / REFUND_FAILED, announced as
//!   `PaymentStepFailed` and logged as an error: retrying with the same
//!   idempotency key could only return the same stored refusal. A refused
//!   void still ends as VOIDED: nothing was taken and an uncaptured hold
//!   lapses. Transient errors are retried until the provider answers; the
//!   orders saga's deadlines bound how long an order waits for that.
//! * An invalid `AuthorizePayment` (empty payment method, negative amount, a
//!   currency that is not three upper-case letters) is DECLINED with
//!   `decline_code = "invalid_request"` and recorded, so a repeat gets the same
//!   answer and a provider is never called for it.
//! * Provider idempotency keys are fixed per step: `d2c-charge-{order}`,
//!   `d2c-capture-{order}`, `d2c-void-{order}`, `d2c-refund-{order}-{refund}`.
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
//! reference. Captures, voids and refunds are always approved.

pub mod authorize;
pub mod capture;
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

pub use config::{PaymentsConfig, ProviderKind, RetryPolicy};
pub use http_provider::HttpProvider;
pub use provider::{
    CaptureRequest, ChargeRequest, PaymentProvider, ProviderDecision, ProviderError, RefundRequest,
    VoidRequest,
};
pub use sandbox::SandboxProvider;
pub use table::{
    capture_idempotency_key, charge_idempotency_key, refund_idempotency_key, void_idempotency_key,
    PaymentRead,
};
pub use worker::{run_worker, WorkerSettings};

use d2c_proto::payments::v1::{
    AuthorizePayment, CapturePayment, ProviderOutcome, RefundPayment, VoidPayment,
};
use d2c_runtime::router::Router;

pub const SERVICE: &str = "payments";
/// Admin port (/health, /ready, /metrics) when D2C_ADMIN_ADDR is not set.
pub const DEFAULT_ADMIN_PORT: u16 = 9103;

/// Every command payments handles, by type.
pub fn handler() -> Router {
    Router::new(SERVICE)
        .on::<AuthorizePayment, _>(authorize::apply)
        .on::<ProviderOutcome, _>(outcome::apply)
        .on::<RefundPayment, _>(refund::apply)
        .on::<CapturePayment, _>(capture::apply_capture)
        .on::<VoidPayment, _>(capture::apply_void)
}
