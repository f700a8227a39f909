//! The side-effect engine: a consumer-group member that hands records to a
//! [`Sink`] (a payment provider call, a Postgres batch) rather than to a
//! stateful [`crate::Handler`]. It owns what every such consumer needs and
//! nothing of what it does: membership, lanes, batching, offsets, lag,
//! assigned-partition tracking and shutdown.
//!
//! Delivery: at-least-once. A record's offset is stored (then auto-committed)
//! only after the sink has finished the batch holding it; a crash or a
//! rebalance before that hands the batch to the next owner again, so a
//! sink's effects must be idempotent (the provider's idempotency key, inserts
//! keyed by offset). Records of one partition reach the sink in their order,
//! one batch after another. On stop, a lane finishes the batch in hand (or
//! the sink gives it up), starts no other, and the stored offsets are
//! committed synchronously before the group is left.
//!
//! A sink that reports something (the provider worker's outcomes) returns
//! it as [`Effects`] ([`Handled::Send`]): the engine produces them (an
//! idempotent producer; message ids derived from each cause, so a batch
//! handled again sends copies the receiver drops) and stores the batch's
//! offsets only once every one is acknowledged.

use crate::error::RuntimeError;
use crate::handler::Effects;
use crate::outbox::{record_of, send_all, Record};
use crate::stuck::Waiting;
use d2c_platform::kafka::{group_consumer_config, producer_config};
use d2c_platform::lag::{enable_statistics, ConsumerLag};
use d2c_platform::metrics::METRICS;
use d2c_platform::producer::KafkaProducer;
use d2c_topology::TopicNames;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

const SEND_BACKOFF_START: Duration = Duration::from_millis(100);
const SEND_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How a sink's records are split into sequential lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lanes {
    /// One lane per (topic, partition): a slow record holds up only its own
    /// partition (provider calls).
    PerPartition,
    /// One lane for everything: a batch spans partitions and topics (one
    /// Postgres transaction per batch).
    Shared,
}

/// What the engine needs to know.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    pub brokers: String,
    pub group_id: String,
    pub client_id: String,
    /// Physical topic names.
    pub topics: Vec<String>,
    pub fetch_wait: Duration,
    pub session_timeout: Duration,
    /// How often the consumer's lag is read from librdkafka's statistics.
    pub stats_interval: Duration,
    pub lanes: Lanes,
    /// Records per batch at most.
    pub max_batch: usize,
    /// After a batch's first record, how long to wait for more: a few ms
    /// fill a batch on a busy topic and cost little on a quiet one.
    pub batch_linger: Duration,
    /// Whether this consumer's partitions are the process's
    /// `d2c_assigned_partitions` (false beside a processor, which owns it).
    pub report_assigned: bool,
    /// Where what the sink sends goes; `None` for a sink that sends nothing.
    pub output: Option<SinkOutput>,
}

/// How the engine produces what a sink sends.
#[derive(Debug, Clone)]
pub struct SinkOutput {
    /// D2C_TOPIC_PREFIX: logical topics are named with it.
    pub topic_prefix: String,
    pub linger: Duration,
}

/// The engine's producer and topic names.
struct Output {
    producer: KafkaProducer,
    names: TopicNames,
}

/// What became of a batch.
#[derive(Debug)]
pub enum Handled {
    /// Its effects are done: its offsets may move on.
    Done,
    /// Done once these messages are acknowledged (the engine sends them,
    /// retrying until they are or stopping starts).
    Send(Vec<Effects>),
    /// Stopping interrupted it: its offsets must not move; the next owner
    /// handles it again.
    Stopped,
}

/// A side-effect consumer's own logic.
pub trait Sink: Send + Sync + 'static {
    /// Handles one batch (records of one lane, in order). `stop` turns true
    /// on shutdown: a sink finishes what cannot be interrupted and returns
    /// [`Handled::Stopped`] where it gives up.
    fn handle(
        &self,
        batch: &[OwnedMessage],
        stop: &mut watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = Handled> + Send;

    /// Called for each consumer error (the client recovers on its own).
    fn consumer_error(&self, _error: &KafkaError) {}
}

/// The partitions this member owns, as the rebalance callbacks report them.
#[derive(Default)]
pub struct Assignments {
    owned: Mutex<HashSet<(String, i32)>>,
    first_arrived: AtomicBool,
}

impl Assignments {
    fn owned(&self) -> MutexGuard<'_, HashSet<(String, i32)>> {
        // Entries are inserted and removed whole: a poisoned set is still valid.
        self.owned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the group has assigned this member partitions at least once.
    pub fn first_arrived(&self) -> bool {
        self.first_arrived.load(Ordering::Acquire)
    }

