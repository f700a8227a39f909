//! A fake Stripe-style payment provider on loopback, for tests of the HTTP
//! provider and of the payments processor with `D2C_PAYMENT_PROVIDER=http`.
//!
//! It speaks the subset `d2c_payments::HttpProvider` uses: form-encoded
//! `POST /v1/payment_intents` (`amount`, `currency`, `payment_method`,
//! `confirm`, `capture_method`, `metadata[order_id]`), `POST
//! /v1/payment_intents/{id}/capture` (`amount_to_capture`), `POST
//! /v1/payment_intents/{id}/cancel` and `POST /v1/refunds`
//! (`payment_intent`, `amount`), with Stripe's intent states
//! (`requires_capture` → `succeeded` or `canceled`; refunds only of captured
//! money, never more than is left), `Authorization: Bearer <key>`, and
//! `Idempotency-Key`
//! handled like Stripe: the first answer under a key is stored and replayed
//! for every later request with that key (no second charge); the same key
//! with different parameters is a 400 `idempotency_error`.
//!
//! Payment methods: `pm_card_chargeDeclined` is declined (402 `card_error`,
//! `card_declined`/`generic_decline`), `pm_card_chargeDeclinedInsufficientFunds`
//! likewise with `insufficient_funds`; any other `pm_card_…` token succeeds;
//! anything else is a 400 `resource_missing`.
//!
//! Faults: [`FakeProvider::fail_next`] answers the next requests with 500
//! before doing anything; [`FakeProvider::stall_next`] makes them wait (longer
//! than the client's timeout, typically) and then answer 500, again without
//! doing anything, the way a request lost in a provider outage behaves.
//! [`FakeProvider::stall_route`] does that to every request of one route
//! until further notice: a provider that never answers a capture or refund.
//!
//! Stripe's own mock (`stripe-mock`) checks request shapes against Stripe's
//! OpenAPI (see `tests/payment_provider.rs`), but it keeps no state: it
//! answers fixed fixtures, so it cannot decline, stall, fail, replay an
//! idempotency key or move an intent from `requires_capture` to `succeeded`.
//! This fake exists for those.

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The secret key [`FakeProvider::start`] expects (the payments default).
pub const DEFAULT_SECRET_KEY: &str = "sk_test_local";

pub const TOKEN_DECLINED: &str = "pm_card_chargeDeclined";
pub const TOKEN_INSUFFICIENT_FUNDS: &str = "pm_card_chargeDeclinedInsufficientFunds";

/// The payments processor's environment for talking to `provider` with
/// short timeouts and retries (tests).
pub fn payments_env(provider: &FakeProvider) -> Vec<(&'static str, String)> {
    vec![
        ("D2C_PAYMENT_PROVIDER", "http".into()),
        ("D2C_PAYMENT_PROVIDER_URL", provider.url()),
        ("D2C_PAYMENT_TIMEOUT_MS", "500".into()),
        ("D2C_PAYMENT_RETRY_MAX_MS", "500".into()),
    ]
}

/// A running fake provider; stops when dropped.
pub struct FakeProvider {
    url: String,
    state: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

struct Shared {
    secret_key: String,
    requests: AtomicUsize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    fail_next: usize,
    stall_next: usize,
    stall_for: Duration,
    /// Idempotency key → the first answer given under it.
    stored: HashMap<String, Stored>,
    intents: HashMap<String, Intent>,
    charges: usize,
    /// Successful charges per `metadata[order_id]`: an audit wants one each.
    charged_orders: HashMap<String, usize>,
    refunds: usize,
    captures: usize,
    /// Money captured and refunded per `metadata[order_id]`.
    captured_orders: HashMap<String, i64>,
    refunded_orders: HashMap<String, i64>,
    /// Routes that stall (then 500) on every request, and for how long.
    stalled_routes: HashMap<&'static str, Duration>,
    next_id: u64,
}

/// The routes a stall can target.
pub const CAPTURE_ROUTE: &str = "/v1/payment_intents/{id}/capture";
pub const CANCEL_ROUTE: &str = "/v1/payment_intents/{id}/cancel";
pub const REFUNDS_ROUTE: &str = "/v1/refunds";

#[derive(Clone)]
struct Stored {
    path: &'static str,
    params: Vec<(String, String)>,
    status: StatusCode,
    body: Value,
}

struct Intent {
    amount: i64,
    currency: String,
    order_id: String,
    /// `requires_capture`, `succeeded` or `canceled`.
    status: &'static str,
    captured: i64,
    refunded: i64,
}

impl FakeProvider {
    /// Starts on 127.0.0.1 (a free port), expecting [`DEFAULT_SECRET_KEY`].
    pub async fn start() -> anyhow::Result<FakeProvider> {
        Self::start_with_key(DEFAULT_SECRET_KEY).await
    }

