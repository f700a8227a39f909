//! Electing the one replica that runs the singleton jobs, with a Postgres
//! session-level advisory lock.
//!
//! The lock lives as long as the session that took it, so the [`Leader`]
//! keeps a dedicated connection (never one that returns to a pool, where
//! another task would inherit the lock). If the leader dies or its
//! connection breaks, Postgres ends the session, the lock is free, and
//! another replica takes it on its next try.

use crate::Result;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

/// The lock of the read side's maintenance jobs. Advisory lock keys are one
/// namespace per database; this one is "d2cmaint" in ASCII.
pub const MAINTENANCE_LOCK_KEY: i64 = 0x6432_636d_6169_6e74;

pub struct Leader {
    options: PgConnectOptions,
    key: i64,
    connection: Option<PgConnection>,
    held: bool,
}

impl Leader {
    /// A candidate for the lock `key` on the pool's database. It connects on
    /// the first [`Leader::try_acquire`].
    pub fn new(pool: &PgPool, key: i64) -> Self {
        Self {
            options: (*pool.connect_options()).clone(),
            key,
            connection: None,
            held: false,
        }
    }

    /// Whether this replica holds the lock now: keeps it if held and the
    /// session is alive, else tries to take it (without waiting).
    pub async fn try_acquire(&mut self) -> Result<bool> {
        let result = self.try_acquire_once().await;
        if result.is_err() {
            // The session is unusable or gone, and any lock with it.
            self.connection = None;
            if std::mem::take(&mut self.held) {
                tracing::warn!(key = self.key, "Lost the leader lock with its connection");
            }
        }
        result
    }

    async fn try_acquire_once(&mut self) -> Result<bool> {
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => self.connection.insert(self.options.connect().await?),
        };
        if self.held {
            sqlx::query("SELECT 1").execute(&mut *connection).await?;
            return Ok(true);
        }
        let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(&mut *connection)
            .await?;
        if acquired {
            tracing::info!(key = self.key, "Took the leader lock");
        }
        self.held = acquired;
        Ok(acquired)
    }

    /// Whether the last [`Leader::try_acquire`] found the lock held.
    pub fn is_leader(&self) -> bool {
        self.held
    }

    /// Gives the lock up and closes the connection (a clean shutdown; a crash
    /// frees it too, when Postgres notices the session ended).
    pub async fn release(&mut self) -> Result<()> {
        if let Some(mut connection) = self.connection.take() {
            // Unlocked before closing, so the next replica's try cannot race
            // the session's end.
            if std::mem::take(&mut self.held) {
                sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(self.key)
                    .execute(&mut connection)
                    .await?;
            }
            connection.close().await?;
        }
        self.held = false;
        Ok(())
    }
}
