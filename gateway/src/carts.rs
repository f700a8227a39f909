//! `/carts`: a logged-in customer's carts, owned by the customers processor
//! (keyed by customer id, so another customer's cart is simply not there).
//!
//! - `POST /carts` opens a cart in one currency. 201.
//! - `GET /carts/{id}` reads it.
//! - `PUT /carts/{id}/lines/{sku}` sets a line's quantity; the price comes
//!   from the catalog (read side, cached), so an unknown or withdrawn SKU,
//!   or one not sold in the cart's currency, is a 422 naming `sku`.
//! - `DELETE /carts/{id}/lines/{sku}` removes the line.
//! - `POST /carts/{id}/checkout` with an `Idempotency-Key` turns the cart
//!   into a PlaceOrder and answers like `POST /orders`.

use crate::auth::CustomerId;
use crate::bus::RequestOutcome;
use crate::error::{ApiError, ErrorBody};
use crate::orders::{checkout_outcome, OrderJson, PendingJson};
use crate::validate::{is_currency, is_identifier, json_body, IdempotencyKey, MAX_ID_LEN};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use d2c_proto::catalog::v1::Product;
use d2c_proto::customers::v1::{
    cart_reply, Cart, CartReply, CartStatus, CheckoutCart, CreateCart, GetCart, SetCartLine,
};
use d2c_proto::identifiers::Sku;
use d2c_topology::topic;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// Units of one SKU per cart line at most.
pub const MAX_CART_QUANTITY: i64 = 1_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCartRequest {
    /// ISO 4217; every line is priced in it.
    #[schema(example = "EUR")]
    pub currency: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLineRequest {
    /// 0 to 1000; 0 removes the line.
    pub quantity: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// A payment method token from the storefront's payment form.
    #[schema(example = "pm_card_visa")]
    pub payment_method: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CartLineJson {
    pub sku: String,
    pub product_id: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CartJson {
    pub cart_id: String,
    pub currency: String,
    /// `open` or `checked_out`.
    pub status: String,
    pub lines: Vec<CartLineJson>,
    pub total_minor: i64,
    /// The order the cart became, once checked out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub order_id: String,
    pub version: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl From<Cart> for CartJson {
    fn from(cart: Cart) -> Self {
        let status = match CartStatus::try_from(cart.status) {
            Ok(CartStatus::Open) => "open",
            Ok(CartStatus::CheckedOut) => "checked_out",
            _ => "unknown",
        };
        Self {
            total_minor: cart
                .lines
                .iter()
                .map(|line| line.quantity.saturating_mul(line.unit_price_minor))
                .sum(),
            cart_id: cart.cart_id,
            currency: cart.currency,
            status: status.to_owned(),
            lines: cart
                .lines
                .into_iter()
                .map(|line| CartLineJson {
                    sku: line.sku,
                    product_id: line.product_id,
                    quantity: line.quantity,
                    unit_price_minor: line.unit_price_minor,
                })
                .collect(),
            order_id: cart.order_id,
            version: cart.version,
            created_at_ms: cart.created_at_ms,
            updated_at_ms: cart.updated_at_ms,
        }
    }
}

fn cart_location(cart_id: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("/carts/{cart_id}"))
        .unwrap_or_else(|_| HeaderValue::from_static("/carts"))
}

/// Cart ids are identifiers; anything else names no cart.
fn check_cart_id(cart_id: &str) -> Result<(), ApiError> {
    if is_identifier(cart_id) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("there is no cart {cart_id}")))
    }
}

#[utoipa::path(post, path = "/carts", tag = "carts",
    security(("bearer" = [])),
    request_body = CreateCartRequest,
    params(("Idempotency-Key" = String, Header, description = "Required: a retry with the same key answers the cart it opened")),
    responses(
        (status = 201, description = "The new cart", body = CartJson),
        (status = 400, description = "Not JSON, or no/bad Idempotency-Key", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 409, description = "The key opened a cart in another currency (`conflict`), or the customer has 20 open carts already (`limit_reached`, field `carts`)", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
        (status = 503, description = "The customers service did not answer in time", body = ErrorBody),
    ))]
pub async fn create_cart(
    State(app): State<AppState>,
    customer: CustomerId,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: CreateCartRequest = json_body(body, app.config.max_body_bytes)?;
    if !is_currency(&request.currency) {
        return Err(ApiError::invalid(
            "currency",
            "currency must be a supported ISO 4217 code such as EUR",
        ));
    }
    // Required: a random id would make a retried request open a second cart.
    let key = IdempotencyKey::required(&headers, "to open a cart")?;
    let cart_id = d2c_proto::ids::cart_id(customer.as_str(), key.as_str()).to_string();
    let command = CreateCart {
        customer_id: customer.0.clone(),
        cart_id: cart_id.clone(),
        currency: request.currency,
    };
    let cart = cart_request(&app, &customer, &command, "/carts").await?;
    Ok((
        StatusCode::CREATED,
        [("location", cart_location(&cart_id))],
        Json(CartJson::from(cart)),
    )
        .into_response())
}