    pub async fn start_with_key(secret_key: &str) -> anyhow::Result<FakeProvider> {
        let state = Arc::new(Shared {
            secret_key: secret_key.to_owned(),
            requests: AtomicUsize::new(0),
            inner: Mutex::new(Inner::default()),
        });
        let app = Router::new()
            .route("/v1/payment_intents", post(payment_intents))
            .route(CAPTURE_ROUTE, post(capture))
            .route(CANCEL_ROUTE, post(cancel))
            .route(REFUNDS_ROUTE, post(refunds))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the fake provider on loopback")?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("fake provider stopped: {error}");
            }
        });
        Ok(FakeProvider {
            url: format!("http://{address}"),
            state,
            server,
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn secret_key(&self) -> &str {
        &self.state.secret_key
    }

    /// Distinct successful charges (a replay under an idempotency key is not
    /// a new charge).
    pub fn charges(&self) -> usize {
        self.inner().charges
    }

    /// Successful charges per order id (from the intents' metadata).
    pub fn charges_by_order(&self) -> HashMap<String, usize> {
        self.inner().charged_orders.clone()
    }

    /// Successful charges per order id whose hold was not cancelled (voided):
    /// money held or taken. Checkout authorizes while it reserves stock, so
    /// an order refused for stock is charged and then voided.
    pub fn held_by_order(&self) -> HashMap<String, usize> {
        let mut held = HashMap::new();
        for intent in self.inner().intents.values() {
            if intent.status != "canceled" {
                *held.entry(intent.order_id.clone()).or_default() += 1;
            }
        }
        held
    }

    /// Distinct successful refunds.
    pub fn refunds(&self) -> usize {
        self.inner().refunds
    }

    /// Distinct successful captures.
    pub fn captures(&self) -> usize {
        self.inner().captures
    }

    /// Money captured per order id.
    pub fn captured_by_order(&self) -> HashMap<String, i64> {
        self.inner().captured_orders.clone()
    }

    /// Money refunded per order id.
    pub fn refunded_by_order(&self) -> HashMap<String, i64> {
        self.inner().refunded_orders.clone()
    }

    /// Every request to `route` (e.g. [`CAPTURE_ROUTE`]) waits `delay`, then
    /// gets a 500, until [`Self::answer_route`].
    pub fn stall_route(&self, route: &'static str, delay: Duration) {
        self.inner().stalled_routes.insert(route, delay);
    }

    /// `route` answers normally again.
    pub fn answer_route(&self, route: &'static str) {
        self.inner().stalled_routes.remove(route);
    }

    /// Every request received, faults and replays included.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The next `n` requests get a 500 and change nothing.
    pub fn fail_next(&self, n: usize) {
        self.inner().fail_next = n;
    }

    /// The next `n` requests wait `delay`, then get a 500 and change nothing.
    pub fn stall_next(&self, n: usize, delay: Duration) {
        let mut inner = self.inner();
        inner.stall_next = n;
        inner.stall_for = delay;
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.state.inner()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Shared {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn payment_intents(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&state, "/v1/payment_intents", &headers, &body, charge).await
}

async fn refunds(State(state): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    serve(&state, REFUNDS_ROUTE, &headers, &body, refund).await
}

async fn capture(
    State(state): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = with_intent_id(&body, &id);
    serve(&state, CAPTURE_ROUTE, &headers, &body, capture_intent).await
}

async fn cancel(
    State(state): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = with_intent_id(&body, &id);
    serve(&state, CANCEL_ROUTE, &headers, &body, cancel_intent).await
}

/// The intent id from the path, as a form parameter of its own.
fn with_intent_id(body: &[u8], id: &str) -> Vec<u8> {
    let mut form = format!("intent={id}").into_bytes();
    if !body.is_empty() {
        form.push(b'&');
        form.extend_from_slice(body);
    }
    form
}

/// What a route does once faults, authentication and idempotency are dealt
/// with: form parameters in, status and JSON body out.
type Operation = fn(&mut Inner, &[(String, String)]) -> (StatusCode, Value);

enum Fault {
    Fail,
    Stall(Duration),
}

async fn serve(
    state: &Shared,
    path: &'static str,
    headers: &HeaderMap,
    body: &[u8],
    operation: Operation,
) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let fault = {
        let mut inner = state.inner();
        if let Some(delay) = inner.stalled_routes.get(path) {
            Some(Fault::Stall(*delay))
        } else if inner.fail_next > 0 {
            inner.fail_next -= 1;
            Some(Fault::Fail)
        } else if inner.stall_next > 0 {
            inner.stall_next -= 1;
            Some(Fault::Stall(inner.stall_for))
        } else {
            None
        }
    };
    match fault {
        Some(Fault::Fail) => return server_error(),
        Some(Fault::Stall(delay)) => {
            tokio::time::sleep(delay).await;
            return server_error();
        }
        None => {}
    }
    let authorized = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|key| key == state.secret_key);
    if !authorized {
        return reply(error(
            StatusCode::UNAUTHORIZED,
            json!({"type": "invalid_request_error",
                   "message": "Invalid API Key provided."}),
        ));
    }
    let params = parse_form(body);
    let key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut inner = state.inner();
    if let Some(key) = &key {
        if let Some(stored) = inner.stored.get(key) {
            if stored.path != path || stored.params != params {
                return reply(error(
                    StatusCode::BAD_REQUEST,
                    json!({"type": "idempotency_error",
                           "message": "Keys for idempotent requests can only be used with the same parameters they were first used with."}),
                ));
            }
            let mut response = (stored.status, Json(stored.body.clone())).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return response;
        }
    }
    let (status, body) = operation(&mut inner, &params);
    if let Some(key) = key {
        inner.stored.insert(
            key,
            Stored {
                path,
                params,
                status,
                body: body.clone(),
            },
        );
    }
    reply((status, body))
}

fn reply((status, body): (StatusCode, Value)) -> Response {
    (status, Json(body)).into_response()
}

fn charge(inner: &mut Inner, params: &[(String, String)]) -> (StatusCode, Value) {
    let Some(amount) = param(params, "amount") else {
        return error(StatusCode::BAD_REQUEST, missing("amount"));
    };
    let Ok(amount) = amount.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"type": "invalid_request_error", "code": "parameter_invalid_integer",
                   "param": "amount", "message": "Invalid integer"}),
        );
    };
    let Some(currency) = param(params, "currency") else {
        return error(StatusCode::BAD_REQUEST, missing("currency"));
    };
    let Some(payment_method) = param(params, "payment_method") else {
        return error(StatusCode::BAD_REQUEST, missing("payment_method"));
    };
    let metadata = json!({"order_id": param(params, "metadata[order_id]").unwrap_or_default()});
    inner.next_id += 1;
    let id = format!("pi_fake_{}", inner.next_id);
    let decline = match payment_method {
        TOKEN_DECLINED => Some("generic_decline"),
        TOKEN_INSUFFICIENT_FUNDS => Some("insufficient_funds"),
        token if token.starts_with("pm_card_") => None,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                json!({"type": "invalid_request_error", "code": "resource_missing",
                       "param": "payment_method",
                       "message": format!("No such PaymentMethod: '{other}'")}),
            )
        }
    };
    if let Some(decline_code) = decline {
        return error(
            StatusCode::PAYMENT_REQUIRED,
            json!({"type": "card_error", "code": "card_declined", "decline_code": decline_code,
                   "message": "Your card was declined.",
                   "payment_intent": {"id": id, "object": "payment_intent",
                                      "status": "requires_payment_method",
                                      "metadata": metadata}}),
        );
    }
    inner.charges += 1;
    let order_id = param(params, "metadata[order_id]")
        .unwrap_or_default()
        .to_owned();
    *inner.charged_orders.entry(order_id.clone()).or_default() += 1;
    let manual = param(params, "capture_method") == Some("manual");
    let status = if manual {
        "requires_capture"
    } else {
        "succeeded"
    };
    if !manual {
        *inner.captured_orders.entry(order_id.clone()).or_default() += amount;
    }
    inner.intents.insert(
        id.clone(),
        Intent {
            amount,
            currency: currency.to_owned(),
            order_id,
            status,
            captured: if manual { 0 } else { amount },
            refunded: 0,
        },
    );
    (
        StatusCode::OK,
        json!({"id": id, "object": "payment_intent", "amount": amount, "currency": currency,
               "status": status, "metadata": metadata}),
    )
}

