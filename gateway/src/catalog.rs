//! `/products`: the catalog, owned by the catalog processor (keyed by
//! product id).
//!
//! - `POST /admin/products` creates a product. Without a `product_id` in the
//!   body the id is a UUIDv5 of the `Idempotency-Key` header, which is then
//!   required, so a retried create names the same product. 201.
//! - `PUT /admin/products/{id}` replaces its content; `expected_version`
//!   (optional, 0 = any) guards against lost updates. 200.
//! - `POST /admin/products/{id}/archive` withdraws it, idempotently. 200.
//! - `GET /products/{id}` answers it. 200 / 404.
//!
//! Refusals: INVALID → 422 naming the field, NOT_FOUND → 404, CONFLICT and
//! ILLEGAL_TRANSITION → 409.

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::validate::{is_identifier, json_body, IdempotencyKey, MAX_ID_LEN};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use d2c_proto::catalog::v1::{
    product_reply, ArchiveProduct, CreateProduct, GetProduct, Price, Product, ProductReply,
    UpdateProduct, Variant,
};
use d2c_proto::identifiers::Sku;
use d2c_topology::topic;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use utoipa::ToSchema;

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;
pub const MAX_VARIANTS: usize = 100;
pub const MAX_PRICES: usize = 50;
/// 100 million in minor units (1,000,000.00 EUR).
pub const MAX_AMOUNT_MINOR: i64 = 100_000_000;

/// `POST /admin/products` body.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    #[serde(default)]
    pub product_id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub category: String,
    pub variants: Vec<VariantJson>,
}

/// `PUT /admin/products/{id}` body.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProductRequest {
    #[serde(default)]
    pub expected_version: i64,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub category: String,
    pub variants: Vec<VariantJson>,
}

/// What a create or an update sets.
#[derive(Debug, Clone)]
pub struct ContentRequest {
    pub name: String,
    pub description: String,
    pub category: String,
    pub variants: Vec<VariantJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantJson {
    pub sku: String,
    #[serde(default)]
    pub name: String,
    pub prices: Vec<PriceJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceJson {
    pub currency: String,
    pub amount_minor: i64,
}

/// A product as answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct ProductJson {
    pub product_id: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub variants: Vec<VariantJson>,
    pub archived: bool,
    pub version: i64,
    pub updated_at_ms: i64,
}

impl From<Arc<Product>> for ProductJson {
    fn from(product: Arc<Product>) -> Self {
        Arc::unwrap_or_clone(product).into()
    }
}

impl From<Product> for ProductJson {
    fn from(product: Product) -> Self {
        Self {
            product_id: product.product_id,
            name: product.name,
            description: product.description,
            category: product.category,
            variants: product
                .variants
                .into_iter()
                .map(|variant| VariantJson {
                    sku: variant.sku,
                    name: variant.name,
                    prices: variant
                        .prices
                        .into_iter()
                        .map(|price| PriceJson {
                            currency: price.currency,
                            amount_minor: price.amount_minor,
                        })
                        .collect(),
                })
                .collect(),
            archived: product.archived,
            version: product.version,
            updated_at_ms: product.updated_at_ms,
        }
    }
}

/// Content that passed every check, as the protobuf variants.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidContent {
    pub name: String,
    pub description: String,
    pub category: String,
    pub variants: Vec<Variant>,
}

