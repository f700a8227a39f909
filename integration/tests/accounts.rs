//! Accounts and carts over HTTP against every real service and the Postgres
//! read side: register, log in, tokens, addresses, whose orders and carts a
//! customer may see, and a cart checked out into an order.

use d2c_gateway::auth::{now_secs, Tokens};
use d2c_integration::app::{answer, eventually, one_variant_product, Api, TestApp};
use d2c_integration::customer::TEST_AUTH_SECRET;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_register_log_in_and_see_only_their_own_orders() {
    let shop = TestApp::full(1, 15_000).await.expect("storefront");
    let anonymous = shop.anonymous();
    let (status, ann) = anonymous
        .register("Ann@Example.com", "correct horse battery")
        .await
        .expect("answers");
    assert_eq!(status, 201, "{ann}");
    assert_eq!(ann["email"], "ann@example.com");
    assert!(ann.get("password_hash").is_none(), "{ann}");

    // The same address again, however spelt, is taken.
    let (status, body) = anonymous
        .register(" ann@example.COM", "another password")
        .await
        .expect("answers");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["field"], "email");
    // The very same registration again (a client retrying after a lost
    // answer) is answered with the customer it made, not 409.
    let (status, again) = anonymous
        .register("Ann@Example.com", "correct horse battery")
        .await
        .expect("answers");
    assert_eq!(status, 201, "{again}");
    assert_eq!(
        (&again["customer_id"], &again["version"]),
        (&ann["customer_id"], &ann["version"]),
        "the retry changed nothing"
    );
    let (status, body) = anonymous
        .register("not-an-email", "long enough")
        .await
        .expect("answers");
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("email"))
    );
    let (status, body) = anonymous
        .register("bob@example.com", "short")
        .await
        .expect("answers");
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("password"))
    );

    // Wrong password and unknown e-mail look the same.
    let (status, wrong) = anonymous
        .login("ann@example.com", "wrong password!")
        .await
        .expect("answers");
    let (status_unknown, unknown) = anonymous
        .login("nobody@example.com", "wrong password!")
        .await
        .expect("answers");
    assert_eq!((status, status_unknown), (401, 401), "{wrong} {unknown}");
    assert_eq!(wrong["error"]["message"], unknown["error"]["message"]);
    let (status, login) = anonymous
        .login("ANN@example.com", "correct horse battery")
        .await
        .expect("answers");
    assert_eq!(status, 200, "{login}");
    let token = login["token"].as_str().expect("token").to_owned();
    assert_eq!(login["customer_id"], ann["customer_id"]);

    let me = |token: Option<String>| {
        let mut request = anonymous.request(Method::GET, "/customers/me");
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
    let ann_client = Api::new(
        d2c_integration::customer::bearer_client(&token),
        shop.url(""),
    );
    let address = json!({"name": "Ann", "line1": "Main St 1", "city": "Berlin", "postal_code": "10115", "country": "DE"});
    for _ in 0..2 {
        let (status, body) = ann_client
            .add_address("home", &address)
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
    let remove = || ann_client.remove_address(&address_id);
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
    let (status, placed) = ann_client
        .place_order("ann-1", &order)
        .await
        .expect("answers");
    assert_eq!(status, 201, "{placed}");
    assert_eq!(placed["customer_id"], customer_id);
    let order_id = placed["order_id"].as_str().expect("id").to_owned();
    let (status, _) = anonymous
        .place_order("anonymous-1", &order)
        .await
        .expect("answers");
    assert_eq!(status, 401, "no token, no order");

    let bob = shop.customer("bob@example.com").await.expect("bob");
    let (status, _) = bob.order(&order_id).await.expect("answers");
    assert_eq!(status, 404, "bob cannot read ann's order");
    let (status, _) = bob.cancel(&order_id).await.expect("answers");
    assert_eq!(status, 404, "bob cannot cancel ann's order");
    let (status, read) = ann_client.order(&order_id).await.expect("answers");
    assert_eq!((status, &read["status"]), (200, &json!("confirmed")));

    // The read side lists each customer's own orders.
    let listed = eventually(SETTLE, "ann's order in her list", || async {
        let (status, page) = ann_client.orders("").await.ok()?;
        (status == 200 && page["items"].as_array()?.len() == 1).then_some(page)
    })
    .await
    .expect("listed");
    assert_eq!(listed["items"][0]["order_id"], order_id.as_str());
    let (status, bobs) = bob.orders("").await.expect("answers");
    assert_eq!((status, bobs["items"].clone()), (200, json!([])), "{bobs}");
    let (status, _) = bob.orders("?limit=500").await.expect("answers");
    assert_eq!(status, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_is_priced_from_the_catalog_and_checks_out_into_an_order() {
    let shop = TestApp::full(1, 15_000).await.expect("storefront");
    let anonymous = shop.anonymous();
    shop.sell(
        &one_variant_product("cart-p1", "CART-1", 1_500),
        "CART-1",
        10,
    )
    .await
    .expect("product and stock");
    let ann = shop.customer("ann@example.com").await.expect("ann");
    let bob = shop.customer("bob@example.com").await.expect("bob");

    // Admin routes want the operators' token: none is 401, a customer's 403.
    let (status, body) = anonymous.set_stock("CART-1", 1).await.expect("answers");
    assert_eq!(status, 401, "{body}");
    let (status, body) = ann.set_stock("CART-1", 1).await.expect("answers");
    assert_eq!(status, 403, "{body}");
    let (_, stock) = anonymous.stock("CART-1").await.expect("answers");
    assert_eq!(stock["on_hand"], 10, "refused writes changed nothing");

    let (status, cart) = ann
        .create_cart("cart-1", &json!({"currency": "EUR"}))
        .await
        .expect("answers");
    assert_eq!(status, 201, "{cart}");
    let cart_id = cart["cart_id"].as_str().expect("id").to_owned();
    let set_line = |sku: &'static str, quantity: i64| {
        let (ann, cart_id) = (&ann, &cart_id);
        async move {
            ann.set_cart_line(cart_id, sku, &json!({ "quantity": quantity }))
                .await
        }
    };

    // The price comes from the catalog's read side, once the projector has it.
    let priced = eventually(SETTLE, "CART-1 priced from the catalog", || async {
        let (status, cart) = set_line("CART-1", 2).await.ok()?;
        (status == 200).then_some(cart)
    })
    .await
    .expect("line set");
    assert_eq!(priced["lines"][0]["unit_price_minor"], 1_500, "{priced}");
    assert_eq!(priced["lines"][0]["product_id"], "cart-p1", "{priced}");
    assert_eq!(priced["total_minor"], 3_000, "{priced}");

    let (status, body) = set_line("NO-SUCH-SKU", 1).await.expect("answers");
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("sku")),
        "{body}"
    );
    let (status, body) = set_line("CART-1", 1001).await.expect("answers");
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("quantity"))
    );
    let (status, _) = bob.cart(&cart_id).await.expect("answers");
    assert_eq!(status, 404, "bob cannot see ann's cart");
    let (status, _) = bob
        .set_cart_line(&cart_id, "CART-1", &json!({"quantity": 1}))
        .await
        .expect("answers");
    assert_eq!(status, 404, "bob cannot change ann's cart");

    // A cart in a currency the product is not sold in.
    let (_, usd) = ann
        .create_cart("cart-usd", &json!({"currency": "USD"}))
        .await
        .expect("answers");
    let usd_id = usd["cart_id"].as_str().expect("id");
    let (status, body) = ann
        .set_cart_line(usd_id, "CART-1", &json!({"quantity": 1}))
        .await
        .expect("answers");
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("sku")),
        "{body}"
    );

    let pay = json!({"payment_method": "pm_card_visa"});
    let checkout = |key: Option<&'static str>| match key {
        Some(key) => futures::future::Either::Left(ann.checkout_cart(&cart_id, key, &pay)),
        // Without a key: the raw request.
        None => futures::future::Either::Right(answer(
            ann.request(Method::POST, &format!("/carts/{cart_id}/checkout"))
                .json(&pay),
        )),
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
    let (status, _) = set_line("CART-1", 1).await.expect("answers");
    assert_eq!(status, 409, "a checked-out cart is closed");
    let (_, cart) = ann.cart(&cart_id).await.expect("answers");
    assert_eq!(cart["status"], "checked_out");
    assert_eq!(cart["order_id"], order["order_id"]);
    let (_, stock) = anonymous.stock("CART-1").await.expect("answers");
    assert_eq!(
        (stock["sold"].clone(), stock["available"].clone()),
        (json!(2), json!(8))
    );

    // An empty cart cannot be checked out.
    let (_, empty) = ann
        .create_cart("cart-empty", &json!({"currency": "EUR"}))
        .await
        .expect("answers");
    let empty_id = empty["cart_id"].as_str().expect("id");
    let (status, body) = ann
        .checkout_cart(empty_id, "pay-3", &pay)
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
        let (status, answered) = answer(ann.request(Method::POST, path).json(&body))
            .await
            .expect("answers");
        assert_eq!(
            (status, answered["error"]["field"].clone()),
            (400, json!("Idempotency-Key")),
            "{path}: {answered}"
        );
    }
    let eur = json!({"currency": "EUR"});
    let open_cart = |key: String| {
        let (ann, eur) = (&ann, &eur);
        async move { ann.create_cart(&key, eur).await }
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
