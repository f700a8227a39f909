//! The scheduled business report against a real broker and Postgres: two
//! projectors on one database, a short interval, and a local HTTP server
//! that records what Slack would receive. Reports come from exactly one
//! replica, their periods follow each other without gap or overlap (also
//! when the leader dies and the other takes over), and their numbers add up
//! to the checkouts written to the read side.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use d2c_integration::app::until;
use d2c_integration::harness::{Platform, Service};
use d2c_integration::postgres::TestDatabase;
use d2c_proto::common::v1::rejection::Code;
use d2c_proto::common::v1::Rejection;
use d2c_proto::orders::v1::{Order, OrderLine, OrderStatus};
use d2c_readside::ArchivedEvent;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Every service whose `*.events` topic the projector subscribes to.
const SERVICES: &[&str] = &[
    "catalog",
    "gateway",
    "orders",
    "inventory",
    "payments",
    "customers",
];

/// A stand-in for Slack's incoming webhook: answers `ok` and keeps every
/// JSON body it was sent.
struct SlackRecorder {
    url: String,
    posts: Arc<Mutex<Vec<Value>>>,
}

impl SlackRecorder {
    async fn start() -> Self {
        let posts = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route(
                "/services/T000/B000/secret",
                post(
                    |State(posts): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>| async move {
                        posts.lock().expect("posts").push(body);
                        "ok"
                    },
                ),
            )
            .with_state(Arc::clone(&posts));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/services/T000/B000/secret"),
            posts,
        }
    }

    /// The business reports received so far (the error layer may post to
    /// the same webhook; those are left out).
    fn reports(&self) -> Vec<Report> {
        self.posts
            .lock()
            .expect("posts")
            .iter()
            .filter(|post| post["blocks"][0]["text"]["text"] == "Business report")
            .map(Report::of)
            .collect()
    }
}

/// What a test reads back from one report message.
#[derive(Debug, Clone)]
struct Report {
    text: String,
    runner: String,
}

impl Report {
    fn of(post: &Value) -> Self {
        let blocks = post["blocks"].as_array().cloned().unwrap_or_default();
        let runner = blocks
            .iter()
            .filter(|block| block["type"] == "context")
            .filter_map(|block| block["elements"][0]["text"].as_str())
            .find_map(|text| text.strip_prefix("Posted by "))
            .unwrap_or_default()
            .to_owned();
        Self {
            text: post["text"].as_str().unwrap_or_default().to_owned(),
            runner,
        }
    }

    /// The number right before `what` in the text ("3 orders confirmed").
    fn count(&self, what: &str) -> u64 {
        let Some(end) = self.text.find(what) else {
            return 0;
        };
        self.text[..end]
            .split_whitespace()
            .last()
            .and_then(|number| number.parse().ok())
            .unwrap_or(0)
    }

