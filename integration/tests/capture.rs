//! Authorize, then capture, against every service on the checkout path and
//! the fake Stripe-style provider (which keeps the money's books): checkout
//! only holds the money; fulfilment captures it; a cancel before that voids
//! the hold and returns the stock, after it refunds what is left; partial
//! refunds never add up to more than was captured; and every step retried
//! by the client changes nothing.

use d2c_integration::app::{order_body, Api, TestApp, TestAppOptions, TEST_PRICE_MINOR};
use d2c_integration::fake_provider::{payments_env, FakeProvider};
use serde_json::json;
use std::time::Duration;

async fn sold(api: &Api, sku: &str) -> i64 {
    let (_, stock) = api.stock(sku).await.expect("answers");
    stock["sold"].as_i64().unwrap_or(-1)
}

/// The stock's `sold` once it reads `expected` (stock moves after the
/// order's answer).
async fn wait_sold(api: &Api, sku: &str, expected: i64) {
    for _ in 0..100 {
        if sold(api, sku).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{sku}: sold never reached {expected} (now {})",
        sold(api, sku).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_holds_fulfilment_captures_refunds_are_partial_and_bounded() {
    let provider = FakeProvider::start().await.expect("fake provider");
    let shop = TestApp::start(TestAppOptions {
        reply_partition: 5,
        reply_timeout_ms: 15_000,
        payments_env: payments_env(&provider),
        ..TestAppOptions::default()
    })
    .await
    .expect("shop");
    let (api, admin) = (shop.shopper(), shop.admin());
    shop.stock_sku("CAP-1", 10).await.expect("stock");

    let (status, order) = api
        .place_order("cap-1", &order_body(&[("CAP-1", 2)], "pm_card_visa"))
        .await
        .expect("answers");
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["status"], "confirmed");
    let total = 2 * TEST_PRICE_MINOR;
    let order_id = order["order_id"].as_str().expect("id").to_owned();
    assert_eq!(
        (provider.charges(), provider.captures()),
        (1, 0),
        "held, not taken"
    );

    let (status, fulfilled) = admin.fulfil(&order_id).await.expect("answers");
    assert_eq!(status, 200, "{fulfilled}");
    assert_eq!(fulfilled["status"], "fulfilled");
    assert_eq!(fulfilled["captured_minor"], total);
    let (status, again) = admin.fulfil(&order_id).await.expect("answers");
    assert_eq!(
        (status, again["status"].clone()),
        (200, json!("fulfilled")),
        "{again}"
    );
    assert_eq!(provider.captures(), 1, "a retried fulfilment captures once");
    assert_eq!(provider.captured_by_order().get(&order_id), Some(&total));

    let (status, first) = admin
        .refund(&order_id, "refund-1", 500)
        .await
        .expect("answers");
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["refunds"][0]["status"], "refunded", "{first}");
    assert_eq!(first["refunded_minor"], 500);
    let (status, retried) = admin
        .refund(&order_id, "refund-1", 500)
        .await
        .expect("answers");
    assert_eq!(
        (status, retried["refunded_minor"].clone()),
        (201, json!(500)),
        "{retried}"
    );
    let (status, reused) = admin
        .refund(&order_id, "refund-1", 700)
        .await
        .expect("answers");
    assert_eq!(
        status, 422,
        "the key names a refund of another amount: {reused}"
    );
    let (status, second) = admin
        .refund(&order_id, "refund-2", 1_000)
        .await
        .expect("answers");
    assert_eq!(
        (status, second["refunded_minor"].clone()),
        (201, json!(1_500)),
        "{second}"
    );
    let (status, beyond) = admin
        .refund(&order_id, "refund-3", total - 1_500 + 1)
        .await
        .expect("answers");
    assert_eq!(status, 422, "{beyond}");
    assert_eq!(beyond["error"]["field"], "amount_minor", "{beyond}");
    assert_eq!(provider.refunds(), 2);

    // A cancel after the capture refunds what is left and returns the stock.
    wait_sold(&api, "CAP-1", 2).await;
    let (status, cancelled) = api.cancel(&order_id).await.expect("answers");
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["refunded_minor"], total);
    let (status, _) = api.cancel(&order_id).await.expect("answers");
    assert_eq!(status, 200, "a retried cancel changes nothing");
    assert_eq!(provider.refunded_by_order().get(&order_id), Some(&total));
    assert_eq!(provider.refunds(), 3);
    wait_sold(&api, "CAP-1", 0).await;

    // A cancel before fulfilment voids the hold: nothing is ever taken.
    let (status, held) = api
        .place_order("cap-2", &order_body(&[("CAP-1", 1)], "pm_card_visa"))
        .await
        .expect("answers");
    assert_eq!(status, 201, "{held}");
    let held_id = held["order_id"].as_str().expect("id").to_owned();
    wait_sold(&api, "CAP-1", 1).await;
    let (status, voided) = api.cancel(&held_id).await.expect("answers");
    assert_eq!(
        (status, voided["status"].clone()),
        (200, json!("cancelled")),
        "{voided}"
    );
    assert_eq!(voided["captured_minor"], 0);
    wait_sold(&api, "CAP-1", 0).await;
    let (status, late) = admin.fulfil(&held_id).await.expect("answers");
    assert_eq!(status, 409, "a cancelled order is not fulfilled: {late}");
    assert_eq!(provider.captured_by_order().get(&held_id), None);
    let (status, no_refund) = admin
        .refund(&held_id, "refund-x", 100)
        .await
        .expect("answers");
    assert_eq!(status, 409, "{no_refund}");
}
