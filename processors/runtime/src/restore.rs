//! Bringing a partition store up to date with its changelog.
//!
//! Ordering rule: the changelog of input partition P is partition P of
//! `<service>.changelog`. Each batch's entries are appended in order with the
//! applied-offset record last, so the changelog is read in groups that end
//! with an offset record; a trailing group without one belongs to a batch
//! whose append never finished and is dropped (the input messages behind it
//! are handled again, with the same outcome, since handlers are deterministic).
//!
//! On assignment:
//! - no local store (new instance, lost disk): restore from the changelog;
//! - a local store, and nobody appended to the changelog since this instance
//!   last did: re-send the outbox (entries committed locally whose append was
//!   cut short by a crash), then resume;
//! - a local store, and another owner appended meanwhile: apply what it
//!   appended (the outbox is moot: the other owner re-did that batch).

use crate::kafka::assigned_consumer_config;
use crate::metrics::METRICS;
use crate::run::Shared;
use crate::worker::{changelog_records, send_all};
use crate::RuntimeError;
use d2c_state::{applied_offset_key, Entry, PartitionStore};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// The store of `partition`, brought up to date with the changelog.
/// A reader of the changelog, shared by every partition of one assignment.
pub(crate) fn changelog_reader(shared: &Shared) -> Result<BaseConsumer, RuntimeError> {
    Ok(assigned_consumer_config(
        &shared.config.brokers,
        &format!("{}-restore", shared.service),
        shared.config.fetch_wait,
    )
    .create()?)
}

pub(crate) fn open_partition(
    shared: &Shared,
    consumer: &BaseConsumer,
    partition: i32,
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
        if store.is_restored()? {
            let next = store.changelog_next()?.unwrap_or(0);
            if high == next {
                resend_outbox(shared, &store)?;
                return Ok(store);
            }
            if next >= low && next < high {
                let applied = apply_changelog(shared, consumer, &store, next, high)?;
                store.changelog_appended(high)?;
                tracing::info!(
                    partition,
                    applied,
                    "Caught up with the changelog another owner wrote"
                );
                return Ok(store);
            }
        }
        tracing::warn!(
            partition,
            "Local store unusable (unfinished restore or compacted away); restoring"
        );
        shared.store.drop_partition(partition)?;
    }
    let store = shared.store.create_partition(partition)?;
    let restored = apply_changelog(shared, consumer, &store, low, high);
    let outcome = if restored.is_ok() {
        "restored"
    } else {
        "failed"
    };
    METRICS
        .partition_restores
        .with_label_values(&[outcome])
        .inc();
    let entries = restored?;
    store.changelog_appended(high)?;
    store.mark_restored()?;
    tracing::info!(
        partition,
        entries,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Partition store restored from the changelog"
    );
    Ok(store)
}

fn restore_error(shared: &Shared, partition: i32, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::Restore {
        topic: shared.topics.changelog.clone(),
        partition,
        reason: reason.into(),
    }
}

/// Re-send entries committed locally whose changelog append did not finish.
fn resend_outbox(shared: &Shared, store: &PartitionStore) -> Result<(), RuntimeError> {
    let Some(entries) = store.changelog_outbox()? else {
        return Ok(());
    };
    let partition = store.partition();
    let records = changelog_records(shared, partition, &entries);
    let last = shared
        .runtime
        .block_on(send_all(shared, &records))
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

/// Apply changelog groups in `[from, high)`; returns the entries applied.
fn apply_changelog(
    shared: &Shared,
    consumer: &BaseConsumer,
    store: &PartitionStore,
    from: i64,
    high: i64,
) -> Result<u64, RuntimeError> {
    let partition = store.partition();
    if high <= from {
        return Ok(0);
    }
    let topic = shared.topics.changelog.as_str();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(from))
        .map_err(|error| restore_error(shared, partition, error.to_string()))?;
    consumer.assign(&assignment)?;

    let deadline = Instant::now() + shared.config.restore_timeout;
    let marker = applied_offset_key();
    let mut group: Vec<Entry> = Vec::new();
    let mut applied = 0u64;
    loop {
        if Instant::now() > deadline {
            return Err(restore_error(
                shared,
                partition,
                "timed out before the high watermark",
            ));
        }
        let message = match consumer.poll(Duration::from_millis(500)) {
            None => continue,
            Some(Err(error)) => {
                tracing::warn!(%error, partition, "Changelog read failed; retrying");
                continue;
            }
            // The reader is reused across partitions; never let a record of
            // the previous one reach this store.
            Some(Ok(message)) if message.partition() != partition => continue,
            Some(Ok(message)) => message,
        };
        let entry = Entry {
            key: message.key().unwrap_or_default().to_vec(),
            value: message.payload().map(<[u8]>::to_vec),
        };
        let ends_group = entry.key == marker;
        group.push(entry);
        if ends_group {
            store.write(&group)?;
            applied += group.len() as u64;
            group.clear();
        }
        if message.offset() >= high - 1 {
            break;
        }
    }
    if !group.is_empty() {
        tracing::info!(
            partition,
            dropped = group.len(),
            "Dropped changelog entries of an unfinished batch"
        );
    }
    Ok(applied)
}
