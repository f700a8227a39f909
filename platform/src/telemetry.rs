//! Logging, tracing and error reporting, set up once by every binary.
//!
//! - Logs: RUST_LOG filters (default info), D2C_LOG_FORMAT=json for
//!   machine-read logs. The filter applies to the log output only: spans are
//!   traced and errors reported whatever the log level.
//! - Traces: an OpenTelemetry SDK tracer always runs (trace ids propagate
//!   through Kafka headers and show in logs as `trace_id`); spans are
//!   exported over OTLP/HTTP only when D2C_OTLP_ENDPOINT is set.
//! - Errors: every ERROR event is counted; with D2C_SLACK_WEBHOOK_URL it goes
//!   to Slack (see `slack`), with D2C_SENTRY_DSN to Sentry.
//!
//! Call [`flush`] before the process exits, so buffered spans and reports
//! are sent.

use crate::config::ConfigError;
use crate::config::{var, Secret};
use crate::slack::{SlackHandle, SlackLayer, SlackSettings};
use crate::{error_reports, tracing_context};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::OnceLock;
use std::time::Duration;
use tracing::Level;
use tracing_subscriber::filter::{filter_fn, LevelFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Telemetry settings; printed at start (secrets masked).
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// The binary's name (`d2c-orders`): `service.name` of its spans, and
    /// the service named in error reports.
    pub service: String,
    /// D2C_OTLP_ENDPOINT: an OTLP/HTTP collector (`http://127.0.0.1:4318`,
    /// or its full `/v1/traces` URL). Unset: spans are not exported.
    pub otlp_endpoint: Option<String>,
    /// D2C_OTLP_BATCH_MS: spans are exported at least this often.
    pub otlp_batch: Duration,
    /// D2C_SLACK_WEBHOOK_URL and D2C_SLACK_*: unset URL, no Slack.
    pub slack: Option<SlackSettings>,
    /// D2C_SENTRY_DSN: unset, no Sentry.
    pub sentry_dsn: Option<Secret>,
    /// D2C_SENTRY_ENVIRONMENT
    pub sentry_environment: String,
}

impl TelemetryConfig {
    pub fn from_env(service: &str) -> Result<Self, ConfigError> {
        let set = |value: String| Some(value).filter(|value| !value.trim().is_empty());
        let slack = match set(var("D2C_SLACK_WEBHOOK_URL", String::new())?) {
            None => None,
            Some(url) => {
                let defaults = SlackSettings::new(Secret::new(url.trim()));
                Some(SlackSettings {
                    batch_interval: Duration::from_millis(var(
                        "D2C_SLACK_BATCH_MS",
                        defaults.batch_interval.as_millis() as u64,
                    )?),
                    batch_max: var("D2C_SLACK_BATCH_MAX", defaults.batch_max)?,
                    max_posts_per_minute: var(
                        "D2C_SLACK_MAX_PER_MINUTE",
                        defaults.max_posts_per_minute,
                    )?,
                    queue: var("D2C_SLACK_QUEUE", defaults.queue)?,
                    timeout: Duration::from_millis(var(
                        "D2C_SLACK_TIMEOUT_MS",
                        defaults.timeout.as_millis() as u64,
                    )?),
                    ..defaults
                })
            }
        };
        Ok(Self {
            service: service.to_owned(),
            otlp_endpoint: set(var("D2C_OTLP_ENDPOINT", String::new())?),
            otlp_batch: Duration::from_millis(var("D2C_OTLP_BATCH_MS", 2_000)?),
            slack,
            sentry_dsn: set(var("D2C_SENTRY_DSN", String::new())?).map(Secret::new),
            sentry_environment: var("D2C_SENTRY_ENVIRONMENT", "local".to_owned())?,
        })
    }

    /// Everything off but the tracer itself (when the environment is invalid).
    fn off(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            otlp_endpoint: None,
            otlp_batch: Duration::from_secs(2),
            slack: None,
            sentry_dsn: None,
            sentry_environment: "local".to_owned(),
        }
    }
}

