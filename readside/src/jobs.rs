//! The read side's singleton jobs: creating month partitions of the archive
//! and pruning superseded read-model versions. One replica runs them at a
//! time (see [`crate::Leader`]); every run is recorded in `job_runs`.

use crate::database::quote_identifier;
use crate::Result;
use sqlx::{PgPool, Row};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const JOB_MONTH_PARTITIONS: &str = "ensure_month_partitions";
pub const JOB_PRUNE_VERSIONS: &str = "prune_versions";

/// Months of archive partitions kept ready on either side of now: room for
/// late records and for a leader that stays away for a while.
const MONTHS_BACK: u32 = 3;
const MONTHS_AHEAD: u32 = 3;

/// Serializes partition DDL between replicas: the leader's job and a
/// projector creating a missing month for its batch may run at once, and
/// two CREATE TABLE IF NOT EXISTS racing can still fail.
const PARTITION_DDL_LOCK_KEY: i64 = 0x6432_6370_6172_7401;

/// One month partition: its table name and bounds (UTC dates).
struct Month {
    name: String,
    from: String,
    to: String,
}

/// The UTC months from `months_back` before the month of `around` to
/// `months_ahead` after it.
const MONTH_RANGE: &str = "SELECT generate_series(
        date_trunc('month', timestamp 'epoch' + $1::int8 * interval '1 millisecond')
            - make_interval(months => $2::int4),
        date_trunc('month', timestamp 'epoch' + $1::int8 * interval '1 millisecond')
            + make_interval(months => $3::int4),
        interval '1 month') AS m";

/// The UTC months of the given epoch-millisecond timestamps.
const MONTHS_OF: &str = "SELECT DISTINCT
        date_trunc('month', timestamp 'epoch' + ms * interval '1 millisecond') AS m
    FROM UNNEST($1::int8[]) AS ms";

/// Creates the month partitions of `events` around `around` that do not exist
/// yet; returns the names of those it created.
pub async fn ensure_month_partitions(
    pool: &PgPool,
    around: SystemTime,
    months_back: u32,
    months_ahead: u32,
) -> Result<Vec<String>> {
    let months = months(
        pool,
        sqlx::query(&named_months(MONTH_RANGE))
            .bind(epoch_ms(around))
            .bind(i32::try_from(months_back).unwrap_or(i32::MAX))
            .bind(i32::try_from(months_ahead).unwrap_or(i32::MAX)),
    )
    .await?;
    create_partitions(pool, &months).await
}

/// Creates the month partitions that rows recorded at `recorded_at_ms` need
/// and that do not exist yet; returns the names of those it created.
pub async fn ensure_partitions_for(pool: &PgPool, recorded_at_ms: &[i64]) -> Result<Vec<String>> {
    let months = months(
        pool,
        sqlx::query(&named_months(MONTHS_OF)).bind(recorded_at_ms.to_vec()),
    )
    .await?;
    create_partitions(pool, &months).await
}

fn named_months(months: &str) -> String {
    format!(
        "SELECT to_char(m, '\"events_y\"YYYY\"m\"MM') AS name,
                to_char(m, 'YYYY-MM-DD') AS month_from,
                to_char(m + interval '1 month', 'YYYY-MM-DD') AS month_to
         FROM ({months}) AS months ORDER BY m"
    )
}

async fn months(
    pool: &PgPool,
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<Vec<Month>> {
    query
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| {
            Ok(Month {
                name: row.try_get("name")?,
                from: row.try_get("month_from")?,
                to: row.try_get("month_to")?,
            })
        })
        .collect()
}

async fn create_partitions(pool: &PgPool, months: &[Month]) -> Result<Vec<String>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PARTITION_DDL_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    let mut created = Vec::new();
    for month in months {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&month.name)
            .fetch_one(&mut *tx)
            .await?;
        if exists {
            continue;
        }
        sqlx::query(&format!(
            "CREATE TABLE {} PARTITION OF events \
             FOR VALUES FROM ('{} 00:00:00+00') TO ('{} 00:00:00+00')",
            quote_identifier(&month.name),
            month.from,
            month.to
        ))
        .execute(&mut *tx)
        .await?;
        created.push(month.name.clone());
    }
    tx.commit().await?;
    if !created.is_empty() {
        tracing::info!(?created, "Created month partitions of the event archive");
    }
    Ok(created)
}

