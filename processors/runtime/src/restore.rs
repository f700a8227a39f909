//! Bringing a partition store up to date with its changelog.
//!
//! Ordering rule: the changelog of input partition P is partition P of
//! `<service>.changelog`. Each batch's entries are appended in order with the
//! applied-offset record last, so the changelog is read in groups that end
//! with an offset record; a trailing group without one belongs to a batch
//! whose append never finished and is dropped (the input messages behind it
//! are handled again, with the same outcome, since handlers are deterministic).
//!
//! Under `exactly_once` a batch's entries are one transaction, so a reader
//! (always `read_committed`) never sees a group cut short; the store is a
//! cache of the changelog with a checkpoint (the changelog offset it covers,
//! written with the state), caught up from the changelog when behind.
//!
//! On assignment:
//! - no local store (new instance, lost disk): restore from the changelog;
//! - a local store, and nobody appended to the changelog since this instance
//!   last did: re-send the outbox (at-least-once only: entries committed
//!   locally whose append was cut short by a crash), then resume;
//! - a local store, and only a tail of this instance's own cut-short append
//!   follows its checkpoint: re-send the outbox, completing that group;
//! - a local store, and another owner appended meanwhile: apply what it
//!   appended (the outbox is moot: the other owner re-did that batch).

use crate::changelog::{changelog_record, resumable_checkpoint, Groups};
use crate::context::Shared;
use crate::error::RuntimeError;
use crate::outbox::{changelog_records, send_all};
use d2c_platform::kafka::assigned_consumer_config;
use d2c_platform::metrics::METRICS;
use d2c_state::{applied_offset_key, Entry, PartitionStore};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long the broker may hold the restore reader's fetch. The reader
/// moves from partition to partition; a partition newly assigned joins the
/// fetches only once the fetch in flight returns, which at the consumers'
/// 100 ms added 100-200 ms to every partition after the first. The reader
/// lives only while an assignment's stores open, so asking often is cheap.
const RESTORE_FETCH_WAIT: Duration = Duration::from_millis(5);

/// A reader of the changelog, shared by every partition of one assignment.
pub(crate) fn changelog_reader(shared: &Shared) -> Result<BaseConsumer, RuntimeError> {
    Ok(assigned_consumer_config(
        &shared.config.brokers,
        &format!("{}-restore", shared.service),
        RESTORE_FETCH_WAIT.min(shared.config.fetch_wait),
    )
    .create()?)
}

/// Stores to open, in assignment order, each with its partition's
/// revocation flag and where to hand the store once it is current.
pub(crate) type Jobs = Vec<(i32, Arc<AtomicBool>, oneshot::Sender<PartitionStore>)>;

/// Opens (or restores) each store in turn, on a blocking thread off the
/// poll loop: the partitions stay paused meanwhile, and the group keeps
/// polling (a restore of minutes no longer counts against the poll
/// interval). One assignment's stores are restored at a time, so a
/// partition revoked and assigned again is never restored twice at once.
pub(crate) fn open_all(shared: &Shared, jobs: Jobs) {
    let _one_at_a_time = shared
        .restoring
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let reader = match changelog_reader(shared) {
        Ok(reader) => reader,
        Err(error) => return shared.record_fatal(error),
    };
    if let Some(standby) = &shared.standby {
        standby.release(jobs.iter().map(|(partition, ..)| *partition).collect());
    }
    for (partition, revoked, handover) in jobs {
        if revoked.load(Ordering::Acquire) {
            continue;
        }
        match open_partition(shared, &reader, partition, &revoked) {
            Ok(store) => {
                let _ = handover.send(store);
            }
            Err(RuntimeError::Revoked(_)) => {
                tracing::info!(partition, "Restore given up: the partition was revoked");
            }
            Err(error) => return shared.record_fatal(error),
        }
    }
}

fn open_partition(
    shared: &Shared,
    consumer: &BaseConsumer,
    partition: i32,
    revoked: &AtomicBool,
) -> Result<PartitionStore, RuntimeError> {
    let started = Instant::now();
    // A changelog partition just created, or whose broker restarts, has no
    // leader for a moment.
    let (low, high) = d2c_platform::kafka::fetch_watermarks(
        consumer,
        &shared.topics.changelog,
        partition,
        Duration::from_secs(30),
    )
    .map_err(|error| restore_error(shared, partition, format!("watermarks: {error}")))?;

    if let Some(store) = shared.store.partition(partition) {
        if let Some(store) = catch_up(shared, consumer, store, low, high, revoked)? {
            opened(partition, started, "local");
            return Ok(store);
        }
        tracing::warn!(
            partition,
            "Local store unusable (unfinished restore, compacted away, or written under another guarantee); restoring"
        );
        shared.store.drop_partition(partition)?;
    }
    let store = shared.store.create_partition(partition)?;
    let restored = apply_changelog(shared, consumer, &store, low, high, revoked);
    let outcome = match &restored {
        Ok(_) => "restored",
        Err(RuntimeError::Revoked(_)) => "revoked",
        Err(_) => "failed",
    };
    METRICS
        .partition_restores
        .with_label_values(&[outcome])
        .inc();
    let applied = restored?;
    store.changelog_appended(high)?;
    store.mark_restored()?;
    tracing::info!(
        partition,
        entries = applied.entries,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Partition store restored from the changelog"
    );
    opened(partition, started, "restore");
    Ok(store)
}

