//! `/orders`: a logged-in customer places orders (deferred result), lists
//! them and reads or cancels one. Another customer's order answers 404, as
//! if it did not exist.

use crate::auth::CustomerId;
use crate::bus::RequestOutcome;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::GATEWAY_METRICS;
use crate::validate::{
    int_param, json_body, query_params, IdempotencyKey, PlaceOrderRequest, ValidOrder,
};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use d2c_proto::actor::Actor;
use d2c_proto::common::v1::rejection::Code;
use d2c_proto::orders::v1::{
    order_reply, CancelOrder, GetOrder, Order, OrderReply, OrderStatus, RefundStatus,
};
use d2c_topology::topic;
use prost::Message;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq, ToSchema)]
pub struct OrderLineJson {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq, ToSchema)]
pub struct OrderJson {
    pub order_id: String,
    pub customer_id: String,
    /// `placed`, `awaiting_payment`, `confirmed` (paid: the money is held),
    /// `rejected`, `fulfilling` (capture in flight), `fulfilled` (captured),
    /// `capture_failed`, `cancelling`, `cancelled` or `refund_failed`.
    pub status: String,
    pub currency: String,
    pub total_minor: i64,
    pub lines: Vec<OrderLineJson>,
    pub placed_at_ms: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub payment_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<RejectionJson>,
    /// Money taken at fulfilment (0 before).
    #[serde(default)]
    pub captured_minor: i64,
    /// Money given back by refunds that went through.
    #[serde(default)]
    pub refunded_minor: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<RefundJson>,
    /// Why the order ended as it did when nobody asked for it (a deadline,
    /// a capture or refund the provider refused).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// One refund of an order.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq, ToSchema)]
pub struct RefundJson {
    pub refund_id: String,
    pub amount_minor: i64,
    /// `pending`, `refunded` or `failed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Why an order was rejected, as stored with it.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq, ToSchema)]
pub struct RejectionJson {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skus: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The order exists (or will) but has not settled yet: poll `Location`.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct PendingJson {
    pub order_id: String,
    #[schema(example = "pending")]
    pub status: String,
}

/// A page of the customer's orders, newest first.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct OrderPageJson {
    pub items: Vec<OrderJson>,
    pub limit: i64,
    pub offset: i64,
}

impl From<Order> for OrderJson {
    fn from(order: Order) -> Self {
        let status = status_label(order.status);
        let rejection = order.rejection.map(|rejection| RejectionJson {
            code: match Code::try_from(rejection.code) {
                Ok(Code::OutOfStock) => "out_of_stock",
                Ok(Code::PaymentDeclined) => "payment_declined",
                Ok(Code::TimedOut) => "timed_out",
                _ => "rejected",
            }
            .to_owned(),
            message: rejection.message,
            skus: rejection.skus,
            reason: rejection.reason,
        });
        Self {
            order_id: order.order_id,
            customer_id: order.customer_id,
            status: status.to_owned(),
            currency: order.currency,
            total_minor: order.total_minor,
            lines: order
                .lines
                .into_iter()
                .map(|line| OrderLineJson {
                    sku: line.sku,
                    quantity: line.quantity,
                    unit_price_minor: line.unit_price_minor,
                })
                .collect(),
            placed_at_ms: order.placed_at_ms,
            payment_ref: order.payment_ref,
            rejection,
            captured_minor: order.captured_minor,
            refunded_minor: order.refunded_minor,
            refunds: order
                .refunds
                .into_iter()
                .map(|refund| RefundJson {
                    status: match RefundStatus::try_from(refund.status) {
                        Ok(RefundStatus::Pending) => "pending",
                        Ok(RefundStatus::Refunded) => "refunded",
                        Ok(RefundStatus::Failed) => "failed",
                        _ => "unknown",
                    }
                    .to_owned(),
                    refund_id: refund.refund_id,
                    amount_minor: refund.amount_minor,
                    message: refund.message,
                })
                .collect(),
            reason: order.reason,
        }
    }
}

/// The JSON name of an order status.
pub fn status_label(status: i32) -> &'static str {
    match OrderStatus::try_from(status) {
        Ok(OrderStatus::Placed) => "placed",
        Ok(OrderStatus::AwaitingPayment) => "awaiting_payment",
        Ok(OrderStatus::Confirmed) => "confirmed",
        Ok(OrderStatus::Rejected) => "rejected",
        Ok(OrderStatus::Cancelling) => "cancelling",
        Ok(OrderStatus::Cancelled) => "cancelled",
        Ok(OrderStatus::Fulfilling) => "fulfilling",
        Ok(OrderStatus::Fulfilled) => "fulfilled",
        Ok(OrderStatus::CaptureFailed) => "capture_failed",
        Ok(OrderStatus::RefundFailed) => "refund_failed",
        _ => "unknown",
    }
}

fn location(order_id: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("/orders/{order_id}"))
        .unwrap_or_else(|_| HeaderValue::from_static("/orders"))
}

