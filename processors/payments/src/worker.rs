//! The provider worker: the only part of payments with I/O.
//!
//! Its own consumer group (`{group_id}-provider`) reads
//! `payments.provider-requests`, which only payments writes.
//! For each `PaymentRequested`, `CaptureRequested`, `VoidRequested` and
//! `RefundRequested` it calls the provider
//! (with the request's fixed idempotency key) and returns what the provider
//! said as a `ProviderOutcome` for `payments.messages`, keyed by order id;
//! the runtime's sink engine produces it, waits for the broker's
//! acknowledgement, and only then stores the offset. A crash
//! anywhere repeats the call with the same key (one charge) and the outcome
//! with the same message id (derived from the event's), which the runtime
//! drops. Other message types are skipped (none are written there).
//!
//! Transient failures (5xx, 429, timeouts, connection errors) are retried with
//! exponential backoff for ever: a charge given up on might have succeeded.
//! A request the provider refuses outright (`ProviderError::Permanent`) is
//! reported as declined with `provider_rejected`. A capture or refund the
//! provider refuses is reported as not approved (the handler records it as
//! failed for an operator): retrying it with the same idempotency key could
//! only get the same stored refusal back, and blocking the partition would
//! stop the payments behind it.
//!
//! It is a [`Sink`] of the runtime's side-effect engine, which owns the
//! group, offsets and shutdown: partitions are handled concurrently, one
//! sequential lane each, so a slow provider call holds up only its own
//! partition (until its lane's queue is full). A partition revoked mid-call
//! is finished anyway; its new owner repeats the unacknowledged calls, which
//! the idempotency key makes harmless.
//!
//! Shutdown: the current provider call is finished and its outcome produced;
//! a backoff wait is abandoned (the next owner retries); the engine commits
//! the offsets synchronously before returning.

use crate::config::{PaymentsConfig, RetryPolicy};
use crate::provider::{
    CaptureRequest, ChargeRequest, PaymentProvider, ProviderDecision, ProviderError, RefundRequest,
    VoidRequest,
};
use d2c_platform::kafka::envelope_of;
use d2c_platform::metrics::METRICS;
use d2c_platform::retry::Retryable;
use d2c_proto::payments::v1::{
    provider_outcome::Kind, CaptureRequested, PaymentRequested, ProviderOutcome, RefundRequested,
    VoidRequested,
};
use d2c_runtime::router::Decoder;
use d2c_runtime::sink::{Handled, Lanes, Sink, SinkEngine, SinkOutput, SinkSettings};
use d2c_runtime::{Effects, RuntimeConfig};
use d2c_topology::{topic, TopicNames};
use prometheus::IntCounterVec;
use rdkafka::message::{Message, OwnedMessage};
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument as _;

/// Client id of the worker's consumer and producer.
pub const CLIENT_ID: &str = "payments-provider";
/// Decline code of a charge the provider refused as a request.
pub const PROVIDER_REJECTED: &str = "provider_rejected";

/// What the worker needs to know.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub brokers: String,
    /// The processor's group; the worker joins `{group_id}-provider`.
    pub group_id: String,
    pub topic_prefix: String,
    pub fetch_wait: Duration,
    pub session_timeout: Duration,
    pub linger: Duration,
    pub retry: RetryPolicy,
    /// How often the consumer's lag is read from librdkafka's statistics.
    pub stats_interval: Duration,
}

impl WorkerSettings {
    pub fn new(runtime: &RuntimeConfig, payments: &PaymentsConfig) -> Self {
        Self {
            brokers: runtime.brokers.clone(),
            group_id: runtime.group_id.clone(),
            topic_prefix: runtime.topic_prefix.clone(),
            fetch_wait: runtime.fetch_wait,
            session_timeout: runtime.session_timeout,
            linger: runtime.linger,
            retry: payments.retry_policy(),
            stats_interval: runtime.stats_interval,
        }
    }

