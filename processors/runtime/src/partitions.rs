//! Partition ownership: what happens when the group hands this instance a
//! partition or takes one away.
//!
//! The rebalance callback runs on the poll thread. On assignment it opens (or
//! restores) each partition's store and assigns the partition at the offset
//! after the store's applied offset, so the store, not the group's committed
//! offset, decides where consumption resumes. On revocation it lets each
//! worker finish its in-flight batch before giving the partition up, so two
//! instances never handle one partition at once.

use crate::admin::Readiness;
use crate::lag::ConsumerLag;
use crate::metrics::METRICS;
use crate::restore;
use crate::run::Shared;
use crate::{worker, RuntimeError};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::OwnedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

struct Worker {
    inbox: mpsc::Sender<OwnedMessage>,
    revoked: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

pub(crate) struct Partitions {
    shared: Arc<Shared>,
    workers: Mutex<HashMap<i32, Worker>>,
    readiness: Arc<Readiness>,
    /// Set when an assignment could not be honoured; the process must exit.
    pub fatal: Mutex<Option<RuntimeError>>,
}

impl Partitions {
    pub fn new(shared: Arc<Shared>, readiness: Arc<Readiness>) -> Self {
        Self {
            shared,
            workers: Mutex::new(HashMap::new()),
            readiness,
            fatal: Mutex::new(None),
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

    /// Open stores and start workers; returns where each partition resumes.
    fn assign(&self, partitions: &[i32]) -> Result<Vec<(i32, Offset)>, RuntimeError> {
        let mut resume = Vec::with_capacity(partitions.len());
        let changelog = restore::changelog_reader(&self.shared)?;
        for &partition in partitions {
            let store = restore::open_partition(&self.shared, &changelog, partition)?;
            let offset = match store.applied_offset()? {
                Some(applied) => Offset::Offset(applied + 1),
                None => Offset::Beginning,
            };
            let (inbox, receiver) = mpsc::channel(self.shared.config.partition_queue);
            let revoked = Arc::new(AtomicBool::new(false));
            let task = self.shared.runtime.spawn(worker::run(
                Arc::clone(&self.shared),
                store,
                receiver,
                Arc::clone(&revoked),
            ));
            if let Some(previous) = self.workers().insert(
                partition,
                Worker {
                    inbox,
                    revoked,
                    task,
                },
            ) {
                previous.task.abort();
            }
            tracing::info!(partition, ?offset, "Partition assigned");
            resume.push((partition, offset));
        }
        METRICS.assigned_partitions.set(self.workers().len() as i64);
        self.readiness.assigned.store(true, Ordering::Release);
        Ok(resume)
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

    fn record_fatal(&self, error: RuntimeError) {
        tracing::error!(%error, "Assignment failed; the instance will stop");
        *self
            .fatal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error);
    }
}

/// Stores where each assigned partition resumes (an empty store: the low
/// watermark), for what lies before it is done. Lag then counts from the
/// store at once instead of after the first batch commits, and the group's
/// committed offset catches up with the store. Best effort: a partition
/// whose watermark cannot be read has no lag until its first commit.
///
/// The low watermarks of all new partitions come from one ListOffsets
/// request (earliest = timestamp -2): asked one partition at a time, a
/// 48-partition assignment kept the poll thread in this callback for ~4 s,
/// and the first message waited that long.
fn store_resume_offsets(
    consumer: &BaseConsumer<RebalanceContext>,
    assignment: &TopicPartitionList,
) {
    let mut resume = TopicPartitionList::new();
    let mut earliest = TopicPartitionList::new();
    for element in assignment.elements() {
        let (list, offset) = match element.offset() {
            Offset::Offset(next) => (&mut resume, Offset::Offset(next)),
            Offset::Beginning => (&mut earliest, Offset::Beginning),
            _ => continue,
        };
        if let Err(error) = list.add_partition_offset(element.topic(), element.partition(), offset)
        {
            tracing::debug!(%error, partition = element.partition(), "Resume offset not stored");
        }
    }
    if earliest.count() > 0 {
        match consumer.offsets_for_times(earliest, WATERMARK_TIMEOUT) {
            Ok(found) => {
                for element in found.elements() {
                    if let (Offset::Offset(low), None) = (element.offset(), element.error().err()) {
                        let _ = resume.add_partition_offset(
                            element.topic(),
                            element.partition(),
                            Offset::Offset(low),
                        );
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "Low watermarks unknown"),
        }
    }
    if resume.count() > 0 {
        if let Err(error) = consumer.store_offsets(&resume) {
            tracing::debug!(%error, "Resume offsets not stored");
        }
    }
}

/// How long an assignment may wait for a partition's low watermark.
const WATERMARK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The consumer context: routes rebalances to [`Partitions`], and
/// librdkafka's statistics to the lag gauge.
pub(crate) struct RebalanceContext {
    pub partitions: Arc<Partitions>,
    pub lag: ConsumerLag,
}

impl ClientContext for RebalanceContext {
    fn stats(&self, statistics: Statistics) {
        self.lag.observe(&statistics);
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
                let resume = match self.partitions.assign(&partitions) {
                    Ok(resume) => resume,
                    Err(error) => {
                        self.partitions.record_fatal(error);
                        return;
                    }
                };
                let mut assignment = TopicPartitionList::new();
                for element in list.elements() {
                    let offset = resume
                        .iter()
                        .find(|(partition, _)| *partition == element.partition())
                        .map(|(_, offset)| *offset)
                        .unwrap_or(Offset::Beginning);
                    if let Err(error) = assignment.add_partition_offset(
                        element.topic(),
                        element.partition(),
                        offset,
                    ) {
                        self.partitions.record_fatal(error.into());
                        return;
                    }
                }
                if let Err(error) = consumer.incremental_assign(&assignment) {
                    self.partitions.record_fatal(error.into());
                    return;
                }
                store_resume_offsets(consumer, &assignment);
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