/// `POST /orders`. Requires `Idempotency-Key`; the order id is derived from
/// (customer, key), so every retry of one checkout names the same order.
/// Lines are priced from the catalog; `unit_price_minor`, when sent, is the
/// price the storefront showed and is only compared.
#[utoipa::path(post, path = "/orders", tag = "orders",
    security(("bearer" = [])),
    request_body = PlaceOrderRequest,
    params(("Idempotency-Key" = String, Header, description = "Required: every retry of one checkout names the same order")),
    responses(
        (status = 201, description = "Confirmed: stock reserved and committed, payment authorized", body = OrderJson),
        (status = 202, description = "Still settling: poll the Location", body = PendingJson),
        (status = 400, description = "Not JSON, or no/bad Idempotency-Key", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 402, description = "Payment declined (`error.reason`)", body = ErrorBody),
        (status = 409, description = "Out of stock (`error.skus`), or a shown price is not the catalog's (`price_changed`: `error.field` names the line, `error.current_price_minor` its price)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "A field is invalid (`error.field`; a SKU the catalog does not sell names its line), or the key was used for another request", body = ErrorBody),
        (status = 429, description = "Too many checkouts by this customer (`rate_limited`): retry after `Retry-After` seconds", body = ErrorBody),
        (status = 503, description = "The platform could not take the request: at its admission limit or unable to reach Kafka (`unavailable`); nothing was sent, retry with the same Idempotency-Key after `Retry-After` seconds", body = ErrorBody),
    ))]
pub async fn place_order(
    State(app): State<AppState>,
    customer: CustomerId,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = IdempotencyKey::required(&headers, "for POST /orders")?;
    app.checkout_limit.check(&customer.0)?;
    let request: PlaceOrderRequest = json_body(body, app.config.max_body_bytes)?;
    let order = ValidOrder::parse(request, &customer)?;
    let command = order.into_command(&key);
    let order_id = command.order_id.clone();
    let outcome = app
        .bus
        .request(
            topic::ORDERS_MESSAGES,
            &order_id,
            &command,
            Some(key.as_str()),
        )
        .await?;
    checkout_outcome(&app, outcome, &order_id, &customer.0, "/orders")
}

/// The answer to a checkout (`POST /orders` or a cart's checkout), however
/// the wait ended. A `202`'s polls by `customer_id` are answered by this
/// gateway until its reply arrives (see [`crate::settling`]).
pub fn checkout_outcome(
    app: &AppState,
    outcome: RequestOutcome,
    order_id: &str,
    customer_id: &str,
    route: &str,
) -> Result<Response, ApiError> {
    let correlation_id = match outcome {
        RequestOutcome::Replied(reply) => return checkout_response(&reply.payload),
        RequestOutcome::TimedOut { correlation_id } => {
            GATEWAY_METRICS
                .reply_timeouts
                .with_label_values(&[route])
                .inc();
            correlation_id
        }
        RequestOutcome::NotWaited { correlation_id } => correlation_id,
    };
    app.bus
        .pending
        .settling
        .begin(&correlation_id, order_id, customer_id);
    Ok(pending(order_id))
}

/// 202 + Location: the order exists (or will), its outcome is not known yet.
pub(crate) fn pending(order_id: &str) -> Response {
    let body = PendingJson {
        order_id: order_id.to_owned(),
        status: "pending".into(),
    };
    (
        StatusCode::ACCEPTED,
        [("location", location(order_id))],
        Json(body),
    )
        .into_response()
}

