//! The fault-injection run and its audit.
//!
//! A whole platform on a broker of its own (so it can be restarted) and a
//! database of its own, with the payment provider's protocol served on
//! loopback. While orders arrive at a steady rate through two gateways, the
//! run kills -9 and restarts processors, restarts the broker (its data
//! survives), restarts Postgres and kills one gateway for good. On a
//! cluster of three brokers (topics at three replicas, two in sync) it
//! kills -9 the broker that leads most of the platform's partitions instead,
//! keeps it down for a fifth of the run while orders go on, then restarts it. The
//! client does what a storefront behind a load balancer does: a request
//! that fails (connection refused, timeout, 5xx) is retried with the same
//! Idempotency-Key on the other gateway.
//!
//! Then the audit reads everything back and checks the invariants:
//! - no lost order: every request got an answer (201, 202, 402, 409), and
//!   every order that got 201 or 202 exists and settles;
//! - no duplicate order per Idempotency-Key: one order id per key and one
//!   `OrderPlaced` (message id) per order on `orders.events`;
//! - no oversold unit: stock never negative, nothing left reserved, sold
//!   equals the confirmed orders' units, and at most what was stocked;
//! - no double charge: the provider charged each order at most once, holds
//!   money for exactly the confirmed orders (checkout authorizes while it
//!   reserves, so an order refused for stock may be charged, and that hold
//!   must end voided);
//! - projections equal the events: the read side's latest version of every
//!   order has the status its owner reports, and the archive holds exactly
//!   the records of `orders.events`.

use crate::app::{Api, SETTLED, TEST_PRICE_MINOR};
use crate::customer;
use crate::fake_provider::FakeProvider;
use crate::harness::{cluster_brokers, KafkaNode, Platform, Service};
use crate::kafka::{leaders_by_broker, read_all};
use crate::postgres::TestDatabase;
use anyhow::{bail, Context};
use d2c_proto::orders::v1::OrderPlaced;
use prost::{Message, Name};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use tokio::time::Instant;

const SERVICES: &[&str] = &["orders", "inventory", "payments", "catalog", "gateway"];
/// The SKU whose stock runs out during the run (oversell pressure).
const SCARCE: &str = "FAULT-SCARCE";
const PLENTY: &str = "FAULT-PLENTY";
const CUSTOMERS: usize = 10;

#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// How long orders arrive; the faults are spread over it.
    pub duration: Duration,
    /// Orders per second.
    pub rate: f64,
    /// Restart the local Postgres cluster mid-run (needs root; it restarts
    /// the server every test shares, so only where nothing else runs).
    pub restart_postgres: bool,
    /// How long a client keeps retrying one request before it counts as
    /// unanswered.
    pub request_deadline: Duration,
    /// Kafka brokers: 1 (restarted mid-run) or 3 (the busiest leader killed
    /// and restarted later).
    pub brokers: usize,
    /// What happens during the run.
    pub plan: Plan,
    /// For every service, e.g. `D2C_KAFKA__GROUP_PROTOCOL=consumer`.
    pub env: Vec<(&'static str, String)>,
}

/// The events of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Crashes: processors, the broker (or the busiest of three), Postgres,
    /// a gateway.
    Faults,
    /// Growth and shrinkage, no crash but one: the orders service from 1 to
    /// 2 to 4 instances and back to 2 (SIGTERM, as a scale-down does), the
    /// gateway from 1 to 3, then kill -9 of one of the two orders instances
    /// (failover to the other).
    ScaleOut,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(40),
            rate: 8.0,
            restart_postgres: true,
            request_deadline: Duration::from_secs(90),
            brokers: 1,
            plan: Plan::Faults,
            env: Vec::new(),
        }
    }
}

/// What the audit counted, and what it found wrong.
#[derive(Debug, Default, Clone)]
pub struct Audit {
    pub requests: usize,
    pub statuses: BTreeMap<u16, usize>,
    pub retried_requests: usize,
    pub unanswered: usize,
    pub orders: usize,
    pub confirmed: usize,
    pub rejected: usize,
    pub scarce_stocked: i64,
    pub scarce_sold: i64,
    pub charges: usize,
    pub placed_events: usize,
    pub archived_order_events: i64,
    pub faults: Vec<String>,
    /// Processors that stopped by themselves and were restarted (as a
    /// supervisor does).
    pub restarts: Vec<String>,
    /// Hanging transactions the platform's sweeper aborted (a broker's crash
    /// can leave one; each is in the sweeper's log).
    pub aborted_hanging_transactions: f64,
    /// Latency by stretch of the run (between two events), by the time each
    /// request was scheduled: a partition that stops for a while shows as
    /// the longest wait of the requests it held.
    pub phases: Vec<PhaseStats>,
    pub violations: Vec<String>,
}

