//! What storefronts do to the gateway, as load: the phases `loadgen` and
//! `bench` run, each a function of the arrival's index (a seeded choice of
//! customer, SKUs, query), so two runs send the same requests.
//!
//! Orders buy the first SKU of demo products `0..skus` at the catalog's
//! price (the seeded demo catalog must be there).
//!
//! A checkout answered `202` (the gateway stopped waiting) is not finished:
//! its `Location` (`GET /orders/{id}`) is polled until the order is
//! confirmed, and the checkout is timed to that moment.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use futures::stream::{self, StreamExt, TryStreamExt};
use reqwest::header::LOCATION;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::demo;
use crate::load::{outcome_of, transport_error, OperationOutcome};
use crate::rng::SplitMix64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// `POST /orders`: stock reserved, payment authorized, order confirmed
    /// (after a `202`, when its `Location` shows it confirmed).
    Checkout,
    /// Open a cart, set its lines, check it out: one operation, timed whole
    /// (to the confirmation, as a checkout).
    CartCheckout,
    /// `PUT /carts/{id}/lines/{sku}` on carts opened beforehand.
    CartLine,
    /// `GET /products?q=…`: one- and two-word (prefix) queries.
    Search,
    /// `GET /products/{id}`.
    Product,
    /// `GET /orders`: a customer's newest orders from the read side.
    OrderList,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Checkout,
        Phase::CartCheckout,
        Phase::CartLine,
        Phase::Search,
        Phase::Product,
        Phase::OrderList,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Checkout => "checkout",
            Phase::CartCheckout => "cart-checkout",
            Phase::CartLine => "cart-line",
            Phase::Search => "search",
            Phase::Product => "product",
            Phase::OrderList => "order-list",
        }
    }

    pub fn parse(name: &str) -> Result<Phase> {
        // `orders` is loadgen's older name for checkouts.
        if name == "orders" {
            return Ok(Phase::Checkout);
        }
        Phase::ALL
            .into_iter()
            .find(|phase| phase.name() == name)
            .with_context(|| {
                let names: Vec<&str> = Phase::ALL.iter().map(|p| p.name()).collect();
                format!("unknown phase {name:?}: one of {}", names.join(", "))
            })
    }

    /// Whether the phase needs logged-in customers.
    pub fn needs_customers(self) -> bool {
        !matches!(self, Phase::Search | Phase::Product)
    }

    /// Whether the phase takes stock (and so wants it set first).
    pub fn orders(self) -> bool {
        matches!(self, Phase::Checkout | Phase::CartCheckout)
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    /// Customers placing orders and owning carts, logged in first.
    pub customers: u64,
    /// Distinct SKUs ordered: the first SKU of demo products `0..skus`.
    pub skus: u64,
    /// Lines per order at most.
    pub lines: u64,
    /// Demo products read in the product phase.
    pub products: u64,
    pub payment_method: String,
    /// Carts each customer keeps open for the cart-line phase.
    pub carts_per_customer: u64,
    /// Per request, and for a whole checkout from its start to the
    /// confirmation seen after a `202`.
    pub timeout: Duration,
    /// Sockets kept open to the gateway.
    pub max_connections: usize,
}

/// Logged-in customers and an HTTP client: everything an arrival needs.
pub struct Shoppers {
    client: reqwest::Client,
    options: Options,
    tokens: Vec<String>,
    carts: OnceLock<Vec<(usize, String)>>,
}

/// Words shoppers type: whole words and as-you-type prefixes of the demo
/// catalog's vocabulary.
const SEARCHES: &[&str] = &[
    "linen",
    "linen shirt",
    "merino",
    "merino sweater",
    "wool",
    "navy",
    "navy chinos",
    "leather",
    "leather boots",
    "rain jacket",
    "canvas tote",
    "cashmere scarf",
    "sneak",
    "cord",
    "olive",
    "backpack",
    "relaxed",
    "alpine parka",
    "denim jeans",
    "cotton tee",
    "blank",
    "mug",
    "sand",
    "heritage",
    "waxed",
    "slim",
    "hood",
    "trail",
    "suede loafers",
    "burgundy",
];

