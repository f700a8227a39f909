//! `/metrics` of every process of the platform, after a real checkout: each
//! passes `promtool check metrics`, the consumer lag of every processor's
//! group is there, the business counters count the checkout once, and every
//! metric the dashboard and alerts use (ops/metrics.txt) has the type and
//! labels listed there.

use d2c_integration::app::{order_body, Api, ALL_SERVICES};
use d2c_integration::harness::{Platform, Service};
use d2c_integration::postgres::TestDatabase;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Every service of the platform (topology `--only`).
const SERVICES: &[&str] = ALL_SERVICES;

/// Statistics (and so lag) every half second, so the test need not wait.
fn fast_stats() -> (&'static str, String) {
    ("D2C_STATS_INTERVAL_MS", "500".into())
}

/// One metric family of an exposition: its type and the label names of its
/// samples (`le` of histogram buckets left out).
#[derive(Debug, Default)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
    samples: usize,
}

/// The families of a Prometheus text exposition, by name.
fn families(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                families.entry(name.to_owned()).or_default().kind = kind.to_owned();
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let sample = &line[..name_end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| sample.strip_suffix(suffix))
            .find(|base| families.get(*base).is_some_and(|f| f.kind == "histogram"))
            .unwrap_or(sample)
            .to_owned();
        let labels = line[name_end..]
            .strip_prefix('{')
            .and_then(|rest| rest.split_once('}'))
            .map(|(labels, _)| labels)
            .unwrap_or_default();
        let entry = families.entry(family).or_default();
        entry.samples += 1;
        for pair in labels.split("\",").filter(|pair| !pair.is_empty()) {
            if let Some((label, _)) = pair.split_once('=') {
                if label != "le" {
                    entry.labels.insert(label.trim().to_owned());
                }
            }
        }
    }
    families
}

/// ops/metrics.txt: name → (type, labels).
fn listed_metrics() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/metrics.txt");
    let text = std::fs::read_to_string(path).expect("ops/metrics.txt is readable");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (name, kind, labels) = (words.next()?, words.next()?, words.next()?);
            let labels = if labels == "-" {
                BTreeSet::new()
            } else {
                labels.split(',').map(str::to_owned).collect()
            };
            Some((name.to_owned(), (kind.to_owned(), labels)))
        })
        .collect()
}

/// `promtool check metrics` on `text`: Ok, or what it complained about.
fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            format!("promtool not runnable ({error}): install Debian's prometheus package (./dev test does)")
        })?;
    child
        .stdin
        .take()
        .ok_or("promtool has no stdin")?
        .write_all(text.as_bytes())
        .map_err(|error| format!("writing to promtool: {error}"))?;
    let output = child
        .wait_with_output()
        .map_err(|error| format!("waiting for promtool: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

async fn scrape(service: &Service) -> String {
    reqwest::get(service.url("/metrics"))
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics body")
}

fn lag_lines<'a>(text: &'a str, group: &str) -> Vec<&'a str> {
    let label = format!("group=\"{group}\"");
    text.lines()
        .filter(|line| line.starts_with("d2c_consumer_lag{") && line.contains(&label))
        .collect()
}