/// Requests scheduled within one stretch of the run.
#[derive(Debug, Default, Clone)]
pub struct PhaseStats {
    pub label: String,
    pub from_secs: f64,
    pub to_secs: f64,
    pub requests: usize,
    /// Requests per second that got their answer (any status) in the stretch.
    pub answered_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Answered 202 (the gateway stopped waiting).
    pub late: usize,
}

impl Audit {
    /// The longest a request waited for its answer, over the whole run.
    pub fn longest_wait_ms(&self) -> f64 {
        self.phases
            .iter()
            .map(|phase| phase.max_ms)
            .fold(0.0, f64::max)
    }
}

impl std::fmt::Display for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "faults: {}", self.faults.join(", "))?;
        if !self.restarts.is_empty() {
            writeln!(
                f,
                "restarted after stopping by themselves: {}",
                self.restarts.join(", ")
            )?;
        }
        if self.aborted_hanging_transactions > 0.0 {
            writeln!(
                f,
                "hanging transactions aborted by the sweeper: {}",
                self.aborted_hanging_transactions
            )?;
        }
        writeln!(
            f,
            "requests: {} (statuses {:?}; {} needed a retry; {} unanswered)",
            self.requests, self.statuses, self.retried_requests, self.unanswered
        )?;
        writeln!(
            f,
            "orders: {} ({} confirmed, {} rejected); {} OrderPlaced events; {} archived orders.events rows",
            self.orders, self.confirmed, self.rejected, self.placed_events, self.archived_order_events
        )?;
        writeln!(
            f,
            "{SCARCE}: {} stocked, {} sold; provider charges held: {}",
            self.scarce_stocked, self.scarce_sold, self.charges
        )?;
        if !self.phases.is_empty() {
            writeln!(f, "| stretch | from s | to s | requests | answered/s | p50 ms | p99 ms | max ms | 202 |")?;
            writeln!(f, "|---|---|---|---|---|---|---|---|---|")?;
            for phase in &self.phases {
                writeln!(
                    f,
                    "| {} | {:.1} | {:.1} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {} |",
                    phase.label,
                    phase.from_secs,
                    phase.to_secs,
                    phase.requests,
                    phase.answered_rate,
                    phase.p50_ms,
                    phase.p99_ms,
                    phase.max_ms,
                    phase.late
                )?;
            }
        }
        if self.violations.is_empty() {
            write!(f, "violations: none")
        } else {
            write!(
                f,
                "violations ({}):\n  {}",
                self.violations.len(),
                self.violations.join("\n  ")
            )
        }
    }
}

/// One request's story.
#[derive(Debug, Clone)]
struct RequestStory {
    customer: String,
    key: String,
    status: Option<u16>,
    body: Value,
    attempts: usize,
    scarce: bool,
    /// When it was due, from the start of the run.
    scheduled: Duration,
    /// From then to its answer (or to giving up).
    waited: Duration,
}

