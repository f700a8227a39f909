//! The backbone against a real broker: gateway → orders.messages → orders
//! processor (and the saga through inventory and payments) → reply and
//! orders.events, with crashes and rebalances of the orders processor.

use d2c_integration::app::{checkout_peers, Api, CHECKOUT_SERVICES};
use d2c_integration::customer;
use d2c_integration::harness::{test_partitions, Platform, Service};
use d2c_integration::kafka::read_all;
use d2c_proto::orders::v1::OrderPlaced;
use prost::{Message, Name};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const SERVICES: &[&str] = CHECKOUT_SERVICES;
// Tests that expect 201 give the whole saga (8 broker hops) a generous reply
// timeout: the suite runs many platforms at once on two cores, and CI
// machines vary.

/// Inventory, payments and catalog running, and plenty of the SKUs the
/// orders use (10.00 each).
async fn stocked(platform: &Platform, gateway: &Service) -> [Service; 3] {
    let peers = checkout_peers(platform)
        .await
        .expect("inventory, payments and catalog ready");
    let admin = Api::new(customer::admin_client(), gateway.url(""));
    for sku in ["SKU-1", "SKU-2"] {
        admin.stock_sku(sku, 1_000_000).await.expect("stock set");
    }
    peers
}

/// An order body; the customer is the one the client acts for.
fn order_body(quantity: i64) -> Value {
    json!({
        "currency": "EUR",
        "payment_method": "pm_card_visa",
        "lines": [
            {"sku": "SKU-1", "quantity": quantity, "unit_price_minor": 1000},
            {"sku": "SKU-2", "quantity": 1, "unit_price_minor": 1000}
        ]
    })
}

/// OrderPlaced events per order id, as (distinct message ids, copies).
fn placed_events(platform: &Platform) -> BTreeMap<String, (BTreeSet<String>, usize)> {
    let records = read_all(
        &platform.brokers,
        &platform.topic("orders.events"),
        Duration::from_secs(60),
    )
    .expect("orders.events readable");
    let mut by_order: BTreeMap<String, (BTreeSet<String>, usize)> = BTreeMap::new();
    for record in records {
        let envelope = record.envelope.expect("every event has an envelope");
        if envelope.message_type != OrderPlaced::full_name() {
            continue;
        }
        let event = OrderPlaced::decode(record.payload.as_slice()).expect("event decodes");
        let order_id = event.order.expect("event carries the order").order_id;
        assert_eq!(
            record.key,
            order_id.as_bytes(),
            "events are keyed by order id"
        );
        let entry = by_order.entry(order_id).or_default();
        entry.0.insert(envelope.message_id.to_string());
        entry.1 += 1;
    }
    by_order
}

