//! The HTTP payment provider against Stripe's own API double, `stripe-mock`
//! (a Go program built by `./dev test`, named in `D2C_STRIPE_MOCK`), which
//! validates every request against Stripe's OpenAPI: parameter names,
//! types, enums, form encoding, authentication and routes. Each call of the
//! happy path (authorize with manual capture, capture, void, a partial
//! refund) must be a request Stripe accepts.
//!
//! stripe-mock keeps no state and answers fixed fixtures (an intent is
//! always `requires_payment_method`), so what the answers *mean* (approved,
//! captured, canceled, declined, stalled, replayed idempotently) is tested
//! against the local fake in `payment_provider.rs`, which exists for that.

use d2c_payments::{
    CaptureRequest, ChargeRequest, HttpProvider, PaymentProvider, ProviderError, RefundRequest,
    VoidRequest,
};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

struct StripeMock {
    child: Child,
    url: String,
}

impl Drop for StripeMock {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn start_stripe_mock() -> StripeMock {
    let binary = std::env::var("D2C_STRIPE_MOCK").unwrap_or_else(|_| "stripe-mock".to_owned());
    let port = free_port();
    let child = Command::new(&binary)
        .args(["-http-addr", &format!("127.0.0.1:{port}"), "-https-addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot run {binary} ({error}): `./dev test` builds stripe-mock and sets D2C_STRIPE_MOCK")
        });
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return StripeMock { child, url };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stripe-mock did not listen on {url} within 5 s");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// A decision of any kind means stripe-mock accepted the request's shape;
/// a shape it refuses comes back as a 400, which is `Permanent`.
fn accepted<T: std::fmt::Debug>(what: &str, result: Result<T, ProviderError>) -> T {
    match result {
        Ok(decision) => decision,
        Err(error) => panic!("stripe-mock refused the {what} request: {error}"),
    }
}

#[tokio::test]
async fn the_http_providers_requests_are_what_stripe_accepts() {
    let mock = start_stripe_mock().await;
    let provider =
        HttpProvider::new(&mock.url, "sk_test_123", Duration::from_secs(5)).expect("HTTP client");
    let authorized = accepted(
        "authorize",
        provider
            .charge(ChargeRequest {
                order_id: "o-1".into(),
                customer_id: "c-1".into(),
                amount_minor: 2_500,
                currency: "EUR".into(),
                payment_method: "pm_card_visa".into(),
                idempotency_key: "d2c-charge-o-1".into(),
            })
            .await,
    );
    assert!(authorized.provider_ref.starts_with("pi_"), "{authorized:?}");
    let intent = authorized.provider_ref;
    accepted(
        "capture",
        provider
            .capture(CaptureRequest {
                order_id: "o-1".into(),
                provider_ref: intent.clone(),
                amount_minor: 2_500,
                currency: "EUR".into(),
                idempotency_key: "d2c-capture-o-1".into(),
            })
            .await,
    );
    let refunded = accepted(
        "refund",
        provider
            .refund(RefundRequest {
                order_id: "o-1".into(),
                refund_id: "r-1".into(),
                provider_ref: intent.clone(),
                amount_minor: 1_000,
                currency: "EUR".into(),
                idempotency_key: "d2c-refund-o-1-r-1".into(),
            })
            .await,
    );
    assert!(
        refunded.approved,
        "a refund fixture is `succeeded`: {refunded:?}"
    );
    assert!(refunded.provider_ref.starts_with("re_"), "{refunded:?}");
    accepted(
        "void",
        provider
            .void(VoidRequest {
                order_id: "o-2".into(),
                provider_ref: intent,
                idempotency_key: "d2c-void-o-2".into(),
            })
            .await,
    );

    // The double does check: a wrong key is refused, as Stripe would.
    let wrong_key =
        HttpProvider::new(&mock.url, "not-a-key", Duration::from_secs(5)).expect("HTTP client");
    let refused = wrong_key
        .void(VoidRequest {
            order_id: "o-3".into(),
            provider_ref: "pi_123".into(),
            idempotency_key: "d2c-void-o-3".into(),
        })
        .await;
    assert!(
        matches!(refused, Err(ProviderError::Permanent(_))),
        "{refused:?}"
    );
}
