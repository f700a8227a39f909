//! `apply` and `verify` against a real broker: D2C_KAFKA_BROKERS (default
//! 127.0.0.1:19092, the one `./dev test` starts). Each test works under a
//! random topic prefix, so tests share the broker without seeing each other.

use d2c_platform::kafka::client_config;
use d2c_topology::{
    ApplyOptions, Cluster, ConfigChange, Drift, DriftKind, Topology, TopologyError, TopologyFile,
};
use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

fn brokers() -> String {
    std::env::var("D2C_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn random_prefix() -> String {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("topo{random:016x}.")
}

/// An input, its changelog and an events topic, `partitions` each.
fn things(partitions: i32) -> String {
    format!(
        r#"
        [defaults]
        partitions = {partitions}
        replication_factor = 1
        min_insync_replicas = 1
        retention_ms = 3600000

        [[topics]]
        name = "things.messages"
        [[topics]]
        name = "things.changelog"
        cleanup_policy = "compact"
        changelog_for = "things.messages"
        [[topics]]
        name = "things.events"
        retention_ms = 7200000
        "#
    )
}

/// One test's view of the broker: its prefix, and the topics it made, which
/// it deletes when done.
struct TestCluster {
    prefix: String,
    cluster: Cluster,
    admin: AdminClient<DefaultClientContext>,
}

impl TestCluster {
    fn new() -> Self {
        let config = client_config(&brokers(), "d2c-topology-test");
        Self {
            prefix: random_prefix(),
            cluster: Cluster::new(&config, TIMEOUT).expect("admin client"),
            admin: config.create().expect("admin client"),
        }
    }

    fn topology(&self, text: &str) -> Topology {
        Topology::parse(text)
            .expect("test topology parses")
            .with_prefix(&self.prefix)
    }

    fn name(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new().operation_timeout(Some(TIMEOUT))
    }

    /// A topic made without `apply`, as an operator might.
    async fn create_by_hand(&self, logical: &str, partitions: i32, configs: &[(&str, &str)]) {
        let name = self.name(logical);
        let topic = configs.iter().fold(
            NewTopic::new(&name, partitions, TopicReplication::Fixed(1)),
            |topic, (key, value)| topic.set(key, value),
        );
        let results = self
            .admin
            .create_topics([&topic], &self.options())
            .await
            .expect("CreateTopics answered");
        for result in results {
            result.expect("topic created");
        }
        self.wait_for(logical, partitions).await;
    }

    async fn partitions(&self, logical: &str) -> Option<i32> {
        self.cluster
            .live_topics()
            .await
            .expect("metadata")
            .get(&self.name(logical))
            .map(|topic| topic.partitions)
    }

    async fn wait_for(&self, logical: &str, partitions: i32) {
        for _ in 0..100 {
            if self.partitions(logical).await == Some(partitions) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{logical} never showed {partitions} partitions");
    }

    /// Config key → (value, whether it is set on the topic itself rather
    /// than inherited from the broker).
    async fn configs(&self, logical: &str) -> BTreeMap<String, (String, bool)> {
        let name = self.name(logical);
        let results = self
            .admin
            .describe_configs([&ResourceSpecifier::Topic(&name)], &self.options())
            .await
            .expect("DescribeConfigs answered");
        let resource = results
            .into_iter()
            .next()
            .expect("one result")
            .expect("topic described");
        resource
            .entries
            .into_iter()
            .filter_map(|entry| {
                let on_topic = entry.source == ConfigSource::DynamicTopic;
                Some((entry.name, (entry.value?, on_topic)))
            })
            .collect()
    }

    async fn clean_up(self) {
        let live = self.cluster.live_topics().await.expect("metadata");
        let mine: Vec<&str> = live
            .keys()
            .filter(|name| name.starts_with(&self.prefix))
            .map(String::as_str)
            .collect();
        if !mine.is_empty() {
            self.admin
                .delete_topics(&mine, &self.options())
                .await
                .expect("DeleteTopics answered");
        }
    }
}

fn partition_drift(drift: &[Drift], topic: &str) -> Option<(i32, i32)> {
    drift.iter().find_map(|drift| match drift.kind {
        DriftKind::PartitionCount { declared, actual } if drift.topic == topic => {
            Some((declared, actual))
        }
        _ => None,
    })
}

/// `topology <args>` with the test's file and prefix: (exit code, stdout + stderr).
fn run_binary(test: &TestCluster, text: &str, args: &[&str]) -> (Option<i32>, String) {
    let file = std::env::temp_dir().join(format!("{}topology.toml", test.prefix));
    std::fs::write(&file, text).expect("write the topology file");
    let output = Command::new(env!("CARGO_BIN_EXE_topology"))
        .args(args)
        .arg("--file")
        .arg(&file)
        .args(["--prefix", &test.prefix, "--brokers", &brokers()])
        .env_remove("D2C_TOPOLOGY_PROFILE")
        .env_remove("D2C_TOPIC_PREFIX")
        .output()
        .expect("run topology");
    let _ = std::fs::remove_file(&file);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

#[tokio::test]
async fn apply_creates_topics_with_their_declared_configs() {
    let test = TestCluster::new();
    let topology = test.topology(&things(3));

    let applied = test
        .cluster
        .apply(&topology, ApplyOptions::default())
        .await
        .expect("apply");
    let mut created = applied.created.clone();
    created.sort();
    assert_eq!(
        created,
        vec![
            test.name("things.changelog"),
            test.name("things.events"),
            test.name("things.messages"),
        ]
    );
    assert!(
        applied.remaining.drift.is_empty(),
        "{:?}",
        applied.remaining
    );

    let declared = [
        (
            "things.messages",
            vec![
                ("cleanup.policy", "delete"),
                ("retention.ms", "3600000"),
                ("min.insync.replicas", "1"),
            ],
        ),
        (
            "things.changelog",
            vec![("cleanup.policy", "compact"), ("min.insync.replicas", "1")],
        ),
        (
            "things.events",
            vec![
                ("cleanup.policy", "delete"),
                ("retention.ms", "7200000"),
                ("min.insync.replicas", "1"),
            ],
        ),
    ];
    for (topic, expected) in declared {
        assert_eq!(test.partitions(topic).await, Some(3), "{topic}");
        let configs = test.configs(topic).await;
        for (key, value) in expected {
            assert_eq!(
                configs.get(key),
                Some(&(value.to_owned(), true)),
                "{topic} {key} is set on the topic"
            );
        }
    }
    test.clean_up().await;
}

#[tokio::test]
async fn apply_twice_changes_nothing_the_second_time() {
    let test = TestCluster::new();
    let topology = test.topology(&things(2));
    test.cluster
        .apply(&topology, ApplyOptions::default())
        .await
        .expect("first apply");

    let again = test
        .cluster
        .apply(&topology, ApplyOptions::default())
        .await
        .expect("second apply");
    assert!(again.created.is_empty(), "{:?}", again.created);
    assert!(again.grown.is_empty(), "{:?}", again.grown);
    assert!(again.reconfigured.is_empty(), "{:?}", again.reconfigured);
    assert!(again.remaining.drift.is_empty(), "{:?}", again.remaining);

    let inspection = test.cluster.inspect(&topology).await.expect("inspect");
    assert!(inspection.drift.is_empty(), "{:?}", inspection.drift);
    let (code, output) = run_binary(&test, &things(2), &["verify"]);
    assert_eq!(code, Some(0), "{output}");
    test.clean_up().await;
}

#[tokio::test]
async fn verify_reports_a_topic_made_with_another_partition_count() {
    let test = TestCluster::new();
    let text = things(4);
    let topology = test.topology(&text);
    test.create_by_hand(
        "things.events",
        2,
        &[("cleanup.policy", "delete"), ("retention.ms", "7200000")],
    )
    .await;

    let inspection = test.cluster.inspect(&topology).await.expect("inspect");
    assert_eq!(
        partition_drift(&inspection.drift, &test.name("things.events")),
        Some((4, 2)),
        "{:?}",
        inspection.drift
    );

    let (code, output) = run_binary(&test, &text, &["verify"]);
    assert_eq!(code, Some(1), "{output}");
    let events = test.name("things.events");
    assert!(
        output.contains(&format!("{events}: 2 partitions, declared 4")),
        "{output}"
    );
    test.clean_up().await;
}

#[tokio::test]
async fn verify_reports_config_drift_and_apply_corrects_it() {
    let test = TestCluster::new();
    let text = things(2);
    let topology = test.topology(&text);
    test.create_by_hand("things.changelog", 2, &[("cleanup.policy", "delete")])
        .await;
    let changelog = test.name("things.changelog");

    let inspection = test.cluster.inspect(&topology).await.expect("inspect");
    let cleanup_drift = Drift {
        topic: changelog.clone(),
        kind: DriftKind::Config {
            key: "cleanup.policy".into(),
            declared: "compact".into(),
            actual: "delete".into(),
        },
    };
    assert!(
        inspection.drift.contains(&cleanup_drift),
        "{:?}",
        inspection.drift
    );
    let (code, output) = run_binary(&test, &text, &["verify"]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains(&format!(
            "{changelog}: cleanup.policy is delete, declared compact"
        )),
        "{output}"
    );

    let applied = test
        .cluster
        .apply(&topology, ApplyOptions::default())
        .await
        .expect("apply");
    assert!(
        applied.reconfigured.contains(&ConfigChange {
            topic: changelog.clone(),
            key: "cleanup.policy".into(),
            from: "delete".into(),
            to: "compact".into(),
        }),
        "{:?}",
        applied.reconfigured
    );
    assert!(
        applied.remaining.drift.is_empty(),
        "{:?}",
        applied.remaining
    );
    let configs = test.configs("things.changelog").await;
    assert_eq!(
        configs
            .get("cleanup.policy")
            .map(|(value, _)| value.as_str()),
        Some("compact")
    );
    let (code, output) = run_binary(&test, &text, &["verify"]);
    assert_eq!(code, Some(0), "{output}");
    test.clean_up().await;
}

#[tokio::test]
async fn apply_grows_partitions_only_when_forced_and_changelogs_with_their_inputs() {
    let test = TestCluster::new();
    test.cluster
        .apply(&test.topology(&things(2)), ApplyOptions::default())
        .await
        .expect("apply at 2 partitions");
    let grown_text = things(5);
    let grown = test.topology(&grown_text);

    let error = test
        .cluster
        .apply(&grown, ApplyOptions::default())
        .await
        .expect_err("a partition change needs force");
    let TopologyError::PartitionChangeRefused { changes } = &error else {
        panic!("unexpected error: {error}");
    };
    assert_eq!(changes.len(), 3, "{error}");
    assert!(
        error
            .to_string()
            .contains("keys would move to other partitions"),
        "{error}"
    );
    let (code, output) = run_binary(&test, &grown_text, &["apply"]);
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("--force-partitions"), "{output}");
    for topic in ["things.messages", "things.changelog", "things.events"] {
        assert_eq!(test.partitions(topic).await, Some(2), "{topic} untouched");
    }

    let applied = test
        .cluster
        .apply(
            &grown,
            ApplyOptions {
                force_partitions: true,
            },
        )
        .await
        .expect("forced apply");
    let order: Vec<&str> = applied
        .grown
        .iter()
        .map(|change| change.topic.as_str())
        .collect();
    let position = |logical: &str| order.iter().position(|topic| *topic == test.name(logical));
    let (changelog, messages) = (position("things.changelog"), position("things.messages"));
    assert!(
        changelog.is_some() && messages.is_some() && changelog < messages,
        "both grow, the changelog first: {order:?}"
    );
    assert!(
        applied.remaining.drift.is_empty(),
        "{:?}",
        applied.remaining
    );
    for topic in ["things.messages", "things.changelog", "things.events"] {
        assert_eq!(test.partitions(topic).await, Some(5), "{topic} grown");
    }
    test.clean_up().await;
}

#[tokio::test]
async fn fewer_partitions_are_refused_even_with_force() {
    let test = TestCluster::new();
    test.cluster
        .apply(&test.topology(&things(4)), ApplyOptions::default())
        .await
        .expect("apply at 4 partitions");
    let shrunk = test.topology(&things(2));

    let inspection = test.cluster.inspect(&shrunk).await.expect("inspect");
    assert_eq!(
        partition_drift(&inspection.drift, &test.name("things.messages")),
        Some((2, 4))
    );
    let error = test
        .cluster
        .apply(
            &shrunk,
            ApplyOptions {
                force_partitions: true,
            },
        )
        .await
        .expect_err("Kafka cannot shrink a topic");
    let TopologyError::PartitionShrink { changes } = &error else {
        panic!("unexpected error: {error}");
    };
    assert!(
        changes
            .iter()
            .any(|change| change.topic == test.name("things.messages")
                && (change.live, change.declared) == (4, 2)),
        "{error}"
    );
    assert!(
        error.to_string().contains("cannot remove partitions"),
        "{error}"
    );
    assert_eq!(test.partitions("things.messages").await, Some(4));
    test.clean_up().await;
}

#[tokio::test]
async fn a_profile_for_a_bigger_cluster_is_refused_before_it_blocks_writes() {
    let test = TestCluster::new();
    let text = r#"
        [defaults]
        partitions = 1
        replication_factor = 3
        min_insync_replicas = 2
        retention_ms = 3600000
        [profiles.one-broker]
        replication_factor = 1
        min_insync_replicas = 1
        [[topics]]
        name = "things.messages"
    "#;
    let file = TopologyFile::parse(text).expect("parses");
    let resolve = |profile| {
        file.resolve(profile)
            .expect("resolves")
            .with_prefix(&test.prefix)
    };
    test.cluster
        .apply(&resolve(Some("one-broker")), ApplyOptions::default())
        .await
        .expect("apply for one broker");

    let error = test
        .cluster
        .apply(&resolve(None), ApplyOptions::default())
        .await
        .expect_err("min.insync.replicas 2 on one replica is refused");
    assert!(
        matches!(error, TopologyError::TooFewReplicas { .. }),
        "{error}"
    );
    assert_eq!(
        test.configs("things.messages")
            .await
            .get("min.insync.replicas")
            .map(|(value, _)| value.as_str()),
        Some("1")
    );
    test.clean_up().await;
}
