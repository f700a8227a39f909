//! The one Kafka producer every binary uses: rdkafka's `BaseProducer`, its
//! delivery reports served by a thread of its own, each record's report
//! handed to whoever sent it as a future.
//!
//! Delivery rule: `send_result` only enqueues; a record is written when its
//! future resolves `Ok` (acknowledged under the producer's `acks`), and
//! every enqueued record's future resolves, with an error if the record
//! could not be written (or was purged when the producer went away).
//!
//! Why not rdkafka's `FutureProducer`: its thread polls in 100 ms rounds,
//! and rdkafka rounds the time left in a round down to whole milliseconds,
//! so the last millisecond of every round is spent calling
//! `rd_kafka_queue_poll(0)` in a loop. `perf` on an idle payments process
//! put 60 % of its samples there: about 1 % of a core per producer, idle or
//! busy, and an instance has up to five producers. This thread polls in
//! one-second rounds, so the same rounding costs a millisecond a second; a
//! report still wakes it at once.

use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{OwnedMessage, ToBytes};
use rdkafka::producer::future_producer::{Delivery, OwnedDeliveryResult};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, FutureRecord, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Message, Timestamp};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long one poll round lasts. A report ends the wait at once; the
/// round only bounds how soon the thread notices its producer is gone.
const POLL_ROUND: Duration = Duration::from_secs(1);

/// How long `send` waits before asking a full queue again.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(5);

/// Resolves with the record's delivery report; `Err` if the producer was
/// destroyed before it reported.
pub type DeliveryFuture = oneshot::Receiver<OwnedDeliveryResult>;

/// Hands each delivery report to the future of the record it belongs to.
pub struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<oneshot::Sender<OwnedDeliveryResult>>;

    fn delivery(&self, result: &DeliveryResult<'_>, sender: Self::DeliveryOpaque) {
        let owned = match result {
            Ok(message) => Ok(Delivery {
                partition: message.partition(),
                offset: message.offset(),
                timestamp: message.timestamp(),
            }),
            Err((error, message)) => Err((error.clone(), message.detach())),
        };
        // The sender may have stopped waiting; the report is then nobody's.
        let _ = sender.send(owned);
    }
}

/// A producer handle; clones share one librdkafka producer and one poll
/// thread, which ends within a poll round after the last clone is dropped.
#[derive(Clone)]
pub struct KafkaProducer {
    handle: Arc<Handle>,
}

struct Handle {
    base: Arc<BaseProducer<Deliveries>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Not joined: the thread may be inside a round for up to a second,
        // and it drops the producer (purging what is left) when it ends.
        self.stop.store(true, Ordering::Release);
    }
}

impl KafkaProducer {
    /// A producer from `config`, its poll thread named after `client.id`.
    pub fn create(config: &ClientConfig) -> KafkaResult<Self> {
        let base = Arc::new(BaseProducer::from_config_and_context(config, Deliveries)?);
        let stop = Arc::new(AtomicBool::new(false));
        let name = config.get("client.id").unwrap_or("producer");
        let polled = Arc::clone(&base);
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name(format!("{name}-acks"))
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    polled.poll(POLL_ROUND);
                }
            })
            .map_err(|error| KafkaError::ClientCreation(error.to_string()))?;
        Ok(Self {
            handle: Arc::new(Handle { base, stop }),
        })
    }

    /// Enqueue `record`; its future resolves with the delivery report. A
    /// full queue gives the record back with `QueueFull`.
    #[allow(clippy::result_large_err)] // the record is handed back, as rdkafka does
    pub fn send_result<'a, K, P>(
        &self,
        record: FutureRecord<'a, K, P>,
    ) -> Result<DeliveryFuture, (KafkaError, FutureRecord<'a, K, P>)>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (sender, receiver) = oneshot::channel();
        let base = BaseRecord {
            topic: record.topic,
            partition: record.partition,
            payload: record.payload,
            key: record.key,
            timestamp: record.timestamp,
            headers: record.headers,
            delivery_opaque: Box::new(sender),
        };
        match self.handle.base.send(base) {
            Ok(()) => Ok(receiver),
            Err((error, base)) => Err((
                error,
                FutureRecord {
                    topic: base.topic,
                    partition: base.partition,
                    payload: base.payload,
                    key: base.key,
                    timestamp: base.timestamp,
                    headers: base.headers,
                },
            )),
        }
    }

    /// Enqueue `record`, waiting up to `queue_timeout` while the queue is
    /// full, and wait for its delivery report.
    pub async fn send<K, P>(
        &self,
        mut record: FutureRecord<'_, K, P>,
        queue_timeout: impl Into<Timeout>,
    ) -> OwnedDeliveryResult
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let started = Instant::now();
        let queue_timeout = queue_timeout.into();
        let may_wait = || match queue_timeout {
            Timeout::Never => true,
            Timeout::After(limit) => started.elapsed() < limit,
        };
        loop {
            match self.send_result(record) {
                Ok(delivery) => {
                    return match delivery.await {
                        Ok(report) => report,
                        Err(_) => Err(destroyed()),
                    }
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if may_wait() =>
                {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((error, back)) => return Err((error, unsent(&back))),
            }
        }
    }

    /// Wait until every enqueued record has its report, or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        rdkafka::producer::Producer::flush(&*self.handle.base, Timeout::After(timeout))
    }
}

/// The librdkafka producer, for its transactional API and its client.
impl Deref for KafkaProducer {
    type Target = BaseProducer<Deliveries>;

    fn deref(&self) -> &Self::Target {
        &self.handle.base
    }
}

/// The report of a record whose producer was destroyed before it reported.
fn destroyed() -> (KafkaError, OwnedMessage) {
    let message = OwnedMessage::new(
        None,
        None,
        String::new(),
        Timestamp::NotAvailable,
        -1,
        -1,
        None,
    );
    (KafkaError::Canceled, message)
}

fn unsent<K, P>(record: &FutureRecord<'_, K, P>) -> OwnedMessage
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    OwnedMessage::new(
        record.payload.map(|payload| payload.to_bytes().to_vec()),
        record.key.map(|key| key.to_bytes().to_vec()),
        record.topic.to_owned(),
        Timestamp::NotAvailable,
        record.partition.unwrap_or(-1),
        -1,
        None,
    )
}