    pub fn consumer_group(&self) -> String {
        format!("{}-provider", self.group_id)
    }
}

struct WorkerMetrics {
    retries: IntCounterVec,
    calls: IntCounterVec,
}

static WORKER_METRICS: LazyLock<WorkerMetrics> = LazyLock::new(|| {
    let counter = |name: &str, help: &str, labels: &[&str]| {
        let counter = IntCounterVec::new(prometheus::Opts::new(name, help), labels)
            .unwrap_or_else(|error| panic!("metric {name} is malformed: {error}"));
        METRICS
            .registry
            .register(Box::new(counter.clone()))
            .unwrap_or_else(|error| panic!("metric {name} registered twice: {error}"));
        counter
    };
    WorkerMetrics {
        retries: counter(
            "d2c_payment_provider_retries_total",
            "Provider calls retried after a transient failure, by operation.",
            &["operation"],
        ),
        calls: counter(
            "d2c_payment_provider_calls_total",
            "Provider calls, by operation and result (approved, declined, rejected, transient).",
            &["operation", "result"],
        ),
    }
});

/// Calls the provider for each request and reports its outcome, which the
/// engine produces before the request's offset moves on.
struct ProviderSink {
    provider: Arc<dyn PaymentProvider>,
    retry: RetryPolicy,
}

impl Sink for ProviderSink {
    async fn handle(&self, batch: &[OwnedMessage], stop: &mut watch::Receiver<bool>) -> Handled {
        let mut outcomes = Vec::new();
        for message in batch {
            match handle_record(self, message, stop).await {
                Handling::Stopped => return Handled::Stopped,
                Handling::Skipped => {}
                Handling::Decided(effects) => outcomes.push(*effects),
            }
        }
        Handled::Send(outcomes)
    }
}

/// What became of one request record.
enum Handling {
    /// Not a provider request (or unreadable): nothing to report.
    Skipped,
    /// The provider decided: its outcome, caused by the request.
    Decided(Box<Effects>),
    /// Stopping interrupted it: its offset must not move.
    Stopped,
}

/// Run the provider worker until `shutdown` resolves (or Kafka cannot be
/// set up).
pub async fn run_worker(
    settings: WorkerSettings,
    provider: Arc<dyn PaymentProvider>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let names = TopicNames::new(settings.topic_prefix.clone());
    let input = names.name(topic::PAYMENTS_PROVIDER_REQUESTS);
    let output = names.name(topic::PAYMENTS_MESSAGES);
    let group = settings.consumer_group();
    let engine = SinkEngine::subscribe(SinkSettings {
        brokers: settings.brokers.clone(),
        group_id: group.clone(),
        client_id: CLIENT_ID.to_owned(),
        topics: vec![input.clone()],
        fetch_wait: settings.fetch_wait,
        session_timeout: settings.session_timeout,
        stats_interval: settings.stats_interval,
        lanes: Lanes::PerPartition,
        // One call at a time: its outcome is acknowledged before the next
        // request of the partition is read.
        max_batch: 1,
        batch_linger: Duration::ZERO,
        // The payments processor in the same process reports its own.
        report_assigned: false,
        output: Some(SinkOutput {
            topic_prefix: settings.topic_prefix.clone(),
            linger: settings.linger,
        }),
    })?;
    tracing::info!(
        provider = provider.name(),
        %group,
        %input,
        %output,
        "Payment provider worker started"
    );
    LazyLock::force(&WORKER_METRICS);
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        // Keep the sender alive: a dropped sender reads as "stop" too.
        std::future::pending::<()>().await;
    });
    let sink = ProviderSink {
        provider,
        retry: settings.retry,
    };
    engine.run(Arc::new(sink), stop).await;
    tracing::info!("Payment provider worker stopped");
    Ok(())
}

