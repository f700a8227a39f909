//! The payments HTTP provider against the fake provider: authorize, capture,
//! void, partial refunds, declines, faults that must be retried (5xx, a
//! stalled request), and idempotency. No broker needed.

use d2c_integration::fake_provider::FakeProvider;
use d2c_payments::{
    CaptureRequest, ChargeRequest, HttpProvider, PaymentProvider, ProviderError, RefundRequest,
    VoidRequest,
};
use std::time::Duration;

fn charge(order_id: &str, payment_method: &str) -> ChargeRequest {
    ChargeRequest {
        order_id: order_id.into(),
        customer_id: "cust-1".into(),
        amount_minor: 2_500,
        currency: "EUR".into(),
        payment_method: payment_method.into(),
        idempotency_key: format!("d2c-charge-{order_id}"),
    }
}

fn provider(fake: &FakeProvider, timeout: Duration) -> HttpProvider {
    HttpProvider::new(fake.url(), fake.secret_key(), timeout).expect("HTTP client")
}

fn refund(order_id: &str, provider_ref: &str, refund_id: &str, amount_minor: i64) -> RefundRequest {
    RefundRequest {
        order_id: order_id.into(),
        refund_id: refund_id.into(),
        provider_ref: provider_ref.into(),
        amount_minor,
        currency: "EUR".into(),
        idempotency_key: format!("d2c-refund-{order_id}-{refund_id}"),
    }
}

#[tokio::test]
async fn payments_http_provider_authorizes_captures_and_refunds_in_parts() {
    let fake = FakeProvider::start().await.expect("fake provider");
    let provider = provider(&fake, Duration::from_secs(5));
    let decision = provider
        .charge(charge("o-1", "pm_card_visa"))
        .await
        .expect("a decision");
    assert!(decision.approved, "{decision:?}");
    assert!(decision.provider_ref.starts_with("pi_"), "{decision:?}");
    assert_eq!((fake.charges(), fake.captures()), (1, 0), "authorized only");
    let intent = decision.provider_ref.clone();

    // A refund before the capture is refused: nothing was taken yet.
    let early = provider.refund(refund("o-1", &intent, "r-0", 100)).await;
    assert!(
        matches!(early, Err(ProviderError::Permanent(_))),
        "{early:?}"
    );

    let capture = CaptureRequest {
        order_id: "o-1".into(),
        provider_ref: intent.clone(),
        amount_minor: 2_500,
        currency: "EUR".into(),
        idempotency_key: "d2c-capture-o-1".into(),
    };
    let captured = provider.capture(capture.clone()).await.expect("a decision");
    assert!(captured.approved, "{captured:?}");
    let again = provider.capture(capture).await.expect("a decision");
    assert_eq!(again, captured, "same key, same capture");
    assert_eq!(fake.captures(), 1);

    let first = refund("o-1", &intent, "r-1", 1_000);
    let refunded = provider.refund(first.clone()).await.expect("a decision");
    assert!(refunded.approved, "{refunded:?}");
    assert!(refunded.provider_ref.starts_with("re_"), "{refunded:?}");
    assert_eq!(
        provider.refund(first).await.expect("a decision"),
        refunded,
        "same key, same refund"
    );
    let rest = provider
        .refund(refund("o-1", &intent, "r-2", 1_500))
        .await
        .expect("a decision");
    assert!(rest.approved);
    let beyond = provider.refund(refund("o-1", &intent, "r-3", 1)).await;
    assert!(
        matches!(beyond, Err(ProviderError::Permanent(_))),
        "{beyond:?}"
    );
    assert_eq!(fake.refunds(), 2);
    assert_eq!(fake.refunded_by_order().get("o-1"), Some(&2_500));
}

#[tokio::test]
async fn payments_http_provider_voids_an_uncaptured_authorization() {
    let fake = FakeProvider::start().await.expect("fake provider");
    let provider = provider(&fake, Duration::from_secs(5));
    let decision = provider
        .charge(charge("o-7", "pm_card_visa"))
        .await
        .expect("a decision");
    let void = VoidRequest {
        order_id: "o-7".into(),
        provider_ref: decision.provider_ref.clone(),
        idempotency_key: "d2c-void-o-7".into(),
    };
    let voided = provider.void(void.clone()).await.expect("a decision");
    assert!(voided.approved, "{voided:?}");
    assert_eq!(provider.void(void).await.expect("a decision"), voided);
    let capture = CaptureRequest {
        order_id: "o-7".into(),
        provider_ref: decision.provider_ref,
        amount_minor: 2_500,
        currency: "EUR".into(),
        idempotency_key: "d2c-capture-o-7".into(),
    };
    assert!(
        provider.capture(capture).await.is_err(),
        "a voided authorization cannot be captured"
    );
    assert_eq!(fake.captures(), 0);
}