/// The order once confirmed (processors may still be starting).
async fn wait_for_order(api: &Api, order_id: &str, within: Duration) -> Value {
    api.wait_for_status(order_id, &["confirmed"], within)
        .await
        .expect("the order is confirmed in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_is_placed_and_retries_map_to_the_same_order() {
    let platform = Platform::new(SERVICES).await.expect("platform");
    let (_orders, gateway) = tokio::try_join!(
        platform.orders_ready("orders-a"),
        platform.gateway_ready("gateway", 0, 15_000),
    )
    .expect("orders and gateway ready");
    let _peers = stocked(&platform, &gateway).await;
    let client = Api::new(customer::client("cust-1"), gateway.url(""));

    let (status, first, headers) = client
        .place_order_with_headers("key-1", &order_body(2))
        .await
        .expect("gateway answers");
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["total_minor"], 3_000);
    assert_eq!(first["status"], "confirmed");
    assert!(headers.contains_key("x-request-id"));
    let order_id = first["order_id"].as_str().expect("order id").to_owned();

    // Sequential retry: same order, flagged as a replay, nothing new emitted.
    let (status, again, headers) = client
        .place_order_with_headers("key-1", &order_body(2))
        .await
        .expect("gateway answers");
    assert_eq!(status, 201);
    assert_eq!(again, first);
    assert_eq!(
        headers
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("true")
    );

    // Concurrent retries of a new key: one order. The first request waits for
    // the saga; a retry arriving meanwhile gets the order as it stands (202).
    let concurrent = futures::future::join_all((0..8).map(|_| {
        let client = client.clone();
        async move {
            client
                .place_order_with_headers("key-2", &order_body(1))
                .await
                .expect("gateway answers")
        }
    }))
    .await;
    let ids: BTreeSet<String> = concurrent
        .iter()
        .map(|(status, body, _)| {
            assert!(*status == 201 || *status == 202, "{status} {body}");
            body["order_id"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "all retries name one order");

    // Same key, different body: refused like Stripe does.
    let (status, body, _) = client
        .place_order_with_headers("key-1", &order_body(5))
        .await
        .expect("gateway answers");
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "Idempotency-Key");

    // The same key from another customer is another order, which the first
    // customer cannot see.
    let stranger = Api::new(customer::client("cust-2"), gateway.url(""));
    let (status, other, _) = stranger
        .place_order_with_headers("key-1", &order_body(2))
        .await
        .expect("gateway answers");
    assert_eq!(status, 201);
    assert_ne!(other["order_id"], first["order_id"]);

    let read = wait_for_order(&client, &order_id, Duration::from_secs(10)).await;
    assert_eq!(read, first);
    let (status, _) = stranger.order(&order_id).await.expect("answers");
    assert_eq!(status, 404, "another customer's order");
    let anonymous = Api::new(reqwest::Client::new(), gateway.url(""));
    let (status, _) = anonymous.order(&order_id).await.expect("answers");
    assert_eq!(status, 401, "no token");
    let missing = uuid::Uuid::new_v4().to_string();
    let (status, _) = client.order(&missing).await.expect("answers");
    assert_eq!(status, 404);

    let events = placed_events(&platform);
    assert_eq!(events.len(), 3, "three distinct orders: {events:?}");
    for (order, (ids, copies)) in &events {
        assert_eq!(ids.len(), 1, "exactly one OrderPlaced for {order}");
        assert_eq!(*copies, 1, "no replayed copy either for {order}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() {
    let platform = Platform::new(SERVICES).await.expect("platform");
    let gateway = platform
        .gateway_ready("gateway", 1, 2_000)
        .await
        .expect("gateway ready");
    let client = Api::new(customer::client("cust-1"), gateway.url(""));

    let no_key = client
        .request(Method::POST, "/orders")
        .json(&order_body(1))
        .send()
        .await
        .expect("answers");
    assert_eq!(no_key.status().as_u16(), 400);
    let body: Value = no_key.json().await.expect("json error");
    assert_eq!(body["error"]["field"], "Idempotency-Key");

    let malformed = client
        .request(Method::POST, "/orders")
        .header("Idempotency-Key", "k")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("answers");
    assert_eq!(malformed.status().as_u16(), 400);

    for (body, field) in [
        (
            json!({"payment_method": "pm_card_visa", "currency": "EUR", "lines": []}),
            "lines",
        ),
        (
            json!({"payment_method": "pm_card_visa", "currency": "euro", "lines": [{"sku": "S", "quantity": 1, "unit_price_minor": 1}]}),
            "currency",
        ),
        (
            json!({"payment_method": "pm_card_visa", "currency": "EUR", "lines": [{"sku": "S", "quantity": 0, "unit_price_minor": 1}]}),
            "lines[0].quantity",
        ),
        (
            json!({"payment_method": "pm_card_visa", "currency": "EUR", "lines": [{"sku": "S", "quantity": -3, "unit_price_minor": 1}]}),
            "lines[0].quantity",
        ),
    ] {
        let (status, error, _) = client
            .place_order_with_headers("k", &body)
            .await
            .expect("gateway answers");
        assert_eq!(status, 422, "{body} → {error}");
        assert_eq!(error["error"]["field"], field, "{error}");
    }

    let huge = client
        .request(Method::POST, "/orders")
        .header("Idempotency-Key", "k")
        .header("content-type", "application/json")
        .body(vec![b' '; 200 * 1024])
        .send()
        .await
        .expect("answers");
    assert_eq!(huge.status().as_u16(), 413);
    let body: Value = huge.json().await.expect("json error");
    assert_eq!(body["error"]["code"], "body_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_reply_gives_202_and_the_order_is_found_later() {
    let platform = Platform::new(SERVICES).await.expect("platform");
    // No orders processor yet: the command waits in orders.messages.
    let gateway = platform
        .gateway_ready("gateway", 2, 1_000)
        .await
        .expect("gateway ready");
    let _peers = stocked(&platform, &gateway).await;
    let client = Api::new(customer::client("cust-1"), gateway.url(""));
    let (status, pending, headers) = client
        .place_order_with_headers("slow-1", &order_body(1))
        .await
        .expect("answers");
    assert_eq!(status, 202, "{pending}");
    let location = headers["location"].to_str().expect("ascii").to_owned();
    let order_id = pending["order_id"].as_str().expect("id");
    assert_eq!(location, format!("/orders/{order_id}"));

    // Polled while the gateway waits for the outcome: answered there
    // (there is no orders processor to ask), and only to its customer.
    let (status, polled) = client.order(order_id).await.expect("answers");
    assert_eq!(status, 202, "{polled}");
    assert_eq!(polled["status"], "pending");
    let stranger = Api::new(customer::client("cust-2"), gateway.url(""));
    let (status, body) = stranger.order(order_id).await.expect("answers");
    assert_ne!(status, 202, "only the checkout's customer: {body}");

    let _orders = platform
        .orders_ready("orders-late")
        .await
        .expect("orders ready");
    // Well within the 30 s a checkout's polls may be answered locally: the
    // late reply ends that, and the owner is asked again.
    let order = wait_for_order(&client, order_id, Duration::from_secs(20)).await;
    assert_eq!(order["customer_id"], "cust-1");
    let late = gateway
        .metric("d2c_gateway_polls_answered_settling_total")
        .await
        .expect("gateway metrics");
    assert!(late >= 1.0, "{late}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_and_duplicates_nothing() {
    let platform = Platform::new(SERVICES).await.expect("platform");
    let (mut orders, gateway) = tokio::try_join!(
        platform.orders_ready("orders-k"),
        platform.gateway_ready("gateway", 3, 3_000),
    )
    .expect("orders and gateway ready");
    let _peers = stocked(&platform, &gateway).await;
    let client = Api::new(customer::client("cust-1"), gateway.url(""));

    // 150 orders at ~75/s; the processor is killed a third of the way in.
    let total = 150usize;
    let sender = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for index in 0..total {
                let client = client.clone();
                tasks.push(tokio::spawn(async move {
                    let key = format!("kill-{index}");
                    let (status, body, _) = client
                        .place_order_with_headers(&key, &order_body(1))
                        .await
                        .expect("gateway answers");
                    (key, status, body)
                }));
                tokio::time::sleep(Duration::from_millis(13)).await;
            }
            futures::future::join_all(tasks).await
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    orders.kill9().await.expect("killed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _orders = platform
        .orders_ready("orders-k")
        .await
        .expect("orders ready again");

    let results = sender.await.expect("sender finished");
    let mut order_ids = BTreeSet::new();
    for result in results {
        let (key, status, body) = result.expect("request task");
        assert!(status == 201 || status == 202, "{key}: {status} {body}");
        order_ids.insert(body["order_id"].as_str().expect("order id").to_owned());
    }
    assert_eq!(order_ids.len(), total, "one order per key");
    // Recovery includes the dead member's session timeout and the restart's
    // catch-up, on a broker that other tests load at the same time.
    for order_id in &order_ids {
        wait_for_order(&client, order_id, Duration::from_secs(90)).await;
    }
    let events = placed_events(&platform);
    assert_eq!(
        events.keys().cloned().collect::<BTreeSet<_>>(),
        order_ids,
        "an event for every order, none extra"
    );
    let replayed: usize = events.values().map(|(_, copies)| copies - 1).sum();
    for (order, (ids, _)) in &events {
        assert_eq!(ids.len(), 1, "order {order} placed once (one message id)");
    }
    eprintln!("sigkill: {total} orders, {replayed} replayed copies of events (same message id, dropped by receivers)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_partitions_and_take_over_each_other() {
    let platform = Platform::new(SERVICES).await.expect("platform");
    let first = platform
        .orders_ready("orders-1")
        .await
        .expect("first ready");
    let mut second = platform
        .orders_ready("orders-2")
        .await
        .expect("second ready");
    let gateway = platform
        .gateway_ready("gateway", 4, 15_000)
        .await
        .expect("gateway ready");
    let _peers = stocked(&platform, &gateway).await;

    // The group settles with both members owning part of the partitions.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let a = first
            .metric("d2c_assigned_partitions")
            .await
            .expect("metrics");
        let b = second
            .metric("d2c_assigned_partitions")
            .await
            .expect("metrics");
        if a > 0.0 && b > 0.0 && a + b == f64::from(test_partitions()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "partitions not shared: {a} + {b}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let client = Api::new(customer::client("cust-1"), gateway.url(""));
    for index in 0..60 {
        let (status, body, _) = client
            .place_order_with_headers(&format!("share-{index}"), &order_body(1))
            .await
            .expect("gateway answers");
        assert_eq!(status, 201, "{body}");
    }
    let handled_first = first
        .metric_where("d2c_messages_handled_total", "d2c.orders.v1.PlaceOrder")
        .await
        .expect("metrics");
    let handled_second = second
        .metric_where("d2c_messages_handled_total", "d2c.orders.v1.PlaceOrder")
        .await
        .expect("metrics");
    assert!(
        handled_first > 0.0 && handled_second > 0.0,
        "both handled work: {handled_first} / {handled_second}"
    );
    // At least once: a batch handled just before a rebalance moved its
    // partition is handled again by the new owner (same effects, same ids).
    assert!(
        handled_first + handled_second >= 60.0,
        "{handled_first} + {handled_second}"
    );
    eprintln!("share: PlaceOrder handled {handled_first} + {handled_second} times for 60 orders");

    // A graceful stop hands every partition to the survivor, with its state
    // (restored from the changelog: the survivor never saw those orders).
    let status = second.terminate().await.expect("second stops");
    assert!(status.success(), "clean exit: {status}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while first
        .metric("d2c_assigned_partitions")
        .await
        .expect("metrics")
        < f64::from(test_partitions())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "survivor did not take over"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for index in 0..60 {
        let (status, body, headers) = client
            .place_order_with_headers(&format!("share-{index}"), &order_body(1))
            .await
            .expect("gateway answers");
        assert_eq!(status, 201, "{body}");
        assert!(
            headers.contains_key("idempotent-replayed"),
            "order {index} known after takeover"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_instance_restores_state_from_the_changelog() {
    let platform = Platform::new(SERVICES).await.expect("platform");
    let (mut original, gateway) = tokio::try_join!(
        platform.orders_ready("orders-old"),
        platform.gateway_ready("gateway", 5, 15_000),
    )
    .expect("orders and gateway ready");
    let _peers = stocked(&platform, &gateway).await;
    let client = Api::new(customer::client("cust-1"), gateway.url(""));
    let mut ids = Vec::new();
    for index in 0..20 {
        let (status, body, _) = client
            .place_order_with_headers(&format!("restore-{index}"), &order_body(1))
            .await
            .expect("gateway answers");
        assert_eq!(status, 201, "{body}");
        ids.push(body["order_id"].as_str().expect("id").to_owned());
    }
    original.kill9().await.expect("killed");
    // A new instance with an empty disk: everything comes from orders.changelog.
    let fresh = platform.orders("orders-new").await.expect("starts");
    fresh
        .wait_ready(Duration::from_secs(90))
        .await
        .expect("ready");
    for id in &ids {
        wait_for_order(&client, id, Duration::from_secs(60)).await;
    }
    // The state came from the changelog, not from re-handling the commands:
    // the restored offsets let the new instance skip every PlaceOrder.
    let restored = fresh
        .metric_where("d2c_partition_restores_total", "outcome=\"restored\"")
        .await
        .expect("metrics");
    assert_eq!(
        restored,
        f64::from(test_partitions()),
        "every partition restored"
    );
    let replayed_commands = fresh
        .metric_where("d2c_messages_handled_total", "d2c.orders.v1.PlaceOrder")
        .await
        .expect("metrics");
    assert_eq!(replayed_commands, 0.0, "no PlaceOrder handled again");
    // Replaying a placed order must not emit a second event.
    let (status, _, headers) = client
        .place_order_with_headers("restore-0", &order_body(1))
        .await
        .expect("gateway answers");
    assert_eq!(status, 201);
    assert!(headers.contains_key("idempotent-replayed"));
    let events = placed_events(&platform);
    assert_eq!(events.len(), 20);
    assert!(events.values().all(|(ids, _)| ids.len() == 1));
}

/// SIGTERM: the server answers what it holds, then the reply loop stops,
/// then the producer is flushed, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stops_its_reply_loop_after_the_server_on_sigterm() {
    let platform = Platform::new(SERVICES).await.expect("platform");
    let mut gateway = platform
        .gateway_ready("gateway", 5, 2_000)
        .await
        .expect("gateway");
    let status = gateway.terminate().await.expect("gateway stops");
    assert!(status.success(), "clean exit: {status}");
    let log = std::fs::read_to_string(&gateway.log).expect("gateway log");
    let stopped = log
        .find("Reply consumer stopped")
        .unwrap_or_else(|| panic!("the reply loop did not stop:\n{log}"));
    let clean = log
        .find("Stopped cleanly")
        .unwrap_or_else(|| panic!("no clean stop:\n{log}"));
    assert!(stopped < clean, "the loop stops before the end:\n{log}");
}