impl ContentRequest {
    /// The catalog's content rules, checked at the edge (the processor checks
    /// them again): errors name the field as the JSON does.
    pub fn validate(self) -> Result<ValidContent, ApiError> {
        let name_chars = self.name.chars().count();
        if self.name.trim().is_empty() || name_chars > MAX_NAME_CHARS {
            return Err(ApiError::invalid(
                "name",
                format!("name must have 1 to {MAX_NAME_CHARS} characters"),
            ));
        }
        if self.description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(ApiError::invalid(
                "description",
                format!("description has at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        if !is_identifier(&self.category) {
            return Err(ApiError::invalid(
                "category",
                format!("category must be 1 to {MAX_ID_LEN} letters, digits or -_.:"),
            ));
        }
        if self.variants.is_empty() {
            return Err(ApiError::invalid(
                "variants",
                "a product needs at least one variant",
            ));
        }
        if self.variants.len() > MAX_VARIANTS {
            return Err(ApiError::invalid(
                "variants",
                format!("a product has at most {MAX_VARIANTS} variants"),
            ));
        }
        let mut skus = HashSet::new();
        let mut variants = Vec::with_capacity(self.variants.len());
        for (index, variant) in self.variants.into_iter().enumerate() {
            let variant = parse_variant(index, variant)?;
            if !skus.insert(variant.sku.clone()) {
                return Err(ApiError::invalid(
                    format!("variants[{index}].sku"),
                    format!("{} appears on an earlier variant", variant.sku),
                ));
            }
            variants.push(variant);
        }
        Ok(ValidContent {
            name: self.name,
            description: self.description,
            category: self.category,
            variants,
        })
    }
}

fn parse_variant(index: usize, variant: VariantJson) -> Result<Variant, ApiError> {
    if let Err(invalid) = Sku::parse(&variant.sku) {
        return Err(ApiError::invalid(
            format!("variants[{index}].sku"),
            invalid.to_string(),
        ));
    }
    if variant.name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(
            format!("variants[{index}].name"),
            format!("a variant name has at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if variant.prices.len() > MAX_PRICES {
        return Err(ApiError::invalid(
            format!("variants[{index}].prices"),
            format!("a variant has at most {MAX_PRICES} prices"),
        ));
    }
    let mut currencies = HashSet::new();
    let mut prices = Vec::with_capacity(variant.prices.len());
    for (price_index, price) in variant.prices.into_iter().enumerate() {
        let field = format!("variants[{index}].prices[{price_index}]");
        let currency = price.currency;
        if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_uppercase()) {
            return Err(ApiError::invalid(
                format!("{field}.currency"),
                format!("{currency:?} is not a currency code (three upper-case letters)"),
            ));
        }
        if !(0..=MAX_AMOUNT_MINOR).contains(&price.amount_minor) {
            return Err(ApiError::invalid(
                format!("{field}.amount_minor"),
                format!("amount_minor must be between 0 and {MAX_AMOUNT_MINOR}"),
            ));
        }
        if !currencies.insert(currency.clone()) {
            return Err(ApiError::invalid(
                format!("{field}.currency"),
                format!("the variant has an earlier price in {currency}"),
            ));
        }
        prices.push(Price {
            currency,
            amount_minor: price.amount_minor,
        });
    }
    Ok(Variant {
        sku: variant.sku,
        name: variant.name,
        prices,
    })
}

fn check_product_id(product_id: &str) -> Result<(), ApiError> {
    if is_identifier(product_id) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "product_id",
            format!("product_id must be 1 to {MAX_ID_LEN} letters, digits or -_.:"),
        ))
    }
}

/// The command a create request makes: the body's product id, or else one
/// derived from the `Idempotency-Key` (then required).
pub fn create_command(
    headers: &HeaderMap,
    request: CreateProductRequest,
) -> Result<CreateProduct, ApiError> {
    let product_id = match request.product_id {
        Some(product_id) => {
            check_product_id(&product_id)?;
            product_id
        }
        None => {
            let key = IdempotencyKey::required(headers, "without a product_id")?;
            d2c_proto::ids::product_id(key.as_str()).to_string()
        }
    };
    let content = ContentRequest {
        name: request.name,
        description: request.description,
        category: request.category,
        variants: request.variants,
    }
    .validate()?;
    Ok(CreateProduct {
        product_id,
        name: content.name,
        description: content.description,
        category: content.category,
        variants: content.variants,
    })
}

/// The command an update request makes for the product in the path.
pub fn update_command(
    product_id: String,
    request: UpdateProductRequest,
) -> Result<UpdateProduct, ApiError> {
    check_product_id(&product_id)?;
    if request.expected_version < 0 {
        return Err(ApiError::invalid(
            "expected_version",
            "expected_version cannot be negative (0 means any version)",
        ));
    }
    let content = ContentRequest {
        name: request.name,
        description: request.description,
        category: request.category,
        variants: request.variants,
    }
    .validate()?;
    Ok(UpdateProduct {
        product_id,
        expected_version: request.expected_version,
        name: content.name,
        description: content.description,
        category: content.category,
        variants: content.variants,
    })
}

/// `POST /admin/products`.
#[utoipa::path(post, path = "/admin/products", tag = "admin",
    security(("admin" = [])),
    request_body = CreateProductRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Required without `product_id`: the id is derived from it")),
    responses(
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 403, description = "A customer's token on an admin route", body = ErrorBody),
        (status = 201, description = "Created (or the same create retried)", body = ProductJson),
        (status = 409, description = "The id exists with other content", body = ErrorBody),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "A field is invalid (named in `error.field`, e.g. `variants[1].prices[0].currency`)", body = ErrorBody),
        (status = 503, description = "The catalog service did not answer in time", body = ErrorBody),
    ))]
