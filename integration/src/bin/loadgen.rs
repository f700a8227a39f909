//! Open-model load generator for the gateway. `--mode orders` (default):
//! every request is a whole checkout (`POST /orders`: stock reserved,
//! payment authorized, order confirmed) by one of `--customers` customers,
//! who register (or log in) first. Orders buy the first SKU of demo products
//! 0..`--skus` at the catalog's price (the seeded demo catalog must be
//! there). `--stock N` first sets N units on hand for every SKU it will
//! order. `--mode search`: catalog searches
//! (`GET /products?q=…`, words the demo catalog uses); `--mode product`:
//! product reads (`GET /products/demo-…`), both against the seeded catalog.
//!
//! Arrivals follow a fixed schedule (`start_i = t0 + i / rate`) whatever the
//! server does, and every latency is measured from the scheduled start rather
//! than the actual send. A closed-loop client would slow down exactly when the
//! server does and hide the queueing delay (coordinated omission); here a slow
//! server shows up as latency and errors instead of a lower request rate.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use d2c_integration::cli::{parse_num, Flag, Flags};
use d2c_integration::rng::SplitMix64;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

const USAGE: &str = "\
usage: loadgen [options]
  --url URL              gateway base URL (env D2C_GATEWAY_URL, default http://127.0.0.1:8080)
  --rate N               orders per second (default 100)
  --duration S           measured seconds, after the warmup (default 10)
  --timeout-ms MS        per-request timeout (default 10000)
  --mode MODE            orders, search or product (default orders)
  --customers N          customers placing the orders, registered/logged in first (default 20)
  --products N           demo products to read in product mode (default 10000)
  --skus N               distinct SKUs: the first SKU of demo products 0..N (default 100)
  --lines N              max lines per order (default 3)
  --max-in-flight N      arrivals beyond this many open requests count as client_overloaded (default 20000)
  --warmup S             seconds run before the measured window, excluded from stats (default 1)
  --payment-method TOKEN payment method of every order (default pm_card_visa)
  --stock N              before the run, set N units on hand for every SKU (default 0: leave stock as is)";

/// Upper bound for the histograms; anything slower is clamped, and the
/// request timeout keeps real values far below it anyway.
const HIST_MAX_US: u64 = 3_600_000_000;
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Args {
    url: String,
    rate: f64,
    duration_s: f64,
    timeout: Duration,
    customers: u64,
    skus: u64,
    lines: u64,
    max_in_flight: usize,
    warmup_s: f64,
    payment_method: String,
    stock: u64,
    mode: Mode,
    products: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Orders,
    Search,
    Product,
}

impl Args {
    fn parse() -> Result<Option<Self>> {
        let mut args = Args {
            url: std::env::var("D2C_GATEWAY_URL")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned()),
            rate: 100.0,
            duration_s: 10.0,
            timeout: Duration::from_millis(10_000),
            customers: 20,
            skus: 100,
            lines: 3,
            max_in_flight: 20_000,
            warmup_s: 1.0,
            payment_method: "pm_card_visa".to_owned(),
            stock: 0,
            mode: Mode::Orders,
            products: 10_000,
        };
        let mut flags = Flags::from_env(USAGE);
        while let Some(parsed) = flags.next_flag()? {
            let Flag::Value { name: flag, value } = parsed else {
                println!("{USAGE}");
                return Ok(None);
            };
            match flag.as_str() {
                "--url" => args.url = value,
                "--rate" => args.rate = parse_num(&flag, &value)?,
                "--duration" => args.duration_s = parse_num(&flag, &value)?,
                "--timeout-ms" => {
                    args.timeout = Duration::from_millis(parse_num(&flag, &value)?);
                }
                "--customers" => args.customers = parse_num(&flag, &value)?,
                "--skus" => args.skus = parse_num(&flag, &value)?,
                "--lines" => args.lines = parse_num(&flag, &value)?,
                "--max-in-flight" => args.max_in_flight = parse_num(&flag, &value)?,
                "--warmup" => args.warmup_s = parse_num(&flag, &value)?,
                "--payment-method" => args.payment_method = value,
                "--stock" => args.stock = parse_num(&flag, &value)?,
                "--products" => args.products = parse_num(&flag, &value)?,
                "--mode" => {
                    args.mode = match value.as_str() {
                        "orders" => Mode::Orders,
                        "search" => Mode::Search,
                        "product" => Mode::Product,
                        other => bail!("--mode {other:?}: orders, search or product"),
                    }
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        args.url = args.url.trim_end_matches('/').to_owned();
        if !(args.rate.is_finite() && args.rate > 0.0) {
            bail!("--rate must be > 0");
        }
        if !(args.duration_s.is_finite() && args.duration_s > 0.0) {
            bail!("--duration must be > 0");
        }
        if !(args.warmup_s.is_finite() && args.warmup_s >= 0.0) {
            bail!("--warmup must be >= 0");
        }
        if args.timeout.is_zero() {
            bail!("--timeout-ms must be > 0");
        }
        if args.customers == 0
            || args.skus == 0
            || args.lines == 0
            || args.max_in_flight == 0
            || args.products == 0
        {
            bail!("--customers, --skus, --lines, --products and --max-in-flight must be > 0");
        }
        Ok(Some(args))
    }
}

#[derive(Serialize)]
struct OrderLine {
    sku: String,
    quantity: u64,
    unit_price_minor: u64,
}

#[derive(Serialize)]
struct PlaceOrder {
    /// Index into the logged-in customers: whose token places it.
    #[serde(skip)]
    customer: usize,
    currency: &'static str,
    lines: Vec<OrderLine>,
    payment_method: String,
}

fn order_for(index: u64, args: &Args) -> PlaceOrder {
    let mut rng = SplitMix64(index);
    let customer = rng.range(0, args.customers - 1);
    let wanted = rng.range(1, args.lines.min(args.skus));
    // Distinct SKUs per order: a gateway may reasonably reject or merge
    // duplicate lines, which would skew what is being measured.
    let mut skus: Vec<u64> = Vec::new();
    while (skus.len() as u64) < wanted {
        let sku = rng.range(0, args.skus - 1);
        if !skus.contains(&sku) {
            skus.push(sku);
        }
    }
    PlaceOrder {
        customer: customer as usize,
        currency: "EUR",
        lines: skus
            .into_iter()
            .map(|index| {
                let (sku, unit_price_minor) = d2c_integration::demo::first_offer(index);
                OrderLine {
                    sku,
                    quantity: rng.range(1, 3),
                    unit_price_minor,
                }
            })
            .collect(),
        payment_method: args.payment_method.clone(),
    }
}

enum Outcome {
    Created,
    Accepted,
    /// 409 out of stock or 402 declined: a correct business answer, timed
    /// like a success but counted apart.
    Refused,
    Error(String),
}

#[derive(Default)]
struct Stats {
    created: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    errors_total: AtomicU64,
    /// Successes during the warmup, so a run that only worked while warming
    /// up still does not exit 1.
    warmup_ok: AtomicU64,
    warmup_done: AtomicU64,
    /// Microseconds from the start of the measured window to the latest
    /// measured completion; the achieved rate is computed over this span.
    last_done_us: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    hist: Mutex<Option<Histogram<u64>>>,
}

impl Stats {
    fn record(&self, outcome: Outcome, latency: Duration, measured: bool, since_window: Duration) {
        if !measured {
            self.warmup_done.fetch_add(1, Ordering::Relaxed);
            if !matches!(outcome, Outcome::Error(_)) {
                self.warmup_ok.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        match outcome {
            Outcome::Created | Outcome::Accepted | Outcome::Refused => {
                let counter = match outcome {
                    Outcome::Created => &self.created,
                    Outcome::Accepted => &self.accepted,
                    _ => &self.refused,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let mut hist = self.hist.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(h) = hist.as_mut() {
                    h.saturating_record(latency_us.max(1));
                }
            }
            Outcome::Error(kind) => self.error(kind),
        }
        let done_us = u64::try_from(since_window.as_micros()).unwrap_or(u64::MAX);
        self.last_done_us.fetch_max(done_us, Ordering::Relaxed);
    }

    fn error(&self, kind: String) {
        self.errors_total.fetch_add(1, Ordering::Relaxed);
        *self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind)
            .or_default() += 1;
    }
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

/// The request of arrival `index` in a read mode.
fn read_request(client: &reqwest::Client, args: &Args, index: u64) -> reqwest::RequestBuilder {
    let mut rng = SplitMix64(index);
    match args.mode {
        Mode::Search => {
            let query = rng.pick(SEARCHES);
            let page = rng.range(0, 2) * 20;
            client
                .get(format!("{}/products", args.url))
                .query(&[("q", (*query).to_owned()), ("offset", page.to_string())])
        }
        _ => {
            let product = rng.range(0, args.products - 1);
            client.get(format!(
                "{}/products/{}",
                args.url,
                d2c_integration::demo::product_id(product)
            ))
        }
    }
}

/// Registers (or, when registered before, logs in) each load customer and
/// returns their bearer tokens.
async fn log_in_customers(client: &reqwest::Client, args: &Args) -> Result<Vec<String>> {
    let logins = (0..args.customers).map(|index| async move {
        let email = format!("loadgen-{index}@example.com");
        let password = "loadgen-password";
        let registered = client
            .post(format!("{}/customers", args.url))
            .json(&serde_json::json!({"email": email, "name": format!("Load {index}"), "password": password}))
            .send()
            .await
            .with_context(|| format!("registering {email}"))?;
        if !(registered.status().is_success() || registered.status() == 409) {
            bail!("registering {email}: {}", registered.status());
        }
        let login = client
            .post(format!("{}/customers/login", args.url))
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
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
    });
    let tokens = futures::future::try_join_all(logins).await?;
    eprintln!("loadgen: {} customers logged in", tokens.len());
    Ok(tokens)
}

async fn send_one(client: &reqwest::Client, url: &str, token: &str, body: &PlaceOrder) -> Outcome {
    let request = client
        .post(url)
        .bearer_auth(token)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(body);
    send(request).await
}

async fn send(request: reqwest::RequestBuilder) -> Outcome {
    let result = request.send().await;
    let classify = |e: &reqwest::Error| {
        if e.is_connect() {
            "connect"
        } else if e.is_timeout() {
            "timeout"
        } else {
            "other"
        }
    };
    let response = match result {
        Ok(r) => r,
        Err(e) => return Outcome::Error(classify(&e).to_owned()),
    };
    let status = response.status().as_u16();
    // The body must be drained for the connection to go back to the pool, and
    // the response only counts as complete once it has fully arrived.
    if let Err(e) = response.bytes().await {
        return Outcome::Error(classify(&e).to_owned());
    }
    match status {
        200 | 201 => Outcome::Created,
        202 => Outcome::Accepted,
        402 | 409 => Outcome::Refused,
        s => Outcome::Error(format!("http_{s}")),
    }
}

/// Sets `--stock` units on hand for every SKU the run may order.
async fn seed_stock(client: &reqwest::Client, args: &Args) -> Result<()> {
    for index in 0..args.skus {
        let (sku, _) = d2c_integration::demo::first_offer(index);
        let url = format!("{}/admin/inventory/{sku}", args.url);
        let response = client
            .put(&url)
            .bearer_auth(d2c_integration::cli::admin_token())
            .json(&serde_json::json!({ "on_hand": args.stock }))
            .send()
            .await
            .with_context(|| format!("PUT {url}"))?;
        if !response.status().is_success() {
            let status = response.status();
            bail!(
                "PUT {url}: {status} {}",
                response.text().await.unwrap_or_default()
            );
        }
    }
    eprintln!(
        "loadgen: {} units on hand for each of {} SKUs",
        args.stock, args.skus
    );
    Ok(())
}

fn quantile_ms(hist: &Histogram<u64>, q: f64) -> f64 {
    if hist.is_empty() {
        return 0.0;
    }
    hist.value_at_quantile(q) as f64 / 1000.0
}

/// Keeps the JSON line short; microsecond precision is all the histogram has.
fn round_to(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let Some(args) = Args::parse()? else {
        return Ok(ExitCode::SUCCESS);
    };
    let args = Arc::new(args);
    let orders_url = Arc::new(format!("{}/orders", args.url));

    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .connect_timeout(args.timeout)
        .tcp_nodelay(true)
        // Every in-flight request may need its own connection; a smaller idle
        // pool would close and reopen sockets under load and add handshake
        // time to the measurement.
        .pool_max_idle_per_host(args.max_in_flight)
        .build()
        .context("building HTTP client")?;

    if args.stock > 0 {
        seed_stock(&client, &args).await?;
    }
    let tokens = Arc::new(if args.mode == Mode::Orders {
        log_in_customers(&client, &args).await?
    } else {
        Vec::new()
    });
    let stats = Arc::new(Stats {
        hist: Mutex::new(Some(
            Histogram::new_with_bounds(1, HIST_MAX_US, 3).context("creating histogram")?,
        )),
        ..Stats::default()
    });

    let warmup_count = (args.warmup_s * args.rate).ceil() as u64;
    let total = ((args.warmup_s + args.duration_s) * args.rate).ceil() as u64;
    let scheduled = total - warmup_count;
    let t0 = Instant::now();
    let window_start = t0 + Duration::from_secs_f64(warmup_count as f64 / args.rate);
    let sent = Arc::new(AtomicU64::new(0));

    eprintln!(
        "loadgen: sending {} {:?} requests/s for {}s (+{}s warmup) to {}",
        args.rate, args.mode, args.duration_s, args.warmup_s, args.url
    );

    let progress = {
        let stats = Arc::clone(&stats);
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(t0 + PROGRESS_EVERY, PROGRESS_EVERY);
            loop {
                tick.tick().await;
                let created = stats.created.load(Ordering::Relaxed);
                let accepted = stats.accepted.load(Ordering::Relaxed);
                let errors = stats.errors_total.load(Ordering::Relaxed);
                let done = created + accepted + errors + stats.warmup_done.load(Ordering::Relaxed);
                let sent = sent.load(Ordering::Relaxed);
                eprintln!(
                    "loadgen: t={:.0}s sent={sent} 201={created} 202={accepted} errors={errors} in_flight={}",
                    t0.elapsed().as_secs_f64(),
                    sent.saturating_sub(done),
                );
            }
        })
    };

    let mut tasks = JoinSet::new();
    for i in 0..total {
        let scheduled_at = t0 + Duration::from_secs_f64(i as f64 / args.rate);
        tokio::time::sleep_until(scheduled_at).await;
        let measured = i >= warmup_count;
        while let Some(joined) = tasks.try_join_next() {
            if joined.is_err() {
                stats.error("panic".to_owned());
            }
        }
        if tasks.len() >= args.max_in_flight {
            stats.record(
                Outcome::Error("client_overloaded".to_owned()),
                Duration::ZERO,
                measured,
                Instant::now().saturating_duration_since(window_start),
            );
            continue;
        }
        sent.fetch_add(1, Ordering::Relaxed);
        let (client, url, args, stats, tokens) = (
            client.clone(),
            Arc::clone(&orders_url),
            Arc::clone(&args),
            Arc::clone(&stats),
            Arc::clone(&tokens),
        );
        tasks.spawn(async move {
            let outcome = if args.mode == Mode::Orders {
                let body = order_for(i, &args);
                send_one(&client, &url, &tokens[body.customer], &body).await
            } else {
                send(read_request(&client, &args, i)).await
            };
            let now = Instant::now();
            stats.record(
                outcome,
                now.saturating_duration_since(scheduled_at),
                measured,
                now.saturating_duration_since(window_start),
            );
        });
    }

    // Every request carries its own timeout, so this only catches stragglers
    // that were still queued on the runtime when the schedule ended.
    let drain_deadline = Instant::now() + args.timeout;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(drain_deadline, tasks.join_next()).await {
            Ok(Some(Err(_))) => stats.error("panic".to_owned()),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let abandoned = tasks.len();
    tasks.shutdown().await;
    for _ in 0..abandoned {
        stats.error("abandoned".to_owned());
    }
    progress.abort();

    let created = stats.created.load(Ordering::Relaxed);
    let accepted = stats.accepted.load(Ordering::Relaxed);
    let refused = stats.refused.load(Ordering::Relaxed);
    let errors_total = stats.errors_total.load(Ordering::Relaxed);
    let errors = stats
        .errors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let hist = stats
        .hist
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .context("histogram already taken")?;
    let completed = created + accepted + refused + errors_total;
    // Over the nominal window, or longer if responses trailed past it, so a
    // backlog drained after the schedule ended does not inflate the rate.
    let span_s = (stats.last_done_us.load(Ordering::Relaxed) as f64 / 1e6).max(args.duration_s);
    let achieved_rate = (created + accepted + refused) as f64 / span_s;
    let (p50, p95, p99, p999) = (
        quantile_ms(&hist, 0.50),
        quantile_ms(&hist, 0.95),
        quantile_ms(&hist, 0.99),
        quantile_ms(&hist, 0.999),
    );
    let max_ms = if hist.is_empty() {
        0.0
    } else {
        hist.max() as f64 / 1000.0
    };

    println!(
        "loadgen: target {}/s for {}s ({scheduled} scheduled, +{}s warmup excluded) against {}",
        args.rate, args.duration_s, args.warmup_s, args.url
    );
    println!(
        "achieved: {achieved_rate:.1} req/s completed, 200/201={created} 202={accepted} refused(409/402)={refused} errors={errors_total}"
    );
    println!(
        "latency from scheduled start (ms): p50={p50:.1} p95={p95:.1} p99={p99:.1} p99.9={p999:.1} max={max_ms:.1}"
    );
    if errors.is_empty() {
        println!("errors: none");
    } else {
        let list: Vec<String> = errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("errors: {}", list.join(" "));
    }
    let summary = serde_json::json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "target_rate": args.rate,
        "duration_s": args.duration_s,
        "scheduled": scheduled,
        "completed": completed,
        "created": created,
        "accepted": accepted,
        "refused": refused,
        "errors": errors,
        "achieved_rate": round_to(achieved_rate, 1),
        "p50_ms": round_to(p50, 3),
        "p95_ms": round_to(p95, 3),
        "p99_ms": round_to(p99, 3),
        "p999_ms": round_to(p999, 3),
        "max_ms": round_to(max_ms, 3),
    });
    println!("LOADGEN_JSON {summary}");

    if created + accepted + stats.warmup_ok.load(Ordering::Relaxed) == 0 {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
