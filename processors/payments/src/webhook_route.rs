//! `POST /webhooks/provider` on the payments admin endpoint: the provider's
//! webhooks (see [`crate::webhook`]) turned into `ProviderOutcome`s on
//! `payments.messages`, keyed by order id like the worker's.
//!
//! | request                                   | answer                                      |
//! |-------------------------------------------|---------------------------------------------|
//! | missing, malformed, stale or wrong `Stripe-Signature` | `400` `invalid_signature`       |
//! | signed, but not an event (or no event id)  | `400` `malformed_event`                    |
//! | body over 64 KiB                           | `413` `payload_too_large`                  |
//! | an event we do not act on                  | `200` `{"received":true,"ignored":true}`   |
//! | an outcome, acknowledged by the broker     | `200` `{"received":true}`                  |
//! | an outcome not acknowledged within 5 s     | `503` `unavailable` (the provider redelivers) |
//!
//! The outcome's message id is derived from the event's id
//! ([`d2c_proto::ids::webhook_message_id`]), so a redelivered webhook repeats
//! it and the copy is dropped; the handler also ignores any outcome after the
//! first, so a webhook racing the worker's own outcome is harmless. Counted in
//! `d2c_payment_webhooks_total{result}` (`accepted`, `ignored`,
//! `invalid_signature`, `malformed`, `unavailable`).

use crate::webhook::{parse_event, verify_signature, DEFAULT_TOLERANCE_SECS};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use d2c_platform::kafka::envelope_headers;
use d2c_platform::metrics::METRICS;
use d2c_platform::producer::KafkaProducer;
use d2c_proto::payments::v1::ProviderOutcome;
use d2c_proto::Envelope;
use prometheus::IntCounterVec;
use prost::{Message as _, Name};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use serde::Deserialize;
use serde_json::json;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Where the provider posts its webhooks.
pub const PATH: &str = "/webhooks/provider";
/// The signature header (matched case-insensitively).
pub const SIGNATURE_HEADER: &str = "stripe-signature";
/// Largest webhook body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long to wait for the broker's acknowledgement before answering 503.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

static WEBHOOKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let name = "d2c_payment_webhooks_total";
    let counter = IntCounterVec::new(
        prometheus::Opts::new(
            name,
            "Provider webhooks received, by result (accepted, ignored, invalid_signature, malformed, unavailable).",
        ),
        &["result"],
    )
    .unwrap_or_else(|error| panic!("metric {name} is malformed: {error}"));
    METRICS
        .registry
        .register(Box::new(counter.clone()))
        .unwrap_or_else(|error| panic!("metric {name} registered twice: {error}"));
    counter
});

struct WebhookState {
    secret: String,
    producer: KafkaProducer,
    topic: String,
}

/// The webhook route, to merge into the admin endpoint
/// (`d2c_runtime::Processor::http`). `secret` is the signing secret
/// (`whsec_…`); `topic` the physical name of `payments.messages`.
pub fn routes(secret: String, producer: KafkaProducer, topic: String) -> Router {
    LazyLock::force(&WEBHOOKS);
    if secret.is_empty() {
        tracing::warn!("No webhook secret configured: every provider webhook will be refused");
    }
    Router::new()
        .route(
            PATH,
            post(receive).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .with_state(Arc::new(WebhookState {
            secret,
            producer,
            topic,
        }))
}

async fn receive(
    State(state): State<Arc<WebhookState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return refuse(Refusal::malformed(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("webhook bodies are limited to {MAX_BODY_BYTES} bytes"),
            ));
        }
        Err(rejection) => {
            return refuse(Refusal::malformed(
                StatusCode::BAD_REQUEST,
                "malformed_event",
                format!("body could not be read: {rejection}"),
            ));
        }
    };
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok());
    match decide(
        state.secret.as_bytes(),
        signature,
        &body,
        d2c_platform::now_ms(),
    ) {
        Err(refusal) => refuse(refusal),
        Ok(None) => {
            WEBHOOKS.with_label_values(&["ignored"]).inc();
            (
                StatusCode::OK,
                Json(json!({"received": true, "ignored": true})),
            )
                .into_response()
        }
        Ok(Some(Accepted { envelope, outcome })) => produce(&state, &envelope, &outcome).await,
    }
}

