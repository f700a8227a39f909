//! The sandbox provider: in-process and deterministic, decided by payment
//! method token (the table is in the crate docs). For development, tests and
//! demos; it never moves money.

use crate::provider::{
    CaptureRequest, ChargeRequest, PaymentProvider, ProviderDecision, ProviderError, RefundRequest,
    VoidRequest,
};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

pub const TOKEN_VISA: &str = "pm_card_visa";
pub const TOKEN_MASTERCARD: &str = "pm_card_mastercard";
pub const TOKEN_DECLINED: &str = "pm_card_chargeDeclined";
pub const TOKEN_INSUFFICIENT_FUNDS: &str = "pm_card_chargeDeclinedInsufficientFunds";
pub const TOKEN_TRANSIENT_ERROR: &str = "pm_card_transientError";

#[derive(Debug, Default)]
pub struct SandboxProvider {
    /// Charge attempts per idempotency key (for `pm_card_transientError`).
    attempts: Mutex<HashMap<String, u32>>,
}

impl SandboxProvider {
    pub fn new() -> Self {
        Self::default()
    }

    /// The decision for a charge; `Err` only for the transient-error token's
    /// first attempt.
    pub fn decide_charge(
        &self,
        request: &ChargeRequest,
    ) -> Result<ProviderDecision, ProviderError> {
        let provider_ref = reference("sb_pi_", &request.idempotency_key);
        match request.payment_method.as_str() {
            TOKEN_VISA | TOKEN_MASTERCARD => Ok(ProviderDecision::approved(provider_ref)),
            TOKEN_DECLINED => Ok(ProviderDecision::declined(
                provider_ref,
                "card_declined",
                "Your card was declined.",
            )),
            TOKEN_INSUFFICIENT_FUNDS => Ok(ProviderDecision::declined(
                provider_ref,
                "insufficient_funds",
                "Your card has insufficient funds.",
            )),
            TOKEN_TRANSIENT_ERROR => {
                let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
                let attempt = attempts.entry(request.idempotency_key.clone()).or_insert(0);
                *attempt += 1;
                if *attempt == 1 {
                    Err(ProviderError::Transient(
                        "sandbox: simulated outage on the first attempt".into(),
                    ))
                } else {
                    Ok(ProviderDecision::approved(provider_ref))
                }
            }
            other => Ok(ProviderDecision::declined(
                provider_ref,
                "invalid_payment_method",
                format!("Unknown sandbox payment method {other:?}."),
            )),
        }
    }
}

impl PaymentProvider for SandboxProvider {
    fn charge(
        &self,
        request: ChargeRequest,
    ) -> BoxFuture<'_, Result<ProviderDecision, ProviderError>> {
        let decision = self.decide_charge(&request);
        Box::pin(async move { decision })
    }

    /// Captures, voids and refunds are always approved; the provider
    /// reference of a capture or void is the authorization's.
    fn capture(
        &self,
        request: CaptureRequest,
    ) -> BoxFuture<'_, Result<ProviderDecision, ProviderError>> {
        Box::pin(async move { Ok(ProviderDecision::approved(request.provider_ref)) })
    }

    fn void(&self, request: VoidRequest) -> BoxFuture<'_, Result<ProviderDecision, ProviderError>> {
        Box::pin(async move { Ok(ProviderDecision::approved(request.provider_ref)) })
    }

    fn refund(
        &self,
        request: RefundRequest,
    ) -> BoxFuture<'_, Result<ProviderDecision, ProviderError>> {
        let decision = ProviderDecision::approved(reference("sb_re_", &request.idempotency_key));
        Box::pin(async move { Ok(decision) })
    }

    fn name(&self) -> &'static str {
        "sandbox"
    }
}

/// `prefix` + the first 16 hex digits of SHA-256(idempotency key).
pub fn reference(prefix: &str, idempotency_key: &str) -> String {
    let digest = hex::encode(Sha256::digest(idempotency_key.as_bytes()));
    format!("{prefix}{}", &digest[..16])
}

#[cfg(test)]
mod payments_sandbox_tests {
    use super::*;

    fn charge(token: &str, key: &str) -> ChargeRequest {
        ChargeRequest {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            amount_minor: 1_000,
            currency: "EUR".into(),
            payment_method: token.into(),
            idempotency_key: key.into(),
        }
    }

    #[tokio::test]
    async fn tokens_decide_as_documented() {
        let sandbox = SandboxProvider::new();
        let visa = sandbox
            .charge(charge(TOKEN_VISA, "k1"))
            .await
            .expect("decision");
        assert!(visa.approved);
        assert!(visa.provider_ref.starts_with("sb_pi_"));
        assert_eq!(visa.provider_ref.len(), "sb_pi_".len() + 16);
        let again = sandbox
            .charge(charge(TOKEN_VISA, "k1"))
            .await
            .expect("decision");
        assert_eq!(again.provider_ref, visa.provider_ref, "same key, same ref");
        assert!(
            sandbox
                .charge(charge(TOKEN_MASTERCARD, "k2"))
                .await
                .expect("ok")
                .approved
        );
        for (token, code) in [
            (TOKEN_DECLINED, "card_declined"),
            (TOKEN_INSUFFICIENT_FUNDS, "insufficient_funds"),
            ("pm_card_unknown", "invalid_payment_method"),
        ] {
            let decision = sandbox.charge(charge(token, "k3")).await.expect("decision");
            assert!(!decision.approved, "{token}");
            assert_eq!(decision.decline_code, code);
        }
    }

    #[tokio::test]
    async fn transient_token_fails_once_per_key() {
        let sandbox = SandboxProvider::new();
        let first = sandbox.charge(charge(TOKEN_TRANSIENT_ERROR, "k1")).await;
        assert!(matches!(first, Err(ProviderError::Transient(_))));
        let retry = sandbox.charge(charge(TOKEN_TRANSIENT_ERROR, "k1")).await;
        assert!(retry.expect("approved on retry").approved);
        let other_key = sandbox.charge(charge(TOKEN_TRANSIENT_ERROR, "k2")).await;
        assert!(other_key.is_err(), "a new key fails first again");
    }

    #[tokio::test]
    async fn refunds_are_approved() {
        let decision = SandboxProvider::new()
            .refund(RefundRequest {
                refund_id: "r-1".into(),
                order_id: "o-1".into(),
                provider_ref: "sb_pi_x".into(),
                amount_minor: 1_000,
                currency: "EUR".into(),
                idempotency_key: "d2c-refund-o-1".into(),
            })
            .await
            .expect("decision");
        assert!(decision.approved);
        assert_eq!(decision.provider_ref, reference("sb_re_", "d2c-refund-o-1"));
    }
}