    /// How many partitions this member owns now.
    pub fn count(&self) -> usize {
        self.owned().len()
    }
}

pub struct SinkContext {
    assignments: Arc<Assignments>,
    lag: ConsumerLag,
    report_assigned: bool,
    offsets: OffsetWatch,
}

impl ClientContext for SinkContext {
    fn stats(&self, statistics: Statistics) {
        self.lag.observe(&statistics);
        if let Some(stuck) = self.offsets.observe(&statistics, Instant::now()) {
            // Nothing is in flight for these partitions: a fresh process
            // resumes from the committed offsets.
            crate::stuck::exit_for_fresh_start(&stuck);
        }
    }
}

/// How long an assigned partition may wait for its starting offset (the
/// group's committed one). Seen on a freshly started three-broker cluster:
/// the projector had 240 partitions assigned and fetched nothing for
/// minutes, and a restart fetched at once; most likely librdkafka's offset
/// query waiting on a coordinator it does not look up again (issue 5511).
const OFFSET_WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Watches the partitions' fetch state in librdkafka's statistics.
pub(crate) struct OffsetWatch {
    waiting: Waiting<(String, i32)>,
}

impl OffsetWatch {
    pub fn new(limit: Duration) -> Self {
        Self {
            waiting: Waiting::new(limit),
        }
    }

    /// A description of the partitions waiting for their offset past the
    /// limit, if any.
    pub fn observe(&self, statistics: &Statistics, now: Instant) -> Option<String> {
        let waiting = statistics.topics.iter().flat_map(|(topic, stats)| {
            stats
                .partitions
                .values()
                .filter(|partition| {
                    partition.partition >= 0
                        && matches!(
                            partition.fetch_state.as_str(),
                            "offset-query" | "offset-wait"
                        )
                })
                .map(move |partition| (topic.clone(), partition.partition))
        });
        let stuck: Vec<String> = self
            .waiting
            .past_limit(waiting, now)
            .into_iter()
            .map(|((topic, partition), _)| format!("{topic}[{partition}]"))
            .collect();
        (!stuck.is_empty()).then(|| {
            format!(
                "{} partition(s) waiting for their offset for {:?} or more: {}",
                stuck.len(),
                self.waiting.limit(),
                stuck.join(", ")
            )
        })
    }
}

/// The default rebalance (incremental under cooperative-sticky) suits a
/// sink: a batch in flight for a revoked partition still finishes
/// (idempotent); only its offsets are not stored.
impl ConsumerContext for SinkContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut owned = self.assignments.owned();
        match rebalance {
            Rebalance::Assign(list) => {
                for element in list.elements() {
                    owned.insert((element.topic().to_owned(), element.partition()));
                }
                self.assignments
                    .first_arrived
                    .store(true, Ordering::Release);
                tracing::info!(
                    added = list.count(),
                    owned = owned.len(),
                    "Partitions assigned"
                );
            }
            Rebalance::Revoke(list) => {
                for element in list.elements() {
                    owned.remove(&(element.topic().to_owned(), element.partition()));
                    self.lag.forget(element.topic(), &[element.partition()]);
                }
                tracing::info!(
                    removed = list.count(),
                    owned = owned.len(),
                    "Partitions revoked"
                );
            }
            Rebalance::Error(error) => {
                tracing::error!(%error, "Rebalance failed; every partition released");
                owned.clear();
                self.lag.forget_all();
            }
        }
        if self.report_assigned {
            METRICS.assigned_partitions.set(owned.len() as i64);
        }
    }
}

/// A subscribed sink consumer, not yet running.
pub struct SinkEngine {
    consumer: Arc<StreamConsumer<SinkContext>>,
    settings: SinkSettings,
    assignments: Arc<Assignments>,
    output: Option<Arc<Output>>,
}

