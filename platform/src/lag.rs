//! Consumer lag per group, topic and partition, from librdkafka's own
//! statistics (`statistics.interval.ms`): no extra broker requests.
//!
//! Every consumer's context hands each statistics report to a
//! [`ConsumerLag`], which sets `d2c_consumer_lag{group,topic,partition}` for
//! the partitions the consumer reads and removes the series of partitions it
//! no longer reads (revoked, or gone from the report). The report arrives on
//! the thread that polls the consumer, like the rebalance callbacks, so a
//! revoked partition's series cannot come back from a report in flight.
//!
//! Lag is the high watermark minus the position the consumer would resume
//! from. For a group member that is the stored offset (what the application
//! has made durable, to be committed next), else the committed offset, else
//! (nothing done yet; groups here start from the earliest offset) the low
//! watermark; not
//! what was fetched or handed to the application, which runs ahead of what
//! is done (measured: a processor restarting behind 200 messages
//! had them all fetched and queued within 100 ms, long before its first
//! commit). A consumer outside any group commits nothing and handles a
//! message when it receives it: there it is the offset after the last
//! message handed to the application, else the next offset to fetch.
//! librdkafka reports -1 or -1001 for what it does not know yet; such a
//! partition exports nothing rather than a made-up number.

use crate::metrics::METRICS;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::statistics::{Partition, Statistics};
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How often librdkafka reports statistics when `D2C_STATS_INTERVAL_MS` is
/// not set: often enough for a lag alert, cheap enough to parse.
pub const DEFAULT_STATS_INTERVAL_MS: u64 = 5_000;

/// Asks librdkafka for a statistics report every `interval` (zero: never,
/// and then no lag is exported).
pub fn enable_statistics(config: &mut ClientConfig, interval: Duration) -> &mut ClientConfig {
    config.set("statistics.interval.ms", interval.as_millis().to_string())
}

/// The lag series of one consumer.
pub struct ConsumerLag {
    group: String,
    position: Position,
    exported: Mutex<HashSet<(String, i32)>>,
}

/// Which offset counts as where a consumer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// A group member: stored, else committed.
    Committed,
    /// Assigned partitions, no group: handed to the application, else next
    /// to fetch.
    Consumed,
    /// A group member that commits its offsets inside its transactions
    /// (exactly_once): librdkafka's stored and committed offsets stay where
    /// the partition was assigned, so the furthest of those and what was
    /// handed to the application (committed a transaction later).
    Transactional,
}

impl ConsumerLag {
    /// The lag of a member of consumer group `group` (the `group` label).
    pub fn new(group: impl Into<String>) -> Self {
        Self::with_position(group, Position::Committed)
    }

    /// The lag of a member of `group` that commits offsets in transactions.
    pub fn transactional(group: impl Into<String>) -> Self {
        Self::with_position(group, Position::Transactional)
    }

    /// The lag of a consumer outside any group, labelled with its client id
    /// (a stable name, not the random group id librdkafka needs).
    pub fn assigned(client_id: impl Into<String>) -> Self {
        Self::with_position(client_id, Position::Consumed)
    }

    fn with_position(group: impl Into<String>, position: Position) -> Self {
        Self {
            group: group.into(),
            position,
            exported: Mutex::new(HashSet::new()),
        }
    }

    fn exported(&self) -> MutexGuard<'_, HashSet<(String, i32)>> {
        // Entries are inserted and removed whole: a poisoned set is valid.
        self.exported
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the lag of every partition `statistics` knows it for, and
    /// removes the series of partitions the report no longer covers.
    pub fn observe(&self, statistics: &Statistics) {
        let mut current = HashSet::new();
        for (topic, topic_statistics) in &statistics.topics {
            for partition in topic_statistics.partitions.values() {
                tracing::trace!(
                    group = %self.group,
                    messaging.destination.name = %topic,
                    messaging.kafka.destination.partition = partition.partition,
                    desired = partition.desired,
                    lo_offset = partition.lo_offset,
                    hi_offset = partition.hi_offset,
                    stored_offset = partition.stored_offset,
                    committed_offset = partition.committed_offset,
                    app_offset = partition.app_offset,
                    next_offset = partition.next_offset,
                    "Partition statistics"
                );
                let Some(lag) = partition_lag(partition, self.position) else {
                    continue;
                };
                let partition_label = partition.partition.to_string();
                METRICS
                    .consumer_lag
                    .with_label_values(&[self.group.as_str(), topic, &partition_label])
                    .set(lag);
                current.insert((topic.clone(), partition.partition));
            }
        }
        let mut exported = self.exported();
        for (topic, partition) in exported.difference(&current) {
            self.remove(topic, *partition);
        }
        *exported = current;
    }

