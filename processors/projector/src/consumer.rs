//! The projector as a [`Sink`] of the runtime's side-effect engine: a group
//! member of every `*.events` topic, one lane, each batch (up to
//! `D2C_MAX_BATCH` records from any partitions) written to Postgres in one
//! transaction.
//!
//! Delivery: at-least-once (the engine stores a batch's offsets only after
//! `handle` returns `Done`, i.e. after the Postgres commit). A crash between
//! the Postgres commit and the offset commit replays records that are
//! already projected; every insert is idempotent, so the replay changes
//! nothing. Partitions are projected in their order; across partitions there
//! is no order to keep.

use crate::config::{ProjectorConfig, SERVICE};
use crate::metrics::{error_kind, METRICS};
use crate::records::{self, Projection};
use crate::sink::{self, Inserted};
use d2c_runtime::sink::{Handled, Lanes, Sink, SinkSettings};
use d2c_topology::{topic, TopicNames};
use rdkafka::message::OwnedMessage;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use tokio::sync::watch;

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

pub fn sink_settings(config: &ProjectorConfig) -> SinkSettings {
    let names = TopicNames::new(config.topic_prefix.clone());
    SinkSettings {
        brokers: config.brokers.clone(),
        group_id: config.group_id.clone(),
        client_id: format!("{SERVICE}-{}", config.name),
        topics: EVENT_TOPICS.iter().map(|name| names.name(name)).collect(),
        fetch_wait: config.fetch_wait,
        session_timeout: config.session_timeout,
        stats_interval: config.stats_interval,
        lanes: Lanes::Shared,
        max_batch: config.max_batch,
        batch_linger: BATCH_LINGER,
        report_assigned: true,
        // The projector writes to Postgres only.
        output: None,
    }
}

/// Projects batches into Postgres.
pub struct Projector {
    pub pool: PgPool,
}

impl Sink for Projector {
    async fn handle(&self, batch: &[OwnedMessage], stop: &mut watch::Receiver<bool>) -> Handled {
        let started = Instant::now();
        let projection = records::project(batch, d2c_platform::now_ms());
        report_skipped(&projection);
        // Once the batch is in hand it is finished even if a stop
        // arrives: only a database that keeps failing abandons it.
        let Some(inserted) = sink::commit(&self.pool, &projection, stop).await else {
            tracing::warn!("Stopping with a batch uncommitted; it will be consumed again");
            return Handled::Stopped;
        };
        record_batch(&projection, inserted, started.elapsed());
        Handled::Done
    }

    fn consumer_error(&self, _error: &rdkafka::error::KafkaError) {
        METRICS.errors.with_label_values(&[error_kind::KAFKA]).inc();
    }
}

fn report_skipped(projection: &Projection) {
    for skipped in &projection.skipped {
        METRICS
            .errors
            .with_label_values(&[error_kind::UNDECODABLE])
            .inc();
        tracing::warn!(
            messaging.destination.name = %skipped.topic,
            messaging.kafka.destination.partition = skipped.partition,
            messaging.kafka.message.offset = skipped.offset,
            reason = %skipped.reason,
            "Record archived but left out of the read models: it does not decode"
        );
    }
}

fn record_batch(projection: &Projection, inserted: Inserted, took: Duration) {
    METRICS.batch_duration.observe(took.as_secs_f64());
    for event in &projection.events {
        METRICS.events.with_label_values(&[&event.topic]).inc();
    }
    for (table, rows) in [
        ("events", inserted.events),
        ("product_versions", inserted.product_versions),
        ("order_versions", inserted.order_versions),
    ] {
        METRICS
            .rows_inserted
            .with_label_values(&[table])
            .inc_by(rows);
    }
    tracing::debug!(
        records = projection.events.len(),
        archived = inserted.events,
        product_versions = inserted.product_versions,
        order_versions = inserted.order_versions,
        took_ms = took.as_millis() as u64,
        "Batch projected"
    );
}
