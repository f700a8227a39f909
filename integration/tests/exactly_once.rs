//! Crashes at the riskiest moments of a commit, under both processing
//! guarantees. An inventory processor is aborted (as by `kill -9`) at a
//! fault point, compiled into test builds only:
//! - `before-commit`: outputs produced (on the broker), nothing committed;
//! - `mid-changelog`: half of the batch's changelog entries on the broker;
//! - `after-commit`: committed, the local store not yet written
//!   (exactly-once) / the store written, the changelog not yet
//!   (at-least-once).
//!
//! Then it restarts on the same disk and finishes the work. A
//! `read_committed` reader must see each output once under exactly-once
//! (at least once, with the same id, under at-least-once), and the store,
//! and a store restored from the changelog by a fresh instance, must both
//! equal a replay of the input through the handler from scratch (holes 1
//! and 2 of issue 12).

use d2c_integration::harness::{test_partitions, Platform};
use d2c_integration::kafka::{produce_message, read_all, Record};
use d2c_inventory::handler;
use d2c_proto::inventory::v1::AdjustStock;
use d2c_proto::Envelope;
use d2c_runtime::{Effects, Handler, Incoming};
use d2c_state::{ChangeSet, Overlay, StateRead, Store, StoreOptions, Table};
use prost::Name;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

const WAVES: usize = 6;
const PER_WAVE: usize = 5;
const SKUS: [&str; 3] = ["EOS-A", "EOS-B", "EOS-C"];
/// The domain tables of inventory (not runtime bookkeeping).
const TABLES: [Table; 3] = [Table::Stock, Table::Reservations, Table::StockAdjustments];

/// Key-values of the domain tables, by partition.
type Contents = BTreeMap<(i32, u8, Vec<u8>), Vec<u8>>;

async fn adjust(platform: &Platform, n: usize) {
    let sku = SKUS[n % SKUS.len()];
    let command = AdjustStock {
        sku: sku.into(),
        delta: 1,
        adjustment_id: format!("adj-{n}"),
    };
    let envelope = Envelope::new(
        AdjustStock::full_name(),
        uuid::Uuid::from_u128(0xE0_0000 + n as u128),
        d2c_platform::now_ms(),
    );
    produce_message(
        &platform.brokers,
        &platform.topic("inventory.messages"),
        sku,
        &envelope,
        &command,
    )
    .await
    .expect("produced");
}

fn dump(dir: &Path) -> Contents {
    let store = Store::open(dir, StoreOptions::default()).expect("store opens");
    let mut contents = Contents::new();
    for partition in 0..test_partitions() {
        let Some(partition_store) = store.partition(partition) else {
            continue;
        };
        for table in TABLES {
            let rows = partition_store
                .range(table, &[], &[0xFF; 32], 1_000_000)
                .expect("range");
            for (key, value) in rows {
                contents.insert((partition, table as u8, key), value);
            }
        }
    }
    contents
}

/// Every input message handled once, in offset order per partition, by the
/// handler alone: what the store must hold.
fn replay(inputs: &[Record]) -> Contents {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("store");
    let inventory = handler();
    let mut by_partition: BTreeMap<i32, Vec<&Record>> = BTreeMap::new();
    for record in inputs {
        by_partition
            .entry(record.partition)
            .or_default()
            .push(record);
    }
    for (partition, mut records) in by_partition {
        records.sort_by_key(|record| record.offset);
        let partition_store = store.create_partition(partition).expect("partition");
        for record in records {
            let envelope = record.envelope.as_ref().expect("input has an envelope");
            let incoming = Incoming {
                envelope,
                key: Some(&record.key),
                payload: &record.payload,
                partition,
                offset: record.offset,
            };
            let mut effects = Effects::new(envelope);
            let empty = ChangeSet::default();
            let state = Overlay {
                base: &partition_store,
                changes: &empty,
            };
            inventory
                .handle(&state, &incoming, &mut effects)
                .expect("handled");
            partition_store
                .write(&effects.changes().clone().into_entries())
                .expect("written");
        }
    }
    drop(store);
    dump(dir.path())
}

async fn crash_restart_and_audit(guarantee: &str, fault: &str) {
    let platform = Platform::new(&["inventory"]).await.expect("platform");
    let env = [("D2C_PROCESSING_GUARANTEE", guarantee.to_owned())];
    let faulty = [
        env[0].clone(),
        ("D2C_FAULT_POINT", fault.to_owned()),
        ("D2C_FAULT_AFTER", "3".to_owned()),
    ];
    let mut crashing = platform
        .processor_ready("inventory", "inv", &faulty)
        .await
        .expect("inventory starts");
    // Waves keep batches small, so the third commit comes mid-run and
    // work is left for after the restart.
    for wave in 0..WAVES {
        for i in 0..PER_WAVE {
            adjust(&platform, wave * PER_WAVE + i).await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let status = crashing
        .exited(Duration::from_secs(30))
        .await
        .expect("the fault point fired");
    assert!(!status.success(), "aborted at {fault}: {status}");
    assert!(
        crashing.log_tail(50).contains("FAULT_POINT"),
        "{}",
        crashing.log_tail(50)
    );

    let mut restarted = platform
        .processor_ready("inventory", "inv", &env)
        .await
        .expect("inventory restarts");
    let events_topic = platform.topic("inventory.events");
    let total = WAVES * PER_WAVE;
    let mut events = Vec::new();
    for _ in 0..100 {
        events = read_all(&platform.brokers, &events_topic, Duration::from_secs(20))
            .expect("events read");
        if distinct_ids(&events).len() >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let copies = distinct_ids(&events);
    assert_eq!(copies.len(), total, "one event per adjustment");
    assert!(restarted.terminate().await.expect("stops").success());

    if guarantee == "exactly_once" {
        let repeated: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
        assert!(repeated.is_empty(), "outputs seen twice: {repeated:?}");
    }
    let inputs = read_all(
        &platform.brokers,
        &platform.topic("inventory.messages"),
        Duration::from_secs(20),
    )
    .expect("inputs read");
    let expected = replay(&inputs);
    assert_eq!(
        expected
            .keys()
            .filter(|(_, table, _)| *table == Table::StockAdjustments as u8)
            .count(),
        total,
        "the replay saw every adjustment"
    );
    assert_eq!(
        dump(&platform.work.path().join("inv")),
        expected,
        "store after the crash"
    );

    // A new instance, no disk: its stores come from the changelog alone.
    let mut fresh = platform
        .processor_ready("inventory", "fresh", &env)
        .await
        .expect("a fresh instance restores");
    assert!(fresh.terminate().await.expect("stops").success());
    assert_eq!(
        dump(&platform.work.path().join("fresh")),
        expected,
        "store restored from the changelog"
    );
}

/// How often each output message id was read.
fn distinct_ids(records: &[Record]) -> HashMap<uuid::Uuid, usize> {
    let mut seen = HashMap::new();
    for record in records {
        if let Some(envelope) = &record.envelope {
            *seen.entry(envelope.message_id).or_default() += 1;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_crash_before_commit() {
    crash_restart_and_audit("exactly_once", "before-commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_crash_mid_changelog() {
    crash_restart_and_audit("exactly_once", "mid-changelog").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_crash_after_commit() {
    crash_restart_and_audit("exactly_once", "after-commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_crash_before_commit() {
    crash_restart_and_audit("at_least_once", "before-commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_crash_mid_changelog() {
    crash_restart_and_audit("at_least_once", "mid-changelog").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_crash_after_commit() {
    crash_restart_and_audit("at_least_once", "after-commit").await;
}
