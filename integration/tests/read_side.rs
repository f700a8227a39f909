//! The catalog's read side over HTTP: full-text search on Postgres (fed by
//! the projector) and the gateways' local caches, kept coherent through
//! catalog events.

use d2c_integration::app::{eventually, Api, TestApp};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(30);

fn product(id: &str, name: &str, description: &str, category: &str, euro_cents: i64) -> Value {
    json!({
        "product_id": id,
        "name": name,
        "description": description,
        "category": category,
        "variants": [{"sku": format!("{id}-SKU"), "prices": [{"currency": "EUR", "amount_minor": euro_cents}]}],
    })
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["product_id"].as_str().map(str::to_owned))
        .collect()
}

async fn search(api: &Api, query: &str) -> (u16, Value) {
    api.products(&format!("?{query}")).await.expect("answers")
}

/// `POST /admin/products`, which must create it.
async fn create(admin: &Api, product: &Value) -> Value {
    let (status, created) = admin.create_product(product).await.expect("answers");
    assert_eq!(status, 201, "{created}");
    created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_ranks_filters_and_pages_over_http() {
    let shop = TestApp::full(1, 15_000).await.expect("storefront");
    let (admin, anonymous) = (shop.admin(), shop.anonymous());
    let catalog = [
        product("rs-1", "Linen shirt", "Breezy and light", "shirts", 4_900),
        product(
            "rs-2",
            "Cotton shirt",
            "Feels like linen, costs less",
            "shirts",
            2_900,
        ),
        product("rs-3", "Linen trousers", "Wide legs", "trousers", 6_900),
        product("rs-4", "Wool sweater", "Warm", "knitwear", 8_900),
        product("rs-5", "Linen cap", "Shade", "accessories", 1_900),
    ];
    for body in &catalog {
        create(&admin, body).await;
    }
    let (status, archived) = admin.archive_product("rs-5").await.expect("answers");
    assert_eq!(status, 200, "{archived}");

    // Wait for the projector: the cap's archived version is projected (so is
    // everything before it), then four products are searchable.
    let all = eventually(SETTLE, "the read side has the catalog", || async {
        let sql = "SELECT count(*) FROM product_versions WHERE product_id = 'rs-5' AND archived";
        if shop.database().count(sql).await != 1 {
            return None;
        }
        let (status, page) = search(&anonymous, "limit=100").await;
        (status == 200 && page["total"] == 4).then_some(page)
    })
    .await
    .expect("projected");
    assert!(
        !ids(&all).contains(&"rs-5".to_owned()),
        "archived products are not sold"
    );

    let (status, linen) = search(&anonymous, "q=linen").await;
    assert_eq!(status, 200, "{linen}");
    let found = ids(&linen);
    assert_eq!(found.len(), 3, "{linen}");
    assert_eq!(
        found.last().map(String::as_str),
        Some("rs-2"),
        "a description-only match ranks below name matches: {linen}"
    );
    assert!(linen["items"][0]["rank"].as_f64() > linen["items"][2]["rank"].as_f64());

    // As you type: a prefix matches.
    let (_, prefix) = search(&anonymous, "q=lin").await;
    assert_eq!(ids(&prefix).len(), 3, "{prefix}");
    let (_, two_words) = search(&anonymous, "q=linen+tro").await;
    assert_eq!(ids(&two_words), ["rs-3"], "{two_words}");

    let (_, shirts) = search(&anonymous, "q=linen&category=shirts").await;
    assert_eq!(ids(&shirts).len(), 2, "{shirts}");
    let (_, cheap) = search(&anonymous, "currency=EUR&max_price=5000").await;
    let mut cheap_ids = ids(&cheap);
    cheap_ids.sort();
    assert_eq!(cheap_ids, ["rs-1", "rs-2"], "{cheap}");

    // Pages: stable order, no item twice, the total on every page.
    let mut paged = Vec::new();
    for offset in [0, 2] {
        let (_, page) = search(&anonymous, &format!("limit=2&offset={offset}")).await;
        assert_eq!(page["total"], 4);
        paged.extend(ids(&page));
    }
    assert_eq!(paged, ids(&all), "pages follow the full listing's order");

    // Hostile or malformed queries get answers, not errors.
    let (status, _) = search(
        &anonymous,
        "q=%27%29%3B+drop+table+events%3B+--+%26+%7C+%21+%3A*",
    )
    .await;
    assert_eq!(status, 200);
    for (query, field) in [
        ("limit=0", "limit"),
        ("max_price=1", "currency"),
        ("sort=x", "sort"),
    ] {
        let (status, body) = search(&anonymous, query).await;
        assert_eq!(
            (status, body["error"]["field"].clone()),
            (422, json!(field)),
            "{query}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_updated_through_one_gateway_is_served_new_by_the_other_within_a_second() {
    let shop = TestApp::full(2, 15_000).await.expect("storefront");
    let (a, b) = (&shop.gateways[0], &shop.gateways[1]);
    let admin_on_a = shop.admin().on(a);
    let anonymous_on_b = shop.anonymous().on(b);
    let created = create(
        &admin_on_a,
        &product("cc-1", "Field jacket", "Waxed", "jackets", 19_900),
    )
    .await;
    assert_eq!(created["version"], 1);

    // B serves it, then serves it from its cache.
    let read_b = || anonymous_on_b.product("cc-1");
    let (status, first) = read_b().await.expect("answers");
    assert_eq!((status, &first["version"]), (200, &json!(1)));
    let hits = || b.metric_where("d2c_gateway_cache_requests_total", r#"result="hit""#);
    let hits_before = hits().await.expect("metrics");
    let (_, again) = read_b().await.expect("answers");
    assert_eq!(again, first);
    assert!(
        hits().await.expect("metrics") > hits_before,
        "the second read is a cache hit"
    );

    // Update through A; B must serve version 2 within a second.
    let mut update = product(
        "cc-1",
        "Field jacket, rewaxed",
        "Waxed again",
        "jackets",
        21_900,
    );
    update.as_object_mut().expect("object").remove("product_id");
    update["expected_version"] = json!(1);
    let (status, updated) = admin_on_a
        .update_product("cc-1", &update)
        .await
        .expect("answers");
    assert_eq!((status, &updated["version"]), (200, &json!(2)), "{updated}");
    let written = Instant::now();
    let served = eventually(Duration::from_secs(5), "B serves version 2", || async {
        let (_, product) = read_b().await.ok()?;
        (product["version"] == 2).then_some(product)
    })
    .await
    .expect("B serves the update");
    let lag = written.elapsed();
    eprintln!("cache coherence: B served version 2 {lag:?} after A's update answered");
    assert_eq!(served["name"], "Field jacket, rewaxed");
    assert!(lag < Duration::from_secs(1), "B took {lag:?}");
}
