//! The Kafka client properties every client of the platform starts from
//! (processors, gateway, projector, `topology`, the test tools).
//!
//! A managed Kafka (Confluent Cloud, MSK, Aiven, a Strimzi cluster with TLS)
//! needs properties this code cannot guess: `security.protocol`,
//! `sasl.mechanisms`, credentials, CA files. Any librdkafka property can be
//! passed through the environment as `D2C_KAFKA__<NAME>`, the property name
//! upper-cased with `.` written as `_`:
//!
//! ```text
//! D2C_KAFKA__SECURITY_PROTOCOL=SASL_SSL      security.protocol=SASL_SSL
//! D2C_KAFKA__SASL_MECHANISMS=PLAIN           sasl.mechanisms=PLAIN
//! D2C_KAFKA__SASL_USERNAME=…                 sasl.username=…
//! D2C_KAFKA__SASL_PASSWORD=…                 sasl.password=… (never printed)
//! ```
//!
//! librdkafka refuses a property it does not know when the client is created,
//! so a typo stops the process at start with the property named. Settings a
//! component makes for correctness (idempotence, offset storage, isolation)
//! are applied after these and win.

use d2c_proto::Envelope;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Environment variables with this prefix become client properties.
pub const PASSTHROUGH_PREFIX: &str = "D2C_KAFKA__";

/// Properties passed through to every Kafka client, in the order given.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProperties(Vec<(String, String)>);

impl KafkaProperties {
    /// The `D2C_KAFKA__*` variables of this process, read once.
    pub fn from_env() -> &'static KafkaProperties {
        static FROM_ENV: OnceLock<KafkaProperties> = OnceLock::new();
        FROM_ENV.get_or_init(|| Self::from_vars(std::env::vars()))
    }

    /// The passthrough properties among `vars` (name, value) pairs.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut properties: Vec<(String, String)> = vars
            .into_iter()
            .filter_map(|(name, value)| {
                let property = name.strip_prefix(PASSTHROUGH_PREFIX)?;
                (!property.is_empty()).then(|| (property_name(property), value))
            })
            .collect();
        properties.sort();
        Self(properties)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// `config` with every passthrough property set.
    pub fn apply_to<'a>(&self, config: &'a mut ClientConfig) -> &'a mut ClientConfig {
        for (name, value) in self.iter() {
            config.set(name, value);
        }
        config
    }
}

/// `SASL_MECHANISMS` → `sasl.mechanisms`.
fn property_name(variable_suffix: &str) -> String {
    variable_suffix.to_ascii_lowercase().replace('_', ".")
}

/// Whether a property's value is a credential (printed as `****`).
pub fn is_secret(property: &str) -> bool {
    const SECRET_PARTS: [&str; 6] = [
        "password",
        "secret",
        "token",
        "jaas",
        "pem",
        "sasl.oauthbearer.config",
    ];
    SECRET_PARTS.iter().any(|part| property.contains(part))
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(name, value)| (name, if is_secret(name) { "****" } else { value })),
            )
            .finish()
    }
}

/// The base of every client: where the cluster is, who we are, Nagle off
/// (small requests must not wait ~40 ms for a delayed ACK), and the
/// passthrough properties of this process.
pub fn client_config(brokers: &str, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("socket.nagle.disable", "true");
    KafkaProperties::from_env().apply_to(&mut config);
    config
}

/// Errors a healthy cluster gives for a moment: a partition whose leader is
/// being elected (just created, or its broker restarting), a topic the
/// broker's metadata does not show yet, a broker that is reconnecting.
pub fn is_transient(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        error.rdkafka_error_code(),
        Some(
            NotLeaderForPartition
                | LeaderNotAvailable
                | UnknownTopicOrPartition
                | RequestTimedOut
                | BrokerTransportFailure
                | AllBrokersDown
                | NotCoordinator
                | CoordinatorLoadInProgress
                | CoordinatorNotAvailable
                | OperationTimedOut
        )
    )
}

