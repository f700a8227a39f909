//! Trace context across hops: one order is one trace, from the gateway's
//! HTTP request through every processor and back.
//!
//! The W3C `traceparent` travels in each record's headers (the envelope's
//! `traceparent`). A consumer makes its span a child of the incoming
//! `traceparent` ([`continue_trace`]); a producer writes its current span's
//! context into the outgoing record ([`traceparent_of`]). Handlers never see
//! any of this: the runtime does both around them, so they stay pure.
//!
//! The SDK tracer runs whether or not spans are exported, so trace ids exist
//! (and propagate, and reach the logs) with export off; OTLP export is an
//! extra batch processor, configured by `D2C_OTLP_ENDPOINT`.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::time::Duration;
use tracing::Subscriber;
use tracing_opentelemetry::{OpenTelemetrySpanExt, OtelData};
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;

const TRACEPARENT: &str = d2c_proto::envelope::header::TRACEPARENT;

/// Reads one `traceparent` for the propagator.
struct Incoming<'a>(&'a str);

impl Extractor for Incoming<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// Keeps the `traceparent` the propagator writes (and nothing else: we do
/// not carry `tracestate`).
#[derive(Default)]
struct Outgoing(Option<String>);

impl Injector for Outgoing {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

/// Makes `span` a child of the remote span in `traceparent` and records its
/// trace id in the span's `trace_id` field (if it declares one), so log
/// lines inside it carry the trace id. Call it before the span is first
/// entered: a started span cannot change its parent. A missing or invalid
/// `traceparent` leaves the span a root: it starts a new trace.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(traceparent) = traceparent {
        let parent = TraceContextPropagator::new().extract(&Incoming(traceparent));
        if parent.span().span_context().is_valid() {
            // Fails only when tracing is not set up or the span is disabled;
            // then there is no trace to continue.
            let _ = span.set_parent(parent);
        }
    }
    if let Some(trace_id) = trace_id_of(span) {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

/// The W3C `traceparent` naming `span`, for the headers of a record it
/// sends; `None` when tracing is not set up or the span is disabled.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    traceparent_in(&context)
}

/// [`traceparent_of`] the current span.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The trace id (32 hex digits) of `span`, if it has one.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

fn traceparent_in(context: &Context) -> Option<String> {
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut outgoing = Outgoing::default();
    TraceContextPropagator::new().inject_context(context, &mut outgoing);
    outgoing.0
}

/// The message type a `handle` (or provider) span was created with.
pub(crate) struct MessageType(pub String);

/// The span field naming the message type (`d2c.message_type`).
pub const MESSAGE_TYPE_FIELD: &str = "d2c.message_type";

/// Remembers the span's `d2c.message_type`, for error reports from inside it
/// (layers cannot read span fields later).
pub(crate) fn remember_message_type<S>(
    attributes: &tracing::span::Attributes<'_>,
    id: &tracing::span::Id,
    ctx: &LayerContext<'_, S>,
) where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if attributes
        .metadata()
        .fields()
        .field(MESSAGE_TYPE_FIELD)
        .is_none()
    {
        return;
    }
    let mut found = FindField {
        name: MESSAGE_TYPE_FIELD,
        value: None,
    };
    attributes.record(&mut found);
    let (Some(value), Some(span)) = (found.value, ctx.span(id)) else {
        return;
    };
    let mut extensions = span.extensions_mut();
    if extensions.get_mut::<MessageType>().is_none() {
        extensions.insert(MessageType(value));
    }
}

struct FindField {
    name: &'static str,
    value: Option<String>,
}

impl tracing::field::Visit for FindField {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == self.name {
            self.value = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == self.name {
            // `%value` fields arrive here already formatted by Display.
            self.value = Some(format!("{value:?}"));
        }
    }
}

/// Where an event happened: its trace and the message being handled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EventContext {
    pub trace_id: Option<String>,
    pub message_type: Option<String>,
}

