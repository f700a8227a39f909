//! Wiring: configuration, store, producer, the poll thread, the admin
//! endpoint, and graceful shutdown (SIGTERM/SIGINT: finish in-flight batches,
//! flush the producer, commit offsets, leave the group).

use crate::admin::{self, Readiness};
use crate::handler::Handler;
use crate::kafka::{group_consumer_config, producer_config};
use crate::lag::{enable_statistics, ConsumerLag};
use crate::partitions::{Partitions, RebalanceContext};
use crate::{telemetry, RuntimeConfig, RuntimeError};
use anyhow::Context as _;
use axum::Router;
use d2c_state::{Store, StoreOptions};
use d2c_topology::TopicNames;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, Producer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

/// Which service this is; topic names follow from it.
#[derive(Debug, Clone, Copy)]
pub struct ProcessorSpec {
    pub service: &'static str,
    pub default_admin_port: u16,
}

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
    pub producer: FutureProducer,
    pub store: Store,
    /// (partition, offset) of batches made durable, for the poll thread to store.
    pub offsets: Sender<(i32, i64)>,
    pub runtime: tokio::runtime::Handle,
}

/// Run a processor until SIGTERM/SIGINT, or until it cannot go on.
pub async fn run(spec: ProcessorSpec, handler: Arc<dyn Handler>) -> anyhow::Result<()> {
    run_with_routes(spec, handler, Router::new()).await
}

/// Builds a handler once the configuration is known, before the processor
/// joins its group (e.g. to load a global table); runs on a blocking thread.
pub type BuildHandler =
    Box<dyn FnOnce(&RuntimeConfig, &TopicNames) -> anyhow::Result<Arc<dyn Handler>> + Send>;

/// [`run`], with the handler made by `build`: the admin endpoint answers
/// `/health` meanwhile, and `/ready` only once the processor has joined.
pub async fn run_built(spec: ProcessorSpec, build: BuildHandler) -> anyhow::Result<()> {
    telemetry::init();
    finish(spec, run_processor(spec, build, Router::new()).await).await
}

/// [`run`], with `routes` served by the admin HTTP endpoint next to
/// `/health`, `/ready` and `/metrics` (for a service's own endpoints, e.g.
/// provider webhooks). `routes` must not reuse those three paths.
pub async fn run_with_routes(
    spec: ProcessorSpec,
    handler: Arc<dyn Handler>,
    routes: Router,
) -> anyhow::Result<()> {
    telemetry::init();
    let build: BuildHandler = Box::new(move |_, _| Ok(handler));
    finish(spec, run_processor(spec, build, routes).await).await
}

async fn finish(spec: ProcessorSpec, result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(error) = &result {
        // Logged here so that Slack and Sentry hear of it before the exit.
        tracing::error!(error = %format!("{error:#}"), "The {} processor failed", spec.service);
    }
    // Buffered spans and error reports go out before the process exits.
    let _ = tokio::task::spawn_blocking(telemetry::flush).await;
    result
}

