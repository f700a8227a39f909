//! Starting and stopping the platform's real binaries for a test.
//!
//! Each [`Platform`] gets its own topic prefix (so tests share one broker
//! without seeing each other), its own state directories, and ports chosen by
//! the OS. Binaries are found in D2C_BIN_DIR, or next to the test executable's
//! target directory; `./dev test` builds them first.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The topology profile every test applies: `test` (topology.toml says why
/// it has fewer partitions than production), or D2C_TEST_TOPOLOGY_PROFILE
/// (`local` runs the tests at production partition counts).
pub fn test_profile() -> String {
    std::env::var("D2C_TEST_TOPOLOGY_PROFILE")
        .ok()
        .filter(|profile| !profile.is_empty())
        .unwrap_or_else(|| "test".into())
}

/// Partitions of an entity topic under [`test_profile`], as the topology
/// file declares them.
pub fn test_partitions() -> i32 {
    let profile = test_profile();
    d2c_topology::TopologyFile::embedded()
        .and_then(|file| file.resolve(Some(&profile)))
        .ok()
        .and_then(|topology| {
            topology
                .topic(d2c_topology::topic::ORDERS_MESSAGES)
                .map(|topic| topic.partitions)
        })
        .unwrap_or_else(|| panic!("topology.toml has no usable `{profile}` profile"))
}

pub fn brokers() -> String {
    std::env::var("D2C_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("D2C_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test-binary> → target/<profile>
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/debug"))
}

fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the binaries first (cargo build --bins)",
            path.display()
        );
    }
    Ok(path)
}

pub struct Platform {
    pub prefix: String,
    pub brokers: String,
    pub work: tempfile::TempDir,
    /// Set for every service this platform starts (see [`Platform::with_env`]).
    env: Vec<(String, String)>,
}

impl Platform {
    /// A fresh prefix with the topology applied under it (only the topics of
    /// `services`, to keep the broker small).
    pub async fn new(services: &[&str]) -> anyhow::Result<Self> {
        Self::on_broker(services, brokers()).await
    }

    /// [`Platform::new`] on the broker at `brokers` (e.g. a test's own
    /// [`KafkaNode`]).
    pub async fn on_broker(services: &[&str], brokers: String) -> anyhow::Result<Self> {
        Self::on_brokers_with_profile(services, brokers, &test_profile()).await
    }

