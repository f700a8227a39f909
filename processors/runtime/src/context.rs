//! What every part of a running processor shares: its configuration, topics,
//! handler, producer, store and the channels between the poll thread, the
//! partition workers and the committers.

use crate::config::RuntimeConfig;
use crate::error::RuntimeError;
use crate::handler::Handler;
use crate::standby::Standby;
use crate::transactions::CommitQueue;
use d2c_platform::admin::Readiness;
use d2c_platform::producer::KafkaProducer;
use d2c_state::Store;
use d2c_topology::TopicNames;
use rdkafka::Offset;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

/// Physical topic names this processor uses itself.
#[derive(Debug, Clone)]
pub(crate) struct OwnTopics {
    pub input: String,
    pub changelog: String,
    pub dead_letter: String,
}

/// What every partition worker shares.
pub(crate) struct Shared {
    pub service: &'static str,
    pub config: RuntimeConfig,
    pub names: TopicNames,
    pub topics: OwnTopics,
    pub handler: Arc<dyn Handler>,
    pub producer: KafkaProducer,
    pub store: Store,
    /// (partition, offset) of batches made durable, for the poll thread to
    /// store for the next auto-commit (`at_least_once` only).
    pub offsets: Sender<(i32, i64)>,
    /// Where workers hand batches to the transaction committer
    /// (`exactly_once` only).
    pub commits: Option<CommitQueue>,
    /// (partition, offset) of partitions whose store is current, for the
    /// poll thread to seek to and resume.
    pub resumes: Sender<(i32, Offset)>,
    /// Held while stores are restored: one assignment at a time (and no
    /// standby store set up meanwhile).
    pub restoring: Arc<Mutex<()>>,
    /// The warm standby follower (`D2C_STANDBY=all`).
    pub standby: Option<Standby>,
    /// Assigned partitions whose store is not current yet; the instance is
    /// ready once none is left.
    pub opening: AtomicUsize,
    pub readiness: Arc<Readiness>,
    /// Set when the instance cannot go on (an assignment that cannot be
    /// honoured, a broken producer); the poll loop then stops the process.
    pub fatal: Arc<Mutex<Option<RuntimeError>>>,
    pub runtime: tokio::runtime::Handle,
}

impl Shared {
    /// One more assigned partition has its store current (or was revoked
    /// before): the first assignment is ready once all have.
    pub fn partition_opened(&self) {
        if self.opening.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.readiness.assigned.store(true, Ordering::Release);
        }
    }

    pub fn record_fatal(&self, error: RuntimeError) {
        tracing::error!(%error, "The instance cannot go on and will stop");
        *self
            .fatal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error);
    }
}