/// A checkout answered `202` is polled at its `Location` every 20 ms at
/// first, backing off to every 200 ms: each poll is a round trip through
/// the orders processor, so a tight loop would load what it measures.
const FIRST_POLL: Duration = Duration::from_millis(20);
const MAX_POLL: Duration = Duration::from_millis(200);

/// How often an idempotent setup request is sent again after a `503`.
const SETUP_TRIES: u32 = 60;

/// A gateway at its admission limit (a slow cluster warming up) says when to
/// come back; 1 s if it does not.
fn retry_after(_attempt: u32, response: &reqwest::Response) -> Duration {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
}

/// The error kind of a checkout answered `202` and not seen settled before
/// its timeout.
const CONFIRM_TIMEOUT: &str = "confirm_timeout";

#[derive(Serialize)]
struct OrderLine {
    sku: String,
    quantity: u64,
    unit_price_minor: u64,
}

#[derive(Serialize)]
struct PlaceOrder {
    #[serde(skip)]
    customer: usize,
    currency: &'static str,
    lines: Vec<OrderLine>,
    payment_method: String,
}

impl Shoppers {
    /// An HTTP client for `options`, then every customer the phases need
    /// registered (or, when registered before, logged in).
    pub async fn new(options: Options, phases: &[Phase]) -> Result<Arc<Shoppers>> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .tcp_nodelay(true)
            // Every in-flight request may need its own connection; a smaller
            // idle pool would close and reopen sockets under load and add
            // handshake time to the measurement.
            .pool_max_idle_per_host(options.max_connections)
            .build()
            .context("building the HTTP client")?;
        let tokens = if phases.iter().any(|phase| phase.needs_customers()) {
            log_in_customers(&client, &options).await?
        } else {
            Vec::new()
        };
        Ok(Arc::new(Shoppers {
            client,
            options,
            tokens,
            carts: OnceLock::new(),
        }))
    }

    /// Sets `units` on hand for every SKU the order phases may buy.
    pub async fn set_stock(&self, units: u64) -> Result<()> {
        let base = &self.options.url;
        stream::iter(0..self.options.skus)
            .map(|index| async move {
                let (sku, _) = demo::first_offer(index);
                let url = format!("{base}/admin/inventory/{sku}");
                let put = || {
                    self.client
                        .put(&url)
                        .bearer_auth(crate::cli::admin_token())
                        .json(&serde_json::json!({ "on_hand": units }))
                };
                let response = with_retries(put, SETUP_TRIES, retry_after)
                    .await
                    .with_context(|| format!("PUT {url}"))?;
                if !response.status().is_success() {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    bail!("PUT {url}: {status} {body}");
                }
                Ok(())
            })
            .buffer_unordered(64)
            .try_collect::<()>()
            .await
    }

    /// Opens the carts the cart-line phase changes (once).
    pub async fn open_carts(&self) -> Result<()> {
        if self.carts.get().is_some() || self.tokens.is_empty() {
            return Ok(());
        }
        let wanted = self.tokens.len() as u64 * self.options.carts_per_customer;
        let carts: Vec<(usize, String)> = stream::iter(0..wanted)
            .map(|index| async move {
                let customer = (index % self.tokens.len() as u64) as usize;
                let key = format!("bench-cart-{index}");
                let cart_id = self
                    .open_cart(customer, &key)
                    .await
                    .map_err(|kind| anyhow::anyhow!("opening cart {index}: {kind}"))?;
                Ok::<_, anyhow::Error>((customer, cart_id))
            })
            .buffer_unordered(32)
            .try_collect()
            .await?;
        // Another caller may have won the race; its carts are as good.
        let _ = self.carts.set(carts);
        Ok(())
    }

    /// Arrival `index` of `phase`.
    pub async fn perform(self: Arc<Self>, phase: Phase, index: u64) -> OperationOutcome {
        match phase {
            Phase::Checkout => self.checkout(index).await,
            Phase::CartCheckout => self.cart_checkout(index).await,
            Phase::CartLine => self.change_cart_line(index).await,
            Phase::Search => self.search(index).await,
            Phase::Product => self.read_product(index).await,
            Phase::OrderList => self.list_orders(index).await,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.options.url)
    }

    fn token(&self, customer: usize) -> &str {
        self.tokens.get(customer).map_or("", String::as_str)
    }

    fn order(&self, index: u64) -> PlaceOrder {
        let mut rng = SplitMix64(index);
        let customer = rng.range(0, (self.tokens.len() as u64).max(1) - 1) as usize;
        let skus = self.distinct_skus(&mut rng);
        PlaceOrder {
            customer,
            currency: "EUR",
            lines: skus
                .into_iter()
                .map(|index| {
                    let (sku, unit_price_minor) = demo::first_offer(index);
                    OrderLine {
                        sku,
                        quantity: rng.range(1, 3),
                        unit_price_minor,
                    }
                })
                .collect(),
            payment_method: self.options.payment_method.clone(),
        }
    }

    /// Distinct SKUs per order: a gateway may reasonably reject or merge
    /// duplicate lines, which would skew what is being measured.
    fn distinct_skus(&self, rng: &mut SplitMix64) -> Vec<u64> {
        let wanted = rng.range(1, self.options.lines.min(self.options.skus));
        let mut skus: Vec<u64> = Vec::new();
        while (skus.len() as u64) < wanted {
            let sku = rng.range(0, self.options.skus - 1);
            if !skus.contains(&sku) {
                skus.push(sku);
            }
        }
        skus
    }

    async fn checkout(&self, index: u64) -> OperationOutcome {
        let deadline = Instant::now() + self.options.timeout;
        let order = self.order(index);
        let request = self
            .client
            .post(self.url("/orders"))
            .bearer_auth(self.token(order.customer))
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&order);
        self.checkout_outcome(order.customer, request.send().await, deadline)
            .await
    }

    async fn cart_checkout(&self, index: u64) -> OperationOutcome {
        let deadline = Instant::now() + self.options.timeout;
        let order = self.order(index);
        let key = uuid::Uuid::new_v4().to_string();
        let cart_id = match self.open_cart(order.customer, &key).await {
            Ok(cart_id) => cart_id,
            Err(kind) => return OperationOutcome::Error(format!("open_cart_{kind}")),
        };
        for line in &order.lines {
            let outcome = self
                .set_line(order.customer, &cart_id, &line.sku, line.quantity)
                .await;
            if outcome != OperationOutcome::Done {
                return step_failed("cart_line", outcome);
            }
        }
        let request = self
            .client
            .post(self.url(&format!("/carts/{cart_id}/checkout")))
            .bearer_auth(self.token(order.customer))
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&serde_json::json!({ "payment_method": order.payment_method }));
        self.checkout_outcome(order.customer, request.send().await, deadline)
            .await
    }

    /// How a checkout ended. A `202` only says the gateway stopped waiting:
    /// the order's `Location` is then polled, with the customer's token,
    /// until the order settles or `deadline` passes, so the checkout is
    /// timed to its confirmation (`Accepted`) or its rejection (`Refused`).
    async fn checkout_outcome(
        &self,
        customer: usize,
        result: reqwest::Result<reqwest::Response>,
        deadline: Instant,
    ) -> OperationOutcome {
        let response = match result {
            Ok(response) if response.status() == StatusCode::ACCEPTED => response,
            other => return outcome_of(other).await,
        };
        let url = response
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|location| poll_url(&self.options.url, location));
        // Drained, so the connection goes back to the pool.
        if let Err(e) = response.bytes().await {
            return OperationOutcome::Error(transport_error(&e).to_owned());
        }
        let Some(url) = url else {
            return OperationOutcome::Error("no_location".to_owned());
        };
        self.await_settled(customer, &url, deadline).await
    }

    /// Polls the order at `url` until it settles; every poll ends by
    /// `deadline`, and the waits between polls are at least `FIRST_POLL`,
    /// so the loop is bounded in time and in count.
    async fn await_settled(
        &self,
        customer: usize,
        url: &str,
        deadline: Instant,
    ) -> OperationOutcome {
        let mut interval = FIRST_POLL;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return OperationOutcome::Error(CONFIRM_TIMEOUT.to_owned());
            }
            let sent = self
                .client
                .get(url)
                .bearer_auth(self.token(customer))
                .timeout(remaining)
                .send()
                .await;
            if let Polled::Settled(outcome) = poll_answer(sent).await {
                return outcome;
            }
            tokio::time::sleep_until((Instant::now() + interval).min(deadline)).await;
            interval = next_poll_interval(interval);
        }
    }

    async fn change_cart_line(&self, index: u64) -> OperationOutcome {
        let Some(carts) = self.carts.get().filter(|carts| !carts.is_empty()) else {
            return OperationOutcome::Error("no_carts".to_owned());
        };
        let mut rng = SplitMix64(index);
        let (customer, cart_id) = &carts[(index % carts.len() as u64) as usize];
        let (sku, _) = demo::first_offer(rng.range(0, self.options.skus - 1));
        let quantity = rng.range(1, 5);
        self.set_line(*customer, cart_id, &sku, quantity).await
    }

    async fn set_line(
        &self,
        customer: usize,
        cart_id: &str,
        sku: &str,
        quantity: u64,
    ) -> OperationOutcome {
        let request = self
            .client
            .put(self.url(&format!("/carts/{cart_id}/lines/{sku}")))
            .bearer_auth(self.token(customer))
            .json(&serde_json::json!({ "quantity": quantity }));
        outcome_of(request.send().await).await
    }

    /// Opens a cart (idempotent per key) and returns its id, or the kind of
    /// failure.
    async fn open_cart(&self, customer: usize, key: &str) -> Result<String, String> {
        let response = self
            .client
            .post(self.url("/carts"))
            .bearer_auth(self.token(customer))
            .header("Idempotency-Key", key)
            .json(&serde_json::json!({ "currency": "EUR" }))
            .send()
            .await
            .map_err(|e| transport_error(&e).to_owned())?;
        let status = response.status().as_u16();
        if status != 201 && status != 200 {
            return Err(format!("http_{status}"));
        }
        let cart: serde_json::Value = response
            .json()
            .await
            .map_err(|e| transport_error(&e).to_owned())?;
        cart["cart_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "no_cart_id".to_owned())
    }

    async fn search(&self, index: u64) -> OperationOutcome {
        let mut rng = SplitMix64(index);
        let query = rng.pick(SEARCHES);
        let offset = rng.range(0, 2) * 20;
        let request = self
            .client
            .get(self.url("/products"))
            .query(&[("q", (*query).to_owned()), ("offset", offset.to_string())]);
        outcome_of(request.send().await).await
    }

    async fn read_product(&self, index: u64) -> OperationOutcome {
        let product = SplitMix64(index).range(0, self.options.products - 1);
        let url = self.url(&format!("/products/{}", demo::product_id(product)));
        outcome_of(self.client.get(url).send().await).await
    }

    async fn list_orders(&self, index: u64) -> OperationOutcome {
        let customer = SplitMix64(index).range(0, (self.tokens.len() as u64).max(1) - 1);
        let request = self
            .client
            .get(self.url("/orders"))
            .bearer_auth(self.token(customer as usize))
            .query(&[("limit", "20")]);
        outcome_of(request.send().await).await
    }
}