    /// [`Platform::on_broker`] with the topology's `profile` (e.g.
    /// `test-cluster`: three replicas, two in sync).
    pub async fn on_brokers_with_profile(
        services: &[&str],
        brokers: String,
        profile: &str,
    ) -> anyhow::Result<Self> {
        let prefix = format!("t{}.", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let output = Command::new(binary("topology")?)
            .args([
                "apply",
                "--prefix",
                &prefix,
                "--brokers",
                &brokers,
                "--only",
                &services.join(","),
                "--profile",
                profile,
            ])
            .output()
            .await
            .context("running topology apply")?;
        if !output.status.success() {
            bail!(
                "topology apply failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let work = tempfile::Builder::new()
            .prefix("d2c-it-")
            .disable_cleanup(std::env::var_os("D2C_KEEP_LOGS").is_some())
            .tempdir()?;
        Ok(Self {
            prefix,
            brokers,
            work,
            env: Vec::new(),
        })
    }

    /// `env` for every service started from now on (under each service's
    /// own `env`), e.g. where to export traces.
    pub fn with_env(mut self, env: &[(&str, String)]) -> Self {
        self.env.extend(
            env.iter()
                .map(|(key, value)| ((*key).to_owned(), value.clone())),
        );
        self
    }

    fn base_env(&self, command: &mut Command) {
        command
            .env("D2C_KAFKA_BROKERS", &self.brokers)
            .env("D2C_TOPIC_PREFIX", &self.prefix)
            .env(
                "RUST_LOG",
                std::env::var("D2C_TEST_LOG").unwrap_or_else(|_| "info".into()),
            );
        for (key, value) in &self.env {
            command.env(key, value);
        }
    }

    pub fn topic(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    /// A processor of `service` (orders, inventory, payments) whose RocksDB
    /// lives in `<work>/<name>` (reuse the name to restart "the same"
    /// instance), with `env` on top of the platform's.
    pub async fn processor(
        &self,
        service: &str,
        name: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        let mut command = Command::new(binary(&format!("d2c-{service}"))?);
        self.base_env(&mut command);
        command
            .env("D2C_STATE_DIR", self.work.path().join(name))
            .env("D2C_ADMIN_ADDR", "127.0.0.1:0")
            .env("D2C_SESSION_TIMEOUT_MS", "6000");
        for (key, value) in env {
            command.env(key, value);
        }
        Service::spawn(name, command, "ADMIN_LISTENING", self.work.path()).await
    }

    /// The hanging-transaction sweeper (`kafka/broker sweeper`), as `./dev up`
    /// runs it, with `env` (its D2C_SWEEPER_* settings) on top.
    pub async fn sweeper(&self, env: &[(&str, String)]) -> anyhow::Result<Service> {
        let mut command = Command::new(kafka_script());
        command.arg("sweeper");
        self.base_env(&mut command);
        command.env("D2C_ADMIN_ADDR", "127.0.0.1:0");
        for (key, value) in env {
            command.env(key, value);
        }
        Service::spawn("sweeper", command, "ADMIN_LISTENING", self.work.path()).await
    }

    /// A processor that has finished its first assignment.
    pub async fn processor_ready(
        &self,
        service: &str,
        name: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        let started = self.processor(service, name, env).await?;
        started.wait_ready(Duration::from_secs(60)).await?;
        Ok(started)
    }

    pub async fn orders(&self, name: &str) -> anyhow::Result<Service> {
        self.processor("orders", name, &[]).await
    }

    pub async fn orders_ready(&self, name: &str) -> anyhow::Result<Service> {
        self.processor_ready("orders", name, &[]).await
    }

    /// A projector whose runner name (in job_runs) is `name`, with `env` on
    /// top of the platform's; `env` names its database (D2C_DATABASE_URL,
    /// see [`crate::postgres::TestDatabase`]).
    pub async fn projector(&self, name: &str, env: &[(&str, String)]) -> anyhow::Result<Service> {
        let mut command = Command::new(binary("d2c-projector")?);
        self.base_env(&mut command);
        command
            .env("D2C_ADMIN_ADDR", "127.0.0.1:0")
            .env("D2C_SESSION_TIMEOUT_MS", "6000")
            .env("D2C_PROJECTOR_NAME", name);
        for (key, value) in env {
            command.env(key, value);
        }
        Service::spawn(name, command, "ADMIN_LISTENING", self.work.path()).await
    }

    /// A gateway that reads its reply partition and reaches the broker.
    pub async fn gateway_ready(
        &self,
        name: &str,
        reply_partition: i32,
        reply_timeout_ms: u64,
    ) -> anyhow::Result<Service> {
        let service = self
            .gateway(name, reply_partition, reply_timeout_ms)
            .await?;
        service.wait_ready(Duration::from_secs(30)).await?;
        Ok(service)
    }

    pub async fn gateway(
        &self,
        name: &str,
        reply_partition: i32,
        reply_timeout_ms: u64,
    ) -> anyhow::Result<Service> {
        self.gateway_with(name, reply_partition, reply_timeout_ms, &[])
            .await
    }

    /// [`Platform::gateway`] with `env` on top, e.g. the test's own read-side
    /// database. Without one, the gateway reads the server's `postgres`
    /// database, which answers its readiness check and holds no read models.
    pub async fn gateway_with(
        &self,
        name: &str,
        reply_partition: i32,
        reply_timeout_ms: u64,
        env: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        let mut command = Command::new(binary("d2c-gateway")?);
        self.base_env(&mut command);
        command
            .env("D2C_HTTP_ADDR", "127.0.0.1:0")
            .env("D2C_REPLY_PARTITION", reply_partition.to_string())
            .env("D2C_REPLY_TIMEOUT_MS", reply_timeout_ms.to_string())
            .env("D2C_AUTH_SECRET", crate::customer::TEST_AUTH_SECRET)
            .env("D2C_ADMIN_TOKEN", crate::customer::TEST_ADMIN_TOKEN)
            .env("D2C_DATABASE_URL", crate::postgres::server_url())
            // Tests place hundreds of orders as one customer; the limit has
            // a test of its own (hostile.rs), which sets it.
            .env("D2C_CHECKOUT_RATE_PER_MINUTE", "0");
        for (key, value) in env {
            command.env(key, value);
        }
        Service::spawn(name, command, "HTTP_LISTENING", self.work.path()).await
    }

    /// [`Platform::gateway_with`], once ready.
    pub async fn gateway_ready_with(
        &self,
        name: &str,
        reply_partition: i32,
        reply_timeout_ms: u64,
        env: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        let service = self
            .gateway_with(name, reply_partition, reply_timeout_ms, env)
            .await?;
        service.wait_ready(Duration::from_secs(30)).await?;
        Ok(service)
    }
}

impl Drop for Platform {
    /// A failing test shows what its services logged, so a CI failure can be
    /// read from CI's output alone.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
    }
}

impl Platform {
    /// The last lines of every service's log, on stderr.
    pub fn print_logs(&self) {
        let Ok(entries) = std::fs::read_dir(self.work.path()) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("----- {} (last 60 lines) -----", path.display());
                eprintln!("{}", lines[lines.len().saturating_sub(60)..].join("\n"));
            }
        }
    }
}

/// A running binary. Killed (SIGKILL) when dropped.
pub struct Service {
    pub name: String,
    pub addr: SocketAddr,
    pub log: PathBuf,
    child: Child,
}

impl Service {
    async fn spawn(
        name: &str,
        mut command: Command,
        marker: &str,
        work: &Path,
    ) -> anyhow::Result<Self> {
        let log = work.join(format!("{name}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix(marker) {
                    return Ok::<_, anyhow::Error>(Some(addr.trim().parse::<SocketAddr>()?));
                }
            }
            Ok(None)
        })
        .await
        .with_context(|| format!("{name} did not start within 30 s (log: {})", log.display()))??
        .with_context(|| format!("{name} exited before listening (log: {})", log.display()))?;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            name: name.to_owned(),
            addr,
            log,
            child,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL: no chance to flush or commit anything.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// Waits for the process to end by itself (e.g. at a fault point).
    pub async fn exited(&mut self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .with_context(|| format!("{} still running after {within:?}", self.name))?
            .context("waiting for the process")
    }

