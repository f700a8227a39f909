//! Liveness and readiness.

use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use rdkafka::producer::Producer;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Alive")))]
pub async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when the broker answers a real Metadata request, this instance
/// reads its reply partition and the catalog events, and the read side
/// answers a query.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready for traffic"),
        (status = 503, description = "Not ready; the body says what is missing"),
    ))]
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
    let catalog_ok = app.catalog_assigned.load(Ordering::Acquire);
    let database_ok = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&app.reads),
    )
    .await
    .is_ok_and(|result| result.is_ok());
    let status = if broker_ok && replies_ok && catalog_ok && database_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "broker": if broker_ok { "ok" } else { "unreachable" },
            "reply_partition": if replies_ok { "assigned" } else { "not assigned" },
            "catalog_events": if catalog_ok { "assigned" } else { "not assigned" },
            "database": if database_ok { "ok" } else { "unreachable" },
            "pending_requests": app.bus.pending.len(),
        })),
    )
}