/// What one poll of a checkout's order showed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Polled {
    /// Not settled yet: poll again.
    Pending,
    /// The checkout's outcome.
    Settled(OperationOutcome),
}

/// Where a checkout stands, by its order's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settlement {
    Settling,
    Confirmed,
    Rejected,
}

/// `confirmed` is what a checkout waits for. Every later status
/// (fulfilment, cancellation and their failures) is only reached from
/// `confirmed`, so it says the same; `rejected` is a business refusal.
/// Anything else (`placed`, `awaiting_payment`, a status this code does not
/// know) is still settling.
fn settlement(status: &str) -> Settlement {
    match status {
        "confirmed" | "fulfilling" | "fulfilled" | "capture_failed" | "cancelling"
        | "cancelled" | "refund_failed" => Settlement::Confirmed,
        "rejected" => Settlement::Rejected,
        _ => Settlement::Settling,
    }
}

/// The part of `GET /orders/{id}`'s answer a poll reads.
#[derive(Deserialize)]
struct OrderStatusJson {
    status: String,
}

/// Reads one poll's answer (draining its body). A poll cut off by its
/// timeout, which is what was left until the deadline, is left to the
/// loop: it ends the checkout as `confirm_timeout`.
async fn poll_answer(result: reqwest::Result<reqwest::Response>) -> Polled {
    let failed = |e: &reqwest::Error| {
        if e.is_timeout() {
            Polled::Pending
        } else {
            Polled::Settled(OperationOutcome::Error(format!(
                "confirm_{}",
                transport_error(e)
            )))
        }
    };
    let response = match result {
        Ok(response) => response,
        Err(e) => return failed(&e),
    };
    let status = response.status().as_u16();
    match response.bytes().await {
        Ok(body) => polled(status, &body),
        Err(e) => failed(&e),
    }
}