/// Scrapes `service` until its lag series of `group` are there.
async fn wait_for_lag(service: &Service, group: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(service).await;
        if !lag_lines(&text, group).is_empty() {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: no d2c_consumer_lag of group {group} within 30 s; /metrics:\n{text}",
            service.name
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_serves_valid_metrics_with_lag_and_business_counters() {
    let db = TestDatabase::create().await.expect("database");
    let platform = Platform::new(SERVICES).await.expect("platform");
    let env = vec![fast_stats()];
    let projector_env = vec![fast_stats(), ("D2C_DATABASE_URL", db.url.clone())];
    let started = tokio::try_join!(
        platform.processor_ready("orders", "orders", &env),
        platform.processor_ready("inventory", "inventory", &env),
        platform.processor_ready("payments", "payments", &env),
        platform.processor_ready("catalog", "catalog", &env),
        platform.processor_ready("customers", "customers", &env),
        async {
            let projector = platform.projector("projector", &projector_env).await?;
            projector.wait_ready(Duration::from_secs(60)).await?;
            Ok(projector)
        },
        platform.gateway_ready_with("gateway", 0, 20_000, &projector_env),
    );
    let (orders, inventory, payments, catalog, customers, projector, gateway) = match started {
        Ok(services) => services,
        Err(error) => {
            platform.print_logs();
            panic!("services did not start: {error:#}");
        }
    };

    // One confirmed checkout and one declined card.
    let client = Api::new(
        d2c_integration::customer::client("metrics-shopper"),
        gateway.url(""),
    );
    Api::new(d2c_integration::customer::admin_client(), gateway.url(""))
        .stock_sku("METRIC-1", 10)
        .await
        .expect("stock set");
    let mut settled = Vec::new();
    for (key, method, outcome) in [
        ("metrics-1", "pm_card_visa", "confirmed"),
        (
            "metrics-2",
            "pm_card_chargeDeclinedInsufficientFunds",
            "rejected",
        ),
    ] {
        let body = order_body(&[("METRIC-1", 2)], method);
        let (status, answer) = client
            .place_order(key, &body)
            .await
            .expect("gateway answers");
        let order_id = answer["order_id"]
            .as_str()
            .or_else(|| answer["error"]["order_id"].as_str())
            .unwrap_or_else(|| panic!("{status}: no order id in {answer}"))
            .to_owned();
        let order = client
            .wait_for_status(&order_id, &[outcome], Duration::from_secs(60))
            .await
            .expect("the order settles");
        settled.push(order);
    }

    // Each hop records its queue time (record timestamp → handling), the
    // per-hop panel's source.
    let queued = orders
        .metric("d2c_message_queue_seconds_count")
        .await
        .expect("orders metrics");
    assert!(
        queued >= 2.0,
        "two orders placed, {queued} queue times recorded"
    );

    // Lag of every consumer group, on the process that consumes for it.
    let prefix = &platform.prefix;
    let groups = [
        (&orders, format!("{prefix}orders")),
        (&inventory, format!("{prefix}inventory")),
        (&payments, format!("{prefix}payments")),
        (&payments, format!("{prefix}payments-provider")),
        (&catalog, format!("{prefix}catalog")),
        (&customers, format!("{prefix}customers")),
        (&projector, format!("{prefix}projector")),
        (&gateway, "gateway-replies".to_owned()),
        (&gateway, "gateway-catalog".to_owned()),
    ];
    for (service, group) in &groups {
        let text = wait_for_lag(service, group).await;
        for line in lag_lines(&text, group) {
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|value| value.parse().ok())
                .unwrap_or(-1.0);
            assert!(value >= 0.0, "{}: {line}", service.name);
        }
    }

    // Idle again, orders (exactly_once, offsets committed inside its
    // transactions) reports no lag: librdkafka's committed offset stays
    // where each partition was assigned, so it must not be the position.
    let group = format!("{prefix}orders");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(&orders).await;
        let behind: Vec<&str> = lag_lines(&text, &group)
            .into_iter()
            .filter(|line| !line.ends_with(" 0"))
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "orders still reports lag once idle: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The business counters count each checkout once.
    let confirmed = orders
        .metric_where("d2c_saga_outcomes_total", "outcome=\"confirmed\"")
        .await
        .expect("orders metrics");
    assert_eq!(confirmed, 1.0);
    let declined = orders
        .metric_where(
            "d2c_saga_outcomes_total",
            "outcome=\"rejected\",reason=\"insufficient_funds\"",
        )
        .await
        .expect("orders metrics");
    assert_eq!(declined, 1.0);
    assert_eq!(
        orders
            .metric("d2c_orders_confirmed_total")
            .await
            .expect("orders metrics"),
        1.0
    );
    assert_eq!(
        orders
            .metric_where("d2c_revenue_minor_total", "currency=\"EUR\"")
            .await
            .expect("orders metrics"),
        settled[0]["total_minor"].as_f64().expect("total") // 2 × 10.00
    );
    assert_eq!(
        gateway
            .metric("d2c_gateway_reply_partition_assigned")
            .await
            .expect("gateway metrics"),
        1.0
    );

    // promtool, and ops/metrics.txt.
    let listed = listed_metrics();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    let services = [
        &orders, &inventory, &payments, &catalog, &customers, &projector, &gateway,
    ];
    for service in services {
        let text = scrape(service).await;
        if let Err(complaint) = promtool_check(&text) {
            problems.push(format!(
                "{}: promtool check metrics: {complaint}",
                service.name
            ));
        }
        for (name, family) in families(&text) {
            let Some((kind, labels)) = listed.get(&name) else {
                continue;
            };
            seen.insert(name.clone());
            if &family.kind != kind || (family.samples > 0 && &family.labels != labels) {
                problems.push(format!(
                    "{}: {name} is a {} with labels {:?}; ops/metrics.txt lists a {kind} with {labels:?}",
                    service.name, family.kind, family.labels
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!(
        "metrics listed in ops/metrics.txt that these processes export: {}",
        seen.len()
    );

    // The excerpt the closing note quotes.
    for (service, group) in [
        (&orders, format!("{prefix}orders")),
        (&projector, format!("{prefix}projector")),
        (&gateway, "gateway-replies".to_owned()),
    ] {
        let text = scrape(service).await;
        println!("--- {} /metrics (excerpt) ---", service.name);
        for line in text.lines().filter(|line| {
            line.starts_with("# HELP d2c_consumer_lag")
                || line.starts_with("# TYPE d2c_consumer_lag")
        }) {
            println!("{line}");
        }
        for line in lag_lines(&text, &group) {
            println!("{line}");
        }
        for line in text.lines().filter(|line| {
            line.starts_with("d2c_saga_outcomes_total")
                || line.starts_with("d2c_orders_confirmed_total")
                || line.starts_with("d2c_revenue_minor_total")
                || line.starts_with("d2c_gateway_reply_partition_assigned")
        }) {
            println!("{line}");
        }
    }
}
