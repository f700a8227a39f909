//! The declared Kafka topology and its comparison with a live cluster.

mod cluster;

pub use cluster::{
    Applied, ApplyOptions, Cluster, ConfigChange, Drift, DriftKind, Inspection, LiveTopic,
    PartitionChange,
};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Logical topic names, as the code refers to them. The prefix is added by
/// [`TopicNames`].
pub mod topic {
    pub const ORDERS_MESSAGES: &str = "orders.messages";
    pub const ORDERS_EVENTS: &str = "orders.events";
    pub const ORDERS_CHANGELOG: &str = "orders.changelog";
    pub const ORDERS_DEAD_LETTER: &str = "orders.dead-letter";
    pub const INVENTORY_MESSAGES: &str = "inventory.messages";
    pub const INVENTORY_EVENTS: &str = "inventory.events";
    pub const PAYMENTS_MESSAGES: &str = "payments.messages";
    pub const PAYMENTS_EVENTS: &str = "payments.events";
    pub const PAYMENTS_PROVIDER_REQUESTS: &str = "payments.provider-requests";
    pub const CATALOG_MESSAGES: &str = "catalog.messages";
    pub const CATALOG_EVENTS: &str = "catalog.events";
    pub const CUSTOMERS_MESSAGES: &str = "customers.messages";
    pub const CUSTOMERS_EVENTS: &str = "customers.events";
    pub const GATEWAY_REPLIES: &str = "gateway.replies";
}

/// The topology file shipped with this build. Binaries embed it, so they need
/// no file at run time; `topology --file` reads another.
pub const EMBEDDED: &str = include_str!("../topology.toml");

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read topology file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("topology file is not valid: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("topology is inconsistent: {0}")]
    Invalid(String),
    #[error("unknown topology profile `{name}`; the file declares: {}", .known.join(", "))]
    UnknownProfile { name: String, known: Vec<String> },
    #[error("Kafka {operation} request failed: {source}")]
    Kafka {
        operation: &'static str,
        source: rdkafka::error::KafkaError,
    },
    #[error("Kafka {operation} for {topic} failed: {code}{}", topic_error_hint(*.code))]
    Topic {
        operation: &'static str,
        topic: String,
        code: rdkafka::types::RDKafkaErrorCode,
    },
    #[error("the metadata request did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(
        "refusing to change partition counts ({}): keys would move to other partitions; \
         entities would change owner and their state would be on the wrong partition. \
         Pass --force-partitions to grow them anyway",
        PartitionChange::list(.changes)
    )]
    PartitionChangeRefused { changes: Vec<PartitionChange> },
    #[error(
        "cannot lower partition counts ({}): Kafka cannot remove partitions from a topic, \
         not even with --force-partitions; declare the live count, or recreate the topic",
        PartitionChange::list(.changes)
    )]
    PartitionShrink { changes: Vec<PartitionChange> },
    #[error(
        "refusing to apply: {}; every acks=all write would fail. Is the profile meant for this cluster?",
        .topics.join("; ")
    )]
    TooFewReplicas { topics: Vec<String> },
}

fn topic_error_hint(code: rdkafka::types::RDKafkaErrorCode) -> &'static str {
    match code {
        rdkafka::types::RDKafkaErrorCode::InvalidReplicationFactor => {
            " (fewer brokers than the replication factor: choose a profile that fits the cluster, e.g. --profile local)"
        }
        _ => "",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CleanupPolicy {
    #[default]
    Delete,
    Compact,
}

impl CleanupPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    partitions: i32,
    replication_factor: i32,
    min_insync_replicas: i32,
    retention_ms: i64,
}

/// What one environment changes in the defaults. Unset fields keep them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    /// Every topic with more partitions gets this many. Lowering inputs and
    /// changelogs alike keeps each changelog a mirror of its input.
    partitions: Option<i32>,
    replication_factor: Option<i32>,
    min_insync_replicas: Option<i32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicEntry {
    name: String,
    partitions: Option<i32>,
    #[serde(default)]
    cleanup_policy: CleanupPolicy,
    retention_ms: Option<i64>,
    /// Compacted topics only: how long a record stays uncompacted, so that
    /// readers of every event (the projector) see each one first.
    min_compaction_lag_ms: Option<i64>,
    /// Services other than the owner that read this topic.
    #[serde(default)]
    read_by: Vec<String>,
    /// A changelog mirrors its input topic partition for partition.
    changelog_for: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    defaults: Defaults,
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
    topics: Vec<TopicEntry>,
}

