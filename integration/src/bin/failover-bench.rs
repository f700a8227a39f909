//! Failover with and without a warm standby: the time from kill -9 of the
//! instance owning a set of inventory partitions to the first reply from
//! the instance that takes them over.
//!
//! Each run starts on a fresh topic set (test profile, 8 partitions) on a
//! Kafka node of the bench's own: the victim instance alone, which is filled
//! with `--entries` store entries per half of the partitions (three per new
//! SKU: stock level, adjustment, handled message id), then the survivor,
//! which takes half the partitions over (KIP-848). With `D2C_STANDBY=all`
//! the survivor follows the victim's half meanwhile. Probes (`AdjustStock`
//! with a correlation id, one partition after another of the victim's) run
//! at `--rate` from two seconds before the kill; a `read_committed` reader
//! of `inventory.events` times each probe's event.
//!
//! Per run it reports: the victim's partitions and their store entries,
//! how long the survivor took to own every partition (the group's failure
//! detection and reassignment), how long it took to make the taken-over
//! stores current and from what (a restore from the whole changelog, or
//! the local copy caught up), and from the kill to the first reply, and to
//! a reply on every taken-over partition.
//!
//! A benchmark, not a test: it never fails on a number. Point D2C_BIN_DIR
//! at release binaries.

use std::collections::{BTreeSet, HashMap};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use d2c_integration::cli::{parse_num, Flag, Flags};
use d2c_integration::harness::{KafkaNode, Platform, Service};
use d2c_integration::stock::{fill, read_stock_events, send_adjustment};
use rdkafka::producer::FutureProducer;

const USAGE: &str = "\
usage: failover-bench [options]   (env D2C_BIN_DIR; starts a Kafka node of its own)
  --entries N      store entries on the partitions of the instance killed (default 100000)
  --runs N         kills per standby mode (default 3)
  --rate R         probes per second to the killed instance's partitions (default 50)
  --standby LIST   standby modes, comma separated: none, all (default none,all)
  --after S        seconds probed after the kill (default 12)";

struct Args {
    entries: u64,
    runs: u32,
    rate: f64,
    modes: Vec<String>,
    after: Duration,
}

impl Args {
    fn parse() -> Result<Option<Self>> {
        let mut args = Args {
            entries: 100_000,
            runs: 3,
            rate: 50.0,
            modes: vec!["none".into(), "all".into()],
            after: Duration::from_secs(12),
        };
        let mut flags = Flags::from_env(USAGE);
        while let Some(parsed) = flags.next_flag()? {
            let Flag::Value { name, value } = parsed else {
                println!("{USAGE}");
                return Ok(None);
            };
            match name.as_str() {
                "--entries" => args.entries = parse_num(&name, &value)?,
                "--runs" => args.runs = parse_num(&name, &value)?,
                "--rate" => args.rate = parse_num(&name, &value)?,
                "--after" => args.after = Duration::from_secs_f64(parse_num(&name, &value)?),
                "--standby" => args.modes = value.split(',').map(str::to_owned).collect(),
                other => bail!("unknown option {other}\n{USAGE}"),
            }
        }
        if args.rate <= 0.0 || args.runs == 0 {
            bail!("--rate and --runs must be positive\n{USAGE}");
        }
        if let Some(mode) = args.modes.iter().find(|m| *m != "none" && *m != "all") {
            bail!("--standby: {mode:?} is neither none nor all");
        }
        Ok(Some(args))
    }
}

/// One kill's figures.
struct KillFigures {
    partitions: usize,
    entries: u64,
    owned_all_ms: f64,
    open_ms: u64,
    opened_from: String,
    first_reply_ms: f64,
    all_partitions_ms: f64,
    unanswered: usize,
}

impl KillFigures {
    /// From the group handing the survivor every partition to a reply on
    /// each: the takeover itself, without the failure detection before it
    /// (the member session, whose phase against the kill varies by up to a
    /// heartbeat interval from run to run).
    fn takeover_ms(&self) -> f64 {
        self.all_partitions_ms - self.owned_all_ms
    }
}

/// Probes by correlation id: (partition, when due), and arrivals.
#[derive(Default)]
struct Probes {
    sent: Mutex<HashMap<String, (i32, Instant)>>,
    arrived: Mutex<HashMap<String, Instant>>,
}

