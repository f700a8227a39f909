//! Processor configuration: environment variables with defaults that work on
//! a developer machine. One struct, printed at start.

use crate::error::RuntimeError;
use d2c_platform::config::var;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// D2C_KAFKA_BROKERS
    pub brokers: String,
    /// D2C_TOPIC_PREFIX: prepended to every topic name (test isolation).
    pub topic_prefix: String,
    /// D2C_GROUP_ID: the consumer group; defaults to the topic prefix + the
    /// service name, so deployments that share a broker under different
    /// prefixes (tests do) never share a group.
    pub group_id: String,
    /// D2C_STATE_DIR: where the RocksDB partition stores live.
    pub state_dir: PathBuf,
    /// D2C_ADMIN_ADDR: /health, /ready and /metrics.
    pub admin_addr: SocketAddr,
    /// D2C_KAFKA__*: librdkafka properties passed through to every client
    /// (masked when printed).
    pub kafka_properties: d2c_platform::kafka::KafkaProperties,
    /// D2C_FETCH_WAIT_MS: how long the broker may hold a fetch that finds no
    /// data. Kafka answers as soon as data arrives, so this is not latency:
    /// it sets how often an idle consumer asks again.
    pub fetch_wait: Duration,
    /// D2C_SESSION_TIMEOUT_MS: how soon a dead instance's partitions move.
    pub session_timeout: Duration,
    /// D2C_LINGER_MS: producer batching delay.
    pub linger: Duration,
    /// D2C_MAX_BATCH: messages of one partition handled per commit.
    pub max_batch: usize,
    /// D2C_PARTITION_QUEUE: messages buffered per partition worker.
    pub partition_queue: usize,
    /// D2C_SYNC_WRITES: fsync RocksDB's WAL on each commit.
    pub sync_writes: bool,
    /// D2C_RESTORE_TIMEOUT_MS: give up restoring a partition after this long.
    pub restore_timeout: Duration,
    /// D2C_STATS_INTERVAL_MS: how often librdkafka reports statistics, from
    /// which consumer lag is exported (0: never).
    pub stats_interval: Duration,
    /// D2C_PROCESSING_GUARANTEE: `exactly_once` (default) or `at_least_once`.
    pub guarantee: ProcessingGuarantee,
    /// D2C_TRANSACTIONAL_ID: this instance's producer identity under
    /// `exactly_once`. It must be unique per instance and stable across its
    /// restarts, so that a restarted instance aborts the transaction its
    /// previous life left open instead of making readers wait out the
    /// transaction timeout. Defaults to group + host name + state directory.
    pub transactional_id: String,
    /// D2C_TRANSACTION_TIMEOUT_MS: how long the broker lets a transaction of
    /// a dead instance stay open (readers of the partitions it wrote wait
    /// that long at most).
    pub transaction_timeout: Duration,
    /// D2C_COMMIT_LINGER_MS: under `exactly_once`, how long a committer
    /// waits after the first batch of a transaction for more to join it.
    /// The broker's cost is per transaction (~1.2 ms of its CPU each on the
    /// 2-core box), so fewer, fuller transactions leave it more CPU: at
    /// 200 checkouts/s 5 ms took transactions from ~3.4 to ~1.3 per
    /// checkout and p99 from 304-404 ms to 165-186 ms (loadgen, see README).
    pub commit_linger: Duration,
    /// D2C_TRANSACTION_PRODUCERS: transactional producers per instance under
    /// `exactly_once`, each committing in turn. After a commit returns, the
    /// coordinator is still writing its markers and the same producer's next
    /// transaction is refused (CONCURRENT_TRANSACTIONS, retried after 20 ms
    /// by librdkafka); a second producer starts its transaction meanwhile.
    /// Keep the count stable across restarts: a producer id no longer used
    /// leaves its open transaction to the transaction timeout.
    pub transaction_producers: usize,
    /// D2C_MEMBERSHIP_TIMEOUT_MS: an instance whose consumer has not been a
    /// settled group member this long stops (exits non-zero, for its
    /// supervisor to restart it); 0: never. librdkafka 2.12 can stay
    /// waiting for a group coordinator whose broker died (librdkafka
    /// issue 5511); a fresh client looks the coordinator up again.
    pub membership_timeout: Duration,
    /// D2C_STANDBY: `none` (default) or `all`: keep a warm copy of every
    /// partition store of the service this instance does not own, by
    /// following their changelogs, so a takeover applies a short tail
    /// instead of restoring the whole store (see `standby`).
    pub standby: StandbyMode,
}

