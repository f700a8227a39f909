//! Scale-out under a steady checkout load, short version: the orders
//! service grows from 1 to 2 to 4 instances and shrinks to 2 (SIGTERM, as
//! a scale-down does), the gateway grows from 1 to 3, then one of the two
//! orders instances is killed -9 and the other takes its partitions over.
//! Every request is answered, and the audit of the fault run holds: no
//! order lost or duplicated, no unit oversold, no double charge. The
//! latency by stretch bounds how long any partition paused. Longer runs,
//! and the classic against the KIP-848 protocol: `faultrun --plan scale-out
//! --duration 120 [--group-protocol consumer]`.

use d2c_integration::faults::{run_clean, FaultConfig, Plan};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_and_shrinking_under_load_loses_nothing_and_pauses_briefly() {
    let audit = run_clean(FaultConfig {
        duration: Duration::from_secs(45),
        rate: 6.0,
        plan: Plan::ScaleOut,
        restart_postgres: false,
        ..FaultConfig::default()
    })
    .await;
    assert_eq!(audit.unanswered, 0, "{audit}");
    assert_eq!(audit.phases.len(), 6, "{audit}");
    assert!(
        audit.restarts.is_empty(),
        "no instance had to stop itself: {audit}"
    );
    // No timing goal on a shared CI box: the bound only catches a partition
    // that never resumed. The pause goal (< 5 s) is measured by the longer
    // runs (`faultrun --plan scale-out`).
    assert!(audit.longest_wait_ms() < 60_000.0, "{audit}");
}

/// Gateways scale up to the reply topic's partition count (one partition
/// each, by instance ordinal); one more is refused at start with what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_beyond_the_reply_partitions_refuses_to_start_and_says_why() {
    use d2c_integration::harness::{test_partitions, Platform};
    let platform = Platform::new(&["gateway"]).await.expect("topology applied");
    let beyond = 99;
    assert!(
        platform.gateway("gateway-99", beyond, 1_000).await.is_err(),
        "a gateway on reply partition {beyond} started"
    );
    let log = std::fs::read_to_string(platform.work.path().join("gateway-99.log"))
        .expect("the gateway's log");
    let partitions = test_partitions().min(32);
    assert!(
        log.contains(&format!("D2C_REPLY_PARTITION is {beyond}"))
            && log.contains(&format!("at most {partitions} gateways can run")),
        "{log}"
    );
}
