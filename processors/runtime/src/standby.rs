//! Warm standbys (Kafka Streams' standby replicas): with `D2C_STANDBY=all`
//! an instance follows the changelog of every partition of its service that
//! it does not own, so that when the group hands it one (a failover, a
//! scale-down) its store is current or nearly so and the takeover applies a
//! short tail (`restore::catch_up`) instead of the whole changelog.
//!
//! Why every partition: under KIP-848 the broker picks a dead member's
//! partitions' new owners, so a copy on a chosen subset of instances would
//! only sometimes be the one the takeover lands on. With two instances this
//! is Kafka Streams' `num.standby.replicas=1`; with N, N - 1 copies.
//!
//! Delivery rule: the follower reads `read_committed` and writes only whole
//! groups (entries up to and including the applied-offset record, the unit
//! the owner appends), each with the checkpoint after it, in one RocksDB
//! write. The store's checkpoint therefore always sits on a group boundary,
//! and reading on from it up to the high watermark yields the owner's state
//! (a compacted changelog may give intermediate states no owner ever had;
//! the takeover catches up to the end before it serves). A standby never
//! writes the changelog and never serves a message.
//!
//! Handover rule: one writer per store. The owner's restore asks the
//! follower to release a partition and waits until it has (`release`);
//! a revoked partition is followed again only after its worker has stopped
//! (`follow`, called by the revocation) and no restore is running (the
//! follower takes the restore lock while it sets a store up).

use crate::changelog::{changelog_record, resumable_checkpoint, Groups};
use crate::error::RuntimeError;
use d2c_platform::kafka::assigned_consumer_config;
use d2c_platform::lag::{enable_statistics, LagContext};
use d2c_platform::metrics::METRICS;
use d2c_state::{applied_offset_key, Entry, PartitionStore, Store};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashSet};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

/// What the follower needs from its instance.
pub(crate) struct FollowerSetup {
    pub brokers: String,
    pub client_id: String,
    pub changelog: String,
    pub store: Store,
    pub exactly_once: bool,
    pub fetch_wait: Duration,
    pub stats_interval: Duration,
    /// Held by the owner's restores; see the handover rule.
    pub restoring: Arc<Mutex<()>>,
}

enum Command {
    Follow(i32),
    Release(Vec<i32>, SyncSender<()>),
    Stop,
}

/// The handle of a running follower thread.
pub(crate) struct Standby {
    commands: Sender<Command>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Standby {
    pub fn start(setup: FollowerSetup) -> Result<Self, RuntimeError> {
        let mut config =
            assigned_consumer_config(&setup.brokers, &setup.client_id, setup.fetch_wait);
        let consumer: BaseConsumer<LagContext> =
            enable_statistics(&mut config, setup.stats_interval)
                .create_with_context(LagContext::assigned(setup.client_id.clone()))?;
        let (commands, inbox) = mpsc::channel();
        let follower = Follower {
            consumer,
            setup,
            groups: Groups::default(),
            owned: HashSet::new(),
            waiting: BTreeSet::new(),
            known_partitions: 0,
            refreshed: None,
        };
        let thread = std::thread::Builder::new()
            .name("standby".into())
            .spawn(move || follower.run(&inbox))
            .map_err(|error| {
                RuntimeError::Config(format!("starting the standby thread: {error}"))
            })?;
        Ok(Self {
            commands,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stop following `partitions`; returns once the follower no longer
    /// writes their stores (at once for those it was not following).
    pub fn release(&self, partitions: Vec<i32>) {
        let (done, released) = mpsc::sync_channel(1);
        if self
            .commands
            .send(Command::Release(partitions, done))
            .is_ok()
        {
            // An error means the thread is gone, which writes nothing either.
            let _ = released.recv();
        }
    }

    /// Follow `partition` again (its worker has stopped).
    pub fn follow(&self, partition: i32) {
        let _ = self.commands.send(Command::Follow(partition));
    }

    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("The standby thread panicked");
            }
        }
    }
}

/// How often the follower looks for partitions added to the changelog.
const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// How long a poll may wait: a release is answered within about this.
const POLL_WAIT: Duration = Duration::from_millis(20);
/// Setting a partition up asks for its watermarks; a partition without a
/// leader is tried again on a later round rather than holding up releases.
const WATERMARKS_WAIT: Duration = Duration::from_secs(2);

struct Follower {
    consumer: BaseConsumer<LagContext>,
    setup: FollowerSetup,
    groups: Groups,
    /// Released to this instance's own workers.
    owned: HashSet<i32>,
    /// To be followed once their store is set up.
    waiting: BTreeSet<i32>,
    known_partitions: i32,
    refreshed: Option<Instant>,
}

impl Follower {
    fn run(mut self, inbox: &Receiver<Command>) {
        tracing::info!(changelog = %self.setup.changelog, "Warm standby: following the partitions this instance does not own");
        let marker = applied_offset_key();
        loop {
            for command in inbox.try_iter() {
                match command {
                    Command::Follow(partition) => self.want(partition),
                    Command::Release(partitions, done) => {
                        for partition in partitions {
                            self.release(partition);
                        }
                        let _ = done.send(());
                    }
                    Command::Stop => return self.release_all(),
                }
            }
            self.refresh_partitions();
            self.set_up_waiting();
            let record = match self.consumer.poll(POLL_WAIT) {
                Some(Ok(message)) => Some(changelog_record(&message)),
                Some(Err(error)) => {
                    tracing::warn!(%error, "Standby changelog read failed");
                    None
                }
                None => None,
            };
            if let Some((partition, offset, entry)) = record {
                self.apply(partition, offset, entry, &marker);
            }
        }
    }