/// One topic with every setting resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub min_insync_replicas: i32,
    pub cleanup_policy: CleanupPolicy,
    /// `None` for compacted topics: they keep the latest value per key forever.
    pub retention_ms: Option<i64>,
    /// Compacted topics: the time a record is kept before compaction may
    /// replace it (`min.compaction.lag.ms`).
    pub min_compaction_lag_ms: Option<i64>,
    /// Services other than the owner (the name's first part) that read it.
    pub read_by: Vec<String>,
    /// The input topic this changelog mirrors.
    pub changelog_for: Option<String>,
}

impl TopicSpec {
    /// Topic configs as Kafka names them: every config this file declares.
    pub fn configs(&self) -> Vec<(&'static str, String)> {
        let mut configs = vec![("cleanup.policy", self.cleanup_policy.as_str().to_owned())];
        if let Some(retention) = self.retention_ms {
            configs.push(("retention.ms", retention.to_string()));
        }
        if let Some(lag) = self.min_compaction_lag_ms {
            configs.push(("min.compaction.lag.ms", lag.to_string()));
        }
        configs.push(("min.insync.replicas", self.min_insync_replicas.to_string()));
        configs
    }
}

/// A parsed topology file: the defaults and every named profile, each
/// checked for consistency, so a bad profile fails whichever one is chosen.
#[derive(Debug, Clone)]
pub struct TopologyFile {
    file: File,
}

impl TopologyFile {
    pub fn embedded() -> Result<Self, TopologyError> {
        Self::parse(EMBEDDED)
    }

    pub fn load(path: &Path) -> Result<Self, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, TopologyError> {
        let parsed = Self {
            file: toml::from_str(text)?,
        };
        parsed.resolve(None)?;
        for name in parsed.profiles() {
            parsed.resolve(Some(name)).map_err(|error| match error {
                TopologyError::Invalid(reason) => {
                    TopologyError::Invalid(format!("profile `{name}`: {reason}"))
                }
                other => other,
            })?;
        }
        Ok(parsed)
    }

    /// The profile names, sorted.
    pub fn profiles(&self) -> impl Iterator<Item = &str> {
        self.file.profiles.keys().map(String::as_str)
    }

    /// The topics with `profile`'s settings, or the file's defaults for `None`.
    pub fn resolve(&self, profile: Option<&str>) -> Result<Topology, TopologyError> {
        let profile = match profile {
            None => Profile::default(),
            Some(name) => self.file.profiles.get(name).cloned().ok_or_else(|| {
                TopologyError::UnknownProfile {
                    name: name.to_owned(),
                    known: self.profiles().map(str::to_owned).collect(),
                }
            })?,
        };
        let topics: Vec<TopicSpec> = self
            .file
            .topics
            .iter()
            .map(|entry| resolve(&self.file.defaults, &profile, entry))
            .collect();
        validate(&profile, &topics)?;
        Ok(Topology { topics })
    }
}

#[derive(Debug, Clone)]
pub struct Topology {
    topics: Vec<TopicSpec>,
}

impl Topology {
    /// The built-in file's defaults (production).
    pub fn embedded() -> Result<Self, TopologyError> {
        TopologyFile::embedded()?.resolve(None)
    }

    /// `text`'s defaults.
    pub fn parse(text: &str) -> Result<Self, TopologyError> {
        TopologyFile::parse(text)?.resolve(None)
    }

    pub fn topics(&self) -> &[TopicSpec] {
        &self.topics
    }

    pub fn topic(&self, name: &str) -> Option<&TopicSpec> {
        self.topics.iter().find(|topic| topic.name == name)
    }

    /// Only the topics the named services own or read (`orders` keeps
    /// `orders.*` and `catalog.events`, which it reads).
    pub fn only_services(&self, services: &[&str]) -> Self {
        let topics = self
            .topics
            .iter()
            .filter(|topic| {
                services.iter().any(|service| {
                    topic.name.split('.').next() == Some(service)
                        || topic.read_by.iter().any(|reader| reader == service)
                })
            })
            .cloned()
            .collect();
        Self { topics }
    }

