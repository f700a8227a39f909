//! Stock commands straight onto `inventory.messages`, and the
//! `StockChanged` events they cause read back from `inventory.events`: one
//! inventory hop without the gateway, for the benchmarks that time it
//! (`hop-bench`, `failover-bench`) and the tests that check its state.

use crate::harness::{Platform, Service};
use anyhow::{bail, Result};
use d2c_proto::inventory::v1::{AdjustStock, StockChanged};
use d2c_proto::Envelope;
use prost::{Message as _, Name};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An `AdjustStock` command's body and envelope headers.
pub fn adjust_stock(
    sku: &str,
    delta: i64,
    adjustment_id: String,
    correlation_id: Option<String>,
) -> (Vec<u8>, OwnedHeaders) {
    let command = AdjustStock {
        sku: sku.to_owned(),
        delta,
        adjustment_id,
    };
    let mut envelope = Envelope::new(
        AdjustStock::full_name(),
        uuid::Uuid::new_v4(),
        d2c_platform::now_ms(),
    );
    envelope.correlation_id = correlation_id;
    let headers = d2c_platform::kafka::envelope_headers(&envelope);
    (command.encode_to_vec(), headers)
}

/// Sends one `AdjustStock` of +`delta` for `sku`, keyed by the SKU, to
/// `partition` when given (else where the key hashes).
pub fn send_adjustment(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    sku: &str,
    delta: i64,
    adjustment_id: String,
    correlation_id: Option<String>,
) -> Result<DeliveryFuture> {
    let (payload, headers) = adjust_stock(sku, delta, adjustment_id, correlation_id);
    let mut record = FutureRecord::to(topic)
        .key(sku)
        .payload(&payload)
        .headers(headers);
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    producer
        .send_result(record)
        .map_err(|(error, _)| anyhow::anyhow!("enqueue failed: {error}"))
}

/// A delivery that did not fail.
pub fn settled(
    delivery: Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
) -> Result<()> {
    match delivery {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => bail!("produce failed: {error}"),
        Err(_) => bail!("the producer went away"),
    }
}

/// A `StockChanged` event as the reader saw it.
#[derive(Debug, Clone)]
pub struct StockEvent {
    pub correlation_id: Option<String>,
    pub sku: String,
    pub on_hand: i64,
    /// When the reader got it.
    pub at: Instant,
}

/// Reads `topic` (read_committed, every partition from its end) until
/// `stop`, handing each `StockChanged` to `seen`.
pub fn read_stock_events(
    brokers: &str,
    topic: &str,
    mut seen: impl FnMut(StockEvent) + Send + 'static,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let consumer: BaseConsumer = d2c_platform::kafka::client_config(brokers, "stock-reader")
        .set("group.id", format!("stock-reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    // From each partition's current end, as an explicit offset: nothing
    // sent after this returns is missed (Offset::End would be resolved only
    // at the first fetch).
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (_, high) = d2c_platform::kafka::fetch_watermarks(
            &consumer,
            topic,
            partition.id(),
            Duration::from_secs(10),
        )?;
        assignment.add_partition_offset(topic, partition.id(), Offset::Offset(high))?;
    }
    consumer.assign(&assignment)?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Acquire) {
            let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) else {
                continue;
            };
            let at = Instant::now();
            let envelope = message.headers().and_then(|headers| {
                let pairs: Vec<(&str, &[u8])> = headers
                    .iter()
                    .filter_map(|h| h.value.map(|v| (h.key, v)))
                    .collect();
                Envelope::from_headers(pairs).ok()
            });
            let Some(envelope) = envelope.filter(|e| e.message_type == StockChanged::full_name())
            else {
                continue;
            };
            let Ok(event) = StockChanged::decode(message.payload().unwrap_or_default()) else {
                continue;
            };
            let Some(level) = event.level else { continue };
            seen(StockEvent {
                correlation_id: envelope.correlation_id,
                sku: level.sku,
                on_hand: level.on_hand,
                at,
            });
        }
    }))
}

/// Sends `messages` adjustments of new SKUs (`FILL-<n>`, each three store
/// entries: stock level, adjustment, handled message id) to `platform`'s
/// inventory, all to `partition` when given, and waits (10 minutes at
/// most) until `processor` has handled them all.
pub async fn fill(
    platform: &Platform,
    processor: &Service,
    partition: Option<i32>,
    messages: u64,
) -> Result<()> {
    let producer: FutureProducer =
        d2c_platform::kafka::client_config(&platform.brokers, "stock-fill")
            .set("linger.ms", "5")
            .create()?;
    let topic = platform.topic("inventory.messages");
    let mut deliveries = Vec::new();
    for n in 0..messages {
        let sku = format!("FILL-{n}");
        let adjustment = format!("fill-{n}");
        deliveries.push(send_adjustment(
            &producer, &topic, partition, &sku, 1, adjustment, None,
        )?);
        if deliveries.len() >= 5000 {
            for delivery in deliveries.drain(..) {
                settled(delivery.await)?;
            }
        }
    }
    for delivery in deliveries {
        settled(delivery.await)?;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while processor.metric("d2c_messages_handled_total").await? < messages as f64 {
        if Instant::now() > deadline {
            bail!(
                "{} did not handle {messages} messages within 10 minutes",
                processor.name
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
