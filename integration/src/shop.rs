//! The whole checkout path started for one test: orders, inventory, payments
//! and a gateway on a fresh topic prefix, plus the HTTP calls a storefront
//! and an operator make.

use crate::harness::{Platform, Service};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::time::Duration;

/// Every service on the checkout path (topology `--only`): orders prices
/// each line from the catalog.
pub const CHECKOUT_SERVICES: &[&str] = &["orders", "inventory", "payments", "catalog", "gateway"];

/// What every SKU a test stocks costs, in EUR minor units.
pub const TEST_PRICE_MINOR: i64 = 1_000;

/// The customer a shop's client orders as.
pub const SHOPPER: &str = "shopper-1";

/// Statuses after which an order does not move by itself.
pub const SETTLED: &[&str] = &["confirmed", "rejected", "cancelled"];

pub struct Shop {
    pub platform: Platform,
    pub orders: Service,
    pub inventory: Service,
    pub payments: Service,
    pub catalog: Service,
    pub gateway: Service,
    pub client: reqwest::Client,
    /// An operator's client (admin routes).
    pub admin: reqwest::Client,
}

/// How to start a shop. `payments_env` configures the payment provider.
pub struct ShopOptions {
    pub reply_partition: i32,
    pub reply_timeout_ms: u64,
    pub payments_env: Vec<(&'static str, String)>,
}

impl Default for ShopOptions {
    fn default() -> Self {
        Self {
            reply_partition: 0,
            reply_timeout_ms: 5_000,
            payments_env: Vec::new(),
        }
    }
}

impl Shop {
    pub async fn start(options: ShopOptions) -> anyhow::Result<Self> {
        Self::start_with_env(options, &[]).await
    }

    /// [`Shop::start`] with `env` set for every service.
    pub async fn start_with_env(
        options: ShopOptions,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let platform = Platform::new(CHECKOUT_SERVICES).await?.with_env(env);
        let started = tokio::try_join!(
            platform.processor_ready("orders", "orders", &[]),
            platform.processor_ready("inventory", "inventory", &[]),
            platform.processor_ready("payments", "payments", &options.payments_env),
            platform.processor_ready("catalog", "catalog", &[]),
            platform.gateway_ready("gateway", options.reply_partition, options.reply_timeout_ms),
        );
        let (orders, inventory, payments, catalog, gateway) = match started {
            Ok(services) => services,
            Err(error) => {
                platform.print_logs();
                return Err(error);
            }
        };
        Ok(Self {
            platform,
            orders,
            inventory,
            payments,
            catalog,
            gateway,
            client: crate::customer::client(SHOPPER),
            admin: crate::customer::admin_client(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        self.gateway.url(path)
    }

    /// [`stock_sku`] on this shop.
    pub async fn stock_sku(&self, sku: &str, on_hand: i64) -> anyhow::Result<Value> {
        stock_sku(&self.admin, &self.url(""), sku, on_hand).await
    }

    /// `GET /inventory/{sku}`: (status, body).
    pub async fn stock(&self, sku: &str) -> anyhow::Result<(u16, Value)> {
        let response = self
            .client
            .get(self.url(&format!("/inventory/{sku}")))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// `POST /orders`: (status, body).
    pub async fn place(&self, key: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        place_order(&self.client, &self.url(""), key, body).await
    }

    /// `POST /orders/{id}/cancel`: (status, body).
    pub async fn cancel(&self, order_id: &str) -> anyhow::Result<(u16, Value)> {
        let response = self
            .client
            .post(self.url(&format!("/orders/{order_id}/cancel")))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// The order once its status is one of `statuses`.
    pub async fn wait_for_status(
        &self,
        order_id: &str,
        statuses: &[&str],
        within: Duration,
    ) -> anyhow::Result<Value> {
        wait_for_status(&self.client, &self.url(""), order_id, statuses, within).await
    }
}

/// The services an order needs besides orders itself (sandbox payments).
pub async fn checkout_peers(platform: &Platform) -> anyhow::Result<[Service; 3]> {
    let (inventory, payments, catalog) = tokio::try_join!(
        platform.processor_ready("inventory", "inventory", &[]),
        platform.processor_ready("payments", "payments", &[]),
        platform.processor_ready("catalog", "catalog", &[]),
    )?;
    Ok([inventory, payments, catalog])
}

/// Makes `sku` sellable: a catalog product of its own (`prod-{sku}`, one
/// variant at [`TEST_PRICE_MINOR`] EUR; creating it again is an idempotent
/// retry), then `PUT /admin/inventory/{sku}` with `on_hand`.
pub async fn stock_sku(
    client: &reqwest::Client,
    base: &str,
    sku: &str,
    on_hand: i64,
) -> anyhow::Result<Value> {
    create_test_product(client, base, sku).await?;
    set_stock(client, base, sku, on_hand).await
}

/// `POST /admin/products` for a one-variant product selling `sku`.
pub async fn create_test_product(
    client: &reqwest::Client,
    base: &str,
    sku: &str,
) -> anyhow::Result<Value> {
    let response = client
        .post(format!("{base}/admin/products"))
        .json(&json!({
            "product_id": format!("prod-{sku}"),
            "name": format!("Test product {sku}"),
            "category": "tests",
            "variants": [{"sku": sku, "prices": [{"currency": "EUR", "amount_minor": TEST_PRICE_MINOR}]}],
        }))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("creating the product of {sku} failed: {status} {body}");
    }
    Ok(body)
}

/// `PUT /admin/inventory/{sku}` (stock only: see [`stock_sku`]).
pub async fn set_stock(
    client: &reqwest::Client,
    base: &str,
    sku: &str,
    on_hand: i64,
) -> anyhow::Result<Value> {
    let response = client
        .put(format!("{base}/admin/inventory/{sku}"))
        .json(&json!({ "on_hand": on_hand }))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("setting stock of {sku} failed: {status} {body}");
    }
    Ok(body)
}

/// An order body with `lines` of (sku, quantity), each showing the test
/// price (the catalog's, for SKUs made sellable by [`stock_sku`]).
pub fn order_body(lines: &[(&str, i64)], payment_method: &str) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity, "unit_price_minor": TEST_PRICE_MINOR}))
        .collect();
    json!({
        "currency": "EUR",
        "payment_method": payment_method,
        "lines": lines,
    })
}

pub async fn place_order(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let response = client
        .post(format!("{base}/orders"))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// GET /orders/{id} until its status is one of `statuses` (404 and 503 are
/// retried: the owner may be starting or moving).
pub async fn wait_for_status(
    client: &reqwest::Client,
    base: &str,
    order_id: &str,
    statuses: &[&str],
    within: Duration,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        let response = client
            .get(format!("{base}/orders/{order_id}"))
            .send()
            .await
            .context("GET order")?;
        if response.status().is_success() {
            last = response.json().await?;
            if statuses.iter().any(|status| last["status"] == *status) {
                return Ok(last);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("order {order_id} did not reach {statuses:?} within {within:?}; last seen: {last}")
}
