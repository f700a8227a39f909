//! Parked requests and the reply consumer.
//!
//! Each gateway instance reads exactly one partition of `gateway.replies`,
//! named in the reply-to header of every command it sends. A reply completes
//! the request parked under its correlation id; a reply nobody waits for any
//! more (the request already answered 202, or a duplicate) is dropped, after
//! ending its checkout's settling entry if it has one.

use crate::metrics::GATEWAY_METRICS;
use crate::settling::{Settling, SETTLING_FOR};
use d2c_platform::kafka::{assigned_consumer_config, envelope_of};
use d2c_platform::lag::{enable_statistics, LagContext};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

/// A reply as it came off the topic.
#[derive(Debug)]
pub struct Reply {
    pub message_type: String,
    pub payload: Vec<u8>,
}

/// Requests waiting for their reply, bounded; and the checkouts among them
/// answered `202`, until their reply arrives.
pub struct Pending {
    waiting: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    capacity: usize,
    pub settling: Settling,
}

/// Removes the entry when the request stops waiting (answered, timed out or
/// the client went away), so the map only holds live requests.
pub struct Parked {
    pending: Arc<Pending>,
    correlation_id: String,
    pub receiver: oneshot::Receiver<Reply>,
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.correlation_id);
        GATEWAY_METRICS
            .pending
            .set(self.pending.lock().len() as i64);
    }
}

impl Pending {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            waiting: Mutex::new(HashMap::new()),
            capacity,
            // Sized like the parked requests, which most 202s were first.
            settling: Settling::new(capacity as u64, SETTLING_FOR),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, oneshot::Sender<Reply>>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Park a request; `None` when the map is full (the caller then answers
    /// without waiting).
    pub fn park(self: &Arc<Self>, correlation_id: &str) -> Option<Parked> {
        let (sender, receiver) = oneshot::channel();
        let mut waiting = self.lock();
        if waiting.len() >= self.capacity {
            GATEWAY_METRICS.pending_full.inc();
            return None;
        }
        waiting.insert(correlation_id.to_owned(), sender);
        GATEWAY_METRICS.pending.set(waiting.len() as i64);
        Some(Parked {
            pending: Arc::clone(self),
            correlation_id: correlation_id.to_owned(),
            receiver,
        })
    }

    fn complete(&self, correlation_id: &str, reply: Reply) -> bool {
        match self.lock().remove(correlation_id) {
            Some(sender) => sender.send(reply).is_ok(),
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why the reply consumer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplyConsumerError {
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(
        "D2C_REPLY_PARTITION is {partition}, but {topic} has {partitions} partitions \
         (0 to {last}): every gateway instance reads a reply partition of its own, so at most \
         {partitions} gateways can run. Raise `partitions` of gateway.replies in \
         topology/topology.toml and run `topology apply`, or run fewer gateways",
        last = partitions - 1
    )]
    NoSuchPartition {
        topic: String,
        partition: i32,
        partitions: i32,
    },
}

/// The client id of the reply consumer, and its lag's `group` label.
pub const REPLY_CONSUMER: &str = "gateway-replies";

/// A reply partition beyond the topic's count is a sizing error, named as
/// one (rather than a watermark lookup timing out).
fn check_partition_exists(
    consumer: &impl Consumer<LagContext>,
    topic: &str,
    partition: i32,
) -> Result<(), ReplyConsumerError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|found| found.name() == topic)
        .map_or(0, |found| found.partitions().len() as i32);
    if partitions > 0 && !(0..partitions).contains(&partition) {
        return Err(ReplyConsumerError::NoSuchPartition {
            topic: topic.to_owned(),
            partition,
            partitions,
        });
    }
    Ok(())
}

/// Start reading this instance's reply partition from its current end.
/// Returns once the partition is assigned, so no reply to a request sent
/// after this returns can be missed. Its lag is reported every
/// `stats_interval`.
pub async fn start_reply_consumer(
    brokers: &str,
    topic: &str,
    partition: i32,
    fetch_wait: Duration,
    stats_interval: Duration,
    pending: Arc<Pending>,
    assigned: Arc<AtomicBool>,
) -> Result<ReplyLoop, ReplyConsumerError> {
    GATEWAY_METRICS.reply_partition_assigned.set(0);
    let mut config = assigned_consumer_config(brokers, REPLY_CONSUMER, fetch_wait);
    let consumer: Arc<StreamConsumer<LagContext>> = Arc::new(
        enable_statistics(&mut config, stats_interval)
            .create_with_context(LagContext::assigned(REPLY_CONSUMER))?,
    );
    // Start at the high watermark: where replies to requests sent from now on
    // will land. The lookup blocks, so it runs off the async threads.
    let lookup = Arc::clone(&consumer);
    let lookup_topic = topic.to_owned();
    let (_, high) = tokio::task::spawn_blocking(move || {
        check_partition_exists(lookup.as_ref(), &lookup_topic, partition)?;
        d2c_platform::kafka::fetch_watermarks(
            lookup.as_ref(),
            &lookup_topic,
            partition,
            Duration::from_secs(30),
        )
        .map_err(ReplyConsumerError::from)
    })
    .await
    .map_err(|_| rdkafka::error::KafkaError::Canceled)??;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(high))?;
    consumer.assign(&assignment)?;
    assigned.store(true, Ordering::Release);
    GATEWAY_METRICS.reply_partition_assigned.set(1);
    tracing::info!(topic, partition, offset = high, "Reading replies");
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                received = consumer.recv() => match received {
                    Ok(message) => deliver(&pending, &message),
                    Err(error) => {
                        tracing::warn!(%error, "Reply consumer error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        GATEWAY_METRICS.reply_partition_assigned.set(0);
        tracing::info!("Reply consumer stopped");
    });
    Ok(ReplyLoop { stop, task })
}

/// The running reply loop.
pub struct ReplyLoop {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl ReplyLoop {
    /// Ends the loop (after the reply it is delivering) and waits for it.
    /// Call it once the HTTP server has answered its last request: until
    /// then, parked requests still need their replies.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "The reply loop ended abnormally");
        }
    }
}