/// What an answer to `GET /orders/{id}` says about the checkout: `200`
/// with the order's `status`; `202` the gateway still waits for the
/// checkout's outcome, `404` the order is not there yet (its command is
/// still on the way), `503` its owner did not answer in time, each worth
/// another poll; any other status ends it as an error.
fn polled(http_status: u16, body: &[u8]) -> Polled {
    match http_status {
        200 => match serde_json::from_slice::<OrderStatusJson>(body) {
            Ok(order) => match settlement(&order.status) {
                Settlement::Settling => Polled::Pending,
                Settlement::Confirmed => Polled::Settled(OperationOutcome::Accepted),
                Settlement::Rejected => Polled::Settled(OperationOutcome::Refused),
            },
            Err(_) => Polled::Settled(OperationOutcome::Error("confirm_unreadable".to_owned())),
        },
        202 | 404 | 503 => Polled::Pending,
        s => Polled::Settled(OperationOutcome::Error(format!("confirm_http_{s}"))),
    }
}

/// The URL a `Location` names: the gateway's are paths (`/orders/{id}`),
/// taken relative to `base`; an absolute URL is used as it is.
fn poll_url(base: &str, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        Some(location.to_owned())
    } else if location.starts_with('/') {
        Some(format!("{}{location}", base.trim_end_matches('/')))
    } else {
        None
    }
}

