//! The Postgres query side, shared by the projector (writes) and the gateway
//! (reads).
//!
//! - `events`: the append-only archive of every event, range-partitioned by
//!   month; archiving is idempotent on (topic, partition, offset).
//! - `product_versions`, `order_versions`: read models stored as protobuf
//!   documents, versioned by insert; reads take the latest version.
//! - `job_runs`: every run of a singleton job, which one replica runs at a
//!   time under a Postgres advisory lock ([`Leader`]).
//! - the business report of a period ([`business_report`]): checkouts,
//!   revenue, top products, rejection reasons, checkout latency.
//!
//! Writes take a connection (the projector's transaction), so an archived
//! batch and its read-model rows commit together. Reads take the pool.

mod archive;
mod database;
mod error;
mod jobs;
mod leader;
mod orders;
mod products;
mod report;
mod search;
pub mod testing;
mod versions;

pub use archive::{archive_events, ArchivedEvent};
pub use database::{connect, drop_database, ensure_database, migrate};
pub use error::ReadsideError;
pub use jobs::{
    ensure_month_partitions, ensure_partitions_for, job_runs, prune_versions, record_job_run,
    run_maintenance, JobRun, MaintenanceReport, PruneCounts, JOB_MONTH_PARTITIONS,
    JOB_PRUNE_VERSIONS,
};
pub use leader::{Leader, MAINTENANCE_LOCK_KEY};
pub use orders::{
    insert_order_version, insert_order_versions, order, orders_by_status_age, orders_of_customer,
    StatusAge,
};
pub use products::{
    insert_product_version, insert_product_versions, product, product_by_sku, search,
};
pub use report::{
    business_report, last_reported_until, rejection_reason, report_run_detail, BusinessReport,
    CheckoutLatency, RejectionCount, Revenue, TopProduct, JOB_BUSINESS_REPORT, REPORT_LOCK_KEY,
};
pub use search::{prefix_tsquery, SearchPage, SearchQuery};

pub type Result<T, E = ReadsideError> = std::result::Result<T, E>;
