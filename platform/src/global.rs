//! A global table's feed (Kafka Streams' GlobalKTable): one topic, every
//! partition, read by every instance outside any consumer group, applied to
//! an in-memory view that any partition's handler may read.
//!
//! Delivery: every record of every partition is applied once per process, in
//! partition order, from the start offset chosen (the beginning for a table
//! rebuilt at start, the end for a cache that only needs what changes).
//! Nothing is committed: a restarted process reads again from its start
//! offset, so the view must be a function of the records (a product's latest
//! version wins), never of how often one was seen.
//!
//! Partitions added to the topic later are picked up at their beginning
//! within one refresh interval, so a CreatePartitions never leaves a view
//! stale. [`GlobalTopic::catch_up`] waits until everything written before
//! the call has been applied: a reader that misses a key asks it before
//! answering "unknown", which gives read-your-writes across services (a
//! product created a moment ago is priced, not refused).

use crate::kafka::{assigned_consumer_config, envelope_of};
use crate::lag::{enable_statistics, LagContext};
use d2c_proto::Envelope;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What a global view does with each record.
pub trait GlobalSink: Send + Sync + 'static {
    fn apply(&self, envelope: &Envelope, payload: &[u8]);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    End,
}

#[derive(Debug, Clone)]
pub struct GlobalTopicSettings {
    pub brokers: String,
    /// Also the lag metric's `group` label.
    pub client_id: String,
    pub topic: String,
    pub start: StartAt,
    pub fetch_wait: Duration,
    pub stats_interval: Duration,
    /// How often the partition count is checked.
    pub refresh: Duration,
}

/// A running feed; dropping it stops its thread.
pub struct GlobalTopic {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    consumer: BaseConsumer<LagContext>,
    topic: String,
    /// Next offset to apply, per partition read so far.
    applied: Mutex<HashMap<i32, i64>>,
    progress: Condvar,
    stop: AtomicBool,
}