/// Calls the provider for one record.
async fn handle_record(
    shared: &ProviderSink,
    message: &OwnedMessage,
    stop: &mut watch::Receiver<bool>,
) -> Handling {
    let envelope = match envelope_of(message) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::warn!(
                %error,
                partition = message.partition(),
                offset = message.offset(),
                "Skipping a payments event without a valid envelope"
            );
            return Handling::Skipped;
        }
    };
    let payload = message.payload().unwrap_or_default();
    let Some(request) = ProviderRequest::decode(&envelope.message_type, payload) else {
        return Handling::Skipped;
    };
    // The provider call is a hop of the order's trace: a child of the
    // event's span, and the parent of the outcome's handling.
    let span = tracing::info_span!(
        "provider",
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = message.topic(),
        messaging.kafka.destination.partition = message.partition(),
        messaging.kafka.message.offset = message.offset(),
        d2c.message_type = %envelope.message_type,
        trace_id = tracing::field::Empty,
    );
    d2c_platform::tracing_context::continue_trace(&span, envelope.traceparent.as_deref());
    let mut envelope = envelope;
    if let Some(traceparent) = d2c_platform::tracing_context::traceparent_of(&span) {
        envelope.traceparent = Some(traceparent);
    }
    let outcome = match call_provider(shared.provider.as_ref(), &request, shared.retry, stop)
        .instrument(span.clone())
        .await
    {
        Step::Stopped => return Handling::Stopped,
        Step::Outcome(outcome) => outcome,
    };
    // The outcome is caused by `envelope`: its message id is derived from
    // the request's, and it keeps the traceparent naming this span.
    let mut effects = Effects::new(&envelope);
    effects.send(topic::PAYMENTS_MESSAGES, &outcome.order_id, &outcome);
    Handling::Decided(Box::new(effects))
}

/// What to do with one event.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Report this.
    Outcome(ProviderOutcome),
    /// Stopping interrupted the retries.
    Stopped,
}

/// The requests the worker serves, by type.
static REQUESTS: LazyLock<Decoder<ProviderRequest>> = LazyLock::new(|| {
    Decoder::new()
        .on(ProviderRequest::Charge)
        .on(ProviderRequest::Capture)
        .on(ProviderRequest::Void)
        .on(ProviderRequest::Refund)
});

/// A provider request, decoded by its type.
enum ProviderRequest {
    Charge(PaymentRequested),
    Capture(CaptureRequested),
    Void(VoidRequested),
    Refund(RefundRequested),
}

impl ProviderRequest {
    /// `None` for other message types and for a payload that does not
    /// decode (logged: nothing can be done with it).
    fn decode(message_type: &str, payload: &[u8]) -> Option<Self> {
        REQUESTS
            .decode(message_type, payload)?
            .inspect_err(|error| {
                tracing::error!(%error, message_type, "Skipping an undecodable provider request");
            })
            .ok()
    }

    /// The operation's name (metrics, logs) and the outcome's kind.
    fn operation(&self) -> (&'static str, Kind) {
        match self {
            Self::Charge(_) => ("charge", Kind::Charge),
            Self::Capture(_) => ("capture", Kind::Capture),
            Self::Void(_) => ("void", Kind::Void),
            Self::Refund(_) => ("refund", Kind::Refund),
        }
    }

    fn order_id(&self) -> &str {
        match self {
            Self::Charge(request) => &request.order_id,
            Self::Capture(request) => &request.order_id,
            Self::Void(request) => &request.order_id,
            Self::Refund(request) => &request.order_id,
        }
    }

    /// The refund an outcome names (empty for the other operations).
    fn refund_id(&self) -> String {
        match self {
            Self::Refund(request) => request.refund_id.clone(),
            _ => String::new(),
        }
    }

