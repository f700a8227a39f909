//! Test support: a Postgres database per test, `d2c_t<random>` on the
//! server D2C_DATABASE_URL names (default the local `postgres`), dropped
//! when the test ends, failed or not. The read side's own tests and the
//! integration tests both use it.

use crate::{ReadsideError, Result};
use sqlx::PgPool;

/// The server tests make their databases on.
pub fn server_url() -> String {
    std::env::var("D2C_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub struct TestDatabase {
    /// What a service under test gets as D2C_DATABASE_URL.
    pub url: String,
    pub pool: PgPool,
}

impl TestDatabase {
    /// An empty database: the services under test create the schema.
    pub async fn create() -> Result<Self> {
        let server = server_url();
        let (base, _) = server
            .rsplit_once('/')
            .ok_or(ReadsideError::NoDatabaseInUrl)?;
        let name = format!("d2c_t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let url = format!("{base}/{name}");
        crate::ensure_database(&url).await?;
        let pool = crate::connect(&url).await?;
        Ok(Self { url, pool })
    }

    /// [`TestDatabase::create`], with the read side's schema.
    pub async fn migrated() -> Result<Self> {
        let database = Self::create().await?;
        crate::migrate(&database.pool).await?;
        Ok(database)
    }

    /// A `count(*)`-style query; 0 while the table does not exist yet (the
    /// service under test has not migrated).
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or(0)
    }
}

impl Drop for TestDatabase {
    /// Drop cannot await, so the database is dropped on a thread of its own.
    fn drop(&mut self) {
        // The pool's connections belong to the test's runtime, which is
        // blocked here: leave them to FORCE, which ends their sessions.
        let url = self.url.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime
                .block_on(crate::drop_database(&url))
                .map_err(|error| error.to_string())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("test database {} was not dropped", self.url);
        }
    }
}
