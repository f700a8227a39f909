//! ERROR events to a Slack incoming webhook, and the error counter.
//!
//! Delivery rule: best effort, never at the caller's expense. The layer only
//! formats the event and `try_send`s it into a bounded queue; one background
//! thread batches (at most `batch_max` distinct lines, or what came within
//! `batch_interval`, into one message), de-duplicates (the same message
//! within a batch is one line with a count), rate-limits (at most
//! `max_posts_per_minute` posts in any 60 s) and posts. Events are dropped,
//! and counted in `d2c_slack_messages_dropped_total{reason}`, when the queue
//! is full (`queue_full`), when the rate limit holds a batch back and new
//! lines no longer fit in it (`rate_limited`), or when Slack does not take
//! the post (`post_failed`). Nothing is retried: a webhook that is down must
//! cost neither memory nor time.
//!
//! Every ERROR event is counted in `d2c_log_errors_total{service}`, with or
//! without a webhook.

use crate::config::Secret;
use crate::metrics::METRICS;
use crate::tracing_context::{event_context, remember_message_type, EventContext};
use prometheus::{IntCounterVec, Opts};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::LazyLock;
use std::time::{Duration, Instant};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Metric names of this module (registered in the runtime's registry).
pub const SLACK_MESSAGES_DROPPED: &str = "d2c_slack_messages_dropped_total";
pub const LOG_ERRORS: &str = "d2c_log_errors_total";

/// The rate limit's window.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// A line longer than this is cut: Slack truncates long messages anyway.
const MAX_LINE_CHARS: usize = 500;

struct SlackMetrics {
    dropped: IntCounterVec,
    log_errors: IntCounterVec,
}

static SLACK_METRICS: LazyLock<SlackMetrics> = LazyLock::new(|| {
    let counter = |name: &str, help: &str, labels: &[&str]| {
        let counter = IntCounterVec::new(Opts::new(name, help), labels)
            .unwrap_or_else(|error| panic!("metric {name} is malformed: {error}"));
        METRICS
            .registry
            .register(Box::new(counter.clone()))
            .unwrap_or_else(|error| panic!("metric {name} registered twice: {error}"));
        counter
    };
    SlackMetrics {
        dropped: counter(
            SLACK_MESSAGES_DROPPED,
            "ERROR events not delivered to Slack, by reason (queue_full, rate_limited, post_failed).",
            &["reason"],
        ),
        log_errors: counter(
            LOG_ERRORS,
            "ERROR events logged, by service.",
            &["service"],
        ),
    }
});

/// Registers the counters, so `/metrics` shows them before the first error.
pub fn register_metrics() {
    LazyLock::force(&SLACK_METRICS);
}

fn dropped(reason: &str, events: u64) {
    if events > 0 {
        SLACK_METRICS
            .dropped
            .with_label_values(&[reason])
            .inc_by(events);
    }
}

/// Where and how often to post.
#[derive(Debug, Clone)]
pub struct SlackSettings {
    /// D2C_SLACK_WEBHOOK_URL: the incoming webhook (a credential).
    pub webhook_url: Secret,
    /// D2C_SLACK_BATCH_MS: errors within this long go into one message.
    pub batch_interval: Duration,
    /// D2C_SLACK_BATCH_MAX: distinct lines per message; a full batch is
    /// posted at once.
    pub batch_max: usize,
    /// D2C_SLACK_MAX_PER_MINUTE: posts in any 60 s at most.
    pub max_posts_per_minute: usize,
    /// D2C_SLACK_QUEUE: events waiting for the sender at most.
    pub queue: usize,
    /// D2C_SLACK_TIMEOUT_MS: one post may take this long.
    pub timeout: Duration,
}

impl SlackSettings {
    pub fn new(webhook_url: Secret) -> Self {
        Self {
            webhook_url,
            batch_interval: Duration::from_secs(2),
            batch_max: 20,
            max_posts_per_minute: 10,
            queue: 1024,
            timeout: Duration::from_secs(5),
        }
    }
}

/// One ERROR event as Slack will show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorLine {
    pub message: String,
    pub target: String,
    pub trace_id: Option<String>,
    pub message_type: Option<String>,
}

