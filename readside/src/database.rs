//! Connecting, creating the database, migrating.

use crate::{ReadsideError, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// SQLSTATE duplicate_database, and unique_violation (two CREATE DATABASE at
/// once can collide on pg_database's unique index instead).
const ALREADY_EXISTS: [&str; 2] = ["42P04", "23505"];

/// SQLSTATE invalid_catalog_name: the database does not exist.
const NO_SUCH_DATABASE: &str = "3D000";

/// A pool on `url`. Fails if the database cannot be reached now.
pub async fn connect(url: &str) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?;
    Ok(PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?)
}

/// Applies the migrations embedded in this build. sqlx's migrator holds its
/// own advisory lock meanwhile, so replicas starting together are safe.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    sqlx::migrate!("./migrations").run(pool).await?;
    Ok(())
}

/// Creates the database named in `url` unless it exists, connecting to the
/// `postgres` database of the same server to do so (dev stack and tests;
/// production databases are provisioned).
pub async fn ensure_database(url: &str) -> Result<()> {
    let options = PgConnectOptions::from_str(url)?;
    // Connecting is the cheapest test, and needs no access to `postgres`.
    match options.connect().await {
        Ok(connection) => return Ok(connection.close().await?),
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some(NO_SUCH_DATABASE) => {}
        Err(error) => return Err(error.into()),
    }
    let (mut admin, name) = admin_connection(url).await?;
    let created = sqlx::query(&format!("CREATE DATABASE {}", quote_identifier(&name)))
        .execute(&mut admin)
        .await;
    match created {
        Ok(_) => tracing::info!(database = %name, "Created the database"),
        // Another replica or test created it meanwhile.
        Err(sqlx::Error::Database(error))
            if error
                .code()
                .is_some_and(|code| ALREADY_EXISTS.contains(&code.as_ref())) => {}
        Err(error) => return Err(error.into()),
    }
    admin.close().await?;
    Ok(())
}

/// Drops the database named in `url`, disconnecting its sessions first. For
/// tests, which each create a database of their own.
pub async fn drop_database(url: &str) -> Result<()> {
    let (mut admin, name) = admin_connection(url).await?;
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_identifier(&name)
    ))
    .execute(&mut admin)
    .await?;
    admin.close().await?;
    Ok(())
}

/// A connection to the `postgres` database of `url`'s server, and the name of
/// the database `url` names.
async fn admin_connection(url: &str) -> Result<(PgConnection, String)> {
    let options = PgConnectOptions::from_str(url)?;
    let name = options
        .get_database()
        .ok_or(ReadsideError::NoDatabaseInUrl)?
        .to_owned();
    let admin = options.database("postgres").connect().await?;
    Ok((admin, name))
}

/// `name` as a double-quoted SQL identifier (DDL takes no bind parameters).
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` without NUL characters, which Postgres text and jsonb cannot hold:
/// a record carrying one must still be archivable, or the projector would
/// retry it forever. (The protobuf document keeps the exact bytes.)
pub(crate) fn without_nul(text: &str) -> String {
    text.replace('\0', "")
}