/// The wait before the next poll: doubled, up to `MAX_POLL`.
fn next_poll_interval(interval: Duration) -> Duration {
    interval.saturating_mul(2).min(MAX_POLL)
}

/// A step before the last one of a flow failed or was refused: the flow
/// did not happen, counted under the step's name.
fn step_failed(step: &str, outcome: OperationOutcome) -> OperationOutcome {
    match outcome {
        OperationOutcome::Error(kind) => OperationOutcome::Error(format!("{step}_{kind}")),
        OperationOutcome::Refused => OperationOutcome::Error(format!("{step}_refused")),
        OperationOutcome::Accepted => OperationOutcome::Error(format!("{step}_accepted")),
        OperationOutcome::Done => OperationOutcome::Done,
    }
}

/// Registers (or, when registered before, logs in) each load customer and
/// returns their bearer tokens. A few at a time: password hashing is
/// deliberately slow, and a burst of them would time out at the gateway.
async fn log_in_customers(client: &reqwest::Client, options: &Options) -> Result<Vec<String>> {
    let tokens: Vec<String> = stream::iter(0..options.customers)
        .map(|index| log_in_customer(client, &options.url, index))
        .buffered(4)
        .try_collect()
        .await?;
    eprintln!("{} customers logged in", tokens.len());
    Ok(tokens)
}