struct Stack {
    platform: Arc<Platform>,
    brokers: Vec<KafkaNode>,
    database: TestDatabase,
    provider: FakeProvider,
    /// Every processor instance, by instance name, supervised.
    processors: Arc<Supervised>,
    supervisor: tokio::task::JoinHandle<()>,
    _projector: Service,
    /// The hanging-transaction sweeper, as every deployment runs it.
    sweeper: Service,
    gateways: Vec<Option<Service>>,
    /// Where the clients send, as gateways come and go.
    gateway_urls: Arc<RwLock<Vec<String>>>,
    /// Orders instances beyond the first (scale-out), newest last.
    extra_orders: Vec<String>,
    /// The read side's database, for gateways started later.
    db: Vec<(&'static str, String)>,
    /// How long the gateways wait for a reply before answering 202.
    reply_timeout_ms: u64,
    _work: tempfile::TempDir,
}

impl Stack {
    async fn start(config: &FaultConfig) -> anyhow::Result<Self> {
        let work = tempfile::Builder::new().prefix("d2c-faults-").tempdir()?;
        let (brokers, platform) = if config.brokers > 1 {
            let brokers =
                KafkaNode::start_cluster(&work.path().join("brokers"), config.brokers).await?;
            let platform = Platform::on_brokers_with_profile(
                SERVICES,
                cluster_brokers(&brokers),
                "test-cluster",
            )
            .await?;
            (brokers, platform)
        } else {
            let broker = KafkaNode::start(&work.path().join("broker")).await?;
            let platform = Platform::on_broker(SERVICES, broker.brokers()).await?;
            (vec![broker], platform)
        };
        let database = TestDatabase::create().await?;
        let provider = FakeProvider::start().await?;
        let platform = platform.with_env(&config.env);
        let payments_env = vec![
            ("D2C_PAYMENT_PROVIDER", "http".to_owned()),
            ("D2C_PAYMENT_PROVIDER_URL", provider.url()),
            ("D2C_PAYMENT_TIMEOUT_MS", "1000".to_owned()),
            ("D2C_PAYMENT_RETRY_MAX_MS", "1000".to_owned()),
        ];
        let db = [("D2C_DATABASE_URL", database.url.clone())];
        let platform = Arc::new(platform);
        let processors = Arc::new(Supervised {
            platform: Arc::clone(&platform),
            payments_env,
            running: tokio::sync::Mutex::new(BTreeMap::new()),
            restarts: Mutex::new(Vec::new()),
        });
        for service in ["orders", "inventory", "payments", "catalog"] {
            processors.start(service, service).await?;
        }
        let supervisor = tokio::spawn(Arc::clone(&processors).supervise());
        // Past every transaction timeout of the run (the processors' is 10 s),
        // soon enough to free a partition before the audit's 120 s wait.
        let sweeper = platform
            .sweeper(&[
                ("D2C_SWEEPER_INTERVAL_MS", "5000".to_owned()),
                ("D2C_SWEEPER_MIN_AGE_MS", "30000".to_owned()),
            ])
            .await?;
        let projector = platform.projector("projector", &db).await?;
        projector.wait_ready(Duration::from_secs(60)).await?;
        let mut gateways = Vec::new();
        let first_gateways = if config.plan == Plan::ScaleOut { 1 } else { 2 };
        // Scale-out measures how long requests wait: a gateway that answered
        // 202 after 3 s would cut every longer wait short.
        let reply_timeout_ms = if config.plan == Plan::ScaleOut {
            60_000
        } else {
            3_000
        };
        for index in 0..first_gateways {
            let gateway = platform
                .gateway_ready_with(&format!("gateway-{index}"), index, reply_timeout_ms, &db)
                .await?;
            gateways.push(Some(gateway));
        }
        Ok(Self {
            platform,
            brokers,
            database,
            provider,
            processors,
            supervisor,
            _projector: projector,
            sweeper,
            gateway_urls: Arc::new(RwLock::new(
                gateways
                    .iter()
                    .flatten()
                    .map(|gateway| gateway.url(""))
                    .collect(),
            )),
            gateways,
            extra_orders: Vec::new(),
            db: db.to_vec(),
            reply_timeout_ms,
            _work: work,
        })
    }

    fn gateway_url(&self) -> anyhow::Result<String> {
        self.gateways
            .iter()
            .flatten()
            .next()
            .map(|gateway| gateway.url(""))
            .context("no gateway left")
    }

    /// The broker (index into `brokers`) leading most of the platform's
    /// partitions, and how many it leads.
    fn busiest_broker(&self) -> anyhow::Result<(usize, usize)> {
        let counts = leaders_by_broker(&self.platform.brokers, &self.platform.prefix)?;
        let (leader, led) = counts
            .into_iter()
            .max_by_key(|(_, led)| *led)
            .context("no partition has a leader")?;
        let index = self
            .brokers
            .iter()
            .position(|node| node.node_id() == leader)
            .with_context(|| format!("leader {leader} is none of the test's brokers"))?;
        Ok((index, led))
    }