enum Command {
    Error(ErrorLine),
    /// Post what is batched now (if the rate limit allows), then answer.
    Flush(SyncSender<()>),
}

/// The layer: counts every ERROR event and queues it for Slack (if a
/// webhook is configured).
pub struct SlackLayer {
    service: String,
    queue: Option<SyncSender<Command>>,
}

/// Flushes the sender (at shutdown).
#[derive(Clone)]
pub struct SlackHandle {
    queue: SyncSender<Command>,
}

impl SlackHandle {
    /// Asks the sender to post what it has and waits at most `within`;
    /// `false` if it did not answer in time.
    pub fn flush(&self, within: Duration) -> bool {
        let (done, answered) = mpsc::sync_channel(1);
        if self.queue.try_send(Command::Flush(done)).is_err() {
            return false;
        }
        answered.recv_timeout(within).is_ok()
    }
}

impl SlackLayer {
    /// Counting only: no webhook.
    pub fn counting(service: &str) -> Self {
        register_metrics();
        Self {
            service: service.to_owned(),
            queue: None,
        }
    }

    /// Counting and posting to `settings.webhook_url` from a new thread.
    pub fn new(service: &str, settings: SlackSettings) -> std::io::Result<(Self, SlackHandle)> {
        register_metrics();
        let (queue, commands) = mpsc::sync_channel(settings.queue.max(1));
        let sender_service = service.to_owned();
        std::thread::Builder::new()
            .name("slack-sender".into())
            .spawn(move || run_sender(&sender_service, &settings, &commands))?;
        Ok((
            Self {
                service: service.to_owned(),
                queue: Some(queue.clone()),
            },
            SlackHandle { queue },
        ))
    }
}

impl<S> Layer<S> for SlackLayer
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
        let metadata = event.metadata();
        if *metadata.level() != Level::ERROR {
            return;
        }
        SLACK_METRICS
            .log_errors
            .with_label_values(&[&self.service])
            .inc();
        let Some(queue) = &self.queue else {
            return;
        };
        // The sender's own failures are warnings, so this cannot loop; the
        // HTTP client's internals are not ours to report.
        if metadata.target().starts_with(module_path!()) {
            return;
        }
        let EventContext {
            trace_id,
            message_type,
        } = event_context(event, &ctx);
        let mut text = EventText::default();
        event.record(&mut text);
        let line = ErrorLine {
            message: text.finish(),
            target: metadata.target().to_owned(),
            trace_id,
            message_type,
        };
        match queue.try_send(Command::Error(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => dropped("queue_full", 1),
            // The sender thread is gone (it cannot be restarted from here).
            Err(TrySendError::Disconnected(_)) => dropped("post_failed", 1),
        }
    }
}

/// The event's message, then its other fields as `key=value`.
#[derive(Default)]
struct EventText {
    message: String,
    fields: String,
}

impl EventText {
    fn finish(self) -> String {
        let mut text = self.message;
        if !self.fields.is_empty() {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(self.fields.trim_start());
        }
        if text.chars().count() > MAX_LINE_CHARS {
            text = text.chars().take(MAX_LINE_CHARS).collect();
            text.push('…');
        }
        text
    }
}

impl tracing::field::Visit for EventText {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

/// One line of a batch: an event and how often it came.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counted {
    line: ErrorLine,
    count: u64,
}

/// The sender's decisions, apart from I/O and the clock (both passed in), so
/// tests can drive it.
pub(crate) struct Batcher {
    batch_interval: Duration,
    batch_max: usize,
    max_posts_per_minute: usize,
    lines: Vec<Counted>,
    by_key: HashMap<(String, String), usize>,
    first_at: Option<Instant>,
    /// Events that did not fit while the rate limit held the batch back;
    /// the next message says how many.
    overflowed: u64,
    posts: VecDeque<Instant>,
}

/// A message ready to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Post {
    pub text: String,
    /// The events it reports (what is dropped if the post fails).
    pub events: u64,
}

