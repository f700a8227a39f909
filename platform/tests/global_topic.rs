//! A global table's feed against a real broker (D2C_KAFKA_BROKERS, default
//! the test broker on 127.0.0.1:19092): it applies every record of every
//! partition from the beginning, follows partitions added later, and
//! `catch_up` returns only once everything written before it is applied.

use d2c_platform::global::{GlobalSink, GlobalTopic, GlobalTopicSettings, StartAt};
use d2c_platform::kafka::envelope_headers;
use d2c_proto::Envelope;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn brokers() -> String {
    std::env::var("D2C_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl GlobalSink for Seen {
    fn apply(&self, envelope: &Envelope, payload: &[u8]) {
        assert_eq!(envelope.message_type, "test.Value");
        self.0
            .lock()
            .expect("not poisoned")
            .push(String::from_utf8_lossy(payload).into_owned());
    }
}

/// Retried while the producer's metadata does not know the partition yet
/// (a topic or partition created a moment ago).
async fn produce(producer: &FutureProducer, topic: &str, partition: i32, value: &str) {
    let envelope = Envelope::new("test.Value".into(), uuid::Uuid::new_v4(), 1);
    let mut last = None;
    for _ in 0..50 {
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key(value)
            .payload(value)
            .headers(envelope_headers(&envelope));
        match producer
            .send(record, Timeout::After(Duration::from_secs(10)))
            .await
        {
            Ok(_) => return,
            Err((error, _)) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("producing to {topic}[{partition}] failed: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_reads_every_partition_follows_new_ones_and_catches_up() {
    let topic = format!("global-{}", uuid::Uuid::new_v4());
    let admin: AdminClient<DefaultClientContext> =
        d2c_platform::kafka::client_config(&brokers(), "global-test")
            .create()
            .expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    admin
        .create_topics(
            &[NewTopic::new(&topic, 2, TopicReplication::Fixed(1))],
            &options,
        )
        .await
        .expect("create")
        .into_iter()
        .for_each(|result| {
            result.expect("topic created");
        });
    let producer: FutureProducer = d2c_platform::kafka::client_config(&brokers(), "global-test")
        .set("topic.metadata.refresh.interval.ms", "200")
        .create()
        .expect("producer");
    produce(&producer, &topic, 0, "before-0").await;
    produce(&producer, &topic, 1, "before-1").await;

    let seen = Arc::new(Seen::default());
    let feed = GlobalTopic::start(
        GlobalTopicSettings {
            brokers: brokers(),
            client_id: "global-test".into(),
            topic: topic.clone(),
            start: StartAt::Beginning,
            fetch_wait: Duration::from_millis(100),
            stats_interval: Duration::ZERO,
            refresh: Duration::from_millis(300),
        },
        seen.clone(),
    )
    .expect("feed");
    let loaded = tokio::task::block_in_place(|| feed.load(Duration::from_secs(30)));
    loaded.expect("loaded");
    let mut values = seen.0.lock().expect("not poisoned").clone();
    values.sort();
    assert_eq!(
        values,
        ["before-0", "before-1"],
        "load waits for what was there"
    );

    produce(&producer, &topic, 1, "after-1").await;
    let caught_up = tokio::task::block_in_place(|| feed.catch_up(Duration::from_secs(10)));
    assert!(caught_up.expect("end offsets"), "caught up within 10 s");
    assert!(seen
        .0
        .lock()
        .expect("not poisoned")
        .contains(&"after-1".to_owned()));

    // CreatePartitions: the new partition is followed from its beginning.
    admin
        .create_partitions(&[NewPartitions::new(&topic, 3)], &options)
        .await
        .expect("grow")
        .into_iter()
        .for_each(|result| {
            result.expect("partitions added");
        });
    produce(&producer, &topic, 2, "new-partition").await;
    let mut found = false;
    for _ in 0..50 {
        if seen
            .0
            .lock()
            .expect("not poisoned")
            .contains(&"new-partition".to_owned())
        {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(found, "a record of a partition added later is applied");
    drop(feed);
    let _ = admin.delete_topics(&[&topic], &options).await;
}
