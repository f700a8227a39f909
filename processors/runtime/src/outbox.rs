//! What a batch writes to Kafka, as records: outgoing messages, dead letters
//! and changelog entries, and sending them in order.
//!
//! Delivery: `send_all` enqueues in the order given and waits for every
//! acknowledgement, so within a partition the log keeps that order; the
//! producer is idempotent, so its own retries add no copies.

use crate::handler::{Destination, Outgoing};
use d2c_platform::metrics::METRICS;
use d2c_platform::producer::KafkaProducer;
use d2c_platform::tracing_context;
use d2c_state::Entry;
use d2c_topology::TopicNames;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use std::time::Duration;

/// A record ready for the producer: physical topic, optional fixed partition.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub topic: String,
    pub partition: Option<i32>,
    pub key: Vec<u8>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// Hands the record to a producer's queue. A full queue returns the
    /// record back (`Ok(Err(..))`) so the caller waits in its own way: the
    /// worker yields to tokio, the committer thread sleeps.
    pub(crate) fn enqueue(
        &self,
        producer: &d2c_platform::producer::KafkaProducer,
    ) -> Result<Option<d2c_platform::producer::DeliveryFuture>, String> {
        let headers = self
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value),
                })
            });
        let mut future_record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
            .key(self.key.as_slice())
            .headers(headers);
        if let Some(payload) = &self.payload {
            future_record = future_record.payload(payload.as_slice());
        }
        if let Some(partition) = self.partition {
            future_record = future_record.partition(partition);
        }
        match producer.send_result(future_record) {
            Ok(delivery) => Ok(Some(delivery)),
            Err((error, _))
                if error.rdkafka_error_code()
                    == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
            {
                Ok(None)
            }
            Err((error, _)) => Err(format!("enqueue to {} failed: {error}", self.topic)),
        }
    }
}

pub(crate) fn changelog_records(changelog: &str, partition: i32, entries: &[Entry]) -> Vec<Record> {
    entries
        .iter()
        .map(|entry| Record {
            topic: changelog.to_owned(),
            partition: Some(partition),
            key: entry.key.clone(),
            payload: entry.value.clone(),
            headers: Vec::new(),
        })
        .collect()
}

/// Enqueue every record in order, then wait for all acknowledgements. Records
/// are enqueued one by one (waiting out a full queue) so that order within a
/// partition is the order given.
pub(crate) async fn send_all(
    producer: &KafkaProducer,
    records: &[Record],
) -> Result<Option<i64>, String> {
    let mut deliveries = Vec::with_capacity(records.len());
    for record in records {
        loop {
            match record.enqueue(producer)? {
                Some(delivery) => {
                    deliveries.push((record.topic.as_str(), delivery));
                    break;
                }
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    let mut highest = None;
    for (topic, delivery) in deliveries {
        match delivery.await {
            Ok(Ok(delivery)) => {
                METRICS.messages_produced.with_label_values(&[topic]).inc();
                highest = highest.max(Some(delivery.offset));
            }
            Ok(Err((error, _))) => return Err(format!("delivery to {topic} failed: {error}")),
            Err(_) => return Err(format!("delivery to {topic} was cancelled")),
        }
    }
    Ok(highest)
}

/// `outgoing`, carrying the trace context of the span it is sent from.
pub(crate) fn in_current_trace(mut outgoing: Outgoing) -> Outgoing {
    if let Some(traceparent) = tracing_context::current_traceparent() {
        outgoing.envelope.traceparent = Some(traceparent);
    }
    outgoing
}

/// The record of an outgoing message: its physical topic (a reply goes to
/// the partition it names) and its envelope as headers.
pub(crate) fn record_of(names: &TopicNames, outgoing: Outgoing) -> Record {
    let (topic, partition) = match outgoing.destination {
        Destination::Topic(logical) => (names.name(&logical), None),
        Destination::Reply(reply_to) => (reply_to.topic, Some(reply_to.partition)),
    };
    Record {
        topic,
        partition,
        key: outgoing.key,
        payload: Some(outgoing.payload),
        headers: outgoing
            .envelope
            .headers()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.into_bytes()))
            .collect(),
    }
}
