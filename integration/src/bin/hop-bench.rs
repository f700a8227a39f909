//! One processor hop under both processing guarantees: `AdjustStock`
//! commands go to `inventory.messages` at a fixed rate (open model: message
//! i is due at t0 + i / rate), an inventory processor handles them, and a
//! `read_committed` reader of `inventory.events` takes the time from each
//! command's scheduled send to its `StockChanged` event becoming visible.
//! That is the cost a hop adds to a checkout: two broker hops, the handler,
//! and the commit (a transaction under `exactly_once`).
//!
//! Each guarantee gets a fresh topic set (`topology apply` under a new
//! prefix, test profile) on the broker at D2C_KAFKA_BROKERS and one
//! processor from D2C_BIN_DIR (point it at release binaries to measure).
//! Per phase it prints: offered and achieved rate, p50/p99/max, the
//! processor's CPU per message (from /proc), and the batches and
//! transactions seen (from the processor's /metrics).
//!
//! A benchmark, not a test: it never fails on a number.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use d2c_integration::cli::{parse_num, Flag, Flags};
use d2c_integration::harness::{Platform, Service};
use d2c_integration::stock::{fill, read_stock_events, send_adjustment};
use hdrhistogram::Histogram;
use rdkafka::producer::FutureProducer;

const USAGE: &str = "\
usage: hop-bench [options]   (env D2C_KAFKA_BROKERS, D2C_BIN_DIR)
  --rates LIST        messages per second, comma separated (default 50,200,1000)
  --keys LIST         key spreads: 1 (one SKU, one partition) or N SKUs over every partition (default 1,64)
  --guarantees LIST   exactly_once, at_least_once (default both)
  --duration S        measured seconds per phase (default 10)
  --warmup S          seconds sent before each phase's measured window (default 2)
  --restore-entries N also time a fresh instance restoring a partition store of about N entries
                      (0: skip; default 100000)";

const HIST_MAX_US: u64 = 600_000_000;
/// How long a phase waits for its last events.
const DRAIN: Duration = Duration::from_secs(10);

struct Args {
    rates: Vec<f64>,
    keys: Vec<usize>,
    guarantees: Vec<String>,
    duration: Duration,
    warmup: Duration,
    restore_entries: u64,
}

fn list<T>(flag: &str, raw: &str) -> Result<Vec<T>>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    raw.split(',')
        .map(|item| parse_num(flag, item.trim()))
        .collect()
}

impl Args {
    fn parse() -> Result<Option<Self>> {
        let mut args = Args {
            rates: vec![50.0, 200.0, 1000.0],
            keys: vec![1, 64],
            guarantees: vec!["exactly_once".into(), "at_least_once".into()],
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            restore_entries: 100_000,
        };
        let mut flags = Flags::from_env(USAGE);
        while let Some(parsed) = flags.next_flag()? {
            let Flag::Value { name, value } = parsed else {
                println!("{USAGE}");
                return Ok(None);
            };
            match name.as_str() {
                "--rates" => args.rates = list(&name, &value)?,
                "--keys" => args.keys = list(&name, &value)?,
                "--guarantees" => args.guarantees = list(&name, &value)?,
                "--duration" => args.duration = Duration::from_secs_f64(parse_num(&name, &value)?),
                "--warmup" => args.warmup = Duration::from_secs_f64(parse_num(&name, &value)?),
                "--restore-entries" => args.restore_entries = parse_num(&name, &value)?,
                other => bail!("unknown option {other}\n{USAGE}"),
            }
        }
        if args.rates.iter().any(|rate| *rate <= 0.0) || args.keys.contains(&0) {
            bail!("--rates and --keys must be positive\n{USAGE}");
        }
        for guarantee in &args.guarantees {
            if guarantee != "exactly_once" && guarantee != "at_least_once" {
                bail!("--guarantees: {guarantee:?} is neither exactly_once nor at_least_once");
            }
        }
        Ok(Some(args))
    }
}

/// When each measured command was due, by correlation id; the reader
/// turns arrivals into latencies.
#[derive(Default)]
struct Clock {
    due: Mutex<HashMap<String, Instant>>,
    latencies: Mutex<Vec<Duration>>,
}

