//! Prices come from the catalog, never from the client: against every real
//! service, a tampered or stale price never confirms at that price, for
//! `POST /orders` and for a cart checkout, and what the catalog does not
//! sell is refused naming the line.

use d2c_integration::app::{eventually, one_variant_product, Api, TestApp};
use serde_json::{json, Value};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);

fn order(sku: &str, quantity: i64, shown: Option<i64>) -> Value {
    let mut line = json!({"sku": sku, "quantity": quantity});
    if let Some(price) = shown {
        line["unit_price_minor"] = json!(price);
    }
    json!({"currency": "EUR", "payment_method": "pm_card_visa", "lines": [line]})
}

async fn stock_of(api: &Api, sku: &str) -> Value {
    let (_, stock) = api.stock(sku).await.expect("answers");
    stock
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_priced_from_the_catalog_and_tampered_prices_never_confirm() {
    let shop = TestApp::full(1, 15_000).await.expect("storefront");
    // Ordered the moment it exists: the orders view confirms a miss
    // against a caught-up catalog feed instead of refusing it.
    shop.sell(
        &one_variant_product("price-p1", "PRICE-1", 1_500),
        "PRICE-1",
        10,
    )
    .await
    .expect("product and stock");
    let ann = shop.customer("ann@example.com").await.expect("ann");
    let place = |key: &'static str, body: Value| {
        let ann = &ann;
        async move { ann.place_order(key, &body).await }
    };

    let (status, body) = place("free", order("PRICE-1", 2, Some(0)))
        .await
        .expect("answers");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "price_changed", "{body}");
    assert_eq!(
        body["error"]["field"], "lines[0].unit_price_minor",
        "{body}"
    );
    assert_eq!(body["error"]["current_price_minor"], 1_500, "{body}");
    assert_eq!(body["error"]["skus"], json!(["PRICE-1"]), "{body}");
    let stock = stock_of(&ann, "PRICE-1").await;
    assert_eq!(
        (stock["reserved"].clone(), stock["sold"].clone()),
        (json!(0), json!(0)),
        "{stock}"
    );

    // No shown price: the catalog's is charged.
    let (status, placed) = place("priced", order("PRICE-1", 2, None))
        .await
        .expect("answers");
    assert_eq!(status, 201, "{placed}");
    assert_eq!(placed["total_minor"], 3_000, "{placed}");
    assert_eq!(placed["lines"][0]["unit_price_minor"], 1_500, "{placed}");
    // The shown price matching is the same order at the same price.
    let (status, placed) = place("shown", order("PRICE-1", 1, Some(1_500)))
        .await
        .expect("answers");
    assert_eq!(
        (status, placed["total_minor"].clone()),
        (201, json!(1_500)),
        "{placed}"
    );

    let (status, body) = place("unknown", order("NO-SUCH-SKU", 1, None))
        .await
        .expect("answers");
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("lines[0].sku")),
        "{body}"
    );

    let (status, archived) = shop
        .admin()
        .archive_product("price-p1")
        .await
        .expect("answers");
    assert_eq!(status, 200, "{archived}");
    let body = eventually(SETTLE, "an archived SKU is refused", || async {
        let (status, body) = place("archived", order("PRICE-1", 1, None)).await.ok()?;
        (status == 422).then_some(body)
    })
    .await
    .expect("refused");
    assert_eq!(body["error"]["field"], "lines[0].sku", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_whose_price_changed_is_refused_reopened_and_then_charged_the_new_price() {
    let shop = TestApp::full(1, 15_000).await.expect("storefront");
    shop.sell(
        &one_variant_product("price-p2", "PRICE-2", 1_000),
        "PRICE-2",
        10,
    )
    .await
    .expect("product and stock");
    let ann = shop.customer("ann@example.com").await.expect("ann");
    let (status, cart) = ann
        .create_cart("cart-1", &json!({"currency": "EUR"}))
        .await
        .expect("answers");
    assert_eq!(status, 201, "{cart}");
    let cart_id = cart["cart_id"].as_str().expect("id").to_owned();
    eventually(SETTLE, "PRICE-2 in the cart at 10.00", || async {
        let (status, cart) = ann
            .set_cart_line(&cart_id, "PRICE-2", &json!({"quantity": 2}))
            .await
            .ok()?;
        (status == 200 && cart["lines"][0]["unit_price_minor"] == 1_000).then_some(cart)
    })
    .await
    .expect("line set");

    let mut repriced = one_variant_product("price-p2", "PRICE-2", 1_200);
    repriced
        .as_object_mut()
        .expect("object")
        .remove("product_id");
    let (status, updated) = shop
        .admin()
        .update_product("price-p2", &repriced)
        .await
        .expect("answers");
    assert_eq!(status, 200, "{updated}");

    let pay = json!({"payment_method": "pm_card_visa"});
    let checkout = || ann.checkout_cart(&cart_id, "checkout-1", &pay);
    let (status, body) = checkout().await.expect("answers");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "price_changed", "{body}");
    assert_eq!(body["error"]["current_price_minor"], 1_200, "{body}");
    let reopened = eventually(SETTLE, "the cart open again at the new price", || async {
        let (status, cart) = ann.cart(&cart_id).await.ok()?;
        (status == 200 && cart["status"] == "open").then_some(cart)
    })
    .await
    .expect("reopened");
    assert_eq!(
        reopened["lines"][0]["unit_price_minor"], 1_200,
        "{reopened}"
    );
    assert_eq!(reopened["total_minor"], 2_400, "{reopened}");

    let (status, placed) = checkout().await.expect("answers");
    assert_eq!(status, 201, "{placed}");
    assert_eq!(placed["total_minor"], 2_400, "{placed}");
    let stock = stock_of(&ann, "PRICE-2").await;
    assert_eq!(stock["sold"], 2, "{stock}");
}
