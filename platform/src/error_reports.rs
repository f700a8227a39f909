//! ERROR events to Sentry, when `D2C_SENTRY_DSN` is set.
//!
//! The `sentry` client sends from its own thread (a bounded queue; a full
//! queue drops), so reporting never blocks the caller. Each event is tagged
//! with the service, and with the trace id and message type of the spans
//! around it, so it can be found next to its trace and its Slack line.

use crate::config::Secret;
use crate::tracing_context::{event_context, remember_message_type};
use std::sync::Arc;
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Why Sentry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SentrySetupError {
    /// Deliberately without the DSN: it is a credential.
    #[error("D2C_SENTRY_DSN is not a valid DSN: {0}")]
    InvalidDsn(String),
}

/// Starts the Sentry client for `service`. Keep the guard for the life of
/// the process: dropping it closes the client.
pub fn init(
    dsn: &Secret,
    service: &str,
    environment: &str,
) -> Result<sentry::ClientInitGuard, SentrySetupError> {
    let dsn: sentry::types::Dsn =
        dsn.expose()
            .parse()
            .map_err(|error: sentry::types::ParseDsnError| {
                SentrySetupError::InvalidDsn(error.to_string())
            })?;
    let tagged_service = service.to_owned();
    // `ClientOptions` is non-exhaustive: start from the defaults.
    let mut options = sentry::ClientOptions::default();
    options.dsn = Some(dsn);
    options.release = Some(format!("{service}@{}", env!("CARGO_PKG_VERSION")).into());
    options.environment = Some(environment.to_owned().into());
    options.server_name = Some(service.to_owned().into());
    // A hook, not a scope tag: scopes are per thread, hooks per client.
    options.before_send = Some(Arc::new(move |mut event| {
        event
            .tags
            .entry("service".to_owned())
            .or_insert_with(|| tagged_service.clone());
        Some(event)
    }));
    Ok(sentry::init(options))
}

/// ERROR events as Sentry events, tagged with their trace id and message
/// type. Filter it to spans and ERROR events (see `telemetry`).
pub struct SentryLayer {
    errors: sentry_tracing::ErrorLayer,
}

impl SentryLayer {
    pub fn new() -> Self {
        Self {
            errors: sentry_tracing::ErrorLayer::new(),
        }
    }
}

impl Default for SentryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for SentryLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attributes: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        remember_message_type(attributes, id, &ctx);
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if *event.metadata().level() != Level::ERROR {
            return;
        }
        let found = event_context(event, &ctx);
        sentry::with_scope(
            |scope| {
                if let Some(trace_id) = &found.trace_id {
                    scope.set_tag("trace_id", trace_id);
                }
                if let Some(message_type) = &found.message_type {
                    scope.set_tag("message_type", message_type);
                }
            },
            || Layer::<S>::on_event(&self.errors, event, ctx),
        );
    }
}
