//! Gateway configuration: environment variables with local defaults; one
//! struct, printed at start.

use crate::admission::AdmissionSettings;
use d2c_platform::config::ConfigError;
use d2c_platform::config::{mask_url, var, Secret};
use std::net::SocketAddr;
use std::time::Duration;

/// The local default signing secret: fine on a laptop, refused nowhere, so
/// the gateway warns loudly when it runs with it.
pub const DEV_AUTH_SECRET: &str = "d2c-local-dev-secret-change-me";
/// The local default admin token, for the same reason.
pub const DEV_ADMIN_TOKEN: &str = "d2c-local-admin-token";

#[derive(Clone)]
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
    /// D2C_ADMISSION_MAX, D2C_ADMISSION_MIN, D2C_ADMISSION_SLOW_MS: requests
    /// in flight through Kafka at most (the limit starts at the maximum and
    /// shrinks while replies are slower than the threshold); past it, `503`.
    pub admission: AdmissionSettings,
    /// D2C_MAX_BODY_BYTES
    pub max_body_bytes: usize,
    /// D2C_KAFKA__*: librdkafka properties passed through (masked).
    pub kafka_properties: d2c_platform::kafka::KafkaProperties,
    /// D2C_FETCH_WAIT_MS (see the processors' setting of the same name)
    pub fetch_wait: Duration,
    /// D2C_LINGER_MS
    pub linger: Duration,
    /// D2C_DATABASE_URL: the Postgres read side (search, order lists, SKU
    /// prices for carts).
    pub database_url: String,
    /// D2C_DATABASE_POOL: connections to it at most.
    pub database_pool: u32,
    /// D2C_AUTH_SECRET: signs customer tokens; the same on every instance.
    pub auth_secret: Secret,
    /// D2C_TOKEN_TTL_SECS: how long a login token is valid.
    pub token_ttl: Duration,
    /// D2C_ADMIN_TOKEN: the bearer token of `/admin/*` (operators, the seed
    /// command). Empty: admin routes refuse everyone.
    pub admin_token: Secret,
    /// D2C_CACHE: serve catalog reads and searches from the local cache
    /// (`false` to measure without it).
    pub cache_enabled: bool,
    /// D2C_CACHE_PRODUCTS: products (and SKUs) kept in the local cache.
    pub cache_products: u64,
    /// D2C_CACHE_SEARCHES: search result pages kept in the local cache.
    pub cache_searches: u64,
    /// D2C_SEARCH_CACHE_TTL_MS: a cached search page lives at most this
    /// long. Catalog events clear every page at once, but the read side may
    /// lag an event by a moment; this bounds how long that can show.
    pub search_cache_ttl: Duration,
    /// D2C_SKU_CACHE_TTL_MS: a SKU's cached product (cart prices) lives at
    /// most this long; catalog events evict it at once.
    pub sku_cache_ttl: Duration,
    /// D2C_CHECKOUT_RATE_PER_MINUTE: checkouts (`POST /orders`, cart
    /// checkouts) one customer may start per minute on this instance; 0: no
    /// limit.
    pub checkout_rate_per_minute: u32,
    /// D2C_CHECKOUT_BURST: how many of those may come at once.
    pub checkout_burst: u32,
    /// D2C_STATS_INTERVAL_MS: how often librdkafka reports the statistics
    /// the reply and catalog consumers' lag is read from (0: never).
    pub stats_interval: Duration,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("http_addr", &self.http_addr)
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("reply_partition", &self.reply_partition)
            .field("reply_timeout", &self.reply_timeout)
            .field("max_pending", &self.max_pending)
            .field("admission", &self.admission)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("kafka_properties", &self.kafka_properties)
            .field("fetch_wait", &self.fetch_wait)
            .field("linger", &self.linger)
            .field("database_url", &mask_url(&self.database_url))
            .field("database_pool", &self.database_pool)
            .field("auth_secret", &self.auth_secret)
            .field("token_ttl", &self.token_ttl)
            .field("admin_token", &self.admin_token)
            .field("cache_enabled", &self.cache_enabled)
            .field("cache_products", &self.cache_products)
            .field("cache_searches", &self.cache_searches)
            .field("search_cache_ttl", &self.search_cache_ttl)
            .field("sku_cache_ttl", &self.sku_cache_ttl)
            .field("checkout_rate_per_minute", &self.checkout_rate_per_minute)
            .field("checkout_burst", &self.checkout_burst)
            .field("stats_interval", &self.stats_interval)
            .finish()
    }
}

impl GatewayConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        d2c_platform::config::reject_unknown_variables()?;
        Ok(Self {
            http_addr: var("D2C_HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            brokers: var("D2C_KAFKA_BROKERS", "127.0.0.1:9092".to_owned())?,
            topic_prefix: var("D2C_TOPIC_PREFIX", String::new())?,
            reply_partition: var("D2C_REPLY_PARTITION", 0)?,
            reply_timeout: Duration::from_millis(var("D2C_REPLY_TIMEOUT_MS", 2_000)?),
            max_pending: var("D2C_MAX_PENDING", 10_000)?,
            admission: AdmissionSettings {
                max: var("D2C_ADMISSION_MAX", 1_000)?,
                min: var("D2C_ADMISSION_MIN", 20)?,
                slow: Duration::from_millis(var("D2C_ADMISSION_SLOW_MS", 1_000)?),
            },
            max_body_bytes: var("D2C_MAX_BODY_BYTES", 64 * 1024)?,
            kafka_properties: d2c_platform::kafka::KafkaProperties::from_env().clone(),
            fetch_wait: Duration::from_millis(var(
                "D2C_FETCH_WAIT_MS",
                d2c_platform::kafka::DEFAULT_FETCH_WAIT_MS,
            )?),
            linger: Duration::from_millis(var("D2C_LINGER_MS", 0)?),
            database_url: var(
                "D2C_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/d2c".to_owned(),
            )?,
            database_pool: var("D2C_DATABASE_POOL", 16)?,
            auth_secret: var("D2C_AUTH_SECRET", Secret::new(DEV_AUTH_SECRET))?,
            token_ttl: Duration::from_secs(var("D2C_TOKEN_TTL_SECS", 3_600)?),
            admin_token: var("D2C_ADMIN_TOKEN", Secret::new(DEV_ADMIN_TOKEN))?,
            cache_enabled: var("D2C_CACHE", true)?,
            cache_products: var("D2C_CACHE_PRODUCTS", 50_000)?,
            cache_searches: var("D2C_CACHE_SEARCHES", 10_000)?,
            search_cache_ttl: Duration::from_millis(var("D2C_SEARCH_CACHE_TTL_MS", 2_000)?),
            sku_cache_ttl: Duration::from_millis(var("D2C_SKU_CACHE_TTL_MS", 60_000)?),
            checkout_rate_per_minute: var("D2C_CHECKOUT_RATE_PER_MINUTE", 30)?,
            checkout_burst: var("D2C_CHECKOUT_BURST", 10)?,
            stats_interval: Duration::from_millis(var(
                "D2C_STATS_INTERVAL_MS",
                d2c_platform::lag::DEFAULT_STATS_INTERVAL_MS,
            )?),
        })
    }
}
