//! The process-wide metrics registry and the metrics every engine shares,
//! in one place. Names follow Prometheus conventions (`_total` counters,
//! `_seconds` histograms, base units).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;

/// Messages behind per consumer group, topic and partition (see `lag`).
pub const CONSUMER_LAG: &str = "d2c_consumer_lag";

pub struct Metrics {
    pub registry: Registry,
    pub messages_consumed: IntCounterVec,
    pub messages_produced: IntCounterVec,
    pub messages_handled: IntCounterVec,
    pub handler_duration: HistogramVec,
    pub queue_duration: HistogramVec,
    pub batch_commit_duration: HistogramVec,
    pub dead_letters: IntCounterVec,
    pub duplicates_dropped: IntCounterVec,
    pub assigned_partitions: IntGauge,
    pub partition_restores: IntCounterVec,
    pub partition_open_duration: HistogramVec,
    pub standby_partitions: IntGauge,
    pub standby_records: IntCounter,
    pub transactions: IntCounterVec,
    pub transaction_duration: Histogram,
    pub transaction_step_duration: HistogramVec,
    pub transaction_batches: Histogram,
    pub transaction_partitions: Histogram,
    pub batch_messages: Histogram,
    pub consumer_lag: IntGaugeVec,
}

/// Latency buckets from 100 µs to 10 s: wide enough for a handler and for a
/// whole HTTP round trip.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Registers a metric built by `made`; a malformed or duplicate metric is
/// a programming error, found by any test that touches `METRICS`.
fn register<M>(registry: &Registry, name: &str, made: prometheus::Result<M>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let metric = made.unwrap_or_else(|error| panic!("metric {name} is malformed: {error}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|error| panic!("metric {name} registered twice: {error}"));
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        name,
        IntCounterVec::new(Opts::new(name, help), labels),
    )
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    register(registry, name, HistogramVec::new(opts, labels))
}

fn plain_histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(registry, name, Histogram::with_opts(opts))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, name, IntGauge::new(name, help))
}

fn plain_counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, name, IntCounter::new(name, help))
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let assigned_partitions = gauge(
            &registry,
            "d2c_assigned_partitions",
            "Input partitions this instance owns now.",
        );
        let consumer_lag = register(
            &registry,
            CONSUMER_LAG,
            IntGaugeVec::new(
                Opts::new(
                    CONSUMER_LAG,
                    "Messages between the high watermark and the consumer's stored (else committed) offset, by consumer group (or client id), topic and partition.",
                ),
                &["group", "topic", "partition"],
            ),
        );
        Self {
            consumer_lag,
            messages_consumed: counter(
                &registry,
                "d2c_messages_consumed_total",
                "Records consumed, by topic.",
                &["topic"],
            ),
            messages_produced: counter(
                &registry,
                "d2c_messages_produced_total",
                "Records produced and acknowledged, by topic.",
                &["topic"],
            ),
            messages_handled: counter(
                &registry,
                "d2c_messages_handled_total",
                "Messages handled by the service's handler, by message type.",
                &["message_type"],
            ),
            queue_duration: histogram(
                &registry,
                "d2c_message_queue_seconds",
                "Time from a record's produce (its Kafka timestamp) to the start of its handling: this hop's broker and queue wait, by message type.",
                &["message_type"],
            ),
            handler_duration: histogram(
                &registry,
                "d2c_handler_duration_seconds",
                "Time in the handler per message, by message type.",
                &["message_type"],
            ),
            batch_commit_duration: histogram(
                &registry,
                "d2c_batch_commit_duration_seconds",
                "Time to make a batch's effects durable, by phase.",
                &["phase"],
            ),
            dead_letters: counter(
                &registry,
                "d2c_dead_letters_total",
                "Messages sent to a dead-letter topic, by source topic.",
                &["topic"],
            ),
            duplicates_dropped: counter(
                &registry,
                "d2c_duplicates_dropped_total",
                "Copies of an already handled message (same id) dropped, by message type.",
                &["message_type"],
            ),
            partition_restores: counter(
                &registry,
                "d2c_partition_restores_total",
                "Partition stores restored from the changelog, by outcome.",
                &["outcome"],
            ),
            partition_open_duration: histogram(
                &registry,
                "d2c_partition_open_seconds",
                "Time from taking a partition over to its store being current, by where the store came from: local (this instance's disk: its own earlier copy or a warm standby, caught up with the changelog's tail) or restore (the whole changelog).",
                &["from"],
            ),
            standby_partitions: gauge(
                &registry,
                "d2c_standby_partitions",
                "Partitions this instance keeps a warm standby store of (D2C_STANDBY=all): every partition of its service it does not own.",
            ),
            standby_records: plain_counter(
                &registry,
                "d2c_standby_records_applied_total",
                "Changelog records applied to warm standby stores.",
            ),
            transactions: counter(
                &registry,
                "d2c_transactions_total",
                "Kafka transactions of the exactly-once committer, by outcome (committed, aborted).",
                &["outcome"],
            ),
            transaction_duration: plain_histogram(
                &registry,
                "d2c_transaction_duration_seconds",
                "Time from begin to commit (or abort) of one Kafka transaction.",
                LATENCY_BUCKETS,
            ),
            transaction_step_duration: histogram(
                &registry,
                "d2c_transaction_step_seconds",
                "Time of each step of a Kafka transaction: produce (records enqueued and acknowledged), offsets (send_offsets_to_transaction), commit.",
                &["step"],
            ),
            batch_messages: plain_histogram(
                &registry,
                "d2c_batch_messages",
                "Input messages per partition batch (one plan, one commit).",
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            ),
            transaction_batches: plain_histogram(
                &registry,
                "d2c_transaction_batches",
                "Partition batches carried by one Kafka transaction.",
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            ),
            transaction_partitions: plain_histogram(
                &registry,
                "d2c_transaction_partitions",
                "Topic partitions one committed Kafka transaction wrote (records and the consumer offsets): the broker appends a commit marker to each.",
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            ),
            assigned_partitions,
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "Metrics could not be encoded");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
