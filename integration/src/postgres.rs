//! A Postgres database per test: `d2c_t<random>` on the server named by
//! D2C_DATABASE_URL (default the local one), dropped when the test ends,
//! failed or not.

use anyhow::Context;
use sqlx::PgPool;

pub fn server_url() -> String {
    std::env::var("D2C_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub struct TestDatabase {
    /// What a projector under test gets as D2C_DATABASE_URL.
    pub url: String,
    pub pool: PgPool,
}

impl TestDatabase {
    /// An empty database: the services under test create the schema.
    pub async fn create() -> anyhow::Result<Self> {
        let server = server_url();
        let (base, _) = server
            .rsplit_once('/')
            .context("D2C_DATABASE_URL has no database path")?;
        let name = format!("d2c_t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let url = format!("{base}/{name}");
        d2c_readside::ensure_database(&url)
            .await
            .with_context(|| format!("creating {name}"))?;
        let pool = d2c_readside::connect(&url).await?;
        Ok(Self { url, pool })
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
                .build()?;
            runtime.block_on(d2c_readside::drop_database(&url))?;
            Ok::<_, anyhow::Error>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("test database {} was not dropped", self.url);
        }
    }
}
