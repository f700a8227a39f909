//! When Slack fails (answers 500, is not there, or hangs), errors are
//! dropped and counted, and logging them never waits for Slack.

mod support;

use d2c_platform::config::Secret;
use d2c_platform::slack::{SlackLayer, SlackSettings};
use std::time::{Duration, Instant};
use support::{counter, FakeSlack};
use tracing_subscriber::layer::SubscriberExt as _;

const DROPPED: &str = "d2c_slack_messages_dropped_total";

fn settings(url: String) -> SlackSettings {
    SlackSettings {
        batch_interval: Duration::from_millis(50),
        batch_max: 5,
        max_posts_per_minute: 100,
        queue: 8,
        timeout: Duration::from_secs(5),
        ..SlackSettings::new(Secret::new(url))
    }
}

fn dispatch(url: String) -> (tracing::Dispatch, d2c_platform::slack::SlackHandle) {
    let (layer, handle) = SlackLayer::new("test-down", settings(url)).expect("sender starts");
    (
        tracing::Dispatch::new(tracing_subscriber::registry().with(layer)),
        handle,
    )
}

async fn wait_for_counter(labels: &str, expected: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let value = counter(DROPPED, labels);
        if value >= expected {
            assert_eq!(value, expected, "{labels}");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{DROPPED}{{{labels}}} stayed at {value}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_slack_costs_dropped_errors_not_time() {
    const FAILED: &str = r#"reason="post_failed""#;
    const FULL: &str = r#"reason="queue_full""#;

    // Slack answers 500: the batch is dropped and its events counted.
    let failing = FakeSlack::start(500).await;
    let (errors, handle) = dispatch(failing.url());
    let before = counter(DROPPED, FAILED);
    tracing::dispatcher::with_default(&errors, || {
        for _ in 0..3 {
            tracing::error!("Slack answers 500 to this");
        }
    });
    failing.wait_for_posts(1, Duration::from_secs(5)).await;
    assert!(handle.flush(Duration::from_secs(2)));
    wait_for_counter(FAILED, before + 3.0).await;

    // Nobody listens: the same.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let (errors, handle) = dispatch(format!("http://127.0.0.1:{port}/hook"));
    let before = counter(DROPPED, FAILED);
    tracing::dispatcher::with_default(&errors, || {
        tracing::error!("Slack is gone");
        tracing::error!("Slack is still gone");
    });
    assert!(handle.flush(Duration::from_secs(5)));
    wait_for_counter(FAILED, before + 2.0).await;

    // Slack hangs: the sender waits in a post, the queue fills, and logging
    // goes on at full speed, dropping what does not fit.
    let hanging = FakeSlack::start(200).await;
    hanging.delay(Duration::from_secs(3));
    let (errors, _handle) = dispatch(hanging.url());
    tracing::dispatcher::with_default(&errors, || tracing::error!("The first one"));
    hanging.wait_for_posts(1, Duration::from_secs(5)).await;
    let before = counter(DROPPED, FULL);
    let started = Instant::now();
    tracing::dispatcher::with_default(&errors, || {
        for index in 0..1_000 {
            tracing::error!(index, "While Slack hangs");
        }
    });
    let took = started.elapsed();
    println!("1000 errors logged in {took:?} while Slack hangs");
    assert!(
        took < Duration::from_millis(500),
        "logging waited for Slack: {took:?}"
    );
    let dropped = counter(DROPPED, FULL) - before;
    assert!(
        (992.0..=1_000.0).contains(&dropped),
        "all but the queue's 8 dropped: {dropped}"
    );
}
