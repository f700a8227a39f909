//! Copies of a handled message are dropped by message id (at-least-once
//! delivery's hole 1): a processor that crashes between producing and
//! committing re-sends its outputs with the same ids at new offsets. Here
//! the copies are produced by hand to inventory and catalog, whose handlers
//! are not idempotent when applied twice: an absolute `SetStock` after an
//! adjustment, an `UpdateProduct` without an expected version.

use d2c_integration::app::Api;
use d2c_integration::customer;
use d2c_integration::harness::Platform;
use d2c_integration::kafka::produce_message;
use d2c_proto::catalog::v1::{Price, UpdateProduct, Variant};
use d2c_proto::inventory::v1::{AdjustStock, SetStock};
use d2c_proto::Envelope;
use prost::{Message, Name};
use std::time::Duration;

async fn send<M: Message + Name>(
    platform: &Platform,
    topic: &str,
    key: &str,
    envelope: &Envelope,
    message: &M,
) {
    produce_message(
        &platform.brokers,
        &platform.topic(topic),
        key,
        envelope,
        message,
    )
    .await
    .expect("produced");
}

fn envelope_of<M: Name>(id: u128) -> Envelope {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_millis() as i64)
        .unwrap_or_default();
    Envelope::new(M::full_name(), uuid::Uuid::from_u128(id), now)
}

/// `probe` until it returns `Some`, at most 15 s.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..75 {
        if let Some(value) = probe().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what} did not happen within 15 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_set_stock_and_update_product_change_nothing() {
    let platform = Platform::new(&["inventory", "catalog", "gateway"])
        .await
        .expect("platform");
    let (inventory, catalog, gateway) = tokio::try_join!(
        platform.processor_ready("inventory", "inventory", &[]),
        platform.processor_ready("catalog", "catalog", &[]),
        platform.gateway_ready("gateway", 0, 10_000),
    )
    .expect("services");
    let admin = Api::new(customer::admin_client(), gateway.url(""));
    let (status, body) = admin.set_stock("DUP-1", 1).await.expect("answers");
    assert_eq!(status, 200, "{body}");

    // SetStock 10, then an adjustment of +5, then a copy of the SetStock.
    let set = SetStock {
        sku: "DUP-1".into(),
        on_hand: 10,
    };
    let set_envelope = envelope_of::<SetStock>(0xD0_01);
    send(
        &platform,
        "inventory.messages",
        "DUP-1",
        &set_envelope,
        &set,
    )
    .await;
    let adjust = AdjustStock {
        sku: "DUP-1".into(),
        delta: 5,
        adjustment_id: "adj-1".into(),
    };
    send(
        &platform,
        "inventory.messages",
        "DUP-1",
        &envelope_of::<AdjustStock>(0xD0_02),
        &adjust,
    )
    .await;
    eventually("the adjustment", async || {
        let (_, stock) = admin.stock("DUP-1").await.ok()?;
        (stock["on_hand"] == 15).then_some(())
    })
    .await;
    send(
        &platform,
        "inventory.messages",
        "DUP-1",
        &set_envelope,
        &set,
    )
    .await;

    // UpdateProduct without an expected version, then its copy.
    admin.create_test_product("DUP-P").await.expect("product");
    let update = UpdateProduct {
        product_id: "prod-DUP-P".into(),
        expected_version: 0,
        name: "Renamed".into(),
        category: "tests".into(),
        variants: vec![Variant {
            sku: "DUP-P".into(),
            prices: vec![Price {
                currency: "EUR".into(),
                amount_minor: 1_200,
            }],
            ..Variant::default()
        }],
        ..UpdateProduct::default()
    };
    let update_envelope = envelope_of::<UpdateProduct>(0xD0_03);
    send(
        &platform,
        "catalog.messages",
        "prod-DUP-P",
        &update_envelope,
        &update,
    )
    .await;
    send(
        &platform,
        "catalog.messages",
        "prod-DUP-P",
        &update_envelope,
        &update,
    )
    .await;

    // Both copies are consumed (the dropped-copies counters say so), and
    // neither changed anything.
    for (service, message_type) in [
        (&inventory, SetStock::full_name()),
        (&catalog, UpdateProduct::full_name()),
    ] {
        eventually("the copy dropped", async || {
            let dropped = service
                .metric_where(
                    "d2c_duplicates_dropped_total",
                    &format!("message_type=\"{message_type}\""),
                )
                .await
                .ok()?;
            (dropped == 1.0).then_some(())
        })
        .await;
    }
    let (_, stock) = admin.stock("DUP-1").await.expect("answers");
    assert_eq!(
        stock["on_hand"], 15,
        "the adjustment survives the copy: {stock}"
    );
    let (_, product) = admin.product("prod-DUP-P").await.expect("answers");
    assert_eq!(product["version"], 2, "one update, one version: {product}");
    assert_eq!(product["name"], "Renamed");
}