/// Records how long `partition`'s store took to become current and from
/// what: `local` (a store on this instance's disk, its own from an earlier
/// ownership or a warm standby's, caught up) or `restore` (rebuilt from the
/// whole changelog).
fn opened(partition: i32, started: Instant, from: &str) {
    let elapsed = started.elapsed();
    METRICS
        .partition_open_duration
        .with_label_values(&[from])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        partition,
        from,
        elapsed_ms = elapsed.as_millis() as u64,
        "Partition store opened"
    );
}

/// A local store brought up to the changelog's end, or `None` when it must
/// be rebuilt from scratch.
fn catch_up(
    shared: &Shared,
    consumer: &BaseConsumer,
    store: PartitionStore,
    low: i64,
    high: i64,
    revoked: &AtomicBool,
) -> Result<Option<PartitionStore>, RuntimeError> {
    let exactly_once = shared.commits.is_some();
    let Some(next) = resumable_checkpoint(&store, low, high, exactly_once)? else {
        return Ok(None);
    };
    let outbox = store.changelog_outbox()?;
    // Under exactly-once the checkpoint is just after the last changelog
    // record this store has (its own, or a standby's whole group); a single
    // record after it can only be the commit marker of that record's
    // transaction.
    let current = high == next || (exactly_once && high == next + 1);
    if current {
        if let Some(entries) = outbox {
            resend_outbox(shared, &store, entries)?;
        }
        return Ok(Some(store));
    }
    let applied = apply_changelog(shared, consumer, &store, next, high, revoked)?;
    match outbox {
        // Only a tail without its offset record follows the checkpoint:
        // this instance's own append, cut short by a crash. The outbox
        // holds the whole batch; appending it again completes the group
        // (puts are idempotent), so a later restore sees all of it.
        Some(entries) if applied.groups == 0 => resend_outbox(shared, &store, entries)?,
        _ => store.changelog_appended(high)?,
    }
    tracing::info!(
        partition = store.partition(),
        groups = applied.groups,
        entries = applied.entries,
        "Caught up with the changelog"
    );
    Ok(Some(store))
}

fn restore_error(shared: &Shared, partition: i32, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::Restore {
        topic: shared.topics.changelog.clone(),
        partition,
        reason: reason.into(),
    }
}

/// Re-send entries committed locally whose changelog append did not finish.
fn resend_outbox(
    shared: &Shared,
    store: &PartitionStore,
    entries: Vec<Entry>,
) -> Result<(), RuntimeError> {
    let partition = store.partition();
    let records = changelog_records(&shared.topics.changelog, partition, &entries);
    let last = shared
        .runtime
        .block_on(send_all(&shared.producer, &records))
        .map_err(|reason| restore_error(shared, partition, reason))?;
    if let Some(last) = last {
        store.changelog_appended(last + 1)?;
    }
    tracing::info!(
        partition,
        entries = entries.len(),
        "Re-sent the changelog outbox"
    );
    Ok(())
}

/// What a changelog read applied.
struct Applied {
    entries: u64,
    groups: u64,
}

/// Apply changelog groups in `[from, high)`, reading `read_committed`: an
/// open transaction holds the read until it commits or aborts, and records
/// of aborted transactions are skipped. The end is reached when the read
/// position passes `high` (commit markers are never returned as messages,
/// but they move the position).
fn apply_changelog(
    shared: &Shared,
    consumer: &BaseConsumer,
    store: &PartitionStore,
    from: i64,
    high: i64,
    revoked: &AtomicBool,
) -> Result<Applied, RuntimeError> {
    let partition = store.partition();
    let mut applied = Applied {
        entries: 0,
        groups: 0,
    };
    if high <= from {
        return Ok(applied);
    }
    let topic = shared.topics.changelog.as_str();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(from))
        .map_err(|error| restore_error(shared, partition, error.to_string()))?;
    consumer.assign(&assignment)?;

    let deadline = Instant::now() + shared.config.restore_timeout;
    let marker = applied_offset_key();
    let mut groups = Groups::default();
    groups.follow(partition, from);
    loop {
        if revoked.load(Ordering::Acquire) {
            return Err(RuntimeError::Revoked(partition));
        }
        if Instant::now() > deadline {
            return Err(restore_error(
                shared,
                partition,
                "timed out before the high watermark",
            ));
        }
        let near_end = match consumer.poll(Duration::from_millis(20)) {
            None => true,
            Some(Err(error)) => {
                tracing::warn!(%error, partition, "Changelog read failed; retrying");
                true
            }
            Some(Ok(message)) => {
                // The reader is reused across partitions: a record of the
                // previous one is not followed and never reaches this store.
                let (from_partition, offset, entry) = changelog_record(&message);
                if let Some((group, _)) = groups.record(from_partition, offset, entry, &marker) {
                    store.write(&group)?;
                    applied.entries += group.len() as u64;
                    applied.groups += 1;
                }
                from_partition == partition && offset >= high - 2
            }
        };
        if near_end && read_position(consumer, topic, partition) >= high {
            break;
        }
    }
    let dropped = groups.unfinished(partition);
    if dropped > 0 {
        tracing::info!(
            partition,
            dropped,
            "Dropped changelog entries of an unfinished batch"
        );
    }
    Ok(applied)
}

/// The offset the reader of `partition` will return next (0 when unknown).
fn read_position(consumer: &BaseConsumer, topic: &str, partition: i32) -> i64 {
    let Ok(positions) = consumer.position() else {
        return 0;
    };
    match positions
        .find_partition(topic, partition)
        .map(|element| element.offset())
    {
        Some(Offset::Offset(next)) => next,
        _ => 0,
    }
}
