//! One worker per owned input partition.
//!
//! Ordering rule: messages of a partition are handled strictly in offset
//! order, one batch at a time; a batch is planned (handler calls, no I/O)
//! against the store, then made durable, then the next batch is planned.
//!
//! Delivery rule under `exactly_once` (the default): the batch's outgoing
//! messages, dead letters, changelog entries and next input offset are one
//! Kafka transaction (see `transactions`), retried as a whole until it
//! commits or the partition is revoked. Only after the commit are the state
//! changes, applied offset and changelog checkpoint written to RocksDB in one
//! WriteBatch: a crash before that leaves the store behind the changelog,
//! and the next assignment catches it up (see `restore`).
//!
//! Delivery rule under `at_least_once`: three steps, each retried until it
//! succeeds (or the partition is revoked):
//!   1. produce its outgoing messages and dead letters, and wait for the acks;
//!   2. write state changes + applied offset in one RocksDB WriteBatch;
//!   3. append the same entries to the changelog (offset record last).
//!
//! A crash before 2 replays the batch: same state, same outgoing message ids.
//! A crash between 2 and 3 is repaired from the outbox committed in 2, or by
//! the next owner replaying that batch (see `restore`).
//!
//! Either way the handler's `committed` hook sees what a batch sent once it
//! is durable, so business counters count a batch once however often it was
//! handled.

use crate::context::Shared;
use crate::handler::{Effects, HandlerError, Incoming, Outgoing};
use crate::outbox::{changelog_records, in_current_trace, record_of, send_all, Record};
use crate::transactions::{CommitQueue, QueuedBatch};
use d2c_platform::kafka::envelope_of;
use d2c_platform::metrics::METRICS;
use d2c_platform::tracing_context;
use d2c_proto::envelope::header;
use d2c_state::{
    applied_offset_key, changelog_checkpoint_entry, changelog_outbox_entry, encode_offset,
    ChangeSet, Entry, Overlay, PartitionStore, StateError,
};
use rdkafka::message::{Headers, Message, OwnedMessage};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// What a batch decided, before anything is made durable.
#[derive(Default)]
struct Plan {
    entries: Vec<Entry>,
    records: Vec<Record>,
    last_offset: Option<i64>,
    handled: Vec<String>,
    dead_letters: u64,
    /// What the handler sent, for [`crate::Handler::committed`].
    outgoing: Vec<Outgoing>,
}

/// Waits for the partition's store, has the poll thread resume the
/// partition after the store's applied offset, then runs the worker. Ends
/// at once if the partition is revoked first (its inbox closes).
pub(crate) async fn start(
    shared: Arc<Shared>,
    store: oneshot::Receiver<PartitionStore>,
    mut inbox: mpsc::Receiver<OwnedMessage>,
    revoked: Arc<AtomicBool>,
) {
    tokio::pin!(store);
    let opened = loop {
        tokio::select! {
            opened = &mut store => break opened.ok(),
            early = inbox.recv() => match early {
                // Fetched before the pause took hold: the seek below reads it
                // again, in order.
                Some(_) => continue,
                None => break None,
            },
        }
    };
    shared.partition_opened();
    let Some(store) = opened else {
        return;
    };
    let resume = match store.applied_offset() {
        Ok(Some(applied)) => rdkafka::Offset::Offset(applied + 1),
        Ok(None) => rdkafka::Offset::Beginning,
        Err(error) => {
            tracing::error!(%error, partition = store.partition(), "Cannot read the applied offset; partition stopped");
            return;
        }
    };
    let _ = shared.resumes.send((store.partition(), resume));
    tracing::info!(
        partition = store.partition(),
        ?resume,
        "Partition store current; resuming"
    );
    run(shared, store, inbox, revoked).await;
}