fn capture_intent(inner: &mut Inner, params: &[(String, String)]) -> (StatusCode, Value) {
    let id = param(params, "intent").unwrap_or_default().to_owned();
    let Some(intent) = inner.intents.get_mut(&id) else {
        return no_such_intent(&id);
    };
    if intent.status != "requires_capture" {
        return unexpected_state(&id, intent.status);
    }
    let amount = param(params, "amount_to_capture")
        .and_then(|amount| amount.parse::<i64>().ok())
        .unwrap_or(intent.amount);
    if amount <= 0 || amount > intent.amount {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"type": "invalid_request_error", "code": "amount_too_large",
                   "param": "amount_to_capture", "message": "Amount to capture is too large."}),
        );
    }
    intent.status = "succeeded";
    intent.captured = amount;
    let (order_id, currency) = (intent.order_id.clone(), intent.currency.clone());
    inner.captures += 1;
    *inner.captured_orders.entry(order_id).or_default() += amount;
    (
        StatusCode::OK,
        json!({"id": id, "object": "payment_intent", "amount_received": amount,
               "currency": currency, "status": "succeeded"}),
    )
}

fn cancel_intent(inner: &mut Inner, params: &[(String, String)]) -> (StatusCode, Value) {
    let id = param(params, "intent").unwrap_or_default().to_owned();
    let Some(intent) = inner.intents.get_mut(&id) else {
        return no_such_intent(&id);
    };
    if intent.status != "requires_capture" {
        return unexpected_state(&id, intent.status);
    }
    intent.status = "canceled";
    (
        StatusCode::OK,
        json!({"id": id, "object": "payment_intent", "status": "canceled"}),
    )
}

