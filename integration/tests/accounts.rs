//! Accounts and carts over HTTP against every real service and the Postgres
//! read side: register, log in, tokens, addresses, whose orders and carts a
//! customer may see, and a cart checked out into an order.

use d2c_gateway::auth::{now_secs, Tokens};
use d2c_integration::customer::TEST_AUTH_SECRET;
use d2c_integration::storefront::{answer, eventually, one_variant_product, Storefront};
use serde_json::json;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_register_log_in_and_see_only_their_own_orders() {
    let shop = Storefront::start(1, 15_000).await.expect("storefront");
    let (status, ann) = shop
        .register("Ann@Example.com", "correct horse battery")
        .await
        .expect("answers");
    assert_eq!(status, 201, "{ann}");
    assert_eq!(ann["email"], "ann@example.com");
    assert!(ann.get("password_hash").is_none(), "{ann}");

    // The same address again, however spelt, is taken.
    let (status, body) = shop
        .register(" ann@example.COM", "another password")
        .await
        .expect("answers");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["field"], "email");
    // The very same registration again (a client retrying after a lost
    // answer) is answered with the customer it made, not 409.
    let (status, again) = shop
        .register("Ann@Example.com", "correct horse battery")
        .await
        .expect("answers");
    assert_eq!(status, 201, "{again}");
    assert_eq!(
        (&again["customer_id"], &again["version"]),
        (&ann["customer_id"], &ann["version"]),
        "the retry changed nothing"
    );
    let (status, body) = shop
        .register("not-an-email", "long enough")
        .await
        .expect("answers");
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("email"))
    );
    let (status, body) = shop
        .register("bob@example.com", "short")
        .await
        .expect("answers");
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("password"))
    );

    // Wrong password and unknown e-mail look the same.
    let (status, wrong) = shop
        .login("ann@example.com", "wrong password!")
        .await
        .expect("answers");
    let (status_unknown, unknown) = shop
        .login("nobody@example.com", "wrong password!")
        .await
        .expect("answers");
    assert_eq!((status, status_unknown), (401, 401), "{wrong} {unknown}");
    assert_eq!(wrong["error"]["message"], unknown["error"]["message"]);
    let (status, login) = shop
        .login("ANN@example.com", "correct horse battery")
        .await
        .expect("answers");
    assert_eq!(status, 200, "{login}");
    let token = login["token"].as_str().expect("token").to_owned();
    assert_eq!(login["customer_id"], ann["customer_id"]);

    let me = |token: Option<String>| {
        let mut request = shop.anonymous.get(shop.url("/customers/me"));
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        answer(request)
    };
    let (status, body) = me(Some(bearer(&token))).await.expect("answers");
    assert_eq!(
        (status, &body["email"]),
        (200, &json!("ann@example.com")),
        "{body}"
    );
    let (status, _) = me(None).await.expect("answers");
    assert_eq!(status, 401);
    let (status, _) = me(Some("Bearer garbage".into())).await.expect("answers");
    assert_eq!(status, 401);
    let customer_id = ann["customer_id"].as_str().expect("id");
    let expired = Tokens::new(TEST_AUTH_SECRET, Duration::from_secs(60))
        .issue(customer_id, now_secs() - 3_600)
        .0;
    let (status, body) = me(Some(bearer(&expired))).await.expect("answers");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["message"], "the token has expired");
    let forged = Tokens::new("not the gateway's secret", Duration::from_secs(60))
        .issue(customer_id, now_secs())
        .0;
    let (status, _) = me(Some(bearer(&forged))).await.expect("answers");
    assert_eq!(status, 401);

    // Addresses: a retried add adds once; a removed address is gone.
    let ann_client = shop.customer_client(&token);
    let address = json!({"name": "Ann", "line1": "Main St 1", "city": "Berlin", "postal_code": "10115", "country": "DE"});
    for _ in 0..2 {
        let (status, body) = answer(
            ann_client
                .post(shop.url("/customers/me/addresses"))
                .header("Idempotency-Key", "home")
                .json(&address),
        )
        .await
        .expect("answers");
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            body["addresses"].as_array().map(Vec::len),
            Some(1),
            "{body}"
        );
    }
    let (_, body) = me(Some(bearer(&token))).await.expect("answers");
    let address_id = body["addresses"][0]["address_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let remove =
        || answer(ann_client.delete(shop.url(&format!("/customers/me/addresses/{address_id}"))));
    let (status, body) = remove().await.expect("answers");
    assert_eq!(
        (status, body["addresses"].clone()),
        (200, json!([])),
        "{body}"
    );
    let (status, _) = remove().await.expect("answers");
    assert_eq!(status, 404);

    // Orders belong to who placed them.
    shop.stock_sku("ACC-1", 10).await.expect("stock");
    let order = json!({"currency": "EUR", "payment_method": "pm_card_visa",
        "lines": [{"sku": "ACC-1", "quantity": 1, "unit_price_minor": 1000}]});
    let (status, placed) = answer(
        ann_client
            .post(shop.url("/orders"))
            .header("Idempotency-Key", "ann-1")
            .json(&order),
    )
    .await
    .expect("answers");
    assert_eq!(status, 201, "{placed}");
    assert_eq!(placed["customer_id"], customer_id);
    let order_id = placed["order_id"].as_str().expect("id").to_owned();
    let (status, _) = answer(shop.anonymous.post(shop.url("/orders")).json(&order))
        .await
        .expect("answers");
    assert_eq!(status, 401, "no token, no order");

    let bob = shop.customer("bob@example.com").await.expect("bob");
    let (status, _) = answer(bob.get(shop.url(&format!("/orders/{order_id}"))))
        .await
        .expect("answers");
    assert_eq!(status, 404, "bob cannot read ann's order");
    let (status, _) = answer(bob.post(shop.url(&format!("/orders/{order_id}/cancel"))))
        .await
        .expect("answers");
    assert_eq!(status, 404, "bob cannot cancel ann's order");
    let (status, read) = answer(ann_client.get(shop.url(&format!("/orders/{order_id}"))))
        .await
        .expect("answers");
    assert_eq!((status, &read["status"]), (200, &json!("confirmed")));

    // The read side lists each customer's own orders.
    let listed = eventually(SETTLE, "ann's order in her list", || async {
        let (status, page) = answer(ann_client.get(shop.url("/orders"))).await.ok()?;
        (status == 200 && page["items"].as_array()?.len() == 1).then_some(page)
    })
    .await
    .expect("listed");
    assert_eq!(listed["items"][0]["order_id"], order_id.as_str());
    let (status, bobs) = answer(bob.get(shop.url("/orders"))).await.expect("answers");
    assert_eq!((status, bobs["items"].clone()), (200, json!([])), "{bobs}");
    let (status, _) = answer(bob.get(shop.url("/orders?limit=500")))
        .await
        .expect("answers");
    assert_eq!(status, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_is_priced_from_the_catalog_and_checks_out_into_an_order() {
    let shop = Storefront::start(1, 15_000).await.expect("storefront");
    shop.create_product(&one_variant_product("cart-p1", "CART-1", 1_500))
        .await
        .expect("product");
    shop.set_stock("CART-1", 10).await.expect("stock");
    let ann = shop.customer("ann@example.com").await.expect("ann");
    let bob = shop.customer("bob@example.com").await.expect("bob");

    // Admin routes want the operators' token: none is 401, a customer's 403.
    let restock = |client: &reqwest::Client| {
        answer(
            client
                .put(shop.url("/admin/inventory/CART-1"))
                .json(&json!({"on_hand": 1})),
        )
    };
    let (status, body) = restock(&shop.anonymous).await.expect("answers");
    assert_eq!(status, 401, "{body}");
    let (status, body) = restock(&ann).await.expect("answers");
    assert_eq!(status, 403, "{body}");
    let (_, stock) = answer(shop.anonymous.get(shop.url("/inventory/CART-1")))
        .await
        .expect("answers");
    assert_eq!(stock["on_hand"], 10, "refused writes changed nothing");

    let (status, cart) = answer(
        ann.post(shop.url("/carts"))
            .header("Idempotency-Key", "cart-1")
            .json(&json!({"currency": "EUR"})),
    )
    .await
    .expect("answers");
    assert_eq!(status, 201, "{cart}");
    let cart_id = cart["cart_id"].as_str().expect("id").to_owned();
    let line = |sku: &str| shop.url(&format!("/carts/{cart_id}/lines/{sku}"));

    // The price comes from the catalog's read side, once the projector has it.
    let priced = eventually(SETTLE, "CART-1 priced from the catalog", || async {
        let (status, cart) = answer(ann.put(line("CART-1")).json(&json!({"quantity": 2})))
            .await
            .ok()?;
        (status == 200).then_some(cart)
    })
    .await
    .expect("line set");
    assert_eq!(priced["lines"][0]["unit_price_minor"], 1_500, "{priced}");
    assert_eq!(priced["lines"][0]["product_id"], "cart-p1", "{priced}");
    assert_eq!(priced["total_minor"], 3_000, "{priced}");

    let (status, body) = answer(ann.put(line("NO-SUCH-SKU")).json(&json!({"quantity": 1})))
        .await
        .expect("answers");
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("sku")),
        "{body}"
    );
    let (status, body) = answer(ann.put(line("CART-1")).json(&json!({"quantity": 1001})))
        .await
        .expect("answers");
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("quantity"))
    );
    let (status, _) = answer(bob.get(shop.url(&format!("/carts/{cart_id}"))))
        .await
        .expect("answers");
    assert_eq!(status, 404, "bob cannot see ann's cart");
    let (status, _) = answer(bob.put(line("CART-1")).json(&json!({"quantity": 1})))
        .await
        .expect("answers");
    assert_eq!(status, 404, "bob cannot change ann's cart");

    // A cart in a currency the product is not sold in.
    let (_, usd) = answer(
        ann.post(shop.url("/carts"))
            .header("Idempotency-Key", "cart-usd")
            .json(&json!({"currency": "USD"})),
    )
    .await
    .expect("answers");
    let usd_line = shop.url(&format!(
        "/carts/{}/lines/CART-1",
        usd["cart_id"].as_str().expect("id")
    ));
    let (status, body) = answer(ann.put(usd_line).json(&json!({"quantity": 1})))
        .await
        .expect("answers");
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("sku")),
        "{body}"
    );

    let checkout = |key: Option<&str>| {
        let mut request = ann
            .post(shop.url(&format!("/carts/{cart_id}/checkout")))
            .json(&json!({"payment_method": "pm_card_visa"}));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        answer(request)
    };
    let (status, _) = checkout(None).await.expect("answers");
    assert_eq!(status, 400, "a checkout needs an Idempotency-Key");
    let (status, order) = checkout(Some("pay-1")).await.expect("answers");
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["status"], "confirmed");
    assert_eq!(order["total_minor"], 3_000);
    assert_eq!(order["lines"][0]["sku"], "CART-1");
    let (status, again) = checkout(Some("pay-1")).await.expect("answers");
    assert_eq!(status, 201, "a retried checkout: {again}");
    assert_eq!(again["order_id"], order["order_id"]);
    let (status, body) = checkout(Some("pay-2")).await.expect("answers");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "illegal_transition");
    let (status, _) = answer(ann.put(line("CART-1")).json(&json!({"quantity": 1})))
        .await
        .expect("answers");
    assert_eq!(status, 409, "a checked-out cart is closed");
    let (_, cart) = answer(ann.get(shop.url(&format!("/carts/{cart_id}"))))
        .await
        .expect("answers");
    assert_eq!(cart["status"], "checked_out");
    assert_eq!(cart["order_id"], order["order_id"]);
    let (_, stock) = answer(shop.anonymous.get(shop.url("/inventory/CART-1")))
        .await
        .expect("answers");
    assert_eq!(
        (stock["sold"].clone(), stock["available"].clone()),
        (json!(2), json!(8))
    );

    // An empty cart cannot be checked out.
    let (_, empty) = answer(
        ann.post(shop.url("/carts"))
            .header("Idempotency-Key", "cart-empty")
            .json(&json!({"currency": "EUR"})),
    )
    .await
    .expect("answers");
    let (status, body) = answer(
        ann.post(shop.url(&format!(
            "/carts/{}/checkout",
            empty["cart_id"].as_str().expect("id")
        )))
        .header("Idempotency-Key", "pay-3")
        .json(&json!({"payment_method": "pm_card_visa"})),
    )
    .await
    .expect("answers");
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("lines")),
        "{body}"
    );

    // Creating routes need an Idempotency-Key: without one a retry would
    // open a second cart or add a second address.
    for (path, body) in [
        ("/carts", json!({"currency": "EUR"})),
        (
            "/customers/me/addresses",
            json!({"name": "Ann", "line1": "Main St 1", "city": "Berlin", "postal_code": "10115", "country": "DE"}),
        ),
    ] {
        let (status, answered) = answer(ann.post(shop.url(path)).json(&body))
            .await
            .expect("answers");
        assert_eq!(
            (status, answered["error"]["field"].clone()),
            (400, json!("Idempotency-Key")),
            "{path}: {answered}"
        );
    }
    let open_cart = |key: String| {
        answer(
            ann.post(shop.url("/carts"))
                .header("Idempotency-Key", key)
                .json(&json!({"currency": "EUR"})),
        )
    };
    // Open so far: cart-usd and cart-empty (cart-1 was checked out). A
    // retried request answers the cart it opened and takes no new place.
    let (_, first) = open_cart("more-0".into()).await.expect("answers");
    let (status, again) = open_cart("more-0".into()).await.expect("answers");
    assert_eq!(
        (status, &again["cart_id"]),
        (201, &first["cart_id"]),
        "{again}"
    );
    for index in 1..18 {
        let (status, body) = open_cart(format!("more-{index}")).await.expect("answers");
        assert_eq!(status, 201, "cart {} of 20: {body}", index + 3);
    }
    let (status, body) = open_cart("more-18".into()).await.expect("answers");
    assert_eq!(
        (
            status,
            body["error"]["code"].clone(),
            body["error"]["field"].clone()
        ),
        (409, json!("limit_reached"), json!("carts")),
        "the 21st open cart is refused: {body}"
    );
}
