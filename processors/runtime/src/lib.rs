//! The processor runtime, written once for every service.
//!
//! A service supplies a [`Handler`]: a plain function of (state, message) →
//! effects (state changes, outgoing messages), with no I/O. The runtime owns
//! the rest: the Kafka consumer group, one sequential worker per owned
//! partition, RocksDB partition stores with the consumed offset in the same
//! write batch as the state, the changelog topic and restore from it, the
//! producer, dead letters, metrics, health and graceful shutdown.
//!
//! Delivery, chosen per service by `D2C_PROCESSING_GUARANTEE`:
//! - `exactly_once` (default): each batch's outputs, changelog entries and
//!   input offsets are one Kafka transaction (`transactions`), committed with
//!   the consumer group's metadata so a fenced zombie cannot commit; every
//!   consumer reads `read_committed`. RocksDB is a cache of the changelog,
//!   rebuilt from it when behind (`restore`). Proven by
//!   `integration/tests/exactly_once.rs` and `zombie.rs`.
//! - `at_least_once`: outputs, then changelog, then the store write holding
//!   the offset. A crash in between hands the batch out again; outgoing
//!   message ids are derived from the input id, so copies carry the same id,
//!   and handlers that are not idempotent by domain key ask the runtime to
//!   drop copies by message id ([`Handler::dedupe_by_message_id`], [`dedupe`];
//!   proven by `integration/tests/duplicates.rs`).

pub mod config;
pub mod dedupe;
mod faults;
pub mod handler;
mod partitions;
mod restore;
pub mod router;
mod run;
pub mod sink;
mod standby;
mod stuck;
pub mod testing;
mod ticks;
mod transactions;
mod worker;

pub use config::RuntimeConfig;
pub use handler::{read_record, Effects, Handler, HandlerError, Incoming, Outgoing};
pub use run::{run, run_built, run_with_routes, BuildHandler, ProcessorSpec};
pub use standby::StandbyMode;

/// Errors of the runtime. Kafka errors carry where they happened.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("Kafka failed on {topic}[{partition}]: {source}")]
    Kafka {
        topic: String,
        partition: i32,
        source: rdkafka::error::KafkaError,
    },
    #[error("Kafka client setup failed: {0}")]
    KafkaSetup(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    State(#[from] d2c_state::StateError),
    #[error("restoring partition {partition} from {topic} failed: {reason}")]
    Restore {
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error("partition {0} was revoked")]
    Revoked(i32),
    #[error("the consumer group membership is stuck: {0}")]
    MembershipStuck(String),
}

impl From<d2c_platform::config::ConfigError> for RuntimeError {
    fn from(error: d2c_platform::config::ConfigError) -> Self {
        Self::Config(error.0)
    }
}
