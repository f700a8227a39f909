//! Gateway metrics, registered in the process-wide registry that `/metrics`
//! renders.

use d2c_platform::metrics::{LATENCY_BUCKETS, METRICS};
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};
use std::sync::LazyLock;

pub struct GatewayMetrics {
    pub http_duration: HistogramVec,
    pub pending: IntGauge,
    pub pending_full: IntCounter,
    pub reply_timeouts: IntCounterVec,
    pub late_replies: IntCounter,
    pub polls_answered_settling: IntCounter,
    pub cache_requests: IntCounterVec,
    pub cache_invalidations: IntCounter,
    pub reply_partition_assigned: IntGauge,
    pub admission_limit: IntGauge,
    pub requests_shed: IntCounter,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(metric: T) -> T {
    METRICS
        .registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|error| panic!("gateway metric registered twice: {error}"));
    metric
}

fn new<T>(metric: prometheus::Result<T>) -> T {
    metric.unwrap_or_else(|error| panic!("gateway metric malformed: {error}"))
}

pub static GATEWAY_METRICS: LazyLock<GatewayMetrics> = LazyLock::new(|| {
    GatewayMetrics {
    http_duration: register(new(HistogramVec::new(
        HistogramOpts::new(
            "d2c_http_request_duration_seconds",
            "HTTP request duration, by route and status.",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["method", "route", "status"],
    ))),
    pending: register(new(IntGauge::new(
        "d2c_gateway_pending_requests",
        "Requests parked waiting for their reply.",
    ))),
    pending_full: register(new(IntCounter::new(
        "d2c_gateway_pending_full_total",
        "Requests answered without waiting because the pending map was full.",
    ))),
    reply_timeouts: register(new(IntCounterVec::new(
        Opts::new(
            "d2c_gateway_reply_timeouts_total",
            "Requests whose reply did not arrive in time, by route.",
        ),
        &["route"],
    ))),
    late_replies: register(new(IntCounter::new(
        "d2c_gateway_late_replies_total",
        "Replies that arrived after their request stopped waiting.",
    ))),
    polls_answered_settling: register(new(IntCounter::new(
        "d2c_gateway_polls_answered_settling_total",
        "GET /orders/{id} of a checkout this gateway answered 202 and still waits for, answered 202 without asking orders.",
    ))),
    cache_requests: register(new(IntCounterVec::new(
        Opts::new(
            "d2c_gateway_cache_requests_total",
            "Local catalog cache lookups, by cache (products, skus, searches) and result (hit, miss).",
        ),
        &["cache", "result"],
    ))),
    cache_invalidations: register(new(IntCounter::new(
        "d2c_gateway_cache_invalidations_total",
        "Catalog events applied to the local cache.",
    ))),
    reply_partition_assigned: register(new(IntGauge::new(
        "d2c_gateway_reply_partition_assigned",
        "1 once this instance reads its partition of gateway.replies (replies to its requests reach it).",
    ))),
    admission_limit: register(new(IntGauge::new(
        "d2c_gateway_admission_limit",
        "Requests this gateway lets into Kafka at once; it shrinks while replies are slow (D2C_ADMISSION_*).",
    ))),
    requests_shed: register(new(IntCounter::new(
        "d2c_gateway_requests_shed_total",
        "Requests answered 503 at once because the admission limit was reached.",
    ))),
}
});