    /// Whether the process has ended (by itself or killed), without waiting.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The process id, for signals the harness has no method for.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().context("already exited")?;
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        Ok(tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Wait until `/ready` answers 200.
    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(response) = client.get(self.url("/ready")).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} not ready within {within:?}; log tail:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A counter or gauge from `/metrics`, summed over its label sets.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        self.metric_where(name, "").await
    }

    /// Like [`Service::metric`], over the series whose labels contain `labels`
    /// (e.g. `outcome="restored"`).
    pub async fn metric_where(&self, name: &str, labels: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(self.url("/metrics")).await?.text().await?;
        Ok(crate::exposition::sum_series(&text, name, labels))
    }
}

/// A Kafka node of one test's own (started by `kafka/broker`, as `./dev`
/// starts its brokers), with its data in a directory of its own, so the test
/// can kill and restart it (its data survives) without disturbing any other
/// test. A node may be one of a cluster ([`KafkaNode::start_cluster`]).
pub struct KafkaNode {
    pub port: u16,
    controller_port: u16,
    pub dir: PathBuf,
    /// In a cluster: this node's id, the quorum and the cluster id.
    member: Option<ClusterMember>,
    child: Option<Child>,
}

#[derive(Clone)]
struct ClusterMember {
    node_id: usize,
    voters: String,
    cluster_id: String,
}