/// The answer to a checkout: 201 confirmed, 202 still settling, 409 out of
/// stock, 402 declined.
fn checkout_response(payload: &[u8]) -> Result<Response, ApiError> {
    let reply = decode_reply(payload)?;
    let replayed = reply.replayed;
    let order = match reply.result {
        Some(order_reply::Result::Order(order)) => order,
        Some(order_reply::Result::Rejected(rejection)) => return Err(rejection.into()),
        None => return Err(ApiError::internal("empty order reply")),
    };
    let status = match OrderStatus::try_from(order.status) {
        Ok(OrderStatus::Confirmed) => StatusCode::CREATED,
        Ok(OrderStatus::Placed | OrderStatus::AwaitingPayment) => {
            let location = location(&order.order_id);
            let mut response = order_json_response(order, StatusCode::ACCEPTED, replayed);
            response.headers_mut().insert("location", location);
            return Ok(response);
        }
        Ok(OrderStatus::Rejected) => {
            let order_id = order.order_id.clone();
            let rejection = order.rejection.unwrap_or_default();
            return Err(ApiError::from(rejection).with_order(order_id));
        }
        _ => StatusCode::OK,
    };
    Ok(order_json_response(order, status, replayed))
}

/// Order ids are UUIDs; anything else names no order, and is answered
/// without a round trip.
pub(crate) fn ensure_order_id(order_id: &str) -> Result<(), ApiError> {
    match uuid::Uuid::parse_str(order_id) {
        Ok(_) => Ok(()),
        Err(_) => Err(ApiError::not_found(format!(
            "order {order_id} does not exist"
        ))),
    }
}

/// `POST /orders/{id}/cancel`: a confirmed order is cancelled, its stock
/// returned and its authorization voided (nothing was taken); a fulfilled
/// one gets what is left of its capture refunded. 200 once done, 202
/// meanwhile, 409 if the order cannot be cancelled (still settling,
/// rejected, a capture or refund in flight).
#[utoipa::path(post, path = "/orders/{order_id}/cancel", tag = "orders",
    security(("bearer" = [])),
    params(("order_id" = String, Path)),
    responses(
        (status = 200, description = "Cancelled: stock returned, the hold voided or the rest refunded; or `refund_failed` with `reason`", body = OrderJson),
        (status = 202, description = "The void or refund is running: poll the Location", body = PendingJson),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such order (or another customer's)", body = ErrorBody),
        (status = 409, description = "Only a confirmed or fulfilled order with no refund in flight can be cancelled", body = ErrorBody),
        (status = 503, description = "The platform could not take the request: at its admission limit or unable to reach Kafka (`unavailable`); nothing was sent, retry with the same Idempotency-Key after `Retry-After` seconds", body = ErrorBody),
    ))]
pub async fn cancel_order(
    State(app): State<AppState>,
    customer: CustomerId,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    ensure_order_id(&order_id)?;
    let command = CancelOrder {
        order_id: order_id.clone(),
        customer_id: customer.0,
    };
    let outcome = app
        .bus
        .request(topic::ORDERS_MESSAGES, &order_id, &command, None)
        .await?;
    settled_or_pending(outcome, &order_id, |status, _| {
        status == OrderStatus::Cancelling
    })
}

/// The step's answer: the order when it settled, 202 + Location while
/// `still_running` says so or the wait ended first.
pub(crate) fn settled_or_pending(
    outcome: RequestOutcome,
    order_id: &str,
    still_running: impl Fn(OrderStatus, &Order) -> bool,
) -> Result<Response, ApiError> {
    let RequestOutcome::Replied(reply) = outcome else {
        return Ok(pending(order_id));
    };
    let reply = decode_reply(&reply.payload)?;
    match reply.result {
        Some(order_reply::Result::Order(order)) => {
            let status = OrderStatus::try_from(order.status).unwrap_or_default();
            if still_running(status, &order) {
                Ok(pending(order_id))
            } else {
                Ok(order_json_response(order, StatusCode::OK, reply.replayed))
            }
        }
        Some(order_reply::Result::Rejected(rejection)) => Err(rejection.into()),
        None => Err(ApiError::internal("empty order reply")),
    }
}