/// Bounds each broker request made here.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl GlobalTopic {
    /// Assigns every partition of the topic and starts applying records to
    /// `sink` on a thread of its own.
    pub fn start(
        settings: GlobalTopicSettings,
        sink: Arc<dyn GlobalSink>,
    ) -> Result<Self, KafkaError> {
        let mut config =
            assigned_consumer_config(&settings.brokers, &settings.client_id, settings.fetch_wait);
        let consumer: BaseConsumer<LagContext> =
            enable_statistics(&mut config, settings.stats_interval)
                .create_with_context(LagContext::assigned(settings.client_id.clone()))?;
        let shared = Arc::new(Shared {
            consumer,
            topic: settings.topic.clone(),
            applied: Mutex::new(HashMap::new()),
            progress: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let start = match settings.start {
            StartAt::Beginning => Offset::Beginning,
            StartAt::End => Offset::End,
        };
        let partitions = shared.partition_ids()?;
        shared.assign(&partitions, start)?;
        tracing::info!(topic = %settings.topic, partitions = partitions.len(), start = ?settings.start, "Following a global topic");
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("{}-global", settings.client_id))
            .spawn(move || thread_shared.follow(sink.as_ref(), settings.refresh, partitions))
            .map_err(|_| KafkaError::Canceled)?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Waits until every record written to the topic before this call has
    /// been applied; `Ok(false)` if that took longer than `timeout`.
    pub fn catch_up(&self, timeout: Duration) -> Result<bool, KafkaError> {
        let deadline = Instant::now() + timeout;
        let partitions = self.shared.partition_ids()?;
        let targets = self.shared.unread_ends(&partitions)?;
        let mut applied = self
            .shared
            .applied
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            let behind = targets
                .iter()
                .any(|(partition, end)| applied.get(partition).copied().unwrap_or(-1) < *end);
            if !behind {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            applied = self
                .shared
                .progress
                .wait_timeout(applied, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// [`Self::catch_up`] for a caller that may run on a Tokio worker: the
    /// worker is handed over while this thread waits.
    pub fn catch_up_blocking(&self, timeout: Duration) -> Result<bool, KafkaError> {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.catch_up(timeout))
            }
            _ => self.catch_up(timeout),
        }
    }

    /// Waits for [`Self::catch_up`] with a progress line every few seconds,
    /// for a process that cannot serve before its view is whole. Errors
    /// (a topic just created may not have a leader yet) are retried until
    /// `limit`.
    pub fn load(&self, limit: Duration) -> Result<(), KafkaError> {
        let started = Instant::now();
        loop {
            match self.catch_up(Duration::from_secs(5)) {
                Ok(true) => break,
                Ok(false) => {
                    let applied: i64 = self
                        .shared
                        .applied
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .values()
                        .sum();
                    tracing::info!(topic = %self.shared.topic, records_applied = applied, "Still loading a global table");
                }
                Err(error) if started.elapsed() < limit => {
                    tracing::warn!(%error, topic = %self.shared.topic, "Global table end offsets unknown; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(error) => return Err(error),
            }
            if started.elapsed() >= limit {
                return Err(KafkaError::Canceled);
            }
        }
        tracing::info!(topic = %self.shared.topic, took_ms = started.elapsed().as_millis() as u64, "Global table loaded");
        Ok(())
    }

    pub fn topic(&self) -> &str {
        &self.shared.topic
    }
}

impl Drop for GlobalTopic {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn partition_ids(&self) -> Result<Vec<i32>, KafkaError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), REQUEST_TIMEOUT)?;
        let mut ids: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|topic| topic.name() == self.topic)
            .flat_map(|topic| topic.partitions().iter().map(|partition| partition.id()))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn assign(&self, partitions: &[i32], start: Offset) -> Result<(), KafkaError> {
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition_offset(&self.topic, *partition, start)?;
        }
        self.consumer.incremental_assign(&list)
    }

    /// The end offset of each partition that holds records not yet applied:
    /// one ListOffsets request for the latest and one for the earliest
    /// offsets, however many partitions (a partition whose records were all
    /// deleted has nothing to wait for).
    fn unread_ends(&self, partitions: &[i32]) -> Result<Vec<(i32, i64)>, KafkaError> {
        let latest = self.offsets_at(partitions, Offset::End)?;
        let earliest = self.offsets_at(partitions, Offset::Beginning)?;
        Ok(latest
            .into_iter()
            .filter(|(partition, end)| earliest.get(partition).is_none_or(|low| low < end))
            .collect())
    }

    fn offsets_at(&self, partitions: &[i32], at: Offset) -> Result<HashMap<i32, i64>, KafkaError> {
        let mut query = TopicPartitionList::new();
        for partition in partitions {
            query.add_partition_offset(&self.topic, *partition, at)?;
        }
        let answer = self.consumer.offsets_for_times(query, REQUEST_TIMEOUT)?;
        let mut offsets = HashMap::new();
        for element in answer.elements() {
            if let Some(error) = element.error().err() {
                return Err(error);
            }
            if let Offset::Offset(offset) = element.offset() {
                offsets.insert(element.partition(), offset);
            }
        }
        Ok(offsets)
    }

    fn follow(&self, sink: &dyn GlobalSink, refresh: Duration, mut known: Vec<i32>) {
        let mut refreshed = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    match envelope_of(&message) {
                        Ok(envelope) => {
                            sink.apply(&envelope, message.payload().unwrap_or_default())
                        }
                        Err(error) => {
                            tracing::warn!(%error, topic = %self.topic, offset = message.offset(), "Record without an envelope skipped")
                        }
                    }
                    self.applied_up_to(message.partition(), message.offset() + 1);
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, topic = %self.topic, "Global topic consumer error")
                }
                None => self.applied_positions(),
            }
            if refreshed.elapsed() >= refresh {
                refreshed = Instant::now();
                if let Err(error) = self.follow_new_partitions(&mut known) {
                    tracing::warn!(%error, topic = %self.topic, "Partition list not refreshed");
                }
            }
        }
    }

    fn applied_up_to(&self, partition: i32, next: i64) {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let entry = applied.entry(partition).or_insert(next);
        *entry = (*entry).max(next);
        self.progress.notify_all();
    }

    /// An idle poll: the consumer's own positions also count, since it moves
    /// past offsets that hold no record for us (compacted away, or a
    /// transaction marker).
    fn applied_positions(&self) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        for element in positions.elements() {
            if let Offset::Offset(next) = element.offset() {
                let entry = applied.entry(element.partition()).or_insert(next);
                *entry = (*entry).max(next);
            }
        }
        self.progress.notify_all();
    }

    fn follow_new_partitions(&self, known: &mut Vec<i32>) -> Result<(), KafkaError> {
        let now = self.partition_ids()?;
        let added: Vec<i32> = now
            .iter()
            .copied()
            .filter(|id| !known.contains(id))
            .collect();
        if added.is_empty() {
            return Ok(());
        }
        // A partition created after start holds only records written after
        // it appeared: read them all.
        self.assign(&added, Offset::Beginning)?;
        tracing::info!(topic = %self.topic, ?added, "Following new partitions");
        *known = now;
        Ok(())
    }
}