impl SinkEngine {
    /// Joins the group and subscribes; records flow once [`Self::run`] polls.
    pub fn subscribe(settings: SinkSettings) -> Result<Self, RuntimeError> {
        if settings.max_batch == 0 {
            return Err(RuntimeError::Config(
                "a sink's batch must hold at least one record".into(),
            ));
        }
        let assignments = Arc::new(Assignments::default());
        let mut config = group_consumer_config(
            &settings.brokers,
            &settings.group_id,
            &settings.client_id,
            settings.fetch_wait,
            settings.session_timeout,
        );
        let consumer: StreamConsumer<SinkContext> =
            enable_statistics(&mut config, settings.stats_interval).create_with_context(
                SinkContext {
                    assignments: Arc::clone(&assignments),
                    lag: ConsumerLag::new(settings.group_id.clone()),
                    report_assigned: settings.report_assigned,
                    offsets: OffsetWatch::new(OFFSET_WAIT_LIMIT),
                },
            )?;
        let output = match &settings.output {
            Some(output) => Some(Arc::new(Output {
                producer: KafkaProducer::create(&producer_config(
                    &settings.brokers,
                    &settings.client_id,
                    output.linger,
                ))?,
                names: TopicNames::new(output.topic_prefix.clone()),
            })),
            None => None,
        };
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        tracing::info!(topics = ?settings.topics, group = %settings.group_id, "Subscribed");
        Ok(Self {
            consumer: Arc::new(consumer),
            settings,
            assignments,
            output,
        })
    }

    pub fn assignments(&self) -> Arc<Assignments> {
        Arc::clone(&self.assignments)
    }

    /// Feeds the sink until `stop` turns true, then lets every lane finish
    /// its batch, commits the stored offsets and leaves the group.
    pub async fn run<S: Sink>(self, sink: Arc<S>, mut stop: watch::Receiver<bool>) {
        let capacity = self.settings.max_batch.max(64);
        let mut lanes: HashMap<(String, i32), mpsc::Sender<OwnedMessage>> = HashMap::new();
        let mut tasks = JoinSet::new();
        loop {
            let received = tokio::select! {
                biased;
                _ = stop.wait_for(|stopping| *stopping) => break,
                received = self.consumer.recv() => received.map(|message| message.detach()),
            };
            let message = match received {
                Ok(message) => message,
                Err(error) => {
                    sink.consumer_error(&error);
                    tracing::warn!(%error, "Consumer error");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        _ = stop.wait_for(|stopping| *stopping) => break,
                    }
                }
            };
            METRICS
                .messages_consumed
                .with_label_values(&[message.topic()])
                .inc();
            let key = match self.settings.lanes {
                Lanes::PerPartition => (message.topic().to_owned(), message.partition()),
                Lanes::Shared => (String::new(), 0),
            };
            let lane = lanes.entry(key.clone()).or_insert_with(|| {
                let (sender, receiver) = mpsc::channel(capacity);
                tasks.spawn(
                    Lane {
                        consumer: Arc::clone(&self.consumer),
                        sink: Arc::clone(&sink),
                        max_batch: self.settings.max_batch,
                        linger: self.settings.batch_linger,
                        stop: stop.clone(),
                        output: self.output.clone(),
                    }
                    .run(receiver),
                );
                sender
            });
            let sent = tokio::select! {
                biased;
                _ = stop.wait_for(|stopping| *stopping) => break,
                sent = lane.send(message) => sent.is_ok(),
            };
            if !sent {
                // Lanes end only when stopping; start afresh if one did not.
                tracing::error!(lane = ?key, "A sink lane ended unexpectedly");
                lanes.remove(&key);
            }
        }
        tracing::info!("Sink stopping: finishing the batches in hand");
        drop(lanes);
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "A sink lane panicked");
            }
        }
        if let Some(output) = &self.output {
            if let Err(error) = output.producer.flush(Duration::from_secs(10)) {
                tracing::warn!(%error, "The sink's producer did not flush");
            }
        }
        d2c_platform::kafka::commit_final_offsets(self.consumer.as_ref());
        self.consumer.unsubscribe();
        tracing::info!("Sink stopped");
    }
}

/// One sequential lane: batches from its queue, handed to the sink one
/// after another, offsets stored after each.
struct Lane<S> {
    consumer: Arc<StreamConsumer<SinkContext>>,
    sink: Arc<S>,
    max_batch: usize,
    linger: Duration,
    stop: watch::Receiver<bool>,
    output: Option<Arc<Output>>,
}

impl<S: Sink> Lane<S> {
    async fn run(mut self, mut receiver: mpsc::Receiver<OwnedMessage>) {
        while let Some(first) = receiver.recv().await {
            if *self.stop.borrow() {
                break;
            }
            let batch = self.fill(first, &mut receiver).await;
            let done = match self.sink.handle(&batch, &mut self.stop).await {
                Handled::Done => true,
                Handled::Send(effects) => self.send(effects).await,
                Handled::Stopped => false,
            };
            if !done {
                break;
            }
            self.store_offsets(&batch);
        }
    }

