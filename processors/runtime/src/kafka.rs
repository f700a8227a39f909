//! Kafka client settings shared by every process, on top of
//! [`d2c_platform::kafka::client_config`] (brokers, client id, properties
//! passed through for managed clusters). Each setting here is required for
//! correctness or was measured.

use d2c_platform::kafka::client_config;
use d2c_proto::Envelope;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use std::time::Duration;

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
        // Incremental rebalances: a joining or leaving member moves only the
        // partitions that must move; the others keep being handled.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "true")
        .set("auto.offset.reset", "earliest")
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