fn no_such_intent(id: &str) -> (StatusCode, Value) {
    error(
        StatusCode::NOT_FOUND,
        json!({"type": "invalid_request_error", "code": "resource_missing",
               "message": format!("No such payment_intent: '{id}'")}),
    )
}

fn unexpected_state(id: &str, status: &str) -> (StatusCode, Value) {
    error(
        StatusCode::BAD_REQUEST,
        json!({"type": "invalid_request_error", "code": "payment_intent_unexpected_state",
               "message": format!("PaymentIntent {id} is {status}.")}),
    )
}

fn refund(inner: &mut Inner, params: &[(String, String)]) -> (StatusCode, Value) {
    let Some(intent_id) = param(params, "payment_intent") else {
        return error(StatusCode::BAD_REQUEST, missing("payment_intent"));
    };
    let Some(intent) = inner.intents.get_mut(intent_id) else {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"type": "invalid_request_error", "code": "resource_missing",
                   "param": "payment_intent",
                   "message": format!("No such payment_intent: '{intent_id}'")}),
        );
    };
    let left = intent.captured - intent.refunded;
    if left <= 0 {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"type": "invalid_request_error", "code": "charge_already_refunded",
                   "message": "This charge has already been refunded."}),
        );
    }
    let amount = param(params, "amount")
        .and_then(|amount| amount.parse::<i64>().ok())
        .unwrap_or(left);
    if amount <= 0 || amount > left {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"type": "invalid_request_error", "code": "amount_too_large", "param": "amount",
                   "message": format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({left})")}),
        );
    }
    intent.refunded += amount;
    let (order_id, currency) = (intent.order_id.clone(), intent.currency.clone());
    *inner.refunded_orders.entry(order_id).or_default() += amount;
    inner.refunds += 1;
    inner.next_id += 1;
    (
        StatusCode::OK,
        json!({"id": format!("re_fake_{}", inner.next_id), "object": "refund",
               "amount": amount, "currency": currency, "payment_intent": intent_id,
               "status": "succeeded"}),
    )
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn missing(name: &str) -> Value {
    json!({"type": "invalid_request_error", "code": "parameter_missing", "param": name,
           "message": format!("Missing required param: {name}.")})
}

