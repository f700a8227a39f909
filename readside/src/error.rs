//! The crate's one error type.

/// SQLSTATE of "no partition of relation … found for row" (check_violation).
const CHECK_VIOLATION: &str = "23514";

/// SQLSTATE classes worth retrying: transaction rollback (serialization,
/// deadlock), connection exception, insufficient resources, operator
/// intervention (shutdown, restart). Others (syntax, permissions, data) fail
/// the same way every time.
const RETRYABLE_CLASSES: [&str; 4] = ["40", "08", "53", "57"];

#[derive(Debug, thiserror::Error)]
pub enum ReadsideError {
    #[error("database request failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database URL names no database")]
    NoDatabaseInUrl,
    #[error("stored {table} document {id} v{version} does not decode: {source}")]
    Decode {
        table: &'static str,
        id: String,
        version: i64,
        source: prost::DecodeError,
    },
    #[error("invalid search: {0}")]
    InvalidQuery(&'static str),
}

impl ReadsideError {
    /// Whether trying again later can succeed: the database was unreachable,
    /// busy or restarted, as opposed to a request it will always refuse.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReadsideError::Database(error)
            | ReadsideError::Migrate(sqlx::migrate::MigrateError::Execute(error)) => {
                is_transient(error)
            }
            ReadsideError::Migrate(_)
            | ReadsideError::NoDatabaseInUrl
            | ReadsideError::Decode { .. }
            | ReadsideError::InvalidQuery(_) => false,
        }
    }

    /// An archived row whose month has no partition yet (the maintenance job
    /// has not run, or the record is older than the months it keeps ready).
    pub fn is_missing_partition(&self) -> bool {
        match self {
            ReadsideError::Database(sqlx::Error::Database(error)) => {
                error.code().as_deref() == Some(CHECK_VIOLATION)
                    && error.message().contains("no partition")
            }
            _ => false,
        }
    }
}

fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            RETRYABLE_CLASSES
                .iter()
                .any(|class| code.starts_with(class))
        }),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}
