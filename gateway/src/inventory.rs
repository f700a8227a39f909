//! `/inventory`: stock levels per SKU, owned by the inventory processor.
//! `PUT /admin/inventory/{sku}` sets the units on hand; `GET /inventory/{sku}`
//! tells what is available.

use crate::error::ApiError;
use crate::orders::body_error;
use crate::validate::{parse_json, MAX_ID_LEN};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use d2c_proto::common::v1::rejection::Code;
use d2c_proto::inventory::v1::{stock_reply, GetStock, SetStock, StockLevel, StockReply};
use d2c_topology::topic;
use prost::Message;
use serde::{Deserialize, Serialize};

/// Units on hand above this are surely a typo.
pub const MAX_ON_HAND: i64 = 1_000_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetStockRequest {
    pub on_hand: i64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
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
    let valid = !sku.is_empty()
        && sku.len() <= MAX_ID_LEN
        && sku
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(&byte));
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "sku",
            format!("sku must be 1 to {MAX_ID_LEN} letters, digits or -_.:"),
        ))
    }
}

/// `PUT /admin/inventory/{sku}` with `{"on_hand": n}`.
pub async fn set_stock(
    State(app): State<AppState>,
    Path(sku): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_sku(&sku)?;
    let body = body.map_err(|rejection| body_error(rejection, app.config.max_body_bytes))?;
    let request: SetStockRequest = parse_json(&body)?;
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
        Some(stock_reply::Result::Rejected(rejection)) => {
            Err(match Code::try_from(rejection.code) {
                Ok(Code::NotFound) => ApiError::not_found(rejection.message),
                Ok(Code::Conflict) => ApiError::invalid(rejection.field, rejection.message)
                    .with_status(StatusCode::CONFLICT),
                _ => ApiError::invalid(rejection.field, rejection.message),
            })
        }
        None => Err(ApiError::internal("empty stock reply")),
    }
}
