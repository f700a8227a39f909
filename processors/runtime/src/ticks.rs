//! Ticks: the time signal for timers kept in a processor's state.
//!
//! Every `interval`, a `d2c.common.v1.Tick` is produced to each partition of
//! the processor's own input that this instance owns. It is consumed and
//! handled like any message (in order, committed with the batch), and its
//! sent-at is the time a handler compares its timers with. A tick lost in a
//! crash or a rebalance is harmless: the next one, from whichever instance
//! owns the partition then, fires everything due by then.

use crate::partitions::Partitions;
use d2c_platform::kafka::envelope_headers;
use d2c_platform::producer::KafkaProducer;
use d2c_proto::common::v1::Tick;
use d2c_proto::Envelope;
use prost::Name;
use rdkafka::producer::FutureRecord;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Sends ticks until `stop` is set.
pub(crate) fn spawn(
    producer: KafkaProducer,
    topic: String,
    partitions: Arc<Partitions>,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Acquire) {
            every.tick().await;
            for partition in partitions.owned() {
                send(&producer, &topic, partition);
            }
        }
    })
}

/// Queued without waiting: a tick that cannot be sent is replaced by the
/// next one.
fn send(producer: &KafkaProducer, topic: &str, partition: i32) {
    let envelope = Envelope::new(
        Tick::full_name(),
        uuid::Uuid::new_v4(),
        d2c_platform::now_ms(),
    );
    let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
        .partition(partition)
        .key(b"".as_slice())
        .payload(b"".as_slice())
        .headers(envelope_headers(&envelope));
    if let Err((error, _)) = producer.send_result(record) {
        tracing::debug!(%error, partition, "Tick not queued");
    }
}
