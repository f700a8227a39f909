//! The platform's benchmark, run by `./dev bench` against a stack of its
//! own: every phase of `workload` at each of its rates (open model, latency
//! from the scheduled start), with the CPU seconds every process spent per
//! operation and its resident memory, and, in the same run, the broker's
//! floor (Kafka's own `EndToEndLatency` and our client's round trip). It
//! prints a table per phase and writes `<out>/<name>.json`, `<name>.md` and
//! a latency-by-percentile plot per phase (`<name>-<phase>.png`).
//!
//! Where the broker's CPU goes: per step, the broker's requests per
//! operation by API, records per `Produce`, consumer fetches per record and
//! the transactions our processors committed (`brokerwork`, from the
//! broker's JMX exporter and the processors' `/metrics`); and once per run,
//! the Kafka-only ceiling on this box (`ProducerPerformance`, with and
//! without transactions), so the limit is a measured number.
//!
//! A benchmark, never a test: nothing here passes or fails on a number.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use d2c_integration::brokerwork::{self, Counters, Work};
use d2c_integration::ceiling::{self, Ceiling};
use d2c_integration::cli::{parse_num, Flag, Flags};
use d2c_integration::exposition;
use d2c_integration::load::{self, round_to, Report, Schedule};
use d2c_integration::plot::{self, Curve};
use d2c_integration::procstat::{self, Usage};
use d2c_integration::workload::{Options, Phase, Shoppers};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde::Serialize;