#[utoipa::path(get, path = "/carts/{cart_id}", tag = "carts",
    security(("bearer" = [])),
    params(("cart_id" = String, Path)),
    responses(
        (status = 200, description = "The cart", body = CartJson),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such cart (or another customer's)", body = ErrorBody),
        (status = 503, description = "The customers service did not answer in time", body = ErrorBody),
    ))]
pub async fn get_cart(
    State(app): State<AppState>,
    customer: CustomerId,
    Path(cart_id): Path<String>,
) -> Result<Response, ApiError> {
    check_cart_id(&cart_id)?;
    let cart = read_cart(&app, &customer, cart_id).await?;
    Ok(Json(CartJson::from(cart)).into_response())
}

async fn read_cart(
    app: &AppState,
    customer: &CustomerId,
    cart_id: String,
) -> Result<Cart, ApiError> {
    let query = GetCart {
        customer_id: customer.0.clone(),
        cart_id,
    };
    cart_request(app, customer, &query, "/carts/{cart_id}").await
}

#[utoipa::path(put, path = "/carts/{cart_id}/lines/{sku}", tag = "carts",
    security(("bearer" = [])),
    params(("cart_id" = String, Path), ("sku" = String, Path)),
    request_body = SetLineRequest,
    responses(
        (status = 200, description = "The cart with the line set", body = CartJson),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such cart", body = ErrorBody),
        (status = 409, description = "The cart is checked out", body = ErrorBody),
        (status = 422, description = "Unknown SKU, not sold in the cart's currency, or a bad quantity", body = ErrorBody),
        (status = 503, description = "A service did not answer in time", body = ErrorBody),
    ))]
pub async fn set_line(
    State(app): State<AppState>,
    customer: CustomerId,
    Path((cart_id, sku)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_cart_id(&cart_id)?;
    let request: SetLineRequest = json_body(body, app.config.max_body_bytes)?;
    if !(0..=MAX_CART_QUANTITY).contains(&request.quantity) {
        return Err(ApiError::invalid(
            "quantity",
            format!("quantity must be between 0 and {MAX_CART_QUANTITY}"),
        ));
    }
    change_line(&app, &customer, cart_id, sku, request.quantity).await
}

#[utoipa::path(delete, path = "/carts/{cart_id}/lines/{sku}", tag = "carts",
    security(("bearer" = [])),
    params(("cart_id" = String, Path), ("sku" = String, Path)),
    responses(
        (status = 422, description = "Not a SKU (`error.field` is `sku`)", body = ErrorBody),
        (status = 200, description = "The cart without the line", body = CartJson),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such cart", body = ErrorBody),
        (status = 409, description = "The cart is checked out", body = ErrorBody),
        (status = 503, description = "The customers service did not answer in time", body = ErrorBody),
    ))]
pub async fn remove_line(
    State(app): State<AppState>,
    customer: CustomerId,
    Path((cart_id, sku)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_cart_id(&cart_id)?;
    change_line(&app, &customer, cart_id, sku, 0).await
}

/// Sets the line, priced from the catalog in the cart's currency (a removal
/// needs no price).
async fn change_line(
    app: &AppState,
    customer: &CustomerId,
    cart_id: String,
    sku: String,
    quantity: i64,
) -> Result<Response, ApiError> {
    if let Err(invalid) = Sku::parse(&sku) {
        return Err(ApiError::invalid("sku", invalid.to_string()));
    }
    let (product_id, unit_price_minor) = if quantity == 0 {
        (String::new(), 0)
    } else {
        let cart = read_cart(app, customer, cart_id.clone()).await?;
        let product = sold_product(app, &sku).await?;
        (
            product.product_id.clone(),
            price_of(&product, &sku, &cart.currency)?,
        )
    };
    let command = SetCartLine {
        customer_id: customer.0.clone(),
        cart_id,
        sku,
        quantity,
        unit_price_minor,
        product_id,
    };
    let cart = cart_request(app, customer, &command, "/carts/{cart_id}/lines/{sku}").await?;
    Ok(Json(CartJson::from(cart)).into_response())
}

/// The current, not archived product selling `sku`.
async fn sold_product(app: &AppState, sku: &str) -> Result<Arc<Product>, ApiError> {
    let load = async {
        d2c_readside::product_by_sku(&app.reads, sku)
            .await
            .map_err(crate::error::read_side)
    };
    match app.cache.product_by_sku(sku, load).await? {
        Some(product) if !product.archived => Ok(product),
        Some(_) => Err(ApiError::invalid("sku", format!("{sku} is no longer sold"))),
        None => Err(ApiError::invalid(
            "sku",
            format!("{sku} is not in the catalog"),
        )),
    }
}

fn price_of(product: &Product, sku: &str, currency: &str) -> Result<i64, ApiError> {
    product
        .variants
        .iter()
        .filter(|variant| variant.sku == sku)
        .flat_map(|variant| &variant.prices)
        .find(|price| price.currency == currency)
        .map(|price| price.amount_minor)
        .ok_or_else(|| ApiError::invalid("sku", format!("{sku} is not sold in {currency}")))
}

#[utoipa::path(post, path = "/carts/{cart_id}/checkout", tag = "carts",
    security(("bearer" = [])),
    params(("cart_id" = String, Path),
        ("Idempotency-Key" = String, Header, description = "Required: a retry names the same order")),
    request_body = CheckoutRequest,
    responses(
        (status = 201, description = "Order confirmed", body = OrderJson),
        (status = 202, description = "Still settling: poll the Location", body = PendingJson),
        (status = 400, description = "Not JSON, or no/bad Idempotency-Key", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 402, description = "Payment declined (`error.reason`)", body = ErrorBody),
        (status = 404, description = "No such cart", body = ErrorBody),
        (status = 409, description = "Out of stock (`error.skus`), the cart was checked out with another key, or a price changed since a line was set (`price_changed`; the cart is open again with current prices)", body = ErrorBody),
        (status = 422, description = "Empty cart, bad payment method, or the key was used for another request", body = ErrorBody),
        (status = 429, description = "Too many checkouts by this customer (`rate_limited`): retry after `Retry-After` seconds", body = ErrorBody),
        (status = 503, description = "The platform could not take the request: at its admission limit or unable to reach Kafka (`unavailable`); nothing was sent, retry with the same Idempotency-Key after `Retry-After` seconds", body = ErrorBody),
    ))]