    async fn restart_processor(&mut self, service: &'static str) -> anyhow::Result<()> {
        self.processors.kill(service).await?;
        self.processors.start(service, service).await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

/// The processor instances of a run, restarted when one exits by itself,
/// as Kubernetes restarts a pod whose process ended (an instance stops
/// itself when it cannot go on: a group membership stuck past
/// D2C_MEMBERSHIP_TIMEOUT_MS, a transaction wedged in the client).
struct Supervised {
    platform: Arc<Platform>,
    payments_env: Vec<(&'static str, String)>,
    /// Instance name -> (service, process).
    running: tokio::sync::Mutex<BTreeMap<String, (&'static str, Service)>>,
    /// Instances that exited by themselves and were started again.
    restarts: Mutex<Vec<String>>,
}

impl Supervised {
    async fn start(&self, service: &'static str, name: &str) -> anyhow::Result<()> {
        let env: &[(&str, String)] = if service == "payments" {
            &self.payments_env
        } else {
            &[]
        };
        let started = self.platform.processor_ready(service, name, env).await?;
        self.running
            .lock()
            .await
            .insert(name.to_owned(), (service, started));
        Ok(())
    }

    /// No longer supervised: the caller stops it.
    async fn take(&self, name: &str) -> Option<Service> {
        let removed = self.running.lock().await.remove(name);
        removed.map(|(_, process)| process)
    }

    /// kill -9, and no restart: the instance is gone until started again.
    async fn kill(&self, name: &str) -> anyhow::Result<()> {
        if let Some(mut process) = self.take(name).await {
            process.kill9().await?;
        }
        Ok(())
    }

    /// SIGTERM, as a scale-down stops an instance; no restart.
    async fn terminate(&self, name: &str) -> anyhow::Result<()> {
        if let Some(mut process) = self.take(name).await {
            process.terminate().await?;
        }
        Ok(())
    }

    async fn supervise(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let exited: Vec<(String, &'static str)> = self
                .running
                .lock()
                .await
                .iter_mut()
                .filter_map(|(name, (service, process))| {
                    process.has_exited().then(|| (name.clone(), *service))
                })
                .collect();
            for (name, service) in exited {
                self.restarts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(name.clone());
                if let Err(error) = self.start(service, &name).await {
                    eprintln!("supervisor: restarting {name} failed: {error:#}");
                }
            }
        }
    }

    fn restarts(&self) -> Vec<String> {
        self.restarts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Restarts the project's Postgres cluster, through `./dev` (which knows
/// where it lives and as which user it runs).
async fn restart_postgres() -> anyhow::Result<()> {
    let dev = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev");
    let output = tokio::process::Command::new(&dev)
        .arg("postgres-restart")
        .output()
        .await
        .with_context(|| format!("running {} postgres-restart", dev.display()))?;
    if !output.status.success() {
        bail!(
            "restarting Postgres failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn order_body(index: usize) -> (Value, bool) {
    let scarce = index.is_multiple_of(2);
    let mut lines =
        vec![json!({"sku": PLENTY, "quantity": 1, "unit_price_minor": TEST_PRICE_MINOR})];
    if scarce {
        lines.push(json!({"sku": SCARCE, "quantity": 1, "unit_price_minor": TEST_PRICE_MINOR}));
    }
    // Every 15th order is declined by the provider (a 402 path under faults).
    let payment_method = if index % 15 == 7 {
        "pm_card_chargeDeclined"
    } else {
        "pm_card_visa"
    };
    (
        json!({"currency": "EUR", "payment_method": payment_method, "lines": lines}),
        scarce,
    )
}

/// Sends one order until some gateway answers it, alternating gateways.
async fn send_until_answered(
    clients: &[reqwest::Client],
    gateways: &RwLock<Vec<String>>,
    index: usize,
    deadline: Duration,
    scheduled: (Instant, Duration),
) -> RequestStory {
    let (started, due) = scheduled;
    let customer = format!("fault-customer-{}", index % CUSTOMERS);
    let client = &clients[index % CUSTOMERS];
    let key = format!("fault-{index}");
    let (body, scarce) = order_body(index);
    let give_up = Instant::now() + deadline;
    let mut attempts = 0;
    let answer = loop {
        let gateway = {
            let gateways = gateways.read().unwrap_or_else(PoisonError::into_inner);
            gateways[(index + attempts) % gateways.len()].clone()
        };
        attempts += 1;
        let sent = client
            .post(format!("{gateway}/orders"))
            .header("Idempotency-Key", &key)
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await;
        if let Ok(response) = sent {
            let status = response.status().as_u16();
            if status < 500 {
                break Some((status, response.json().await.unwrap_or(Value::Null)));
            }
        }
        if Instant::now() > give_up {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(250 * attempts.min(8) as u64)).await;
    };
    let (status, body) = answer.map_or((None, Value::Null), |(status, body)| (Some(status), body));
    RequestStory {
        customer,
        key,
        status,
        body,
        attempts,
        scarce,
        scheduled: due,
        waited: started.elapsed().saturating_sub(due),
    }
}

/// For tests: [`run`], its audit printed, and a panic (with the audit) when
/// the run could not be done, found a violation, or did not send every
/// request it was meant to.
pub async fn run_clean(config: FaultConfig) -> Audit {
    let expected = (config.duration.as_secs_f64() * config.rate).ceil() as usize;
    let audit = run(config).await.expect("the run ran");
    eprintln!("{audit}");
    assert!(audit.violations.is_empty(), "{audit}");
    assert_eq!(audit.requests, expected, "{audit}");
    audit
}

/// Runs the faults and the audit; `Ok` carries the audit whatever it found
/// (its `violations` say), `Err` means the run itself could not be done.
pub async fn run(config: FaultConfig) -> anyhow::Result<Audit> {
    let mut stack = Stack::start(&config).await?;
    let result = run_on(&mut stack, &config).await;
    if result.is_err()
        || result
            .as_ref()
            .is_ok_and(|audit| !audit.violations.is_empty())
    {
        stack.platform.print_logs();
    }
    result
}

async fn run_on(stack: &mut Stack, config: &FaultConfig) -> anyhow::Result<Audit> {
    let total = (config.duration.as_secs_f64() * config.rate).ceil() as usize;
    // Enough scarce units for about a third of the orders that want one.
    let scarce_stock = (total / 6).max(1) as i64;
    let admin = Api::new(customer::admin_client(), stack.gateway_url()?);
    admin.stock_sku(SCARCE, scarce_stock).await?;
    admin.stock_sku(PLENTY, 1_000_000).await?;

    let clients: Arc<Vec<reqwest::Client>> = Arc::new(
        (0..CUSTOMERS)
            .map(|index| customer::client(&format!("fault-customer-{index}")))
            .collect(),
    );
    let gateways: Arc<RwLock<Vec<String>>> = Arc::clone(&stack.gateway_urls);
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let started = Instant::now();
    let driver = {
        let (clients, gateways, outcomes) = (
            Arc::clone(&clients),
            Arc::clone(&gateways),
            Arc::clone(&outcomes),
        );
        let (rate, deadline) = (config.rate, config.request_deadline);
        tokio::spawn(async move {
            let mut tasks = Vec::with_capacity(total);
            for index in 0..total {
                let due = Duration::from_secs_f64(index as f64 / rate);
                tokio::time::sleep_until(started + due).await;
                let (clients, gateways, outcomes) = (
                    Arc::clone(&clients),
                    Arc::clone(&gateways),
                    Arc::clone(&outcomes),
                );
                tasks.push(tokio::spawn(async move {
                    let outcome =
                        send_until_answered(&clients, &gateways, index, deadline, (started, due))
                            .await;
                    outcomes
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(outcome);
                }));
            }
            futures::future::join_all(tasks).await;
        })
    };

    let mut audit = Audit::default();
    let mut marks = Vec::new();
    match config.plan {
        Plan::Faults => inject_faults(stack, config, started, &mut audit.faults).await?,
        Plan::ScaleOut => scale(stack, config, started, &mut audit.faults, &mut marks).await?,
    }
    driver.await.context("the order driver panicked")?;
    let outcomes = outcomes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if config.plan == Plan::ScaleOut {
        audit.phases = phase_stats(&outcomes, &marks, config.duration);
    }
    audit.scarce_stocked = scarce_stock;
    audit_run(stack, &outcomes, &mut audit).await?;
    audit.restarts = stack.processors.restarts();
    Ok(audit)
}

/// The faults, spread over the run; each is logged with when it happened.
async fn inject_faults(
    stack: &mut Stack,
    config: &FaultConfig,
    started: Instant,
    log: &mut Vec<String>,
) -> anyhow::Result<()> {
    let at = |fraction: f64| started + config.duration.mul_f64(fraction);
    let mut note =
        |what: &str| log.push(format!("{what} at {:.1}s", started.elapsed().as_secs_f64()));

    tokio::time::sleep_until(at(0.12)).await;
    stack.restart_processor("inventory").await?;
    note("kill -9 + restart inventory");

    tokio::time::sleep_until(at(0.25)).await;
    stack.restart_processor("payments").await?;
    note("kill -9 + restart payments");

    if stack.brokers.len() > 1 {
        tokio::time::sleep_until(at(0.35)).await;
        let (index, led) = stack.busiest_broker()?;
        stack.brokers[index].kill().await?;
        note(&format!(
            "kill -9 broker {} (leader of {led} partitions)",
            stack.brokers[index].node_id()
        ));
        tokio::time::sleep_until(at(0.55)).await;
        stack.brokers[index].restart().await?;
        note(&format!(
            "restart broker {}",
            stack.brokers[index].node_id()
        ));
    } else {
        tokio::time::sleep_until(at(0.40)).await;
        stack.brokers[0].kill().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        stack.brokers[0].restart().await?;
        note("kill -9 + restart the broker");
    }

    if config.restart_postgres {
        tokio::time::sleep_until(at(0.55)).await;
        restart_postgres().await?;
        note("restart Postgres");
    }

    tokio::time::sleep_until(at(0.70)).await;
    if let Some(mut gateway) = stack.gateways.get_mut(1).and_then(Option::take) {
        gateway.kill9().await?;
    }
    note("kill -9 gateway-1 (for good)");

    tokio::time::sleep_until(at(0.85)).await;
    stack.restart_processor("orders").await?;
    note("kill -9 + restart orders");
    Ok(())
}

/// The scale-out plan: (seconds into the run, what the stack looks like
/// from then on) marks the stretches the latency is reported by.
async fn scale(
    stack: &mut Stack,
    config: &FaultConfig,
    started: Instant,
    log: &mut Vec<String>,
    marks: &mut Vec<(f64, String)>,
) -> anyhow::Result<()> {
    let at = |fraction: f64| started + config.duration.mul_f64(fraction);
    let mut mark = |what: &str, stack_now: &str| {
        let secs = started.elapsed().as_secs_f64();
        log.push(format!("{what} at {secs:.1}s"));
        marks.push((secs, stack_now.to_owned()));
    };
    mark("start", "orders x1, gateway x1");

    tokio::time::sleep_until(at(0.12)).await;
    stack.add_orders("orders-2").await?;
    mark("orders 1 -> 2", "orders x2, gateway x1");

    tokio::time::sleep_until(at(0.24)).await;
    stack.add_orders("orders-3").await?;
    stack.add_orders("orders-4").await?;
    mark("orders 2 -> 4", "orders x4, gateway x1");

    tokio::time::sleep_until(at(0.36)).await;
    stack.add_gateway().await?;
    stack.add_gateway().await?;
    mark("gateway 1 -> 3", "orders x4, gateway x3");

    tokio::time::sleep_until(at(0.52)).await;
    stack.remove_orders().await?;
    stack.remove_orders().await?;
    mark("orders 4 -> 2 (SIGTERM)", "orders x2, gateway x3");

    tokio::time::sleep_until(at(0.70)).await;
    stack.kill_orders().await?;
    mark(
        "kill -9 one of 2 orders (failover)",
        "orders x1 after failover, gateway x3",
    );
    Ok(())
}

impl Stack {
    async fn add_orders(&mut self, name: &str) -> anyhow::Result<()> {
        self.processors.start("orders", name).await?;
        self.extra_orders.push(name.to_owned());
        Ok(())
    }

    /// The newest extra orders instance, stopped as a scale-down stops it.
    async fn remove_orders(&mut self) -> anyhow::Result<()> {
        if let Some(name) = self.extra_orders.pop() {
            self.processors.terminate(&name).await?;
        }
        Ok(())
    }

    /// The first orders instance, killed -9 for good: its partitions fail
    /// over to the extra one left.
    async fn kill_orders(&mut self) -> anyhow::Result<()> {
        self.processors.kill("orders").await
    }

    async fn add_gateway(&mut self) -> anyhow::Result<()> {
        let index = self.gateways.len();
        let gateway = self
            .platform
            .gateway_ready_with(
                &format!("gateway-{index}"),
                index as i32,
                self.reply_timeout_ms,
                &self.db,
            )
            .await?;
        self.gateway_urls
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(gateway.url(""));
        self.gateways.push(Some(gateway));
        Ok(())
    }
}

/// Latency of the requests scheduled in each stretch between two marks.
fn phase_stats(
    outcomes: &[RequestStory],
    marks: &[(f64, String)],
    run: Duration,
) -> Vec<PhaseStats> {
    let mut phases = Vec::new();
    for (index, (from, label)) in marks.iter().enumerate() {
        let to = marks
            .get(index + 1)
            .map_or(run.as_secs_f64(), |(next, _)| *next);
        let in_stretch: Vec<&RequestStory> = outcomes
            .iter()
            .filter(|outcome| (*from..to).contains(&outcome.scheduled.as_secs_f64()))
            .collect();
        let mut waits: Vec<f64> = in_stretch
            .iter()
            .map(|outcome| outcome.waited.as_secs_f64() * 1000.0)
            .collect();
        waits.sort_by(f64::total_cmp);
        let answered = in_stretch.iter().filter(|o| o.status.is_some()).count();
        let late = in_stretch.iter().filter(|o| o.status == Some(202)).count();
        let quantile = |q: f64| {
            waits
                .get(((waits.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0.0)
        };
        phases.push(PhaseStats {
            label: label.clone(),
            from_secs: *from,
            to_secs: to,
            requests: waits.len(),
            answered_rate: answered as f64 / (to - from).max(0.001),
            p50_ms: quantile(0.50),
            p99_ms: quantile(0.99),
            max_ms: waits.last().copied().unwrap_or(0.0),
            late,
        });
    }
    phases
}

async fn audit_run(
    stack: &Stack,
    outcomes: &[RequestStory],
    audit: &mut Audit,
) -> anyhow::Result<()> {
    audit.requests = outcomes.len();
    let base = stack.gateway_url()?;
    let mut by_order: BTreeMap<String, &RequestStory> = BTreeMap::new();
    for outcome in outcomes {
        if outcome.attempts > 1 {
            audit.retried_requests += 1;
        }
        let Some(status) = outcome.status else {
            audit.unanswered += 1;
            audit
                .violations
                .push(format!("{}: never answered", outcome.key));
            continue;
        };
        *audit.statuses.entry(status).or_default() += 1;
        let order_id = outcome.body["order_id"]
            .as_str()
            .or_else(|| outcome.body["error"]["order_id"].as_str());
        match (status, order_id) {
            (201 | 202 | 402 | 409, Some(order_id)) => {
                let expected =
                    d2c_proto::ids::order_id(&outcome.customer, &outcome.key).to_string();
                if order_id != expected {
                    audit.violations.push(format!(
                        "{}: answered order {order_id}, not {expected}",
                        outcome.key
                    ));
                }
                by_order.insert(order_id.to_owned(), outcome);
            }
            _ => audit.violations.push(format!(
                "{}: unexpected answer {status} {}",
                outcome.key, outcome.body
            )),
        }
    }
    audit.orders = by_order.len();

    let settled = settle_orders(&base, &by_order, audit).await;
    audit.aborted_hanging_transactions = stack
        .sweeper
        .metric("d2c_sweeper_aborted_transactions_total")
        .await
        .unwrap_or(f64::NAN);
    check_stock(&base, &settled, by_order.len(), audit).await?;
    check_charges(stack, &settled, audit).await;
    check_events(stack, &by_order, audit).await?;
    check_projection(stack, &settled, audit).await;
    Ok(())
}

/// Every order's final state, as its owner reports it.
async fn settle_orders(
    base: &str,
    by_order: &BTreeMap<String, &RequestStory>,
    audit: &mut Audit,
) -> BTreeMap<String, (Value, bool)> {
    let mut settled = BTreeMap::new();
    for (order_id, outcome) in by_order {
        let client = Api::new(customer::client(&outcome.customer), base);
        match client
            .wait_for_status(order_id, SETTLED, Duration::from_secs(120))
            .await
        {
            Ok(order) => {
                match order["status"].as_str() {
                    Some("confirmed") => audit.confirmed += 1,
                    Some("rejected") => audit.rejected += 1,
                    _ => {}
                }
                let answered = outcome.status.unwrap_or_default();
                let final_status = order["status"].as_str().unwrap_or_default();
                let consistent = match answered {
                    201 => final_status == "confirmed",
                    402 | 409 => final_status == "rejected",
                    _ => true,
                };
                if !consistent {
                    audit.violations.push(format!(
                        "{order_id}: answered {answered} but ended {final_status}"
                    ));
                }
                settled.insert(order_id.clone(), (order, outcome.scarce));
            }
            Err(error) => audit
                .violations
                .push(format!("{order_id}: lost ({error:#})")),
        }
    }
    settled
}

/// A SKU's stock as inventory reports it, asking again while the answer is
/// 503 (an instance restarting after it stopped itself), as a client told
/// "retry shortly" does, for up to 90 s.
async fn stock_once_answered(anyone: &Api, sku: &str) -> anyhow::Result<Value> {
    let give_up = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, stock) = anyone.stock(sku).await?;
        if status != 503 || Instant::now() > give_up {
            return Ok(stock);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn check_stock(
    base: &str,
    settled: &BTreeMap<String, (Value, bool)>,
    orders: usize,
    audit: &mut Audit,
) -> anyhow::Result<()> {
    let anyone = Api::new(reqwest::Client::new(), base);
    let confirmed = |scarce_only: bool| {
        settled
            .values()
            .filter(|(order, scarce)| order["status"] == "confirmed" && (*scarce || !scarce_only))
            .count() as i64
    };
    for (sku, expected_sold, stocked) in [
        (SCARCE, confirmed(true), audit.scarce_stocked),
        (PLENTY, confirmed(false), 1_000_000),
    ] {
        let stock = stock_once_answered(&anyone, sku).await?;
        let number = |field: &str| stock[field].as_i64().unwrap_or(i64::MIN);
        if sku == SCARCE {
            audit.scarce_sold = number("sold");
        }
        if number("on_hand") < 0 || number("available") < 0 {
            audit
                .violations
                .push(format!("{sku}: negative stock {stock}"));
        }
        if number("reserved") != 0 {
            audit.violations.push(format!(
                "{sku}: units still reserved after every order settled: {stock}"
            ));
        }
        if number("sold") != expected_sold || number("sold") > stocked {
            audit.violations.push(format!(
                "{sku}: sold {} but {expected_sold} confirmed orders took one (stocked {stocked}, {orders} orders)",
                number("sold")
            ));
        }
    }
    Ok(())
}

async fn check_charges(
    stack: &Stack,
    settled: &BTreeMap<String, (Value, bool)>,
    audit: &mut Audit,
) {
    let confirmed: BTreeSet<&String> = settled
        .iter()
        .filter(|(_, (order, _))| order["status"] == "confirmed")
        .map(|(order_id, _)| order_id)
        .collect();
    // Voids of refused orders' holds settle after the orders do.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut held = stack.provider.held_by_order();
    while held.keys().collect::<BTreeSet<_>>() != confirmed && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        held = stack.provider.held_by_order();
    }
    let charges = stack.provider.charges_by_order();
    audit.charges = held.values().sum();
    for (order_id, count) in &charges {
        if *count != 1 {
            audit
                .violations
                .push(format!("{order_id}: charged {count} times"));
        }
    }
    for (order_id, count) in &held {
        if !confirmed.contains(order_id) {
            audit.violations.push(format!(
                "{order_id}: {count} charge(s) still held but the order is not confirmed"
            ));
        }
    }
    for order_id in confirmed {
        if !held.contains_key(order_id) {
            audit
                .violations
                .push(format!("{order_id}: confirmed but no charge held"));
        }
    }
}

/// One order id per key, one OrderPlaced message id per order, no order
/// nobody asked for.
async fn check_events(
    stack: &Stack,
    by_order: &BTreeMap<String, &RequestStory>,
    audit: &mut Audit,
) -> anyhow::Result<()> {
    let brokers = stack.platform.brokers.clone();
    let topic = stack.platform.topic("orders.events");
    let records =
        tokio::task::spawn_blocking(move || read_all(&brokers, &topic, Duration::from_secs(60)))
            .await??;
    let mut placed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for record in &records {
        let Some(envelope) = &record.envelope else {
            continue;
        };
        if envelope.message_type != OrderPlaced::full_name() {
            continue;
        }
        let order = OrderPlaced::decode(record.payload.as_slice())?
            .order
            .map(|order| order.order_id)
            .unwrap_or_default();
        placed
            .entry(order)
            .or_default()
            .insert(envelope.message_id.to_string());
    }
    audit.placed_events = placed.values().map(BTreeSet::len).sum();
    for (order_id, ids) in &placed {
        if ids.len() != 1 {
            audit
                .violations
                .push(format!("{order_id}: placed {} times", ids.len()));
        }
        if !by_order.contains_key(order_id) {
            audit
                .violations
                .push(format!("{order_id}: an order no request made"));
        }
    }
    // The archive holds exactly the topic's records, once the projector has
    // caught up.
    let sql = format!(
        "SELECT count(*) FROM events WHERE topic = '{}'",
        stack.platform.topic("orders.events")
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        audit.archived_order_events = stack.database.count(&sql).await;
        if audit.archived_order_events == records.len() as i64 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if audit.archived_order_events != records.len() as i64 {
        audit.violations.push(format!(
            "the archive has {} orders.events rows, the topic {} records",
            audit.archived_order_events,
            records.len()
        ));
    }
    Ok(())
}

/// The read side's latest version of each order has its owner's status.
async fn check_projection(
    stack: &Stack,
    settled: &BTreeMap<String, (Value, bool)>,
    audit: &mut Audit,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut mismatches = Vec::new();
        for (order_id, (order, _)) in settled {
            let projected = d2c_readside::order(&stack.database.pool, order_id).await;
            let status = match &projected {
                Ok(Some(projected)) => d2c_gateway::orders::status_label(projected.status),
                Ok(None) => "missing",
                Err(_) => "unreadable",
            };
            if order["status"].as_str() != Some(status) {
                mismatches.push(format!(
                    "{order_id}: read side says {status}, the owner {}",
                    order["status"]
                ));
            }
        }
        if mismatches.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            audit.violations.extend(mismatches);
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
