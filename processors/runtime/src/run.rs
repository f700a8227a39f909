//! Wiring: configuration, store, producers, the poll thread, the committers
//! (`exactly_once`: one thread per `D2C_TRANSACTION_PRODUCERS`), the admin
//! endpoint, and graceful shutdown (SIGTERM/SIGINT: finish in-flight
//! batches, commit them, flush the producer, leave the group).

use crate::config::RuntimeConfig;
use crate::config::{ProcessingGuarantee, StandbyMode};
use crate::context::{OwnTopics, Shared};
use crate::error::RuntimeError;
use crate::handler::Handler;
use crate::partitions::{MembershipWatch, Partitions, RebalanceContext};
use crate::standby::{FollowerSetup, Standby};
use crate::transactions::{self, Committer, QueuedBatch, TransactionClock};
use anyhow::Context as _;
use d2c_platform::admin::{self, Readiness};
use d2c_platform::kafka::{group_consumer_config, producer_config};
use d2c_platform::lag::{enable_statistics, ConsumerLag};
use d2c_platform::producer::KafkaProducer;
use d2c_platform::{shutdown_signal, telemetry};
use d2c_state::{Store, StoreOptions};
use d2c_topology::TopicNames;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which service this is; topic names follow from it.
#[derive(Debug, Clone, Copy)]
struct ProcessorSpec {
    pub service: &'static str,
    pub default_admin_port: u16,
}

/// Builds a handler once the configuration is known, before the processor
/// joins its group (e.g. to load a global table); runs on a blocking thread.
type BuildHandler =
    Box<dyn FnOnce(&RuntimeConfig, &TopicNames) -> anyhow::Result<Arc<dyn Handler>> + Send>;

/// One processor, described and then run until SIGTERM/SIGINT or until it
/// cannot go on:
///
/// ```ignore
/// Processor::new(SERVICE, DEFAULT_ADMIN_PORT).handler(handler()).run().await
/// ```
pub struct Processor {
    spec: ProcessorSpec,
    build: Option<BuildHandler>,
    http: axum::Router,
}

impl Processor {
    /// The processor of `service` (its topics follow from the name); its
    /// admin endpoint listens on `default_admin_port` unless D2C_ADMIN_ADDR
    /// says otherwise.
    pub fn new(service: &'static str, default_admin_port: u16) -> Self {
        Self {
            spec: ProcessorSpec {
                service,
                default_admin_port,
            },
            build: None,
            http: axum::Router::new(),
        }
    }

    /// What handles its messages (e.g. a [`crate::router::Router`]).
    pub fn handler(self, handler: impl Handler + 'static) -> Self {
        let handler: Arc<dyn Handler> = Arc::new(handler);
        self.handler_built(move |_, _| Ok(handler))
    }

    /// The handler, made once the configuration is known and before the
    /// processor joins its group: the admin endpoint answers `/health`
    /// meanwhile, and `/ready` only once the processor has joined.
    pub fn handler_built(
        mut self,
        build: impl FnOnce(&RuntimeConfig, &TopicNames) -> anyhow::Result<Arc<dyn Handler>>
            + Send
            + 'static,
    ) -> Self {
        self.build = Some(Box::new(build));
        self
    }

    /// `routes` served by the admin endpoint next to `/health`, `/ready` and
    /// `/metrics` (a service's own endpoints, e.g. provider webhooks); they
    /// must not reuse those three paths.
    pub fn http(mut self, routes: axum::Router) -> Self {
        self.http = routes;
        self
    }

