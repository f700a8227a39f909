//! Every service of the platform started for one test, with the Postgres
//! read side (a database of its own) and one or more gateways: what a
//! storefront talks to. Accounts are real here: customers register and log
//! in over HTTP.

use crate::harness::{Platform, Service};
use crate::postgres::TestDatabase;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::future::Future;
use std::time::Duration;

/// Every service (topology `--only`).
pub const ALL_SERVICES: &[&str] = &[
    "orders",
    "inventory",
    "payments",
    "catalog",
    "customers",
    "gateway",
];

const PROCESSORS: &[&str] = &["orders", "inventory", "payments", "catalog", "customers"];

pub struct Storefront {
    pub platform: Platform,
    pub database: TestDatabase,
    pub processors: Vec<Service>,
    pub projector: Service,
    pub gateways: Vec<Service>,
    /// No credential at all.
    pub anonymous: reqwest::Client,
    /// An operator's client (admin routes).
    pub admin: reqwest::Client,
}

/// A (status, JSON body) answer; the body is `null` when there is none.
pub type Answer = (u16, Value);

pub async fn answer(request: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
    let response = request.send().await.context("the gateway answers")?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

impl Storefront {
    /// The platform with `gateways` gateway instances (reply partitions 0,
    /// 1, …) whose reply timeout is `reply_timeout_ms`.
    pub async fn start(gateways: usize, reply_timeout_ms: u64) -> anyhow::Result<Self> {
        let platform = Platform::new(ALL_SERVICES).await?;
        let database = TestDatabase::create().await?;
        let started = Self::start_services(&platform, &database, gateways, reply_timeout_ms).await;
        let (processors, projector, gateways) = match started {
            Ok(services) => services,
            Err(error) => {
                platform.print_logs();
                return Err(error);
            }
        };
        Ok(Self {
            platform,
            database,
            processors,
            projector,
            gateways,
            anonymous: reqwest::Client::new(),
            admin: crate::customer::admin_client(),
        })
    }

    async fn start_services(
        platform: &Platform,
        database: &TestDatabase,
        gateways: usize,
        reply_timeout_ms: u64,
    ) -> anyhow::Result<(Vec<Service>, Service, Vec<Service>)> {
        let db = [("D2C_DATABASE_URL", database.url.clone())];
        let processors = futures::future::try_join_all(
            PROCESSORS
                .iter()
                .map(|service| platform.processor_ready(service, service, &[])),
        );
        let projector = async {
            let projector = platform.projector("projector", &db).await?;
            projector.wait_ready(Duration::from_secs(60)).await?;
            Ok(projector)
        };
        let names: Vec<String> = (0..gateways)
            .map(|index| format!("gateway-{index}"))
            .collect();
        let gateways =
            futures::future::try_join_all(names.iter().enumerate().map(|(index, name)| {
                platform.gateway_ready_with(name, index as i32, reply_timeout_ms, &db)
            }));
        tokio::try_join!(processors, projector, gateways)
    }

    /// A URL on the first gateway.
    pub fn url(&self, path: &str) -> String {
        self.gateways[0].url(path)
    }

    pub async fn register(&self, email: &str, password: &str) -> anyhow::Result<Answer> {
        answer(
            self.anonymous
                .post(self.url("/customers"))
                .json(&json!({"email": email, "name": "Test Customer", "password": password})),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<Answer> {
        answer(
            self.anonymous
                .post(self.url("/customers/login"))
                .json(&json!({"email": email, "password": password})),
        )
        .await
    }

    /// A registered, logged-in customer: a client that sends its token.
    pub async fn customer(&self, email: &str) -> anyhow::Result<reqwest::Client> {
        let password = "a long enough password";
        let (status, body) = self.register(email, password).await?;
        if status != 201 {
            bail!("registering {email}: {status} {body}");
        }
        let (status, body) = self.login(email, password).await?;
        let token = body["token"].as_str().filter(|_| status == 200);
        let Some(token) = token else {
            bail!("logging in {email}: {status} {body}");
        };
        Ok(self.customer_client(token))
    }

    /// A client that sends `token` on every request.
    pub fn customer_client(&self, token: &str) -> reqwest::Client {
        crate::customer::bearer_client(token)
    }

    /// `POST /admin/products` with `body` (its `product_id` set).
    pub async fn create_product(&self, body: &Value) -> anyhow::Result<Value> {
        let (status, product) =
            answer(self.admin.post(self.url("/admin/products")).json(body)).await?;
        if status != 201 {
            bail!("creating a product: {status} {product}");
        }
        Ok(product)
    }

    /// Stock only: the SKU's product is the test's own.
    pub async fn set_stock(&self, sku: &str, on_hand: i64) -> anyhow::Result<()> {
        crate::shop::set_stock(&self.admin, &self.url(""), sku, on_hand).await?;
        Ok(())
    }

    /// [`crate::shop::stock_sku`]: a product of its own at the test price,
    /// and stock.
    pub async fn stock_sku(&self, sku: &str, on_hand: i64) -> anyhow::Result<()> {
        crate::shop::stock_sku(&self.admin, &self.url(""), sku, on_hand).await?;
        Ok(())
    }
}

/// The body of `POST /admin/products` for a one-variant product selling
/// `sku` at `euro_cents`.
pub fn one_variant_product(product_id: &str, sku: &str, euro_cents: i64) -> Value {
    serde_json::json!({
        "product_id": product_id,
        "name": format!("Product {product_id}"),
        "category": "tests",
        "variants": [{"sku": sku, "prices": [{"currency": "EUR", "amount_minor": euro_cents}]}],
    })
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