    fn want(&mut self, partition: i32) {
        self.owned.remove(&partition);
        if !self.groups.is_followed(partition) {
            self.waiting.insert(partition);
        }
    }

    fn release(&mut self, partition: i32) {
        self.owned.insert(partition);
        self.waiting.remove(&partition);
        if self.groups.release(partition) {
            self.unassign(partition);
        }
        METRICS.standby_partitions.set(self.groups.len() as i64);
    }

    fn release_all(&mut self) {
        for partition in self.groups.followed() {
            self.release(partition);
        }
    }

    fn unassign(&self, partition: i32) {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.setup.changelog, partition);
        if let Err(error) = self.consumer.incremental_unassign(&list) {
            tracing::warn!(%error, partition, "Standby unassign failed");
        }
    }

    /// Partitions of the changelog not known yet (all at start; those
    /// added by CreatePartitions later) are followed unless owned.
    fn refresh_partitions(&mut self) {
        if self
            .refreshed
            .is_some_and(|at| at.elapsed() < REFRESH_EVERY)
        {
            return;
        }
        self.refreshed = Some(Instant::now());
        let metadata = match self
            .consumer
            .fetch_metadata(Some(&self.setup.changelog), Duration::from_secs(5))
        {
            Ok(metadata) => metadata,
            Err(error) => {
                tracing::warn!(%error, "Standby: changelog metadata unavailable; trying again later");
                return;
            }
        };
        let count = metadata
            .topics()
            .iter()
            .map(|topic| topic.partitions().len() as i32)
            .max()
            .unwrap_or(0);
        for partition in self.known_partitions..count {
            if !self.owned.contains(&partition) {
                self.waiting.insert(partition);
            }
        }
        self.known_partitions = self.known_partitions.max(count);
    }

    fn set_up_waiting(&mut self) {
        let waiting: Vec<i32> = self.waiting.iter().copied().collect();
        for partition in waiting {
            match self.set_up(partition) {
                Ok(Some(from)) => {
                    self.waiting.remove(&partition);
                    self.groups.follow(partition, from);
                    METRICS.standby_partitions.set(self.groups.len() as i64);
                    tracing::debug!(partition, from, "Standby following");
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, partition, "Standby: store not set up; trying again later")
                }
            }
        }
    }

    /// The offset to follow `partition` from, its store ready to receive
    /// groups; `None` while a restore runs (tried again next round).
    fn set_up(&self, partition: i32) -> Result<Option<i64>, RuntimeError> {
        let changelog = &self.setup.changelog;
        let (low, high) = d2c_platform::kafka::fetch_watermarks(
            &self.consumer,
            changelog,
            partition,
            WATERMARKS_WAIT,
        )
        .map_err(|source| RuntimeError::Kafka {
            topic: changelog.clone(),
            partition,
            source,
        })?;
        let _no_restore = match self.setup.restoring.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(None),
        };
        let store = &self.setup.store;
        let existing = store.partition(partition);
        let usable = match &existing {
            Some(current) => resumable_checkpoint(current, low, high, self.setup.exactly_once)?,
            None => None,
        };
        let from = match usable {
            Some(next) => next,
            None => {
                if existing.is_some() {
                    store.drop_partition(partition)?;
                }
                store.create_partition(partition)?.begin_at(low)?;
                low
            }
        };
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(changelog, partition, Offset::Offset(from))
            .map_err(|source| RuntimeError::Kafka {
                topic: changelog.clone(),
                partition,
                source,
            })?;
        self.consumer.incremental_assign(&list)?;
        Ok(Some(from))
    }

    fn apply(&mut self, partition: i32, offset: i64, entry: Entry, marker: &[u8]) {
        let Some((group, next)) = self.groups.record(partition, offset, entry, marker) else {
            return;
        };
        let written = self
            .setup
            .store
            .partition(partition)
            .ok_or(d2c_state::StateError::UnknownPartition(partition))
            .and_then(|store: PartitionStore| store.apply_changelog_group(&group, next));
        match written {
            Ok(()) => METRICS.standby_records.inc_by(group.len() as u64),
            Err(error) => {
                // Set up again from its checkpoint on a later round.
                tracing::warn!(%error, partition, "Standby write failed; following again from the checkpoint");
                self.groups.release(partition);
                self.unassign(partition);
                self.waiting.insert(partition);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::StandbyMode;

    #[test]
    fn standby_modes_parse_and_others_are_refused() {
        assert_eq!("none".parse::<StandbyMode>(), Ok(StandbyMode::None));
        assert_eq!("all".parse::<StandbyMode>(), Ok(StandbyMode::All));
        assert!(
            "1".parse::<StandbyMode>().is_err(),
            "a count would promise placement"
        );
    }
}