impl Batcher {
    pub(crate) fn new(settings: &SlackSettings) -> Self {
        Self {
            batch_interval: settings.batch_interval,
            batch_max: settings.batch_max.max(1),
            max_posts_per_minute: settings.max_posts_per_minute.max(1),
            lines: Vec::new(),
            by_key: HashMap::new(),
            first_at: None,
            overflowed: 0,
            posts: VecDeque::new(),
        }
    }

    pub(crate) fn add(&mut self, line: ErrorLine, now: Instant) {
        let key = (line.target.clone(), line.message.clone());
        if let Some(index) = self.by_key.get(&key) {
            self.lines[*index].count += 1;
            return;
        }
        if self.lines.len() >= self.batch_max {
            // Only while the rate limit holds a full batch back.
            self.overflowed += 1;
            dropped("rate_limited", 1);
            return;
        }
        self.first_at.get_or_insert(now);
        self.by_key.insert(key, self.lines.len());
        self.lines.push(Counted { line, count: 1 });
    }

    fn is_due(&self, now: Instant) -> bool {
        match self.first_at {
            None => false,
            Some(first) => {
                self.lines.len() >= self.batch_max
                    || now.saturating_duration_since(first) >= self.batch_interval
            }
        }
    }

    fn may_post(&mut self, now: Instant) -> bool {
        while self
            .posts
            .front()
            .is_some_and(|posted| now.saturating_duration_since(*posted) >= RATE_WINDOW)
        {
            self.posts.pop_front();
        }
        self.posts.len() < self.max_posts_per_minute
    }

    /// The message to post now, if one is due (or `force`d) and the rate
    /// limit allows it.
    pub(crate) fn take(&mut self, service: &str, now: Instant, force: bool) -> Option<Post> {
        if self.lines.is_empty() || !(force || self.is_due(now)) || !self.may_post(now) {
            return None;
        }
        self.posts.push_back(now);
        let events: u64 = self.lines.iter().map(|counted| counted.count).sum();
        let mut text = format!(
            ":rotating_light: *{service}*: {events} error{}",
            if events == 1 { "" } else { "s" }
        );
        for Counted { line, count } in self.lines.drain(..) {
            let _ = write!(text, "\n• `{}`", line.message.replace('`', "'"));
            if count > 1 {
                let _ = write!(text, " ×{count}");
            }
            let _ = write!(text, " — target `{}`", line.target);
            if let Some(trace_id) = &line.trace_id {
                let _ = write!(text, ", trace `{trace_id}`");
            }
            if let Some(message_type) = &line.message_type {
                let _ = write!(text, ", message type `{message_type}`");
            }
        }
        if self.overflowed > 0 {
            let _ = write!(
                text,
                "\n… and {} more not shown (rate limit)",
                self.overflowed
            );
            self.overflowed = 0;
        }
        self.by_key.clear();
        self.first_at = None;
        Some(Post { text, events })
    }

    /// How long the sender may sleep before something can be due.
    fn wait(&self, now: Instant) -> Duration {
        let idle = Duration::from_millis(500);
        let Some(first) = self.first_at else {
            return idle;
        };
        let due_in = (first + self.batch_interval).saturating_duration_since(now);
        let slot_in = match self.posts.front() {
            Some(oldest) if self.posts.len() >= self.max_posts_per_minute => {
                (*oldest + RATE_WINDOW).saturating_duration_since(now)
            }
            _ => Duration::ZERO,
        };
        due_in.max(slot_in).clamp(Duration::from_millis(1), idle)
    }
}