async fn log_in_customer(client: &reqwest::Client, url: &str, index: u64) -> Result<String> {
    let email = format!("loadgen-{index}@example.com");
    let password = "loadgen-password";
    let register =
        serde_json::json!({"email": email, "name": format!("Load {index}"), "password": password});
    let registered = with_retries(
        || client.post(format!("{url}/customers")).json(&register),
        LOGIN_TRIES,
        growing_pause,
    )
    .await
    .with_context(|| format!("registering {email}"))?;
    if !(registered.status().is_success() || registered.status() == 409) {
        bail!("registering {email}: {}", registered.status());
    }
    let credentials = serde_json::json!({"email": email, "password": password});
    let login = with_retries(
        || {
            client
                .post(format!("{url}/customers/login"))
                .json(&credentials)
        },
        LOGIN_TRIES,
        growing_pause,
    )
    .await
    .with_context(|| format!("logging in {email}"))?;
    if !login.status().is_success() {
        bail!("logging in {email}: {}", login.status());
    }
    let token: serde_json::Value = login.json().await?;
    token["token"]
        .as_str()
        .map(str::to_owned)
        .context("login answer without a token")
}

/// Sends until the answer is not a 503 (a service that did not answer in
/// time, or a gateway at its admission limit, on a platform still warming
/// up), `tries` times at most, waiting `wait(attempt, answer)` in between.
async fn with_retries(
    request: impl Fn() -> reqwest::RequestBuilder,
    tries: u32,
    wait: impl Fn(u32, &reqwest::Response) -> Duration,
) -> reqwest::Result<reqwest::Response> {
    let mut attempt = 0;
    loop {
        let response = request().send().await?;
        attempt += 1;
        if response.status() != 503 || attempt == tries {
            return Ok(response);
        }
        tokio::time::sleep(wait(attempt, &response)).await;
    }
}

/// Login's pause between tries: 0.5 s, then 1 s, 1.5 s, …
fn growing_pause(attempt: u32, _response: &reqwest::Response) -> Duration {
    Duration::from_millis(500 * u64::from(attempt))
}