async fn run_processor(
    spec: ProcessorSpec,
    build: BuildHandler,
    routes: Router,
) -> anyhow::Result<()> {
    let config = RuntimeConfig::from_env(spec.service, spec.default_admin_port)?;
    tracing::info!(?config, "Starting the {} processor", spec.service);
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating state dir {}", config.state_dir.display()))?;
    let store = Store::open(
        &config.state_dir,
        StoreOptions {
            sync_writes: config.sync_writes,
            ..StoreOptions::default()
        },
    )?;
    let producer: FutureProducer =
        producer_config(&config.brokers, spec.service, config.linger).create()?;
    let names = TopicNames::new(config.topic_prefix.clone());
    let topics = OwnTopics {
        input: names.name(&format!("{}.messages", spec.service)),
        changelog: names.name(&format!("{}.changelog", spec.service)),
        dead_letter: names.name(&format!("{}.dead-letter", spec.service)),
    };
    let readiness = Arc::new(Readiness::default());
    admin::serve(config.admin_addr, Arc::clone(&readiness), routes).await?;

    let handler = {
        let (config, names) = (config.clone(), names.clone());
        tokio::task::spawn_blocking(move || build(&config, &names))
            .await
            .context("building the handler")??
    };
    let (offsets, stored_offsets) = std::sync::mpsc::channel();
    let shared = Arc::new(Shared {
        service: spec.service,
        config: config.clone(),
        names,
        topics: topics.clone(),
        handler,
        producer: producer.clone(),
        store,
        offsets,
        runtime: tokio::runtime::Handle::current(),
    });
    let partitions = Arc::new(Partitions::new(Arc::clone(&shared), Arc::clone(&readiness)));
    let mut consumer_config = group_consumer_config(
        &config.brokers,
        &config.group_id,
        spec.service,
        config.fetch_wait,
        config.session_timeout,
    );
    let consumer: BaseConsumer<RebalanceContext> =
        enable_statistics(&mut consumer_config, config.stats_interval).create_with_context(
            RebalanceContext {
                partitions: Arc::clone(&partitions),
                lag: ConsumerLag::new(config.group_id.clone()),
            },
        )?;
    consumer.subscribe(&[&topics.input])?;

    let stop = Arc::new(AtomicBool::new(false));
    if let Some(interval) = shared.handler.tick_interval() {
        crate::ticks::spawn(
            producer.clone(),
            topics.input.clone(),
            Arc::clone(&partitions),
            interval,
            Arc::clone(&stop),
        );
    }
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let poll_stop = Arc::clone(&stop);
    let poll_partitions = Arc::clone(&partitions);
    let poll_thread = std::thread::Builder::new()
        .name(format!("{}-poll", spec.service))
        .spawn(move || {
            let result = poll_loop(&consumer, &poll_partitions, &stored_offsets, &poll_stop);
            let _ = done_tx.send(());
            result
        })?;

    tokio::select! {
        () = shutdown_signal() => tracing::info!("Shutting down: finishing in-flight batches"),
        _ = done_rx => tracing::warn!("Poll loop ended"),
    }
    readiness.stopping.store(true, Ordering::Release);
    stop.store(true, Ordering::Release);
    let result = tokio::task::spawn_blocking(move || poll_thread.join())
        .await
        .context("joining the poll thread")?
        .map_err(|_| anyhow::anyhow!("poll thread panicked"))?;
    producer
        .flush(Duration::from_secs(10))
        .context("flushing the producer")?;
    result?;
    tracing::info!("Stopped cleanly");
    Ok(())
}

fn poll_loop(
    consumer: &BaseConsumer<RebalanceContext>,
    partitions: &Partitions,
    stored_offsets: &Receiver<(i32, i64)>,
    stop: &AtomicBool,
) -> Result<(), RuntimeError> {
    let input = partitions.input_topic();
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => partitions.dispatch(message.detach()),
            Some(Err(error)) => tracing::warn!(%error, "Consumer error"),
            None => {}
        }
        store_offsets(consumer, input, stored_offsets);
        if let Some(error) = partitions
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(error);
        }
    }
    partitions.revoke_all();
    store_offsets(consumer, input, stored_offsets);
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        Err(error)
            if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::NoOffset) => {}
        Err(error) => tracing::warn!(%error, "Final offset commit failed"),
    }
    consumer.unsubscribe();
    Ok(())
}

fn store_offsets(
    consumer: &BaseConsumer<RebalanceContext>,
    topic: &str,
    stored: &Receiver<(i32, i64)>,
) {
    while let Ok((partition, offset)) = stored.try_recv() {
        // Fails harmlessly for a partition revoked meanwhile.
        if let Err(error) = consumer.store_offset(topic, partition, offset) {
            tracing::debug!(%error, partition, offset, "Offset not stored");
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "Cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
