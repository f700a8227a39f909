//! Partition ownership: what happens when the group hands this instance a
//! partition or takes one away.
//!
//! The rebalance callback runs on the poll thread and returns at once. On
//! assignment it assigns and pauses the partitions, and starts their
//! workers; each store is opened (or restored) on a blocking thread, then
//! the poll thread seeks the partition to the offset after the store's
//! applied offset and resumes it, so the store, not the group's committed
//! offset, decides where consumption resumes. On revocation it lets each
//! worker finish its in-flight batch before giving the partition up, so two
//! instances never handle one partition at once.

use crate::context::Shared;
use crate::error::RuntimeError;
use crate::restore::{self, Jobs};
use crate::stuck::Waiting;
use crate::worker;
use d2c_platform::admin::Readiness;
use d2c_platform::lag::ConsumerLag;
use d2c_platform::metrics::METRICS;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::OwnedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::TopicPartitionList;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

struct Worker {
    inbox: mpsc::Sender<OwnedMessage>,
    revoked: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

pub(crate) struct Partitions {
    pub shared: Arc<Shared>,
    workers: Mutex<HashMap<i32, Worker>>,
    readiness: Arc<Readiness>,
}

impl Partitions {
    pub fn new(shared: Arc<Shared>, readiness: Arc<Readiness>) -> Self {
        Self {
            shared,
            workers: Mutex::new(HashMap::new()),
            readiness,
        }
    }

    fn workers(&self) -> MutexGuard<'_, HashMap<i32, Worker>> {
        // A worker map poisoned by a panic is still consistent: entries are
        // inserted and removed whole.
        self.workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The partitions this instance owns now.
    pub fn owned(&self) -> Vec<i32> {
        let mut owned: Vec<i32> = self.workers().keys().copied().collect();
        owned.sort_unstable();
        owned
    }

    /// Start a worker for each partition. Its store is opened (or restored
    /// from the changelog) on a blocking thread; the worker starts once it
    /// is current, and asks the poll thread to resume the partition (paused
    /// meanwhile) where the store says.
    fn assign(&self, partitions: &[i32]) {
        let mut jobs: Jobs = Vec::with_capacity(partitions.len());
        self.shared
            .opening
            .fetch_add(partitions.len(), Ordering::AcqRel);
        if partitions.is_empty() {
            // Nothing to open: an instance with no partitions is ready too.
            self.readiness.assigned.store(true, Ordering::Release);
        }
        for &partition in partitions {
            let (inbox, receiver) = mpsc::channel(self.shared.config.partition_queue);
            let revoked = Arc::new(AtomicBool::new(false));
            let (handover, store) = oneshot::channel();
            let task = self.shared.runtime.spawn(worker::start(
                Arc::clone(&self.shared),
                store,
                receiver,
                Arc::clone(&revoked),
            ));
            if let Some(previous) = self.workers().insert(
                partition,
                Worker {
                    inbox,
                    revoked: Arc::clone(&revoked),
                    task,
                },
            ) {
                previous.task.abort();
            }
            tracing::info!(partition, "Partition assigned; opening its store");
            jobs.push((partition, revoked, handover));
        }
        METRICS.assigned_partitions.set(self.workers().len() as i64);
        let shared = Arc::clone(&self.shared);
        self.shared
            .runtime
            .spawn_blocking(move || restore::open_all(&shared, jobs));
    }

    /// Stop the workers of `partitions` after their in-flight batch.
    pub fn revoke(&self, partitions: &[i32]) {
        let stopping: Vec<(i32, Worker)> = {
            let mut workers = self.workers();
            partitions
                .iter()
                .filter_map(|partition| {
                    workers.remove(partition).map(|worker| (*partition, worker))
                })
                .collect()
        };
        for (partition, worker) in stopping {
            worker.revoked.store(true, Ordering::Release);
            // Closing the inbox ends the worker's loop after its current batch.
            drop(worker.inbox);
            if let Err(error) = self.shared.runtime.block_on(worker.task) {
                tracing::error!(%error, partition, "Partition worker ended abnormally");
            }
            tracing::info!(partition, "Partition revoked");
            if let Some(standby) = &self.shared.standby {
                standby.follow(partition);
            }
        }
        METRICS.assigned_partitions.set(self.workers().len() as i64);
    }

    pub fn revoke_all(&self) {
        let all: Vec<i32> = self.workers().keys().copied().collect();
        self.revoke(&all);
    }

    /// Hand a consumed message to its partition's worker. Blocks while that
    /// worker's inbox is full: back-pressure all the way to the broker.
    pub fn dispatch(&self, message: OwnedMessage) {
        let partition = rdkafka::Message::partition(&message);
        METRICS
            .messages_consumed
            .with_label_values(&[rdkafka::Message::topic(&message)])
            .inc();
        let inbox = self
            .workers()
            .get(&partition)
            .map(|worker| worker.inbox.clone());
        match inbox {
            Some(inbox) => {
                if inbox.blocking_send(message).is_err() {
                    tracing::debug!(
                        partition,
                        "Message for a stopping worker dropped; it will be redelivered"
                    );
                }
            }
            None => tracing::warn!(partition, "Message for an unowned partition ignored"),
        }
    }