    /// Produces what a batch sent and waits for every acknowledgement,
    /// retrying with backoff; `false` if stopping came first (the batch's
    /// offsets then stay, and its next owner handles it again).
    async fn send(&mut self, effects: Vec<Effects>) -> bool {
        let Some(output) = self.output.clone() else {
            tracing::error!("A sink sent messages but its engine has no output: they are dropped");
            return false;
        };
        let records: Vec<Record> = effects
            .into_iter()
            .flat_map(|effects| effects.into_parts().1)
            .map(|outgoing| record_of(&output.names, outgoing))
            .collect();
        let mut wait = SEND_BACKOFF_START;
        loop {
            match send_all(&output.producer, &records).await {
                Ok(_) => return true,
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64,
                        "Producing what a sink sent failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = self.stop.wait_for(|stopping| *stopping) => return false,
                    }
                    wait = (wait * 2).min(SEND_BACKOFF_MAX);
                }
            }
        }
    }

    /// A batch starting with `first`: what arrives within the linger, up to
    /// the batch size.
    async fn fill(
        &self,
        first: OwnedMessage,
        receiver: &mut mpsc::Receiver<OwnedMessage>,
    ) -> Vec<OwnedMessage> {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + self.linger;
        while batch.len() < self.max_batch {
            match receiver.try_recv() {
                Ok(message) => batch.push(message),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, receiver.recv()).await {
                        Ok(Some(message)) => batch.push(message),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        batch
    }

    /// Stores the offset after each (topic, partition)'s last record of the
    /// batch, for auto-commit to pick up.
    fn store_offsets(&self, batch: &[OwnedMessage]) {
        for ((topic, partition), offset) in last_offsets(batch) {
            if let Err(error) = self.consumer.store_offset(topic, partition, offset) {
                // A partition revoked meanwhile: its next owner handles the
                // batch again, harmlessly.
                tracing::debug!(
                    %error,
                    messaging.destination.name = %topic,
                    messaging.kafka.destination.partition = partition,
                    messaging.kafka.message.offset = offset,
                    "Offset not stored"
                );
            }
        }
    }
}

/// The highest offset of each (topic, partition) in a batch.
fn last_offsets(batch: &[OwnedMessage]) -> BTreeMap<(&str, i32), i64> {
    let mut last = BTreeMap::new();
    for message in batch {
        let entry = last
            .entry((message.topic(), message.partition()))
            .or_insert(message.offset());
        *entry = (*entry).max(message.offset());
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Timestamp;

    fn record(topic: &str, partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            topic.to_owned(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    #[test]
    fn the_highest_offset_of_each_partition_is_stored() {
        let batch = [
            record("a", 0, 5),
            record("a", 1, 9),
            record("a", 0, 7),
            record("b", 0, 2),
        ];
        let last: Vec<_> = last_offsets(&batch).into_iter().collect();
        assert_eq!(last, [(("a", 0), 7), (("a", 1), 9), (("b", 0), 2)]);
    }
}

#[cfg(test)]
mod offset_watch_tests {
    use super::OffsetWatch;
    use rdkafka::statistics::{Partition, Statistics, Topic};
    use std::time::{Duration, Instant};

    fn statistics(fetch_state: &str) -> Statistics {
        let partition = Partition {
            partition: 3,
            fetch_state: fetch_state.into(),
            ..Partition::default()
        };
        let topic = Topic {
            topic: "catalog.events".into(),
            partitions: [(3, partition)].into_iter().collect(),
            ..Topic::default()
        };
        Statistics {
            topics: [("catalog.events".to_owned(), topic)].into_iter().collect(),
            ..Statistics::default()
        }
    }

    #[test]
    fn a_partition_waiting_for_its_offset_past_the_limit_is_named() {
        let watch = OffsetWatch::new(Duration::from_secs(60));
        let start = Instant::now();
        let waiting = statistics("offset-query");
        assert!(watch.observe(&waiting, start).is_none());
        assert!(watch
            .observe(&waiting, start + Duration::from_secs(59))
            .is_none());
        let stuck = watch.observe(&waiting, start + Duration::from_secs(60));
        assert!(
            stuck.is_some_and(|text| text.contains("catalog.events[3]")),
            "named once past the limit"
        );
    }

    #[test]
    fn fetching_resets_the_wait() {
        let watch = OffsetWatch::new(Duration::from_secs(60));
        let start = Instant::now();
        assert!(watch.observe(&statistics("offset-wait"), start).is_none());
        assert!(watch
            .observe(&statistics("active"), start + Duration::from_secs(30))
            .is_none());
        assert!(watch
            .observe(&statistics("offset-wait"), start + Duration::from_secs(80))
            .is_none());
    }
}
