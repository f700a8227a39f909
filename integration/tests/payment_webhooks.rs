//! Provider webhooks on the real broker: while the provider worker's charge
//! call hangs, a signed `payment_intent.succeeded` webhook posted to the
//! payments admin endpoint settles the order; a tampered webhook is refused;
//! a redelivered one changes nothing.

use d2c_integration::app::{order_body, TestApp, TestAppOptions};
use d2c_integration::fake_provider::FakeProvider;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WEBHOOK_SECRET: &str = "whsec_test";
const STALL: Duration = Duration::from_secs(45);

/// A `Stripe-Signature` header for `body`, signed now.
fn sign(body: &[u8]) -> String {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let mut mac =
        Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// What the provider does: a signed POST to the payments admin endpoint.
async fn post_webhook(shop: &TestApp, signature: &str, body: &[u8]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(shop.service("payments").url("/webhooks/provider"))
        .header("Stripe-Signature", signature)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .expect("payments admin answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_settles_a_payment_while_the_provider_call_hangs() {
    let provider = FakeProvider::start().await.expect("fake provider");
    let shop = TestApp::start(TestAppOptions {
        reply_partition: 5,
        reply_timeout_ms: 1_000,
        payments_env: vec![
            ("D2C_PAYMENT_PROVIDER", "http".into()),
            ("D2C_PAYMENT_PROVIDER_URL", provider.url()),
            // Longer than the stall: the worker's call stays in flight.
            ("D2C_PAYMENT_TIMEOUT_MS", "60000".into()),
            ("D2C_PAYMENT_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
        ],
        ..TestAppOptions::default()
    })
    .await
    .expect("shop");
    let api = shop.shopper();
    // A 1 s reply timeout can be too short for a freshly started inventory:
    // setting stock is idempotent, so try again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(error) = shop.stock_sku("WH-1", 10).await {
        assert!(Instant::now() < deadline, "stock: {error:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    provider.stall_next(1, STALL);
    let stalled_at = Instant::now();
    let body = order_body(&[("WH-1", 1)], "pm_card_visa");
    let (status, placed) = api.place_order("webhook-1", &body).await.expect("answers");
    assert_eq!(
        status, 202,
        "the charge hangs, so the checkout is pending: {placed}"
    );
    let order_id = placed["order_id"].as_str().expect("order id").to_owned();

    // The worker's charge call has reached the provider (and hangs there), so
    // the payment is recorded as requested.
    let deadline = Instant::now() + Duration::from_secs(20);
    while provider.requests() == 0 {
        assert!(
            Instant::now() < deadline,
            "the worker never called the provider"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let event = json!({
        "id": format!("evt_{order_id}"),
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {"object": {
            "id": "pi_webhook_1",
            "object": "payment_intent",
            "status": "succeeded",
            "metadata": {"order_id": order_id}
        }}
    })
    .to_string()
    .into_bytes();
    let signature = sign(&event);

    // Tampered: refused, nothing sent.
    let mut tampered = event.clone();
    let at = tampered.len() - 3;
    tampered[at] ^= 1;
    let (status, refused) = post_webhook(&shop, &signature, &tampered).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_signature", "{refused}");

    let (status, received) = post_webhook(&shop, &signature, &event).await;
    assert_eq!(status, 200, "{received}");
    assert_eq!(received, json!({"received": true}));

    let confirmed = api
        .wait_for_status(&order_id, &["confirmed"], Duration::from_secs(30))
        .await
        .expect("the webhook confirms the order");
    assert_eq!(confirmed["status"], "confirmed");
    assert!(
        stalled_at.elapsed() < STALL - Duration::from_secs(10),
        "confirmed well before the stalled call ends ({:?})",
        stalled_at.elapsed()
    );
    assert_eq!(
        provider.charges(),
        0,
        "the worker's call is still hanging: the webhook decided"
    );

    // Redelivered: accepted again, changes nothing.
    let (status, received) = post_webhook(&shop, &signature, &event).await;
    assert_eq!(status, 200, "{received}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = api
        .wait_for_status(&order_id, &["confirmed"], Duration::from_secs(5))
        .await
        .expect("still confirmed");
    assert_eq!(again["status"], "confirmed");

    let accepted = shop
        .service("payments")
        .metric_where("d2c_payment_webhooks_total", "result=\"accepted\"")
        .await
        .expect("metrics");
    let refused = shop
        .service("payments")
        .metric_where("d2c_payment_webhooks_total", "result=\"invalid_signature\"")
        .await
        .expect("metrics");
    assert_eq!((accepted, refused), (2.0, 1.0));
    eprintln!(
        "webhook test: confirmed and redelivered {:?} after the provider stalled",
        stalled_at.elapsed()
    );
}
