//! The checkout saga against a real broker: orders, inventory and payments
//! processors, a gateway, and (where charges are counted) a local HTTP server
//! speaking the payment provider's protocol.

use d2c_integration::app::{order_body, Api, TestApp, TestAppOptions, SETTLED};
use d2c_integration::fake_provider::FakeProvider;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(60);

fn http_provider(provider: &FakeProvider) -> Vec<(&'static str, String)> {
    d2c_integration::fake_provider::payments_env(provider)
}

/// Waits until `GET /inventory/{sku}` shows `field == value`.
async fn wait_for_stock(api: &Api, sku: &str, field: &str, value: i64) -> Value {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (status, stock) = api.stock(sku).await.expect("inventory answers");
        if status == 200 && stock[field] == value {
            return stock;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sku}: {field} never became {value}; last {status} {stock}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversell_is_impossible() {
    let shop = TestApp::start(TestAppOptions {
        reply_partition: 1,
        reply_timeout_ms: 20_000,
        ..TestAppOptions::default()
    })
    .await
    .expect("shop");
    let api = shop.shopper();
    shop.stock_sku("HOT-1", 50).await.expect("stock set");

    let attempts = futures::future::join_all((0..200).map(|index| {
        let api = &api;
        async move {
            let body = order_body(&[("HOT-1", 1)], "pm_card_visa");
            api.place_order(&format!("hot-{index}"), &body)
                .await
                .expect("gateway answers")
        }
    }))
    .await;
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut settled: BTreeMap<String, usize> = BTreeMap::new();
    for (status, body) in &attempts {
        *by_status.entry(*status).or_default() += 1;
        match status {
            201 => *settled.entry("confirmed".into()).or_default() += 1,
            409 => {
                assert_eq!(body["error"]["code"], "out_of_stock", "{body}");
                assert_eq!(body["error"]["skus"][0], "HOT-1", "{body}");
                *settled.entry("rejected".into()).or_default() += 1;
            }
            202 => {
                let id = body["order_id"].as_str().expect("id");
                let order = api
                    .wait_for_status(id, SETTLED, SETTLE)
                    .await
                    .expect("settles");
                let status = order["status"].as_str().unwrap_or_default().to_owned();
                *settled.entry(status).or_default() += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    eprintln!("oversell: HTTP statuses {by_status:?}, outcomes {settled:?}");
    assert_eq!(settled.get("confirmed"), Some(&50), "{settled:?}");
    assert_eq!(settled.get("rejected"), Some(&150), "{settled:?}");
    let stock = wait_for_stock(&api, "HOT-1", "sold", 50).await;
    assert_eq!(stock["reserved"], 0, "{stock}");
    assert_eq!(stock["available"], 0, "{stock}");
    assert_eq!(stock["on_hand"], 0, "{stock}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_release_what_was_reserved() {
    let shop = TestApp::start(TestAppOptions {
        reply_partition: 2,
        ..TestAppOptions::default()
    })
    .await
    .expect("shop");
    let api = shop.shopper();
    shop.stock_sku("PLENTY-1", 10).await.expect("stock");
    shop.stock_sku("SCARCE-1", 1).await.expect("stock");

    // One SKU runs out: the other SKU's reservation is given back.
    let body = order_body(&[("PLENTY-1", 3), ("SCARCE-1", 2)], "pm_card_visa");
    let (status, refused) = api.place_order("multi-1", &body).await.expect("answers");
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["skus"], serde_json::json!(["SCARCE-1"]));
    assert_eq!(refused["error"]["field"], "lines[1].sku");
    let order_id = refused["error"]["order_id"].as_str().expect("order id");
    let order = api
        .wait_for_status(order_id, &["rejected"], SETTLE)
        .await
        .expect("rejected order is readable");
    assert_eq!(order["rejection"]["code"], "out_of_stock");
    wait_for_stock(&api, "PLENTY-1", "available", 10).await;
    wait_for_stock(&api, "SCARCE-1", "available", 1).await;

    // A declined card: 402 with the reason, every line released.
    let body = order_body(
        &[("PLENTY-1", 4), ("SCARCE-1", 1)],
        "pm_card_chargeDeclinedInsufficientFunds",
    );
    let (status, declined) = api.place_order("declined-1", &body).await.expect("answers");
    assert_eq!(status, 402, "{declined}");
    assert_eq!(declined["error"]["code"], "payment_declined");
    assert_eq!(declined["error"]["reason"], "insufficient_funds");
    assert_eq!(declined["error"]["field"], "payment_method");
    wait_for_stock(&api, "PLENTY-1", "available", 10).await;
    let scarce = wait_for_stock(&api, "SCARCE-1", "available", 1).await;
    assert_eq!(scarce["sold"], 0);

    // A SKU the catalog sells but nobody stocked has no stock at all.
    shop.admin()
        .create_test_product("NEVER-STOCKED")
        .await
        .expect("product");
    let body = order_body(&[("NEVER-STOCKED", 1)], "pm_card_visa");
    let (status, missing) = api.place_order("unknown-1", &body).await.expect("answers");
    assert_eq!(status, 409, "{missing}");
    let (status, _) = api.stock("NEVER-STOCKED").await.expect("answers");
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_are_retried_without_charging_twice() {
    let provider = FakeProvider::start().await.expect("fake provider");
    let shop = TestApp::start(TestAppOptions {
        reply_partition: 3,
        reply_timeout_ms: 15_000,
        payments_env: http_provider(&provider),
        ..TestAppOptions::default()
    })
    .await
    .expect("shop");
    let api = shop.shopper();
    shop.stock_sku("SKU-P", 100).await.expect("stock");

    provider.fail_next(2);
    let body = order_body(&[("SKU-P", 1)], "pm_card_visa");
    let (status, order) = api.place_order("flaky-1", &body).await.expect("answers");
    assert_eq!(status, 201, "{order}");
    assert_eq!(provider.charges(), 1);
    assert!(provider.requests() >= 3, "two failures, then success");

    // A provider that stalls past our timeout (it may or may not have acted):
    // the retry reuses the idempotency key, so still one charge per order.
    provider.stall_next(1, Duration::from_secs(2));
    let (status, order) = api
        .place_order("stall-1", &order_body(&[("SKU-P", 1)], "pm_card_visa"))
        .await
        .expect("answers");
    assert_eq!(status, 201, "{order}");
    assert_eq!(provider.charges(), 2);

    // The same checkout retried by the client: no new charge.
    let (status, _) = api.place_order("flaky-1", &body).await.expect("answers");
    assert_eq!(status, 201);
    assert_eq!(provider.charges(), 2);

    // Cancel a confirmed order: stock back, the hold voided (nothing was
    // taken, so nothing is refunded).
    let id = order["order_id"].as_str().expect("id");
    wait_for_stock(&api, "SKU-P", "sold", 2).await;
    let (status, cancelled) = api.cancel(id).await.expect("answers");
    assert!(status == 200 || status == 202, "{status} {cancelled}");
    let cancelled = api
        .wait_for_status(id, &["cancelled"], SETTLE)
        .await
        .expect("cancelled");
    assert_eq!(cancelled["status"], "cancelled");
    let (status, again) = api.cancel(id).await.expect("answers");
    assert_eq!(status, 200, "{again}");
    assert_eq!((provider.refunds(), provider.captures()), (0, 0));
    let stock = wait_for_stock(&api, "SKU-P", "sold", 1).await;
    assert_eq!(stock["available"], 99, "{stock}");

    // A rejected order cannot be cancelled.
    let (status, declined) = api
        .place_order(
            "declined-1",
            &order_body(&[("SKU-P", 1)], "pm_card_chargeDeclined"),
        )
        .await
        .expect("answers");
    assert_eq!(status, 402, "{declined}");
    let declined_id = declined["error"]["order_id"].as_str().expect("id");
    let (status, refused) = api.cancel(declined_id).await.expect("answers");
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "illegal_transition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_inventory_and_payments_mid_stream_keeps_stock_and_charges_consistent() {
    let provider = FakeProvider::start().await.expect("fake provider");
    let mut shop = TestApp::start(TestAppOptions {
        reply_partition: 4,
        reply_timeout_ms: 3_000,
        payments_env: http_provider(&provider),
        ..TestAppOptions::default()
    })
    .await
    .expect("shop");
    let api = shop.shopper();
    shop.stock_sku("K-1", 40).await.expect("stock");
    shop.stock_sku("K-2", 1_000).await.expect("stock");

    let total = 80usize;
    let sender_api = api.clone();
    let sender = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for index in 0..total {
            let api = sender_api.clone();
            tasks.push(tokio::spawn(async move {
                let body = order_body(&[("K-1", 1), ("K-2", 2)], "pm_card_visa");
                api.place_order(&format!("k-{index}"), &body).await
            }));
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        futures::future::join_all(tasks).await
    });
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    shop.kill_and_restart("inventory", &[])
        .await
        .expect("inventory killed and back");
    shop.kill_and_restart("payments", &http_provider(&provider))
        .await
        .expect("payments killed and back");

    let mut confirmed = 0;
    let mut rejected = 0;
    let mut confirmed_ids = HashMap::new();
    for result in sender.await.expect("sender") {
        let (status, body) = result.expect("task").expect("gateway answers");
        let id = match status {
            201 | 202 => body["order_id"].as_str().expect("id").to_owned(),
            409 => body["error"]["order_id"].as_str().expect("id").to_owned(),
            other => panic!("unexpected {other}: {body}"),
        };
        let order = api
            .wait_for_status(&id, SETTLED, Duration::from_secs(120))
            .await
            .expect("every order settles");
        match order["status"].as_str() {
            Some("confirmed") => {
                confirmed += 1;
                confirmed_ids.insert(id, 1);
            }
            Some("rejected") => {
                assert_eq!(order["rejection"]["code"], "out_of_stock", "{order}");
                rejected += 1;
            }
            other => panic!("unexpected status {other:?}"),
        }
    }
    eprintln!(
        "kill: {confirmed} confirmed, {rejected} rejected, {} charges",
        provider.charges()
    );
    assert_eq!(confirmed + rejected, total);
    assert_eq!(confirmed, 40, "K-1 had 40 units");
    // Checkout authorizes while it reserves: an order refused for stock may
    // have been charged, and that hold is voided. What stays held is one
    // charge per confirmed order, and no order is ever charged twice.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while provider.held_by_order() != confirmed_ids && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        provider.held_by_order(),
        confirmed_ids,
        "one charge held per confirmed order"
    );
    assert!(
        provider
            .charges_by_order()
            .values()
            .all(|charges| *charges == 1),
        "never charged twice: {:?}",
        provider.charges_by_order()
    );
    let k1 = wait_for_stock(&api, "K-1", "sold", 40).await;
    assert_eq!(k1["reserved"], 0, "{k1}");
    let k2 = wait_for_stock(&api, "K-2", "sold", 80).await;
    assert_eq!(k2["reserved"], 0, "{k2}");
    assert_eq!(k2["available"], 920, "{k2}");
}
