//! Exactly-once commits on Kafka transactions (KIP-98, KIP-447).
//!
//! Delivery rule: a batch's outgoing messages, dead letters, changelog
//! entries and next input offset are written in one Kafka transaction, with
//! the offset sent to the transaction together with the consumer group's
//! metadata. Readers use `read_committed`, so either all of a batch becomes
//! visible, once, or none of it does. The group coordinator checks the
//! generation in that metadata: a member that was paused past its session
//! and replaced cannot commit, and what it wrote meanwhile is aborted
//! (zombie fencing). The partition store is written only after the commit,
//! so it is a cache of the changelog: behind it after a crash, never ahead.
//!
//! A producer has one transaction open at a time, so an instance runs a few
//! committer threads, each with its own transactional producer, taking
//! planned batches from one queue: every batch waiting when a transaction
//! starts, or arriving within the commit linger (`D2C_COMMIT_LINGER_MS`)
//! after the first, joins it, so under load one commit carries many batches
//! of many partitions, and while one producer's markers are being written
//! another producer's transaction runs. A committer holds the queue for the
//! linger while it gathers its round (so the others wait for the next one),
//! never during the transaction itself. A partition has at most one batch in
//! flight (its worker waits for the commit), so its batches still commit in
//! order, whichever producer carries them.

use crate::error::RuntimeError;
use crate::outbox::Record;
use d2c_platform::metrics::METRICS;
use d2c_platform::producer::KafkaProducer;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use std::cell::Cell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A planned batch waiting for its transaction.
pub(crate) struct QueuedBatch {
    pub partition: i32,
    /// Outgoing messages and dead letters, then changelog entries, in order.
    pub records: Vec<Record>,
    /// The input offset the group resumes from once this batch is committed.
    pub next_offset: i64,
    /// Answered with the highest changelog offset written, once committed.
    pub done: oneshot::Sender<Result<Option<i64>, String>>,
}

/// What a worker uses to commit batches.
pub(crate) type CommitQueue = Sender<QueuedBatch>;

/// A transactional producer for this instance, its earlier life's open
/// transaction aborted.
pub(crate) fn producer(
    base: rdkafka::config::ClientConfig,
    transactional_id: &str,
    timeout: Duration,
) -> Result<KafkaProducer, RuntimeError> {
    let mut config = base;
    config
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", timeout.as_millis().to_string())
        // librdkafka requires it: a record cannot outlive its transaction.
        .set("message.timeout.ms", timeout.as_millis().to_string())
        // A transaction begun right after the previous commit meets that
        // one still completing (CONCURRENT_TRANSACTIONS); the default
        // 100 ms backoff made every second AddOffsetsToTxn wait 100 ms
        // (measured with hop-bench), 5 ms asks again almost at once.
        .set("retry.backoff.ms", "5");
    let producer = KafkaProducer::create(&config)?;
    // Waits for a broker that is still starting; a fatal error (e.g. not
    // authorized for transactions) ends the process with the reason.
    producer.init_transactions(Duration::from_secs(60))?;
    Ok(producer)
}

/// When each committer's current transaction began (milliseconds since
/// `epoch`, plus one; 0 while idle), for the poll thread to notice a
/// transaction that never ends.
pub(crate) struct TransactionClock {
    epoch: Instant,
    started: Vec<AtomicU64>,
}

