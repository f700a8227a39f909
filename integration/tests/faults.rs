//! The fault-injection run, shortened for CI but real: processors killed
//! with -9 and restarted, the broker and Postgres restarted, a gateway
//! killed, all while orders arrive; then the audit of every invariant (see
//! `d2c_integration::faults`). It restarts the shared Postgres cluster, so
//! it lives alone in its test binary (cargo runs test binaries one at a
//! time).

use d2c_integration::faults::{run_clean, FaultConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_lose_duplicate_oversell_and_double_charge_nothing() {
    let audit = run_clean(FaultConfig {
        duration: Duration::from_secs(36),
        rate: 6.0,
        ..FaultConfig::default()
    })
    .await;
    assert!(audit.confirmed > 0 && audit.rejected > 0, "{audit}");
    assert!(audit.retried_requests > 0, "the faults were felt: {audit}");
}