    /// The same topology with every name prefixed.
    pub fn with_prefix(&self, prefix: &str) -> Self {
        let topics = self
            .topics
            .iter()
            .map(|topic| TopicSpec {
                name: format!("{prefix}{}", topic.name),
                changelog_for: topic
                    .changelog_for
                    .as_ref()
                    .map(|input| format!("{prefix}{input}")),
                ..topic.clone()
            })
            .collect();
        Self { topics }
    }
}

fn resolve(defaults: &Defaults, profile: &Profile, entry: &TopicEntry) -> TopicSpec {
    let retention_ms = match entry.cleanup_policy {
        CleanupPolicy::Compact => None,
        CleanupPolicy::Delete => Some(entry.retention_ms.unwrap_or(defaults.retention_ms)),
    };
    let declared = entry.partitions.unwrap_or(defaults.partitions);
    TopicSpec {
        name: entry.name.clone(),
        partitions: profile
            .partitions
            .map_or(declared, |limit| declared.min(limit)),
        replication_factor: profile
            .replication_factor
            .unwrap_or(defaults.replication_factor),
        min_insync_replicas: profile
            .min_insync_replicas
            .unwrap_or(defaults.min_insync_replicas),
        cleanup_policy: entry.cleanup_policy,
        retention_ms,
        min_compaction_lag_ms: entry.min_compaction_lag_ms,
        read_by: entry.read_by.clone(),
        changelog_for: entry.changelog_for.clone(),
    }
}

fn validate(profile: &Profile, topics: &[TopicSpec]) -> Result<(), TopologyError> {
    if profile.partitions.is_some_and(|limit| limit < 1) {
        return Err(TopologyError::Invalid(
            "partitions must be at least 1".to_owned(),
        ));
    }
    let mut seen = BTreeMap::new();
    for topic in topics {
        if topic.partitions < 1 || topic.replication_factor < 1 || topic.min_insync_replicas < 1 {
            return Err(TopologyError::Invalid(format!(
                "{}: partitions, replication_factor and min_insync_replicas must be at least 1",
                topic.name
            )));
        }
        if topic.min_insync_replicas > topic.replication_factor {
            return Err(TopologyError::Invalid(format!(
                "{}: min_insync_replicas {} exceeds replication_factor {}: no write with acks=all could succeed",
                topic.name, topic.min_insync_replicas, topic.replication_factor
            )));
        }
        if topic.min_compaction_lag_ms.is_some() && topic.cleanup_policy != CleanupPolicy::Compact {
            return Err(TopologyError::Invalid(format!(
                "{}: min_compaction_lag_ms applies to compacted topics only",
                topic.name
            )));
        }
        if seen.insert(topic.name.as_str(), topic.partitions).is_some() {
            return Err(TopologyError::Invalid(format!(
                "{} is declared twice",
                topic.name
            )));
        }
    }
    for topic in topics {
        let Some(input) = &topic.changelog_for else {
            continue;
        };
        match seen.get(input.as_str()) {
            Some(partitions) if *partitions == topic.partitions => {}
            Some(partitions) => {
                return Err(TopologyError::Invalid(format!(
                    "{} has {} partitions but its input {input} has {partitions}: a changelog mirrors its input partition for partition",
                    topic.name, topic.partitions
                )))
            }
            None => {
                return Err(TopologyError::Invalid(format!(
                    "{} is the changelog of {input}, which is not declared",
                    topic.name
                )))
            }
        }
    }
    Ok(())
}

/// Resolves logical topic names to the names on the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicNames {
    prefix: String,
}

