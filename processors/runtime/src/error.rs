//! The runtime's errors.

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