const USAGE: &str = "\
usage: bench [options]        (./dev bench starts the stack and passes the process files)
  --url URL              gateway (default http://127.0.0.1:28080)
  --brokers LIST         Kafka (env D2C_KAFKA_BROKERS, default 127.0.0.1:29092)
  --run-dir DIR          the stack's run dir: pids/*.pid and broker/broker.pid are sampled
  --postgres-pid-file F  Postgres's postmaster.pid (its backends are counted too)
  --kafka-tool PATH      kafka/broker, to run Kafka's EndToEndLatency and ProducerPerformance
                         (floor and ceiling skipped without it)
  --broker-metrics URL   the broker's Prometheus metrics (JMX exporter): requests per operation
  --processor-metrics LIST  comma-separated /metrics URLs of the processors: transactions per
                         operation, batches and partitions per transaction
  --ceiling S            seconds of each Kafka-only ceiling run (default 10; 0 skips the ceiling)
  --phases LIST          comma-separated, in order (default checkout,cart-checkout,cart-line,search,product,order-list)
  --rates PHASE=R1,R2    offered rates of a phase, per second (repeatable; defaults below)
  --duration S           measured seconds per rate (default 15)
  --warmup S             unmeasured seconds before each rate (default 3)
  --settle S             unmeasured checkouts at 50/s before the first ordering phase, so a
                         freshly started stack (JIT, caches, transactions) is not measured cold: rounds
                         of S seconds (default 30) until the broker's JIT compiler is quiet (under 2%
                         of a core in a round, from --broker-metrics), at most --settle-max
  --settle-max S         longest settling in all (default 300)
  --pause S              seconds between rates, for backlogs to drain (default 3)
  --customers N          shoppers, registered/logged in first (default 50)
  --skus N               distinct SKUs ordered (default 1000)
  --products N           products read by the product phase (default 10000)
  --out DIR              where results go (default bench/results)
  --name NAME            file name stem (default: today's date, from --date or `date`)
  --label TEXT           what was measured (e.g. the commit), stored in the JSON
  --seed-seconds S       how long seeding the catalog took, stored in the JSON
default rates: checkout 100,500,1000; cart-checkout 50,200; cart-line 100,500;
search 500,2000; product 1000,5000; order-list 200,1000";

/// Units set on hand per SKU before each ordering rate, so no rate runs out.
const STOCK_PER_SKU: u64 = 1_000_000;
const FLOOR_TOPIC: &str = "bench.floor";
/// Kafka-only ceiling runs produce here: as many partitions as the local
/// profile's smallest topics would spread a producer's records over.
const CEILING_TOPIC: &str = "bench.ceiling";
const CEILING_PARTITIONS: i32 = 8;

fn default_rates(phase: Phase) -> Vec<f64> {
    match phase {
        Phase::Checkout => vec![100.0, 500.0, 1000.0],
        Phase::CartCheckout => vec![50.0, 200.0],
        Phase::CartLine => vec![100.0, 500.0],
        Phase::Search => vec![500.0, 2000.0],
        Phase::Product => vec![1000.0, 5000.0],
        Phase::OrderList => vec![200.0, 1000.0],
    }
}

struct Args {
    options: Options,
    brokers: String,
    run_dir: Option<PathBuf>,
    postgres_pid_file: Option<PathBuf>,
    kafka_tool: Option<PathBuf>,
    broker_metrics: Option<String>,
    processor_metrics: Vec<String>,
    ceiling: Duration,
    phases: Vec<Phase>,
    rates: BTreeMap<&'static str, Vec<f64>>,
    duration: Duration,
    warmup: Duration,
    pause: Duration,
    out: PathBuf,
    name: String,
    label: String,
    seed_seconds: Option<f64>,
    settle: Duration,
    settle_max: Duration,
}

fn parse_args() -> Result<Option<Args>> {
    let mut args = Args {
        options: Options {
            url: "http://127.0.0.1:28080".to_owned(),
            customers: 50,
            skus: 1000,
            lines: 3,
            products: 10_000,
            payment_method: "pm_card_visa".to_owned(),
            carts_per_customer: 4,
            timeout: Duration::from_secs(10),
            max_connections: 20_000,
        },
        brokers: std::env::var("D2C_KAFKA_BROKERS")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "127.0.0.1:29092".to_owned()),
        run_dir: None,
        postgres_pid_file: None,
        kafka_tool: None,
        broker_metrics: None,
        processor_metrics: Vec::new(),
        ceiling: Duration::from_secs(10),
        phases: Phase::ALL.to_vec(),
        rates: BTreeMap::new(),
        duration: Duration::from_secs(15),
        warmup: Duration::from_secs(3),
        pause: Duration::from_secs(3),
        out: PathBuf::from("bench/results"),
        name: String::new(),
        label: String::new(),
        seed_seconds: None,
        settle: Duration::from_secs(30),
        settle_max: Duration::from_secs(300),
    };
    let seconds = |flag: &str, value: &str| -> Result<Duration> {
        let s: f64 = parse_num(flag, value)?;
        if !(s.is_finite() && s >= 0.0) {
            bail!("{flag} must be >= 0");
        }
        Ok(Duration::from_secs_f64(s))
    };
    let mut flags = Flags::from_env(USAGE);
    while let Some(parsed) = flags.next_flag()? {
        let Flag::Value { name: flag, value } = parsed else {
            println!("{USAGE}");
            return Ok(None);
        };
        match flag.as_str() {
            "--url" => args.options.url = value.trim_end_matches('/').to_owned(),
            "--brokers" => args.brokers = value,
            "--run-dir" => args.run_dir = Some(value.into()),
            "--postgres-pid-file" => args.postgres_pid_file = Some(value.into()),
            "--kafka-tool" => args.kafka_tool = Some(value.into()),
            "--broker-metrics" => args.broker_metrics = Some(value),
            "--processor-metrics" => {
                args.processor_metrics = value
                    .split(',')
                    .map(str::trim)
                    .filter(|url| !url.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "--ceiling" => args.ceiling = seconds(&flag, &value)?,
            "--phases" => {
                args.phases = value
                    .split(',')
                    .map(|name| Phase::parse(name.trim()))
                    .collect::<Result<_>>()?;
            }
            "--rates" => {
                let (phase, list) = value
                    .split_once('=')
                    .with_context(|| format!("--rates {value:?}: PHASE=R1,R2"))?;
                let rates: Vec<f64> = list
                    .split(',')
                    .map(|rate| parse_num("--rates", rate.trim()))
                    .collect::<Result<_>>()?;
                if rates.iter().any(|rate| !(rate.is_finite() && *rate > 0.0)) {
                    bail!("--rates {value:?}: every rate must be > 0");
                }
                args.rates.insert(Phase::parse(phase)?.name(), rates);
            }
            "--duration" => args.duration = seconds(&flag, &value)?,
            "--warmup" => args.warmup = seconds(&flag, &value)?,
            "--settle" => args.settle = seconds(&flag, &value)?,
            "--settle-max" => args.settle_max = seconds(&flag, &value)?,
            "--pause" => args.pause = seconds(&flag, &value)?,
            "--customers" => args.options.customers = parse_num(&flag, &value)?,
            "--skus" => args.options.skus = parse_num(&flag, &value)?,
            "--products" => args.options.products = parse_num(&flag, &value)?,
            "--out" => args.out = value.into(),
            "--name" => args.name = value,
            "--label" => args.label = value,
            "--seed-seconds" => args.seed_seconds = Some(parse_num(&flag, &value)?),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if args.duration.is_zero() {
        bail!("--duration must be > 0");
    }
    if args.options.customers == 0 || args.options.skus == 0 || args.options.products == 0 {
        bail!("--customers, --skus and --products must be > 0");
    }
    if args.name.is_empty() {
        args.name = today()?;
    }
    Ok(Some(args))
}

fn today() -> Result<String> {
    let output = Command::new("date")
        .arg("+%F")
        .output()
        .context("running date")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A process of the stack whose CPU and memory a phase reports.
struct Process {
    name: String,
    pid: u32,
}

fn processes(args: &Args) -> Result<Vec<Process>> {
    let mut found = Vec::new();
    if let Some(run_dir) = &args.run_dir {
        let mut files: Vec<PathBuf> = std::fs::read_dir(run_dir.join("pids"))
            .with_context(|| format!("reading {}/pids", run_dir.display()))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "pid"))
            .collect();
        files.sort();
        files.push(run_dir.join("broker/broker.pid"));
        for file in files {
            let name = match file.file_stem().and_then(|stem| stem.to_str()) {
                Some("broker") => "kafka".to_owned(),
                Some(stem) => stem.to_owned(),
                None => continue,
            };
            found.push(Process {
                name,
                pid: procstat::pid_from_file(&file)?,
            });
        }
    }
    if let Some(file) = &args.postgres_pid_file {
        found.push(Process {
            name: "postgres".to_owned(),
            pid: procstat::pid_from_file(file)?,
        });
    }
    Ok(found)
}

fn sample(processes: &[Process]) -> Vec<Usage> {
    processes
        .iter()
        .map(|process| procstat::tree_usage(process.pid).unwrap_or_default())
        .collect()
}

#[derive(Serialize, Default, Clone)]
struct Floor {
    /// Kafka's `EndToEndLatency` (Java client, one record at a time, acks=all).
    kafka_end_to_end: Option<BTreeMap<String, f64>>,
    /// `broker-rtt`: our client's produce→consume round trip, settings as the
    /// services use them.
    rust_client_round_trip: Option<serde_json::Value>,
}

async fn create_topic(brokers: &str, name: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("creating the Kafka admin client")?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .with_context(|| format!("creating {name}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("creating {topic}: {code}"),
        }
    }
    Ok(())
}

/// `Avg latency: 0.6 ms` and `Percentiles: 50th = 0, 99th = 2, 99.9th = 5`.
fn parse_end_to_end(output: &str) -> Option<BTreeMap<String, f64>> {
    let mut figures = BTreeMap::new();
    for line in output.lines() {
        if let Some(rest) = line.trim().strip_prefix("Avg latency:") {
            let avg = rest.trim().trim_end_matches("ms").trim().parse().ok()?;
            figures.insert("avg_ms".to_owned(), avg);
        }
        if let Some(rest) = line.trim().strip_prefix("Percentiles:") {
            for part in rest.split(',') {
                let (name, value) = part.split_once('=')?;
                let key = format!("p{}_ms", name.trim().trim_end_matches("th"));
                figures.insert(key.replace('.', ""), value.trim().parse().ok()?);
            }
        }
    }
    (!figures.is_empty()).then_some(figures)
}

fn kafka_floor(args: &Args) -> Option<BTreeMap<String, f64>> {
    let tool = args.kafka_tool.as_ref()?;
    eprintln!("bench: Kafka's floor (EndToEndLatency, 5000 records, acks=all)");
    let output = Command::new(tool)
        .args([
            "tool",
            "org.apache.kafka.tools.EndToEndLatency",
            "--bootstrap-server",
            &args.brokers,
            "--topic",
            FLOOR_TOPIC,
            "--num-records",
            "5000",
            "--producer-acks",
            "all",
            "--record-size",
            "100",
        ])
        .output();
    match output {
        Ok(output) => {
            let text = String::from_utf8_lossy(&output.stdout);
            let parsed = parse_end_to_end(&text);
            if parsed.is_none() {
                eprintln!(
                    "bench: EndToEndLatency said nothing we can read:\n{text}{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            parsed
        }
        Err(e) => {
            eprintln!("bench: running {}: {e}", tool.display());
            None
        }
    }
}

fn rust_floor(args: &Args) -> Option<serde_json::Value> {
    eprintln!("bench: our client's round trip (broker-rtt, 3000 records at 300/s)");
    let binary = std::env::current_exe().ok()?.with_file_name("broker-rtt");
    let output = Command::new(binary)
        .args(["--brokers", &args.brokers, "--topic", FLOOR_TOPIC])
        .args(["--count", "3000", "--rate", "300"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let json = text
        .lines()
        .find_map(|line| line.strip_prefix("BROKER_RTT_JSON "));
    match json.and_then(|json| serde_json::from_str(json).ok()) {
        Some(value) => Some(value),
        None => {
            eprintln!(
                "bench: broker-rtt gave no result:\n{text}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            None
        }
    }
}

#[derive(Serialize)]
struct Step {
    phase: &'static str,
    #[serde(flatten)]
    report: Report,
    /// CPU of every process of the stack per answered operation (warmup
    /// included: its CPU is in the sample too).
    cpu_ms_per_op: f64,
    /// Cores each process kept busy over the step.
    cores_by_process: BTreeMap<String, f64>,
    /// CPU milliseconds of each process per answered operation.
    cpu_ms_per_op_by_process: BTreeMap<String, f64>,
    /// The broker's requests, records and our transactions per operation
    /// (with --broker-metrics).
    broker_work: Option<Work>,
    rss_mib_by_process: BTreeMap<String, f64>,
    /// The load generator's own cores (not in `cpu_ms_per_op`).
    bench_cores: f64,
}

#[derive(Serialize)]
struct Results {
    name: String,
    label: String,
    machine: BTreeMap<String, String>,
    seed_seconds: Option<f64>,
    /// The unmeasured settling runs: how the cold stack answered, round by
    /// round, and the broker's JIT compile seconds in each.
    settle: Vec<SettleRound>,
    floor: Floor,
    /// Kafka alone on this box (ProducerPerformance), same run.
    ceiling: Vec<Ceiling>,
    steps: Vec<Step>,
}

fn machine() -> BTreeMap<String, String> {
    let mut machine = BTreeMap::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    machine.insert("cores".to_owned(), cores.to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    if let Some(kib) = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|value| value.split_whitespace().next()?.parse::<f64>().ok())
    {
        machine.insert(
            "memory_gib".to_owned(),
            format!("{:.1}", kib / 1024.0 / 1024.0),
        );
    }
    let guarantee = std::env::var("D2C_PROCESSING_GUARANTEE")
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| "exactly_once".to_owned());
    machine.insert("processing_guarantee".to_owned(), guarantee);
    machine
}

/// One round of settling.
#[derive(Serialize)]
struct SettleRound {
    report: Report,
    /// Seconds the broker's JIT compilers worked during the round (None
    /// without the broker's metrics).
    broker_compile_s: Option<f64>,
}

/// Below this share of a core spent compiling in a round, the broker's JIT
/// counts as warm.
const JIT_QUIET_SHARE: f64 = 0.02;
const JIT_COMPILE_METRIC: &str = "jvm_compilation_time_seconds_total";

/// Checkouts at a modest rate, not measured, before the first ordering
/// phase: right after start and seeding the broker's JIT is cold and the
/// stack's first checkouts waited seconds (measured: the first 10 s of a
/// 100/s run answered 202), which is start-up, not steady state. The
/// broker's C2 compiler alone took a fifth of the box's CPU for minutes
/// after start (perf, 2026-12-07), so rounds go on until it is quiet.
async fn settle(
    args: &Args,
    shoppers: &Arc<Shoppers>,
    scraper: &Scraper,
) -> Result<Vec<SettleRound>> {
    let mut rounds = Vec::new();
    if args.settle.is_zero() || !args.phases.iter().any(|phase| phase.orders()) {
        return Ok(rounds);
    }
    shoppers.set_stock(STOCK_PER_SKU).await?;
    let mut settled_for = Duration::ZERO;
    while settled_for < args.settle_max.max(args.settle) {
        let compiled_before = scraper.broker_compile_seconds().await;
        let schedule = Schedule {
            rate: 50.0,
            duration: args.settle,
            warmup: Duration::ZERO,
            max_in_flight: args.options.max_connections,
            drain: args.options.timeout,
            label: "bench [settle] checkout 50/s".to_owned(),
        };
        let report = load::run(&schedule, |i| {
            Arc::clone(shoppers).perform(Phase::Checkout, i)
        })
        .await?;
        settled_for += args.settle;
        let compiled = match (compiled_before, scraper.broker_compile_seconds().await) {
            (Some(before), Some(after)) => Some(after - before),
            _ => None,
        };
        eprintln!(
            "bench: settling: p50 {:.1} ms, p99 {:.1} ms, {} answered 201, {} 202 (timed to confirmed); the broker's JIT compiled {}",
            report.p50_ms,
            report.p99_ms,
            report.done,
            report.accepted,
            compiled.map_or("(unknown)".to_owned(), |s| format!("{s:.2} s"))
        );
        rounds.push(SettleRound {
            report,
            broker_compile_s: compiled,
        });
        match compiled {
            Some(seconds) if seconds >= JIT_QUIET_SHARE * args.settle.as_secs_f64() => {}
            _ => break,
        }
    }
    Ok(rounds)
}

/// Scrapes the broker's and the processors' counters around a step.
struct Scraper {
    client: reqwest::Client,
    broker: Option<String>,
    processors: Vec<String>,
}

impl Scraper {
    fn new(args: &Args) -> Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .context("creating the metrics client")?,
            broker: args.broker_metrics.clone(),
            processors: args.processor_metrics.clone(),
        })
    }

    /// The broker JVM's JIT compile time so far (the exporter's JVM
    /// metrics), `None` without the broker's metrics.
    async fn broker_compile_seconds(&self) -> Option<f64> {
        let text = brokerwork::scrape_text(&self.client, self.broker.as_deref()?).await?;
        let seconds = exposition::sum_series(&text, JIT_COMPILE_METRIC, "");
        (seconds > 0.0).then_some(seconds)
    }

    async fn counters(&self) -> Option<(Counters, Counters)> {
        let broker = brokerwork::scrape(&self.client, self.broker.as_deref()?).await?;
        let processors = brokerwork::scrape_all(&self.client, &self.processors).await;
        Some((broker, processors))
    }
}

async fn run_step(
    args: &Args,
    shoppers: &Arc<Shoppers>,
    (processes, scraper): (&[Process], &Scraper),
    phase: Phase,
    rate: f64,
    position: &str,
) -> Result<Step> {
    if phase.orders() {
        shoppers.set_stock(STOCK_PER_SKU).await?;
    }
    if phase == Phase::CartLine {
        shoppers.open_carts().await?;
    }
    let schedule = Schedule {
        rate,
        duration: args.duration,
        warmup: args.warmup,
        max_in_flight: args.options.max_connections,
        drain: args.options.timeout,
        label: format!("bench [{position}] {} {rate}/s", phase.name()),
    };
    eprintln!(
        "bench [{position}]: {} at {rate}/s for {:?} (+{:?} warmup)",
        phase.name(),
        args.duration,
        args.warmup
    );
    let counters_before = scraper.counters().await;
    let before = sample(processes);
    let bench_before = procstat::tree_usage(std::process::id()).unwrap_or_default();
    let started = std::time::Instant::now();
    let report = load::run(&schedule, |i| Arc::clone(shoppers).perform(phase, i)).await?;
    let wall_s = started.elapsed().as_secs_f64();
    let after = sample(processes);
    let bench_after = procstat::tree_usage(std::process::id()).unwrap_or_default();
    let counters_after = scraper.counters().await;
    let operations = report.completed + report.warmup_ok;
    let broker_work = counters_before.zip(counters_after).map(
        |((broker_before, processors_before), (broker_after, processors_after))| {
            Work::per_operation(
                &broker_after.since(&broker_before),
                &processors_after.since(&processors_before),
                operations,
            )
        },
    );

    let mut cores_by_process = BTreeMap::new();
    let mut cpu_ms_per_op_by_process = BTreeMap::new();
    let mut rss_mib_by_process = BTreeMap::new();
    let mut cpu_s = 0.0;
    for ((process, before), after) in processes.iter().zip(&before).zip(&after) {
        let spent = (after.cpu_s - before.cpu_s).max(0.0);
        cpu_s += spent;
        cores_by_process.insert(process.name.clone(), round_to(spent / wall_s, 2));
        cpu_ms_per_op_by_process.insert(
            process.name.clone(),
            round_to(1000.0 * spent / operations.max(1) as f64, 2),
        );
        rss_mib_by_process.insert(
            process.name.clone(),
            round_to(after.rss_bytes as f64 / 1_048_576.0, 1),
        );
    }
    Ok(Step {
        phase: phase.name(),
        cpu_ms_per_op: round_to(1000.0 * cpu_s / operations.max(1) as f64, 3),
        cores_by_process,
        cpu_ms_per_op_by_process,
        broker_work,
        rss_mib_by_process,
        bench_cores: round_to((bench_after.cpu_s - bench_before.cpu_s) / wall_s, 2),
        report,
    })
}

fn errors_text(report: &Report) -> String {
    if report.errors.is_empty() {
        return "none".to_owned();
    }
    report
        .errors
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn busiest(step: &Step) -> String {
    let mut by_cores: Vec<(&String, &f64)> = step.cores_by_process.iter().collect();
    by_cores.sort_by(|a, b| b.1.total_cmp(a.1));
    by_cores
        .iter()
        .take(3)
        .map(|(name, cores)| format!("{name} {cores:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const TABLE_HEADER: &str = "| phase | offered/s | achieved/s | p50 ms | p95 ms | p99 ms | max ms | 201/200 | 202 | refused | errors | CPU ms/op | busiest (cores) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|";

fn table_row(step: &Step) -> String {
    let r = &step.report;
    format!(
        "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {:.2} | {} |",
        step.phase,
        r.target_rate,
        r.achieved_rate,
        r.p50_ms,
        r.p95_ms,
        r.p99_ms,
        r.max_ms,
        r.done,
        r.accepted,
        r.refused,
        errors_text(r),
        step.cpu_ms_per_op,
        busiest(step)
    )
}

const BROKER_HEADER: &str = "| phase | offered/s | broker requests/op | by API, per op | records/op | records/Produce | Fetch/record | transactions/op | batches/transaction | partitions/transaction | broker CPU ms/op | broker CPU µs/request |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

fn broker_row(phase: &str, rate: f64, work: &Work) -> String {
    let figure = |value: Option<f64>| value.map_or("–".to_owned(), |v| format!("{v}"));
    format!(
        "| {phase} | {rate} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        work.requests_total_per_op,
        work.requests_text(),
        work.records_per_op,
        figure(work.records_per_produce),
        figure(work.fetches_per_record),
        work.transactions_per_op,
        figure(work.batches_per_transaction),
        figure(work.partitions_per_transaction),
        figure(work.broker_cpu_ms_per_op),
        figure(work.broker_cpu_us_per_request),
    )
}

fn markdown(results: &Results) -> String {
    let mut text = format!(
        "# Benchmark {} ({})\n\nMachine: {} cores, {} GiB; processing guarantee {}.\n",
        results.name,
        results.label,
        results.machine.get("cores").map_or("?", String::as_str),
        results
            .machine
            .get("memory_gib")
            .map_or("?", String::as_str),
        results
            .machine
            .get("processing_guarantee")
            .map_or("?", String::as_str),
    );
    if let Some(seconds) = results.seed_seconds {
        text += &format!("Seeding the catalog took {seconds:.1} s.\n");
    }
    for (index, round) in results.settle.iter().enumerate() {
        let settle = &round.report;
        text += &format!(
            "Settling round {} (unmeasured checkouts at {}/s for {:.0} s): p50 {:.1} ms, p99 {:.1} ms, {} answered 201, {} 202 (timed to confirmed); the broker's JIT compiled {}.\n",
            index + 1,
            settle.target_rate,
            settle.duration_s,
            settle.p50_ms,
            settle.p99_ms,
            settle.done,
            settle.accepted,
            round
                .broker_compile_s
                .map_or("(unknown)".to_owned(), |s| format!("{s:.2} s"))
        );
    }
    text += "\n## Floor (same run)\n\n";
    if let Some(kafka) = &results.floor.kafka_end_to_end {
        text += &format!("- Kafka EndToEndLatency (Java, acks=all, one at a time): {kafka:?}\n");
    }
    if let Some(rust) = &results.floor.rust_client_round_trip {
        text += &format!("- our client's round trip (broker-rtt): {rust}\n");
    }
    if !results.ceiling.is_empty() {
        text += "\n## Kafka alone on this box (ProducerPerformance, 100-byte records, acks=all; same run)\n\n";
        text += ceiling::TABLE_HEADER;
        text.push('\n');
        for row in &results.ceiling {
            text += &ceiling::table_row(row);
            text.push('\n');
        }
    }
    text += "\n## Phases\n\n";
    text += TABLE_HEADER;
    text.push('\n');
    for step in &results.steps {
        text += &table_row(step);
        text.push('\n');
    }
    if results.steps.iter().any(|step| step.broker_work.is_some()) {
        text += "\n## The broker's work per operation\n\n";
        text += BROKER_HEADER;
        text.push('\n');
        for step in &results.steps {
            if let Some(work) = &step.broker_work {
                text += &broker_row(step.phase, step.report.target_rate, work);
                text.push('\n');
            }
        }
    }
    text += "\n## CPU milliseconds per operation, by process\n\n";
    for step in &results.steps {
        text += &format!(
            "- {} {}/s: {:?}\n",
            step.phase, step.report.target_rate, step.cpu_ms_per_op_by_process
        );
    }
    text += "\n## Resident memory at the end of each step (MiB)\n\n";
    for step in &results.steps {
        text += &format!(
            "- {} {}/s: {:?}\n",
            step.phase, step.report.target_rate, step.rss_mib_by_process
        );
    }
    text
}

fn write_outputs(args: &Args, results: &Results) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json_path = args.out.join(format!("{}.json", args.name));
    std::fs::write(&json_path, serde_json::to_string_pretty(results)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md_path = args.out.join(format!("{}.md", args.name));
    std::fs::write(&md_path, markdown(results))
        .with_context(|| format!("writing {}", md_path.display()))?;
    let mut written = vec![json_path, md_path];
    for phase in &args.phases {
        let curves: Vec<Curve> = results
            .steps
            .iter()
            .filter(|step| step.phase == phase.name())
            .map(|step| Curve {
                label: format!(
                    "{}/s offered (p99 {:.1} ms)",
                    step.report.target_rate, step.report.p99_ms
                ),
                points: step.report.percentiles.clone(),
            })
            .collect();
        if curves.is_empty() {
            continue;
        }
        let path = args.out.join(format!("{}-{}.png", args.name, phase.name()));
        let title = format!("{}: latency by percentile ({})", phase.name(), args.name);
        match plot::latency_by_percentile(&path, &title, &curves) {
            Ok(()) => written.push(path),
            Err(e) => eprintln!("bench: no plot for {}: {e}", phase.name()),
        }
    }
    Ok(written)
}

fn print_floor(floor: &Floor) {
    if let Some(kafka) = &floor.kafka_end_to_end {
        eprintln!("bench: Kafka EndToEndLatency {kafka:?}");
    }
    if let Some(rust) = &floor.rust_client_round_trip {
        eprintln!("bench: broker-rtt {rust}");
    }
}

async fn measure_floor(args: &Args) -> Floor {
    if let Err(e) = create_topic(&args.brokers, FLOOR_TOPIC, 1).await {
        eprintln!("bench: no floor measured: {e:#}");
        return Floor::default();
    }
    let floor = Floor {
        kafka_end_to_end: kafka_floor(args),
        rust_client_round_trip: rust_floor(args),
    };
    print_floor(&floor);
    floor
}

/// Kafka alone, each plan for `--ceiling` seconds (needs the tool and the
/// broker's metrics).
async fn measure_ceiling(args: &Args, scraper: &Scraper) -> Vec<Ceiling> {
    let (Some(tool), Some(metrics)) = (&args.kafka_tool, &scraper.broker) else {
        return Vec::new();
    };
    if args.ceiling.is_zero() {
        return Vec::new();
    }
    if let Err(e) = create_topic(&args.brokers, CEILING_TOPIC, CEILING_PARTITIONS).await {
        eprintln!("bench: no ceiling measured: {e:#}");
        return Vec::new();
    }
    let target = ceiling::Target {
        tool,
        brokers: &args.brokers,
        topic: CEILING_TOPIC,
        client: &scraper.client,
        metrics,
    };
    eprintln!("bench: the idle stack's requests, for 5 s (taken out of the ceiling runs)");
    let Some(background) = ceiling::background(&target, Duration::from_secs(5)).await else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for plan in &ceiling::PLANS {
        eprintln!(
            "bench: Kafka's ceiling: {} for {:?}",
            plan.label, args.ceiling
        );
        if let Some(row) = ceiling::run(&target, plan, args.ceiling, &background).await {
            eprintln!("bench: {}", ceiling::table_row(&row));
            rows.push(row);
        }
        // The next run starts on an idle broker.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    rows
}

#[tokio::main]
async fn main() -> Result<()> {
    let Some(args) = parse_args()? else {
        return Ok(());
    };
    let processes = processes(&args)?;
    let names: Vec<&str> = processes.iter().map(|p| p.name.as_str()).collect();
    eprintln!("bench: sampling {}", names.join(", "));
    let scraper = Scraper::new(&args)?;
    let floor = measure_floor(&args).await;
    let ceiling = measure_ceiling(&args, &scraper).await;
    let shoppers = Shoppers::new(args.options.clone(), &args.phases).await?;
    let plan: Vec<(Phase, f64)> = args
        .phases
        .iter()
        .flat_map(|&phase| {
            let rates = args
                .rates
                .get(phase.name())
                .cloned()
                .unwrap_or_else(|| default_rates(phase));
            rates.into_iter().map(move |rate| (phase, rate))
        })
        .collect();
    let settle = settle(&args, &shoppers, &scraper).await?;
    let mut steps = Vec::new();
    println!("{TABLE_HEADER}");
    for (index, &(phase, rate)) in plan.iter().enumerate() {
        let position = format!("{}/{}", index + 1, plan.len());
        let step = run_step(
            &args,
            &shoppers,
            (&processes, &scraper),
            phase,
            rate,
            &position,
        )
        .await?;
        println!("{}", table_row(&step));
        if let Some(work) = &step.broker_work {
            println!("{}", broker_row(step.phase, step.report.target_rate, work));
        }
        steps.push(step);
        tokio::time::sleep(args.pause).await;
    }
    let results = Results {
        name: args.name.clone(),
        label: args.label.clone(),
        machine: machine(),
        seed_seconds: args.seed_seconds,
        settle,
        floor,
        ceiling,
        steps,
    };
    for path in write_outputs(&args, &results)? {
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_end_to_end_output_is_read() {
        let output = "0\t0.9\n1000\t0.5\nAvg latency: 0.6370 ms\nPercentiles: 50th = 0, 99th = 2, 99.9th = 7\n";
        let figures = parse_end_to_end(output).expect("parses");
        assert_eq!(figures["avg_ms"], 0.637);
        assert_eq!(figures["p50_ms"], 0.0);
        assert_eq!(figures["p99_ms"], 2.0);
        assert_eq!(figures["p999_ms"], 7.0);
        assert!(parse_end_to_end("nothing").is_none());
    }
}
