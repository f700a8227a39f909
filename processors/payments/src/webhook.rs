//! Provider webhooks (Stripe's format): verify the `Stripe-Signature` header
//! and turn the events we care about into a `ProviderOutcome`, to be sent to
//! `payments.messages` keyed by order id like the worker's outcomes (the
//! handler drops duplicates, so a webhook racing the worker is harmless).
//!
//! The signature header is `t=<unix seconds>,v1=<hex>[,v1=<hex>…]` where each
//! `v1` is HMAC-SHA256(secret, "<t>.<raw body>"); several `v1` entries appear
//! while a secret is being rolled. The secret is the whole `whsec_…` string.

use d2c_proto::payments::v1::{provider_outcome::Kind, ProviderOutcome};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Stripe's default tolerance for the signed timestamp.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("signature header is malformed: {0}")]
    MalformedHeader(String),
    #[error("signature timestamp {timestamp} is outside the tolerance (now {now})")]
    StaleTimestamp { timestamp: i64, now: i64 },
    #[error("no signature matches")]
    BadSignature,
    #[error("event is malformed: {0}")]
    MalformedEvent(String),
}

/// Checks a `Stripe-Signature` header against the raw request body. The
/// comparison is constant-time; a timestamp further than `tolerance_secs`
/// from `now_secs` (either way) is refused even with a valid signature.
pub fn verify_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), WebhookError> {
    let mut timestamp: Option<&str> = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((name, value)) = part.trim().split_once('=') else {
            continue;
        };
        match name {
            "t" => timestamp = Some(value),
            // Not hex: cannot match, but another entry still may.
            "v1" => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let timestamp_text =
        timestamp.ok_or_else(|| WebhookError::MalformedHeader("no timestamp (t=)".into()))?;
    let timestamp: i64 = timestamp_text
        .parse()
        .map_err(|_| WebhookError::MalformedHeader(format!("bad timestamp {timestamp_text:?}")))?;
    if signatures.is_empty() {
        return Err(WebhookError::MalformedHeader("no v1 signature".into()));
    }
    let mut mac = HmacSha256::new_from_slice(secret)
        .map_err(|error| WebhookError::MalformedHeader(format!("secret: {error}")))?;
    mac.update(timestamp_text.as_bytes());
    mac.update(b".");
    mac.update(body);
    let matched = signatures
        .iter()
        .any(|signature| mac.clone().verify_slice(signature).is_ok());
    if !matched {
        return Err(WebhookError::BadSignature);
    }
    if now_secs.abs_diff(timestamp) > tolerance_secs.unsigned_abs() {
        return Err(WebhookError::StaleTimestamp {
            timestamp,
            now: now_secs,
        });
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: EventObject,
}

#[derive(Debug, Default, Deserialize)]
struct EventObject {
    #[serde(default)]
    id: String,
    #[serde(default)]
    metadata: std::collections::HashMap<String, serde_json::Value>,
    #[serde(default)]
    last_payment_error: Option<PaymentError>,
    #[serde(default)]
    refunds: Option<List>,
}

#[derive(Debug, Default, Deserialize)]
struct PaymentError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct List {
    #[serde(default)]
    data: Vec<ListItem>,
}

#[derive(Debug, Default, Deserialize)]
struct ListItem {
    #[serde(default)]
    id: String,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
}

/// The outcome an event reports, for `payment_intent.succeeded`,
/// `payment_intent.payment_failed` and `charge.refunded` events whose object
/// carries `metadata.order_id`. Other events (and objects that are not ours)
/// give `None`. Verify the signature first.
pub fn parse_event(body: &[u8]) -> Result<Option<ProviderOutcome>, WebhookError> {
    let event: Event = serde_json::from_slice(body)
        .map_err(|error| WebhookError::MalformedEvent(error.to_string()))?;
    let object = event.data.object;
    let Some(order_id) = object
        .metadata
        .get("order_id")
        .and_then(serde_json::Value::as_str)
        .filter(|order_id| !order_id.is_empty())
        .map(str::to_owned)
    else {
        return Ok(None);
    };
    let outcome = match event.kind.as_str() {
        // With manual capture the authorization is `amount_capturable_updated`;
        // `succeeded` (captured) implies it too. A capture in flight is
        // settled by the worker's retries, not by a webhook.
        "payment_intent.amount_capturable_updated" | "payment_intent.succeeded" => {
            ProviderOutcome {
                order_id,
                kind: Kind::Charge as i32,
                approved: true,
                provider_ref: object.id,
                ..ProviderOutcome::default()
            }
        }
        "payment_intent.payment_failed" => {
            let error = object.last_payment_error.unwrap_or_default();
            ProviderOutcome {
                order_id,
                kind: Kind::Charge as i32,
                approved: false,
                provider_ref: object.id,
                decline_code: error
                    .decline_code
                    .or(error.code)
                    .unwrap_or_else(|| "card_declined".into()),
                message: error.message.unwrap_or_default(),
                ..ProviderOutcome::default()
            }
        }
        "charge.refunded" => {
            // The latest refund (ours carry `metadata.refund_id`), else the
            // charge's own id; an outcome without a refund id we asked for
            // changes nothing.
            let latest = object
                .refunds
                .and_then(|refunds| refunds.data.into_iter().next());
            let refund_id = latest
                .as_ref()
                .and_then(|refund| refund.metadata.get("refund_id"))
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let provider_ref = latest
                .map(|refund| refund.id)
                .filter(|id| !id.is_empty())
                .unwrap_or(object.id);
            ProviderOutcome {
                order_id,
                kind: Kind::Refund as i32,
                approved: true,
                provider_ref,
                refund_id,
                ..ProviderOutcome::default()
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(outcome))
}

#[cfg(test)]
mod payments_webhook_tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test_secret";
    const NOW: i64 = 1_700_000_000;

    fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret).expect("any key length");
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    fn succeeded_body() -> Vec<u8> {
        serde_json::json!({
            "id": "evt_1",
            "type": "payment_intent.succeeded",
            "data": {"object": {
                "id": "pi_123", "object": "payment_intent", "status": "succeeded",
                "metadata": {"order_id": "o-1"}
            }}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn valid_signature_is_accepted() {
        let body = succeeded_body();
        let header = format!("t={NOW},v1={}", sign(SECRET, NOW, &body));
        assert_eq!(
            verify_signature(SECRET, &header, &body, NOW + 10, 300),
            Ok(())
        );
    }

    #[test]
    fn any_of_several_signatures_may_match() {
        let body = succeeded_body();
        let header = format!(
            "t={NOW},v1={},v0=ignored,v1={}",
            sign(b"whsec_old", NOW, &body),
            sign(SECRET, NOW, &body)
        );
        assert_eq!(verify_signature(SECRET, &header, &body, NOW, 300), Ok(()));
    }

    #[test]
    fn tampered_body_is_refused() {
        let body = succeeded_body();
        let header = format!("t={NOW},v1={}", sign(SECRET, NOW, &body));
        let mut tampered = body.clone();
        let at = tampered.len() - 3;
        tampered[at] ^= 1;
        assert_eq!(
            verify_signature(SECRET, &header, &tampered, NOW, 300),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn wrong_secret_is_refused() {
        let body = succeeded_body();
        let header = format!("t={NOW},v1={}", sign(b"whsec_other", NOW, &body));
        assert_eq!(
            verify_signature(SECRET, &header, &body, NOW, 300),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn stale_timestamp_is_refused() {
        let body = succeeded_body();
        let old = NOW - 301;
        let header = format!("t={old},v1={}", sign(SECRET, old, &body));
        assert!(matches!(
            verify_signature(SECRET, &header, &body, NOW, 300),
            Err(WebhookError::StaleTimestamp { .. })
        ));
        // The timestamp is signed: moving it forward breaks the signature.
        let moved = format!("t={NOW},v1={}", sign(SECRET, old, &body));
        assert_eq!(
            verify_signature(SECRET, &moved, &body, NOW, 300),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let body = succeeded_body();
        for header in ["", "v1=abcd", "t=abc,v1=abcd", &format!("t={NOW}")] {
            assert!(
                matches!(
                    verify_signature(SECRET, header, &body, NOW, 300),
                    Err(WebhookError::MalformedHeader(_))
                ),
                "{header:?}"
            );
        }
    }

    #[test]
    fn events_become_outcomes() {
        let succeeded = parse_event(&succeeded_body())
            .expect("parses")
            .expect("ours");
        assert_eq!(succeeded.order_id, "o-1");
        assert_eq!(succeeded.kind, Kind::Charge as i32);
        assert!(succeeded.approved);
        assert_eq!(succeeded.provider_ref, "pi_123");

        let failed = serde_json::json!({
            "type": "payment_intent.payment_failed",
            "data": {"object": {"id": "pi_9", "metadata": {"order_id": "o-9"},
                "last_payment_error": {"code": "card_declined",
                    "decline_code": "insufficient_funds", "message": "no money"}}}
        });
        let failed = parse_event(failed.to_string().as_bytes())
            .expect("parses")
            .expect("ours");
        assert!(!failed.approved);
        assert_eq!(failed.decline_code, "insufficient_funds");
        assert_eq!(failed.message, "no money");

        let refunded = serde_json::json!({
            "type": "charge.refunded",
            "data": {"object": {"id": "ch_1", "payment_intent": "pi_1",
                "metadata": {"order_id": "o-2"},
                "refunds": {"data": [{"id": "re_1", "metadata": {"refund_id": "r-1"}}]}}}
        });
        let refunded = parse_event(refunded.to_string().as_bytes())
            .expect("parses")
            .expect("ours");
        assert_eq!(refunded.kind, Kind::Refund as i32);
        assert_eq!(refunded.provider_ref, "re_1");
    }

    #[test]
    fn other_events_and_foreign_objects_are_ignored() {
        let other = serde_json::json!({
            "type": "customer.created",
            "data": {"object": {"id": "cus_1", "metadata": {"order_id": "o-1"}}}
        });
        assert_eq!(parse_event(other.to_string().as_bytes()), Ok(None));
        let foreign = serde_json::json!({
            "type": "payment_intent.succeeded",
            "data": {"object": {"id": "pi_1", "metadata": {}}}
        });
        assert_eq!(parse_event(foreign.to_string().as_bytes()), Ok(None));
        assert!(matches!(
            parse_event(b"not json"),
            Err(WebhookError::MalformedEvent(_))
        ));
    }
}
