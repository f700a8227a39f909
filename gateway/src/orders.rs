//! `/orders`: place an order (deferred result) and read one.

use crate::bus::Outcome;
use crate::error::ApiError;
use crate::metrics::GATEWAY_METRICS;
use crate::validate::{parse_json, IdempotencyKey, PlaceOrderRequest, ValidOrder};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::orders::v1::{order_reply, CancelOrder, GetOrder, Order, OrderReply, OrderStatus};
use d2c_topology::topic;
use prost::Message;
use serde::Serialize;

#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct OrderLineJson {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct OrderJson {
    pub order_id: String,
    pub customer_id: String,
    pub status: String,
    pub currency: String,
    pub total_minor: i64,
    pub lines: Vec<OrderLineJson>,
    pub placed_at_ms: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub payment_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<RejectionJson>,
}

/// Why an order was rejected, as stored with it.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RejectionJson {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skus: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct PendingJson {
    pub order_id: String,
    pub status: String,
}

impl From<Order> for OrderJson {
    fn from(order: Order) -> Self {
        let status = status_label(order.status);
        let rejection = order.rejection.map(|rejection| RejectionJson {
            code: match Code::try_from(rejection.code) {
                Ok(Code::OutOfStock) => "out_of_stock",
                Ok(Code::PaymentDeclined) => "payment_declined",
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
        }
    }
}

fn status_label(status: i32) -> &'static str {
    match OrderStatus::try_from(status) {
        Ok(OrderStatus::Placed) => "placed",
        Ok(OrderStatus::AwaitingPayment) => "awaiting_payment",
        Ok(OrderStatus::Confirmed) => "confirmed",
        Ok(OrderStatus::Rejected) => "rejected",
        Ok(OrderStatus::Cancelling) => "cancelling",
        Ok(OrderStatus::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

fn location(order_id: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("/orders/{order_id}"))
        .unwrap_or_else(|_| HeaderValue::from_static("/orders"))
}

/// `POST /orders`. Requires `Idempotency-Key`; the order id is derived from
/// (customer, key), so every retry of one checkout names the same order.
pub async fn place_order(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let body = body.map_err(|rejection| body_error(rejection, app.config.max_body_bytes))?;
    let request: PlaceOrderRequest = parse_json(&body)?;
    let order = ValidOrder::parse(request)?;
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
    match outcome {
        Outcome::Replied(reply) => checkout_response(&reply.payload),
        Outcome::TimedOut | Outcome::NotWaited => {
            if matches!(outcome, Outcome::TimedOut) {
                GATEWAY_METRICS
                    .reply_timeouts
                    .with_label_values(&["/orders"])
                    .inc();
            }
            Ok(pending(&order_id))
        }
    }
}

/// 202 + Location: the order exists (or will), its outcome is not known yet.
fn pending(order_id: &str) -> Response {
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
        Some(order_reply::Result::Rejected(rejection)) => return Err(rejection_error(rejection)),
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
            return Err(rejection_error(rejection).with_order(order_id));
        }
        _ => StatusCode::OK,
    };
    Ok(order_json_response(order, status, replayed))
}

/// Order ids are UUIDs; anything else names no order, and is answered
/// without a round trip.
fn ensure_order_id(order_id: &str) -> Result<(), ApiError> {
    match uuid::Uuid::parse_str(order_id) {
        Ok(_) => Ok(()),
        Err(_) => Err(ApiError::not_found(format!(
            "order {order_id} does not exist"
        ))),
    }
}

/// `POST /orders/{id}/cancel`: a confirmed order is cancelled, its stock
/// returned and its charge refunded. 200 once refunded, 202 while refunding,
/// 409 if the order cannot be cancelled (still settling, or rejected).
pub async fn cancel_order(
    State(app): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    ensure_order_id(&order_id)?;
    let command = CancelOrder {
        order_id: order_id.clone(),
    };
    let outcome = app
        .bus
        .request(topic::ORDERS_MESSAGES, &order_id, &command, None)
        .await?;
    let Outcome::Replied(reply) = outcome else {
        return Ok(pending(&order_id));
    };
    let reply = decode_reply(&reply.payload)?;
    match reply.result {
        Some(order_reply::Result::Order(order)) => {
            if order.status == OrderStatus::Cancelled as i32 {
                Ok(order_json_response(order, StatusCode::OK, reply.replayed))
            } else {
                Ok(pending(&order_id))
            }
        }
        Some(order_reply::Result::Rejected(rejection)) => Err(rejection_error(rejection)),
        None => Err(ApiError::internal("empty order reply")),
    }
}

/// `GET /orders/{id}`, answered by the partition that owns the order.
pub async fn get_order(
    State(app): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    ensure_order_id(&order_id)?;
    let query = GetOrder {
        order_id: order_id.clone(),
    };
    match app
        .bus
        .request(topic::ORDERS_MESSAGES, &order_id, &query, None)
        .await?
    {
        Outcome::Replied(reply) => order_response(&reply.payload, StatusCode::OK),
        Outcome::TimedOut | Outcome::NotWaited => {
            GATEWAY_METRICS
                .reply_timeouts
                .with_label_values(&["/orders/{id}"])
                .inc();
            Err(ApiError::unavailable(
                "the order service did not answer in time; retry shortly",
            ))
        }
    }
}

fn decode_reply(payload: &[u8]) -> Result<OrderReply, ApiError> {
    OrderReply::decode(payload)
        .map_err(|error| ApiError::internal(format!("undecodable order reply: {error}")))
}

fn order_json_response(order: Order, status: StatusCode, replayed: bool) -> Response {
    let mut response = (status, Json(OrderJson::from(order))).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// `GET`: the order in whatever state it is.
fn order_response(payload: &[u8], success: StatusCode) -> Result<Response, ApiError> {
    let reply = decode_reply(payload)?;
    match reply.result {
        Some(order_reply::Result::Order(order)) => {
            Ok(order_json_response(order, success, reply.replayed))
        }
        Some(order_reply::Result::Rejected(rejection)) => Err(rejection_error(rejection)),
        None => Err(ApiError::internal("empty order reply")),
    }
}

fn rejection_error(rejection: Rejection) -> ApiError {
    match Code::try_from(rejection.code) {
        Ok(Code::NotFound) => ApiError::not_found(rejection.message),
        Ok(Code::Conflict) => ApiError::conflict_key(rejection.message),
        Ok(Code::Invalid) => ApiError::invalid(rejection.field, rejection.message),
        Ok(Code::OutOfStock) => {
            ApiError::out_of_stock(rejection.message, rejection.field, rejection.skus)
        }
        Ok(Code::PaymentDeclined) => {
            ApiError::payment_declined(rejection.message, rejection.reason)
        }
        Ok(Code::IllegalTransition) => ApiError::illegal_transition(rejection.message),
        _ => ApiError::internal(format!("unexpected rejection: {}", rejection.message)),
    }
}

pub fn body_error(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(limit)
    } else {
        ApiError::bad_request(format!("request body could not be read: {rejection}"))
    }
}