/// A partition's (low, high) watermarks, asked again while the cluster
/// answers with a transient error, for at most `within`. Blocks.
pub fn fetch_watermarks<X, C>(
    consumer: &C,
    topic: &str,
    partition: i32,
    within: Duration,
) -> KafkaResult<(i64, i64)>
where
    X: ConsumerContext,
    C: Consumer<X>,
{
    use crate::retry::{backoff, BlockingRetryable};
    let deadline = Instant::now() + within;
    let ask = || {
        let left = deadline.saturating_duration_since(Instant::now());
        consumer.fetch_watermarks(topic, partition, left.max(Duration::from_millis(100)))
    };
    ask.retry(backoff(
        Duration::from_millis(20),
        Duration::from_millis(500),
    ))
    .sleep(std::thread::sleep)
    .when(|error| is_transient(error) && Instant::now() < deadline)
    .call()
}

/// D2C_FETCH_WAIT_MS's default. A fetch that finds data is answered at once,
/// but a partition newly assigned (or resumed after its restore) joins the
/// consumer's fetches only when the fetch in flight returns: with
/// librdkafka's 500 ms the first request to a just-started processor took
/// over a second (measured: the 1 s-timeout `late_reply` test failed 2 of 2
/// at 500 ms, passed 2 of 2 at 100 ms). At 100 ms an idle consumer asks ten
/// times a second, which an idle Kafka broker answers at a cost measured in
/// the issue note.
pub const DEFAULT_FETCH_WAIT_MS: u64 = 100;

/// An idempotent producer: a retried send is written once per partition, in
/// order.
pub fn producer_config(brokers: &str, client_id: &str, linger: Duration) -> ClientConfig {
    let mut config = client_config(brokers, client_id);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", linger.as_millis().to_string())
        .set("message.timeout.ms", "30000")
        // The Java client's partitioner, so keys land where other clients
        // (and tools) expect them.
        .set("partitioner", "murmur2_random");
    config
}

/// What every consumer shares: offsets stored only by the application,
/// `read_committed` (records of an open or aborted transaction are never
/// read, so what a processor wrote under `exactly_once` is seen once, after
/// its commit), and how long the broker may hold a fetch that finds no data. Kafka answers a
/// fetch as soon as data arrives, so the wait costs no latency; it only
/// sets how often an idle consumer asks again (its idle cost).
fn consumer_config(brokers: &str, client_id: &str, fetch_wait: Duration) -> ClientConfig {
    let mut config = client_config(brokers, client_id);
    config
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", fetch_wait.as_millis().to_string())
        .set("fetch.min.bytes", "1")
        .set("enable.partition.eof", "false");
    config
}

/// A group member. Offsets are stored by the application only after the
/// message's effects are durable, then auto-committed (for lag monitoring and
/// tools; the runtime resumes from the offset in its own store).
pub fn group_consumer_config(
    brokers: &str,
    group_id: &str,
    client_id: &str,
    fetch_wait: Duration,
    session_timeout: Duration,
) -> ClientConfig {
    let mut config = consumer_config(brokers, client_id, fetch_wait);
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("auto.offset.reset", "earliest");
    if config.get("group.protocol").is_none() {
        // KIP-848 by default: on a steady checkout load, moving partitions
        // between instances (scale-out, scale-in) paused them at most
        // 0.7-6 s, against 16-40 s under the classic protocol with
        // cooperative-sticky (issue 14's measurements, `faultrun --plan
        // scale-out`). Brokers older than Kafka 4.0 need
        // D2C_KAFKA__GROUP_PROTOCOL=classic.
        config.set("group.protocol", "consumer");
    }
    if config.get("group.protocol") == Some("consumer") {
        // The broker assigns (incrementally) and owns the session and
        // heartbeat settings (group.consumer.* in its config); librdkafka
        // refuses these three properties under this protocol.
        return config;
    }
    config
        // Incremental rebalances: a joining or leaving member moves only the
        // partitions that must move; the others keep being handled.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "session.timeout.ms",
            session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (session_timeout.as_millis() / 5).max(100).to_string(),
        );
    config
}

