//! Seeds the demo catalog through the gateway's admin API, as an operator
//! would: `--products` generated products (see `d2c_integration::demo`),
//! stock for every SKU, then waits until search finds them all (the
//! projector has caught up). Safe to run again: creates are idempotent and a
//! catalog that is already complete is left alone (its stock too, so orders
//! placed since keep their effect).

use anyhow::{bail, Context as _, Result};
use d2c_integration::cli::{parse_num, Flag, Flags};
use d2c_integration::demo;
use futures::stream::{self, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: seed [options]
  --url URL            gateway base URL (env D2C_GATEWAY_URL, default http://127.0.0.1:8080)
  --products N         demo products (default 10000)
  --concurrency N      products seeded at once (default 256)
  --wait-search S      seconds to wait for search to find every product (default 300; 0: don't wait)
  (env D2C_ADMIN_TOKEN: the admin credential; default the gateway's local one)";

struct Args {
    url: String,
    products: u64,
    concurrency: usize,
    wait_search: Duration,
}

fn parse_args() -> Result<Option<Args>> {
    let mut args = Args {
        url: std::env::var("D2C_GATEWAY_URL")
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned()),
        products: 10_000,
        concurrency: 256,
        wait_search: Duration::from_secs(300),
    };
    let mut flags = Flags::from_env(USAGE);
    while let Some(flag) = flags.next_flag()? {
        let Flag::Value { name, value } = flag else {
            println!("{USAGE}");
            return Ok(None);
        };
        match name.as_str() {
            "--url" => args.url = value.trim_end_matches('/').to_owned(),
            "--products" => args.products = parse_num(&name, &value)?,
            "--concurrency" => args.concurrency = parse_num(&name, &value)?,
            "--wait-search" => args.wait_search = Duration::from_secs(parse_num(&name, &value)?),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if args.products == 0 || args.concurrency == 0 {
        bail!("--products and --concurrency must be > 0");
    }
    Ok(Some(args))
}

/// An admin client: the admin credential on every request.
fn client() -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = reqwest::header::HeaderValue::from_str(&format!(
        "Bearer {}",
        d2c_integration::cli::admin_token()
    ))
    .context("D2C_ADMIN_TOKEN is not a valid header value")?;
    headers.insert(reqwest::header::AUTHORIZATION, value);
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()?)
}

/// How long one item is retried: a freshly started three-broker cluster
/// answered its first commands only after about a minute (measured with
/// `./dev up --brokers 3` on 2 cores), longer than twelve tries lasted.
const GIVE_UP_AFTER: Duration = Duration::from_secs(180);

/// Sends `request` until it succeeds, retrying what may pass (503, 202,
/// connection errors) for up to [`GIVE_UP_AFTER`].
async fn send(request: impl Fn() -> reqwest::RequestBuilder, what: &str) -> Result<()> {
    let mut delay = Duration::from_millis(200);
    let give_up = tokio::time::Instant::now() + GIVE_UP_AFTER;
    while tokio::time::Instant::now() < give_up {
        match request().send().await {
            Ok(response) if response.status().is_success() && response.status() != 202 => {
                return Ok(())
            }
            Ok(response) if response.status().is_client_error() => {
                let status = response.status();
                bail!(
                    "{what}: {status} {}",
                    response.text().await.unwrap_or_default()
                );
            }
            Ok(_) | Err(_) => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    bail!("{what}: no success within {GIVE_UP_AFTER:?}")
}

/// Runs `work` for every index with bounded concurrency, printing progress.
async fn each<F, Fut>(label: &str, count: u64, concurrency: usize, work: F) -> Result<()>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let reporter = {
        let done = Arc::clone(&done);
        let label = label.to_owned();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3));
            tick.tick().await;
            loop {
                tick.tick().await;
                let done = done.load(Ordering::Relaxed);
                let rate = done as f64 / started.elapsed().as_secs_f64();
                eprintln!("seed: {label} {done}/{count} ({rate:.0}/s)");
            }
        })
    };
    let results: Vec<Result<()>> = stream::iter(0..count)
        .map(|index| {
            let done = Arc::clone(&done);
            let job = work(index);
            async move {
                let result = job.await;
                done.fetch_add(1, Ordering::Relaxed);
                result
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    reporter.abort();
    let failures: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    if let Some(first) = failures.first() {
        bail!(
            "{} of {count} {label} failed; first: {first:#}",
            failures.len()
        );
    }
    eprintln!(
        "seed: {label} {count}/{count} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Whether the last product exists with the content this generator makes.
async fn already_seeded(client: &reqwest::Client, args: &Args) -> Result<bool> {
    let last = args.products - 1;
    let url = format!("{}/products/{}", args.url, demo::product_id(last));
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !response.status().is_success() {
        return Ok(false);
    }
    let product: serde_json::Value = response.json().await?;
    Ok(product["name"] == demo::product(last)["name"])
}

async fn wait_for_search(client: &reqwest::Client, args: &Args) -> Result<()> {
    if args.wait_search.is_zero() {
        return Ok(());
    }
    let deadline = Instant::now() + args.wait_search;
    let url = format!("{}/products?limit=1", args.url);
    loop {
        let total = match client.get(&url).send().await {
            Ok(response) if response.status().is_success() => {
                let page: serde_json::Value = response.json().await.unwrap_or_default();
                page["total"].as_u64().unwrap_or(0)
            }
            _ => 0,
        };
        if total >= args.products {
            eprintln!("seed: search finds {total} products");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "search finds {total} of {} products after {:?}",
                args.products,
                args.wait_search
            );
        }
        eprintln!(
            "seed: waiting for the read side: search finds {total} of {}",
            args.products
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let Some(args) = parse_args()? else {
        return Ok(());
    };
    let client = client()?;
    if already_seeded(&client, &args).await? {
        eprintln!(
            "seed: the demo catalog ({} products) is already there",
            args.products
        );
    } else {
        // One job per product: the product, then the stock of its SKUs
        // (inventory does not wait for the catalog), many products at once.
        let base = args.url.clone();
        each(
            "products with stock",
            args.products,
            args.concurrency,
            |index| {
                let (client, base) = (client.clone(), base.clone());
                async move {
                    let body = demo::product(index);
                    let url = format!("{base}/admin/products");
                    send(
                        || client.post(&url).json(&body),
                        &format!("product {index}"),
                    )
                    .await?;
                    for (sku, units) in demo::stock(index) {
                        let url = format!("{base}/admin/inventory/{sku}");
                        let body = serde_json::json!({ "on_hand": units });
                        send(|| client.put(&url).json(&body), &format!("stock of {sku}")).await?;
                    }
                    Ok(())
                }
            },
        )
        .await?;
    }
    wait_for_search(&client, &args).await
}