fn run_sender(service: &str, settings: &SlackSettings, commands: &Receiver<Command>) {
    let client = match reqwest::blocking::Client::builder()
        .timeout(settings.timeout)
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(%error, "Slack client cannot be built; errors will not reach Slack");
            for command in commands {
                match command {
                    Command::Error(_) => dropped("post_failed", 1),
                    Command::Flush(done) => {
                        let _ = done.try_send(());
                    }
                }
            }
            return;
        }
    };
    let post = |post: Post| {
        let body = serde_json::json!({ "text": post.text }).to_string();
        let outcome = client
            .post(settings.webhook_url.expose())
            .header("content-type", "application/json")
            .body(body)
            .send();
        let failure = match outcome {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("Slack answered {}", response.status())),
            // Without the URL: it is the credential.
            Err(error) => Some(error.without_url().to_string()),
        };
        if let Some(reason) = failure {
            dropped("post_failed", post.events);
            tracing::warn!(%reason, events = post.events, "Errors not posted to Slack; dropped");
        }
    };
    let mut batcher = Batcher::new(settings);
    loop {
        let command = commands.recv_timeout(batcher.wait(Instant::now()));
        let mut flushes = Vec::new();
        match command {
            Ok(Command::Error(line)) => batcher.add(line, Instant::now()),
            Ok(Command::Flush(done)) => flushes.push(done),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(last) = batcher.take(service, Instant::now(), true) {
                    post(last);
                }
                return;
            }
        }
        // Whatever else is queued joins this batch; a batch that fills up
        // goes at once, so a burst does not overflow it.
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Error(line) => {
                    batcher.add(line, Instant::now());
                    if let Some(full) = batcher.take(service, Instant::now(), false) {
                        post(full);
                    }
                }
                Command::Flush(done) => flushes.push(done),
            }
        }
        if let Some(due) = batcher.take(service, Instant::now(), !flushes.is_empty()) {
            post(due);
        }
        for done in flushes {
            let _ = done.try_send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SlackSettings {
        SlackSettings {
            batch_interval: Duration::from_secs(2),
            batch_max: 3,
            max_posts_per_minute: 2,
            ..SlackSettings::new(Secret::new("http://127.0.0.1:1/hook"))
        }
    }

    fn line(message: &str) -> ErrorLine {
        ErrorLine {
            message: message.to_owned(),
            target: "d2c_runtime::worker".to_owned(),
            trace_id: Some("0af7651916cd43dd8448eb211c80319c".to_owned()),
            message_type: Some("d2c.orders.v1.PlaceOrder".to_owned()),
        }
    }

    #[test]
    fn errors_within_the_interval_become_one_message_with_counts() {
        let mut batcher = Batcher::new(&settings());
        let start = Instant::now();
        batcher.add(line("Step failed"), start);
        batcher.add(line("Step failed"), start + Duration::from_millis(10));
        batcher.add(line("Other"), start + Duration::from_millis(20));
        assert_eq!(
            batcher.take("d2c-orders", start + Duration::from_secs(1), false),
            None
        );
        let post = batcher
            .take("d2c-orders", start + Duration::from_secs(2), false)
            .expect("due after the interval");
        assert_eq!(post.events, 3);
        assert!(
            post.text
                .starts_with(":rotating_light: *d2c-orders*: 3 errors"),
            "{}",
            post.text
        );
        assert!(post.text.contains("• `Step failed` ×2 — target `d2c_runtime::worker`, trace `0af7651916cd43dd8448eb211c80319c`, message type `d2c.orders.v1.PlaceOrder`"), "{}", post.text);
        assert!(post.text.contains("• `Other` — target"), "{}", post.text);
        assert_eq!(
            batcher.take("d2c-orders", start + Duration::from_secs(9), false),
            None,
            "nothing left"
        );
    }

    #[test]
    fn a_full_batch_goes_at_once_and_the_rate_limit_holds_the_rest() {
        let mut batcher = Batcher::new(&settings());
        let start = Instant::now();
        for round in 0..3u64 {
            for index in 0..3 {
                batcher.add(line(&format!("e{round}-{index}")), start);
            }
            let posted = batcher.take("svc", start, false);
            assert_eq!(
                posted.is_some(),
                round < 2,
                "round {round}: two posts a minute"
            );
        }
        // Held back: the third batch stays, a fourth distinct line overflows.
        batcher.add(line("e2-0"), start);
        batcher.add(line("late"), start);
        let post = batcher
            .take("svc", start + RATE_WINDOW, false)
            .expect("a slot frees after a minute");
        assert_eq!(post.events, 4, "{}", post.text);
        assert!(post.text.contains("`e2-0` ×2"), "{}", post.text);
        assert!(
            post.text.contains("… and 1 more not shown"),
            "{}",
            post.text
        );
    }
}
