use anyhow::Context as _;
use d2c_payments::{
    handler, run_worker, PaymentsConfig, WorkerSettings, DEFAULT_ADMIN_PORT, SERVICE,
};
use d2c_platform::kafka::producer_config;
use d2c_platform::producer::KafkaProducer;
use d2c_runtime::{Processor, RuntimeConfig};
use d2c_topology::{topic, TopicNames};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The runtime sets up logging inside `run`; do it first so the worker's
    // start (and a bad configuration) is logged too. A second init is a no-op.
    d2c_platform::telemetry::init();
    let payments = PaymentsConfig::from_env()?;
    tracing::info!(config = ?payments, "Payments configuration");
    let runtime = RuntimeConfig::from_env(SERVICE, DEFAULT_ADMIN_PORT)?;
    let provider = payments
        .build_provider()
        .context("building the payment provider")?;
    // Provider webhooks, served on the admin endpoint, produce outcomes to
    // payments.messages like the worker does.
    let webhook_producer = KafkaProducer::create(&producer_config(
        &runtime.brokers,
        "payments-webhooks",
        runtime.linger,
    ))
    .context("creating the webhook producer")?;
    let webhook_routes = d2c_payments::webhook_route::routes(
        payments.webhook_secret.clone(),
        webhook_producer,
        TopicNames::new(runtime.topic_prefix.clone()).name(topic::PAYMENTS_MESSAGES),
    );
    // The worker stops on SIGTERM/SIGINT like the processor, or when the
    // processor has ended for another reason.
    let (stop_worker, processor_ended) = tokio::sync::oneshot::channel::<()>();
    let worker_shutdown = async move {
        tokio::select! {
            () = d2c_platform::shutdown_signal() => {}
            _ = processor_ended => {}
        }
    };
    let worker = tokio::spawn(run_worker(
        WorkerSettings::new(&runtime, &payments),
        provider,
        worker_shutdown,
    ));
    let processor = Processor::new(SERVICE, DEFAULT_ADMIN_PORT)
        .handler(handler())
        .http(webhook_routes)
        .run();
    tokio::pin!(processor);
    tokio::pin!(worker);
    tokio::select! {
        result = &mut processor => {
            // Stopped by a signal or failed: either way let the worker finish
            // its current call.
            let _ = stop_worker.send(());
            let worker_result = worker.await.context("joining the provider worker")?;
            result?;
            worker_result
        }
        joined = &mut worker => {
            // The worker only ends on its own when it cannot start; without it
            // no payment is ever made, so the process must not run on.
            joined.context("joining the provider worker")??;
            processor.await
        }
    }
}
