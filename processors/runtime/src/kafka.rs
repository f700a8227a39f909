//! Kafka client settings shared by every process. Each one is here for a
//! reason measured on our broker (tansu) or required for correctness on real
//! Kafka.

use d2c_proto::Envelope;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use std::time::Duration;

/// An idempotent producer: a retried send is written once per partition, in
/// order. No compression: tansu lacks snappy, and our records are small.
pub fn producer_config(brokers: &str, client_id: &str, linger: Duration) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "none")
        // Small requests must not wait for Nagle + delayed ACK (~40 ms).
        .set("socket.nagle.disable", "true")
        .set("linger.ms", linger.as_millis().to_string())
        .set("message.timeout.ms", "30000")
        // The Java client's partitioner, so keys land where other clients
        // (and tools) expect them.
        .set("partitioner", "murmur2_random");
    config
}

/// What every consumer shares: where to fetch from, how long a fetch may wait
/// (tansu answers only when the wait is over), and offsets stored only by the
/// application.
fn consumer_config(brokers: &str, client_id: &str, fetch_wait: Duration) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("enable.auto.offset.store", "false")
        .set("socket.nagle.disable", "true")
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
        // With `range`, tansu never hands a killed member's partitions on.
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
