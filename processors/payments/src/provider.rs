//! The payment provider seen from the worker: authorize (a hold, captured
//! later), capture, void and refund, each carrying an idempotency key, each
//! answering a decision or an error that says whether trying again can help.

use futures::future::BoxFuture;

/// Authorize `amount_minor` of `currency` on `payment_method` (a token, never
/// a card number), once per `idempotency_key`: the money is held, and taken
/// only by a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    pub order_id: String,
    pub customer_id: String,
    pub amount_minor: i64,
    /// ISO 4217, upper case (providers that want lower case convert).
    pub currency: String,
    pub payment_method: String,
    pub idempotency_key: String,
}

/// Refund `amount_minor` of the captured payment `provider_ref`, once per
/// `idempotency_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub order_id: String,
    /// Ours, passed to the provider as metadata so its webhooks name it.
    pub refund_id: String,
    pub provider_ref: String,
    pub amount_minor: i64,
    pub currency: String,
    pub idempotency_key: String,
}

/// Capture the authorized payment `provider_ref`, once per `idempotency_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRequest {
    pub order_id: String,
    pub provider_ref: String,
    pub amount_minor: i64,
    pub currency: String,
    pub idempotency_key: String,
}

/// Release the authorization `provider_ref` (nothing is taken), once per
/// `idempotency_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoidRequest {
    pub order_id: String,
    pub provider_ref: String,
    pub idempotency_key: String,
}

/// What the provider decided. A decline is a decision, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProviderDecision {
    pub approved: bool,
    /// The provider's payment (or refund) id; may be set on a decline too.
    pub provider_ref: String,
    /// Why it was declined, e.g. `card_declined`, `insufficient_funds`.
    pub decline_code: String,
    pub message: String,
}

impl ProviderDecision {
    pub fn approved(provider_ref: impl Into<String>) -> Self {
        Self {
            approved: true,
            provider_ref: provider_ref.into(),
            ..Self::default()
        }
    }

    pub fn declined(
        provider_ref: impl Into<String>,
        decline_code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            approved: false,
            provider_ref: provider_ref.into(),
            decline_code: decline_code.into(),
            message: message.into(),
        }
    }
}

/// The provider gave no decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying with the same idempotency key: 5xx, 429, 409 (a
    /// concurrent request with the same key), timeout, connection failure, an
    /// unreadable answer. The call may or may not have taken effect.
    #[error("provider unavailable: {0}")]
    Transient(String),
    /// The provider refused the request itself (a 4xx that is not a decline:
    /// bad key, bad parameters). Retrying cannot help; the worker reports a
    /// charge refused this way as declined with `provider_rejected`.
    #[error("provider rejected the request: {0}")]
    Permanent(String),
}

impl ProviderError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ProviderError::Transient(_))
    }
}

/// A payment provider. Used as `Arc<dyn PaymentProvider>`; every call must be
/// safe to repeat with the same idempotency key.
pub trait PaymentProvider: Send + Sync {
    /// Authorize (hold) the amount; see [`ChargeRequest`].
    fn charge(
        &self,
        request: ChargeRequest,
    ) -> BoxFuture<'_, Result<ProviderDecision, ProviderError>>;

    fn capture(
        &self,
        request: CaptureRequest,
    ) -> BoxFuture<'_, Result<ProviderDecision, ProviderError>>;

    fn void(&self, request: VoidRequest) -> BoxFuture<'_, Result<ProviderDecision, ProviderError>>;

    fn refund(
        &self,
        request: RefundRequest,
    ) -> BoxFuture<'_, Result<ProviderDecision, ProviderError>>;

    /// A short name for logs.
    fn name(&self) -> &'static str {
        "provider"
    }
}