/// Sends the outcome and waits for the acknowledgement: only then may the
/// provider stop redelivering.
async fn produce(state: &WebhookState, envelope: &Envelope, outcome: &ProviderOutcome) -> Response {
    let payload = outcome.encode_to_vec();
    let record = FutureRecord::to(&state.topic)
        .key(outcome.order_id.as_bytes())
        .payload(payload.as_slice())
        .headers(envelope_headers(envelope));
    let sent = tokio::time::timeout(
        ACK_TIMEOUT,
        state.producer.send(record, Timeout::After(ACK_TIMEOUT)),
    )
    .await;
    let failure = match sent {
        Ok(Ok(_)) => {
            METRICS
                .messages_produced
                .with_label_values(&[&state.topic])
                .inc();
            WEBHOOKS.with_label_values(&["accepted"]).inc();
            tracing::info!(
                order_id = %outcome.order_id,
                message_id = %envelope.message_id,
                approved = outcome.approved,
                "Provider webhook accepted"
            );
            return (StatusCode::OK, Json(json!({"received": true}))).into_response();
        }
        Ok(Err((error, _))) => error.to_string(),
        Err(_) => format!("no acknowledgement within {ACK_TIMEOUT:?}"),
    };
    tracing::warn!(
        order_id = %outcome.order_id,
        error = %failure,
        "Provider webhook not acknowledged; the provider will redeliver"
    );
    refuse(Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "unavailable",
        message: format!("the outcome could not be recorded: {failure}"),
        result: "unavailable",
    })
}

/// A signed, readable webhook reporting an outcome: send it to
/// `payments.messages`.
#[derive(Debug, PartialEq)]
struct Accepted {
    envelope: Envelope,
    outcome: ProviderOutcome,
}

/// A webhook refused before anything is sent.
#[derive(Debug, PartialEq)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The metric label.
    result: &'static str,
}

impl Refusal {
    fn invalid_signature(message: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_signature",
            message,
            result: "invalid_signature",
        }
    }

    fn malformed(status: StatusCode, code: &'static str, message: String) -> Self {
        Self {
            status,
            code,
            message,
            result: "malformed",
        }
    }
}