pub async fn checkout(
    State(app): State<AppState>,
    customer: CustomerId,
    Path(cart_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_cart_id(&cart_id)?;
    let key = IdempotencyKey::required(&headers, "for a checkout")?;
    app.checkout_limit.check(&customer.0)?;
    let request: CheckoutRequest = json_body(body, app.config.max_body_bytes)?;
    if !is_identifier(&request.payment_method) {
        return Err(ApiError::invalid(
            "payment_method",
            format!("payment_method must be a token of 1 to {MAX_ID_LEN} letters, digits or -_.:"),
        ));
    }
    let order_id = d2c_proto::ids::order_id(customer.as_str(), key.as_str()).to_string();
    let command = CheckoutCart {
        customer_id: customer.0.clone(),
        cart_id,
        payment_method: request.payment_method,
        idempotency_key: key.as_str().to_owned(),
    };
    let outcome = app
        .bus
        .request(
            topic::CUSTOMERS_MESSAGES,
            customer.as_str(),
            &command,
            Some(key.as_str()),
        )
        .await?;
    // A refusal comes from customers (a CartReply); an accepted checkout is
    // answered by orders, like POST /orders.
    if let RequestOutcome::Replied(reply) = &outcome {
        if reply.message_type == <CartReply as prost::Name>::full_name() {
            return match decode_cart(&reply.payload)?.result {
                Some(cart_reply::Result::Rejected(rejection)) => Err(rejection.into()),
                _ => Err(ApiError::internal("a checkout was answered with a cart")),
            };
        }
    }
    checkout_outcome(
        &app,
        outcome,
        &order_id,
        customer.as_str(),
        "/carts/{cart_id}/checkout",
    )
}

async fn cart_request<M: Message + prost::Name>(
    app: &AppState,
    customer: &CustomerId,
    message: &M,
    route: &str,
) -> Result<Cart, ApiError> {
    let reply: CartReply = app
        .bus
        .ask(
            topic::CUSTOMERS_MESSAGES,
            customer.as_str(),
            message,
            route,
            "customers",
        )
        .await?;
    cart_result(reply)
}

fn decode_cart(payload: &[u8]) -> Result<CartReply, ApiError> {
    CartReply::decode(payload)
        .map_err(|error| ApiError::internal(format!("undecodable cart reply: {error}")))
}

fn cart_result(reply: CartReply) -> Result<Cart, ApiError> {
    match reply.result {
        Some(cart_reply::Result::Cart(cart)) => Ok(cart),
        Some(cart_reply::Result::Rejected(rejection)) => Err(rejection.into()),
        None => Err(ApiError::internal("empty cart reply")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d2c_proto::catalog::v1::{Price, Variant};

    #[test]
    fn a_line_is_priced_in_the_carts_currency() {
        let product = Product {
            product_id: "p-1".into(),
            variants: vec![Variant {
                sku: "S-1".into(),
                name: String::new(),
                prices: vec![Price {
                    currency: "EUR".into(),
                    amount_minor: 1999,
                }],
            }],
            ..Product::default()
        };
        assert_eq!(price_of(&product, "S-1", "EUR").expect("sold"), 1999);
        let error = price_of(&product, "S-1", "USD").expect_err("not in USD");
        assert_eq!(error.field.as_deref(), Some("sku"));
        assert!(price_of(&product, "S-2", "EUR").is_err());
    }
}
