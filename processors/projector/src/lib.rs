//! The projector: consumes every `*.events` topic and writes the Postgres
//! read side (see `d2c-readside`): each record into the monthly-partitioned
//! event archive, and the products and orders that events carry into their
//! versioned read models. Also runs the read side's singleton jobs, each on
//! the one replica that holds its lock: maintenance, and (with a Slack
//! webhook) the scheduled business report.
//!
//! Delivery: at-least-once, idempotent writes. A batch's archive and
//! read-model rows commit in one Postgres transaction; only then are the
//! batch's offsets stored. A failed transaction is retried, never skipped.
//! A replay (a crash, a rebalance, a new consumer group) inserts nothing
//! new: the archive is keyed by (topic, partition, offset), product versions
//! by (product id, version), order versions by (order id, offset).

pub mod config;
mod consumer;
mod maintenance;
pub mod metrics;
pub mod records;
pub mod report;
mod sink;

pub use config::ProjectorConfig;
pub use consumer::EVENT_TOPICS;

use crate::consumer::Projector;
use crate::maintenance::Maintenance;
use crate::report::BusinessReports;
use d2c_platform::admin::{self, Readiness};
use d2c_runtime::sink::{Assignments, SinkEngine};
use sqlx::PgPool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Config(#[from] d2c_runtime::RuntimeError),
    #[error("Kafka client failed: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Readside(#[from] d2c_readside::ReadsideError),
    #[error("admin endpoint failed: {0}")]
    Admin(#[from] std::io::Error),
}

/// Runs the projector until SIGTERM/SIGINT: the batch in flight is finished
/// and committed, its offsets committed, and the group left.
pub async fn run() -> Result<(), ProjectorError> {
    d2c_platform::telemetry::init();
    let config = ProjectorConfig::from_env()?;
    tracing::info!(?config, "Starting the projector");
    let readiness = Arc::new(Readiness::default());
    admin::serve(
        config.admin_addr,
        Arc::clone(&readiness),
        axum::Router::new(),
    )
    .await?;
    let stop = stop_on_signal(Arc::clone(&readiness));

    let Some(pool) = open_database(&config, stop.clone()).await? else {
        return Ok(());
    };
    let maintenance = tokio::spawn(
        Maintenance {
            pool: pool.clone(),
            runner: config.name.clone(),
            interval: config.maintenance_interval,
            version_retention: config.version_retention,
        }
        .run(stop.clone()),
    );
    let reports = config.slack_webhook.clone().map(|webhook| {
        tokio::spawn(
            BusinessReports {
                pool: pool.clone(),
                runner: config.name.clone(),
                interval: config.report_interval,
                webhook,
            }
            .run(stop.clone()),
        )
    });
    let engine = SinkEngine::subscribe(consumer::sink_settings(&config))?;
    tokio::spawn(watch_readiness(
        pool.clone(),
        engine.assignments(),
        Arc::clone(&readiness),
        stop.clone(),
    ));
    engine
        .run(Arc::new(Projector { pool: pool.clone() }), stop)
        .await;
    if let Err(error) = maintenance.await {
        tracing::error!(%error, "Maintenance loop ended abnormally");
    }
    if let Some(reports) = reports {
        if let Err(error) = reports.await {
            tracing::error!(%error, "Business report loop ended abnormally");
        }
    }
    pool.close().await;
    tracing::info!("Stopped cleanly");
    Ok(())
}

/// A flag set on SIGTERM/SIGINT; readiness turns false at once so traffic
/// drains away while the batch in flight finishes.
fn stop_on_signal(readiness: Arc<Readiness>) -> watch::Receiver<bool> {
    let (stop_sender, stop) = watch::channel(false);
    tokio::spawn(async move {
        d2c_platform::shutdown_signal().await;
        tracing::info!("Shutting down: finishing the batch in flight");
        readiness.stopping.store(true, Ordering::Release);
        let _ = stop_sender.send(true);
        // Keep the sender alive: a dropped sender reads as "stop" too.
        std::future::pending::<()>().await;
    });
    stop
}

/// Creates the database if needed, connects and migrates, retrying while the
/// database is unreachable. `None` if asked to stop first.
async fn open_database(
    config: &ProjectorConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<PgPool>, ProjectorError> {
    let url = config.database_url.expose();
    let mut backoff = Duration::from_millis(200);
    loop {
        let opened = async {
            d2c_readside::ensure_database(url).await?;
            let pool = d2c_readside::connect(url).await?;
            d2c_readside::migrate(&pool).await?;
            Ok::<_, d2c_readside::ReadsideError>(pool)
        }
        .await;
        match opened {
            Ok(pool) => {
                tracing::info!(database = %config.database_url, "Database ready");
                return Ok(Some(pool));
            }
            Err(error) if error.is_retryable() => {
                tracing::warn!(%error, database = %config.database_url, "Database not reachable yet; retrying");
            }
            Err(error) => return Err(error.into()),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|stopping| *stopping) => return Ok(None),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Ready = the database answers and the group has assigned partitions.
async fn watch_readiness(
    pool: PgPool,
    assignments: Arc<Assignments>,
    readiness: Arc<Readiness>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        let database = sqlx::query("SELECT 1").execute(&pool).await.is_ok();
        readiness
            .assigned
            .store(database && assignments.first_arrived(), Ordering::Release);
    }
}