    /// Removes the series of `partitions` of `topic` (revoked: another
    /// member reports them now).
    pub fn forget(&self, topic: &str, partitions: &[i32]) {
        let mut exported = self.exported();
        for partition in partitions {
            if exported.remove(&(topic.to_owned(), *partition)) {
                self.remove(topic, *partition);
            }
        }
    }

    /// Removes every series of this consumer.
    pub fn forget_all(&self) {
        let mut exported = self.exported();
        for (topic, partition) in exported.drain() {
            self.remove(&topic, partition);
        }
    }

    fn remove(&self, topic: &str, partition: i32) {
        let partition_label = partition.to_string();
        // Absent already is fine: the series is gone either way.
        let _ = METRICS.consumer_lag.remove_label_values(&[
            self.group.as_str(),
            topic,
            &partition_label,
        ]);
    }
}

/// The lag of one partition of a statistics report, if the consumer reads
/// it and its high watermark and position are known.
pub fn partition_lag(partition: &Partition, position: Position) -> Option<i64> {
    // -1 is librdkafka's "unassigned" pseudo-partition; `desired` is false
    // for partitions the consumer only knows from metadata.
    if partition.partition < 0 || !partition.desired || partition.hi_offset < 0 {
        return None;
    }
    let position = match position {
        // Nothing stored or committed yet, in a group that resets to the
        // earliest offset: nothing is done, the whole log is behind.
        Position::Committed => first_known(&[
            partition.stored_offset,
            partition.committed_offset,
            partition.lo_offset,
        ]),
        Position::Consumed => first_known(&[partition.app_offset, partition.next_offset]),
        Position::Transactional => {
            let committed = first_known(&[partition.stored_offset, partition.committed_offset]);
            let handed = first_known(&[partition.app_offset]);
            committed
                .max(handed)
                .or_else(|| first_known(&[partition.lo_offset]))
        }
    }?;
    // A position past a stale high watermark means nothing is waiting.
    Some((partition.hi_offset - position).max(0))
}

/// The first offset librdkafka knows (unknown ones are negative).
fn first_known(offsets: &[i64]) -> Option<i64> {
    offsets.iter().copied().find(|offset| *offset >= 0)
}

/// A consumer context that only exports lag, for consumers with no
/// rebalance handling of their own (assigned partitions, plain groups): a
/// revoked partition's series goes at once.
pub struct LagContext {
    pub lag: ConsumerLag,
}

impl LagContext {
    /// For a member of consumer group `group`.
    pub fn new(group: impl Into<String>) -> Self {
        Self {
            lag: ConsumerLag::new(group),
        }
    }

    /// For a consumer outside any group, known by `client_id`.
    pub fn assigned(client_id: impl Into<String>) -> Self {
        Self {
            lag: ConsumerLag::assigned(client_id),
        }
    }
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        self.lag.observe(&statistics);
    }
}

