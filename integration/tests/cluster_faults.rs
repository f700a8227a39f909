//! The fault run on a cluster of three brokers (topics at three replicas,
//! `min.insync.replicas` 2, producers `acks=all` and idempotent): while
//! orders arrive, the broker leading most of the platform's partitions is
//! killed -9, stays down while orders go on, and is restarted; processors
//! are killed and restarted too. Then the audit of every invariant (see
//! `d2c_integration::faults`). Longer runs: `faultrun --brokers 3
//! --duration 120`.

use d2c_integration::faults::{run_clean, FaultConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_broker_loses_duplicates_oversells_and_double_charges_nothing() {
    let audit = run_clean(FaultConfig {
        duration: Duration::from_secs(36),
        rate: 6.0,
        brokers: 3,
        // The single-broker run restarts Postgres already; this one is
        // about the brokers.
        restart_postgres: false,
        ..FaultConfig::default()
    })
    .await;
    assert!(
        audit
            .faults
            .iter()
            .any(|fault| fault.contains("kill -9 broker")),
        "a broker was killed: {audit}"
    );
    assert!(audit.confirmed > 0 && audit.rejected > 0, "{audit}");
}
