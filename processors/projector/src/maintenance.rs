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

impl Maintenance {
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
            return;
        }
        let outcome = d2c_readside::run_maintenance(
            &self.pool,
            &self.runner,
            SystemTime::now(),
            self.version_retention,
        )
        .await;
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