fn error(status: StatusCode, error: Value) -> (StatusCode, Value) {
    (status, json!({ "error": error }))
}

fn server_error() -> Response {
    reply(error(
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"type": "api_error", "message": "Something went wrong on the fake provider's end."}),
    ))
}

/// `application/x-www-form-urlencoded` pairs, decoded, in order.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|byte| *byte == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|byte| *byte == b'=') {
            Some(at) => (percent_decode(&pair[..at]), percent_decode(&pair[at + 1..])),
            None => (percent_decode(pair), String::new()),
        })
        .collect()
}

fn percent_decode(bytes: &[u8]) -> String {
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let escaped = (byte == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (byte, escaped) {
            (_, Some(value)) => {
                decoded.push(value);
                index += 3;
            }
            (b'+', None) => {
                decoded.push(b' ');
                index += 1;
            }
            (other, None) => {
                decoded.push(other);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod payments_fake_provider_tests {
    use super::*;

    #[test]
    fn forms_are_decoded() {
        assert_eq!(
            parse_form(b"amount=100&metadata%5Border_id%5D=o+1%2F2&confirm=true&flag"),
            vec![
                ("amount".to_owned(), "100".to_owned()),
                ("metadata[order_id]".to_owned(), "o 1/2".to_owned()),
                ("confirm".to_owned(), "true".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
        assert_eq!(percent_decode(b"100%"), "100%");
    }

    #[tokio::test]
    async fn fake_provider_charges_once_per_idempotency_key() {
        let fake = FakeProvider::start().await.expect("fake provider");
        let client = reqwest::Client::new();
        let charge = |key: &'static str, token: &'static str| {
            client
                .post(format!("{}/v1/payment_intents", fake.url()))
                .bearer_auth(DEFAULT_SECRET_KEY)
                .header("Idempotency-Key", key)
                .form(&[
                    ("amount", "1250"),
                    ("currency", "eur"),
                    ("payment_method", token),
                    ("confirm", "true"),
                    ("metadata[order_id]", "o-1"),
                ])
                .send()
        };
        let first = charge("k-1", "pm_card_visa").await.expect("answer");
        assert_eq!(first.status(), StatusCode::OK);
        let first: Value = first.json().await.expect("json");
        assert_eq!(first["status"], "succeeded");
        assert_eq!(first["metadata"]["order_id"], "o-1");
        let replay = charge("k-1", "pm_card_visa").await.expect("answer");
        assert_eq!(
            replay
                .headers()
                .get("idempotent-replayed")
                .map(HeaderValue::as_bytes),
            Some(b"true".as_slice())
        );
        let replay: Value = replay.json().await.expect("json");
        assert_eq!(replay["id"], first["id"]);
        assert_eq!(fake.charges(), 1);

        let reused = charge("k-1", "pm_card_mastercard").await.expect("answer");
        assert_eq!(reused.status(), StatusCode::BAD_REQUEST);

        let declined = charge("k-2", TOKEN_DECLINED).await.expect("answer");
        assert_eq!(declined.status(), StatusCode::PAYMENT_REQUIRED);
        let declined: Value = declined.json().await.expect("json");
        assert_eq!(declined["error"]["type"], "card_error");

        fake.fail_next(1);
        let failed = charge("k-3", "pm_card_visa").await.expect("answer");
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(fake.charges(), 1, "a failed request charges nothing");
        let retried = charge("k-3", "pm_card_visa").await.expect("answer");
        assert_eq!(retried.status(), StatusCode::OK);
        assert_eq!(fake.charges(), 2);

        let unauthorized = client
            .post(format!("{}/v1/refunds", fake.url()))
            .bearer_auth("sk_test_wrong")
            .form(&[("payment_intent", "pi_x")])
            .send()
            .await
            .expect("answer");
        assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(fake.requests(), 7);
    }
}
