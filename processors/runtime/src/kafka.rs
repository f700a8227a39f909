//! Kafka client settings shared by every process. Each one is here for a
//! reason measured on our broker (tansu) or required for correctness on real
//! Kafka.

use rdkafka::config::ClientConfig;
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
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("client.id", client_id)
        .set("socket.nagle.disable", "true")
        // With `range`, tansu never hands a killed member's partitions on.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", fetch_wait.as_millis().to_string())
        .set("fetch.min.bytes", "1")
        .set(
            "session.timeout.ms",
            session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (session_timeout.as_millis() / 5).max(100).to_string(),
        )
        .set("enable.partition.eof", "false");
    config
}

/// A consumer outside any group, for reading assigned partitions directly
/// (changelog restore, a gateway's reply partition).
pub fn assigned_consumer_config(
    brokers: &str,
    client_id: &str,
    fetch_wait: Duration,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        // librdkafka wants a group id even for assign(); it is never joined.
        .set("group.id", format!("{client_id}-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("socket.nagle.disable", "true")
        .set("fetch.wait.max.ms", fetch_wait.as_millis().to_string())
        .set("fetch.min.bytes", "1")
        .set("enable.partition.eof", "false");
    config
}