pub async fn create_product(
    State(app): State<AppState>,
    _admin: Admin,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: CreateProductRequest = json_body(body, app.config.max_body_bytes)?;
    let command = create_command(&headers, request)?;
    let product = product_request(&app, &command.product_id, &command, "/admin/products").await?;
    let location = HeaderValue::from_str(&format!("/products/{}", product.product_id))
        .unwrap_or_else(|_| HeaderValue::from_static("/products"));
    Ok((
        StatusCode::CREATED,
        [("location", location)],
        Json(ProductJson::from(product)),
    )
        .into_response())
}

/// `PUT /admin/products/{id}`.
#[utoipa::path(put, path = "/admin/products/{product_id}", tag = "admin",
    security(("admin" = [])),
    request_body = UpdateProductRequest,
    params(("product_id" = String, Path)),
    responses(
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 403, description = "A customer's token on an admin route", body = ErrorBody),
        (status = 200, description = "Updated, at version + 1", body = ProductJson),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 409, description = "Stale `expected_version`, or the product is archived", body = ErrorBody),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "A field is invalid (named in `error.field`, e.g. `variants[1].prices[0].currency`)", body = ErrorBody),
        (status = 503, description = "The catalog service did not answer in time", body = ErrorBody),
    ))]
pub async fn update_product(
    State(app): State<AppState>,
    _admin: Admin,
    Path(product_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_product_id(&product_id)?;
    let request: UpdateProductRequest = json_body(body, app.config.max_body_bytes)?;
    let command = update_command(product_id, request)?;
    let product = product_request(
        &app,
        &command.product_id,
        &command,
        "/admin/products/{product_id}",
    )
    .await?;
    Ok((StatusCode::OK, Json(ProductJson::from(product))).into_response())
}

/// `POST /admin/products/{id}/archive`.
#[utoipa::path(post, path = "/admin/products/{product_id}/archive", tag = "admin",
    security(("admin" = [])),
    params(("product_id" = String, Path)),
    responses(
        (status = 422, description = "Not a product id (`error.field` is `product_id`)", body = ErrorBody),
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 403, description = "A customer's token on an admin route", body = ErrorBody),
        (status = 200, description = "Archived (again: unchanged)", body = ProductJson),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 503, description = "The catalog service did not answer in time", body = ErrorBody),
    ))]
pub async fn archive_product(
    State(app): State<AppState>,
    _admin: Admin,
    Path(product_id): Path<String>,
) -> Result<Response, ApiError> {
    check_product_id(&product_id)?;
    let command = ArchiveProduct {
        product_id: product_id.clone(),
    };
    let product = product_request(
        &app,
        &product_id,
        &command,
        "/admin/products/{product_id}/archive",
    )
    .await?;
    Ok((StatusCode::OK, Json(ProductJson::from(product))).into_response())
}

/// `GET /products/{id}`: from the local cache, else from the catalog
/// processor (then cached).
#[utoipa::path(get, path = "/products/{product_id}", tag = "catalog",
    params(("product_id" = String, Path)),
    responses(
        (status = 422, description = "Not a product id (`error.field` is `product_id`)", body = ErrorBody),
        (status = 200, description = "The product (archived ones too, `archived: true`)", body = ProductJson),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 503, description = "The catalog service did not answer in time", body = ErrorBody),
    ))]
pub async fn get_product(
    State(app): State<AppState>,
    Path(product_id): Path<String>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::not_found(format!("there is no product {product_id}"));
    if !is_identifier(&product_id) {
        return Err(missing());
    }
    let query = GetProduct {
        product_id: product_id.clone(),
    };
    let load = async {
        match product_request(&app, &product_id, &query, "/products/{product_id}").await {
            Ok(product) => Ok(Some(product)),
            Err(error) if error.status == StatusCode::NOT_FOUND => Ok(None),
            Err(error) => Err(error),
        }
    };
    let product = app
        .cache
        .product(&product_id, load)
        .await?
        .ok_or_else(missing)?;
    Ok((StatusCode::OK, Json(ProductJson::from(product))).into_response())
}

