//! Writing a projected batch to Postgres: the archive rows and read-model
//! rows of one batch in one transaction, retried until it commits. A batch
//! is never skipped: offsets move on only after its commit.

use crate::metrics::{error_kind, METRICS};
use crate::records::Projection;
use d2c_readside::{
    archive_events, ensure_partitions_for, insert_order_versions, insert_product_versions,
    ReadsideError,
};
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::watch;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Rows a committed batch inserted, per table.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inserted {
    pub events: u64,
    pub product_versions: u64,
    pub order_versions: u64,
}

/// Commits `projection`, retrying with backoff. Returns `None` only when
/// asked to stop while still failing: the batch is then left uncommitted
/// and will be consumed again.
pub async fn commit(
    pool: &PgPool,
    projection: &Projection,
    stop: &mut watch::Receiver<bool>,
) -> Option<Inserted> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let error = match write(pool, projection).await {
            Ok(inserted) => return Some(inserted),
            Err(error) => error,
        };
        METRICS
            .errors
            .with_label_values(&[error_kind::DATABASE])
            .inc();
        if error.is_missing_partition() {
            // Not the leader's job to wait for: create the months this batch
            // needs and try again at once.
            tracing::warn!(%error, "Batch needs a month partition that does not exist; creating it");
            let months: Vec<i64> = projection.events.iter().map(|e| e.recorded_at_ms).collect();
            match ensure_partitions_for(pool, &months).await {
                Ok(_) => continue,
                Err(error) => tracing::warn!(%error, "Creating month partitions failed"),
            }
        } else {
            tracing::warn!(
                %error,
                retry_in_ms = backoff.as_millis() as u64,
                records = projection.events.len(),
                "Committing a batch to Postgres failed; retrying"
            );
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|stopping| *stopping) => return None,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn write(pool: &PgPool, projection: &Projection) -> Result<Inserted, ReadsideError> {
    let mut tx = pool.begin().await?;
    let inserted = Inserted {
        events: archive_events(&mut tx, &projection.events).await?,
        product_versions: insert_product_versions(&mut tx, &projection.products).await?,
        order_versions: insert_order_versions(&mut tx, &projection.orders).await?,
    };
    tx.commit().await?;
    Ok(inserted)
}