/// Rows deleted by [`prune_versions`], per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCounts {
    pub product_versions: u64,
    pub order_versions: u64,
}

/// Deletes read-model versions that a newer version superseded and that were
/// projected longer than `keep_newer_than` ago. Latest versions stay forever.
pub async fn prune_versions(pool: &PgPool, keep_newer_than: Duration) -> Result<PruneCounts> {
    let age_us = i64::try_from(keep_newer_than.as_micros()).unwrap_or(i64::MAX);
    let mut counts = PruneCounts::default();
    for (table, id, count) in [
        (
            "product_versions",
            "product_id",
            &mut counts.product_versions,
        ),
        ("order_versions", "order_id", &mut counts.order_versions),
    ] {
        *count = sqlx::query(&format!(
            "DELETE FROM {table} v
             WHERE v.projected_at < now() - $1::int8 * interval '1 microsecond'
               AND EXISTS (SELECT 1 FROM {table} newer
                           WHERE newer.{id} = v.{id} AND newer.version > v.version)"
        ))
        .bind(age_us)
        .execute(pool)
        .await?
        .rows_affected();
    }
    Ok(counts)
}

/// What one maintenance round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub created_partitions: Vec<String>,
    pub pruned: PruneCounts,
}

/// Runs every job once, as `runner`, recording each run in `job_runs`
/// (a failed run too, with the error as detail). Call it only while holding
/// the [`crate::Leader`] lock.
pub async fn run_maintenance(
    pool: &PgPool,
    runner: &str,
    now: SystemTime,
    version_retention: Duration,
) -> Result<MaintenanceReport> {
    let started = Instant::now();
    let created = ensure_month_partitions(pool, now, MONTHS_BACK, MONTHS_AHEAD).await;
    let detail = match &created {
        Ok(names) if names.is_empty() => "created none".to_owned(),
        Ok(names) => format!("created {}", names.join(", ")),
        Err(error) => format!("failed: {error}"),
    };
    record_job_run(
        pool,
        JOB_MONTH_PARTITIONS,
        runner,
        started.elapsed(),
        &detail,
    )
    .await?;
    let created_partitions = created?;

    let started = Instant::now();
    let pruned = prune_versions(pool, version_retention).await;
    let detail = match &pruned {
        Ok(counts) => format!(
            "deleted {} product versions, {} order versions",
            counts.product_versions, counts.order_versions
        ),
        Err(error) => format!("failed: {error}"),
    };
    record_job_run(pool, JOB_PRUNE_VERSIONS, runner, started.elapsed(), &detail).await?;
    Ok(MaintenanceReport {
        created_partitions,
        pruned: pruned?,
    })
}

/// Records one finished run of `job` that took `took`; returns its id.
pub async fn record_job_run(
    pool: &PgPool,
    job: &str,
    runner: &str,
    took: Duration,
    detail: &str,
) -> Result<i64> {
    let took_us = i64::try_from(took.as_micros()).unwrap_or(i64::MAX);
    Ok(sqlx::query_scalar(
        "INSERT INTO job_runs (job, runner, started_at, finished_at, detail)
         VALUES ($1, $2, clock_timestamp() - $3::int8 * interval '1 microsecond', clock_timestamp(), $4)
         RETURNING id",
    )
    .bind(job)
    .bind(runner)
    .bind(took_us)
    .bind(detail)
    .fetch_one(pool)
    .await?)
}

/// A recorded run of a singleton job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    pub id: i64,
    pub job: String,
    pub runner: String,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub detail: String,
}

/// Every recorded run, oldest first.
pub async fn job_runs(pool: &PgPool) -> Result<Vec<JobRun>> {
    sqlx::query(
        "SELECT id, job, runner, detail,
                (extract(epoch FROM started_at) * 1000)::int8 AS started_at_ms,
                (extract(epoch FROM finished_at) * 1000)::int8 AS finished_at_ms
         FROM job_runs ORDER BY id",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| {
        Ok(JobRun {
            id: row.try_get("id")?,
            job: row.try_get("job")?,
            runner: row.try_get("runner")?,
            started_at_ms: row.try_get("started_at_ms")?,
            finished_at_ms: row.try_get("finished_at_ms")?,
            detail: row.try_get("detail")?,
        })
    })
    .collect()
}

fn epoch_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