async fn product_request<M: Message + prost::Name>(
    app: &AppState,
    product_id: &str,
    message: &M,
    route: &str,
) -> Result<Product, ApiError> {
    let reply: ProductReply = app
        .bus
        .ask(
            topic::CATALOG_MESSAGES,
            product_id,
            message,
            route,
            "catalog",
        )
        .await?;
    match reply.result {
        Some(product_reply::Result::Product(product)) => {
            // Read-your-writes on this instance, before the event comes by.
            app.cache.remember(product.clone()).await;
            Ok(product)
        }
        Some(product_reply::Result::Rejected(rejection)) => Err(rejection.into()),
        None => Err(ApiError::internal("empty product reply")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::parse_json;

    const GOOD: &str = r#"{"name":"Linen shirt","category":"shirts","variants":[{"sku":"SHIRT-S","prices":[{"currency":"EUR","amount_minor":4900}]},{"sku":"SHIRT-M","name":"M","prices":[{"currency":"EUR","amount_minor":4900},{"currency":"USD","amount_minor":5500}]}]}"#;

    fn key(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "idempotency-key",
            HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    fn create(headers: &HeaderMap, json: &str) -> Result<CreateProduct, ApiError> {
        create_command(headers, parse_json(json.as_bytes())?)
    }

    #[test]
    fn catalog_create_derives_the_id_from_the_key() {
        let a = create(&key("k-1"), GOOD).expect("valid");
        let b = create(&key("k-1"), &GOOD.replace(',', " , ")).expect("valid");
        assert_eq!(a.product_id, b.product_id);
        assert_eq!(a.product_id, d2c_proto::ids::product_id("k-1").to_string());
        assert_ne!(
            a.product_id,
            create(&key("k-2"), GOOD).expect("valid").product_id
        );
        assert_eq!(a.variants.len(), 2);
        assert_eq!(a.variants[1].prices[1].currency, "USD");
        assert_eq!(a.description, "");

        let missing = create(&HeaderMap::new(), GOOD).expect_err("no key, no id");
        assert_eq!(missing.status, StatusCode::BAD_REQUEST);
        assert_eq!(missing.field.as_deref(), Some("Idempotency-Key"));

        let with_id = GOOD.replacen('{', r#"{"product_id":"P-1","#, 1);
        assert_eq!(
            create(&HeaderMap::new(), &with_id)
                .expect("valid")
                .product_id,
            "P-1"
        );
    }

    #[test]
    fn catalog_request_errors_name_the_field() {
        let cases = [
            ("not json", 400, None),
            (r#"{"product_id":"a b"}"#, 422, None),
            (&GOOD.replacen('{', r#"{"extra":1,"#, 1), 422, Some("extra")),
            (
                &GOOD.replace(r#""name":"Linen shirt","#, ""),
                422,
                Some("name"),
            ),
            (&GOOD.replace("shirts", "a/b"), 422, Some("category")),
            (
                &GOOD.replace(r#""currency":"USD""#, r#""currency":"usd""#),
                422,
                Some("variants[1].prices[1].currency"),
            ),
            (
                &GOOD.replace(r#""currency":"USD""#, r#""currency":"EUR""#),
                422,
                Some("variants[1].prices[1].currency"),
            ),
            (
                &GOOD.replace("5500", "100000001"),
                422,
                Some("variants[1].prices[1].amount_minor"),
            ),
            (
                &GOOD.replace("5500", r#""x""#),
                422,
                Some("variants[1].prices[1].amount_minor"),
            ),
            (
                &GOOD.replace("SHIRT-M", "SHIRT-S"),
                422,
                Some("variants[1].sku"),
            ),
            (
                &GOOD.replace(r#""sku":"SHIRT-S","#, r#""sku":"SHIRT-S","color":1,"#),
                422,
                Some("variants[0].color"),
            ),
        ];
        for (json, status, field) in cases {
            let json = json.replacen('{', r#"{"product_id":"P-1","#, 1);
            let error = create(&HeaderMap::new(), &json).expect_err(&json);
            assert_eq!(error.status.as_u16(), status, "{json}: {error:?}");
            if let Some(field) = field {
                assert_eq!(error.field.as_deref(), Some(field), "{json}: {error:?}");
            }
        }
    }

    #[test]
    fn catalog_update_request_parses() {
        let json = GOOD.replacen('{', r#"{"expected_version":3,"#, 1);
        let command = update_command("P-1".into(), parse_json(json.as_bytes()).expect("parses"))
            .expect("valid");
        assert_eq!(
            (command.product_id.as_str(), command.expected_version),
            ("P-1", 3)
        );
        let any = update_command("P-1".into(), parse_json(GOOD.as_bytes()).expect("parses"))
            .expect("valid");
        assert_eq!(any.expected_version, 0);
        let error = update_command(
            "P-1".into(),
            parse_json(json.replace(":3,", ":-1,").as_bytes()).expect("parses"),
        )
        .expect_err("negative");
        assert_eq!(error.field.as_deref(), Some("expected_version"));
    }
}
