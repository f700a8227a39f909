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
use d2c_proto::orders::v1::{order_reply, GetOrder, Order, OrderReply, OrderStatus};
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
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct PendingJson {
    pub order_id: String,
    pub status: String,
}

impl From<Order> for OrderJson {
    fn from(order: Order) -> Self {
        let status = match OrderStatus::try_from(order.status) {
            Ok(OrderStatus::Placed) => "placed",
            _ => "unknown",
        };
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
        }
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
        Outcome::Replied(reply) => order_response(&reply.payload, StatusCode::CREATED),
        Outcome::TimedOut | Outcome::NotWaited => {
            if matches!(outcome, Outcome::TimedOut) {
                GATEWAY_METRICS
                    .reply_timeouts
                    .with_label_values(&["/orders"])
                    .inc();
            }
            let body = PendingJson {
                order_id: order_id.clone(),
                status: "pending".into(),
            };
            Ok((
                StatusCode::ACCEPTED,
                [("location", location(&order_id))],
                Json(body),
            )
                .into_response())
        }
    }
}

/// `GET /orders/{id}`, answered by the partition that owns the order.
pub async fn get_order(
    State(app): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    if uuid::Uuid::parse_str(&order_id).is_err() {
        return Err(ApiError::not_found(format!(
            "order {order_id} does not exist"
        )));
    }
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

fn order_response(payload: &[u8], success: StatusCode) -> Result<Response, ApiError> {
    let reply = OrderReply::decode(payload)
        .map_err(|error| ApiError::internal(format!("undecodable order reply: {error}")))?;
    match reply.result {
        Some(order_reply::Result::Order(order)) => {
            let mut response = (success, Json(OrderJson::from(order))).into_response();
            if reply.replayed {
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            Ok(response)
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