    /// # Errors
    /// No handler was given, the configuration is invalid, or the processor
    /// failed (logged, so Slack and Sentry hear of it, before returning).
    pub async fn run(self) -> anyhow::Result<()> {
        telemetry::init();
        let spec = self.spec;
        let result = match self.build {
            Some(build) => run_processor(spec, build, self.http).await,
            None => Err(anyhow::anyhow!(
                "the {} processor has no handler",
                spec.service
            )),
        };
        finish(spec, result).await
    }
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
    routes: axum::Router,
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
    let producer = KafkaProducer::create(&producer_config(
        &config.brokers,
        spec.service,
        config.linger,
    ))?;
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
    let (resumes, resume_requests) = std::sync::mpsc::channel();
    let (commits, commit_queue) = std::sync::mpsc::channel();
    let exactly_once = config.guarantee == ProcessingGuarantee::ExactlyOnce;
    let restoring = Arc::new(Mutex::new(()));
    let standby = match config.standby {
        StandbyMode::None => None,
        StandbyMode::All => Some(Standby::start(FollowerSetup {
            brokers: config.brokers.clone(),
            client_id: format!("{}-standby", config.group_id),
            changelog: topics.changelog.clone(),
            store: store.clone(),
            exactly_once,
            fetch_wait: config.fetch_wait,
            stats_interval: config.stats_interval,
            restoring: Arc::clone(&restoring),
        })?),
    };
    let shared = Arc::new(Shared {
        service: spec.service,
        config: config.clone(),
        names,
        topics: topics.clone(),
        handler,
        producer: producer.clone(),
        store,
        offsets,
        commits: exactly_once.then_some(commits),
        resumes,
        restoring,
        standby,
        opening: AtomicUsize::new(0),
        readiness: Arc::clone(&readiness),
        fatal: Arc::new(Mutex::new(None)),
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
    if exactly_once {
        // Offsets are committed inside each batch's transaction.
        consumer_config.set("enable.auto.commit", "false");
    }
    let consumer: Arc<BaseConsumer<RebalanceContext>> = Arc::new(
        enable_statistics(&mut consumer_config, config.stats_interval).create_with_context(
            RebalanceContext {
                partitions: Arc::clone(&partitions),
                lag: if exactly_once {
                    ConsumerLag::transactional(config.group_id.clone())
                } else {
                    ConsumerLag::new(config.group_id.clone())
                },
                membership: MembershipWatch::new(config.membership_timeout),
            },
        )?,
    );
    let committer_stop = Arc::new(AtomicBool::new(false));
    let rejoin = Arc::new(AtomicBool::new(false));
    let clock = Arc::new(TransactionClock::new(config.transaction_producers.max(1)));
    let committers = if exactly_once {
        start_committers(
            &shared,
            &consumer,
            commit_queue,
            &committer_stop,
            &rejoin,
            &clock,
        )
        .await?
    } else {
        Vec::new()
    };
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
            let channels = PollChannels {
                stored_offsets,
                resume_requests,
            };
            let watch = Watch {
                stop: &poll_stop,
                rejoin: &rejoin,
                clock: &clock,
                // The broker aborts a transaction after its timeout; one
                // still running at three times that is wedged in the client.
                stuck_after: poll_partitions.shared.config.transaction_timeout * 3,
            };
            let result = poll_loop(&consumer, &poll_partitions, &channels, &watch);
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
    // Every worker has finished its in-flight batch by now.
    if let Some(standby) = &shared.standby {
        standby.stop();
    }
    committer_stop.store(true, Ordering::Release);
    for committer in committers {
        tokio::task::spawn_blocking(move || committer.join())
            .await
            .context("joining a committer")?
            .map_err(|_| anyhow::anyhow!("committer thread panicked"))?;
    }
    producer
        .flush(Duration::from_secs(10))
        .context("flushing the producer")?;
    result?;
    tracing::info!("Stopped cleanly");
    Ok(())
}

/// What the poll thread receives from the workers.
struct PollChannels {
    stored_offsets: Receiver<(i32, i64)>,
    resume_requests: Receiver<(i32, Offset)>,
}

/// What a committer reads the group's metadata from: the consumer itself.
fn group_metadata(consumer: &Arc<BaseConsumer<RebalanceContext>>) -> transactions::GroupMetadata {
    let consumer = Arc::clone(consumer);
    Arc::new(move || consumer.group_metadata())
}

/// The transactional producers and the threads that commit batches with
/// them, sharing one queue. The first keeps the configured transactional id
/// (as before there were several); the others add `-<n>`.
async fn start_committers(
    shared: &Arc<Shared>,
    consumer: &Arc<BaseConsumer<RebalanceContext>>,
    queue: Receiver<QueuedBatch>,
    stop: &Arc<AtomicBool>,
    rejoin: &Arc<AtomicBool>,
    clock: &Arc<TransactionClock>,
) -> anyhow::Result<Vec<std::thread::JoinHandle<()>>> {
    let config = &shared.config;
    let queue = Arc::new(Mutex::new(queue));
    let mut threads = Vec::new();
    for index in 0..config.transaction_producers.max(1) {
        let transactional_id = match index {
            0 => config.transactional_id.clone(),
            n => format!("{}-{n}", config.transactional_id),
        };
        let base = producer_config(&config.brokers, shared.service, config.linger);
        let timeout = config.transaction_timeout;
        let producer = {
            let (base, transactional_id) = (base.clone(), transactional_id.clone());
            tokio::task::spawn_blocking(move || {
                transactions::producer(base, &transactional_id, timeout)
            })
            .await
            .context("starting a transactional producer")??
        };
        let committer = Committer {
            producer,
            base,
            transactional_id,
            group_metadata: group_metadata(consumer),
            input_topic: shared.topics.input.clone(),
            changelog_topic: shared.topics.changelog.clone(),
            timeout,
            runtime: shared.runtime.clone(),
            fatal: Arc::clone(&shared.fatal),
            rejoin: Arc::clone(rejoin),
            clock: Arc::clone(clock),
            index,
            linger: config.commit_linger,
        };
        let (queue, stop) = (Arc::clone(&queue), Arc::clone(stop));
        threads.push(
            std::thread::Builder::new()
                .name(format!("{}-commit-{index}", shared.service))
                .spawn(move || committer.run(&queue, &stop))?,
        );
    }
    Ok(threads)
}

/// What the poll thread watches besides the consumer.
struct Watch<'a> {
    stop: &'a AtomicBool,
    rejoin: &'a AtomicBool,
    clock: &'a TransactionClock,
    stuck_after: Duration,
}

fn poll_loop(
    consumer: &BaseConsumer<RebalanceContext>,
    partitions: &Partitions,
    channels: &PollChannels,
    watch: &Watch,
) -> Result<(), RuntimeError> {
    let Watch { stop, rejoin, .. } = *watch;
    let input = partitions.input_topic();
    let at_least_once = partitions.shared.commits.is_none();
    let mut waiting_resumes = Vec::new();
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => partitions.dispatch(message.detach()),
            Some(Err(error)) => tracing::warn!(%error, "Consumer error"),
            None => {}
        }
        store_offsets(consumer, input, &channels.stored_offsets);
        resume_partitions(
            consumer,
            input,
            &channels.resume_requests,
            &mut waiting_resumes,
            at_least_once,
        );
        if rejoin.swap(false, Ordering::AcqRel) {
            rejoin_group(consumer, partitions)?;
        }
        exit_if_wedged(watch);
        if let Some(error) = partitions
            .shared
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(error);
        }
    }
    partitions.revoke_all();
    if at_least_once {
        store_offsets(consumer, input, &channels.stored_offsets);
        d2c_platform::kafka::commit_final_offsets(consumer);
    }
    consumer.unsubscribe();
    Ok(())
}

