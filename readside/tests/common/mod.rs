//! What the read-side tests share: a database of their own per test.

use sqlx::PgPool;
use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh database (`d2c_t<random>`) on the server D2C_DATABASE_URL names
/// (default the local `postgres`), migrated, dropped when the test ends.
pub struct TestDb {
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> Self {
        let server = std::env::var("D2C_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let (base, _) = server.rsplit_once('/').expect("database URL has a path");
        let name = format!("d2c_t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let url = format!("{base}/{name}");
        d2c_readside::ensure_database(&url)
            .await
            .expect("database created");
        let pool = d2c_readside::connect(&url).await.expect("connected");
        d2c_readside::migrate(&pool).await.expect("migrated");
        Self { url, pool }
    }

    #[allow(dead_code)] // not every test file counts rows
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count query")
    }
}

impl Drop for TestDb {
    /// Drops the database on a thread of its own: Drop cannot await, and a
    /// failed test must not leave its database behind.
    fn drop(&mut self) {
        // The pool's connections belong to the test's runtime, which is
        // blocked here: leave them to FORCE, which ends their sessions.
        let url = self.url.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(d2c_readside::drop_database(&url))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("test database {} was not dropped", self.url);
        }
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}