/// Kafka Streams' `processing.guarantee`, per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessingGuarantee {
    /// Each batch's outputs, changelog entries and input offsets are one
    /// Kafka transaction; the group's generation fences a zombie's commit.
    ExactlyOnce,
    /// Outputs first, then state, then changelog; a crash handles a batch
    /// again, and receivers drop the copies (same message ids).
    AtLeastOnce,
}

impl FromStr for ProcessingGuarantee {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "exactly_once" | "exactly_once_v2" => Ok(Self::ExactlyOnce),
            "at_least_once" => Ok(Self::AtLeastOnce),
            other => Err(format!(
                "{other:?} is not a processing guarantee: use exactly_once or at_least_once"
            )),
        }
    }
}

impl RuntimeConfig {
    /// Reads the environment; `service` picks the defaults (group, state
    /// directory) and `default_admin_port` the admin port.
    pub fn from_env(service: &str, default_admin_port: u16) -> Result<Self, RuntimeError> {
        d2c_platform::config::reject_unknown_variables()?;
        let topic_prefix: String = var("D2C_TOPIC_PREFIX", String::new())?;
        Ok(Self {
            brokers: var("D2C_KAFKA_BROKERS", "127.0.0.1:9092".to_owned())?,
            group_id: var("D2C_GROUP_ID", format!("{topic_prefix}{service}"))?,
            topic_prefix,
            state_dir: var(
                "D2C_STATE_DIR",
                PathBuf::from(format!(".d2c/state/{service}")),
            )?,
            admin_addr: var(
                "D2C_ADMIN_ADDR",
                SocketAddr::from(([127, 0, 0, 1], default_admin_port)),
            )?,
            kafka_properties: d2c_platform::kafka::KafkaProperties::from_env().clone(),
            fetch_wait: Duration::from_millis(var(
                "D2C_FETCH_WAIT_MS",
                d2c_platform::kafka::DEFAULT_FETCH_WAIT_MS,
            )?),
            session_timeout: Duration::from_millis(var("D2C_SESSION_TIMEOUT_MS", 10_000)?),
            linger: Duration::from_millis(var("D2C_LINGER_MS", 1)?),
            max_batch: var("D2C_MAX_BATCH", 256)?,
            partition_queue: var("D2C_PARTITION_QUEUE", 1024)?,
            sync_writes: var("D2C_SYNC_WRITES", false)?,
            restore_timeout: Duration::from_millis(var("D2C_RESTORE_TIMEOUT_MS", 300_000)?),
            stats_interval: Duration::from_millis(var(
                "D2C_STATS_INTERVAL_MS",
                d2c_platform::lag::DEFAULT_STATS_INTERVAL_MS,
            )?),
            guarantee: var("D2C_PROCESSING_GUARANTEE", ProcessingGuarantee::ExactlyOnce)?,
            transactional_id: var("D2C_TRANSACTIONAL_ID", String::new())?,
            transaction_timeout: Duration::from_millis(var("D2C_TRANSACTION_TIMEOUT_MS", 10_000)?),
            transaction_producers: var("D2C_TRANSACTION_PRODUCERS", 2)?,
            commit_linger: Duration::from_millis(var("D2C_COMMIT_LINGER_MS", 5)?),
            membership_timeout: Duration::from_millis(var("D2C_MEMBERSHIP_TIMEOUT_MS", 30_000)?),
            standby: var("D2C_STANDBY", StandbyMode::None)?,
        }
        .with_default_transactional_id())
    }
}

impl RuntimeConfig {
    /// Host name and state directory together name one instance: two pods
    /// of a StatefulSet differ by host, two processes on one machine by
    /// directory, and a restart keeps both.
    fn with_default_transactional_id(mut self) -> Self {
        if self.transactional_id.is_empty() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_default();
            let directory =
                std::path::absolute(&self.state_dir).unwrap_or_else(|_| self.state_dir.clone());
            let instance = uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_OID,
                format!("{host}:{}", directory.display()).as_bytes(),
            );
            self.transactional_id = format!(
                "{}-{host}-{}",
                self.group_id,
                &instance.simple().to_string()[..12]
            );
        }
        self
    }
}

/// `D2C_STANDBY`: which stores an instance keeps warm besides its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandbyMode {
    /// Only owned partitions have a store; a takeover restores from the
    /// changelog (Kafka Streams' default, `num.standby.replicas=0`).
    None,
    /// Every partition of the service this instance does not own.
    All,
}

impl FromStr for StandbyMode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "none" => Ok(Self::None),
            "all" => Ok(Self::All),
            other => Err(format!("{other:?} is not a standby mode: use none or all")),
        }
    }
}