    /// One provider call, with the request's own idempotency key.
    fn call<'a>(
        &self,
        provider: &'a dyn PaymentProvider,
    ) -> futures::future::BoxFuture<'a, Result<ProviderDecision, ProviderError>> {
        match self {
            Self::Charge(requested) => provider.charge(ChargeRequest {
                order_id: requested.order_id.clone(),
                customer_id: requested.customer_id.clone(),
                amount_minor: requested.amount_minor,
                currency: requested.currency.clone(),
                payment_method: requested.payment_method.clone(),
                idempotency_key: requested.idempotency_key.clone(),
            }),
            Self::Capture(requested) => provider.capture(CaptureRequest {
                order_id: requested.order_id.clone(),
                provider_ref: requested.provider_ref.clone(),
                amount_minor: requested.amount_minor,
                currency: requested.currency.clone(),
                idempotency_key: requested.idempotency_key.clone(),
            }),
            Self::Void(requested) => provider.void(VoidRequest {
                order_id: requested.order_id.clone(),
                provider_ref: requested.provider_ref.clone(),
                idempotency_key: requested.idempotency_key.clone(),
            }),
            Self::Refund(requested) => provider.refund(RefundRequest {
                order_id: requested.order_id.clone(),
                refund_id: requested.refund_id.clone(),
                provider_ref: requested.provider_ref.clone(),
                amount_minor: requested.amount_minor,
                currency: requested.currency.clone(),
                idempotency_key: requested.idempotency_key.clone(),
            }),
        }
    }
}

/// Calls the provider for a decoded request, retrying transient failures.
async fn call_provider(
    provider: &dyn PaymentProvider,
    request: &ProviderRequest,
    retry: RetryPolicy,
    stop: &mut watch::Receiver<bool>,
) -> Step {
    let (operation, kind) = request.operation();
    let order_id = request.order_id().to_owned();
    let called = with_retries(operation, &order_id, retry, stop, || request.call(provider)).await;
    decided(called, order_id, kind, request.refund_id())
}

/// A call as an outcome: a permanent error is the provider's refusal (a
/// declined charge; a capture, void or refund the handler records as
/// failed for an operator).
fn decided(
    called: Option<Result<ProviderDecision, ProviderError>>,
    order_id: String,
    kind: Kind,
    refund_id: String,
) -> Step {
    let decision = match called {
        None => return Step::Stopped,
        Some(Ok(decision)) => decision,
        Some(Err(error)) => {
            ProviderDecision::declined(String::new(), PROVIDER_REJECTED, error.to_string())
        }
    };
    let mut outcome = outcome(order_id, kind, decision);
    outcome.refund_id = refund_id;
    Step::Outcome(outcome)
}

fn outcome(order_id: String, kind: Kind, decision: ProviderDecision) -> ProviderOutcome {
    ProviderOutcome {
        order_id,
        kind: kind as i32,
        approved: decision.approved,
        provider_ref: decision.provider_ref,
        decline_code: decision.decline_code,
        message: decision.message,
        refund_id: String::new(),
    }
}

/// Calls until the provider decides (or refuses permanently), backing off
/// after each transient failure. `None` if stopping interrupted a wait.
async fn with_retries<'a, F>(
    operation: &'static str,
    order_id: &str,
    retry: RetryPolicy,
    stop: &mut watch::Receiver<bool>,
    mut call: F,
) -> Option<Result<ProviderDecision, ProviderError>>
where
    F: FnMut() -> futures::future::BoxFuture<'a, Result<ProviderDecision, ProviderError>>,
{
    let counted = || {
        let called = call();
        async move {
            let result = called.await;
            let label = match &result {
                Ok(decision) if decision.approved => "approved",
                Ok(_) => "declined",
                Err(ProviderError::Permanent(_)) => "rejected",
                Err(ProviderError::Transient(_)) => "transient",
            };
            WORKER_METRICS
                .calls
                .with_label_values(&[operation, label])
                .inc();
            result
        }
    };
    let stopping = stop.clone();
    let result = counted
        .retry(retry.backoff())
        .sleep(interruptible(stop.clone()))
        .when(|error: &ProviderError| error.is_transient() && !*stopping.borrow())
        .notify(|error: &ProviderError, wait: Duration| {
            WORKER_METRICS.retries.with_label_values(&[operation]).inc();
            tracing::warn!(operation, order_id, retry_in_ms = wait.as_millis() as u64, %error,
                "Provider call failed; retrying with the same idempotency key");
        })
        .await;
    match result {
        Err(ProviderError::Transient(_)) => None,
        Err(error) => {
            tracing::warn!(operation, order_id, %error, "Provider refused the request");
            Some(Err(error))
        }
        Ok(decision) => Some(Ok(decision)),
    }
}