    /// The revenue in `currency`, in minor units ("EUR 60.00" → 6000).
    fn revenue_minor(&self, currency: &str) -> i64 {
        let Some(start) = self.text.find(&format!("{currency} ")) else {
            return 0;
        };
        let amount: String = self.text[start + currency.len() + 1..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
            .filter(|c| *c != ',')
            .collect();
        let (major, minor) = amount.split_once('.').unwrap_or((&amount, "0"));
        major.parse::<i64>().unwrap_or(0) * 100 + minor.parse::<i64>().unwrap_or(0)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

fn order(id: &str, total_minor: i64, status: OrderStatus, rejection: Option<Rejection>) -> Order {
    Order {
        order_id: id.into(),
        customer_id: "cust-1".into(),
        lines: vec![OrderLine {
            sku: "REPORT-1".into(),
            quantity: 1,
            unit_price_minor: total_minor,
        }],
        currency: "EUR".into(),
        total_minor,
        status: status as i32,
        placed_at_ms: now_ms(),
        rejection,
        ..Order::default()
    }
}

fn event(offset: i64, order_id: &str, message_type: &str, at_ms: i64) -> ArchivedEvent {
    ArchivedEvent {
        topic: "orders.events".into(),
        partition: 0,
        offset,
        recorded_at_ms: at_ms,
        message_type: message_type.into(),
        message_id: Some(uuid::Uuid::new_v4()),
        key: Some(order_id.into()),
        payload: Vec::new(),
        headers: Vec::new(),
    }
}

/// Three confirmed orders (EUR 10, 20, 30) and two declined cards, as the
/// projector writes them, with their OrderPlaced and settling events.
async fn write_checkouts(db: &TestDatabase) {
    let declined = || {
        Some(Rejection {
            code: Code::PaymentDeclined as i32,
            reason: "insufficient_funds".into(),
            ..Rejection::default()
        })
    };
    let orders = [
        order("r-1", 1_000, OrderStatus::Confirmed, None),
        order("r-2", 2_000, OrderStatus::Confirmed, None),
        order("r-3", 3_000, OrderStatus::Confirmed, None),
        order("r-4", 1_000, OrderStatus::Rejected, declined()),
        order("r-5", 1_000, OrderStatus::Rejected, declined()),
    ];
    let versions: Vec<(i64, Order)> = orders
        .iter()
        .enumerate()
        .map(|(index, order)| (index as i64, order.clone()))
        .collect();
    let mut events = Vec::new();
    for (index, order) in orders.iter().enumerate() {
        let settled = if order.status == OrderStatus::Confirmed as i32 {
            "d2c.orders.v1.OrderConfirmed"
        } else {
            "d2c.orders.v1.OrderRejected"
        };
        let offset = 2 * index as i64;
        events.push(event(
            offset,
            &order.order_id,
            "d2c.orders.v1.OrderPlaced",
            order.placed_at_ms,
        ));
        events.push(event(
            offset + 1,
            &order.order_id,
            settled,
            order.placed_at_ms + 80,
        ));
    }
    d2c_readside::ensure_partitions_for(&db.pool, &[now_ms()])
        .await
        .expect("month partition");
    let mut tx = db.pool.begin().await.expect("transaction");
    d2c_readside::archive_events(&mut tx, &events)
        .await
        .expect("events archived");
    d2c_readside::insert_order_versions(&mut tx, &versions)
        .await
        .expect("orders projected");
    tx.commit().await.expect("committed");
}

/// (runner, from, to) of every recorded report run, oldest first.
async fn report_runs(db: &TestDatabase) -> Vec<(String, i64, i64)> {
    d2c_readside::job_runs(&db.pool)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|run| run.job == d2c_readside::JOB_BUSINESS_REPORT)
        .filter_map(|run| {
            let period = run.detail.strip_prefix("period ")?.split(':').next()?;
            let (from, to) = period.split_once("..")?;
            Some((run.runner, from.parse().ok()?, to.parse().ok()?))
        })
        .collect()
}

fn assert_contiguous(runs: &[(String, i64, i64)]) {
    for pair in runs.windows(2) {
        assert_eq!(
            pair[0].2, pair[1].1,
            "each period starts where the last ended: {runs:?}"
        );
    }
}

async fn projector(platform: &Platform, name: &str, env: &[(&str, String)]) -> Service {
    let started = platform.projector(name, env).await;
    let service = match started {
        Ok(service) => service,
        Err(error) => {
            platform.print_logs();
            panic!("{name} did not start: {error:#}");
        }
    };
    if let Err(error) = service.wait_ready(Duration::from_secs(60)).await {
        platform.print_logs();
        panic!("{name} not ready: {error:#}");
    }
    service
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_projector_posts_the_business_report_and_the_numbers_add_up() {
    let db = &TestDatabase::create().await.expect("database");
    let platform = Platform::new(SERVICES).await.expect("platform");
    let slack = SlackRecorder::start().await;
    let env = vec![
        ("D2C_DATABASE_URL", db.url.clone()),
        ("D2C_SLACK_WEBHOOK_URL", slack.url.clone()),
        ("D2C_REPORT_INTERVAL_MS", "1000".to_owned()),
    ];
    let (a, b) = tokio::join!(
        projector(&platform, "projector-a", &env),
        projector(&platform, "projector-b", &env),
    );
    let slack = &slack;
    until(
        Duration::from_secs(20),
        "a first business report",
        move || async move { !slack.reports().is_empty() },
    )
    .await;

    write_checkouts(db).await;
    // Every report after the checkouts were written, and two more seconds.
    let posted = slack.reports().len();
    until(
        Duration::from_secs(20),
        "reports after the checkouts",
        move || async move { slack.reports().len() >= posted + 3 },
    )
    .await;

    let reports = slack.reports();
    let runners: std::collections::BTreeSet<&str> = reports
        .iter()
        .map(|report| report.runner.as_str())
        .collect();
    assert_eq!(runners.len(), 1, "one runner while both live: {runners:?}");
    let confirmed: u64 = reports
        .iter()
        .map(|report| report.count("orders confirmed"))
        .sum();
    let rejected: u64 = reports.iter().map(|report| report.count("rejected")).sum();
    let revenue: i64 = reports
        .iter()
        .map(|report| report.revenue_minor("EUR"))
        .sum();
    assert_eq!(
        (confirmed, rejected, revenue),
        (3, 2, 6_000),
        "the reports add up to the checkouts: {reports:#?}"
    );
    // Written in one transaction, the checkouts reached the read side at
    // one moment: one period, one report has them all.
    let with_orders: Vec<&Report> = reports
        .iter()
        .filter(|report| report.count("orders confirmed") > 0 || report.count("rejected") > 0)
        .collect();
    assert_eq!(with_orders.len(), 1, "{with_orders:#?}");
    let text = &with_orders[0].text;
    assert!(
        text.contains("3 orders confirmed (revenue EUR 60.00), 2 rejected (insufficient_funds 2)"),
        "{text}"
    );
    assert!(text.contains("p99 80 ms (5 checkouts)"), "{text}");
    eprintln!("the business report with the checkouts: {text}");
    let runs = report_runs(db).await;
    assert!(
        runs.iter()
            .all(|(runner, _, _)| runners.contains(runner.as_str())),
        "job_runs name the same runner: {runs:?}"
    );
    assert_contiguous(&runs);

    // The leader dies: the other replica takes over where it left off.
    let leader_name = runners.first().copied().unwrap_or_default().to_owned();
    let (mut leader, survivor) = if leader_name == a.name {
        (a, b)
    } else {
        (b, a)
    };
    leader.kill9().await.expect("killed");
    let survivor_name = survivor.name.clone();
    let took_over = &survivor_name;
    until(
        Duration::from_secs(20),
        "the survivor reports",
        move || async move {
            report_runs(db)
                .await
                .iter()
                .filter(|(runner, _, _)| runner == took_over)
                .count()
                >= 2
        },
    )
    .await;
    let runs = report_runs(db).await;
    assert_contiguous(&runs);
    let first_of_survivor = runs
        .iter()
        .position(|(runner, _, _)| *runner == survivor_name)
        .expect("survivor ran");
    assert!(
        runs[first_of_survivor..]
            .iter()
            .all(|(runner, _, _)| *runner == survivor_name),
        "the dead leader reports nothing: {runs:?}"
    );
    assert!(
        first_of_survivor > 0
            && runs[..first_of_survivor]
                .iter()
                .all(|(runner, _, _)| *runner == leader_name),
        "{runs:?}"
    );
}