fn refuse(refusal: Refusal) -> Response {
    WEBHOOKS.with_label_values(&[refusal.result]).inc();
    if refusal.status.is_client_error() {
        tracing::warn!(code = refusal.code, message = %refusal.message, "Provider webhook refused");
    }
    (
        refusal.status,
        Json(json!({"error": {"code": refusal.code, "message": refusal.message}})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct EventId {
    #[serde(default)]
    id: String,
}

/// Everything about a webhook but the I/O: signature, event, message id.
/// `None` for an event we do not act on. `now_ms` is the time of receipt
/// (the outcome's sent-at).
fn decide(
    secret: &[u8],
    signature: Option<&str>,
    body: &[u8],
    now_ms: i64,
) -> Result<Option<Accepted>, Refusal> {
    if secret.is_empty() {
        return Err(Refusal::invalid_signature(
            "no webhook secret is configured".into(),
        ));
    }
    let signature = signature.ok_or_else(|| {
        Refusal::invalid_signature("the Stripe-Signature header is missing".into())
    })?;
    let now_secs = now_ms.div_euclid(1000);
    verify_signature(secret, signature, body, now_secs, DEFAULT_TOLERANCE_SECS)
        .map_err(|error| Refusal::invalid_signature(error.to_string()))?;
    let malformed =
        |message: String| Refusal::malformed(StatusCode::BAD_REQUEST, "malformed_event", message);
    let Some(outcome) = parse_event(body).map_err(|error| malformed(error.to_string()))? else {
        return Ok(None);
    };
    let event_id = serde_json::from_slice::<EventId>(body)
        .map(|event| event.id)
        .unwrap_or_default();
    if event_id.is_empty() {
        return Err(malformed("the event has no id".into()));
    }
    let envelope = Envelope::new(
        ProviderOutcome::full_name(),
        d2c_proto::ids::webhook_message_id(&event_id),
        now_ms,
    );
    Ok(Some(Accepted { envelope, outcome }))
}

#[cfg(test)]
mod payments_webhook_route_tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    const SECRET: &[u8] = b"whsec_test";
    /// Seconds, as in the signature.
    const NOW: i64 = 1_700_000_000;
    const NOW_MS: i64 = NOW * 1000 + 123;

    fn signed(body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
        mac.update(format!("{NOW}.").as_bytes());
        mac.update(body);
        format!("t={NOW},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn event(id: &str, kind: &str) -> Vec<u8> {
        json!({
            "id": id,
            "type": kind,
            "data": {"object": {"id": "pi_1", "metadata": {"order_id": "o-1"}}}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn an_outcome_gets_a_message_id_from_the_event_id() {
        let body = event("evt_1", "payment_intent.succeeded");
        let Ok(Some(Accepted { envelope, outcome })) =
            decide(SECRET, Some(&signed(&body)), &body, NOW_MS)
        else {
            panic!("an outcome expected")
        };
        assert_eq!(outcome.order_id, "o-1");
        assert!(outcome.approved);
        assert_eq!(envelope.message_type, ProviderOutcome::full_name());
        assert_eq!(
            envelope.message_id,
            d2c_proto::ids::webhook_message_id("evt_1")
        );
        assert_eq!(envelope.sent_at_ms, NOW_MS);
        // A redelivery (signed again, later) is the same message.
        let Ok(Some(Accepted {
            envelope: again, ..
        })) = decide(SECRET, Some(&signed(&body)), &body, NOW_MS + 60_000)
        else {
            panic!("an outcome expected")
        };
        assert_eq!(again.message_id, envelope.message_id);
    }

    #[test]
    fn bad_signatures_are_refused() {
        let body = event("evt_1", "payment_intent.succeeded");
        let header = signed(&body);
        let mut tampered = body.clone();
        tampered[3] ^= 1;
        for (secret, header, body) in [
            (SECRET, None, body.as_slice()),
            (SECRET, Some("t=1"), body.as_slice()),
            (SECRET, Some(header.as_str()), tampered.as_slice()),
            (
                b"whsec_other".as_slice(),
                Some(header.as_str()),
                body.as_slice(),
            ),
            (b"".as_slice(), Some(header.as_str()), body.as_slice()),
        ] {
            let refusal = decide(secret, header, body, NOW_MS).expect_err("refused");
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
            assert_eq!(refusal.code, "invalid_signature", "{refusal:?}");
        }
        let late = NOW_MS + (DEFAULT_TOLERANCE_SECS + 1) * 1000;
        let stale = decide(SECRET, Some(&header), &body, late).expect_err("refused");
        assert_eq!(stale.code, "invalid_signature");
    }

    #[test]
    fn unreadable_events_are_refused_and_others_ignored() {
        let garbage = b"not json".to_vec();
        let refusal =
            decide(SECRET, Some(&signed(&garbage)), &garbage, NOW_MS).expect_err("refused");
        assert_eq!(refusal.code, "malformed_event");
        let no_id = event("", "payment_intent.succeeded");
        let refusal = decide(SECRET, Some(&signed(&no_id)), &no_id, NOW_MS).expect_err("refused");
        assert_eq!(refusal.code, "malformed_event");
        let other = event("evt_2", "customer.created");
        assert_eq!(
            decide(SECRET, Some(&signed(&other)), &other, NOW_MS),
            Ok(None)
        );
    }
}
