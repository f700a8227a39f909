//! Fault points: places where a test can make the process die as `kill -9`
//! would, to prove what a crash there leaves behind. Compiled only with the
//! `fault-points` feature, which only the integration tests turn on (release
//! binaries never have it); armed by `D2C_FAULT_POINT=<name>` and fired on
//! its `D2C_FAULT_AFTER`-th pass (default 1).

/// The process aborts (or stops) here if this point is armed and its turn has come;
/// `settle` runs first (e.g. flush the producer, so that what was sent is
/// really on the broker when the process dies).
#[cfg(feature = "fault-points")]
pub(crate) fn point(name: &str, settle: impl FnOnce()) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static PASSES: AtomicU32 = AtomicU32::new(0);
    if std::env::var("D2C_FAULT_POINT").ok().as_deref() != Some(name) {
        return;
    }
    let after: u32 = std::env::var("D2C_FAULT_AFTER")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1);
    if PASSES.fetch_add(1, Ordering::SeqCst) + 1 == after {
        settle();
        if std::env::var("D2C_FAULT_ACTION").ok().as_deref() == Some("stop") {
            eprintln!("FAULT_POINT {name}: stopping");
            // Returns once the test sends SIGCONT.
            let _ = std::process::Command::new("kill")
                .args(["-STOP", &std::process::id().to_string()])
                .status();
            eprintln!("FAULT_POINT {name}: continued");
            return;
        }
        eprintln!("FAULT_POINT {name}: aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-points"))]
#[inline(always)]
pub(crate) fn point(_name: &str, _settle: impl FnOnce()) {}
