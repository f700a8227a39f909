use anyhow::Context;
use d2c_gateway::admission::Admission;
use d2c_gateway::auth::Tokens;
use d2c_gateway::bus::Bus;
use d2c_gateway::cache::{start_catalog_listener, CacheSettings, CatalogCache, CATALOG_CONSUMER};
use d2c_gateway::config::{GatewayConfig, DEV_ADMIN_TOKEN, DEV_AUTH_SECRET};
use d2c_gateway::limits::CheckoutLimiter;
use d2c_gateway::replies::{start_reply_consumer, Pending};
use d2c_gateway::{router, AppState};
use d2c_platform::global::{GlobalTopicSettings, StartAt};
use d2c_platform::kafka::producer_config;
use d2c_platform::producer::KafkaProducer;
use d2c_proto::ReplyTo;
use d2c_topology::{topic, TopicNames};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// See the workspace Cargo.toml: freed password-hash buffers go back to
/// the OS instead of staying in glibc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    d2c_platform::telemetry::init();
    let config = GatewayConfig::from_env()?;
    tracing::info!(?config, "Starting the gateway");
    if config.auth_secret.expose() == DEV_AUTH_SECRET {
        tracing::warn!(
            "D2C_AUTH_SECRET is the local development secret: set a real one outside a laptop"
        );
    }
    if config.admin_token.expose() == DEV_ADMIN_TOKEN {
        tracing::warn!(
            "D2C_ADMIN_TOKEN is the local development token: set a real one outside a laptop"
        );
    }
    let names = TopicNames::new(config.topic_prefix.clone());
    let producer =
        KafkaProducer::create(&producer_config(&config.brokers, "gateway", config.linger))?;
    let pending = Pending::new(config.max_pending);
    let reply_to = ReplyTo {
        topic: names.name(topic::GATEWAY_REPLIES),
        partition: config.reply_partition,
    };
    let replies_assigned = Arc::new(AtomicBool::new(false));
    let reply_loop = start_reply_consumer(
        &config.brokers,
        &reply_to.topic,
        reply_to.partition,
        config.fetch_wait,
        config.stats_interval,
        Arc::clone(&pending),
        Arc::clone(&replies_assigned),
    )
    .await
    .with_context(|| format!("reading replies from {reply_to}"))?;
    let cache = CatalogCache::new(&CacheSettings {
        enabled: config.cache_enabled,
        products: config.cache_products,
        searches: config.cache_searches,
        search_ttl: config.search_cache_ttl,
        sku_ttl: config.sku_cache_ttl,
    });
    let catalog_assigned = Arc::new(AtomicBool::new(false));
    let catalog_events = names.name(topic::CATALOG_EVENTS);
    let feed_settings = GlobalTopicSettings {
        brokers: config.brokers.clone(),
        client_id: CATALOG_CONSUMER.to_owned(),
        topic: catalog_events.clone(),
        start: StartAt::End,
        fetch_wait: config.fetch_wait,
        stats_interval: config.stats_interval,
        refresh: Duration::from_secs(10),
    };
    let feed_cache = Arc::clone(&cache);
    let feed_assigned = Arc::clone(&catalog_assigned);
    let runtime = tokio::runtime::Handle::current();
    // Kept for the life of the process: dropping it stops the feed.
    let _catalog_feed = tokio::task::spawn_blocking(move || {
        let _entered = runtime.enter();
        start_catalog_listener(feed_settings, feed_cache, feed_assigned)
    })
    .await
    .context("starting the catalog feed")?
    .with_context(|| format!("reading {catalog_events}"))?;
    // Lazy: the gateway starts (and answers what needs no read side) while
    // Postgres is down; `/ready` tells.
    let reads = sqlx::postgres::PgPoolOptions::new()
        .max_connections(config.database_pool)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(&config.database_url)
        .context("D2C_DATABASE_URL is not a Postgres URL")?;
    let checkout_limit =
        CheckoutLimiter::new(config.checkout_rate_per_minute, config.checkout_burst);
    checkout_limit.spawn_eviction(Duration::from_secs(60));
    let state = AppState {
        checkout_limit,
        tokens: Tokens::new(config.auth_secret.expose(), config.token_ttl),
        reads,
        cache,
        catalog_assigned,
        bus: Bus {
            producer: producer.clone(),
            names,
            reply_to,
            pending,
            reply_timeout: config.reply_timeout,
            admission: Admission::new(&config.admission)?,
        },
        config: Arc::new(config.clone()),
        replies_assigned,
    };
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding {}", config.http_addr))?;
    let bound = listener.local_addr()?;
    // Machine-readable, for scripts and tests that asked for port 0.
    println!("HTTP_LISTENING {bound}");
    tracing::info!(%bound, "Gateway listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(d2c_platform::shutdown_signal())
        .await?;
    // Every parked request is answered by now: no reply is awaited.
    reply_loop.stop().await;
    producer
        .flush(Duration::from_secs(10))
        .context("flushing the producer")?;
    tracing::info!("Stopped cleanly");
    // Buffered spans and error reports go out before the process exits.
    let _ = tokio::task::spawn_blocking(d2c_platform::telemetry::flush).await;
    Ok(())
}
