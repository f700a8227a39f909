//! A Stripe-style HTTP provider (PaymentIntents and Refunds, form-encoded,
//! `Authorization: Bearer <secret key>`, `Idempotency-Key` on every call).
//! Checkout authorizes only (`capture_method=manual`); fulfilment captures
//! (`POST /v1/payment_intents/{id}/capture`), a cancel before that releases
//! the hold (`/cancel`), and refunds name an amount (`POST /v1/refunds`).
//!
//! | answer                                   | result                                   |
//! |------------------------------------------|------------------------------------------|
//! | 200 with the expected status: `requires_capture` (authorize), `succeeded` (capture, refund; `pending` too), `canceled` (void) | approved, `provider_ref = id` |
//! | 200 with another status                  | declined, `decline_code = "payment_<status>"` |
//! | 402 `{"error":{"type":"card_error",…}}`  | declined (`decline_code`, else `code`)   |
//! | 409, 429, 5xx, timeout, connect error, unreadable 200 | `ProviderError::Transient`  |
//! | other 4xx                                | `ProviderError::Permanent`               |
//!
//! An unreadable 200 is transient, not a decline: the charge may have gone
//! through, and a retry with the same key gets the provider's stored answer.

use crate::provider::{
    CaptureRequest, ChargeRequest, PaymentProvider, ProviderDecision, ProviderError, RefundRequest,
    VoidRequest,
};
use futures::future::BoxFuture;
use reqwest::StatusCode;
use serde::Deserialize;
use std::time::Duration;

pub struct HttpProvider {
    client: reqwest::Client,
    base_url: String,
    secret_key: String,
}

impl std::fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProvider")
            .field("base_url", &self.base_url)
            .field("secret_key", &d2c_platform::config::mask(&self.secret_key))
            .finish()
    }
}

#[derive(Debug, Deserialize)]
struct Object {
    id: String,
    #[serde(default)]
    status: String,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: ApiError,
}

#[derive(Debug, Default, Deserialize)]
struct ApiError {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    payment_intent: Option<Object>,
}