/// A transaction running far past its timeout is wedged inside librdkafka
/// (`send_offsets_to_transaction` waiting forever for a group coordinator
/// whose broker died): its committer thread cannot be joined and the
/// workers waiting on it cannot finish their batch, so no orderly stop is
/// possible.
fn exit_if_wedged(watch: &Watch) {
    let running = watch.clock.longest_running();
    if running >= watch.stuck_after {
        crate::stuck::exit_for_fresh_start(&format!(
            "a transaction has been running for {running:?}, far past its timeout"
        ));
    }
}

/// Leave the group and join it again under a new member id: every
/// partition is revoked first (its worker stops; a pending batch is dropped,
/// its transaction aborted), and the next assignment restores the stores
/// from the changelog as after any rebalance.
fn rejoin_group(
    consumer: &BaseConsumer<RebalanceContext>,
    partitions: &Partitions,
) -> Result<(), RuntimeError> {
    partitions.revoke_all();
    consumer.unsubscribe();
    consumer.subscribe(&[partitions.input_topic()])?;
    tracing::info!("Rejoined the group");
    Ok(())
}

/// Seek each partition whose store is current to where the store resumes,
/// and resume it. Under at-least-once the offset is also stored, so the
/// group's committed offset (lag, tools) catches up with the store. A seek
/// librdkafka refuses (the partition's fetcher not started yet) is tried
/// again on the next round; the partition stays paused meanwhile.
fn resume_partitions(
    consumer: &BaseConsumer<RebalanceContext>,
    topic: &str,
    requests: &Receiver<(i32, Offset)>,
    waiting: &mut Vec<(i32, Offset, u32)>,
    at_least_once: bool,
) {
    waiting.extend(
        requests
            .try_iter()
            .map(|(partition, offset)| (partition, offset, 0)),
    );
    let mut refused = Vec::new();
    for (partition, offset, attempts) in waiting.drain(..) {
        if !consumer
            .assignment()
            .is_ok_and(|assigned| assigned.find_partition(topic, partition).is_some())
        {
            // Revoked meanwhile; its next owner seeks.
            continue;
        }
        let mut list = TopicPartitionList::new();
        if let Err(error) = list.add_partition_offset(topic, partition, offset) {
            tracing::error!(%error, partition, "Resume offset not representable");
            continue;
        }
        let sought = consumer
            .seek_partitions(list.clone(), SEEK_TIMEOUT)
            .map_err(|error| error.to_string())
            .and_then(
                |result| match result.elements().first().map(|e| e.error()) {
                    Some(Err(error)) => Err(error.to_string()),
                    _ => Ok(()),
                },
            );
        let resumed = sought.and_then(|()| consumer.resume(&list).map_err(|e| e.to_string()));
        if let Err(error) = resumed {
            // About 10 s of refusals: say so, the partition is not consumed.
            if attempts == 100 {
                tracing::warn!(%error, partition, "Partition still paused: seek or resume refused");
            }
            refused.push((partition, offset, attempts + 1));
            continue;
        }
        tracing::debug!(partition, ?offset, "Partition resumed");
        if at_least_once && matches!(offset, Offset::Offset(_)) {
            if let Err(error) = consumer.store_offsets(&list) {
                tracing::debug!(%error, partition, "Resume offset not stored");
            }
        }
    }
    *waiting = refused;
}

/// How long a seek may wait for the fetcher to take the new position (no
/// broker round trip is involved).
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

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
