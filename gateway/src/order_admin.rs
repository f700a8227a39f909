//! Operators' order routes: read any order, fulfil it (capture the held
//! payment) and refund part of it. Each is a command to the order's owner,
//! answered when the payment step settles (202 + Location meanwhile).

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::orders::{ensure_order_id, read_order, settled_or_pending, OrderJson, PendingJson};
use crate::validate::{json_body, IdempotencyKey};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use d2c_proto::actor::Actor;
use d2c_proto::orders::v1::{FulfilOrder, OrderStatus, RefundOrder, RefundStatus};
use d2c_topology::topic;
use serde::Deserialize;
use utoipa::ToSchema;

/// `POST /admin/orders/{id}/refunds` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// At most what was captured minus what is refunded or being refunded.
    pub amount_minor: i64,
}

#[utoipa::path(get, path = "/admin/orders/{order_id}", tag = "admin",
    security(("admin" = [])),
    params(("order_id" = String, Path)),
    responses(
        (status = 200, description = "The order, in whatever state it is", body = OrderJson),
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 503, description = "The orders service did not answer in time", body = ErrorBody),
    ))]
pub async fn get_order(
    State(app): State<AppState>,
    _admin: Admin,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    read_order(&app, order_id, Actor::Operator, None).await
}

/// Fulfilment: the order ships, its held payment is captured. Idempotent.
#[utoipa::path(post, path = "/admin/orders/{order_id}/fulfil", tag = "admin",
    security(("admin" = [])),
    params(("order_id" = String, Path)),
    responses(
        (status = 200, description = "Captured (`fulfilled`), or `capture_failed` with `reason`", body = OrderJson),
        (status = 202, description = "The capture is running: poll the Location", body = PendingJson),
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "Only a confirmed order can be fulfilled (`illegal_transition`)", body = ErrorBody),
        (status = 503, description = "The platform could not take the request", body = ErrorBody),
    ))]
pub async fn fulfil(
    State(app): State<AppState>,
    _admin: Admin,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    ensure_order_id(&order_id)?;
    let command = FulfilOrder {
        order_id: order_id.clone(),
    };
    let outcome = app
        .bus
        .request(topic::ORDERS_MESSAGES, &order_id, &command, None)
        .await?;
    settled_or_pending(outcome, &order_id, |status, _| {
        status == OrderStatus::Fulfilling
    })
}

/// A partial refund, once per `Idempotency-Key`.
#[utoipa::path(post, path = "/admin/orders/{order_id}/refunds", tag = "admin",
    security(("admin" = [])),
    params(("order_id" = String, Path),
        ("Idempotency-Key" = String, Header, description = "Required: a retry names the same refund")),
    request_body = RefundRequest,
    responses(
        (status = 201, description = "The refund settled: see its entry in `refunds` (`refunded` or `failed`)", body = OrderJson),
        (status = 202, description = "The refund is running: poll the Location", body = PendingJson),
        (status = 400, description = "No/bad Idempotency-Key, or not JSON", body = ErrorBody),
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "Only a fulfilled order can be refunded in part (`illegal_transition`)", body = ErrorBody),
        (status = 422, description = "`amount_minor` is not between 1 and what is left to refund, or the key was used for another amount", body = ErrorBody),
        (status = 503, description = "The platform could not take the request", body = ErrorBody),
    ))]
pub async fn refund(
    State(app): State<AppState>,
    _admin: Admin,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    ensure_order_id(&order_id)?;
    let key = IdempotencyKey::required(&headers, "for a refund")?;
    let request: RefundRequest = json_body(body, app.config.max_body_bytes)?;
    if request.amount_minor <= 0 {
        return Err(ApiError::invalid(
            "amount_minor",
            "amount_minor must be at least 1",
        ));
    }
    let refund_id = d2c_proto::ids::refund_id(&order_id, key.as_str()).to_string();
    let command = RefundOrder {
        order_id: order_id.clone(),
        refund_id: refund_id.clone(),
        amount_minor: request.amount_minor,
    };
    let outcome = app
        .bus
        .request(
            topic::ORDERS_MESSAGES,
            &order_id,
            &command,
            Some(key.as_str()),
        )
        .await?;
    let response = settled_or_pending(outcome, &order_id, |_, order| {
        order.refunds.iter().any(|refund| {
            refund.refund_id == refund_id && refund.status == RefundStatus::Pending as i32
        })
    })?;
    Ok(created(response))
}

/// A settled refund answers 201 (it made a refund); 202 stays 202.
fn created(mut response: Response) -> Response {
    if response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::CREATED;
    }
    response
}
