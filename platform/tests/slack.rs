//! The Slack layer against a local HTTP server that records what Slack would
//! receive: batching, de-duplication, the trace id and message type of the
//! span around an error, and the rate limit.

mod support;

use d2c_platform::config::Secret;
use d2c_platform::slack::{SlackLayer, SlackSettings};
use d2c_platform::tracing_context;
use std::time::Duration;
use support::{counter, FakeSlack};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::Layer as _;

const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_batched_deduplicated_and_rate_limited() {
    let slack = FakeSlack::start(200).await;
    let settings = SlackSettings {
        batch_interval: Duration::from_millis(300),
        batch_max: 5,
        max_posts_per_minute: 2,
        ..SlackSettings::new(Secret::new(slack.url()))
    };
    let (layer, handle) = SlackLayer::new("test-orders", settings).expect("sender starts");
    let provider = tracing_context::tracer_provider("test-orders", None, Duration::from_secs(1)).0;
    let subscriber = tracing_subscriber::registry()
        .with(tracing_context::layer(&provider))
        .with(layer.with_filter(tracing_subscriber::filter::LevelFilter::DEBUG));
    let dispatch = tracing::Dispatch::new(subscriber);
    let errors_before = counter("d2c_log_errors_total", r#"service="test-orders""#);
    let limited_before = counter(
        "d2c_slack_messages_dropped_total",
        r#"reason="rate_limited""#,
    );

    // 1: three of one error and one other, inside a handled message's span.
    tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!(
            "handle",
            d2c.message_type = "d2c.orders.v1.PlaceOrder",
            trace_id = tracing::field::Empty
        );
        tracing_context::continue_trace(&span, Some(PARENT));
        let _entered = span.enter();
        for attempt in 0..3 {
            tracing::error!(retryable = true, "Step failed: commit state");
            tracing::info!(attempt, "Not an error, not posted");
        }
        tracing::error!("Partition stopped on a permanent error");
    });
    let first = slack.wait_for_posts(1, Duration::from_secs(5)).await;
    let text = &first[0];
    println!("first post:\n{text}");
    assert!(
        text.starts_with(":rotating_light: *test-orders*: 4 errors"),
        "{text}"
    );
    assert!(
        text.contains(
            "• `Step failed: commit state retryable=true` ×3 — target `slack`, \
             trace `0af7651916cd43dd8448eb211c80319c`, message type `d2c.orders.v1.PlaceOrder`"
        ),
        "{text}"
    );
    assert!(
        text.contains("• `Partition stopped on a permanent error` — target"),
        "{text}"
    );
    assert_eq!(
        text.lines().count(),
        3,
        "one line per distinct error: {text}"
    );

    // 2: a full batch (5 distinct lines) goes at once, before the interval.
    tracing::dispatcher::with_default(&dispatch, || {
        for index in 0..5 {
            tracing::error!(index, "Distinct failure");
        }
    });
    let second = slack.wait_for_posts(2, Duration::from_millis(250)).await;
    assert!(
        second[1].contains("*test-orders*: 5 errors"),
        "{}",
        second[1]
    );

    // 3: two posts this minute already: the next batch is held back, and
    // what no longer fits into it is dropped and counted.
    tracing::dispatcher::with_default(&dispatch, || {
        for index in 0..12 {
            tracing::error!(index, "Held back");
        }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(slack.posts().len(), 2, "rate limited: {:?}", slack.posts());
    assert_eq!(
        counter(
            "d2c_slack_messages_dropped_total",
            r#"reason="rate_limited""#
        ) - limited_before,
        7.0,
        "5 of 12 fit into the held batch"
    );
    assert!(handle.flush(Duration::from_secs(2)), "the sender answers");
    assert_eq!(slack.posts().len(), 2, "a flush keeps to the rate limit");
    assert_eq!(
        counter("d2c_log_errors_total", r#"service="test-orders""#) - errors_before,
        21.0,
        "every ERROR event is counted"
    );
}