/// What must outlive `init` and be flushed at exit.
struct Installed {
    tracer: SdkTracerProvider,
    slack: Option<SlackHandle>,
    sentry: Option<sentry::ClientInitGuard>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// The binary's file name, e.g. `d2c-gateway`.
fn binary_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|path| {
            std::path::Path::new(&path)
                .file_stem()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "d2c".to_owned())
}

/// Spans the tracer (and the error layers, which read span data) see: all
/// but `trace!` ones, whatever RUST_LOG says, so propagation never depends
/// on the log level.
fn traced(metadata: &tracing::Metadata<'_>, events_up_to: Level) -> bool {
    if metadata.is_span() {
        *metadata.level() <= Level::DEBUG
    } else {
        *metadata.level() <= events_up_to
    }
}

/// Sets up logging, tracing and error reporting for this process, named
/// after its binary. A second call (tests) does nothing.
pub fn init() {
    if INSTALLED.get().is_some() {
        return;
    }
    let service = binary_name();
    let mut problems: Vec<String> = Vec::new();
    let config = TelemetryConfig::from_env(&service).unwrap_or_else(|error| {
        problems.push(format!("{error}; tracing export and error reports are off"));
        TelemetryConfig::off(&service)
    });

    let (tracer, export_problem) = tracing_context::tracer_provider(
        &service,
        config.otlp_endpoint.as_deref(),
        config.otlp_batch,
    );
    problems.extend(export_problem.map(|problem| problem.to_string()));

    let (slack, slack_handle) = match config.slack.clone() {
        None => (SlackLayer::counting(&service), None),
        Some(settings) => match SlackLayer::new(&service, settings) {
            Ok((layer, handle)) => (layer, Some(handle)),
            Err(error) => {
                problems.push(format!("Slack sender not started: {error}"));
                (SlackLayer::counting(&service), None)
            }
        },
    };
    let sentry = config.sentry_dsn.as_ref().and_then(|dsn| {
        error_reports::init(dsn, &service, &config.sentry_environment)
            .map_err(|error| problems.push(error.to_string()))
            .ok()
    });

    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,librdkafka=warn"));
    let json = std::env::var("D2C_LOG_FORMAT").is_ok_and(|format| format == "json");
    let logs = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr);
    let logs = if json {
        logs.json().with_filter(filter).boxed()
    } else {
        logs.with_filter(filter).boxed()
    };
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![
        logs,
        tracing_context::layer(&tracer)
            .with_filter(
                filter_fn(|metadata: &tracing::Metadata<'_>| traced(metadata, Level::WARN))
                    .with_max_level_hint(LevelFilter::DEBUG),
            )
            .boxed(),
        slack
            .with_filter(
                filter_fn(|metadata: &tracing::Metadata<'_>| traced(metadata, Level::ERROR))
                    .with_max_level_hint(LevelFilter::DEBUG),
            )
            .boxed(),
    ];
    if sentry.is_some() {
        layers.push(
            error_reports::SentryLayer::new()
                .with_filter(
                    filter_fn(|metadata: &tracing::Metadata<'_>| traced(metadata, Level::ERROR))
                        .with_max_level_hint(LevelFilter::DEBUG),
                )
                .boxed(),
        );
    }
    // Fails when a subscriber is already set (tests); theirs stays.
    let _ = tracing_subscriber::registry().with(layers).try_init();
    for problem in problems {
        tracing::warn!(%problem, "Telemetry is degraded");
    }
    tracing::info!(?config, "Telemetry");
    let _ = INSTALLED.set(Installed {
        tracer,
        slack: slack_handle,
        sentry,
    });
}

/// Sends what is buffered (spans, Slack lines, Sentry events), waiting a
/// few seconds at most. Blocks: call it at exit, off the async threads.
pub fn flush() {
    let Some(installed) = INSTALLED.get() else {
        return;
    };
    if let Err(error) = installed.tracer.force_flush() {
        tracing::warn!(%error, "Spans not exported at exit");
    }
    if let Some(slack) = &installed.slack {
        if !slack.flush(Duration::from_secs(3)) {
            tracing::warn!("Slack did not take the last errors before exit");
        }
    }
    if let Some(sentry) = &installed.sentry {
        sentry.flush(Some(Duration::from_secs(2)));
    }
}
