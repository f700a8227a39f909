//! Metric definitions of the projector, registered in the runtime's registry
//! so `/metrics` serves them next to the runtime's own.

use d2c_platform::metrics::{LATENCY_BUCKETS, METRICS as RUNTIME};
use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use std::sync::LazyLock;

pub const EVENTS: &str = "d2c_projector_events_total";
pub const ROWS_INSERTED: &str = "d2c_projector_rows_inserted_total";
pub const BATCH_DURATION: &str = "d2c_projector_batch_duration_seconds";
pub const ERRORS: &str = "d2c_projector_errors_total";
pub const LEADER: &str = "d2c_projector_leader";
pub const MAINTENANCE_RUNS: &str = "d2c_projector_maintenance_runs_total";
pub const REPORTS: &str = "d2c_projector_reports_total";
pub const ORDERS_IN_STATUS: &str = "d2c_orders_in_status";
pub const STATUS_AGE: &str = "d2c_orders_status_age_seconds";

/// `kind` label values of [`ERRORS`].
pub mod error_kind {
    /// A record whose envelope or payload does not decode (archived anyway).
    pub const UNDECODABLE: &str = "undecodable";
    /// A failed Postgres transaction (retried).
    pub const DATABASE: &str = "database";
    /// A consumer error.
    pub const KAFKA: &str = "kafka";
}

pub struct ProjectorMetrics {
    pub events: IntCounterVec,
    pub rows_inserted: IntCounterVec,
    pub batch_duration: Histogram,
    pub errors: IntCounterVec,
    pub leader: IntGauge,
    pub maintenance_runs: IntCounterVec,
    pub reports: IntCounterVec,
    pub orders_in_status: IntGaugeVec,
    pub status_age: GaugeVec,
}

fn register<M: prometheus::core::Collector + Clone + 'static>(metric: M) -> M {
    RUNTIME
        .registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|error| panic!("projector metric registered twice: {error}"));
    metric
}

fn counter(name: &str, help: &str, label: &str) -> IntCounterVec {
    register(
        IntCounterVec::new(Opts::new(name, help), &[label])
            .unwrap_or_else(|error| panic!("metric {name} is malformed: {error}")),
    )
}

impl ProjectorMetrics {
    fn new() -> Self {
        Self {
            events: counter(
                EVENTS,
                "Records projected (committed to Postgres), by topic.",
                "topic",
            ),
            rows_inserted: counter(
                ROWS_INSERTED,
                "Rows inserted, by table (a replayed record inserts none).",
                "table",
            ),
            batch_duration: register(
                Histogram::with_opts(
                    HistogramOpts::new(
                        BATCH_DURATION,
                        "Time to commit one batch to Postgres, retries included.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )
                .unwrap_or_else(|error| panic!("metric {BATCH_DURATION} is malformed: {error}")),
            ),
            errors: counter(ERRORS, "Errors, by kind.", "kind"),
            leader: register(
                IntGauge::new(LEADER, "1 while this replica holds the maintenance lock.")
                    .unwrap_or_else(|error| panic!("metric {LEADER} is malformed: {error}")),
            ),
            maintenance_runs: counter(
                MAINTENANCE_RUNS,
                "Maintenance rounds run as leader, by outcome.",
                "outcome",
            ),
            orders_in_status: register(
                IntGaugeVec::new(
                    Opts::new(
                        ORDERS_IN_STATUS,
                        "Orders in each unsettled status now (read side, refreshed by the maintenance leader).",
                    ),
                    &["status"],
                )
                .unwrap_or_else(|error| panic!("metric {ORDERS_IN_STATUS} is malformed: {error}")),
            ),
            status_age: register(
                GaugeVec::new(
                    Opts::new(
                        STATUS_AGE,
                        "Seconds the longest-waiting order of each unsettled status has been in it (read side).",
                    ),
                    &["status"],
                )
                .unwrap_or_else(|error| panic!("metric {STATUS_AGE} is malformed: {error}")),
            ),
            reports: counter(
                REPORTS,
                "Business reports this replica tried to post to Slack, by outcome (posted, failed).",
                "outcome",
            ),
        }
    }
}

pub static METRICS: LazyLock<ProjectorMetrics> = LazyLock::new(ProjectorMetrics::new);
