//! The one test application: the services a test asks for, started on a
//! fresh topic prefix (with a Postgres database of its own when the read
//! side is in), and [`Api`], a client with one method per HTTP route, for
//! each identity a test acts as (a shopper, a registered customer, an
//! operator, nobody). Processes themselves are [`crate::harness`]'s.

use crate::harness::{Platform, Service};
use crate::postgres::TestDatabase;
use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Value};
use std::future::Future;
use std::time::Duration;

/// Every service on the checkout path (topology `--only`): orders prices
/// each line from the catalog.
pub const CHECKOUT_SERVICES: &[&str] = &["orders", "inventory", "payments", "catalog", "gateway"];

/// Every service (topology `--only`).
pub const ALL_SERVICES: &[&str] = &[
    "orders",
    "inventory",
    "payments",
    "catalog",
    "customers",
    "gateway",
];

/// What every SKU a test stocks costs, in EUR minor units.
pub const TEST_PRICE_MINOR: i64 = 1_000;

/// The customer [`TestApp::shopper`] orders as.
pub const SHOPPER: &str = "shopper-1";

/// Statuses after which an order does not move by itself.
pub const SETTLED: &[&str] = &["confirmed", "rejected", "cancelled"];

/// A (status, JSON body) answer; the body is `null` when there is none.
pub type Answer = (u16, Value);