impl HttpProvider {
    /// `base_url` without a trailing `/v1`, e.g. `https://api.stripe.com`.
    /// `timeout` bounds each request (connect to last byte).
    pub fn new(
        base_url: impl Into<String>,
        secret_key: impl Into<String>,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|error| ProviderError::Permanent(format!("HTTP client: {error}")))?;
        Ok(Self {
            client,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            secret_key: secret_key.into(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    async fn post(
        &self,
        path: &str,
        idempotency_key: &str,
        form: &[(&str, String)],
    ) -> Result<(StatusCode, Body), ProviderError> {
        let response = self
            .client
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(&self.secret_key)
            .header("Idempotency-Key", idempotency_key)
            .form(form)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport_error)?;
        Ok((status, Body(body.to_vec())))
    }

    async fn charge_now(&self, request: ChargeRequest) -> Result<ProviderDecision, ProviderError> {
        let form = [
            ("amount", request.amount_minor.to_string()),
            ("currency", request.currency.to_ascii_lowercase()),
            ("payment_method", request.payment_method.clone()),
            ("confirm", "true".to_owned()),
            ("capture_method", "manual".to_owned()),
            ("metadata[order_id]", request.order_id.clone()),
        ];
        let (status, body) = self
            .post("/v1/payment_intents", &request.idempotency_key, &form)
            .await?;
        if status.is_success() {
            // `succeeded` too: a provider that captured at once still holds
            // the money for us.
            return intent_decision(&body, &["requires_capture", "succeeded"]);
        }
        if status == StatusCode::PAYMENT_REQUIRED {
            let error = body.error();
            let code = error
                .decline_code
                .or(error.code)
                .unwrap_or_else(|| "card_declined".to_owned());
            return Ok(ProviderDecision::declined(
                error
                    .payment_intent
                    .map(|intent| intent.id)
                    .unwrap_or_default(),
                code,
                error.message.unwrap_or_default(),
            ));
        }
        Err(status_error(status, &body))
    }

    async fn capture_now(
        &self,
        request: CaptureRequest,
    ) -> Result<ProviderDecision, ProviderError> {
        let form = [("amount_to_capture", request.amount_minor.to_string())];
        let path = format!("/v1/payment_intents/{}/capture", request.provider_ref);
        let (status, body) = self.post(&path, &request.idempotency_key, &form).await?;
        if status.is_success() {
            return intent_decision(&body, &["succeeded"]);
        }
        step_refused(status, &body, "capture_declined")
    }

    async fn void_now(&self, request: VoidRequest) -> Result<ProviderDecision, ProviderError> {
        let form = [("cancellation_reason", "requested_by_customer".to_owned())];
        let path = format!("/v1/payment_intents/{}/cancel", request.provider_ref);
        let (status, body) = self.post(&path, &request.idempotency_key, &form).await?;
        if status.is_success() {
            return intent_decision(&body, &["canceled"]);
        }
        step_refused(status, &body, "void_declined")
    }

    async fn refund_now(&self, request: RefundRequest) -> Result<ProviderDecision, ProviderError> {
        let form = [
            ("payment_intent", request.provider_ref.clone()),
            ("amount", request.amount_minor.to_string()),
            ("metadata[order_id]", request.order_id.clone()),
            ("metadata[refund_id]", request.refund_id.clone()),
        ];
        let (status, body) = self
            .post("/v1/refunds", &request.idempotency_key, &form)
            .await?;
        if status.is_success() {
            let refund: Object = body.json("refund")?;
            return Ok(match refund.status.as_str() {
                "succeeded" | "pending" => ProviderDecision::approved(refund.id),
                other => ProviderDecision::declined(
                    refund.id,
                    format!("refund_{other}"),
                    format!("the refund ended in status {other:?}"),
                ),
            });
        }
        step_refused(status, &body, "refund_declined")
    }
}

/// A 2xx answer about a PaymentIntent: approved if its status is one of
/// `expected`.
fn intent_decision(body: &Body, expected: &[&str]) -> Result<ProviderDecision, ProviderError> {
    let intent: Object = body.json("payment intent")?;
    Ok(if expected.contains(&intent.status.as_str()) {
        ProviderDecision::approved(intent.id)
    } else {
        ProviderDecision::declined(
            intent.id,
            format!("payment_{}", intent.status),
            format!("the payment ended in status {:?}", intent.status),
        )
    })
}

/// A non-2xx answer to a capture, void or refund: 402 is the provider's
/// refusal (a decision), the rest as [`status_error`] says.
fn step_refused(
    status: StatusCode,
    body: &Body,
    default_code: &str,
) -> Result<ProviderDecision, ProviderError> {
    if status == StatusCode::PAYMENT_REQUIRED {
        let error = body.error();
        return Ok(ProviderDecision::declined(
            String::new(),
            error.code.unwrap_or_else(|| default_code.to_owned()),
            error.message.unwrap_or_default(),
        ));
    }
    Err(status_error(status, body))
}

impl PaymentProvider for HttpProvider {
    fn charge(
        &self,
        request: ChargeRequest,
    ) -> BoxFuture<'_, Result<ProviderDecision, ProviderError>> {
        Box::pin(self.charge_now(request))
    }

    fn capture(
        &self,
        request: CaptureRequest,
    ) -> BoxFuture<'_, Result<ProviderDecision, ProviderError>> {
        Box::pin(self.capture_now(request))
    }

    fn void(&self, request: VoidRequest) -> BoxFuture<'_, Result<ProviderDecision, ProviderError>> {
        Box::pin(self.void_now(request))
    }

    fn refund(
        &self,
        request: RefundRequest,
    ) -> BoxFuture<'_, Result<ProviderDecision, ProviderError>> {
        Box::pin(self.refund_now(request))
    }

    fn name(&self) -> &'static str {
        "http"
    }
}

/// A failure before a complete answer arrived: the request may or may not
/// have reached the provider, so it is always worth retrying with the key.
fn transport_error(error: reqwest::Error) -> ProviderError {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    ProviderError::Transient(format!("{what}: {error}"))
}

fn status_error(status: StatusCode, body: &Body) -> ProviderError {
    let error = body.error();
    let detail = format!(
        "HTTP {status}{}{}",
        if error.kind.is_empty() {
            String::new()
        } else {
            format!(" {}", error.kind)
        },
        error
            .message
            .map(|message| format!(": {message}"))
            .unwrap_or_default()
    );
    // 409: Stripe's answer while a request with the same key is in progress.
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::CONFLICT
        || status == StatusCode::REQUEST_TIMEOUT
    {
        ProviderError::Transient(detail)
    } else {
        ProviderError::Permanent(detail)
    }
}

/// A response body, read in full.
struct Body(Vec<u8>);

impl Body {
    fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.0).map_err(|error| {
            ProviderError::Transient(format!("unreadable {what} from the provider: {error}"))
        })
    }

    fn error(&self) -> ApiError {
        serde_json::from_slice::<ErrorBody>(&self.0)
            .map(|body| body.error)
            .unwrap_or_default()
    }
}
