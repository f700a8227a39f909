//! `/inventory`: stock levels per SKU, owned by the inventory processor.
//! `PUT /admin/inventory/{sku}` sets the units on hand; `GET /inventory/{sku}`
//! tells what is available.

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::validate::json_body;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use d2c_proto::identifiers::Sku;
use d2c_proto::inventory::v1::{stock_reply, GetStock, SetStock, StockLevel, StockReply};
use d2c_topology::topic;
use prost::Message;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Units on hand above this are surely a typo.
pub const MAX_ON_HAND: i64 = 1_000_000_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStockRequest {
    pub on_hand: i64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct StockJson {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub sold: i64,
}

impl From<StockLevel> for StockJson {
    fn from(level: StockLevel) -> Self {
        Self {
            sku: level.sku,
            on_hand: level.on_hand,
            reserved: level.reserved,
            available: level.available,
            sold: level.sold,
        }
    }
}

fn check_sku(sku: &str) -> Result<(), ApiError> {
    Sku::parse(sku)
        .map(|_| ())
        .map_err(|invalid| ApiError::invalid("sku", invalid.to_string()))
}

/// `PUT /admin/inventory/{sku}` with `{"on_hand": n}`.
#[utoipa::path(put, path = "/admin/inventory/{sku}", tag = "admin",
    security(("admin" = [])),
    request_body = SetStockRequest,
    params(("sku" = String, Path)),
    responses(
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 403, description = "A customer's token on an admin route", body = ErrorBody),
        (status = 200, description = "The stock level", body = StockJson),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 409, description = "Fewer than the units reserved", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
        (status = 503, description = "The inventory service did not answer in time", body = ErrorBody),
    ))]
pub async fn set_stock(
    State(app): State<AppState>,
    _admin: Admin,
    Path(sku): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_sku(&sku)?;
    let request: SetStockRequest = json_body(body, app.config.max_body_bytes)?;
    if !(0..=MAX_ON_HAND).contains(&request.on_hand) {
        return Err(ApiError::invalid(
            "on_hand",
            format!("on_hand must be between 0 and {MAX_ON_HAND}"),
        ));
    }
    let command = SetStock {
        sku: sku.clone(),
        on_hand: request.on_hand,
    };
    stock_request(&app, &sku, &command, "/admin/inventory/{sku}").await
}

/// `GET /inventory/{sku}`.
#[utoipa::path(get, path = "/inventory/{sku}", tag = "catalog",
    params(("sku" = String, Path)),
    responses(
        (status = 200, description = "The stock level", body = StockJson),
        (status = 404, description = "Never stocked", body = ErrorBody),
        (status = 422, description = "Not a SKU", body = ErrorBody),
        (status = 503, description = "The inventory service did not answer in time", body = ErrorBody),
    ))]
pub async fn get_stock(
    State(app): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Response, ApiError> {
    check_sku(&sku)?;
    let query = GetStock { sku: sku.clone() };
    stock_request(&app, &sku, &query, "/inventory/{sku}").await
}

async fn stock_request<M: Message + prost::Name>(
    app: &AppState,
    sku: &str,
    message: &M,
    route: &str,
) -> Result<Response, ApiError> {
    let reply: StockReply = app
        .bus
        .ask(topic::INVENTORY_MESSAGES, sku, message, route, "inventory")
        .await?;
    match reply.result {
        Some(stock_reply::Result::Level(level)) => {
            Ok((StatusCode::OK, Json(StockJson::from(level))).into_response())
        }
        Some(stock_reply::Result::Rejected(rejection)) => Err(rejection.into()),
        None => Err(ApiError::internal("empty stock reply")),
    }
}
