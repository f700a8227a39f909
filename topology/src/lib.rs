//! The declared Kafka topology and its comparison with a live cluster.

mod cluster;

pub use cluster::{apply, inspect, topic_partitions, Drift, DriftKind, Inspection};

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
    #[error("Kafka admin request failed: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
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
    retention_ms: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicEntry {
    name: String,
    partitions: Option<i32>,
    replication_factor: Option<i32>,
    #[serde(default)]
    cleanup_policy: CleanupPolicy,
    retention_ms: Option<i64>,
    /// A changelog mirrors its input topic partition for partition.
    changelog_for: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    defaults: Defaults,
    topics: Vec<TopicEntry>,
}

/// One topic with every setting resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub cleanup_policy: CleanupPolicy,
    /// `None` for compacted topics: they keep the latest value per key forever.
    pub retention_ms: Option<i64>,
}

impl TopicSpec {
    /// Topic configs as Kafka names them.
    pub fn configs(&self) -> Vec<(&'static str, String)> {
        let mut configs = vec![("cleanup.policy", self.cleanup_policy.as_str().to_owned())];
        if let Some(retention) = self.retention_ms {
            configs.push(("retention.ms", retention.to_string()));
        }
        configs
    }
}

#[derive(Debug, Clone)]
pub struct Topology {
    topics: Vec<TopicSpec>,
}

impl Topology {
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
        let file: File = toml::from_str(text)?;
        let topics: Vec<TopicSpec> = file
            .topics
            .iter()
            .map(|entry| resolve(&file.defaults, entry))
            .collect();
        validate(&file.topics, &topics)?;
        Ok(Self { topics })
    }

    pub fn topics(&self) -> &[TopicSpec] {
        &self.topics
    }

    pub fn topic(&self, name: &str) -> Option<&TopicSpec> {
        self.topics.iter().find(|topic| topic.name == name)
    }

    /// Only the topics of the named services (`orders` keeps `orders.*`).
    pub fn only_services(&self, services: &[&str]) -> Self {
        let topics = self
            .topics
            .iter()
            .filter(|topic| {
                services
                    .iter()
                    .any(|service| topic.name.split('.').next() == Some(service))
            })
            .cloned()
            .collect();
        Self { topics }
    }

    /// The same topology with no topic above `max` partitions. For local
    /// brokers only: tansu's fetch cost grows with every partition a consumer
    /// reads, so a laptop stack runs few; production keeps the declared
    /// counts. Changelogs stay mirrors of their inputs (both are capped alike).
    pub fn capped(&self, max: i32) -> Self {
        let topics = self
            .topics
            .iter()
            .map(|topic| TopicSpec {
                partitions: topic.partitions.min(max.max(1)),
                ..topic.clone()
            })
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
                ..topic.clone()
            })
            .collect();
        Self { topics }
    }
}

fn resolve(defaults: &Defaults, entry: &TopicEntry) -> TopicSpec {
    let retention_ms = match entry.cleanup_policy {
        CleanupPolicy::Compact => None,
        CleanupPolicy::Delete => Some(entry.retention_ms.unwrap_or(defaults.retention_ms)),
    };
    TopicSpec {
        name: entry.name.clone(),
        partitions: entry.partitions.unwrap_or(defaults.partitions),
        replication_factor: entry
            .replication_factor
            .unwrap_or(defaults.replication_factor),
        cleanup_policy: entry.cleanup_policy,
        retention_ms,
    }
}

fn validate(entries: &[TopicEntry], topics: &[TopicSpec]) -> Result<(), TopologyError> {
    let mut seen = BTreeMap::new();
    for topic in topics {
        if topic.partitions < 1 || topic.replication_factor < 1 {
            return Err(TopologyError::Invalid(format!(
                "{}: partitions and replication_factor must be at least 1",
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
    for (entry, topic) in entries.iter().zip(topics) {
        let Some(input) = &entry.changelog_for else {
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

    #[test]
    fn embedded_topology_is_valid_and_sized_for_growth() {
        let topology = Topology::embedded().expect("embedded topology parses");
        let orders = topology.topic(topic::ORDERS_MESSAGES).expect("declared");
        assert_eq!(orders.partitions, 48);
        let changelog = topology.topic(topic::ORDERS_CHANGELOG).expect("declared");
        assert_eq!(changelog.cleanup_policy, CleanupPolicy::Compact);
        assert_eq!(changelog.retention_ms, None);
        for name in [
            topic::ORDERS_EVENTS,
            topic::ORDERS_DEAD_LETTER,
            topic::GATEWAY_REPLIES,
        ] {
            assert!(topology.topic(name).is_some(), "{name} is declared");
        }
    }

    #[test]
    fn changelog_must_mirror_its_input() {
        let text = r#"
            [defaults]
            partitions = 4
            replication_factor = 1
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
        let base = "[defaults]\npartitions = 1\nreplication_factor = 1\nretention_ms = 1\n";
        assert!(
            Topology::parse(&format!("{base}[[topics]]\nname = \"a\"\npartitons = 3\n")).is_err()
        );
        assert!(Topology::parse(&format!(
            "{base}[[topics]]\nname = \"a\"\n[[topics]]\nname = \"a\"\n"
        ))
        .is_err());
    }

    #[test]
    fn cap_lowers_only_larger_counts() {
        let topology = Topology::embedded().expect("parses").capped(4);
        assert_eq!(
            topology.topic(topic::ORDERS_MESSAGES).map(|t| t.partitions),
            Some(4)
        );
        assert_eq!(
            topology
                .topic(topic::ORDERS_CHANGELOG)
                .map(|t| t.partitions),
            Some(4)
        );
        assert_eq!(
            topology
                .topic(topic::ORDERS_DEAD_LETTER)
                .map(|t| t.partitions),
            Some(1)
        );
    }

    #[test]
    fn prefix_applies_to_every_name() {
        let topology = Topology::embedded().expect("parses").with_prefix("t1.");
        assert!(topology
            .topics()
            .iter()
            .all(|topic| topic.name.starts_with("t1.")));
        assert_eq!(
            TopicNames::new("t1.").name(topic::GATEWAY_REPLIES),
            "t1.gateway.replies"
        );
    }
}