/// `GET /orders/{id}`, answered by the partition that owns the order.
#[utoipa::path(get, path = "/orders/{order_id}", tag = "orders",
    security(("bearer" = [])),
    params(("order_id" = String, Path)),
    responses(
        (status = 200, description = "The order, in whatever state it is", body = OrderJson),
        (status = 202, description = "Its checkout was answered 202 by this gateway, which has not seen the outcome yet: poll again", body = PendingJson),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such order (or another customer's)", body = ErrorBody),
        (status = 503, description = "The orders service did not answer in time", body = ErrorBody),
    ))]
pub async fn get_order(
    State(app): State<AppState>,
    customer: CustomerId,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    read_order(
        &app,
        order_id,
        Actor::Customer(customer.0),
        Some("/orders/{order_id}"),
    )
    .await
}

/// `GetOrder`, answered by the partition that owns the order, as
/// `actor` may see it; an id that is not a UUID
/// is a 404, and a checkout of `customer_id` this gateway is still waiting
/// for a `202`, both without a round trip. A wait that ends without
/// an answer is a 503, counted under `timeout_route` when given.
pub(crate) async fn read_order(
    app: &AppState,
    order_id: String,
    actor: Actor,
    timeout_route: Option<&str>,
) -> Result<Response, ApiError> {
    ensure_order_id(&order_id)?;
    if app
        .bus
        .pending
        .settling
        .still_settling(&order_id, actor.customer_id())
    {
        GATEWAY_METRICS.polls_answered_settling.inc();
        return Ok(pending(&order_id));
    }
    let query = GetOrder {
        order_id: order_id.clone(),
        customer_id: actor.customer_id().to_owned(),
    };
    match app
        .bus
        .request(topic::ORDERS_MESSAGES, &order_id, &query, None)
        .await?
    {
        RequestOutcome::Replied(reply) => order_response(&reply.payload, StatusCode::OK),
        RequestOutcome::TimedOut { .. } | RequestOutcome::NotWaited { .. } => {
            if let Some(route) = timeout_route {
                GATEWAY_METRICS
                    .reply_timeouts
                    .with_label_values(&[route])
                    .inc();
            }
            Err(ApiError::unavailable(
                "the order service did not answer in time; retry shortly",
            ))
        }
    }
}

pub(crate) fn decode_reply(payload: &[u8]) -> Result<OrderReply, ApiError> {
    OrderReply::decode(payload)
        .map_err(|error| ApiError::internal(format!("undecodable order reply: {error}")))
}

pub(crate) fn order_json_response(order: Order, status: StatusCode, replayed: bool) -> Response {
    let mut response = (status, Json(OrderJson::from(order))).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// `GET`: the order in whatever state it is.
pub(crate) fn order_response(payload: &[u8], success: StatusCode) -> Result<Response, ApiError> {
    let reply = decode_reply(payload)?;
    match reply.result {
        Some(order_reply::Result::Order(order)) => {
            Ok(order_json_response(order, success, reply.replayed))
        }
        Some(order_reply::Result::Rejected(rejection)) => Err(rejection.into()),
        None => Err(ApiError::internal("empty order reply")),
    }
}

/// `GET /orders`: the customer's orders from the read side (it follows the
/// orders' events, so a just-placed order may take a moment to appear).
#[utoipa::path(get, path = "/orders", tag = "orders",
    security(("bearer" = [])),
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (default 20)"),
        ("offset" = Option<i64>, Query, minimum = 0, maximum = 10000, description = "Orders to skip, 0 to 10000"),
    ),
    responses(
        (status = 200, description = "The customer's orders, newest first", body = OrderPageJson),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
        (status = 503, description = "The read side is unavailable", body = ErrorBody),
    ))]
pub async fn list_orders(
    State(app): State<AppState>,
    customer: CustomerId,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = query_params(raw.as_deref(), &["limit", "offset"])?;
    let limit = int_param(&params, "limit", 1..=100, Some(20))?.unwrap_or(20);
    let offset = int_param(&params, "offset", 0..=10_000, Some(0))?.unwrap_or(0);
    let orders = d2c_readside::orders_of_customer(&app.reads, customer.as_str(), limit, offset)
        .await
        .map_err(crate::error::read_side)?;
    Ok(Json(OrderPageJson {
        items: orders.into_iter().map(OrderJson::from).collect(),
        limit,
        offset,
    })
    .into_response())
}
