use anyhow::Context;
use d2c_gateway::bus::Bus;
use d2c_gateway::config::GatewayConfig;
use d2c_gateway::replies::{start_reply_consumer, Pending};
use d2c_gateway::{router, AppState};
use d2c_proto::ReplyTo;
use d2c_runtime::kafka::producer_config;
use d2c_topology::{topic, TopicNames};
use rdkafka::producer::{FutureProducer, Producer};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    d2c_runtime::telemetry::init();
    let config = GatewayConfig::from_env()?;
    tracing::info!(?config, "Starting the gateway");
    let names = TopicNames::new(config.topic_prefix.clone());
    let producer: FutureProducer =
        producer_config(&config.brokers, "gateway", config.linger).create()?;
    let pending = Pending::new(config.max_pending);
    let reply_to = ReplyTo {
        topic: names.name(topic::GATEWAY_REPLIES),
        partition: config.reply_partition,
    };
    let replies_assigned = Arc::new(AtomicBool::new(false));
    start_reply_consumer(
        &config.brokers,
        &reply_to.topic,
        reply_to.partition,
        config.fetch_wait,
        Arc::clone(&pending),
        Arc::clone(&replies_assigned),
    )
    .await
    .with_context(|| format!("reading replies from {reply_to}"))?;
    let state = AppState {
        bus: Bus {
            producer: producer.clone(),
            names,
            reply_to,
            pending,
            reply_timeout: config.reply_timeout,
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
        .with_graceful_shutdown(d2c_runtime::shutdown_signal())
        .await?;
    producer
        .flush(Duration::from_secs(10))
        .context("flushing the producer")?;
    tracing::info!("Stopped cleanly");
    Ok(())
}