#[tokio::test]
async fn payments_http_provider_reports_declines() {
    let fake = FakeProvider::start().await.expect("fake provider");
    let provider = provider(&fake, Duration::from_secs(5));
    let declined = provider
        .charge(charge("o-2", "pm_card_chargeDeclined"))
        .await
        .expect("a decline is a decision");
    assert!(!declined.approved);
    assert_eq!(declined.decline_code, "generic_decline");
    assert!(!declined.message.is_empty());
    assert!(declined.provider_ref.starts_with("pi_"));
    let poor = provider
        .charge(charge("o-3", "pm_card_chargeDeclinedInsufficientFunds"))
        .await
        .expect("a decision");
    assert_eq!(poor.decline_code, "insufficient_funds");
    assert_eq!(fake.charges(), 0);
}

#[tokio::test]
async fn payments_http_provider_server_errors_are_transient() {
    let fake = FakeProvider::start().await.expect("fake provider");
    let provider = provider(&fake, Duration::from_secs(5));
    fake.fail_next(1);
    let error = provider
        .charge(charge("o-4", "pm_card_visa"))
        .await
        .expect_err("a 500 is no decision");
    assert!(matches!(error, ProviderError::Transient(_)), "{error:?}");
    assert_eq!(fake.charges(), 0);
    let retried = provider
        .charge(charge("o-4", "pm_card_visa"))
        .await
        .expect("the retry decides");
    assert!(retried.approved);
    assert_eq!(fake.charges(), 1);
}

#[tokio::test]
async fn payments_http_provider_stalled_request_times_out_as_transient() {
    let fake = FakeProvider::start().await.expect("fake provider");
    let provider = provider(&fake, Duration::from_millis(300));
    fake.stall_next(1, Duration::from_secs(2));
    let started = std::time::Instant::now();
    let error = provider
        .charge(charge("o-5", "pm_card_visa"))
        .await
        .expect_err("a stalled request times out");
    assert!(matches!(error, ProviderError::Transient(_)), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the client gave up first"
    );
    assert_eq!(fake.charges(), 0);
    let retried = provider
        .charge(charge("o-5", "pm_card_visa"))
        .await
        .expect("the retry decides");
    assert!(retried.approved);
    assert_eq!(fake.charges(), 1);
}

#[tokio::test]
async fn payments_http_provider_same_key_charges_once() {
    let fake = FakeProvider::start().await.expect("fake provider");
    let provider = provider(&fake, Duration::from_secs(5));
    let first = provider
        .charge(charge("o-6", "pm_card_visa"))
        .await
        .expect("a decision");
    let second = provider
        .charge(charge("o-6", "pm_card_visa"))
        .await
        .expect("a decision");
    assert_eq!(first, second);
    assert_eq!(fake.charges(), 1);
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn payments_http_provider_wrong_key_is_permanent() {
    let fake = FakeProvider::start_with_key("sk_test_expected")
        .await
        .expect("fake provider");
    let provider =
        HttpProvider::new(fake.url(), "sk_test_wrong", Duration::from_secs(5)).expect("client");
    let error = provider
        .charge(charge("o-7", "pm_card_visa"))
        .await
        .expect_err("refused");
    assert!(matches!(error, ProviderError::Permanent(_)), "{error:?}");
}

#[tokio::test]
async fn payments_http_provider_unreachable_is_transient() {
    // A port nothing listens on: bind, note the port, close.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let provider = HttpProvider::new(
        format!("http://127.0.0.1:{port}"),
        "sk_test_local",
        Duration::from_secs(2),
    )
    .expect("client");
    let error = provider
        .charge(charge("o-8", "pm_card_visa"))
        .await
        .expect_err("nobody there");
    assert!(matches!(error, ProviderError::Transient(_)), "{error:?}");
}
