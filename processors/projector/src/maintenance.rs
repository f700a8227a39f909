//! The maintenance loop: every interval (and once at start) this replica
//! tries to be the leader; while it is, it runs the read side's singleton
//! jobs. Exactly one live replica holds the lock, so exactly one runs them.

use crate::metrics::METRICS;
use d2c_readside::{Leader, MAINTENANCE_LOCK_KEY};
use sqlx::PgPool;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

pub struct Maintenance {
    pub pool: PgPool,
    pub runner: String,
    pub interval: Duration,
    pub version_retention: Duration,
}

/// How far back the status-age gauges look: an unsettled order untouched
/// for longer is long past any alert.
const STATUS_AGE_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

impl Maintenance {
    /// `d2c_orders_in_status` and `d2c_orders_status_age_seconds`, from the
    /// read side: what the "orders stuck" alert and the dashboard's orders
    /// by status age panel read. Only the leader exports them, so a sum over
    /// replicas counts each order once.
    async fn refresh_status_ages(&self) {
        match d2c_readside::orders_by_status_age(&self.pool, STATUS_AGE_WINDOW).await {
            Ok(ages) => {
                METRICS.orders_in_status.reset();
                METRICS.status_age.reset();
                for age in ages {
                    METRICS
                        .orders_in_status
                        .with_label_values(&[&age.status])
                        .set(age.orders);
                    METRICS
                        .status_age
                        .with_label_values(&[&age.status])
                        .set(age.oldest_seconds);
                }
            }
            Err(error) => tracing::warn!(%error, "Orders by status age not refreshed"),
        }
    }

    /// Runs until `stop`, then gives the lock up.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut leader = Leader::new(&self.pool, MAINTENANCE_LOCK_KEY);
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|stopping| *stopping) => break,
            }
            self.round(&mut leader).await;
        }
        if let Err(error) = leader.release().await {
            tracing::debug!(%error, "Releasing the leader lock failed; it ends with the session");
        }
        METRICS.leader.set(0);
    }

    async fn round(&self, leader: &mut Leader) {
        let leading = match leader.try_acquire().await {
            Ok(leading) => leading,
            Err(error) => {
                tracing::warn!(%error, "Cannot reach Postgres to try for the leader lock");
                false
            }
        };
        METRICS.leader.set(i64::from(leading));
        if !leading {
            METRICS.orders_in_status.reset();
            METRICS.status_age.reset();
            return;
        }
        let outcome = d2c_readside::run_maintenance(
            &self.pool,
            &self.runner,
            SystemTime::now(),
            self.version_retention,
        )
        .await;
        self.refresh_status_ages().await;
        match outcome {
            Ok(report) => {
                METRICS.maintenance_runs.with_label_values(&["ok"]).inc();
                tracing::debug!(?report, "Maintenance done");
            }
            Err(error) => {
                METRICS
                    .maintenance_runs
                    .with_label_values(&["failed"])
                    .inc();
                tracing::warn!(%error, "Maintenance failed; trying again next round");
            }
        }
    }
}
