//! Reading topics back, to check what the platform published, and writing
//! raw records, to feed it what no well-behaved client would.

use anyhow::Context;
use d2c_proto::Envelope;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub envelope: Option<Envelope>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// A header's value as text, if the record has it.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
    }
}

/// Writes one record as it is (any bytes, any headers) and waits for the ack.
pub async fn produce_raw(
    brokers: &str,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
) -> anyhow::Result<()> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = d2c_platform::kafka::client_config(brokers, "d2c-test")
        .set("partitioner", "murmur2_random")
        .create()?;
    let headers = headers
        .iter()
        .fold(OwnedHeaders::new(), |all, (name, value)| {
            all.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            })
        });
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| anyhow::anyhow!("producing to {topic}: {error}"))?;
    Ok(())
}

/// Writes one well-formed command the way a service would: protobuf body,
/// envelope headers.
pub async fn produce_message<M: prost::Message>(
    brokers: &str,
    topic: &str,
    key: &str,
    envelope: &Envelope,
    message: &M,
) -> anyhow::Result<()> {
    let headers = envelope.headers();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    produce_raw(brokers, topic, key, &message.encode_to_vec(), &headers).await
}

/// Every record of `topic` up to its current end, all partitions.
pub fn read_all(brokers: &str, topic: &str, within: Duration) -> anyhow::Result<Vec<Record>> {
    let consumer: BaseConsumer = d2c_platform::kafka::client_config(brokers, "d2c-test-reader")
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0usize;
    let mut ends = std::collections::HashMap::new();
    for partition in &partitions {
        let (low, high) = d2c_platform::kafka::fetch_watermarks(
            &consumer,
            topic,
            *partition,
            Duration::from_secs(10),
        )?;
        if high > low {
            assignment.add_partition_offset(topic, *partition, Offset::Offset(low))?;
            ends.insert(*partition, high);
            remaining += 1;
        }
    }
    let mut records = Vec::new();
    if remaining == 0 {
        return Ok(records);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + within;
    while remaining > 0 {
        anyhow::ensure!(Instant::now() < deadline, "reading {topic} timed out");
        let Some(message) = consumer.poll(Duration::from_millis(50)) else {
            // A transaction's commit marker ends most partitions: it is
            // never returned, but it moves the read position past the end.
            for element in consumer.position()?.elements() {
                if let (Offset::Offset(next), Some(end)) =
                    (element.offset(), ends.get(&element.partition()))
                {
                    if next >= *end {
                        ends.remove(&element.partition());
                        remaining -= 1;
                    }
                }
            }
            continue;
        };
        let message = message.context("consuming")?;
        let pairs: Vec<(&str, &[u8])> = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .filter_map(|h| h.value.map(|v| (h.key, v)))
                    .collect()
            })
            .unwrap_or_default();
        let headers = pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.to_vec()))
            .collect();
        let envelope = Envelope::from_headers(pairs).ok();
        records.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().unwrap_or_default().to_vec(),
            envelope,
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
        if ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&message.partition());
            remaining -= 1;
        }
    }
    Ok(records)
}

/// How many partitions of the topics starting with `prefix` each broker
/// (by node id) leads, from the cluster's metadata.
pub fn leaders_by_broker(
    brokers: &str,
    prefix: &str,
) -> anyhow::Result<std::collections::BTreeMap<i32, usize>> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("creating a metadata client")?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .context("fetching metadata")?;
    let mut counts = std::collections::BTreeMap::new();
    for topic in metadata
        .topics()
        .iter()
        .filter(|topic| topic.name().starts_with(prefix))
    {
        for partition in topic.partitions() {
            *counts.entry(partition.leader()).or_default() += 1;
        }
    }
    Ok(counts)
}