/// Which services a [`TestApp`] runs and how.
pub struct TestAppOptions {
    /// Also customers, the projector and a database (the read side).
    pub read_side: bool,
    /// Gateway instances, on reply partitions 0, 1, ….
    pub gateways: usize,
    /// The first gateway's reply partition.
    pub reply_partition: i32,
    pub reply_timeout_ms: u64,
    /// For the payments processor only (the provider).
    pub payments_env: Vec<(&'static str, String)>,
    /// For every service.
    pub env: Vec<(&'static str, String)>,
}

impl Default for TestAppOptions {
    fn default() -> Self {
        Self {
            read_side: false,
            gateways: 1,
            reply_partition: 0,
            reply_timeout_ms: 5_000,
            payments_env: Vec::new(),
            env: Vec::new(),
        }
    }
}

pub struct TestApp {
    pub platform: Platform,
    /// Present with the read side.
    database: Option<TestDatabase>,
    /// Processors (and the projector) by service name.
    processors: Vec<(String, Service)>,
    pub gateways: Vec<Service>,
}

impl TestApp {
    /// The checkout path: orders, inventory, payments, catalog, a gateway.
    pub async fn checkout() -> anyhow::Result<Self> {
        Self::start(TestAppOptions::default()).await
    }

    /// Every service, the read side, and `gateways` gateways.
    pub async fn full(gateways: usize, reply_timeout_ms: u64) -> anyhow::Result<Self> {
        Self::start(TestAppOptions {
            read_side: true,
            gateways,
            reply_timeout_ms,
            ..TestAppOptions::default()
        })
        .await
    }

    pub async fn start(options: TestAppOptions) -> anyhow::Result<Self> {
        let topology = if options.read_side {
            ALL_SERVICES
        } else {
            CHECKOUT_SERVICES
        };
        let platform = Platform::new(topology).await?.with_env(&options.env);
        let database = match options.read_side {
            true => Some(TestDatabase::create().await?),
            false => None,
        };
        match Self::start_services(&platform, database.as_ref(), &options).await {
            Ok((processors, gateways)) => Ok(Self {
                platform,
                database,
                processors,
                gateways,
            }),
            Err(error) => {
                platform.print_logs();
                Err(error)
            }
        }
    }

    async fn start_services(
        platform: &Platform,
        database: Option<&TestDatabase>,
        options: &TestAppOptions,
    ) -> anyhow::Result<(Vec<(String, Service)>, Vec<Service>)> {
        let mut names = vec!["orders", "inventory", "payments", "catalog"];
        if database.is_some() {
            names.push("customers");
        }
        let db: Vec<(&str, String)> = database
            .map(|database| vec![("D2C_DATABASE_URL", database.url.clone())])
            .unwrap_or_default();
        let processors = futures::future::try_join_all(names.iter().map(|&name| async move {
            let env: &[(&str, String)] = match name {
                "payments" => &options.payments_env,
                _ => &[],
            };
            let service = platform.processor_ready(name, name, env).await?;
            Ok::<_, anyhow::Error>((name.to_owned(), service))
        }));
        let projector = async {
            if database.is_none() {
                return Ok(None);
            }
            let projector = platform.projector("projector", &db).await?;
            projector.wait_ready(Duration::from_secs(60)).await?;
            Ok(Some(("projector".to_owned(), projector)))
        };
        let gateway_names: Vec<String> = (0..options.gateways)
            .map(|index| match index {
                0 => "gateway".to_owned(),
                _ => format!("gateway-{index}"),
            })
            .collect();
        let gateways =
            futures::future::try_join_all(gateway_names.iter().enumerate().map(|(index, name)| {
                platform.gateway_ready_with(
                    name,
                    options.reply_partition + index as i32,
                    options.reply_timeout_ms,
                    &db,
                )
            }));
        let (mut processors, projector, gateways) =
            tokio::try_join!(processors, projector, gateways)?;
        processors.extend(projector);
        Ok((processors, gateways))
    }

    /// A processor (or the projector) by service name.
    ///
    /// # Panics
    /// When the app does not run it (a test's wiring mistake).
    pub fn service(&self, name: &str) -> &Service {
        self.processors
            .iter()
            .find(|(service, _)| service == name)
            .map(|(_, service)| service)
            .unwrap_or_else(|| panic!("the test app runs no {name}"))
    }

    /// Kills a processor (SIGKILL) and starts it again under its name with
    /// `env`, waiting until it is ready.
    pub async fn kill_and_restart(
        &mut self,
        name: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let index = self
            .processors
            .iter()
            .position(|(service, _)| service == name)
            .with_context(|| format!("the test app runs no {name}"))?;
        self.processors[index].1.kill9().await?;
        self.processors[index].1 = self.platform.processor_ready(name, name, env).await?;
        Ok(())
    }

    /// The read side's database.
    ///
    /// # Panics
    /// When the app runs without the read side.
    pub fn database(&self) -> &TestDatabase {
        self.database
            .as_ref()
            .expect("the test app runs without the read side")
    }

    /// Every processor, for checks over all of them.
    pub fn processors(&self) -> impl Iterator<Item = &Service> {
        self.processors.iter().map(|(_, service)| service)
    }

    /// The first gateway.
    pub fn gateway(&self) -> &Service {
        &self.gateways[0]
    }

    /// A URL on the first gateway.
    pub fn url(&self, path: &str) -> String {
        self.gateway().url(path)
    }

    /// [`SHOPPER`], with a token signed like a login's (no customers
    /// processor needed).
    pub fn shopper(&self) -> Api {
        Api::new(crate::customer::client(SHOPPER), self.url(""))
    }

    /// Any customer id, token signed like a login's.
    pub fn customer_as(&self, customer_id: &str) -> Api {
        Api::new(crate::customer::client(customer_id), self.url(""))
    }

    /// An operator (admin routes).
    pub fn admin(&self) -> Api {
        Api::new(crate::customer::admin_client(), self.url(""))
    }

    /// No credential at all.
    pub fn anonymous(&self) -> Api {
        Api::new(reqwest::Client::new(), self.url(""))
    }

    /// A customer registered and logged in over HTTP (needs the read side).
    pub async fn customer(&self, email: &str) -> anyhow::Result<Api> {
        let password = "a long enough password";
        let anonymous = self.anonymous();
        let (status, body) = anonymous.register(email, password).await?;
        if status != 201 {
            bail!("registering {email}: {status} {body}");
        }
        let (status, body) = anonymous.login(email, password).await?;
        let token = body["token"].as_str().filter(|_| status == 200);
        let Some(token) = token else {
            bail!("logging in {email}: {status} {body}");
        };
        Ok(Api::new(
            crate::customer::bearer_client(token),
            self.url(""),
        ))
    }

    /// `product` in the catalog and `on_hand` units of its `sku`, as an
    /// operator; fails unless both are accepted.
    pub async fn sell(&self, product: &Value, sku: &str, on_hand: i64) -> anyhow::Result<()> {
        let admin = self.admin();
        let (status, body) = admin.create_product(product).await?;
        if status != 201 {
            bail!("creating a product: {status} {body}");
        }
        let (status, body) = admin.set_stock(sku, on_hand).await?;
        if !(200..300).contains(&status) {
            bail!("setting stock of {sku}: {status} {body}");
        }
        Ok(())
    }

    /// A product of its own for `sku` at [`TEST_PRICE_MINOR`], and stock.
    pub async fn stock_sku(&self, sku: &str, on_hand: i64) -> anyhow::Result<Value> {
        self.admin().stock_sku(sku, on_hand).await
    }
}

/// Sends `request`; the answer's status and JSON body (`null` if none).
pub async fn answer(request: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
    let response = request.send().await.context("the gateway answers")?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// One identity on one gateway: a method per route.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(client: reqwest::Client, base: impl Into<String>) -> Self {
        Self {
            client,
            base: base.into(),
        }
    }

    /// The same identity on another gateway.
    pub fn on(&self, gateway: &Service) -> Self {
        Self::new(self.client.clone(), gateway.url(""))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request as this identity, for what no route method covers
    /// (malformed bodies, missing headers).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        answer(request).await
    }

    async fn call_keyed(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: &Value,
    ) -> anyhow::Result<Answer> {
        answer(
            self.request(method, path)
                .header("Idempotency-Key", key)
                .json(body),
        )
        .await
    }

    /// `POST /orders`.
    pub async fn place_order(&self, key: &str, body: &Value) -> anyhow::Result<Answer> {
        self.call_keyed(Method::POST, "/orders", key, body).await
    }

    /// [`Api::place_order`] with the answer's headers (`Location`,
    /// `Idempotent-Replayed`, the trace id).
    pub async fn place_order_with_headers(
        &self,
        key: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value, reqwest::header::HeaderMap)> {
        let response = self
            .request(Method::POST, "/orders")
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .context("the gateway answers")?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        Ok((
            status,
            response.json().await.unwrap_or(Value::Null),
            headers,
        ))
    }

    /// `GET /orders{query}` (`query` empty or starting with `?`).
    pub async fn orders(&self, query: &str) -> anyhow::Result<Answer> {
        self.call(Method::GET, &format!("/orders{query}"), None)
            .await
    }

    /// `GET /orders/{id}`.
    pub async fn order(&self, order_id: &str) -> anyhow::Result<Answer> {
        self.call(Method::GET, &format!("/orders/{order_id}"), None)
            .await
    }

    /// `POST /orders/{id}/cancel`.
    pub async fn cancel(&self, order_id: &str) -> anyhow::Result<Answer> {
        self.call(Method::POST, &format!("/orders/{order_id}/cancel"), None)
            .await
    }

    /// `GET /orders/{id}` until its status is one of `statuses` (404 and 503
    /// are retried: the owner may be starting or moving).
    pub async fn wait_for_status(
        &self,
        order_id: &str,
        statuses: &[&str],
        within: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        let mut last = Value::Null;
        while tokio::time::Instant::now() < deadline {
            let (status, body) = self.order(order_id).await?;
            if status == 200 {
                if statuses.iter().any(|wanted| body["status"] == *wanted) {
                    return Ok(body);
                }
                last = body;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("order {order_id} did not reach {statuses:?} within {within:?}; last seen: {last}")
    }

    /// `POST /customers`.
    pub async fn register(&self, email: &str, password: &str) -> anyhow::Result<Answer> {
        let body = json!({"email": email, "name": "Test Customer", "password": password});
        self.call(Method::POST, "/customers", Some(&body)).await
    }

    /// `POST /customers/login`.
    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<Answer> {
        let body = json!({"email": email, "password": password});
        self.call(Method::POST, "/customers/login", Some(&body))
            .await
    }

    /// `GET /customers/me`.
    pub async fn me(&self) -> anyhow::Result<Answer> {
        self.call(Method::GET, "/customers/me", None).await
    }

    /// `POST /customers/me/addresses`.
    pub async fn add_address(&self, key: &str, address: &Value) -> anyhow::Result<Answer> {
        self.call_keyed(Method::POST, "/customers/me/addresses", key, address)
            .await
    }

    /// `DELETE /customers/me/addresses/{id}`.
    pub async fn remove_address(&self, address_id: &str) -> anyhow::Result<Answer> {
        let path = format!("/customers/me/addresses/{address_id}");
        self.call(Method::DELETE, &path, None).await
    }

    /// `POST /carts`.
    pub async fn create_cart(&self, key: &str, body: &Value) -> anyhow::Result<Answer> {
        self.call_keyed(Method::POST, "/carts", key, body).await
    }

    /// `GET /carts/{id}`.
    pub async fn cart(&self, cart_id: &str) -> anyhow::Result<Answer> {
        self.call(Method::GET, &format!("/carts/{cart_id}"), None)
            .await
    }

    /// `PUT /carts/{id}/lines/{sku}`.
    pub async fn set_cart_line(
        &self,
        cart_id: &str,
        sku: &str,
        line: &Value,
    ) -> anyhow::Result<Answer> {
        let path = format!("/carts/{cart_id}/lines/{sku}");
        self.call(Method::PUT, &path, Some(line)).await
    }

    /// `DELETE /carts/{id}/lines/{sku}`.
    pub async fn remove_cart_line(&self, cart_id: &str, sku: &str) -> anyhow::Result<Answer> {
        let path = format!("/carts/{cart_id}/lines/{sku}");
        self.call(Method::DELETE, &path, None).await
    }

    /// `POST /carts/{id}/checkout`.
    pub async fn checkout_cart(
        &self,
        cart_id: &str,
        key: &str,
        body: &Value,
    ) -> anyhow::Result<Answer> {
        let path = format!("/carts/{cart_id}/checkout");
        self.call_keyed(Method::POST, &path, key, body).await
    }

    /// `GET /inventory/{sku}`.
    pub async fn stock(&self, sku: &str) -> anyhow::Result<Answer> {
        self.call(Method::GET, &format!("/inventory/{sku}"), None)
            .await
    }

    /// `GET /products{query}` (`query` empty or starting with `?`).
    pub async fn products(&self, query: &str) -> anyhow::Result<Answer> {
        self.call(Method::GET, &format!("/products{query}"), None)
            .await
    }

    /// `GET /products/{id}`.
    pub async fn product(&self, product_id: &str) -> anyhow::Result<Answer> {
        self.call(Method::GET, &format!("/products/{product_id}"), None)
            .await
    }

    /// `POST /admin/products`.
    pub async fn create_product(&self, product: &Value) -> anyhow::Result<Answer> {
        self.call(Method::POST, "/admin/products", Some(product))
            .await
    }

    /// `POST /admin/products` without a `product_id`: the key names the
    /// product, so a retry answers the one it created.
    pub async fn create_product_keyed(&self, key: &str, product: &Value) -> anyhow::Result<Answer> {
        self.call_keyed(Method::POST, "/admin/products", key, product)
            .await
    }

    /// `PUT /admin/products/{id}`.
    pub async fn update_product(&self, product_id: &str, update: &Value) -> anyhow::Result<Answer> {
        let path = format!("/admin/products/{product_id}");
        self.call(Method::PUT, &path, Some(update)).await
    }

    /// `POST /admin/products/{id}/archive`.
    pub async fn archive_product(&self, product_id: &str) -> anyhow::Result<Answer> {
        let path = format!("/admin/products/{product_id}/archive");
        self.call(Method::POST, &path, None).await
    }

    /// `PUT /admin/inventory/{sku}`.
    pub async fn set_stock(&self, sku: &str, on_hand: i64) -> anyhow::Result<Answer> {
        let path = format!("/admin/inventory/{sku}");
        self.call(Method::PUT, &path, Some(&json!({ "on_hand": on_hand })))
            .await
    }

    /// `GET /admin/orders/{id}`.
    pub async fn admin_order(&self, order_id: &str) -> anyhow::Result<Answer> {
        self.call(Method::GET, &format!("/admin/orders/{order_id}"), None)
            .await
    }

    /// `POST /admin/orders/{id}/fulfil`.
    pub async fn fulfil(&self, order_id: &str) -> anyhow::Result<Answer> {
        let path = format!("/admin/orders/{order_id}/fulfil");
        self.call(Method::POST, &path, None).await
    }

    /// `POST /admin/orders/{id}/refunds`.
    pub async fn refund(
        &self,
        order_id: &str,
        key: &str,
        amount_minor: i64,
    ) -> anyhow::Result<Answer> {
        let path = format!("/admin/orders/{order_id}/refunds");
        let body = json!({ "amount_minor": amount_minor });
        self.call_keyed(Method::POST, &path, key, &body).await
    }

    /// Makes `sku` sellable: a catalog product of its own (`prod-{sku}`, one
    /// variant at [`TEST_PRICE_MINOR`] EUR; creating it again is an
    /// idempotent retry), then its stock. Fails unless both succeed.
    pub async fn stock_sku(&self, sku: &str, on_hand: i64) -> anyhow::Result<Value> {
        self.create_test_product(sku).await?;
        let (status, body) = self.set_stock(sku, on_hand).await?;
        if !(200..300).contains(&status) {
            bail!("setting stock of {sku} failed: {status} {body}");
        }
        Ok(body)
    }

    /// The one-variant product of [`Api::stock_sku`], without stock.
    pub async fn create_test_product(&self, sku: &str) -> anyhow::Result<Value> {
        let product = json!({
            "product_id": format!("prod-{sku}"),
            "name": format!("Test product {sku}"),
            "category": "tests",
            "variants": [{"sku": sku, "prices": [{"currency": "EUR", "amount_minor": TEST_PRICE_MINOR}]}],
        });
        let (status, body) = self.create_product(&product).await?;
        if !(200..300).contains(&status) {
            bail!("creating the product of {sku} failed: {status} {body}");
        }
        Ok(body)
    }
}

/// An order body with `lines` of (sku, quantity), each showing the test
/// price (the catalog's, for SKUs made sellable by [`Api::stock_sku`]).
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

/// The body of `POST /admin/products` for a one-variant product selling
/// `sku` at `euro_cents`.
pub fn one_variant_product(product_id: &str, sku: &str, euro_cents: i64) -> Value {
    json!({
        "product_id": product_id,
        "name": format!("Product {product_id}"),
        "category": "tests",
        "variants": [{"sku": sku, "prices": [{"currency": "EUR", "amount_minor": euro_cents}]}],
    })
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

/// Polls `probe` every 100 ms until it returns `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `probe` every 100 ms until it holds, for at most `within`.
///
/// # Panics
/// When `within` passes first: a test's condition was not reached.
pub async fn until<F, Fut>(within: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let reached = eventually(within, what, || {
        let holds = probe();
        async move { holds.await.then_some(()) }
    })
    .await;
    if let Err(error) = reached {
        panic!("{error:#}");
    }
}