/// The trace id and message type of the spans around `event`, innermost
/// first. Layers must ask their context: `Span::current()` is not available
/// while an event is being dispatched.
pub(crate) fn event_context<S>(
    event: &tracing::Event<'_>,
    ctx: &LayerContext<'_, S>,
) -> EventContext
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut found = EventContext::default();
    let Some(scope) = ctx.event_scope(event) else {
        return found;
    };
    for span in scope {
        let extensions = span.extensions();
        if found.trace_id.is_none() {
            found.trace_id = extensions
                .get::<OtelData>()
                .and_then(OtelData::trace_id)
                .filter(|id| *id != opentelemetry::TraceId::INVALID)
                .map(|id| id.to_string());
        }
        if found.message_type.is_none() {
            found.message_type = extensions.get::<MessageType>().map(|found| found.0.clone());
        }
        if found.trace_id.is_some() && found.message_type.is_some() {
            break;
        }
    }
    found
}

/// Why OTLP export could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("OTLP export to {endpoint} cannot be set up: {reason}")]
pub struct ExportSetupError {
    pub endpoint: String,
    pub reason: String,
}

/// The traces URL of an OTLP/HTTP collector given by its base URL (as
/// OTEL_EXPORTER_OTLP_ENDPOINT is), or already by its traces URL.
pub fn traces_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/v1/traces")
    }
}

/// The SDK tracer provider of `service`: always sampling, exporting over
/// OTLP/HTTP (protobuf) when `endpoint` is set, in batches sent at least
/// every `batch_delay` from the batch processor's own thread.
pub fn tracer_provider(
    service: &str,
    endpoint: Option<&str>,
    batch_delay: Duration,
) -> (SdkTracerProvider, Option<ExportSetupError>) {
    let resource = Resource::builder_empty()
        .with_service_name(service.to_owned())
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let Some(endpoint) = endpoint else {
        return (builder.build(), None);
    };
    let url = traces_url(endpoint);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(Duration::from_secs(5))
        .build();
    match exporter {
        Ok(exporter) => {
            let processor = BatchSpanProcessor::builder(exporter)
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_scheduled_delay(batch_delay)
                        .build(),
                )
                .build();
            (builder.with_span_processor(processor).build(), None)
        }
        Err(error) => (
            builder.build(),
            Some(ExportSetupError {
                endpoint: url,
                reason: error.to_string(),
            }),
        ),
    }
}

/// The `tracing` layer feeding `provider`'s tracer.
pub fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("d2c"))
        .with_threads(false)
        .with_location(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_span_continues_the_incoming_trace_and_names_itself_outgoing() {
        let provider = tracer_provider("test", None, Duration::from_secs(1)).0;
        let subscriber = tracing_subscriber::registry().with(layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("handle", trace_id = tracing::field::Empty);
            continue_trace(&span, Some(PARENT));
            let outgoing = traceparent_of(&span).expect("a traceparent");
            let parts: Vec<&str> = outgoing.split('-').collect();
            assert_eq!(parts[0], "00");
            assert_eq!(parts[1], "0af7651916cd43dd8448eb211c80319c", "same trace");
            assert_ne!(parts[2], "b7ad6b7169203331", "our own span id");
            assert_eq!(parts[3], "01");
            assert_eq!(
                trace_id_of(&span).as_deref(),
                Some("0af7651916cd43dd8448eb211c80319c")
            );
            let _entered = span.enter();
            assert_eq!(current_traceparent(), Some(outgoing));
        });
    }

    #[test]
    fn without_a_parent_a_span_starts_a_trace_and_garbage_is_ignored() {
        let provider = tracer_provider("test", None, Duration::from_secs(1)).0;
        let subscriber = tracing_subscriber::registry().with(layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("http");
            continue_trace(&span, Some("not-a-traceparent"));
            let trace_id = trace_id_of(&span).expect("a new trace");
            assert_eq!(trace_id.len(), 32);
            assert_ne!(trace_id, "0af7651916cd43dd8448eb211c80319c");
        });
    }

    #[test]
    fn without_tracing_there_is_nothing_to_propagate() {
        let span = tracing::info_span!("handle");
        continue_trace(&span, Some(PARENT));
        assert_eq!(traceparent_of(&span), None);
    }

    #[test]
    fn traces_url_accepts_a_base_or_a_full_url() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/v1/traces/"),
            "http://collector:4318/v1/traces"
        );
    }
}
