//! Comparing the declared topology with a live cluster, and bringing the
//! cluster in line: creating missing topics (CreateTopics), correcting topic
//! configs (AlterConfigs) and, only when asked, growing topics
//! (CreatePartitions). Never DeleteTopics: a topology change must not lose
//! data. A partition-count change is refused by default because it moves keys
//! to other partitions, so entities change owner and their state (in the
//! changelog, partition for partition) is left on the wrong one.

use crate::{TopicSpec, Topology, TopologyError};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftKind {
    Missing,
    PartitionCount {
        declared: i32,
        actual: i32,
    },
    /// The fewest replicas any partition of the topic has.
    ReplicationFactor {
        declared: i32,
        actual: i32,
    },
    Config {
        key: String,
        declared: String,
        actual: String,
    },
    /// Partitions without a leader after `apply` waited its timeout.
    NoLeader {
        partitions: i32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub topic: String,
    pub kind: DriftKind,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let topic = &self.topic;
        match &self.kind {
            DriftKind::Missing => write!(f, "{topic}: missing"),
            DriftKind::PartitionCount { declared, actual } if declared > actual => write!(
                f,
                "{topic}: {actual} partitions, declared {declared} (`apply --force-partitions` grows it, moving keys to other partitions)"
            ),
            DriftKind::PartitionCount { declared, actual } => write!(
                f,
                "{topic}: {actual} partitions, declared {declared} (Kafka cannot remove partitions)"
            ),
            DriftKind::ReplicationFactor { declared, actual } => write!(
                f,
                "{topic}: replication factor {actual}, declared {declared} (`apply` cannot change it: reassign the partitions)"
            ),
            DriftKind::Config { key, declared, actual } => {
                write!(f, "{topic}: {key} is {actual}, declared {declared}")
            }
            DriftKind::NoLeader { partitions } => write!(
                f,
                "{topic}: {partitions} partitions have no leader (brokers down or still electing)"
            ),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Inspection {
    pub drift: Vec<Drift>,
}

impl Inspection {
    fn has(&self, wanted: impl Fn(&DriftKind) -> bool) -> bool {
        self.drift.iter().any(|drift| wanted(&drift.kind))
    }
}

/// A topic as the cluster's metadata describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveTopic {
    pub partitions: i32,
    /// The fewest replicas of any partition.
    pub replication_factor: i32,
    /// Partitions with no leader yet (just created, or their broker is
    /// down): clients get NotLeaderForPartition there.
    pub leaderless: i32,
}

/// A topic's partition count going from `live` to `declared`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionChange {
    pub topic: String,
    pub live: i32,
    pub declared: i32,
}

impl PartitionChange {
    pub(crate) fn list(changes: &[PartitionChange]) -> String {
        changes
            .iter()
            .map(|change| {
                format!(
                    "{}: {} live, {} declared",
                    change.topic, change.live, change.declared
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A topic config `apply` set back to its declared value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    pub topic: String,
    pub key: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Grow topics declared with more partitions than they have.
    pub force_partitions: bool,
}

/// What `apply` changed, and the drift it left (which needs a human).
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub created: Vec<String>,
    pub grown: Vec<PartitionChange>,
    pub reconfigured: Vec<ConfigChange>,
    pub remaining: Inspection,
}

/// An admin connection to one cluster.
pub struct Cluster {
    // Shared with the blocking task that waits for a Metadata answer.
    admin: Arc<AdminClient<DefaultClientContext>>,
    timeout: Duration,
}

impl Cluster {
    /// `config` is the client's base (brokers, client id, passthrough
    /// properties); every request waits at most `timeout`. Nothing is sent
    /// until the first request.
    pub fn new(config: &ClientConfig, timeout: Duration) -> Result<Self, TopologyError> {
        Ok(Self {
            admin: Arc::new(config.create().map_err(kafka("admin client setup"))?),
            timeout,
        })
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout))
    }

    /// Every topic on the cluster, from a Metadata request for all topics (a
    /// request naming a missing topic could make the broker auto-create it).
    pub async fn live_topics(&self) -> Result<BTreeMap<String, LiveTopic>, TopologyError> {
        let admin = Arc::clone(&self.admin);
        let timeout = self.timeout;
        let metadata =
            tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, timeout))
                .await?
                .map_err(kafka("Metadata"))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|topic| topic.error().is_none())
            .map(|topic| {
                let partitions = topic.partitions();
                let replication_factor = partitions
                    .iter()
                    .map(|partition| partition.replicas().len())
                    .min()
                    .unwrap_or(0);
                let leaderless = partitions
                    .iter()
                    .filter(|partition| partition.leader() < 0 || partition.error().is_some())
                    .count();
                (
                    topic.name().to_owned(),
                    LiveTopic {
                        partitions: count(partitions.len()),
                        replication_factor: count(replication_factor),
                        leaderless: count(leaderless),
                    },
                )
            })
            .collect())
    }

    /// Every difference between `topology` and the cluster.
    pub async fn inspect(&self, topology: &Topology) -> Result<Inspection, TopologyError> {
        let live = self.live_topics().await?;
        self.inspect_live(topology, &live).await
    }

    /// [`Cluster::inspect`] against topics already read from the cluster.
    async fn inspect_live(
        &self,
        topology: &Topology,
        live: &BTreeMap<String, LiveTopic>,
    ) -> Result<Inspection, TopologyError> {
        let mut inspection = Inspection::default();
        let mut existing = Vec::new();
        for spec in topology.topics() {
            let Some(actual) = live.get(&spec.name) else {
                inspection.drift.push(Drift {
                    topic: spec.name.clone(),
                    kind: DriftKind::Missing,
                });
                continue;
            };
            if actual.partitions != spec.partitions {
                inspection.drift.push(Drift {
                    topic: spec.name.clone(),
                    kind: DriftKind::PartitionCount {
                        declared: spec.partitions,
                        actual: actual.partitions,
                    },
                });
            }
            if actual.replication_factor != spec.replication_factor {
                inspection.drift.push(Drift {
                    topic: spec.name.clone(),
                    kind: DriftKind::ReplicationFactor {
                        declared: spec.replication_factor,
                        actual: actual.replication_factor,
                    },
                });
            }
            existing.push(spec);
        }
        self.check_configs(&existing, &mut inspection).await?;
        Ok(inspection)
    }

    async fn check_configs(
        &self,
        topics: &[&TopicSpec],
        inspection: &mut Inspection,
    ) -> Result<(), TopologyError> {
        if topics.is_empty() {
            return Ok(());
        }
        let resources: Vec<ResourceSpecifier> = topics
            .iter()
            .map(|topic| ResourceSpecifier::Topic(&topic.name))
            .collect();
        let results = self
            .admin
            .describe_configs(&resources, &self.options())
            .await
            .map_err(kafka("DescribeConfigs"))?;
        for (spec, result) in topics.iter().zip(results) {
            let resource = match result {
                Ok(resource) => resource,
                // Deleted since the Metadata answer, or created so recently
                // that this broker has not caught up: missing, for now.
                Err(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                    inspection.drift.push(Drift {
                        topic: spec.name.clone(),
                        kind: DriftKind::Missing,
                    });
                    continue;
                }
                Err(code) => {
                    return Err(TopologyError::Topic {
                        operation: "DescribeConfigs",
                        topic: spec.name.clone(),
                        code,
                    })
                }
            };
            for (key, declared) in spec.configs() {
                let actual = resource
                    .get(key)
                    .and_then(|entry| entry.value.clone())
                    .unwrap_or_else(|| "(not reported)".to_owned());
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

    /// Brings the cluster in line with `topology`: creates missing topics,
    /// sets drifted configs back, and grows topics only with
    /// `force_partitions`. A partition change it refuses, or one Kafka cannot
    /// make (fewer partitions), fails the whole call before anything changes.
    pub async fn apply(
        &self,
        topology: &Topology,
        options: ApplyOptions,
    ) -> Result<Applied, TopologyError> {
        let before = self.inspect(topology).await?;
        let (shrinks, growths): (Vec<PartitionChange>, Vec<PartitionChange>) = before
            .drift
            .iter()
            .filter_map(|drift| match drift.kind {
                DriftKind::PartitionCount { declared, actual } => Some(PartitionChange {
                    topic: drift.topic.clone(),
                    live: actual,
                    declared,
                }),
                _ => None,
            })
            .partition(|change| change.declared < change.live);
        if !shrinks.is_empty() {
            return Err(TopologyError::PartitionShrink { changes: shrinks });
        }
        if !growths.is_empty() && !options.force_partitions {
            return Err(TopologyError::PartitionChangeRefused { changes: growths });
        }
        // Kafka accepts a min.insync.replicas above the replica count, and then
        // refuses every acks=all write: the mark of a profile meant for a
        // bigger cluster.
        let too_few_replicas: Vec<String> = before
            .drift
            .iter()
            .filter_map(|drift| match drift.kind {
                DriftKind::ReplicationFactor { actual, .. } => topology
                    .topic(&drift.topic)
                    .filter(|spec| actual < spec.min_insync_replicas)
                    .map(|spec| {
                        format!(
                            "{} has {actual} replicas, min.insync.replicas {} declared",
                            spec.name, spec.min_insync_replicas
                        )
                    }),
                _ => None,
            })
            .collect();
        if !too_few_replicas.is_empty() {
            return Err(TopologyError::TooFewReplicas {
                topics: too_few_replicas,
            });
        }

        let mut applied = Applied {
            created: self.create(topology, &before).await?,
            ..Applied::default()
        };
        applied.grown = self.grow(topology, growths).await?;
        applied.reconfigured = self.reconfigure(topology, &before).await?;
        applied.remaining = self.settle(topology).await?;
        Ok(applied)
    }

    async fn create(
        &self,
        topology: &Topology,
        before: &Inspection,
    ) -> Result<Vec<String>, TopologyError> {
        let missing: Vec<&TopicSpec> = before
            .drift
            .iter()
            .filter(|drift| drift.kind == DriftKind::Missing)
            .filter_map(|drift| topology.topic(&drift.topic))
            .collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
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
        let mut created = Vec::new();
        let results = self
            .admin
            .create_topics(&new_topics, &self.options())
            .await
            .map_err(kafka("CreateTopics"))?;
        for result in results {
            match result {
                Ok(name) => created.push(name),
                // Another `apply` won the race; `settle` checks what it made.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(TopologyError::Topic {
                        operation: "CreateTopics",
                        topic,
                        code,
                    })
                }
            }
        }
        Ok(created)
    }

    async fn grow(
        &self,
        topology: &Topology,
        growths: Vec<PartitionChange>,
    ) -> Result<Vec<PartitionChange>, TopologyError> {
        // Changelogs first: once an input partition exists, its processor
        // writes state to the changelog partition of the same number, which
        // must exist by then. CreatePartitions is not atomic across topics.
        let (changelogs, inputs): (Vec<PartitionChange>, Vec<PartitionChange>) =
            growths.into_iter().partition(|change| {
                topology
                    .topic(&change.topic)
                    .is_some_and(|spec| spec.changelog_for.is_some())
            });
        let mut grown = Vec::new();
        for batch in [changelogs, inputs] {
            if batch.is_empty() {
                continue;
            }
            let requests: Vec<NewPartitions> = batch
                .iter()
                .map(|change| NewPartitions::new(&change.topic, count_usize(change.declared)))
                .collect();
            let results = self
                .admin
                .create_partitions(&requests, &self.options())
                .await
                .map_err(kafka("CreatePartitions"))?;
            for result in results {
                if let Err((topic, code)) = result {
                    return Err(TopologyError::Topic {
                        operation: "CreatePartitions",
                        topic,
                        code,
                    });
                }
            }
            grown.extend(batch);
        }
        Ok(grown)
    }

    async fn reconfigure(
        &self,
        topology: &Topology,
        before: &Inspection,
    ) -> Result<Vec<ConfigChange>, TopologyError> {
        let changes: Vec<ConfigChange> = before
            .drift
            .iter()
            .filter_map(|drift| match &drift.kind {
                DriftKind::Config {
                    key,
                    declared,
                    actual,
                } => Some(ConfigChange {
                    topic: drift.topic.clone(),
                    key: key.clone(),
                    from: actual.clone(),
                    to: declared.clone(),
                }),
                _ => None,
            })
            .collect();
        let topics: Vec<&TopicSpec> = topology
            .topics()
            .iter()
            .filter(|spec| changes.iter().any(|change| change.topic == spec.name))
            .collect();
        if topics.is_empty() {
            return Ok(changes);
        }
        // AlterConfigs replaces a topic's whole config (keys it does not name
        // go back to the broker default), so each request carries every
        // config the file declares for that topic.
        let configs: Vec<Vec<(&'static str, String)>> =
            topics.iter().map(|spec| spec.configs()).collect();
        let requests: Vec<AlterConfig> = topics
            .iter()
            .zip(&configs)
            .map(|(spec, configs)| {
                configs.iter().fold(
                    AlterConfig::new(ResourceSpecifier::Topic(&spec.name)),
                    |request, (key, value)| request.set(key, value),
                )
            })
            .collect();
        let results = self
            .admin
            .alter_configs(&requests, &self.options())
            .await
            .map_err(kafka("AlterConfigs"))?;
        for (spec, result) in topics.iter().zip(results) {
            if let Err((_, code)) = result {
                return Err(TopologyError::Topic {
                    operation: "AlterConfigs",
                    topic: spec.name.clone(),
                    code,
                });
            }
        }
        Ok(changes)
    }

    /// Metadata and configs may lag the answers to CreateTopics,
    /// CreatePartitions and AlterConfigs briefly; look again until what
    /// `apply` changes shows and every partition has a leader (a service
    /// started right after `apply` would otherwise get NotLeaderForPartition
    /// from a new topic), or the timeout passes. Replication-factor drift is
    /// not waited for: `apply` cannot change it.
    async fn settle(&self, topology: &Topology) -> Result<Inspection, TopologyError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            // One Metadata answer serves both the drift and the leaders.
            let live = self.live_topics().await?;
            let mut inspection = self.inspect_live(topology, &live).await?;
            let pending =
                inspection.has(|kind| !matches!(kind, DriftKind::ReplicationFactor { .. }));
            let leaderless = leaderless(topology, &live);
            let timed_out = tokio::time::Instant::now() >= deadline;
            if timed_out {
                inspection
                    .drift
                    .extend(leaderless.into_iter().map(|(topic, partitions)| Drift {
                        topic,
                        kind: DriftKind::NoLeader { partitions },
                    }));
                return Ok(inspection);
            }
            if !pending && leaderless.is_empty() {
                return Ok(inspection);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Declared topics with partitions that have no leader yet, and how many.
fn leaderless(topology: &Topology, live: &BTreeMap<String, LiveTopic>) -> Vec<(String, i32)> {
    topology
        .topics()
        .iter()
        .filter_map(|spec| {
            let topic = live.get(&spec.name)?;
            (topic.leaderless > 0).then(|| (spec.name.clone(), topic.leaderless))
        })
        .collect()
}

fn kafka(operation: &'static str) -> impl FnOnce(KafkaError) -> TopologyError {
    move |source| TopologyError::Kafka { operation, source }
}

/// Kafka counts partitions and replicas in i32; a cluster never has more.
fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Declared counts are validated to be at least 1.
fn count_usize(n: i32) -> usize {
    usize::try_from(n).unwrap_or(0)
}
