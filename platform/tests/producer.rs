//! The shared producer against a real broker (D2C_KAFKA_BROKERS, default the
//! test broker on 127.0.0.1:19092): every record's future resolves, `Ok` with
//! its offset once written, an error when it cannot be written, and an
//! error (never a hang) when its producer goes away first.

use d2c_platform::producer::KafkaProducer;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureRecord;
use std::time::Duration;

fn brokers() -> String {
    std::env::var("D2C_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn producer(message_timeout: Duration) -> KafkaProducer {
    let mut config =
        d2c_platform::kafka::producer_config(&brokers(), "producer-test", Duration::from_millis(1));
    config.set(
        "message.timeout.ms",
        message_timeout.as_millis().to_string(),
    );
    KafkaProducer::create(&config).expect("a producer")
}

async fn create_topic(topic: &str) {
    let admin: AdminClient<DefaultClientContext> =
        d2c_platform::kafka::client_config(&brokers(), "producer-test")
            .create()
            .expect("an admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create_topics answered");
    for result in created {
        result.expect("topic created");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_acknowledged_with_its_own_offset() {
    let topic = format!("producer-{}", uuid::Uuid::new_v4());
    create_topic(&topic).await;
    let producer = producer(Duration::from_secs(30));
    let mut futures = Vec::new();
    for n in 0..200 {
        let value = n.to_string();
        let record = FutureRecord::to(&topic)
            .partition(0)
            .key(&value)
            .payload(&value);
        futures.push(
            producer
                .send_result(record)
                .map_err(|(error, _)| error)
                .expect("enqueued"),
        );
    }
    let mut offsets = Vec::new();
    for future in futures {
        let delivery = future.await.expect("reported").expect("written");
        offsets.push(delivery.offset);
    }
    let first = offsets[0];
    assert_eq!(offsets, (first..first + 200).collect::<Vec<_>>());
    let delivered = producer
        .send(
            FutureRecord::to(&topic).partition(0).key("k").payload("v"),
            Duration::from_secs(5),
        )
        .await
        .expect("written");
    assert_eq!(delivered.offset, first + 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_written_resolves_with_an_error() {
    // The broker creates no topic on demand (auto.create.topics.enable=false).
    let topic = format!("producer-missing-{}", uuid::Uuid::new_v4());
    let producer = producer(Duration::from_secs(2));
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        producer.send(
            FutureRecord::to(&topic).key("k").payload("v"),
            Duration::from_secs(1),
        ),
    )
    .await
    .expect("the report came");
    assert!(report.is_err(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_producer_resolves_what_it_had_not_written() {
    let topic = format!("producer-missing-{}", uuid::Uuid::new_v4());
    let producer = producer(Duration::from_secs(300));
    let future = producer
        .send_result(FutureRecord::to(&topic).key("k").payload("v"))
        .map_err(|(error, _)| error)
        .expect("enqueued");
    drop(producer);
    let report = tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .expect("resolved after its producer went away");
    assert!(!matches!(report, Ok(Ok(_))), "{report:?}");
}