impl Clock {
    fn expect(&self, id: String, due: Instant) {
        self.due
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, due);
    }

    fn arrived(&self, id: &str, at: Instant) {
        let due = self
            .due
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        if let Some(due) = due {
            self.latencies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(at.saturating_duration_since(due));
        }
    }

    fn outstanding(&self) -> usize {
        self.due
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn take(&self) -> (Vec<Duration>, usize) {
        let latencies = std::mem::take(
            &mut *self
                .latencies
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let lost = std::mem::take(&mut *self.due.lock().unwrap_or_else(PoisonError::into_inner));
        (latencies, lost.len())
    }
}

/// A point in time of one process: CPU seconds used so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Counters of the processor's /metrics, read before and after a phase.
#[derive(Clone, Copy, Default)]
struct Counters {
    batches: f64,
    batch_messages: f64,
    transactions: f64,
    transaction_batches: f64,
    transaction_seconds: f64,
}

async fn counters(processor: &Service) -> Result<Counters> {
    Ok(Counters {
        batches: processor.metric("d2c_batch_messages_count").await?,
        batch_messages: processor.metric("d2c_batch_messages_sum").await?,
        transactions: processor.metric("d2c_transaction_batches_count").await?,
        transaction_batches: processor.metric("d2c_transaction_batches_sum").await?,
        transaction_seconds: processor
            .metric("d2c_transaction_duration_seconds_sum")
            .await?,
    })
}

struct Phase<'a> {
    platform: &'a Platform,
    processor: &'a Service,
    producer: &'a FutureProducer,
    clock: &'a Clock,
    name: String,
    rate: f64,
    keys: usize,
}

struct Report {
    achieved: f64,
    latencies: Vec<Duration>,
    lost: usize,
    cpu_ms_per_message: f64,
    messages_per_batch: f64,
    batches_per_transaction: f64,
    transaction_ms: f64,
}

impl Phase<'_> {
    async fn run(&self, warmup: Duration, measured: Duration) -> Result<Report> {
        let topic = self.platform.topic("inventory.messages");
        let interval = Duration::from_secs_f64(1.0 / self.rate);
        let started = Instant::now();
        let measure_from = started + warmup;
        let end = measure_from + measured;
        let mut before = None;
        let mut measured_sent = 0u64;
        let mut deliveries = Vec::new();
        for n in 0u64.. {
            let due = started + interval * n as u32;
            if due >= end {
                break;
            }
            if before.is_none() && due >= measure_from {
                before = Some((
                    cpu_seconds(self.processor.pid().context("processor pid")?),
                    counters(self.processor).await?,
                    Instant::now(),
                ));
            }
            tokio::time::sleep_until(due.into()).await;
            let id = format!("{}-{n}", self.name);
            if due >= measure_from {
                self.clock.expect(id.clone(), due);
                measured_sent += 1;
            }
            deliveries.push(self.send(&topic, n, id)?);
            if deliveries.len() >= 1000 {
                for delivery in deliveries.drain(..) {
                    let _ = delivery.await;
                }
            }
        }
        for delivery in deliveries {
            let _ = delivery.await;
        }
        let send_window = measure_from.elapsed();
        let drain_until = Instant::now() + DRAIN;
        while self.clock.outstanding() > 0 && Instant::now() < drain_until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (cpu_before, counters_before, _) = before.context("the measured window was empty")?;
        let cpu_after = cpu_seconds(self.processor.pid().context("processor pid")?);
        let counters_after = counters(self.processor).await?;
        let (latencies, lost) = self.clock.take();
        let cpu = cpu_after
            .zip(cpu_before)
            .map(|(after, before)| after - before)
            .unwrap_or(f64::NAN);
        let delta = |f: fn(&Counters) -> f64| f(&counters_after) - f(&counters_before);
        Ok(Report {
            achieved: measured_sent as f64 / send_window.as_secs_f64().max(measured.as_secs_f64()),
            cpu_ms_per_message: cpu * 1000.0 / measured_sent.max(1) as f64,
            messages_per_batch: delta(|c| c.batch_messages) / delta(|c| c.batches).max(1.0),
            batches_per_transaction: delta(|c| c.transaction_batches)
                / delta(|c| c.transactions).max(1.0),
            transaction_ms: delta(|c| c.transaction_seconds) * 1000.0
                / delta(|c| c.transactions).max(1.0),
            latencies,
            lost,
        })
    }

    fn send(&self, topic: &str, n: u64, id: String) -> Result<rdkafka::producer::DeliveryFuture> {
        let sku = format!("HOP-{}", n as usize % self.keys);
        send_adjustment(self.producer, topic, None, &sku, 1, id.clone(), Some(id))
    }
}

