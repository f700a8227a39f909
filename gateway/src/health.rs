//! Liveness, readiness and metrics.

use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use rdkafka::producer::Producer;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when the broker answers a real Metadata request and this instance
/// reads its reply partition.
pub async fn ready(State(app): State<AppState>) -> impl IntoResponse {
    let producer = app.bus.producer.clone();
    let broker = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, Duration::from_secs(2))
            .map(|metadata| metadata.brokers().len())
    })
    .await;
    let broker_ok = matches!(broker, Ok(Ok(count)) if count > 0);
    let replies_ok = app.replies_assigned.load(Ordering::Acquire);
    let status = if broker_ok && replies_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "broker": if broker_ok { "ok" } else { "unreachable" },
            "reply_partition": if replies_ok { "assigned" } else { "not assigned" },
            "pending_requests": app.bus.pending.len(),
        })),
    )
}
