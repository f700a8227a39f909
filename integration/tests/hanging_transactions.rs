//! A hanging transaction (open on a partition, known to no coordinator)
//! stops every read_committed consumer of that partition for good. The
//! platform's sweeper (`kafka/HangingTransactions.java`) aborts it, and
//! leaves alone a live transaction that is just as old but that its
//! coordinator still holds.
//!
//! On a broker of the test's own: making the orphan turns partition
//! verification off there.

use d2c_integration::app::until;
use d2c_integration::harness::{kafka_tool_output, KafkaNode, Platform, Service};
use d2c_integration::kafka::{produce_raw, read_all, Record};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::path::Path;
use std::time::Duration;

const MIN_AGE_MS: u64 = 3_000;

fn orphan_program() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("java/OrphanTransaction.java")
        .display()
        .to_string()
}

async fn aborted(sweeper: &Service) -> f64 {
    sweeper
        .metric("d2c_sweeper_aborted_transactions_total")
        .await
        .unwrap_or(-1.0)
}

async fn sweeps(sweeper: &Service) -> f64 {
    sweeper
        .metric_where("d2c_sweeper_sweeps_total", r#"outcome="ok""#)
        .await
        .unwrap_or(0.0)
}

/// A transaction of a real transactional producer, left open on `partition`.
fn live_transaction(
    brokers: &str,
    topic: &str,
    partition: i32,
) -> ThreadedProducer<DefaultProducerContext> {
    let producer: ThreadedProducer<DefaultProducerContext> =
        d2c_platform::kafka::client_config(brokers, "d2c-test-live-transaction")
            .set("transactional.id", format!("live-{}", uuid::Uuid::new_v4()))
            .set("transaction.timeout.ms", "300000")
            .create()
            .expect("producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init");
    producer.begin_transaction().expect("begin");
    producer
        .send(
            BaseRecord::to(topic)
                .partition(partition)
                .key("live")
                .payload("live"),
        )
        .map_err(|(error, _)| error)
        .expect("send");
    producer.flush(Duration::from_secs(10)).expect("flush");
    producer
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweeper_aborts_a_hanging_transaction_and_leaves_a_live_one() {
    let work = tempfile::tempdir().expect("tempdir");
    let node = KafkaNode::start(&work.path().join("broker"))
        .await
        .expect("broker");
    let platform = Platform::on_broker(&["orders"], node.brokers())
        .await
        .expect("platform");
    let brokers = node.brokers();
    let topic = platform.topic("orders.messages");

    produce_raw(&brokers, &topic, "after", b"first", &[])
        .await
        .expect("first");
    let first = read_all(&brokers, &topic, Duration::from_secs(10)).expect("read");
    let held = first[0].partition;
    let live = (held + 1) % d2c_integration::harness::test_partitions();

    kafka_tool_output(&[&orphan_program(), &brokers, &topic, &held.to_string()])
        .await
        .expect("orphan transaction");
    produce_raw(&brokers, &topic, "after", b"second", &[])
        .await
        .expect("second");
    // Read committed, a partition ends at its last stable offset: the
    // orphan's start, so "second", written after it, stays out of sight.
    let during = read_all(&brokers, &topic, Duration::from_secs(10)).expect("read");
    assert_eq!(
        payloads(&during),
        vec![(held, "first".to_owned())],
        "the orphan transaction should hold partition {held} back"
    );
    let producer = live_transaction(&brokers, &topic, live);

    let sweeper = platform
        .sweeper(&[
            ("D2C_SWEEPER_INTERVAL_MS", "500".into()),
            ("D2C_SWEEPER_MIN_AGE_MS", MIN_AGE_MS.to_string()),
        ])
        .await
        .expect("sweeper");
    until(Duration::from_secs(60), "the orphan aborted", || async {
        aborted(&sweeper).await >= 1.0
    })
    .await;
    // The live transaction is past the minimum age by now: a sweeper that
    // went by age alone would abort it in the next sweeps.
    let seen = sweeps(&sweeper).await;
    until(Duration::from_secs(30), "three more sweeps", || async {
        sweeps(&sweeper).await >= seen + 3.0
    })
    .await;
    let held_age = sweeper
        .metric_where(
            "d2c_sweeper_open_transaction_age_seconds",
            &format!(r#"partition="{live}""#),
        )
        .await
        .expect("metrics");
    assert!(
        held_age * 1000.0 > MIN_AGE_MS as f64,
        "the live transaction shows as open, {held_age} s"
    );
    assert_eq!(aborted(&sweeper).await, 1.0, "only the orphan is aborted");

    producer
        .commit_transaction(Duration::from_secs(30))
        .expect("the live transaction commits");
    let records = read_all(&brokers, &topic, Duration::from_secs(10))
        .expect("every partition readable again");
    assert_eq!(
        payloads(&records),
        sorted(vec![
            (held, "first".to_owned()),
            (held, "second".to_owned()),
            (live, "live".to_owned()),
        ]),
        "the orphan's record is gone, the others are all there"
    );
}

/// (partition, payload) of each record, sorted.
fn payloads(records: &[Record]) -> Vec<(i32, String)> {
    sorted(
        records
            .iter()
            .map(|record| {
                (
                    record.partition,
                    String::from_utf8_lossy(&record.payload).into_owned(),
                )
            })
            .collect(),
    )
}

fn sorted(mut pairs: Vec<(i32, String)>) -> Vec<(i32, String)> {
    pairs.sort();
    pairs
}