impl TransactionClock {
    pub fn new(committers: usize) -> Self {
        Self {
            epoch: Instant::now(),
            started: (0..committers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn begin(&self, committer: usize) {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        if let Some(slot) = self.started.get(committer) {
            slot.store(now, Ordering::Release);
        }
    }

    fn end(&self, committer: usize) {
        if let Some(slot) = self.started.get(committer) {
            slot.store(0, Ordering::Release);
        }
    }

    /// The longest any committer has been inside its current transaction.
    pub fn longest_running(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let oldest = self
            .started
            .iter()
            .map(|slot| slot.load(Ordering::Acquire))
            .filter(|started| *started > 0)
            .min();
        oldest.map_or(Duration::ZERO, |started| {
            Duration::from_millis(now.saturating_sub(started))
        })
    }
}

/// Reads the consumer's group metadata at the moment of a commit.
pub(crate) type GroupMetadata = Arc<dyn Fn() -> Option<ConsumerGroupMetadata> + Send + Sync>;

/// The committer thread's inputs.
pub(crate) struct Committer {
    pub producer: KafkaProducer,
    /// What a new producer is made from after this one is fenced.
    pub base: rdkafka::config::ClientConfig,
    pub transactional_id: String,
    /// The consumer group's current metadata (generation, member id), sent
    /// with each transaction's offsets so a fenced member cannot commit.
    pub group_metadata: GroupMetadata,
    pub input_topic: String,
    pub changelog_topic: String,
    pub timeout: Duration,
    pub runtime: tokio::runtime::Handle,
    pub fatal: Arc<Mutex<Option<RuntimeError>>>,
    /// Set when the group coordinator no longer knows this member (the
    /// offsets step says so); the poll thread then leaves and rejoins.
    pub rejoin: Arc<AtomicBool>,
    pub clock: Arc<TransactionClock>,
    /// This committer's slot in `clock`.
    pub index: usize,
    /// How long the first batch of a round waits for others to join it.
    pub linger: Duration,
}

/// Most batches one transaction carries; more wait for the next one.
const MAX_BATCHES_PER_TRANSACTION: usize = 512;

impl Committer {
    /// Commits batches until `stop` is set and the queue is empty. The
    /// queue is shared with the instance's other committers; it is held only
    /// while a round is gathered (the linger at most), never during a
    /// transaction.
    pub fn run(mut self, queue: &Mutex<Receiver<QueuedBatch>>, stop: &AtomicBool) {
        loop {
            let round = {
                let queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                let first = match queue.recv_timeout(Duration::from_millis(100)) {
                    Ok(first) => first,
                    Err(RecvTimeoutError::Timeout) if stop.load(Ordering::Acquire) => return,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                take_round(&queue, first, self.linger)
            };
            self.commit_round(round);
        }
    }

    fn commit_round(&mut self, round: Vec<QueuedBatch>) {
        let started = Instant::now();
        self.clock.begin(self.index);
        let broken = Cell::new(false);
        let outcome = self.transact(&round, &broken);
        if broken.get() {
            self.replace_producer();
        }
        self.clock.end(self.index);
        METRICS
            .transaction_duration
            .observe(started.elapsed().as_secs_f64());
        METRICS.transaction_batches.observe(round.len() as f64);
        match outcome {
            Ok(changelog_offsets) => {
                METRICS.transactions.with_label_values(&["committed"]).inc();
                for (pending, offset) in round.into_iter().zip(changelog_offsets) {
                    let _ = pending.done.send(Ok(offset));
                }
            }
            Err(error) => {
                METRICS.transactions.with_label_values(&["aborted"]).inc();
                tracing::warn!(%error, batches = round.len(), "Transaction aborted; its batches will be tried again");
                for pending in round {
                    let _ = pending.done.send(Err(error.clone()));
                }
            }
        }
    }

    /// One transaction: begin, produce, send offsets, commit. On failure
    /// the transaction is aborted, so nothing of it is ever read.
    fn transact(
        &self,
        round: &[QueuedBatch],
        broken: &Cell<bool>,
    ) -> Result<Vec<Option<i64>>, String> {
        let metadata = (self.group_metadata)().ok_or("the consumer has no group metadata yet")?;
        self.producer
            .begin_transaction()
            .map_err(|error| failed("begin", error, broken))?;
        // Every record acknowledged before the commit: rdkafka's
        // commit_transaction flushes first, and its flush sleeps in 100 ms
        // polls while a delivery is outstanding (the background thread of
        // the KafkaProducer takes the events), which made each commit
        // 100 ms long (measured). A failed record aborts instead.
        let step = Instant::now();
        let settled = match self
            .produce(round)
            .and_then(|deliveries| self.settle(deliveries, round.len()))
        {
            Ok(settled) => settled,
            Err(error) => {
                self.abort(broken);
                return Err(error);
            }
        };
        let mut offsets = TopicPartitionList::new();
        for pending in round {
            if let Err(error) = offsets.add_partition_offset(
                &self.input_topic,
                pending.partition,
                Offset::Offset(pending.next_offset),
            ) {
                self.abort(broken);
                return Err(error.to_string());
            }
        }
        let step = observe_step("produce", step);
        let committed = self
            .producer
            .send_offsets_to_transaction(&offsets, &metadata, self.timeout)
            .inspect_err(|error| self.rejoin_if_forgotten(error))
            .map(|()| observe_step("offsets", step))
            .and_then(|step| {
                self.commit_retrying()
                    .map(|()| observe_step("commit", step))
            });
        if let Err(error) = committed {
            let reason = failed("commit", error, broken);
            if !broken.get() {
                self.abort(broken);
            }
            return Err(reason);
        }
        // The group's offsets partition gets a marker too.
        METRICS
            .transaction_partitions
            .observe((settled.partitions + 1) as f64);
        Ok(settled.changelog_offsets)
    }

    /// The coordinator refused our offsets because it does not know this
    /// member or generation: seen after the group coordinator's broker was
    /// killed right after this instance joined (the 3-broker fault test),
    /// with librdkafka's consumer still believing it was a member. Retrying
    /// cannot help, and the consumer would never find out by itself, so the
    /// poll thread is asked to leave the group and join it again (its
    /// partitions are revoked, so their batches stop being retried).
    fn rejoin_if_forgotten(&self, error: &KafkaError) {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let forgotten = matches!(
            error,
            KafkaError::Transaction(inner) if matches!(
                inner.code(),
                Code::UnknownMemberId | Code::IllegalGeneration | Code::FencedInstanceId | Code::StaleMemberEpoch
            )
        );
        if forgotten && !self.rejoin.swap(true, Ordering::AcqRel) {
            tracing::warn!(%error, "The group coordinator does not know this member; rejoining the group");
        }
    }

    /// A retriable commit failure (e.g. a timeout) may be tried again.
    fn commit_retrying(&self) -> Result<(), KafkaError> {
        loop {
            match self.producer.commit_transaction(self.timeout) {
                Err(KafkaError::Transaction(error)) if error.is_retriable() => {
                    tracing::warn!(%error, "Transaction commit timed out; trying again");
                }
                other => return other,
            }
        }
    }

    /// Enqueue every record in order (waiting out a full queue). The commit
    /// waits for their acknowledgements.
    fn produce(&self, round: &[QueuedBatch]) -> Result<Vec<Delivery>, String> {
        let mut deliveries = Vec::new();
        let changelog_records = round
            .iter()
            .flat_map(|pending| &pending.records)
            .filter(|record| record.topic == self.changelog_topic)
            .count();
        let mut changelog_sent = 0;
        for (index, pending) in round.iter().enumerate() {
            for record in &pending.records {
                if record.topic == self.changelog_topic {
                    changelog_sent += 1;
                    if changelog_sent == changelog_records / 2 + 1 {
                        crate::faults::point("mid-changelog", || self.flush());
                    }
                }
                let future = self.enqueue(record)?;
                deliveries.push(Delivery {
                    batch: index,
                    topic: record.topic.clone(),
                    changelog: record.topic == self.changelog_topic,
                    future,
                });
            }
        }
        crate::faults::point("before-commit", || self.flush());
        Ok(deliveries)
    }

    /// For fault points: what was enqueued is on the broker (uncommitted).
    fn flush(&self) {
        let _ = self.producer.flush(self.timeout);
    }

    fn enqueue(&self, record: &Record) -> Result<d2c_platform::producer::DeliveryFuture, String> {
        loop {
            match record.enqueue(&self.producer)? {
                Some(delivery) => return Ok(delivery),
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// Waits for every record's acknowledgement; the highest changelog
    /// offset of each batch becomes its store's checkpoint once committed.
    fn settle(&self, deliveries: Vec<Delivery>, batches: usize) -> Result<Settled, String> {
        let mut highest = vec![None; batches];
        let mut written = HashSet::new();
        self.runtime.block_on(async {
            for delivery in deliveries {
                let done = match delivery.future.await {
                    Ok(Ok(done)) => done,
                    Ok(Err((error, _))) => {
                        return Err(format!("producing to {} failed: {error}", delivery.topic))
                    }
                    Err(_) => return Err(format!("producing to {} was cancelled", delivery.topic)),
                };
                METRICS
                    .messages_produced
                    .with_label_values(&[&delivery.topic])
                    .inc();
                if delivery.changelog {
                    highest[delivery.batch] = highest[delivery.batch].max(Some(done.offset));
                }
                written.insert((delivery.topic, done.partition));
            }
            Ok(Settled {
                changelog_offsets: highest,
                partitions: written.len(),
            })
        })
    }

    fn abort(&self, broken: &Cell<bool>) {
        if let Err(error) = self.producer.abort_transaction(self.timeout) {
            failed("abort", error, broken);
        }
    }

    /// After a fatal error (the producer was fenced: its transaction timed
    /// out while the process was paused, or another instance took its
    /// transactional id) a new producer takes over with a new epoch, as
    /// Kafka Streams does; the batches of that round are tried again by
    /// their workers, or dropped if their partitions moved meanwhile. Only
    /// if no new producer can be made does the instance stop.
    fn replace_producer(&mut self) {
        match producer(self.base.clone(), &self.transactional_id, self.timeout) {
            Ok(producer) => {
                tracing::warn!("Transactional producer replaced after a fatal error");
                self.producer = producer;
            }
            Err(error) => {
                tracing::error!(%error, "No new transactional producer; the instance will stop");
                *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
            }
        }
    }
}

/// `first` and every batch already waiting or arriving within `linger` of
/// it, at most [`MAX_BATCHES_PER_TRANSACTION`]: one transaction's batches.
fn take_round<T>(queue: &Receiver<T>, first: T, linger: Duration) -> Vec<T> {
    let mut round = vec![first];
    let joined_by = Instant::now() + linger;
    while round.len() < MAX_BATCHES_PER_TRANSACTION {
        let wait = joined_by.saturating_duration_since(Instant::now());
        match queue.recv_timeout(wait) {
            Ok(next) => round.push(next),
            Err(_) => break,
        }
    }
    round
}

/// Records the time since `since` as `step`'s duration; the start of the next.
fn observe_step(step: &str, since: Instant) -> Instant {
    let now = Instant::now();
    METRICS
        .transaction_step_duration
        .with_label_values(&[step])
        .observe((now - since).as_secs_f64());
    now
}

/// Why a step failed; marks the producer broken when the error is fatal.
fn failed(step: &str, error: KafkaError, broken: &Cell<bool>) -> String {
    if matches!(&error, KafkaError::Transaction(inner) if inner.is_fatal()) {
        broken.set(true);
    }
    format!("transaction {step} failed: {error}")
}

/// A transaction's records, all acknowledged.
struct Settled {
    /// Per batch, the highest changelog offset it wrote.
    changelog_offsets: Vec<Option<i64>>,
    /// Distinct topic partitions the records went to.
    partitions: usize,
}

struct Delivery {
    batch: usize,
    topic: String,
    changelog: bool,
    future: d2c_platform::producer::DeliveryFuture,
}

#[cfg(test)]
mod clock_tests {
    use super::TransactionClock;
    use std::time::Duration;

    #[test]
    fn the_clock_reports_the_oldest_running_transaction_and_forgets_ended_ones() {
        let clock = TransactionClock::new(2);
        assert_eq!(clock.longest_running(), Duration::ZERO);
        clock.begin(0);
        std::thread::sleep(Duration::from_millis(30));
        clock.begin(1);
        assert!(clock.longest_running() >= Duration::from_millis(30));
        clock.end(0);
        assert!(clock.longest_running() < Duration::from_millis(30));
        clock.end(1);
        assert_eq!(clock.longest_running(), Duration::ZERO);
    }
}

#[cfg(test)]
mod round_tests {
    use super::*;

    #[test]
    fn a_round_takes_what_waits_and_what_joins_within_the_linger() {
        let (sender, queue) = std::sync::mpsc::channel();
        sender.send(2).expect("queued");
        let late = sender.clone();
        let joiner = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            late.send(3).expect("queued");
            std::thread::sleep(Duration::from_millis(300));
            late.send(4).expect("queued");
        });
        assert_eq!(take_round(&queue, 1, Duration::from_millis(150)), [1, 2, 3]);
        joiner.join().expect("joined");
        assert_eq!(queue.try_recv(), Ok(4), "too late: the next round's");
    }

    #[test]
    fn without_a_linger_a_round_takes_only_what_waits() {
        let (sender, queue) = std::sync::mpsc::channel();
        for batch in 2..=MAX_BATCHES_PER_TRANSACTION + 5 {
            sender.send(batch).expect("queued");
        }
        let round = take_round(&queue, 1, Duration::ZERO);
        assert_eq!(round.len(), MAX_BATCHES_PER_TRANSACTION);
        assert_eq!(queue.try_iter().count(), 5);
    }
}
