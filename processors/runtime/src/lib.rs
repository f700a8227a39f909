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

mod changelog;
pub mod config;
mod context;
pub mod dedupe;
mod error;
mod faults;
pub mod handler;
mod outbox;
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
pub use config::StandbyMode;
pub use error::RuntimeError;
pub use handler::{read_record, Effects, Handler, HandlerError, Incoming, Outgoing};
pub use run::Processor;
