//! The admin HTTP endpoint of a processor: liveness, readiness, metrics, and
//! whatever routes the service adds (see `d2c_runtime::Processor::http`).

use crate::metrics::METRICS;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Readiness as the runtime knows it.
#[derive(Default)]
pub struct Readiness {
    /// Set once the first assignment finished restoring its partitions.
    pub assigned: AtomicBool,
    /// Set while shutting down, so traffic drains away first.
    pub stopping: AtomicBool,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.assigned.load(Ordering::Acquire) && !self.stopping.load(Ordering::Acquire)
    }
}

pub fn router(readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(readiness)
}

async fn ready(State(readiness): State<Arc<Readiness>>) -> impl IntoResponse {
    if readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: partitions not assigned yet",
        )
    }
}

/// `/metrics`: every metric of this process (runtime and service alike).
pub async fn metrics() -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        METRICS.render(),
    )
}

/// Binds the admin listener and serves [`router`] merged with the service's
/// own `routes`; prints `ADMIN_LISTENING <addr>` on stdout so a caller that
/// asked for port 0 learns the port.
pub async fn serve(
    addr: SocketAddr,
    readiness: Arc<Readiness>,
    routes: Router,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    println!("ADMIN_LISTENING {bound}");
    tracing::info!(%bound, "Admin endpoint listening");
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router(readiness).merge(routes)).await {
            tracing::error!(%error, "Admin endpoint failed");
        }
    }))
}