fn deliver(pending: &Pending, message: &rdkafka::message::BorrowedMessage<'_>) {
    let envelope = match envelope_of(message) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::warn!(%error, "Reply without a valid envelope dropped");
            return;
        }
    };
    // Closes the order's trace: the delivery is a child of the span that
    // sent the reply.
    let span = tracing::info_span!(
        "reply",
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = message.topic(),
        messaging.kafka.message.offset = message.offset(),
        d2c.message_type = %envelope.message_type,
        trace_id = tracing::field::Empty,
    );
    d2c_platform::tracing_context::continue_trace(&span, envelope.traceparent.as_deref());
    let _entered = span.enter();
    let Some(correlation_id) = envelope.correlation_id else {
        return;
    };
    let reply = Reply {
        message_type: envelope.message_type,
        payload: message.payload().unwrap_or_default().to_vec(),
    };
    if !pending.complete(&correlation_id, reply) {
        GATEWAY_METRICS.late_replies.inc();
        pending.settling.reply_arrived(&correlation_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_map_is_bounded_and_cleans_up() {
        let pending = Pending::new(2);
        let first = pending.park("a").expect("room");
        let _second = pending.park("b").expect("room");
        assert!(pending.park("c").is_none(), "full map refuses");
        drop(first);
        assert_eq!(pending.len(), 1);
        assert!(pending.park("c").is_some());
    }

    #[tokio::test]
    async fn reply_completes_the_parked_request_once() {
        let pending = Pending::new(10);
        let parked = pending.park("c-1").expect("room");
        let reply = || Reply {
            message_type: "t".into(),
            payload: vec![1],
        };
        assert!(pending.complete("c-1", reply()));
        assert!(
            !pending.complete("c-1", reply()),
            "a duplicate finds nobody"
        );
        let mut parked = parked;
        let got = (&mut parked.receiver).await.expect("reply arrives");
        assert_eq!(got.payload, vec![1]);
    }
}
