//! Comparing the declared topology with a live cluster, and creating what is
//! missing. Only CreateTopics, Metadata and DescribeConfigs are sent: never
//! DeleteTopics or CreatePartitions (tansu, our local broker, lacks or
//! mishandles them, and neither belongs in an automatic tool anyway).

use crate::{TopicSpec, Topology, TopologyError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftKind {
    Missing,
    PartitionCount {
        declared: i32,
        actual: i32,
    },
    Config {
        key: String,
        declared: String,
        actual: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub topic: String,
    pub kind: DriftKind,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            DriftKind::Missing => write!(f, "{}: missing", self.topic),
            DriftKind::PartitionCount { declared, actual } => write!(
                f,
                "{}: {actual} partitions, declared {declared} (fix by hand: partitions cannot be removed, and adding them re-keys entities)",
                self.topic
            ),
            DriftKind::Config { key, declared, actual } => {
                write!(f, "{}: {key}={actual}, declared {declared}", self.topic)
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Inspection {
    pub drift: Vec<Drift>,
    /// Things that could not be checked (e.g. a broker without DescribeConfigs).
    pub notes: Vec<String>,
}

fn admin(brokers: &str) -> Result<AdminClient<DefaultClientContext>, TopologyError> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", "d2c-topology")
        .create()?)
}

/// Topic name → partition count, from a real Metadata request.
pub async fn topic_partitions(
    brokers: &str,
    timeout: Duration,
) -> Result<BTreeMap<String, i32>, TopologyError> {
    let admin = admin(brokers)?;
    let metadata = tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, timeout))
        .await
        .map_err(|join| TopologyError::Invalid(format!("metadata task failed: {join}")))??;
    Ok(metadata
        .topics()
        .iter()
        .filter(|topic| topic.error().is_none())
        .map(|topic| (topic.name().to_owned(), topic.partitions().len() as i32))
        .collect())
}

pub async fn inspect(
    brokers: &str,
    topology: &Topology,
    timeout: Duration,
) -> Result<Inspection, TopologyError> {
    let live = topic_partitions(brokers, timeout).await?;
    let mut inspection = Inspection::default();
    let mut existing = Vec::new();
    for spec in topology.topics() {
        match live.get(&spec.name) {
            None => inspection.drift.push(Drift {
                topic: spec.name.clone(),
                kind: DriftKind::Missing,
            }),
            Some(actual) if *actual != spec.partitions => inspection.drift.push(Drift {
                topic: spec.name.clone(),
                kind: DriftKind::PartitionCount {
                    declared: spec.partitions,
                    actual: *actual,
                },
            }),
            Some(_) => existing.push(spec),
        }
    }
    check_configs(brokers, &existing, timeout, &mut inspection).await?;
    Ok(inspection)
}

async fn check_configs(
    brokers: &str,
    topics: &[&TopicSpec],
    timeout: Duration,
    inspection: &mut Inspection,
) -> Result<(), TopologyError> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin = admin(brokers)?;
    let resources: Vec<ResourceSpecifier> = topics
        .iter()
        .map(|topic| ResourceSpecifier::Topic(&topic.name))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let results = match admin.describe_configs(&resources, &options).await {
        Ok(results) => results,
        Err(error) => {
            inspection.notes.push(format!(
                "topic configs not verified: DescribeConfigs failed: {error}"
            ));
            return Ok(());
        }
    };
    for (spec, result) in topics.iter().zip(results) {
        let resource = match result {
            Ok(resource) => resource,
            Err(error) => {
                inspection
                    .notes
                    .push(format!("{}: configs not verified: {error}", spec.name));
                continue;
            }
        };
        for (key, declared) in spec.configs() {
            // A broker that does not report a key is not drift we can act on.
            let Some(actual) = resource.get(key).and_then(|entry| entry.value.clone()) else {
                continue;
            };
            if actual != declared {
                inspection.drift.push(Drift {
                    topic: spec.name.clone(),
                    kind: DriftKind::Config {
                        key: key.to_owned(),
                        declared,
                        actual,
                    },
                });
            }
        }
    }
    Ok(())
}

/// Create every declared topic that is missing; returns the names created and
/// the drift that remains (which needs a human).
pub async fn apply(
    brokers: &str,
    topology: &Topology,
    timeout: Duration,
) -> Result<(Vec<String>, Inspection), TopologyError> {
    let before = inspect(brokers, topology, timeout).await?;
    let missing: Vec<&TopicSpec> = before
        .drift
        .iter()
        .filter(|drift| drift.kind == DriftKind::Missing)
        .filter_map(|drift| topology.topic(&drift.topic))
        .collect();
    let mut created = Vec::new();
    if !missing.is_empty() {
        let configs: Vec<Vec<(&'static str, String)>> =
            missing.iter().map(|spec| spec.configs()).collect();
        let new_topics: Vec<NewTopic> = missing
            .iter()
            .zip(&configs)
            .map(|(spec, configs)| {
                configs.iter().fold(
                    NewTopic::new(
                        &spec.name,
                        spec.partitions,
                        TopicReplication::Fixed(spec.replication_factor),
                    ),
                    |topic, (key, value)| topic.set(key, value),
                )
            })
            .collect();
        let admin = admin(brokers)?;
        let options = AdminOptions::new().operation_timeout(Some(timeout));
        for result in admin.create_topics(&new_topics, &options).await? {
            match result {
                Ok(name) => created.push(name),
                // Another `apply` won the race: the end state is what we want.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(TopologyError::Invalid(format!(
                        "creating {name} failed: {code}"
                    )))
                }
            }
        }
    }
    let after = wait_for_topics(brokers, topology, timeout).await?;
    Ok((created, after))
}

/// Metadata may lag a CreateTopics answer briefly; look again until the new
/// topics show up or the timeout passes.
async fn wait_for_topics(
    brokers: &str,
    topology: &Topology,
    timeout: Duration,
) -> Result<Inspection, TopologyError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let inspection = inspect(brokers, topology, timeout).await?;
        let still_missing = inspection
            .drift
            .iter()
            .any(|drift| drift.kind == DriftKind::Missing);
        if !still_missing || tokio::time::Instant::now() >= deadline {
            return Ok(inspection);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
