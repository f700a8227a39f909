//! Gateway configuration: environment variables with local defaults; one
//! struct, printed at start.

use d2c_runtime::config::var;
use d2c_runtime::RuntimeError;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// D2C_HTTP_ADDR
    pub http_addr: SocketAddr,
    /// D2C_KAFKA_BROKERS
    pub brokers: String,
    /// D2C_TOPIC_PREFIX
    pub topic_prefix: String,
    /// D2C_REPLY_PARTITION: this instance's partition of gateway.replies.
    /// Unique per instance (a StatefulSet ordinal, say).
    pub reply_partition: i32,
    /// D2C_REPLY_TIMEOUT_MS: how long a request waits for its reply before
    /// answering 202 with a Location to poll.
    pub reply_timeout: Duration,
    /// D2C_MAX_PENDING: parked requests at most; past it requests are
    /// accepted (202) without waiting.
    pub max_pending: usize,
    /// D2C_MAX_BODY_BYTES
    pub max_body_bytes: usize,
    /// D2C_FETCH_WAIT_MS (see the processors' setting of the same name)
    pub fetch_wait: Duration,
    /// D2C_LINGER_MS
    pub linger: Duration,
}

impl GatewayConfig {
    pub fn from_env() -> Result<Self, RuntimeError> {
        Ok(Self {
            http_addr: var("D2C_HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            brokers: var("D2C_KAFKA_BROKERS", "127.0.0.1:9092".to_owned())?,
            topic_prefix: var("D2C_TOPIC_PREFIX", String::new())?,
            reply_partition: var("D2C_REPLY_PARTITION", 0)?,
            reply_timeout: Duration::from_millis(var("D2C_REPLY_TIMEOUT_MS", 2_000)?),
            max_pending: var("D2C_MAX_PENDING", 10_000)?,
            max_body_bytes: var("D2C_MAX_BODY_BYTES", 64 * 1024)?,
            fetch_wait: Duration::from_millis(var("D2C_FETCH_WAIT_MS", 5)?),
            linger: Duration::from_millis(var("D2C_LINGER_MS", 0)?),
        })
    }
}
