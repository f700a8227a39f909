//! A local HTTP server standing in for Slack (or Sentry): it records every
//! POST and answers with a status the test chooses, optionally late.

#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Recorded {
    /// (path, body) of every POST.
    requests: Mutex<Vec<(String, Vec<u8>)>>,
    status: AtomicU16,
    delay_ms: AtomicU64,
}

pub struct FakeSlack {
    addr: std::net::SocketAddr,
    recorded: Arc<Recorded>,
}

async fn record(State(recorded): State<Arc<Recorded>>, uri: Uri, body: Bytes) -> StatusCode {
    recorded
        .requests
        .lock()
        .expect("recorder lock")
        .push((uri.path().to_owned(), body.to_vec()));
    let delay = recorded.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    StatusCode::from_u16(recorded.status.load(Ordering::Relaxed))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl FakeSlack {
    /// A server on 127.0.0.1:0 answering `status` to every POST.
    pub async fn start(status: u16) -> Self {
        let recorded = Arc::new(Recorded::default());
        recorded.status.store(status, Ordering::Relaxed);
        let app = Router::new()
            .fallback(post(record))
            .with_state(Arc::clone(&recorded));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self { addr, recorded }
    }

    pub fn url(&self) -> String {
        format!("http://{}/services/T000/B000/XXXX", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answer every request this late.
    pub fn delay(&self, delay: Duration) {
        self.recorded
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn requests(&self) -> Vec<(String, Vec<u8>)> {
        self.recorded
            .requests
            .lock()
            .expect("recorder lock")
            .clone()
    }

    /// The `text` of every post so far.
    pub fn posts(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|(_, body)| {
                let json: serde_json::Value =
                    serde_json::from_slice(body).expect("Slack posts are JSON");
                json["text"].as_str().expect("a text field").to_owned()
            })
            .collect()
    }

    /// Waits until `count` posts arrived (panics after `within`).
    pub async fn wait_for_posts(&self, count: usize, within: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let posts = self.posts();
            if posts.len() >= count {
                return posts;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{count} posts expected within {within:?}, got {posts:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A counter of the runtime's registry, summed over the series whose labels
/// contain `labels`.
pub fn counter(name: &str, labels: &str) -> f64 {
    d2c_platform::metrics::METRICS
        .render()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