/// Tries of a login step.
const LOGIN_TRIES: u32 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_parse_by_name() {
        for phase in Phase::ALL {
            assert_eq!(Phase::parse(phase.name()).expect("known"), phase);
        }
        assert_eq!(Phase::parse("orders").expect("alias"), Phase::Checkout);
        let error = Phase::parse("chekout").expect_err("unknown").to_string();
        assert!(error.contains("cart-checkout"), "{error}");
    }

    #[test]
    fn order_statuses_say_whether_a_checkout_settled() {
        for status in ["placed", "awaiting_payment", "pending", ""] {
            assert_eq!(settlement(status), Settlement::Settling, "{status}");
        }
        for status in ["confirmed", "fulfilled", "cancelled", "refund_failed"] {
            assert_eq!(settlement(status), Settlement::Confirmed, "{status}");
        }
        assert_eq!(settlement("rejected"), Settlement::Rejected);
    }

    #[test]
    fn poll_answers_end_the_wait_or_not() {
        let order = |status: &str| serde_json::json!({ "status": status }).to_string();
        assert_eq!(polled(200, order("placed").as_bytes()), Polled::Pending);
        assert_eq!(
            polled(200, order("confirmed").as_bytes()),
            Polled::Settled(OperationOutcome::Accepted)
        );
        assert_eq!(
            polled(200, order("rejected").as_bytes()),
            Polled::Settled(OperationOutcome::Refused)
        );
        assert_eq!(
            polled(202, br#"{"order_id":"o-1","status":"pending"}"#),
            Polled::Pending
        );
        assert_eq!(polled(404, b"{}"), Polled::Pending);
        assert_eq!(polled(503, b"{}"), Polled::Pending);
        assert_eq!(
            polled(401, b"{}"),
            Polled::Settled(OperationOutcome::Error("confirm_http_401".to_owned()))
        );
        assert_eq!(
            polled(200, b"not json"),
            Polled::Settled(OperationOutcome::Error("confirm_unreadable".to_owned()))
        );
    }

    #[test]
    fn locations_are_taken_relative_to_the_gateway() {
        let base = "http://127.0.0.1:28080";
        assert_eq!(
            poll_url(base, "/orders/o-1").as_deref(),
            Some("http://127.0.0.1:28080/orders/o-1")
        );
        assert_eq!(
            poll_url("http://127.0.0.1:28080/", "/orders/o-1").as_deref(),
            Some("http://127.0.0.1:28080/orders/o-1")
        );
        assert_eq!(
            poll_url(base, "http://other:1/orders/o-1").as_deref(),
            Some("http://other:1/orders/o-1")
        );
        assert_eq!(poll_url(base, "orders/o-1"), None);
    }

    #[test]
    fn polls_back_off_to_a_bound() {
        let mut interval = FIRST_POLL;
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(interval.as_millis());
            interval = next_poll_interval(interval);
        }
        assert_eq!(seen, [20, 40, 80, 160, 200, 200]);
    }

    /// A gateway that answers every checkout `202` and shows the order
    /// `settled` from the `settles_at`-th poll on (404, then `placed`
    /// before), to the load customer's token only.
    struct FakeGateway {
        settles_at: usize,
        settled: &'static str,
        polls: std::sync::atomic::AtomicUsize,
    }

    async fn fake_gateway(settles_at: usize, settled: &'static str) -> (String, Arc<FakeGateway>) {
        use axum::http::HeaderMap;
        use axum::routing::{get, post};
        use std::sync::atomic::Ordering;

        let state = Arc::new(FakeGateway {
            settles_at,
            settled,
            polls: std::sync::atomic::AtomicUsize::new(0),
        });
        let poll = |axum::extract::State(state): axum::extract::State<Arc<FakeGateway>>,
                    headers: HeaderMap| async move {
            let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
            if bearer != Some("Bearer token-0") {
                return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({})));
            }
            let poll = state.polls.fetch_add(1, Ordering::SeqCst) + 1;
            let status = match poll {
                1 => return (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({}))),
                n if n < state.settles_at => "placed",
                _ => state.settled,
            };
            (
                StatusCode::OK,
                axum::Json(serde_json::json!({ "status": status })),
            )
        };
        let app = axum::Router::new()
            .route(
                "/orders",
                post(|| async {
                    (
                        StatusCode::ACCEPTED,
                        [("location", "/orders/o-1")],
                        axum::Json(serde_json::json!({ "order_id": "o-1", "status": "pending" })),
                    )
                }),
            )
            .route("/orders/{id}", get(poll))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binds on loopback");
        let address = listener.local_addr().expect("bound");
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("fake gateway stopped: {error}");
            }
        });
        (format!("http://{address}"), state)
    }

    fn shoppers(url: String, timeout: Duration) -> Shoppers {
        Shoppers {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("client"),
            options: Options {
                url,
                customers: 1,
                skus: 1,
                lines: 1,
                products: 1,
                payment_method: "pm_card_visa".to_owned(),
                carts_per_customer: 0,
                timeout,
                max_connections: 4,
            },
            tokens: vec!["token-0".to_owned()],
            carts: OnceLock::new(),
        }
    }

    #[tokio::test]
    async fn a_checkout_answered_202_is_timed_to_its_confirmation() {
        let (url, gateway) = fake_gateway(4, "confirmed").await;
        let started = Instant::now();
        let outcome = shoppers(url, Duration::from_secs(10)).checkout(0).await;
        assert_eq!(outcome, OperationOutcome::Accepted);
        assert_eq!(gateway.polls.load(std::sync::atomic::Ordering::SeqCst), 4);
        // Waits of 20, 40 and 80 ms between the four polls.
        assert!(
            started.elapsed() >= Duration::from_millis(140),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_checkout_rejected_after_202_is_refused() {
        let (url, _) = fake_gateway(2, "rejected").await;
        let outcome = shoppers(url, Duration::from_secs(10)).checkout(0).await;
        assert_eq!(outcome, OperationOutcome::Refused);
    }

    #[tokio::test]
    async fn a_checkout_never_confirmed_ends_at_its_timeout() {
        let (url, gateway) = fake_gateway(usize::MAX, "confirmed").await;
        let started = Instant::now();
        let outcome = shoppers(url, Duration::from_millis(500)).checkout(0).await;
        assert_eq!(outcome, OperationOutcome::Error(CONFIRM_TIMEOUT.to_owned()));
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
        let polls = gateway.polls.load(std::sync::atomic::Ordering::SeqCst);
        assert!((3..=25).contains(&polls), "{polls} polls");
    }
}
