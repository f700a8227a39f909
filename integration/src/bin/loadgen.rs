//! Open-model load generator for the gateway: one phase at one rate (see
//! `d2c_integration::load` for the model and `workload` for the phases).
//! `--mode checkout` (default): every request is a whole checkout
//! (`POST /orders`) by one of `--customers` customers, who register (or log
//! in) first; `--stock N` first sets N units on hand for every SKU it will
//! order. `./dev bench` runs every phase at several rates with CPU and
//! memory per process; this is the quick single-phase tool.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use d2c_integration::cli::{parse_num, Flag, Flags};
use d2c_integration::load::{self, Schedule};
use d2c_integration::workload::{Options, Phase, Shoppers};

const USAGE: &str = "\
usage: loadgen [options]
  --url URL              gateway base URL (env D2C_GATEWAY_URL, default http://127.0.0.1:8080)
  --rate N               operations per second (default 100)
  --duration S           measured seconds, after the warmup (default 10)
  --timeout-ms MS        per-request timeout (default 10000)
  --mode PHASE           checkout, cart-checkout, cart-line, search, product or order-list
                         (default checkout; `orders` is checkout)
  --customers N          customers placing the orders, registered/logged in first (default 20)
  --products N           demo products to read in product mode (default 10000)
  --skus N               distinct SKUs: the first SKU of demo products 0..N (default 100)
  --lines N              max lines per order (default 3)
  --max-in-flight N      arrivals beyond this many open requests count as client_overloaded (default 20000)
  --warmup S             seconds run before the measured window, excluded from stats (default 1)
  --payment-method TOKEN payment method of every order (default pm_card_visa)
  --stock N              before the run, set N units on hand for every SKU (default 0: leave stock as is)";

struct Args {
    options: Options,
    phase: Phase,
    rate: f64,
    duration_s: f64,
    warmup_s: f64,
    max_in_flight: usize,
    stock: u64,
}

fn parse_args() -> Result<Option<Args>> {
    let mut args = Args {
        options: Options {
            url: std::env::var("D2C_GATEWAY_URL")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned()),
            customers: 20,
            skus: 100,
            lines: 3,
            products: 10_000,
            payment_method: "pm_card_visa".to_owned(),
            carts_per_customer: 5,
            timeout: Duration::from_millis(10_000),
            max_connections: 20_000,
        },
        phase: Phase::Checkout,
        rate: 100.0,
        duration_s: 10.0,
        warmup_s: 1.0,
        max_in_flight: 20_000,
        stock: 0,
    };
    let mut flags = Flags::from_env(USAGE);
    while let Some(parsed) = flags.next_flag()? {
        let Flag::Value { name: flag, value } = parsed else {
            println!("{USAGE}");
            return Ok(None);
        };
        let options = &mut args.options;
        match flag.as_str() {
            "--url" => options.url = value,
            "--rate" => args.rate = parse_num(&flag, &value)?,
            "--duration" => args.duration_s = parse_num(&flag, &value)?,
            "--timeout-ms" => options.timeout = Duration::from_millis(parse_num(&flag, &value)?),
            "--customers" => options.customers = parse_num(&flag, &value)?,
            "--skus" => options.skus = parse_num(&flag, &value)?,
            "--lines" => options.lines = parse_num(&flag, &value)?,
            "--max-in-flight" => args.max_in_flight = parse_num(&flag, &value)?,
            "--warmup" => args.warmup_s = parse_num(&flag, &value)?,
            "--payment-method" => options.payment_method = value,
            "--stock" => args.stock = parse_num(&flag, &value)?,
            "--products" => options.products = parse_num(&flag, &value)?,
            "--mode" => args.phase = Phase::parse(&value)?,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    args.options.url = args.options.url.trim_end_matches('/').to_owned();
    args.options.max_connections = args.max_in_flight;
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be > 0");
    }
    if !(args.duration_s.is_finite() && args.duration_s > 0.0) {
        bail!("--duration must be > 0");
    }
    if !(args.warmup_s.is_finite() && args.warmup_s >= 0.0) {
        bail!("--warmup must be >= 0");
    }
    let options = &args.options;
    if options.timeout.is_zero() {
        bail!("--timeout-ms must be > 0");
    }
    if [
        options.customers,
        options.skus,
        options.lines,
        options.products,
    ]
    .contains(&0)
        || args.max_in_flight == 0
    {
        bail!("--customers, --skus, --lines, --products and --max-in-flight must be > 0");
    }
    Ok(Some(args))
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let Some(args) = parse_args()? else {
        return Ok(ExitCode::SUCCESS);
    };
    let phase = args.phase;
    let shoppers = Shoppers::new(args.options.clone(), &[phase]).await?;
    if args.stock > 0 {
        shoppers.set_stock(args.stock).await?;
        eprintln!(
            "loadgen: {} units on hand for each of {} SKUs",
            args.stock, args.options.skus
        );
    }
    if phase == Phase::CartLine {
        shoppers.open_carts().await?;
    }
    let schedule = Schedule {
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration_s),
        warmup: Duration::from_secs_f64(args.warmup_s),
        max_in_flight: args.max_in_flight,
        drain: args.options.timeout,
        label: format!("loadgen {}", phase.name()),
    };
    eprintln!(
        "loadgen: sending {} {} operations/s for {}s (+{}s warmup) to {}",
        args.rate,
        phase.name(),
        args.duration_s,
        args.warmup_s,
        args.options.url
    );
    let report = load::run(&schedule, |i| Arc::clone(&shoppers).perform(phase, i)).await?;

    println!(
        "loadgen: target {}/s for {}s ({} scheduled, +{}s warmup excluded) against {}",
        args.rate, args.duration_s, report.scheduled, args.warmup_s, args.options.url
    );
    println!(
        "achieved: {:.1} ops/s answered, 200/201={} 202={} refused(409/402)={} errors={}",
        report.achieved_rate, report.done, report.accepted, report.refused, report.errors_total
    );
    println!(
        "latency from scheduled start (ms): p50={:.1} p95={:.1} p99={:.1} p99.9={:.1} max={:.1}",
        report.p50_ms, report.p95_ms, report.p99_ms, report.p999_ms, report.max_ms
    );
    if report.errors.is_empty() {
        println!("errors: none");
    } else {
        let list: Vec<String> = report
            .errors
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("errors: {}", list.join(" "));
    }
    let mut summary = serde_json::to_value(&report)?;
    if let Some(fields) = summary.as_object_mut() {
        fields.insert("mode".to_owned(), phase.name().into());
        fields.remove("percentiles");
    }
    println!("LOADGEN_JSON {summary}");

    if report.done + report.accepted + report.warmup_ok == 0 {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
