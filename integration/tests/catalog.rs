//! The catalog against a real broker: the catalog processor and a gateway,
//! driven over HTTP the way an operator and a storefront drive them.

use d2c_integration::app::Api;
use d2c_integration::harness::Platform;
use d2c_integration::kafka::read_all;
use d2c_proto::catalog::v1::ProductCreated;
use prost::{Message, Name};
use serde_json::{json, Value};
use std::time::Duration;

struct Catalog {
    platform: Platform,
    admin: Api,
    _services: Vec<d2c_integration::harness::Service>,
}

impl Catalog {
    async fn start() -> Self {
        let platform = Platform::new(&["catalog", "gateway"])
            .await
            .expect("platform");
        let started = tokio::try_join!(
            platform.processor_ready("catalog", "catalog", &[]),
            platform.gateway_ready("gateway", 0, 10_000),
        );
        let (catalog, gateway) = match started {
            Ok(services) => services,
            Err(error) => {
                platform.print_logs();
                panic!("services did not start: {error:#}");
            }
        };
        Self {
            admin: Api::new(d2c_integration::customer::admin_client(), gateway.url("")),
            platform,
            _services: vec![catalog, gateway],
        }
    }
}

fn shirt(name: &str) -> Value {
    json!({
        "name": name,
        "description": "A shirt made of linen",
        "category": "shirts",
        "variants": [
            {"sku": "SHIRT-S", "name": "S", "prices": [{"currency": "EUR", "amount_minor": 4900}]},
            {"sku": "SHIRT-M", "name": "M", "prices": [
                {"currency": "EUR", "amount_minor": 4900},
                {"currency": "USD", "amount_minor": 5500}
            ]}
        ]
    })
}

fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_lifecycle_over_http() {
    let catalog = Catalog::start().await;

    let (status, created) = catalog
        .admin
        .create_product_keyed("shirt-1", &shirt("Linen shirt"))
        .await
        .expect("answers");
    assert_eq!(status, 201, "{created}");
    let id = created["product_id"].as_str().expect("id").to_owned();
    assert_eq!(created["version"], 1, "{created}");
    assert_eq!(created["archived"], false, "{created}");
    assert_eq!(
        created["variants"][1]["prices"][1],
        json!({"currency": "USD", "amount_minor": 5500})
    );

    // A retried create (same key, same body) is the same product.
    let (status, retried) = catalog
        .admin
        .create_product_keyed("shirt-1", &shirt("Linen shirt"))
        .await
        .expect("answers");
    assert_eq!((status, &retried), (201, &created));
    // Same key, other content: the id is taken.
    let (status, body) = catalog
        .admin
        .create_product_keyed("shirt-1", &shirt("Other shirt"))
        .await
        .expect("answers");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict", "{body}");

    let (status, got) = catalog.admin.product(&id).await.expect("answers");
    assert_eq!((status, &got), (200, &created));

    let (status, body) = catalog
        .admin
        .update_product(&id, &with(shirt("Stale"), "expected_version", json!(7)))
        .await
        .expect("answers");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["field"], "expected_version", "{body}");

    let (status, updated) = catalog
        .admin
        .update_product(
            &id,
            &with(shirt("Washed linen shirt"), "expected_version", json!(1)),
        )
        .await
        .expect("answers");
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["version"], 2, "{updated}");
    assert_eq!(updated["name"], "Washed linen shirt", "{updated}");

    let (status, archived) = catalog.admin.archive_product(&id).await.expect("answers");
    assert_eq!(status, 200, "{archived}");
    assert_eq!(archived["archived"], true, "{archived}");
    assert_eq!(archived["version"], 3, "{archived}");
    let (status, again) = catalog.admin.archive_product(&id).await.expect("answers");
    assert_eq!((status, &again), (200, &archived));

    let (status, body) = catalog
        .admin
        .update_product(&id, &with(shirt("Revived"), "expected_version", json!(3)))
        .await
        .expect("answers");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "illegal_transition", "{body}");
    let (status, got) = catalog.admin.product(&id).await.expect("answers");
    assert_eq!((status, &got), (200, &archived));

    let (status, body) = catalog
        .admin
        .product("NO-SUCH-PRODUCT")
        .await
        .expect("answers");
    assert_eq!(status, 404, "{body}");
    let (status, body) = catalog
        .admin
        .update_product("NO-SUCH-PRODUCT", &shirt("Ghost"))
        .await
        .expect("answers");
    assert_eq!(status, 404, "{body}");

    // Invalid content is refused at the edge, naming the field.
    let mut bad = shirt("Bad price");
    bad["variants"][1]["prices"][0]["currency"] = json!("euro");
    let (status, body) = catalog
        .admin
        .create_product_keyed("bad-1", &bad)
        .await
        .expect("answers");
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["field"], "variants[1].prices[0].currency",
        "{body}"
    );
    let mut bad = shirt("Bad amount");
    bad["variants"][0]["prices"][0]["amount_minor"] = json!(-5);
    let (status, body) = catalog
        .admin
        .create_product_keyed("bad-2", &bad)
        .await
        .expect("answers");
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["field"], "variants[0].prices[0].amount_minor",
        "{body}"
    );
    let (status, body) = catalog
        .admin
        .product(&d2c_proto::ids::product_id("bad-1").to_string())
        .await
        .expect("answers");
    assert_eq!(status, 404, "an invalid create makes nothing: {body}");

    // The creation was announced once, keyed by the product id.
    let topic = catalog.platform.topic("catalog.events");
    let brokers = catalog.platform.brokers.clone();
    let records =
        tokio::task::spawn_blocking(move || read_all(&brokers, &topic, Duration::from_secs(30)))
            .await
            .expect("reader")
            .expect("catalog.events readable");
    let created_events: Vec<ProductCreated> = records
        .iter()
        .filter(|record| {
            record
                .envelope
                .as_ref()
                .is_some_and(|envelope| envelope.message_type == ProductCreated::full_name())
        })
        .map(|record| {
            assert_eq!(record.key, id.as_bytes());
            ProductCreated::decode(record.payload.as_slice()).expect("event decodes")
        })
        .collect();
    assert_eq!(created_events.len(), 1, "{records:?}");
    let product = created_events[0].product.as_ref().expect("product");
    assert_eq!(product.product_id, id);
    assert_eq!(product.version, 1);
    assert_eq!(product.name, "Linen shirt");
    assert_eq!(records.len(), 3, "created, updated, archived: {records:?}");
}