async fn run(
    shared: Arc<Shared>,
    store: PartitionStore,
    mut inbox: mpsc::Receiver<OwnedMessage>,
    revoked: Arc<AtomicBool>,
) {
    let partition = store.partition();
    let mut applied = match store.applied_offset() {
        Ok(offset) => offset,
        Err(error) => {
            tracing::error!(%error, partition, "Cannot read the applied offset; partition stopped");
            return;
        }
    };
    let mut batch = Vec::with_capacity(shared.config.max_batch);
    while let Some(first) = inbox.recv().await {
        batch.push(first);
        while batch.len() < shared.config.max_batch {
            match inbox.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        METRICS.batch_messages.observe(batch.len() as f64);
        match process_batch(&shared, &store, &batch, applied, &revoked).await {
            BatchOutcome::Applied(last) => {
                applied = Some(last);
                if shared.commits.is_none() {
                    // The poll thread stores it for the next auto-commit.
                    let _ = shared.offsets.send((partition, last));
                }
            }
            BatchOutcome::NothingNew => {}
            BatchOutcome::Stopped => {
                if !revoked.load(Ordering::Acquire) {
                    // Skipping would break the partition's order; stall
                    // instead, visibly (lag grows, the error is logged).
                    tracing::error!(partition, "Partition stopped on a permanent error");
                }
                return;
            }
        }
        batch.clear();
    }
}

enum BatchOutcome {
    Applied(i64),
    NothingNew,
    Stopped,
}

async fn process_batch(
    shared: &Shared,
    store: &PartitionStore,
    batch: &[OwnedMessage],
    applied: Option<i64>,
    revoked: &AtomicBool,
) -> BatchOutcome {
    let Some(plan) = retry(revoked, "handle batch", || {
        std::future::ready(
            plan_batch(shared, store, batch, applied)
                .map_err(|error| (error.is_retryable(), error.to_string())),
        )
    })
    .await
    else {
        return BatchOutcome::Stopped;
    };
    let Some(last_offset) = plan.last_offset else {
        return BatchOutcome::NothingNew;
    };
    match &shared.commits {
        Some(queue) => {
            commit_in_transaction(shared, store, plan, last_offset, revoked, queue).await
        }
        None => commit_in_steps(shared, store, plan, last_offset, revoked).await,
    }
}

/// `exactly_once`: one transaction, then the local cache.
async fn commit_in_transaction(
    shared: &Shared,
    store: &PartitionStore,
    plan: Plan,
    last_offset: i64,
    revoked: &AtomicBool,
    queue: &CommitQueue,
) -> BatchOutcome {
    let partition = store.partition();
    let started = Instant::now();
    let mut records = plan.records.clone();
    records.extend(changelog_records(
        &shared.topics.changelog,
        partition,
        &plan.entries,
    ));
    let committed = retry(revoked, "commit the transaction", || {
        let (done, answer) = oneshot::channel();
        let queued = queue.send(QueuedBatch {
            partition,
            records: records.clone(),
            next_offset: last_offset + 1,
            done,
        });
        async move {
            let stopped = || (false, "the committer has stopped".to_owned());
            queued.map_err(|_| stopped())?;
            match answer.await {
                Ok(outcome) => outcome.map_err(transient),
                Err(_) => Err(stopped()),
            }
        }
    })
    .await;
    let Some(changelog_last) = committed else {
        return BatchOutcome::Stopped;
    };
    crate::faults::point("after-commit", || {});
    observe_phase("transaction", started);
    count_dead_letters(shared, &plan);

    let started = Instant::now();
    let mut local = plan.entries.clone();
    if let Some(last) = changelog_last {
        local.push(changelog_checkpoint_entry(last + 1));
    }
    // Committed in Kafka already: a store that cannot be written stops this
    // partition here, and its next owner restores from the changelog.
    if retry(revoked, "write the state cache", || {
        std::future::ready(
            store
                .write(&local)
                .map_err(|error| (error.is_retryable(), error.to_string())),
        )
    })
    .await
    .is_none()
    {
        return BatchOutcome::Stopped;
    }
    observe_phase("commit", started);
    count_handled(&plan);
    shared.handler.committed(&plan.outgoing);
    BatchOutcome::Applied(last_offset)
}

fn count_dead_letters(shared: &Shared, plan: &Plan) {
    if plan.dead_letters > 0 {
        METRICS
            .dead_letters
            .with_label_values(&[&shared.topics.input])
            .inc_by(plan.dead_letters);
    }
}

fn count_handled(plan: &Plan) {
    for message_type in &plan.handled {
        METRICS
            .messages_handled
            .with_label_values(&[message_type])
            .inc();
    }
}

/// `at_least_once`: outputs, then state, then changelog.
async fn commit_in_steps(
    shared: &Shared,
    store: &PartitionStore,
    plan: Plan,
    last_offset: i64,
    revoked: &AtomicBool,
) -> BatchOutcome {
    let started = Instant::now();
    if retry(revoked, "produce outgoing messages", || async {
        send_all(&shared.producer, &plan.records)
            .await
            .map_err(transient)
    })
    .await
    .is_none()
    {
        return BatchOutcome::Stopped;
    }
    observe_phase("produce", started);
    crate::faults::point("before-commit", || {});
    count_dead_letters(shared, &plan);

    let started = Instant::now();
    let mut local = plan.entries.clone();
    local.push(changelog_outbox_entry(&plan.entries));
    if retry(revoked, "commit state", || {
        std::future::ready(
            store
                .write(&local)
                .map_err(|error| (error.is_retryable(), error.to_string())),
        )
    })
    .await
    .is_none()
    {
        return BatchOutcome::Stopped;
    }
    observe_phase("commit", started);
    count_handled(&plan);
    shared.handler.committed(&plan.outgoing);

    let started = Instant::now();
    let changelog = changelog_records(&shared.topics.changelog, store.partition(), &plan.entries);
    crate::faults::point("after-commit", || {});
    crate::faults::point("mid-changelog", || {
        let half = &changelog[..changelog.len() / 2];
        let _ = tokio::task::block_in_place(|| {
            shared.runtime.block_on(send_all(&shared.producer, half))
        });
    });
    // Past this point the batch is committed; the offset moves on even if the
    // partition is revoked before the changelog catches up: the outbox keeps
    // the entries for whoever owns the partition next (see `restore`).
    let appended = retry(revoked, "append changelog", || async {
        send_all(&shared.producer, &changelog)
            .await
            .map_err(transient)
    });
    match appended.await {
        Some(Some(last)) => {
            if let Err(error) = store.changelog_appended(last + 1) {
                tracing::warn!(%error, "Changelog checkpoint not written; the outbox will be re-sent");
            }
        }
        Some(None) => {}
        None => tracing::warn!(
            partition = store.partition(),
            "Changelog append abandoned on revoke"
        ),
    }
    observe_phase("changelog", started);
    BatchOutcome::Applied(last_offset)
}

/// This hop's wait: the record's Kafka timestamp (set by its producer) to
/// now. Not the envelope's sent-at, which is the causal chain's start,
/// kept the same on every hop so that handlers are deterministic.
fn observe_queue_time(message: &OwnedMessage, message_type: &str) {
    let Some(produced_ms) = message.timestamp().to_millis() else {
        return;
    };
    let waited_ms = (d2c_platform::now_ms() - produced_ms).max(0);
    METRICS
        .queue_duration
        .with_label_values(&[message_type])
        .observe(waited_ms as f64 / 1000.0);
}

fn observe_phase(phase: &str, started: Instant) {
    METRICS
        .batch_commit_duration
        .with_label_values(&[phase])
        .observe(started.elapsed().as_secs_f64());
}

fn plan_batch(
    shared: &Shared,
    store: &PartitionStore,
    batch: &[OwnedMessage],
    applied: Option<i64>,
) -> Result<Plan, StateError> {
    let mut changes = ChangeSet::default();
    let mut plan = Plan::default();
    let dedupe = shared.handler.dedupe_by_message_id();
    let mut latest_sent_at = None;
    for message in batch {
        // Redelivered after a restart or rebalance: its effects are in the store.
        if applied.is_some_and(|applied| message.offset() <= applied) {
            continue;
        }
        plan.last_offset = Some(message.offset());
        let envelope = match envelope_of(message) {
            Ok(envelope) => envelope,
            Err(reason) => {
                plan.records.push(dead_letter(shared, message, &reason));
                plan.dead_letters += 1;
                continue;
            }
        };
        // Info, not debug: log lines inside it then carry the trace id.
        let span = tracing::info_span!(
            "handle",
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.destination.name = message.topic(),
            messaging.kafka.destination.partition = message.partition(),
            messaging.kafka.message.offset = message.offset(),
            messaging.message.id = %envelope.message_id,
            d2c.message_type = %envelope.message_type,
            trace_id = tracing::field::Empty,
        );
        // One trace per order: this hop is a child of the sender's span.
        tracing_context::continue_trace(&span, envelope.traceparent.as_deref());
        let _entered = span.enter();
        let incoming = Incoming {
            envelope: &envelope,
            key: message.key(),
            payload: message.payload().unwrap_or_default(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let overlay = Overlay {
            base: store,
            changes: &changes,
        };
        if dedupe {
            latest_sent_at = latest_sent_at.max(Some(envelope.sent_at_ms));
            if crate::dedupe::seen(&overlay, &envelope)? {
                tracing::info!("Copy of a handled message dropped");
                METRICS
                    .duplicates_dropped
                    .with_label_values(&[&envelope.message_type])
                    .inc();
                continue;
            }
        }
        observe_queue_time(message, &envelope.message_type);
        let mut effects = Effects::new(&envelope);
        let started = Instant::now();
        let outcome = shared.handler.handle(&overlay, &incoming, &mut effects);
        METRICS
            .handler_duration
            .with_label_values(&[&envelope.message_type])
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(()) => {
                let (state, outgoing) = effects.into_parts();
                changes.extend(state);
                if dedupe {
                    crate::dedupe::remember(&mut changes, &envelope);
                }
                plan.outgoing.extend(outgoing.iter().cloned());
                plan.records.extend(
                    outgoing
                        .into_iter()
                        .map(|out| record_of(&shared.names, in_current_trace(out))),
                );
                plan.handled.push(envelope.message_type.clone());
            }
            Err(HandlerError::Malformed(reason)) => {
                tracing::warn!(%reason, "Message dead-lettered");
                plan.records.push(dead_letter(shared, message, &reason));
                plan.dead_letters += 1;
            }
            Err(HandlerError::State(error)) => return Err(error),
        }
    }
    if let (Some(now), Some(_)) = (latest_sent_at, plan.last_offset) {
        let overlay = Overlay {
            base: store,
            changes: &changes,
        };
        let mut forgotten = ChangeSet::default();
        crate::dedupe::prune(&overlay, &mut forgotten, now)?;
        changes.extend(forgotten);
    }
    if let Some(last) = plan.last_offset {
        plan.entries = changes.into_entries();
        plan.entries.push(Entry {
            key: applied_offset_key(),
            value: Some(encode_offset(last)),
        });
    }
    Ok(plan)
}

/// Runs inside the `handle` span: the record's `traceparent` names it, so
/// the receiver's span becomes its child (handlers never touch traces).
/// The original record, its headers, and why it could not be handled.
fn dead_letter(shared: &Shared, message: &OwnedMessage, reason: &str) -> Record {
    let mut headers: Vec<(String, Vec<u8>)> = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| {
                    (
                        header.key.to_owned(),
                        header.value.unwrap_or_default().to_vec(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    headers.push((
        header::DEAD_LETTER_REASON.to_owned(),
        reason.as_bytes().to_vec(),
    ));
    headers.push((
        "d2c-dead-letter-source".to_owned(),
        format!(
            "{}/{}@{}",
            message.topic(),
            message.partition(),
            message.offset()
        )
        .into_bytes(),
    ));
    Record {
        topic: shared.topics.dead_letter.clone(),
        partition: None,
        key: message.key().unwrap_or_default().to_vec(),
        payload: message.payload().map(<[u8]>::to_vec),
        headers,
    }
}

const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A failed step: whether trying again can help, and why it failed.
type Failure = (bool, String);

/// Broker errors pass (the producer already retried internally; the broker
/// may be back by the next attempt).
fn transient(error: String) -> Failure {
    (true, error)
}

/// Retry a step with exponential backoff until it succeeds, fails for good,
/// or the partition is revoked (then `None`: a new owner takes over).
async fn retry<T, F, Fut>(revoked: &AtomicBool, what: &str, step: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    use d2c_platform::retry::{backoff, Retryable};
    let outcome = step
        .retry(backoff(BACKOFF_START, BACKOFF_MAX))
        .sleep(tokio::time::sleep)
        .when(|(retryable, _): &Failure| *retryable && !revoked.load(Ordering::Acquire))
        .notify(|(_, error): &Failure, wait: Duration| {
            tracing::error!(%error, retry_in_ms = wait.as_millis() as u64, "Step failed: {what}; retrying");
        })
        .await;
    match outcome {
        Ok(value) => Some(value),
        Err((retryable, error)) => {
            tracing::error!(%error, retryable, "Step failed: {what}; not retried");
            None
        }
    }
}