/// A backoff sleep that ends early when stopping starts (the retry then
/// sees the stop and gives up).
fn interruptible(
    stop: watch::Receiver<bool>,
) -> impl Fn(Duration) -> futures::future::BoxFuture<'static, ()> {
    move |delay| {
        let mut stop = stop.clone();
        Box::pin(async move {
            sleep_unless_stopped(delay, &mut stop).await;
        })
    }
}

/// Waits `delay`; `true` if stopping came first.
async fn sleep_unless_stopped(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        _ = stop.wait_for(|stopping| *stopping) => true,
    }
}

#[cfg(test)]
mod payments_worker_tests {
    use super::*;
    use crate::sandbox::{SandboxProvider, TOKEN_DECLINED, TOKEN_TRANSIENT_ERROR, TOKEN_VISA};
    use futures::future::BoxFuture;
    use prost::{Message as _, Name};

    fn requested(token: &str) -> Vec<u8> {
        PaymentRequested {
            order_id: "o-1".into(),
            amount_minor: 1_000,
            currency: "EUR".into(),
            payment_method: token.into(),
            idempotency_key: "d2c-charge-o-1".into(),
            customer_id: "c-1".into(),
        }
        .encode_to_vec()
    }

    /// A request event decoded and called, as the worker does.
    async fn outcome_for(
        provider: &dyn PaymentProvider,
        message_type: &str,
        payload: &[u8],
        retry: RetryPolicy,
        stop: &mut watch::Receiver<bool>,
    ) -> Step {
        let request = ProviderRequest::decode(message_type, payload).expect("a provider request");
        call_provider(provider, &request, retry, stop).await
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        use d2c_platform::retry::BackoffBuilder;
        // backon computes in f32: compare whole milliseconds.
        let delays: Vec<u128> = RetryPolicy::default()
            .backoff()
            .build()
            .take(8)
            .map(|delay| delay.as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_a_decision() {
        let sandbox = SandboxProvider::new();
        let (_tx, mut stop) = watch::channel(false);
        let step = outcome_for(
            &sandbox,
            &PaymentRequested::full_name(),
            &requested(TOKEN_TRANSIENT_ERROR),
            fast(),
            &mut stop,
        )
        .await;
        let Step::Outcome(outcome) = step else {
            panic!("an outcome expected, got {step:?}")
        };
        assert!(outcome.approved);
        assert_eq!(outcome.kind, Kind::Charge as i32);
        assert_eq!(outcome.order_id, "o-1");
    }

    #[tokio::test]
    async fn declines_and_refunds_become_outcomes() {
        let sandbox = SandboxProvider::new();
        let (_tx, mut stop) = watch::channel(false);
        let declined = outcome_for(
            &sandbox,
            &PaymentRequested::full_name(),
            &requested(TOKEN_DECLINED),
            fast(),
            &mut stop,
        )
        .await;
        let Step::Outcome(declined) = declined else {
            panic!("outcome expected")
        };
        assert!(!declined.approved);
        assert_eq!(declined.decline_code, "card_declined");
        let refund = RefundRequested {
            order_id: "o-1".into(),
            provider_ref: "sb_pi_1".into(),
            amount_minor: 1_000,
            currency: "EUR".into(),
            idempotency_key: "d2c-refund-o-1-r-1".into(),
            refund_id: "r-1".into(),
        }
        .encode_to_vec();
        let Step::Outcome(refunded) = outcome_for(
            &sandbox,
            &RefundRequested::full_name(),
            &refund,
            fast(),
            &mut stop,
        )
        .await
        else {
            panic!("outcome expected")
        };
        assert!(refunded.approved);
        assert_eq!(refunded.kind, Kind::Refund as i32);
        assert_eq!(refunded.refund_id, "r-1", "the outcome names its refund");
        let capture = CaptureRequested {
            order_id: "o-1".into(),
            provider_ref: "sb_pi_1".into(),
            amount_minor: 1_000,
            currency: "EUR".into(),
            idempotency_key: "d2c-capture-o-1".into(),
        }
        .encode_to_vec();
        let Step::Outcome(captured) = outcome_for(
            &sandbox,
            &CaptureRequested::full_name(),
            &capture,
            fast(),
            &mut stop,
        )
        .await
        else {
            panic!("outcome expected")
        };
        assert_eq!(
            (captured.kind, captured.approved),
            (Kind::Capture as i32, true)
        );
        let void = VoidRequested {
            order_id: "o-2".into(),
            provider_ref: "sb_pi_2".into(),
            idempotency_key: "d2c-void-o-2".into(),
        }
        .encode_to_vec();
        let Step::Outcome(voided) = outcome_for(
            &sandbox,
            &VoidRequested::full_name(),
            &void,
            fast(),
            &mut stop,
        )
        .await
        else {
            panic!("outcome expected")
        };
        assert_eq!((voided.kind, voided.approved), (Kind::Void as i32, true));
        assert!(
            ProviderRequest::decode("d2c.payments.v1.PaymentAuthorized", &[]).is_none(),
            "other event types are not provider requests"
        );
        let visa = requested(TOKEN_VISA);
        assert!(matches!(
            outcome_for(
                &sandbox,
                &PaymentRequested::full_name(),
                &visa,
                fast(),
                &mut stop
            )
            .await,
            Step::Outcome(ProviderOutcome { approved: true, .. })
        ));
    }

    struct Down;

    impl PaymentProvider for Down {
        fn charge(
            &self,
            _request: ChargeRequest,
        ) -> BoxFuture<'_, Result<ProviderDecision, ProviderError>> {
            Box::pin(async { Err(ProviderError::Transient("down".into())) })
        }

        fn capture(
            &self,
            _request: CaptureRequest,
        ) -> BoxFuture<'_, Result<ProviderDecision, ProviderError>> {
            Box::pin(async { Err(ProviderError::Transient("down".into())) })
        }

        fn void(
            &self,
            _request: VoidRequest,
        ) -> BoxFuture<'_, Result<ProviderDecision, ProviderError>> {
            Box::pin(async { Err(ProviderError::Transient("down".into())) })
        }