/// The script that installs, formats and runs a local Kafka node.
fn kafka_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kafka/broker")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The bootstrap list of a set of nodes.
pub fn cluster_brokers(nodes: &[KafkaNode]) -> String {
    nodes
        .iter()
        .map(KafkaNode::brokers)
        .collect::<Vec<_>>()
        .join(",")
}

impl KafkaNode {
    /// Starts a node on free loopback ports with its data in `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut node = Self {
            port: free_port()?,
            controller_port: free_port()?,
            dir: dir.to_owned(),
            member: None,
            child: None,
        };
        node.restart().await?;
        Ok(node)
    }

    /// Starts `count` nodes, each broker and controller, as one cluster
    /// (a static controller quorum of all of them), in `dir/node-<id>`.
    pub async fn start_cluster(dir: &Path, count: usize) -> anyhow::Result<Vec<Self>> {
        let cluster_id = kafka_tool_output(&["kafka.tools.StorageTool", "random-uuid"]).await?;
        let mut nodes = Vec::with_capacity(count);
        for node_id in 1..=count {
            let node_dir = dir.join(format!("node-{node_id}"));
            std::fs::create_dir_all(&node_dir)?;
            nodes.push(Self {
                port: free_port()?,
                controller_port: free_port()?,
                dir: node_dir,
                member: None,
                child: None,
            });
        }
        let voters = nodes
            .iter()
            .enumerate()
            .map(|(index, node)| format!("{}@127.0.0.1:{}", index + 1, node.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        for (index, node) in nodes.iter_mut().enumerate() {
            node.member = Some(ClusterMember {
                node_id: index + 1,
                voters: voters.clone(),
                cluster_id: cluster_id.clone(),
            });
            node.spawn()?;
        }
        // A node answers only once a quorum of controllers is up, so all are
        // spawned before any is waited for.
        for node in &nodes {
            node.wait_answering().await?;
        }
        Ok(nodes)
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// This node's id in its cluster (1 for a lone node).
    pub fn node_id(&self) -> i32 {
        self.member
            .as_ref()
            .map_or(1, |member| member.node_id as i32)
    }

    /// SIGKILL to the JVM, no chance to flush: what a crashed broker machine
    /// does.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// (Re)starts it on the same ports and data, and waits until it answers
    /// a Metadata request.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.spawn()?;
        self.wait_answering().await
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))?;
        // `kafka/broker run` execs the JVM, so the child is the broker itself.
        let mut command = Command::new(kafka_script());
        command
            .arg("run")
            .arg(&self.dir)
            .arg(self.port.to_string())
            .arg(self.controller_port.to_string())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            // No metrics endpoint: its default port (broker port + 1000)
            // is not reserved for a node on a random free port.
            .env("D2C_KAFKA_METRICS_PORT", "0")
            .kill_on_drop(true);
        if let Some(member) = &self.member {
            command
                .env("D2C_KAFKA_NODE_ID", member.node_id.to_string())
                .env("D2C_KAFKA_VOTERS", &member.voters)
                .env("D2C_KAFKA_CLUSTER_ID", &member.cluster_id);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", kafka_script().display()))?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_answering(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let health = Command::new(binary("topology")?)
                .args([
                    "health",
                    "--brokers",
                    &self.brokers(),
                    "--timeout-secs",
                    "2",
                ])
                .output()
                .await?;
            if health.status.success() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the test's Kafka node on {} did not answer (log: {})",
                    self.brokers(),
                    self.dir.join("broker.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// What a Kafka tool class printed (trimmed), e.g. a fresh cluster id.
/// Runs a Kafka tool class, or a one-file Java program, on the Kafka
/// distribution's class path; its stdout.
pub async fn kafka_tool_output(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(kafka_script())
        .arg("tool")
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {} tool", kafka_script().display()))?;
    if !output.status.success() {
        bail!(
            "kafka/broker tool {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
