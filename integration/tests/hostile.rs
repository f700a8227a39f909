//! Hostile input and overload against the real broker: malformed records on
//! a topic go to the dead-letter topic with the reason and never stop the
//! partition; limits answer 4xx naming the field; a processor that falls
//! behind leaves the gateway answering 202 with a bounded pending map, and
//! nothing is lost.

use d2c_integration::app::{checkout_peers, eventually, Api, CHECKOUT_SERVICES, SETTLED};
use d2c_integration::customer;
use d2c_integration::harness::Platform;
use d2c_integration::kafka::{produce_raw, read_all};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

fn order(sku: &str, quantity: i64) -> Value {
    json!({"currency": "EUR", "payment_method": "pm_card_visa",
        "lines": [{"sku": sku, "quantity": quantity}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_dead_lettered_and_the_partition_goes_on() {
    let platform = Platform::new(CHECKOUT_SERVICES).await.expect("platform");
    let (_orders, gateway) = tokio::try_join!(
        platform.orders_ready("orders"),
        platform.gateway_ready("gateway", 0, 15_000),
    )
    .expect("ready");
    let _peers = checkout_peers(&platform).await.expect("peers");
    Api::new(customer::admin_client(), gateway.url(""))
        .stock_sku("DLQ-1", 10)
        .await
        .expect("stock");

    // Garbage keyed like the order that follows, so it sits in front of it
    // on the same partition.
    let key = "dlq-order";
    let order_id = d2c_proto::ids::order_id("cust-dlq", key).to_string();
    let topic = platform.topic("orders.messages");
    let message_id = uuid::Uuid::new_v4().to_string();
    produce_raw(
        &platform.brokers,
        &topic,
        &order_id,
        b"\xff\xfe not protobuf at all",
        &[
            ("d2c-message-type", "d2c.orders.v1.PlaceOrder"),
            ("d2c-message-id", &message_id),
            ("d2c-sent-at", "1700000000000"),
        ],
    )
    .await
    .expect("garbage produced");
    produce_raw(&platform.brokers, &topic, &order_id, b"no headers", &[])
        .await
        .expect("headerless record produced");

    let client = Api::new(customer::client("cust-dlq"), gateway.url(""));
    let (status, placed) = client
        .place_order(key, &order("DLQ-1", 1))
        .await
        .expect("answers");
    assert!(status == 201 || status == 202, "{status} {placed}");
    let settled = client
        .wait_for_status(&order_id, &["confirmed"], Duration::from_secs(60))
        .await
        .expect("the order behind the garbage is handled");
    assert_eq!(settled["order_id"], order_id.as_str());

    let dead = read_all(
        &platform.brokers,
        &platform.topic("orders.dead-letter"),
        Duration::from_secs(30),
    )
    .expect("dead letters readable");
    assert_eq!(dead.len(), 2, "both bad records, nothing else: {dead:?}");
    let reasons: Vec<String> = dead
        .iter()
        .map(|record| record.header("d2c-dead-letter-reason").expect("a reason"))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("not a valid d2c.orders.v1.PlaceOrder")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("no headers")),
        "{reasons:?}"
    );
    for record in &dead {
        assert_eq!(record.key, order_id.as_bytes());
        assert!(record
            .header("d2c-dead-letter-source")
            .is_some_and(|source| source.starts_with(&topic)));
    }
    assert_eq!(
        dead[0].payload, b"\xff\xfe not protobuf at all",
        "the original bytes are kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_clear_errors() {
    let platform = Platform::new(CHECKOUT_SERVICES).await.expect("platform");
    let gateway = platform
        .gateway_ready("gateway", 1, 2_000)
        .await
        .expect("gateway");
    let client = Api::new(customer::client("cust-limits"), gateway.url(""));
    let lines: Vec<Value> = (0..101)
        .map(|i| json!({"sku": format!("S-{i}"), "quantity": 1, "unit_price_minor": 1}))
        .collect();
    let cases = [
        (
            json!({"currency": "EUR", "payment_method": "pm_card_visa", "lines": lines}),
            "lines",
        ),
        (order("S", 10_001), "lines[0].quantity"),
        (order(&"S".repeat(65), 1), "lines[0].sku"),
        (
            json!({"currency": "EUR", "payment_method": "p".repeat(65), "lines": [{"sku": "S", "quantity": 1, "unit_price_minor": 1}]}),
            "payment_method",
        ),
        (
            json!({"currency": "EUR", "payment_method": "pm_card_visa", "lines": [{"sku": "S", "quantity": 1, "unit_price_minor": 100_000_001}]}),
            "lines[0].unit_price_minor",
        ),
    ];
    for (body, field) in cases {
        let (status, error) = client.place_order("limits", &body).await.expect("answers");
        assert_eq!(status, 422, "{field}: {error}");
        assert_eq!(error["error"]["field"], field, "{error}");
    }
    let (status, error) = client
        .place_order(&"k".repeat(256), &order("S", 1))
        .await
        .expect("answers");
    assert_eq!(
        (status, error["error"]["field"].clone()),
        (400, json!("Idempotency-Key"))
    );
    let long_query = format!("?q={}", "a".repeat(201));
    let (status, _) = client.products(&long_query).await.expect("answers");
    assert_eq!(status, 422);
    for path in ["/orders", "/products", "/nope", "/orders/not-a-uuid"] {
        let response = client
            .request(Method::GET, path)
            .send()
            .await
            .expect("answers");
        assert!(response.headers().contains_key("x-request-id"), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_gateway_answers_202_with_a_bounded_pending_map_and_loses_nothing() {
    let platform = Platform::new(CHECKOUT_SERVICES).await.expect("platform");
    let max_pending = 20;
    let gateway = platform
        .gateway_ready_with(
            "gateway",
            2,
            1_000,
            &[("D2C_MAX_PENDING", max_pending.to_string())],
        )
        .await
        .expect("gateway");
    let _peers = checkout_peers(&platform).await.expect("peers");
    Api::new(customer::admin_client(), gateway.url(""))
        .stock_sku("BP-1", 1_000)
        .await
        .expect("stock");
    let client = Api::new(customer::client("cust-bp"), gateway.url(""));

    // No orders processor: every command waits in orders.messages.
    let total = 120;
    let watcher = {
        let gateway_metrics = gateway.url("/metrics");
        tokio::spawn(async move {
            let mut highest = 0.0f64;
            for _ in 0..40 {
                if let Ok(response) = reqwest::get(&gateway_metrics).await {
                    let text = response.text().await.unwrap_or_default();
                    let pending = text
                        .lines()
                        .find_map(|line| line.strip_prefix("d2c_gateway_pending_requests "))
                        .and_then(|value| value.trim().parse::<f64>().ok())
                        .unwrap_or(0.0);
                    highest = highest.max(pending);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            highest
        })
    };
    let answers = futures::future::join_all((0..total).map(|index| {
        let client = client.clone();
        async move {
            client
                .place_order(&format!("bp-{index}"), &order("BP-1", 1))
                .await
                .expect("answers")
        }
    }))
    .await;
    let highest_pending = watcher.await.expect("watcher");
    let mut ids = BTreeSet::new();
    for (status, body) in &answers {
        assert_eq!(*status, 202, "{body}");
        ids.insert(body["order_id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), total);
    assert!(
        highest_pending <= max_pending as f64,
        "pending peaked at {highest_pending}"
    );
    let full = gateway
        .metric("d2c_gateway_pending_full_total")
        .await
        .expect("metrics");
    assert!(
        full >= (total - max_pending) as f64,
        "answered without waiting: {full}"
    );
    eprintln!("backpressure: {total} × 202, pending peaked at {highest_pending}, {full} answered without parking");

    // The processor catches up: every accepted order is there.
    let _orders = platform.orders_ready("orders-late").await.expect("orders");
    for id in &ids {
        client
            .wait_for_status(id, SETTLED, Duration::from_secs(90))
            .await
            .expect("every accepted order settles");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_beyond_the_per_customer_limit_get_429_with_retry_after() {
    let platform = Platform::new(CHECKOUT_SERVICES).await.expect("platform");
    let limit = [
        ("D2C_CHECKOUT_RATE_PER_MINUTE", "2".to_owned()),
        ("D2C_CHECKOUT_BURST", "2".to_owned()),
    ];
    let gateway = platform
        .gateway_ready_with("gateway", 2, 2_000, &limit)
        .await
        .expect("gateway");
    let greedy = Api::new(customer::client("cust-greedy"), gateway.url(""));
    // Counted before the body is read: an invalid order uses the allowance
    // too, so a script cannot probe for free.
    for attempt in 0..2 {
        let (status, body) = greedy
            .place_order(&format!("g-{attempt}"), &order("S", 0))
            .await
            .expect("answers");
        assert_eq!(status, 422, "{body}");
    }
    let (status, body, headers) = greedy
        .place_order_with_headers("g-2", &order("S", 1))
        .await
        .expect("answers");
    assert_eq!(status, 429, "{body}");
    let retry_after: u64 = headers
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let (status, _) = greedy
        .checkout_cart(
            "00000000-0000-0000-0000-000000000000",
            "g-3",
            &json!({"payment_method": "pm_card_visa"}),
        )
        .await
        .expect("answers");
    assert_eq!(status, 429, "cart checkouts share the limit");
    let (status, body) = Api::new(customer::client("cust-modest"), gateway.url(""))
        .place_order("m-1", &order("S", 0))
        .await
        .expect("answers");
    assert_eq!(status, 422, "another customer is not limited: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_replies_are_slow_sheds_load_with_503_and_sends_nothing() {
    let platform = Platform::new(CHECKOUT_SERVICES).await.expect("platform");
    let admission = [
        ("D2C_ADMISSION_MAX", "8".to_owned()),
        ("D2C_ADMISSION_MIN", "2".to_owned()),
        ("D2C_ADMISSION_SLOW_MS", "100".to_owned()),
    ];
    // A reply timeout long enough for the recovery at the end on a busy
    // machine; the first two rounds wait it out once each.
    let gateway = platform
        .gateway_ready_with("gateway", 2, 5_000, &admission)
        .await
        .expect("gateway");
    let client = Api::new(customer::client("cust-shed"), gateway.url(""));
    let checkouts = |keys: std::ops::Range<usize>| {
        futures::future::join_all(keys.map(|index| {
            let client = client.clone();
            async move {
                let key = format!("shed-{index}");
                let answer = client
                    .place_order_with_headers(&key, &order("SHED-1", 1))
                    .await
                    .expect("answers");
                (key, answer)
            }
        }))
    };

    // No orders processor: the first 8 fill the limit and time out, and
    // each timeout shrinks it by a tenth (8 × 0.9⁸ ≈ 3.4).
    for (key, (status, body, _)) in checkouts(0..8).await {
        assert_eq!(status, 202, "{key}: {body}");
    }
    let limit = gateway
        .metric("d2c_gateway_admission_limit")
        .await
        .expect("metrics");
    assert_eq!(limit, 3.0, "admission limit after 8 slow replies");

    let mut admitted = 0;
    let mut shed = Vec::new();
    for (key, (status, body, headers)) in checkouts(8..18).await {
        match status {
            202 => admitted += 1,
            503 => {
                assert_eq!(body["error"]["code"], "unavailable", "{body}");
                assert!(headers.contains_key("retry-after"), "{headers:?}");
                shed.push(key);
            }
            other => panic!("{key}: {other} {body}"),
        }
    }
    assert_eq!((admitted, shed.len()), (3, 7), "3 let in, the rest shed");
    let counted = gateway
        .metric("d2c_gateway_requests_shed_total")
        .await
        .expect("metrics");
    assert_eq!(counted, 7.0);
    // A shed request was never sent: only the 11 let in are on the topic.
    // One fresh-clone run read 10 here at once (cause not found: the
    // gateway answers only after the command's ack), so the topic is read
    // until it holds 11; shed commands, were any sent, would have gone out
    // with the others.
    let topic = platform.topic("orders.messages");
    let sent = eventually(Duration::from_secs(15), "the 11 commands let in", || {
        let read = read_all(&platform.brokers, &topic, Duration::from_secs(5));
        async move { read.ok().filter(|sent| sent.len() >= 11) }
    })
    .await
    .expect("orders.messages");
    assert_eq!(sent.len(), 11, "commands sent");

    // Once replies come in time again, a shed checkout retried with its
    // key goes through.
    let _orders = platform.orders_ready("orders").await.expect("orders");
    let _peers = checkout_peers(&platform).await.expect("peers");
    Api::new(customer::admin_client(), gateway.url(""))
        .stock_sku("SHED-1", 100)
        .await
        .expect("stock");
    let (status, body) = client
        .place_order(&shed[0], &order("SHED-1", 1))
        .await
        .expect("answers");
    assert!(status == 201 || status == 202, "{status} {body}");
}
