//! Warm standbys (`D2C_STANDBY=all`): an instance follows the changelogs of
//! the partitions it does not own, so when their owner is killed -9 it
//! takes them over from its own copy (caught up with the tail), not by
//! restoring the whole changelog, and the state it serves is the dead
//! owner's: every SKU's stock goes on from where the owner left it.
//! The failover times with and without a standby are measured by
//! `failover-bench` (a benchmark, not a test).

use d2c_integration::harness::{test_partitions, Platform, Service};
use d2c_integration::stock::{read_stock_events, send_adjustment, settled};
use rdkafka::producer::FutureProducer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const SKUS: i32 = 64;

type Levels = Arc<Mutex<HashMap<String, i64>>>;

/// One +1 adjustment of every SKU, SKU i on partition i mod the count.
async fn adjust_every_sku(producer: &FutureProducer, topic: &str, round: u32) {
    let partitions = test_partitions();
    let mut deliveries = Vec::new();
    for sku in 0..SKUS {
        deliveries.push(
            send_adjustment(
                producer,
                topic,
                Some(sku % partitions),
                &format!("SKU-{sku}"),
                1,
                format!("round-{round}-{sku}"),
                None,
            )
            .expect("enqueued"),
        );
    }
    for delivery in deliveries {
        settled(delivery.await).expect("delivered");
    }
}

/// Waits until every SKU's last event says `on_hand`.
async fn wait_for_levels(levels: &Levels, on_hand: i64, context: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let reached = {
            let levels = levels.lock().unwrap_or_else(PoisonError::into_inner);
            (0..SKUS).all(|sku| levels.get(&format!("SKU-{sku}")) == Some(&on_hand))
        };
        if reached {
            return;
        }
        if Instant::now() > deadline {
            let levels = levels.lock().unwrap_or_else(PoisonError::into_inner);
            let off: Vec<String> = (0..SKUS)
                .map(|sku| format!("SKU-{sku}"))
                .filter(|sku| levels.get(sku) != Some(&on_hand))
                .map(|sku| format!("{sku}={:?}", levels.get(&sku)))
                .collect();
            panic!("{context}: not every SKU reached {on_hand}: {off:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metric(service: &Service, name: &str, labels: &str) -> f64 {
    service
        .metric_where(name, labels)
        .await
        .unwrap_or_else(|error| panic!("{name} of {}: {error}", service.name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_a_dead_owners_partitions_over_from_its_warm_copy() {
    let partitions = test_partitions();
    let platform = Platform::new(&["inventory"])
        .await
        .expect("topology applied");
    let env = [("D2C_STANDBY", "all".to_owned())];
    let topic = platform.topic("inventory.messages");
    let producer: FutureProducer =
        d2c_platform::kafka::client_config(&platform.brokers, "standby-test")
            .set("linger.ms", "1")
            .create()
            .expect("producer");
    let levels: Levels = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&levels);
    let reader = read_stock_events(
        &platform.brokers,
        &platform.topic("inventory.events"),
        move |event| {
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(event.sku, event.on_hand);
        },
        Arc::clone(&stop),
    )
    .expect("event reader");

    let mut owner = platform
        .processor_ready("inventory", "owner", &env)
        .await
        .expect("the owner starts");
    for round in 0..3 {
        adjust_every_sku(&producer, &topic, round).await;
    }
    wait_for_levels(&levels, 3, "the owner alone").await;

    let standby = platform
        .processor_ready("inventory", "standby", &env)
        .await
        .expect("the standby starts");
    // Settled: the two split the partitions and the standby follows every
    // partition it does not own.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (owned, followed) = loop {
        let owned = metric(&standby, "d2c_assigned_partitions", "").await;
        let owner_owns = metric(&owner, "d2c_assigned_partitions", "").await;
        let followed = metric(&standby, "d2c_standby_partitions", "").await;
        if owned > 0.0
            && owner_owns > 0.0
            && owned + owner_owns == f64::from(partitions)
            && owned + followed == f64::from(partitions)
        {
            break (owned, followed);
        }
        assert!(
            Instant::now() < deadline,
            "not settled: standby owns {owned} and follows {followed}, the owner owns {owner_owns}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The standby's copies follow these while the owner still owns them.
    for round in 3..5 {
        adjust_every_sku(&producer, &topic, round).await;
    }
    wait_for_levels(&levels, 5, "both running").await;
    let restores_before = metric(
        &standby,
        "d2c_partition_open_seconds_count",
        "from=\"restore\"",
    )
    .await;
    let local_before = metric(
        &standby,
        "d2c_partition_open_seconds_count",
        "from=\"local\"",
    )
    .await;
    assert!(
        metric(&standby, "d2c_standby_records_applied_total", "").await > 0.0,
        "the standby applied nothing of the owner's changelog"
    );

    owner.kill9().await.expect("kill -9 the owner");
    adjust_every_sku(&producer, &topic, 5).await;
    wait_for_levels(&levels, 6, "after the owner was killed").await;

    assert_eq!(
        metric(&standby, "d2c_assigned_partitions", "").await,
        f64::from(partitions),
        "the standby owns every partition"
    );
    assert_eq!(
        metric(
            &standby,
            "d2c_partition_open_seconds_count",
            "from=\"restore\""
        )
        .await,
        restores_before,
        "a taken-over partition was restored from the whole changelog:\n{}",
        standby.log_tail(60)
    );
    assert_eq!(
        metric(&standby, "d2c_partition_open_seconds_count", "from=\"local\"").await - local_before,
        followed,
        "each of the {followed} followed partitions opened from its warm copy (the standby owned {owned})"
    );
    assert_eq!(
        metric(&standby, "d2c_standby_partitions", "").await,
        0.0,
        "nothing left to follow"
    );
    stop.store(true, Ordering::Release);
    let _ = reader.join();
}
