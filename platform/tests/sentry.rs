//! With a DSN, ERROR events reach Sentry: a local HTTP server stands in for
//! it and receives the envelope, tagged with the service, trace id and
//! message type.

mod support;

use d2c_platform::config::Secret;
use d2c_platform::{error_reports, tracing_context};
use std::time::Duration;
use support::FakeSlack;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::Layer as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_events_reach_sentry_with_their_trace() {
    let sentry = FakeSlack::start(200).await;
    let dsn = Secret::new(format!("http://public@127.0.0.1:{}/1", sentry.port()));
    let guard = error_reports::init(&dsn, "test-payments", "test").expect("valid DSN");
    assert!(error_reports::init(&Secret::new("not a dsn"), "x", "test").is_err());

    let provider =
        tracing_context::tracer_provider("test-payments", None, Duration::from_secs(1)).0;
    let subscriber = tracing_subscriber::registry()
        .with(tracing_context::layer(&provider))
        .with(
            error_reports::SentryLayer::new()
                .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
        );
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!(
            "handle",
            d2c.message_type = "d2c.payments.v1.AuthorizePayment"
        );
        tracing_context::continue_trace(
            &span,
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        let _entered = span.enter();
        tracing::warn!("Only a warning: not sent");
        tracing::error!(order_id = "o-1", "The provider refused a refund");
    });
    assert!(
        guard.flush(Some(Duration::from_secs(5))),
        "Sentry client flushed"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (path, body) = loop {
        if let Some(request) = sentry.requests().into_iter().next() {
            break request;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no envelope reached the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let body = String::from_utf8_lossy(&body);
    println!("{path}\n{body}");
    assert_eq!(path, "/api/1/envelope/");
    assert!(body.contains("The provider refused a refund"), "{body}");
    assert!(body.contains(r#""service":"test-payments""#), "{body}");
    assert!(
        body.contains(r#""trace_id":"0af7651916cd43dd8448eb211c80319c""#),
        "{body}"
    );
    assert!(
        body.contains(r#""message_type":"d2c.payments.v1.AuthorizePayment""#),
        "{body}"
    );
    assert!(!body.contains("Only a warning"), "{body}");
    assert_eq!(sentry.requests().len(), 1, "one event, one envelope");
}
