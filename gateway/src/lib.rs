//! The HTTP gateway. Storefronts speak JSON over HTTP; each state-changing
//! request becomes a protobuf command on Kafka, keyed by the entity it
//! changes, and the request is parked until the correlated reply arrives on
//! this instance's reply partition (or answered 202 with a Location when the
//! reply is late).

pub mod admission;
pub mod auth;
pub mod bus;
pub mod cache;
pub mod carts;
pub mod catalog;
pub mod config;
pub mod customers;
pub mod error;
mod health;
pub mod inventory;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod order_admin;
pub mod orders;
pub mod replies;
pub mod search;
pub mod settling;
pub mod validate;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderValue;
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put, MethodRouter};
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
    /// Set once this instance reads catalog events (cache coherence).
    pub catalog_assigned: Arc<AtomicBool>,
    pub tokens: auth::Tokens,
    /// The Postgres read side.
    pub reads: sqlx::PgPool,
    pub cache: Arc<cache::CatalogCache>,
    /// Per-customer checkout limit (429 beyond it).
    pub checkout_limit: Arc<limits::CheckoutLimiter>,
}

/// Every route as (method, path template, handler). The router is built
/// from this list and the OpenAPI test checks the document against it, so a
/// route cannot go undocumented.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    vec![
        (Method::POST, "/orders", post(orders::place_order)),
        (Method::GET, "/orders", get(orders::list_orders)),
        (Method::GET, "/orders/{order_id}", get(orders::get_order)),
        (
            Method::POST,
            "/orders/{order_id}/cancel",
            post(orders::cancel_order),
        ),
        (Method::POST, "/customers", post(customers::register)),
        (Method::POST, "/customers/login", post(customers::login)),
        (Method::GET, "/customers/me", get(customers::me)),
        (
            Method::POST,
            "/customers/me/addresses",
            post(customers::add_address),
        ),
        (
            Method::DELETE,
            "/customers/me/addresses/{address_id}",
            delete(customers::remove_address),
        ),
        (Method::POST, "/carts", post(carts::create_cart)),
        (Method::GET, "/carts/{cart_id}", get(carts::get_cart)),
        (
            Method::PUT,
            "/carts/{cart_id}/lines/{sku}",
            put(carts::set_line),
        ),
        (
            Method::DELETE,
            "/carts/{cart_id}/lines/{sku}",
            delete(carts::remove_line),
        ),
        (
            Method::POST,
            "/carts/{cart_id}/checkout",
            post(carts::checkout),
        ),
        (
            Method::PUT,
            "/admin/inventory/{sku}",
            put(inventory::set_stock),
        ),
        (Method::GET, "/inventory/{sku}", get(inventory::get_stock)),
        (
            Method::GET,
            "/admin/orders/{order_id}",
            get(order_admin::get_order),
        ),
        (
            Method::POST,
            "/admin/orders/{order_id}/fulfil",
            post(order_admin::fulfil),
        ),
        (
            Method::POST,
            "/admin/orders/{order_id}/refunds",
            post(order_admin::refund),
        ),
        (
            Method::POST,
            "/admin/products",
            post(catalog::create_product),
        ),
        (
            Method::PUT,
            "/admin/products/{product_id}",
            put(catalog::update_product),
        ),
        (
            Method::POST,
            "/admin/products/{product_id}/archive",
            post(catalog::archive_product),
        ),
        (Method::GET, "/products", get(search::search_products)),
        (
            Method::GET,
            "/products/{product_id}",
            get(catalog::get_product),
        ),
        (Method::GET, "/openapi.json", get(openapi::document)),
        (Method::GET, "/health", get(health::health)),
        (Method::GET, "/ready", get(health::ready)),
        (Method::GET, "/metrics", get(d2c_platform::admin::metrics)),
    ]
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    routes()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        })
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// The span of one request: a new trace, or the caller's W3C `traceparent`
/// continued. Never a child of whatever span context the serving thread
/// happens to hold (a span entered and not left there, a scope where
/// telemetry is suppressed, which yields no trace id at all).
fn request_span(
    method: &str,
    route: &str,
    request_id: &HeaderValue,
    traceparent: Option<&str>,
) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "http",
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        request_id = ?request_id,
        trace_id = tracing::field::Empty,
    );
    d2c_platform::tracing_context::continue_trace(&span, traceparent);
    span
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
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok());
    let span = request_span(&method, &route, &request_id, traceparent);
    let trace_id = d2c_platform::tracing_context::trace_id_of(&span)
        .and_then(|trace_id| HeaderValue::from_str(&trace_id).ok());
    let mut response = tracing::Instrument::instrument(next.run(request), span).await;
    response.headers_mut().insert("x-request-id", request_id);
    // So a client (or a support request) can name the trace of its request.
    if let Some(trace_id) = trace_id {
        response.headers_mut().insert("x-trace-id", trace_id);
    }
    GATEWAY_METRICS
        .http_duration
        .with_label_values(&[&method, &route, response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use d2c_platform::tracing_context::{layer, trace_id_of, tracer_provider};
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn a_request_starts_its_own_trace_whatever_the_thread_holds() {
        let provider = tracer_provider("test", None, std::time::Duration::from_secs(1)).0;
        let subscriber = tracing_subscriber::registry().with(layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            let _suppressed = opentelemetry::Context::enter_telemetry_suppressed_scope();
            let request_id = HeaderValue::from_static("r-1");
            let span = request_span("GET", "/orders/{order_id}", &request_id, None);
            let trace_id = trace_id_of(&span).expect("a trace of its own");
            assert_eq!(trace_id.len(), 32);
        });
    }
}