fn percentile(latencies: &[Duration], quantile: f64) -> f64 {
    let mut histogram = Histogram::<u64>::new_with_max(HIST_MAX_US, 3).expect("valid bounds");
    for latency in latencies {
        let _ = histogram.record((latency.as_micros() as u64).clamp(1, HIST_MAX_US));
    }
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

async fn run_guarantee(args: &Args, guarantee: &str) -> Result<()> {
    let platform = Platform::new(&["inventory"]).await?;
    let env = [("D2C_PROCESSING_GUARANTEE", guarantee.to_owned())];
    let processor = platform.processor_ready("inventory", "hop", &env).await?;
    let producer: FutureProducer =
        d2c_platform::kafka::client_config(&platform.brokers, "hop-bench")
            .set("linger.ms", "0")
            .create()?;
    let clock = Arc::new(Clock::default());
    let stop = Arc::new(AtomicBool::new(false));
    let arrivals = Arc::clone(&clock);
    let reader = read_stock_events(
        &platform.brokers,
        &platform.topic("inventory.events"),
        move |event| {
            if let Some(id) = event.correlation_id {
                arrivals.arrived(&id, event.at);
            }
        },
        Arc::clone(&stop),
    )?;
    for &keys in &args.keys {
        for &rate in &args.rates {
            let phase = Phase {
                platform: &platform,
                processor: &processor,
                producer: &producer,
                clock: &clock,
                name: format!("{guarantee}-{keys}-{rate}"),
                rate,
                keys,
            };
            eprintln!("hop-bench: {guarantee}, {keys} key(s), {rate}/s ...");
            let report = phase.run(args.warmup, args.duration).await?;
            println!(
                "| {guarantee} | {keys} | {rate:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.3} | {:.1} | {:.1} | {:.1} | {} |",
                report.achieved,
                percentile(&report.latencies, 0.5),
                percentile(&report.latencies, 0.99),
                percentile(&report.latencies, 1.0),
                report.cpu_ms_per_message,
                report.messages_per_batch,
                report.batches_per_transaction,
                report.transaction_ms,
                report.lost,
            );
        }
    }
    stop.store(true, Ordering::Release);
    let _ = reader.join();
    Ok(())
}

/// Fills partition 0's store with about `entries` entries (three per new
/// SKU: its stock level, the adjustment, the handled message id), stops
/// the instance, and times a fresh one (no disk) restoring it.
async fn measure_restore(guarantee: &str, entries: u64) -> Result<()> {
    let platform = Platform::new(&["inventory"]).await?;
    let env = [
        ("D2C_PROCESSING_GUARANTEE", guarantee.to_owned()),
        ("D2C_LOG_FORMAT", "json".to_owned()),
    ];
    let mut filler = platform
        .processor_ready("inventory", "filler", &env)
        .await?;
    let messages = entries.div_ceil(3);
    eprintln!("hop-bench: {guarantee}: filling one partition with {messages} adjustments ...");
    fill(&platform, &filler, Some(0), messages).await?;
    filler.terminate().await?;
    let started = Instant::now();
    let fresh = platform.processor_ready("inventory", "fresh", &env).await?;
    let ready = started.elapsed();
    let restored = restore_log(&fresh.log_tail(10_000));
    let (restored_entries, restored_ms) =
        restored.context("no restore of partition 0 in the fresh instance's log")?;
    println!(
        "| {guarantee} | {restored_entries} | {restored_ms} | {} |",
        ready.as_millis()
    );
    Ok(())
}

/// (entries, elapsed ms) of partition 0's restore, from JSON log lines.
fn restore_log(log: &str) -> Option<(u64, u64)> {
    log.lines().rev().find_map(|line| {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = value.get("fields")?;
        let is_restore = fields
            .get("message")?
            .as_str()?
            .contains("restored from the changelog");
        (is_restore && fields.get("partition")?.as_i64()? == 0).then(|| {
            Some((
                fields.get("entries")?.as_u64()?,
                fields.get("elapsed_ms")?.as_u64()?,
            ))
        })?
    })
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let Some(args) = Args::parse()? else {
        return Ok(ExitCode::SUCCESS);
    };
    println!("| guarantee | keys | offered/s | achieved/s | p50 ms | p99 ms | max ms | CPU ms/msg | msgs/batch | batches/txn | txn ms | lost |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for guarantee in &args.guarantees {
        run_guarantee(&args, guarantee).await?;
    }
    if args.restore_entries > 0 {
        println!();
        println!("| guarantee | store entries | restored in ms | fresh instance ready in ms |");
        println!("|---|---|---|---|");
        for guarantee in &args.guarantees {
            measure_restore(guarantee, args.restore_entries).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