impl ConsumerContext for LagContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(_) => {}
            Rebalance::Revoke(list) => {
                for element in list.elements() {
                    self.lag.forget(element.topic(), &[element.partition()]);
                }
            }
            Rebalance::Error(_) => self.lag.forget_all(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::statistics::Topic;

    /// librdkafka's "not known" offset.
    const INVALID: i64 = -1001;

    fn partition(id: i32, hi: i64, stored: i64, committed: i64, app: i64) -> Partition {
        Partition {
            partition: id,
            desired: true,
            hi_offset: hi,
            stored_offset: stored,
            committed_offset: committed,
            app_offset: app,
            next_offset: INVALID,
            lo_offset: INVALID,
            ..Partition::default()
        }
    }

    fn report(topic: &str, partitions: Vec<Partition>) -> Statistics {
        let mut statistics = Statistics::default();
        statistics.topics.insert(
            topic.to_owned(),
            Topic {
                topic: topic.to_owned(),
                partitions: partitions.into_iter().map(|p| (p.partition, p)).collect(),
                ..Topic::default()
            },
        );
        statistics
    }

    /// (topic, partition, lag) of `group`'s series, from the exposition.
    fn series(group: &str) -> Vec<(String, String, i64)> {
        let group_label = format!("group=\"{group}\"");
        let mut found: Vec<(String, String, i64)> = METRICS
            .render()
            .lines()
            .filter(|line| line.starts_with("d2c_consumer_lag{") && line.contains(&group_label))
            .filter_map(|line| {
                let label = |name: &str| {
                    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
                    let end = start + line[start..].find('"')?;
                    Some(line[start..end].to_owned())
                };
                let value = line.rsplit(' ').next()?.parse::<f64>().ok()?;
                Some((label("topic")?, label("partition")?, value as i64))
            })
            .collect();
        found.sort();
        found
    }

    #[test]
    fn a_group_member_is_where_it_stored_else_committed() {
        let lag = |p: &Partition| partition_lag(p, Position::Committed);
        assert_eq!(lag(&partition(0, 100, 90, 80, 95)), Some(10));
        assert_eq!(lag(&partition(0, 100, INVALID, 80, 95)), Some(20));
        // Fetched and queued is not done: before anything is stored or
        // committed, the whole log counts.
        assert_eq!(lag(&partition(0, 100, INVALID, INVALID, 100)), None);
        let fresh = Partition {
            lo_offset: 40,
            ..partition(0, 100, INVALID, INVALID, 100)
        };
        assert_eq!(lag(&fresh), Some(60));
        assert_eq!(lag(&partition(0, 100, 120, 80, 95)), Some(0));
    }

    #[test]
    fn an_assigned_consumer_is_where_it_consumed_else_fetches() {
        let lag = |p: &Partition| partition_lag(p, Position::Consumed);
        assert_eq!(lag(&partition(0, 100, INVALID, INVALID, 95)), Some(5));
        let idle = Partition {
            next_offset: 100,
            ..partition(0, 100, INVALID, INVALID, INVALID)
        };
        assert_eq!(lag(&idle), Some(0));
        assert_eq!(lag(&partition(0, 100, 90, 80, INVALID)), None);
    }

    #[test]
    fn a_transactional_member_is_where_its_processor_took_records() {
        let lag = |p: &Partition| partition_lag(p, Position::Transactional);
        // Assigned at 70, handled up to 232: the committed offset librdkafka
        // reports is the one read at assignment (orders after a restart).
        assert_eq!(lag(&partition(0, 232, INVALID, 70, 232)), Some(0));
        assert_eq!(lag(&partition(0, 232, INVALID, 70, 200)), Some(32));
        assert_eq!(lag(&partition(0, 232, INVALID, 70, INVALID)), Some(162));
        let fresh = Partition {
            lo_offset: 40,
            ..partition(0, 100, INVALID, INVALID, INVALID)
        };
        assert_eq!(lag(&fresh), Some(60));
    }

    #[test]
    fn unknown_offsets_and_unread_partitions_export_nothing() {
        let lag = |p: &Partition| partition_lag(p, Position::Committed);
        assert_eq!(lag(&partition(0, -1, 90, 80, 95)), None);
        assert_eq!(lag(&partition(0, 100, INVALID, INVALID, INVALID)), None);
        assert_eq!(lag(&partition(-1, 100, 90, 80, 95)), None);
        let not_ours = Partition {
            desired: false,
            ..partition(1, 100, 90, 80, 95)
        };
        assert_eq!(lag(&not_ours), None);
    }

    #[test]
    fn series_follow_the_partitions_read_and_go_on_revoke() {
        let lag = ConsumerLag::new("lag-test-group");
        lag.observe(&report(
            "t.orders.messages",
            vec![partition(0, 10, 7, 5, 9), partition(1, 4, 4, 4, 4)],
        ));
        assert_eq!(
            series("lag-test-group"),
            [
                ("t.orders.messages".into(), "0".into(), 3),
                ("t.orders.messages".into(), "1".into(), 0),
            ]
        );
        lag.forget("t.orders.messages", &[0]);
        assert_eq!(
            series("lag-test-group"),
            [("t.orders.messages".into(), "1".into(), 0)]
        );
        // A later report without partition 1 removes it too.
        lag.observe(&report("t.orders.messages", vec![partition(2, 8, 2, 2, 2)]));
        assert_eq!(
            series("lag-test-group"),
            [("t.orders.messages".into(), "2".into(), 6)]
        );
        lag.forget_all();
        assert!(series("lag-test-group").is_empty());
    }
}