impl TopicNames {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn name(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
        [defaults]
        partitions = 12
        replication_factor = 3
        min_insync_replicas = 2
        retention_ms = 1000

        [profiles.one-broker]
        replication_factor = 1
        min_insync_replicas = 1

        [profiles.small]
        replication_factor = 1
        min_insync_replicas = 1
        partitions = 4

        [[topics]]
        name = "a.messages"
        [[topics]]
        name = "a.changelog"
        cleanup_policy = "compact"
        changelog_for = "a.messages"
        [[topics]]
        name = "a.dead-letter"
        partitions = 1
    "#;

    fn partitions(topology: &Topology, name: &str) -> Option<i32> {
        topology.topic(name).map(|topic| topic.partitions)
    }

    #[test]
    fn embedded_topology_is_valid_and_sized_for_growth() {
        let topology = Topology::embedded().expect("embedded topology parses");
        let orders = topology.topic(topic::ORDERS_MESSAGES).expect("declared");
        assert_eq!(orders.partitions, 48);
        assert_eq!(orders.replication_factor, 3);
        assert_eq!(orders.min_insync_replicas, 2);
        assert_eq!(partitions(&topology, topic::GATEWAY_REPLIES), Some(32));
        let changelog = topology.topic(topic::ORDERS_CHANGELOG).expect("declared");
        assert_eq!(changelog.cleanup_policy, CleanupPolicy::Compact);
        assert_eq!(changelog.retention_ms, None);
        assert_eq!(
            changelog.changelog_for.as_deref(),
            Some(topic::ORDERS_MESSAGES)
        );
        for name in [
            topic::ORDERS_EVENTS,
            topic::ORDERS_DEAD_LETTER,
            topic::GATEWAY_REPLIES,
        ] {
            assert!(topology.topic(name).is_some(), "{name} is declared");
        }
    }

    #[test]
    fn the_catalog_events_are_a_global_table_the_orders_read() {
        let topology = Topology::embedded().expect("embedded topology parses");
        let events = topology.topic(topic::CATALOG_EVENTS).expect("declared");
        assert_eq!(events.cleanup_policy, CleanupPolicy::Compact);
        assert!(events
            .configs()
            .contains(&("min.compaction.lag.ms", "2592000000".to_owned())));
        let orders_only = topology.only_services(&["orders"]);
        assert!(orders_only.topic(topic::CATALOG_EVENTS).is_some());
        assert!(orders_only.topic(topic::ORDERS_MESSAGES).is_some());
        assert!(orders_only.topic("catalog.messages").is_none());
    }

    #[test]
    fn compaction_lag_needs_a_compacted_topic() {
        let file = format!("{SMALL}\n[[topics]]\nname = \"b.events\"\nmin_compaction_lag_ms = 5\n");
        let error = TopologyFile::parse(&file).expect_err("refused");
        assert!(
            error.to_string().contains("compacted topics only"),
            "{error}"
        );
    }

    #[test]
    fn embedded_profiles_fit_their_clusters() {
        let file = TopologyFile::embedded().expect("parses");
        assert_eq!(
            file.profiles().collect::<Vec<_>>(),
            vec!["local", "production", "test", "test-cluster"]
        );
        let production = file.resolve(Some("production")).expect("resolves");
        let defaults = file.resolve(None).expect("resolves");
        assert_eq!(production.topics(), defaults.topics());

        let local = file.resolve(Some("local")).expect("resolves");
        assert_eq!(partitions(&local, topic::ORDERS_MESSAGES), Some(4));
        assert_eq!(partitions(&local, topic::ORDERS_CHANGELOG), Some(4));
        assert_eq!(partitions(&local, topic::GATEWAY_REPLIES), Some(4));
        assert_eq!(partitions(&local, topic::ORDERS_DEAD_LETTER), Some(1));
        for local in local.topics() {
            assert_eq!(
                (local.replication_factor, local.min_insync_replicas),
                (1, 1)
            );
        }

        let test = file.resolve(Some("test")).expect("resolves");
        assert_eq!(partitions(&test, topic::ORDERS_MESSAGES), Some(8));
        assert_eq!(partitions(&test, topic::ORDERS_CHANGELOG), Some(8));
        assert_eq!(partitions(&test, topic::GATEWAY_REPLIES), Some(8));
        assert_eq!(partitions(&test, topic::ORDERS_DEAD_LETTER), Some(1));
        assert!(test
            .topics()
            .iter()
            .all(|topic| topic.replication_factor == 1 && topic.min_insync_replicas == 1));

        let cluster = file.resolve(Some("test-cluster")).expect("resolves");
        for (cluster, test) in cluster.topics().iter().zip(test.topics()) {
            assert_eq!(cluster.partitions, test.partitions, "{}", cluster.name);
            assert_eq!(
                (cluster.replication_factor, cluster.min_insync_replicas),
                (3, 2)
            );
        }
    }

    #[test]
    fn profile_partitions_lower_only_larger_counts_and_keep_changelogs_mirrored() {
        let small = TopologyFile::parse(SMALL)
            .and_then(|file| file.resolve(Some("small")))
            .expect("resolves");
        assert_eq!(partitions(&small, "a.messages"), Some(4));
        assert_eq!(partitions(&small, "a.changelog"), Some(4));
        assert_eq!(partitions(&small, "a.dead-letter"), Some(1));

        let one_broker = TopologyFile::parse(SMALL)
            .and_then(|file| file.resolve(Some("one-broker")))
            .expect("resolves");
        assert_eq!(partitions(&one_broker, "a.messages"), Some(12));
        let messages = one_broker.topic("a.messages").expect("declared");
        assert_eq!(
            (messages.replication_factor, messages.min_insync_replicas),
            (1, 1)
        );
    }

    #[test]
    fn no_profile_means_the_defaults() {
        let topology = Topology::parse(SMALL).expect("parses");
        let messages = topology.topic("a.messages").expect("declared");
        assert_eq!(
            (
                messages.partitions,
                messages.replication_factor,
                messages.min_insync_replicas
            ),
            (12, 3, 2)
        );
        assert_eq!(
            messages.configs(),
            vec![
                ("cleanup.policy", "delete".to_owned()),
                ("retention.ms", "1000".to_owned()),
                ("min.insync.replicas", "2".to_owned()),
            ]
        );
        let changelog = topology.topic("a.changelog").expect("declared");
        assert_eq!(
            changelog.configs(),
            vec![
                ("cleanup.policy", "compact".to_owned()),
                ("min.insync.replicas", "2".to_owned()),
            ]
        );
    }

    #[test]
    fn unknown_profile_names_the_known_ones() {
        let file = TopologyFile::parse(SMALL).expect("parses");
        let error = file.resolve(Some("staging")).expect_err("unknown");
        assert!(
            matches!(&error, TopologyError::UnknownProfile { name, known }
                if name == "staging" && known == &["one-broker", "small"]),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains("staging") && message.contains("one-broker, small"),
            "{message}"
        );
    }

    #[test]
    fn every_profile_is_checked_when_the_file_is_parsed() {
        let impossible_isr = format!("{SMALL}\n[profiles.broken]\nreplication_factor = 1\n");
        let error = TopologyFile::parse(&impossible_isr).expect_err("min ISR 2 > RF 1");
        let message = error.to_string();
        assert!(
            message.contains("broken") && message.contains("min_insync_replicas"),
            "{message}"
        );

        let zero = format!("{SMALL}\n[profiles.zero]\npartitions = 0\n");
        let error = TopologyFile::parse(&zero).expect_err("0 partitions");
        assert!(error.to_string().contains("zero"), "{error}");
    }

    #[test]
    fn unknown_profile_keys_are_refused() {
        let typo = format!("{SMALL}\n[profiles.typo]\nreplication = 1\n");
        let error = TopologyFile::parse(&typo).expect_err("unknown key");
        assert!(error.to_string().contains("replication"), "{error}");
    }

    #[test]
    fn changelog_must_mirror_its_input() {
        let text = r#"
            [defaults]
            partitions = 4
            replication_factor = 1
            min_insync_replicas = 1
            retention_ms = 1000
            [[topics]]
            name = "a.messages"
            [[topics]]
            name = "a.changelog"
            partitions = 2
            cleanup_policy = "compact"
            changelog_for = "a.messages"
        "#;
        let error = Topology::parse(text).expect_err("mismatch refused");
        assert!(error.to_string().contains("mirrors"), "{error}");
    }

    #[test]
    fn unknown_keys_and_duplicates_are_refused() {
        let base = "[defaults]\npartitions = 1\nreplication_factor = 1\nmin_insync_replicas = 1\nretention_ms = 1\n";
        assert!(Topology::parse(base).is_err(), "no topics");
        assert!(Topology::parse(&format!("{base}[[topics]]\nname = \"a\"\n")).is_ok());
        assert!(
            Topology::parse(&format!("{base}[[topics]]\nname = \"a\"\npartitons = 3\n")).is_err()
        );
        assert!(Topology::parse(&format!(
            "{base}[[topics]]\nname = \"a\"\n[[topics]]\nname = \"a\"\n"
        ))
        .is_err());
    }

    #[test]
    fn prefix_applies_to_every_name() {
        let topology = Topology::embedded().expect("parses").with_prefix("t1.");
        assert!(topology
            .topics()
            .iter()
            .all(|topic| topic.name.starts_with("t1.")));
        assert_eq!(
            topology
                .topic("t1.orders.changelog")
                .and_then(|topic| topic.changelog_for.as_deref()),
            Some("t1.orders.messages")
        );
        assert_eq!(
            TopicNames::new("t1.").name(topic::GATEWAY_REPLIES),
            "t1.gateway.replies"
        );
    }
}