impl Probes {
    fn sent(&self, id: String, partition: i32, due: Instant) {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (partition, due));
    }

    fn arrived(&self, id: String, at: Instant) {
        self.arrived
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_insert(at);
    }

    /// (first reply, every partition replied, unanswered) for the probes
    /// due at or after `kill`, in ms after it.
    fn after(&self, kill: Instant, partitions: &BTreeSet<i32>) -> (f64, f64, usize) {
        let sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        let arrived = self.arrived.lock().unwrap_or_else(PoisonError::into_inner);
        let mut first_by_partition: HashMap<i32, Instant> = HashMap::new();
        let mut unanswered = 0;
        for (id, (partition, due)) in sent.iter() {
            if *due < kill {
                continue;
            }
            match arrived.get(id) {
                Some(at) => {
                    let first = first_by_partition.entry(*partition).or_insert(*at);
                    *first = (*first).min(*at);
                }
                None => unanswered += 1,
            }
        }
        let ms = |at: &Instant| at.saturating_duration_since(kill).as_secs_f64() * 1000.0;
        let first = first_by_partition.values().map(ms).fold(f64::NAN, f64::min);
        let all = if partitions
            .iter()
            .all(|partition| first_by_partition.contains_key(partition))
        {
            first_by_partition.values().map(ms).fold(0.0, f64::max)
        } else {
            f64::NAN
        };
        (first, all, unanswered)
    }
}

/// JSON log lines of a service: (message, fields).
fn log_events(service: &Service) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&service.log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|value| value.get("fields").cloned())
        .collect()
}

fn message_is(fields: &serde_json::Value, text: &str) -> bool {
    fields
        .get("message")
        .and_then(|m| m.as_str())
        .is_some_and(|m| m.contains(text))
}

fn partition_of(fields: &serde_json::Value) -> Option<i32> {
    fields.get("partition")?.as_i64().map(|p| p as i32)
}

/// The partitions `service` owns now, from its log.
fn owned_partitions(service: &Service) -> BTreeSet<i32> {
    let mut owned = BTreeSet::new();
    for fields in log_events(service) {
        let Some(partition) = partition_of(&fields) else {
            continue;
        };
        if message_is(&fields, "Partition assigned") {
            owned.insert(partition);
        } else if message_is(&fields, "Partition revoked") {
            owned.remove(&partition);
        }
    }
    owned
}

/// Of `service`'s log lines from the `skip`-th on, about `partitions`:
/// (entries applied, ms to open the stores, what they opened from). The
/// stores of one assignment open one after another, so their open times
/// add up.
fn takeover_from_log(
    service: &Service,
    skip: usize,
    partitions: &BTreeSet<i32>,
) -> (u64, u64, String) {
    let mut entries = 0;
    let mut opening = 0;
    let mut from = BTreeSet::new();
    for fields in log_events(service).into_iter().skip(skip) {
        if !partition_of(&fields).is_some_and(|p| partitions.contains(&p)) {
            continue;
        }
        let number = |name: &str| fields.get(name).and_then(|v| v.as_u64()).unwrap_or(0);
        if message_is(&fields, "restored from the changelog")
            || message_is(&fields, "Caught up with the changelog")
        {
            entries += number("entries");
        } else if message_is(&fields, "Partition store opened") {
            opening += number("elapsed_ms");
            if let Some(source) = fields.get("from").and_then(|v| v.as_str()) {
                from.insert(source.to_owned());
            }
        }
    }
    let from = from.into_iter().collect::<Vec<_>>().join("+");
    (entries, opening, from)
}

