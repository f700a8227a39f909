//! The projector's configuration: environment variables with defaults that
//! work on a developer machine, printed at start (password masked).

use d2c_platform::config::{var, Secret};
use d2c_runtime::RuntimeError;
use std::net::SocketAddr;
use std::time::Duration;

pub const SERVICE: &str = "projector";
pub const DEFAULT_ADMIN_PORT: u16 = 9106;

#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// D2C_KAFKA_BROKERS
    pub brokers: String,
    /// D2C_TOPIC_PREFIX: prepended to every topic name (test isolation).
    pub topic_prefix: String,
    /// D2C_GROUP_ID: defaults to the prefix + `projector`. A new group
    /// replays every topic from the start (harmless: projection is
    /// idempotent).
    pub group_id: String,
    /// D2C_DATABASE_URL
    pub database_url: DatabaseUrl,
    /// D2C_ADMIN_ADDR: /health, /ready and /metrics.
    pub admin_addr: SocketAddr,
    /// D2C_KAFKA__*: librdkafka properties passed through (masked).
    pub kafka_properties: d2c_platform::kafka::KafkaProperties,
    /// D2C_FETCH_WAIT_MS: how long the broker may hold a fetch that finds no
    /// data (an idle consumer's request rate; data is answered at once).
    pub fetch_wait: Duration,
    /// D2C_SESSION_TIMEOUT_MS: how soon a dead replica's partitions move.
    pub session_timeout: Duration,
    /// D2C_MAINTENANCE_INTERVAL_MS: how often a replica tries to lead and,
    /// if it leads, runs the maintenance jobs.
    pub maintenance_interval: Duration,
    /// D2C_VERSION_RETENTION_MS: superseded read-model versions older than
    /// this are pruned.
    pub version_retention: Duration,
    /// D2C_PROJECTOR_NAME: this replica's name, recorded in job_runs.
    pub name: String,
    /// D2C_MAX_BATCH: records per Postgres transaction at most.
    pub max_batch: usize,
    /// D2C_STATS_INTERVAL_MS: how often librdkafka reports the statistics
    /// consumer lag is read from (0: never).
    pub stats_interval: Duration,
    /// D2C_SLACK_WEBHOOK_URL: where the business report goes; unset, no
    /// report (the error layer posts there too).
    pub slack_webhook: Option<Secret>,
    /// D2C_REPORT_INTERVAL_MS: the business report's period (one report
    /// per period, by the replica holding the report lock).
    pub report_interval: Duration,
}

impl ProjectorConfig {
    pub fn from_env() -> Result<Self, RuntimeError> {
        d2c_platform::config::reject_unknown_variables()?;
        let topic_prefix: String = var("D2C_TOPIC_PREFIX", String::new())?;
        let max_batch: usize = var("D2C_MAX_BATCH", 500)?;
        if max_batch == 0 {
            return Err(RuntimeError::Config(
                "D2C_MAX_BATCH must be at least 1".into(),
            ));
        }
        Ok(Self {
            brokers: var("D2C_KAFKA_BROKERS", "127.0.0.1:9092".to_owned())?,
            group_id: var("D2C_GROUP_ID", format!("{topic_prefix}{SERVICE}"))?,
            topic_prefix,
            database_url: DatabaseUrl(var(
                "D2C_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/d2c".to_owned(),
            )?),
            admin_addr: var(
                "D2C_ADMIN_ADDR",
                SocketAddr::from(([127, 0, 0, 1], DEFAULT_ADMIN_PORT)),
            )?,
            kafka_properties: d2c_platform::kafka::KafkaProperties::from_env().clone(),
            fetch_wait: millis(
                "D2C_FETCH_WAIT_MS",
                d2c_platform::kafka::DEFAULT_FETCH_WAIT_MS,
            )?,
            session_timeout: millis("D2C_SESSION_TIMEOUT_MS", 10_000)?,
            maintenance_interval: millis("D2C_MAINTENANCE_INTERVAL_MS", 3_600_000)?.max(
                // A zero interval would spin.
                Duration::from_millis(10),
            ),
            version_retention: millis("D2C_VERSION_RETENTION_MS", 86_400_000)?,
            name: var("D2C_PROJECTOR_NAME", default_name())?,
            max_batch,
            stats_interval: millis(
                "D2C_STATS_INTERVAL_MS",
                d2c_platform::lag::DEFAULT_STATS_INTERVAL_MS,
            )?,
            slack_webhook: Some(var("D2C_SLACK_WEBHOOK_URL", String::new())?)
                .filter(|url| !url.is_empty())
                .map(Secret::new),
            report_interval: millis("D2C_REPORT_INTERVAL_MS", 3_600_000)?.max(
                // A zero interval would spin.
                Duration::from_millis(100),
            ),
        })
    }
}

fn millis(name: &str, default: u64) -> Result<Duration, RuntimeError> {
    Ok(Duration::from_millis(var(name, default)?))
}

/// `<host>-<pid>`: unique among live replicas, readable in job_runs.
fn default_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| SERVICE.to_owned());
    format!("{host}-{}", std::process::id())
}

/// A database URL, which may hold a password: Debug and Display mask it.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL with its password, for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&masked(&self.0))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", masked(&self.0))
    }
}

/// `url` with the password of its user info and of a `password=` query
/// parameter replaced by `***`.
fn masked(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let authority = match authority.rsplit_once('@') {
                Some((user_info, host)) => match user_info.split_once(':') {
                    Some((user, _password)) => format!("{user}:***@{host}"),
                    None => authority.to_owned(),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => head.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => param.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            masked("postgres://app:s3cr%40t@db:5432/d2c"),
            "postgres://app:***@db:5432/d2c"
        );
        assert_eq!(
            masked("postgres://postgres@127.0.0.1:5432/d2c"),
            "postgres://postgres@127.0.0.1:5432/d2c"
        );
        assert_eq!(
            masked("postgres://db/d2c?user=app&password=hunter2&sslmode=require"),
            "postgres://db/d2c?user=app&password=***&sslmode=require"
        );
        let url = DatabaseUrl("postgres://a:b@h/d".into());
        assert_eq!(
            format!("{url} {url:?}"),
            "postgres://a:***@h/d \"postgres://a:***@h/d\""
        );
        assert_eq!(url.expose(), "postgres://a:b@h/d");
    }
}
