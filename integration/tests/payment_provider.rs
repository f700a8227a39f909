//! The payments HTTP provider against the fake provider: approve, decline,
//! faults that must be retried (5xx, a stalled request), and idempotency.
//! No broker needed.

use d2c_integration::fake_provider::FakeProvider;
use d2c_payments::{ChargeRequest, HttpProvider, PaymentProvider, ProviderError, RefundRequest};
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

#[tokio::test]
async fn payments_http_provider_approves_and_refunds() {
    let fake = FakeProvider::start().await.expect("fake provider");
    let provider = provider(&fake, Duration::from_secs(5));
    let decision = provider
        .charge(charge("o-1", "pm_card_visa"))
        .await
        .expect("a decision");
    assert!(decision.approved, "{decision:?}");
    assert!(decision.provider_ref.starts_with("pi_"), "{decision:?}");
    assert_eq!(fake.charges(), 1);

    let refund = RefundRequest {
        order_id: "o-1".into(),
        provider_ref: decision.provider_ref.clone(),
        amount_minor: 2_500,
        currency: "EUR".into(),
        idempotency_key: "d2c-refund-o-1".into(),
    };
    let refunded = provider.refund(refund.clone()).await.expect("a decision");
    assert!(refunded.approved, "{refunded:?}");
    assert!(refunded.provider_ref.starts_with("re_"), "{refunded:?}");
    let again = provider.refund(refund).await.expect("a decision");
    assert_eq!(again, refunded, "same key, same refund");
    assert_eq!(fake.refunds(), 1);
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
