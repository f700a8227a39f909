//! What every binary of the platform shares, whatever its role: Kafka
//! client settings, configuration helpers, telemetry (logs, traces, Slack,
//! Sentry), the metrics registry and the admin endpoint, consumer lag, the
//! global-topic reader, and shutdown.

pub mod admin;
pub mod config;
pub mod error_reports;
pub mod global;
pub mod kafka;
pub mod lag;
pub mod metrics;
pub mod producer;
pub mod retry;
pub mod slack;
pub mod telemetry;
pub mod tracing_context;

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "Cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Milliseconds since the Unix epoch, for the sent-at header of messages that
/// start a causal chain (handlers never read the clock).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}