        fn refund(
            &self,
            _request: RefundRequest,
        ) -> BoxFuture<'_, Result<ProviderDecision, ProviderError>> {
            Box::pin(async { Err(ProviderError::Permanent("no such payment".into())) })
        }
    }

    #[tokio::test]
    async fn a_charge_is_never_given_up_but_stopping_interrupts_the_wait() {
        let (tx, mut stop) = watch::channel(false);
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(true);
        });
        let step = outcome_for(
            &Down,
            &PaymentRequested::full_name(),
            &requested(TOKEN_VISA),
            fast(),
            &mut stop,
        )
        .await;
        assert_eq!(step, Step::Stopped);
        stopper.await.expect("stopper");
    }

    #[tokio::test]
    async fn a_refused_refund_is_reported_not_approved() {
        let (_tx, mut stop) = watch::channel(false);
        let refund = RefundRequested {
            order_id: "o-1".into(),
            provider_ref: "pi_1".into(),
            ..RefundRequested::default()
        }
        .encode_to_vec();
        let Step::Outcome(outcome) = outcome_for(
            &Down,
            &RefundRequested::full_name(),
            &refund,
            fast(),
            &mut stop,
        )
        .await
        else {
            panic!("outcome expected")
        };
        assert!(!outcome.approved);
        assert_eq!(outcome.decline_code, PROVIDER_REJECTED);
    }
}
