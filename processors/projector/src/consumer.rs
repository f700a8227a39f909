//! The Kafka side: a group member subscribed to every `*.events` topic,
//! polled in batches, whose offsets are stored only after the batch they
//! cover is committed to Postgres (then auto-committed to the group).
//!
//! Delivery: at-least-once. A crash between the Postgres commit and the
//! offset commit replays records that are already projected; every insert
//! is idempotent, so the replay changes nothing. Partitions are projected in
//! their order; across partitions there is no order to keep.

use crate::config::{ProjectorConfig, SERVICE};
use crate::metrics::{error_kind, METRICS};
use crate::ProjectorError;
use d2c_runtime::lag::{enable_statistics, ConsumerLag};
use d2c_topology::{topic, TopicNames};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::OwnedMessage;
use rdkafka::statistics::Statistics;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// After the first record of a batch, how long to keep collecting what the
/// client has already fetched: a few ms, so a busy topic fills a batch and
/// a quiet one costs almost nothing in latency.
const BATCH_LINGER: Duration = Duration::from_millis(5);

/// The logical topics the projector reads.
pub const EVENT_TOPICS: [&str; 5] = [
    topic::ORDERS_EVENTS,
    topic::INVENTORY_EVENTS,
    topic::PAYMENTS_EVENTS,
    topic::CATALOG_EVENTS,
    topic::CUSTOMERS_EVENTS,
];

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
}

pub struct ProjectorContext {
    assignments: Arc<Assignments>,
    lag: ConsumerLag,
}

impl ClientContext for ProjectorContext {
    fn stats(&self, statistics: Statistics) {
        self.lag.observe(&statistics);
    }
}

/// The default rebalance (incremental assign/unassign under cooperative-
/// sticky) suits the projector: a batch in flight for a revoked partition
/// still commits (idempotent), only its offsets are not stored.
impl ConsumerContext for ProjectorContext {
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
        d2c_runtime::metrics::METRICS
            .assigned_partitions
            .set(owned.len() as i64);
    }
}

pub struct EventConsumer {
    consumer: StreamConsumer<ProjectorContext>,
    pub assignments: Arc<Assignments>,
}

impl EventConsumer {
    pub fn subscribe(config: &ProjectorConfig) -> Result<Self, ProjectorError> {
        let names = TopicNames::new(config.topic_prefix.clone());
        let topics: Vec<String> = EVENT_TOPICS.iter().map(|name| names.name(name)).collect();
        let assignments = Arc::new(Assignments::default());
        let mut consumer_config = d2c_runtime::kafka::group_consumer_config(
            &config.brokers,
            &config.group_id,
            &format!("{SERVICE}-{}", config.name),
            config.fetch_wait,
            config.session_timeout,
        );
        let consumer: StreamConsumer<ProjectorContext> =
            enable_statistics(&mut consumer_config, config.stats_interval).create_with_context(
                ProjectorContext {
                    assignments: Arc::clone(&assignments),
                    lag: ConsumerLag::new(config.group_id.clone()),
                },
            )?;
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&refs)?;
        tracing::info!(?topics, group = %config.group_id, "Subscribed");
        Ok(Self {
            consumer,
            assignments,
        })
    }

    /// The next record. Cancel-safe (a record is taken off the client's
    /// queue only when this returns it), so it can race a stop signal.
    /// Consumer errors are logged and yield `None` (the client recovers on
    /// its own).
    pub async fn recv(&self) -> Option<OwnedMessage> {
        match self.consumer.recv().await {
            Ok(message) => Some(message.detach()),
            Err(error) => {
                consumer_error(&error);
                None
            }
        }
    }

    /// A batch starting with `first`: what follows within [`BATCH_LINGER`],
    /// up to `max` records. Not to be cancelled: records it took would be
    /// skipped once a later batch stores a higher offset.
    pub async fn fill_batch(&self, first: OwnedMessage, max: usize) -> Vec<OwnedMessage> {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_LINGER;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(message.detach()),
                Ok(Err(error)) => {
                    consumer_error(&error);
                    break;
                }
                Err(_) => break,
            }
        }
        batch
    }

    /// Stores the offset after each (topic, partition)'s last projected
    /// record, for auto-commit to pick up.
    pub fn store_offsets(&self, last_offsets: &BTreeMap<(String, i32), i64>) {
        for ((topic, partition), offset) in last_offsets {
            if let Err(error) = self.consumer.store_offset(topic, *partition, *offset) {
                // A partition revoked meanwhile: its next owner consumes the
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

    /// Commits the stored offsets synchronously and leaves the group.
    pub fn close(self) {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(error)
                if error.rdkafka_error_code()
                    == Some(rdkafka::types::RDKafkaErrorCode::NoOffset) => {}
            Err(error) => tracing::warn!(%error, "Final offset commit failed"),
        }
        self.consumer.unsubscribe();
    }
}

fn consumer_error(error: &rdkafka::error::KafkaError) {
    METRICS.errors.with_label_values(&[error_kind::KAFKA]).inc();
    tracing::warn!(%error, "Consumer error");
}