    pub fn input_topic(&self) -> &str {
        &self.shared.topics.input
    }
}

/// The consumer context: routes rebalances to [`Partitions`], and
/// librdkafka's statistics to the lag gauge.
pub(crate) struct RebalanceContext {
    pub partitions: Arc<Partitions>,
    pub lag: ConsumerLag,
    pub membership: MembershipWatch,
}

impl ClientContext for RebalanceContext {
    fn stats(&self, statistics: Statistics) {
        self.lag.observe(&statistics);
        if let Some(group) = &statistics.cgrp {
            if let Some(stuck) = self.membership.observe(group, Instant::now()) {
                self.partitions.shared.record_fatal(stuck);
            }
        }
    }
}

/// Watches the consumer's group state in librdkafka's statistics: a
/// consumer that is not a settled member (state `up`, join state `steady`)
/// for longer than the limit is stuck, and the instance stops.
pub(crate) struct MembershipWatch {
    unsettled: Waiting<()>,
}

impl MembershipWatch {
    /// `limit` zero: never stuck.
    pub fn new(limit: Duration) -> Self {
        Self {
            unsettled: Waiting::new(limit),
        }
    }

    pub fn observe(
        &self,
        group: &rdkafka::statistics::ConsumerGroup,
        now: Instant,
    ) -> Option<RuntimeError> {
        let settled = group.state == "up" && group.join_state == "steady";
        let stuck = self.unsettled.past_limit((!settled).then_some(()), now);
        stuck.first().map(|((), waited)| {
            RuntimeError::MembershipStuck(format!(
                "not a settled group member for {waited:?} (state {}, join state {})",
                group.state, group.join_state
            ))
        })
    }
}

impl ConsumerContext for RebalanceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        list: &mut TopicPartitionList,
    ) {
        let partitions: Vec<i32> = list
            .elements()
            .iter()
            .map(|element| element.partition())
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Paused at once, before any fetch: each partition is resumed
                // where its store says once the store is current, so the
                // callback returns without waiting for a restore. Assigned
                // at an explicit (logical) offset, so librdkafka never asks
                // the group for a committed offset: a failed query (e.g. the
                // coordinator still loading after a broker restart) would
                // leave the partition unstarted, and a seek to an unstarted
                // partition fails.
                let mut starting = TopicPartitionList::new();
                for element in list.elements() {
                    if let Err(error) = starting.add_partition_offset(
                        element.topic(),
                        element.partition(),
                        rdkafka::Offset::Beginning,
                    ) {
                        self.partitions.shared.record_fatal(error.into());
                        return;
                    }
                }
                let assigned = consumer
                    .incremental_assign(&starting)
                    .and_then(|()| consumer.pause(&starting));
                if let Err(error) = assigned {
                    self.partitions.shared.record_fatal(error.into());
                    return;
                }
                self.partitions.assign(&partitions);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.partitions.revoke(&partitions);
                self.lag.forget(self.partitions.input_topic(), &partitions);
                if let Err(error) = consumer.incremental_unassign(list) {
                    tracing::error!(%error, "Incremental unassign failed");
                }
            }
            other => {
                tracing::error!(?other, "Rebalance failed; releasing every partition");
                self.partitions.revoke_all();
                self.lag.forget_all();
                if let Err(error) = consumer.unassign() {
                    tracing::error!(%error, "Unassign failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MembershipWatch;
    use rdkafka::statistics::ConsumerGroup;
    use std::time::{Duration, Instant};

    fn group(state: &str, join_state: &str) -> ConsumerGroup {
        ConsumerGroup {
            state: state.into(),
            join_state: join_state.into(),
            ..ConsumerGroup::default()
        }
    }

    #[test]
    fn a_consumer_unsettled_past_the_limit_is_stuck_and_settling_resets_the_clock() {
        let watch = MembershipWatch::new(Duration::from_secs(30));
        let start = Instant::now();
        let waiting = group("wait-broker-transport", "init");
        assert!(watch.observe(&waiting, start).is_none());
        assert!(watch
            .observe(&waiting, start + Duration::from_secs(29))
            .is_none());
        let stuck = watch.observe(&waiting, start + Duration::from_secs(30));
        assert!(
            stuck.is_some_and(|error| error.to_string().contains("wait-broker-transport")),
            "stuck after the limit"
        );
        assert!(watch
            .observe(&group("up", "steady"), start + Duration::from_secs(31))
            .is_none());
        assert!(
            watch
                .observe(&group("up", "wait-join"), start + Duration::from_secs(50))
                .is_none(),
            "the clock started again when it settled"
        );
    }

    #[test]
    fn a_zero_limit_never_calls_a_consumer_stuck() {
        let watch = MembershipWatch::new(Duration::ZERO);
        let start = Instant::now();
        let waiting = group("query-coord", "init");
        assert!(watch.observe(&waiting, start).is_none());
        assert!(watch
            .observe(&waiting, start + Duration::from_secs(3600))
            .is_none());
    }
}
