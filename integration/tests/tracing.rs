//! One order is one trace: every service of a shop exports its spans over
//! OTLP/HTTP to a receiver in this test, and the spans of one order form one
//! tree from the gateway's HTTP request through orders, inventory and
//! payments back to the gateway's reply.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use d2c_integration::app::{order_body, TestApp, TestAppOptions};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message as _;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SERVICES: [&str; 4] = ["d2c-gateway", "d2c-orders", "d2c-inventory", "d2c-payments"];

#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    start_ns: u64,
    end_ns: u64,
    attributes: BTreeMap<String, String>,
}

type Received = Arc<Mutex<Vec<ReceivedSpan>>>;

fn text(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|attribute| {
            let value = match attribute.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(value) => value.clone(),
                any_value::Value::IntValue(value) => value.to_string(),
                any_value::Value::BoolValue(value) => value.to_string(),
                any_value::Value::DoubleValue(value) => value.to_string(),
                _ => return None,
            };
            Some((attribute.key.clone(), value))
        })
        .collect()
}

/// POST /v1/traces, protobuf-encoded, as an OpenTelemetry collector takes it.
async fn receive(State(received): State<Received>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|resource| text(&resource.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                spans.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then(|| hex::encode(&span.parent_span_id)),
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                    attributes: text(&span.attributes),
                });
            }
        }
    }
    received.lock().expect("receiver lock").extend(spans);
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// A local OTLP/HTTP receiver: its base URL and what it received.
async fn otlp_receiver() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let addr = listener.local_addr().expect("receiver address");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("receiver serves");
    });
    (format!("http://{addr}"), received)
}

fn spans_of(received: &Received, trace_id: &str) -> Vec<ReceivedSpan> {
    received
        .lock()
        .expect("receiver lock")
        .iter()
        .filter(|span| span.trace_id == trace_id)
        .cloned()
        .collect()
}

/// What is still missing for `trace` to be the whole order, if anything.
fn missing(trace: &[ReceivedSpan]) -> Option<String> {
    let services: BTreeSet<&str> = trace.iter().map(|span| span.service.as_str()).collect();
    let absent: Vec<&str> = SERVICES
        .iter()
        .copied()
        .filter(|service| !services.contains(service))
        .collect();
    if !absent.is_empty() {
        return Some(format!("no spans from {absent:?}"));
    }
    if !trace
        .iter()
        .any(|span| span.service == "d2c-gateway" && span.name == "reply")
    {
        return Some("no reply span from the gateway".into());
    }
    let ids: BTreeSet<&str> = trace.iter().map(|span| span.span_id.as_str()).collect();
    let orphans: Vec<String> = trace
        .iter()
        .filter(|span| {
            span.parent_span_id
                .as_deref()
                .is_some_and(|parent| !ids.contains(parent))
        })
        .map(|span| format!("{}:{}", span.service, span.name))
        .collect();
    if !orphans.is_empty() {
        return Some(format!("parents not (yet) received for {orphans:?}"));
    }
    let roots = trace
        .iter()
        .filter(|span| span.parent_span_id.is_none())
        .count();
    (roots != 1).then(|| format!("{roots} roots"))
}

/// The tree as text: start offset and duration per span, children indented
/// under their parent, siblings by start time.
fn render(trace: &[ReceivedSpan]) -> String {
    let start = trace.iter().map(|span| span.start_ns).min().unwrap_or(0);
    let mut children: BTreeMap<Option<&str>, Vec<&ReceivedSpan>> = BTreeMap::new();
    for span in trace {
        children
            .entry(span.parent_span_id.as_deref())
            .or_default()
            .push(span);
    }
    for siblings in children.values_mut() {
        siblings.sort_by_key(|span| span.start_ns);
    }
    let mut out = String::from("   start   duration  service        span\n");
    let mut stack: Vec<(&ReceivedSpan, usize)> = children
        .get(&None)
        .map(|roots| roots.iter().rev().map(|span| (*span, 0)).collect())
        .unwrap_or_default();
    while let Some((span, depth)) = stack.pop() {
        let what = span
            .attributes
            .get("d2c.message_type")
            .or_else(|| span.attributes.get("http.route"))
            .map(String::as_str)
            .unwrap_or("");
        out.push_str(&format!(
            "{:>7.1}ms {:>8.2}ms  {:<13}  {}{} {}\n",
            (span.start_ns.saturating_sub(start)) as f64 / 1e6,
            (span.end_ns.saturating_sub(span.start_ns)) as f64 / 1e6,
            span.service,
            "  ".repeat(depth),
            span.name,
            what,
        ));
        if let Some(kids) = children.get(&Some(span.span_id.as_str())) {
            stack.extend(kids.iter().rev().map(|kid| (*kid, depth + 1)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_every_service() {
    let (endpoint, received) = otlp_receiver().await;
    let shop = TestApp::start(TestAppOptions {
        reply_partition: 6,
        reply_timeout_ms: 10_000,
        env: vec![
            ("D2C_OTLP_ENDPOINT", endpoint),
            // Short, so the test does not wait out the default delay.
            ("D2C_OTLP_BATCH_MS", "100".into()),
        ],
        ..TestAppOptions::default()
    })
    .await
    .expect("shop");
    shop.stock_sku("TRACE-1", 5).await.expect("stock set");

    // The raw request: the test reads the answer's headers.
    let response = shop
        .shopper()
        .request(reqwest::Method::POST, "/orders")
        .header("Idempotency-Key", "trace-1")
        .json(&order_body(&[("TRACE-1", 2)], "pm_card_visa"))
        .send()
        .await
        .expect("gateway answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, 201, "{headers:?} {body}");
    let trace_id = headers
        .get("x-trace-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("the response names its trace: {headers:?} {body}"));
    assert_eq!(trace_id.len(), 32, "{trace_id}");

    // Spans arrive in batches from four processes; a straggler (inventory's
    // commit of the stock, say) may come after the rest.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut settled_since = None;
    let trace = loop {
        let trace = spans_of(&received, &trace_id);
        match missing(&trace) {
            None => {
                let since = *settled_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= Duration::from_millis(600) {
                    break trace;
                }
            }
            Some(what) => {
                settled_since = None;
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "trace {trace_id} incomplete after 30 s: {what}\n{}",
                    render(&trace)
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    println!(
        "trace {trace_id} of one order ({} spans):\n{}",
        trace.len(),
        render(&trace)
    );
    let root = trace
        .iter()
        .find(|span| span.parent_span_id.is_none())
        .expect("a root");
    assert_eq!(
        (root.service.as_str(), root.name.as_str()),
        ("d2c-gateway", "http"),
        "the HTTP request is the root"
    );
    assert_eq!(
        root.attributes.get("http.route").map(String::as_str),
        Some("/orders")
    );
    for service in ["d2c-orders", "d2c-inventory", "d2c-payments"] {
        assert!(
            trace
                .iter()
                .any(|span| span.service == service && span.name == "handle"),
            "{service} handled a message of the order"
        );
    }
    assert!(
        trace
            .iter()
            .any(|span| span.service == "d2c-payments" && span.name == "provider"),
        "the provider call is in the trace"
    );
    // The reply closes the trace in the gateway that sent the command.
    let reply = trace
        .iter()
        .find(|span| span.name == "reply")
        .expect("reply span");
    let reply_parent = trace
        .iter()
        .find(|span| Some(span.span_id.as_str()) == reply.parent_span_id.as_deref())
        .expect("reply parent");
    assert_eq!(reply_parent.service, "d2c-orders");
}