/// A consumer outside any group, for reading assigned partitions directly
/// (changelog restore, a gateway's reply partition).
pub fn assigned_consumer_config(
    brokers: &str,
    client_id: &str,
    fetch_wait: Duration,
) -> ClientConfig {
    let mut config = consumer_config(brokers, client_id, fetch_wait);
    config
        // librdkafka wants a group id even for assign(); it is never joined.
        .set("group.id", format!("{client_id}-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false");
    config
}

/// On leaving a group: commits the offsets stored so far, synchronously.
/// Nothing stored since the last commit is not an error; a failure is
/// logged (the next owner then starts from the last committed offset).
pub fn commit_final_offsets<C: ConsumerContext>(consumer: &impl Consumer<C>) {
    match consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
        Ok(()) => {}
        Err(error) if error.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
        Err(error) => tracing::warn!(%error, "Final offset commit failed"),
    }
}

/// The Kafka headers that carry `envelope`.
pub fn envelope_headers(envelope: &Envelope) -> OwnedHeaders {
    envelope
        .headers()
        .iter()
        .fold(OwnedHeaders::new(), |headers, (name, value)| {
            headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            })
        })
}

/// The envelope in a consumed record's headers.
pub fn envelope_of(message: &impl Message) -> Result<Envelope, String> {
    let headers = message.headers().ok_or("message has no headers")?;
    let pairs: Vec<(&str, &[u8])> = headers
        .iter()
        .filter_map(|header| header.value.map(|value| (header.key, value)))
        .collect();
    Envelope::from_headers(pairs).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn passthrough_variables_become_properties() {
        let properties = KafkaProperties::from_vars(vars(&[
            ("D2C_KAFKA__SECURITY_PROTOCOL", "SASL_SSL"),
            ("D2C_KAFKA__SASL_MECHANISMS", "PLAIN"),
            ("D2C_KAFKA_BROKERS", "b:9092"),
            ("D2C_KAFKA__", "ignored: no name"),
            ("PATH", "/bin"),
        ]));
        assert_eq!(
            properties.iter().collect::<Vec<_>>(),
            vec![
                ("sasl.mechanisms", "PLAIN"),
                ("security.protocol", "SASL_SSL")
            ]
        );
        let mut config = ClientConfig::new();
        properties.apply_to(&mut config);
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
    }

    #[test]
    fn credentials_never_print() {
        let properties = KafkaProperties::from_vars(vars(&[
            ("D2C_KAFKA__SASL_USERNAME", "svc-orders"),
            ("D2C_KAFKA__SASL_PASSWORD", "hunter2"),
            ("D2C_KAFKA__SSL_KEY_PASSWORD", "hunter3"),
            ("D2C_KAFKA__SASL_OAUTHBEARER_CLIENT_SECRET", "hunter4"),
        ]));
        let printed = format!("{properties:?}");
        assert!(printed.contains("svc-orders"), "{printed}");
        for secret in ["hunter2", "hunter3", "hunter4"] {
            assert!(!printed.contains(secret), "{printed}");
        }
    }

    #[test]
    fn librdkafka_refuses_an_unknown_property_by_name() {
        let mut config = ClientConfig::new();
        KafkaProperties::from_vars(vars(&[("D2C_KAFKA__SASL_MECHANISM_TYPO", "PLAIN")]))
            .apply_to(&mut config);
        let Err(error) = config.create::<rdkafka::producer::BaseProducer>() else {
            panic!("an unknown property is refused");
        };
        assert!(error.to_string().contains("sasl.mechanism.typo"), "{error}");
    }
}
