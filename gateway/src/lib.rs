//! The HTTP gateway. Storefronts speak JSON over HTTP; each state-changing
//! request becomes a protobuf command on Kafka, keyed by the entity it
//! changes, and the request is parked until the correlated reply arrives on
//! this instance's reply partition (or answered 202 with a Location when the
//! reply is late).

pub mod bus;
pub mod catalog;
pub mod config;
pub mod error;
mod health;
pub mod inventory;
pub mod metrics;
pub mod orders;
pub mod replies;
pub mod validate;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use bus::Bus;
use config::GatewayConfig;
use error::ApiError;
use metrics::GATEWAY_METRICS;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<GatewayConfig>,
    pub bus: Bus,
    /// Set once this instance reads its reply partition.
    pub replies_assigned: Arc<AtomicBool>,
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/orders", post(orders::place_order))
        .route("/orders/{id}", get(orders::get_order))
        .route("/orders/{id}/cancel", post(orders::cancel_order))
        .route("/admin/inventory/{sku}", put(inventory::set_stock))
        .route("/inventory/{sku}", get(inventory::get_stock))
        .route("/admin/products", post(catalog::create_product))
        .route("/admin/products/{id}", put(catalog::update_product))
        .route(
            "/admin/products/{id}/archive",
            post(catalog::archive_product),
        )
        .route("/products/{id}", get(catalog::get_product))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(d2c_runtime::admin::metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// Request id on every response (the client's `x-request-id`, or a new one)
/// and the request-duration histogram by route template.
async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let request_id = request
        .headers()
        .get("x-request-id")
        .filter(|value| value.len() <= 128)
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
        });
    let span = tracing::info_span!("http", http.request.method = %method, http.route = %route, request_id = ?request_id);
    let mut response = tracing::Instrument::instrument(next.run(request), span).await;
    response.headers_mut().insert("x-request-id", request_id);
    GATEWAY_METRICS
        .http_duration
        .with_label_values(&[&method, &route, response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}