/// The standby's lag series on `service`: (series, their sum).
async fn standby_lag(service: &Service) -> Result<(usize, f64)> {
    let text = reqwest::get(service.url("/metrics")).await?.text().await?;
    let values: Vec<f64> = text
        .lines()
        .filter(|line| line.starts_with("d2c_consumer_lag{") && line.contains("-standby\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    Ok((values.len(), values.iter().sum()))
}

/// Waits until the two instances split every partition, and a standby
/// survivor follows the rest with no lag.
async fn settle(
    victim: &Service,
    survivor: &Service,
    partitions: f64,
    standby: bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mine = survivor.metric("d2c_assigned_partitions").await?;
        let theirs = victim.metric("d2c_assigned_partitions").await?;
        let split = mine > 0.0 && theirs > 0.0 && mine + theirs == partitions;
        let warm = if standby {
            let followed = survivor.metric("d2c_standby_partitions").await?;
            let (series, lag) = standby_lag(survivor).await?;
            followed == partitions - mine && series as f64 == followed && lag == 0.0
        } else {
            true
        };
        if split && warm && survivor.metric("d2c_assigned_partitions").await? == mine {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not settled in 5 minutes: survivor {mine}, victim {theirs} partitions");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn run_once(node: &KafkaNode, args: &Args, mode: &str, run: u32) -> Result<KillFigures> {
    let platform = Platform::on_broker(&["inventory"], node.brokers()).await?;
    let partitions = d2c_integration::harness::test_partitions();
    let env = [
        ("D2C_STANDBY", mode.to_owned()),
        ("D2C_LOG_FORMAT", "json".to_owned()),
        ("D2C_STATS_INTERVAL_MS", "1000".to_owned()),
    ];
    let mut victim = platform
        .processor_ready("inventory", "victim", &env)
        .await?;
    let messages = (args.entries * 2).div_ceil(3);
    eprintln!("failover-bench: {mode} #{run}: filling {messages} SKUs ...");
    fill(&platform, &victim, None, messages).await?;
    let survivor = platform
        .processor_ready("inventory", "survivor", &env)
        .await?;
    settle(&victim, &survivor, f64::from(partitions), mode == "all").await?;
    // A settled group for a while: no rebalance in flight at the kill.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victims = owned_partitions(&victim);
    if victims.is_empty() {
        bail!("the victim owns no partition");
    }

    let probes = Arc::new(Probes::default());
    let stop = Arc::new(AtomicBool::new(false));
    let arrivals = Arc::clone(&probes);
    let reader = read_stock_events(
        &platform.brokers,
        &platform.topic("inventory.events"),
        move |event| {
            if let Some(id) = event.correlation_id {
                arrivals.arrived(id, event.at);
            }
        },
        Arc::clone(&stop),
    )?;
    let producer: FutureProducer =
        d2c_platform::kafka::client_config(&platform.brokers, "failover-bench-probe")
            .set("linger.ms", "0")
            .create()?;
    let topic = platform.topic("inventory.messages");
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let started = Instant::now();
    let kill_at = started + Duration::from_secs(2);
    let end = kill_at + args.after;
    let log_lines_before = log_events(&survivor).len();
    let targets: Vec<i32> = victims.iter().copied().collect();
    let mut killed = None;
    let mut owned_all = None;
    for n in 0u32.. {
        let due = started + interval * n;
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        if killed.is_none() && Instant::now() >= kill_at {
            victim.kill9().await?;
            killed = Some(Instant::now());
        }
        if let (Some(kill), None) = (killed, owned_all) {
            if survivor.metric("d2c_assigned_partitions").await? == f64::from(partitions) {
                owned_all = Some(kill.elapsed());
            }
        }
        let partition = targets[n as usize % targets.len()];
        let id = format!("probe-{n}");
        probes.sent(id.clone(), partition, due);
        // Fire and forget: a delivery error shows as an unanswered probe.
        drop(send_adjustment(
            &producer,
            &topic,
            Some(partition),
            &format!("PROBE-{partition}"),
            1,
            id.clone(),
            Some(id),
        )?);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Release);
    let _ = reader.join();
    let kill = killed.context("the run ended before the kill")?;
    let (first_reply_ms, all_partitions_ms, unanswered) = probes.after(kill, &victims);
    let (entries, open_ms, opened_from) = takeover_from_log(&survivor, log_lines_before, &victims);
    let mut survivor = survivor;
    survivor.terminate().await?;
    Ok(KillFigures {
        partitions: victims.len(),
        entries,
        owned_all_ms: owned_all.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
        open_ms,
        opened_from,
        first_reply_ms,
        all_partitions_ms,
        unanswered,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| !v.is_nan());
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let Some(args) = Args::parse()? else {
        return Ok(ExitCode::SUCCESS);
    };
    let work = tempfile::Builder::new()
        .prefix("failover-bench-")
        .tempdir()?;
    let node = KafkaNode::start(&work.path().join("kafka")).await?;
    println!("| standby | run | partitions taken over | entries applied at takeover | survivor owns all after ms | stores current in ms (from) | first reply after kill ms | every partition replied ms | owns all → every partition replied ms | unanswered |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut summary = Vec::new();
    for mode in &args.modes {
        let mut outcomes = Vec::new();
        for run in 1..=args.runs {
            let outcome = run_once(&node, &args, mode, run).await?;
            println!(
                "| {mode} | {run} | {} | {} | {:.0} | {} ({}) | {:.0} | {:.0} | {:.0} | {} |",
                outcome.partitions,
                outcome.entries,
                outcome.owned_all_ms,
                outcome.open_ms,
                outcome.opened_from,
                outcome.first_reply_ms,
                outcome.all_partitions_ms,
                outcome.takeover_ms(),
                outcome.unanswered,
            );
            outcomes.push(outcome);
        }
        summary.push((
            mode.clone(),
            median(outcomes.iter().map(|o| o.owned_all_ms).collect()),
            median(outcomes.iter().map(|o| o.open_ms as f64).collect()),
            median(outcomes.iter().map(|o| o.first_reply_ms).collect()),
            median(outcomes.iter().map(|o| o.all_partitions_ms).collect()),
            median(outcomes.iter().map(KillFigures::takeover_ms).collect()),
        ));
    }
    println!();
    println!("| standby | median owns all ms | median stores current ms | median first reply ms | median every partition ms | median owns all → every partition ms |");
    println!("|---|---|---|---|---|---|");
    for (mode, owned, open, first, all, takeover) in summary {
        println!("| {mode} | {owned:.0} | {open:.0} | {first:.0} | {all:.0} | {takeover:.0} |");
    }
    Ok(ExitCode::SUCCESS)
}
