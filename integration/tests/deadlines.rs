//! No saga waits forever: against every service on the checkout path and a
//! fake provider that stops answering captures and refunds, the order
//! reaches its visible failure state by the deadline, even when the orders
//! processor is killed and restarted while the order waits, and the
//! deadline fires once.

use d2c_integration::app::{order_body, Api, TestApp, TestAppOptions};
use d2c_integration::fake_provider::{payments_env, FakeProvider, CAPTURE_ROUTE, REFUNDS_ROUTE};
use d2c_integration::kafka::read_all;
use d2c_proto::orders::v1::OrderDeadlineExpired;
use prost::{Message, Name};
use serde_json::{json, Value};
use std::time::Duration;

const DEADLINE_MS: u64 = 4_000;

/// The order as operators see it, once `done` says so.
async fn wait_for(admin: &Api, order_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..150 {
        let (status, order) = admin.admin_order(order_id).await.expect("answers");
        if status == 200 && done(&order) {
            return order;
        }
        last = order;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("order {order_id} never got there; last seen {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_never_answers_ends_in_a_visible_failure_by_the_deadline() {
    let provider = FakeProvider::start().await.expect("fake provider");
    let deadlines = [
        ("D2C_DEADLINE_CAPTURE_MS", DEADLINE_MS.to_string()),
        ("D2C_DEADLINE_REFUND_MS", DEADLINE_MS.to_string()),
        ("D2C_TICK_MS", "250".to_owned()),
    ];
    let mut shop = TestApp::start(TestAppOptions {
        reply_partition: 6,
        reply_timeout_ms: 1_000,
        payments_env: payments_env(&provider),
        env: deadlines.to_vec(),
        ..TestAppOptions::default()
    })
    .await
    .expect("shop");
    let (api, admin) = (shop.shopper(), shop.admin());
    shop.stock_sku("DL-1", 10).await.expect("stock");
    let body = order_body(&[("DL-1", 1)], "pm_card_visa");
    // The reply timeout is short (so a stalled capture answers 202 soon):
    // a first checkout on a just-started platform may answer 202 too.
    let mut ids = Vec::new();
    for key in ["dl-1", "dl-2"] {
        let (status, placed) = api.place_order(key, &body).await.expect("answers");
        assert!(status == 201 || status == 202, "{status} {placed}");
        let id = placed["order_id"].as_str().expect("id").to_owned();
        api.wait_for_status(&id, &["confirmed"], Duration::from_secs(30))
            .await
            .expect("confirmed");
        ids.push(id);
    }
    let [stalled_id, refunded_id] = [ids[0].clone(), ids[1].clone()];

    // The second order is captured while the provider still answers.
    let (status, fulfilled) = admin.fulfil(&refunded_id).await.expect("answers");
    assert_eq!(
        (status, fulfilled["status"].clone()),
        (200, json!("fulfilled")),
        "{fulfilled}"
    );

    provider.stall_route(CAPTURE_ROUTE, Duration::from_millis(300));
    provider.stall_route(REFUNDS_ROUTE, Duration::from_millis(300));
    let (status, waiting) = admin.fulfil(&stalled_id).await.expect("answers");
    assert_eq!(status, 202, "the capture does not answer: {waiting}");

    // Killed and restarted while the order waits: its timer is in the
    // partition's state, restored from the changelog.
    shop.kill_and_restart("orders", &[])
        .await
        .expect("orders killed and back");

    let failed = wait_for(&admin, &stalled_id, |order| {
        order["status"] == "capture_failed"
    })
    .await;
    assert!(
        failed["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("did not finish in time"),
        "{failed}"
    );
    assert_eq!(provider.captured_by_order().get(&stalled_id), None);

    let (status, pending) = admin
        .refund(&refunded_id, "dl-refund", 400)
        .await
        .expect("answers");
    assert_eq!(status, 202, "the refund does not answer: {pending}");
    let refused = wait_for(&admin, &refunded_id, |order| {
        order["refunds"][0]["status"] == "failed"
    })
    .await;
    assert_eq!(
        refused["status"], "fulfilled",
        "a failed partial refund leaves the order fulfilled"
    );
    assert_eq!(refused["refunded_minor"], 0, "{refused}");

    // Each deadline fired once, however many ticks and restarts saw it.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let events = read_all(
        &shop.platform.brokers,
        &shop.platform.topic("orders.events"),
        Duration::from_secs(30),
    )
    .expect("orders.events readable");
    let expiries: Vec<OrderDeadlineExpired> = events
        .iter()
        .filter(|record| {
            record
                .envelope
                .as_ref()
                .is_some_and(|envelope| envelope.message_type == OrderDeadlineExpired::full_name())
        })
        .map(|record| OrderDeadlineExpired::decode(record.payload.as_slice()).expect("decodes"))
        .collect();
    let steps: Vec<(&str, &str)> = expiries
        .iter()
        .map(|expired| {
            let order = if expired.order_id == stalled_id {
                "stalled"
            } else {
                "refunded"
            };
            (order, expired.step.as_str())
        })
        .collect();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(steps.contains(&("stalled", "capture")), "{steps:?}");
    assert!(steps.contains(&("refunded", "refund")), "{steps:?}");
    let expired_total = shop
        .service("orders")
        .metric_where("d2c_order_deadlines_expired_total", "step=\"refund\"")
        .await
        .expect("metric");
    assert_eq!(expired_total, 1.0);
}
