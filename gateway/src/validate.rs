//! Input validation at the edge: domain values are built only by parsing, so
//! nothing invalid gets past this module. Errors name the offending field.

use crate::auth::CustomerId;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use d2c_proto::identifiers::Sku;
use d2c_proto::orders::v1::{PlaceOrder, RequestedLine};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: i64 = 10_000;
/// 100 million in minor units (1,000,000.00 EUR) per unit.
pub const MAX_UNIT_PRICE_MINOR: i64 = 100_000_000;
pub const MAX_KEY_LEN: usize = 255;

/// Active ISO 4217 codes that a shop may plausibly charge in.
const CURRENCIES: &[&str] = &[
    "AED", "ARS", "AUD", "BGN", "BRL", "CAD", "CHF", "CLP", "CNY", "COP", "CZK", "DKK", "EGP",
    "EUR", "GBP", "HKD", "HUF", "IDR", "ILS", "INR", "ISK", "JPY", "KES", "KRW", "MAD", "MXN",
    "MYR", "NGN", "NOK", "NZD", "PEN", "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "SAR", "SEK",
    "SGD", "THB", "TRY", "TWD", "UAH", "USD", "VND", "ZAR",
];

/// Whether `code` is a currency the shop may charge in.
pub fn is_currency(code: &str) -> bool {
    CURRENCIES.contains(&code)
}

/// A query string as (name, value) pairs, each name at most once and only
/// from `allowed`: anything else is a 422 naming the parameter.
pub fn query_params(
    raw: Option<&str>,
    allowed: &[&str],
) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|error| {
            ApiError::bad_request(format!("the query string is malformed: {error}"))
        })?;
    let mut params = std::collections::BTreeMap::new();
    for (name, value) in pairs {
        if !allowed.contains(&name.as_str()) {
            return Err(ApiError::invalid(
                name.clone(),
                format!("unknown parameter {name:?}; known: {}", allowed.join(", ")),
            ));
        }
        if params.insert(name.clone(), value).is_some() {
            return Err(ApiError::invalid(
                name,
                "the parameter is given more than once",
            ));
        }
    }
    Ok(params)
}

/// An integer query parameter within `range`, or `default` when absent.
pub fn int_param(
    params: &std::collections::BTreeMap<String, String>,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
    default: Option<i64>,
) -> Result<Option<i64>, ApiError> {
    let Some(value) = params.get(name) else {
        return Ok(default);
    };
    match value.trim().parse::<i64>() {
        Ok(number) if range.contains(&number) => Ok(Some(number)),
        _ => Err(ApiError::invalid(
            name,
            format!(
                "{name} must be a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// The client's `Idempotency-Key`: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(value: &str) -> Result<Self, ApiError> {
        let valid = !value.is_empty()
            && value.len() <= MAX_KEY_LEN
            && value.bytes().all(|byte| byte.is_ascii_graphic());
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(ApiError::bad_request(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
            ))
            .with_field("Idempotency-Key"))
        }
    }

    /// The header if the client sent one; malformed is an error.
    pub fn optional(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let Some(value) = headers.get("idempotency-key") else {
            return Ok(None);
        };
        let value = value.to_str().map_err(|_| {
            ApiError::bad_request("Idempotency-Key must be visible ASCII")
                .with_field("Idempotency-Key")
        })?;
        Self::parse(value).map(Some)
    }

    /// The header, which `purpose` (e.g. "for a checkout") requires.
    pub fn required(headers: &HeaderMap, purpose: &str) -> Result<Self, ApiError> {
        Self::optional(headers)?.ok_or_else(|| {
            ApiError::bad_request(format!("the Idempotency-Key header is required {purpose}"))
                .with_field("Idempotency-Key")
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `POST /orders` body as sent. The customer is the token's.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    #[schema(example = "EUR")]
    pub currency: String,
    /// 1 to 100 lines, each SKU once.
    pub lines: Vec<LineRequest>,
    /// A payment method token from the storefront's payment form (the
    /// sandbox provider documents test tokens such as `pm_card_visa`).
    #[schema(example = "pm_card_visa")]
    pub payment_method: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    pub sku: String,
    pub quantity: i64,
    /// The unit price the storefront showed, in minor units. Optional and
    /// never charged as such: the order is priced from the catalog, and a
    /// shown price that differs is refused with 409 `price_changed` naming
    /// the line and its current price.
    #[serde(default)]
    pub unit_price_minor: Option<i64>,
}

/// A request body as JSON of type `T`: too large → 413, unreadable or not
/// JSON → 400, the wrong shape → 422 naming the field.
pub fn json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(limit)
        } else {
            ApiError::bad_request(format!("request body could not be read: {rejection}"))
        }
    })?;
    parse_json(&body)
}

/// Parse JSON: not JSON at all → 400; JSON of the wrong shape → 422 naming
/// the field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!("request body is not valid JSON: {error}"))
    })?;
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        ApiError::invalid(field_of(&path, &message), message)
    })
}

/// serde names a missing field only in its message (path = the parent).
fn field_of(path: &str, message: &str) -> String {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (path, missing) {
        (".", Some(name)) => name.to_owned(),
        (parent, Some(name)) => format!("{parent}.{name}"),
        (".", None) => "body".to_owned(),
        (path, None) => path.to_owned(),
    }
}

pub use d2c_proto::identifiers::{is_identifier, MAX_ID_LEN};

/// An order request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidOrder {
    customer_id: String,
    currency: String,
    lines: Vec<RequestedLine>,
    payment_method: String,
}

impl ValidOrder {
    pub fn parse(request: PlaceOrderRequest, customer: &CustomerId) -> Result<Self, ApiError> {
        if !is_currency(&request.currency) {
            return Err(ApiError::invalid(
                "currency",
                format!(
                    "{:?} is not a supported ISO 4217 currency code",
                    request.currency
                ),
            ));
        }
        if request.lines.is_empty() {
            return Err(ApiError::invalid(
                "lines",
                "an order needs at least one line",
            ));
        }
        if request.lines.len() > MAX_LINES {
            return Err(ApiError::invalid(
                "lines",
                format!("an order has at most {MAX_LINES} lines"),
            ));
        }
        let lines = request
            .lines
            .iter()
            .enumerate()
            .map(|(index, line)| parse_line(index, line))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(index) = first_repeated_sku(&lines) {
            return Err(ApiError::invalid(
                format!("lines[{index}].sku"),
                format!(
                    "{} appears on an earlier line; put the whole quantity on one line",
                    lines[index].sku
                ),
            ));
        }
        if !is_identifier(&request.payment_method) {
            return Err(ApiError::invalid(
                "payment_method",
                format!(
                    "payment_method must be a token of 1 to {MAX_ID_LEN} letters, digits or -_.:"
                ),
            ));
        }
        Ok(Self {
            customer_id: customer.0.clone(),
            currency: request.currency,
            lines,
            payment_method: request.payment_method,
        })
    }

    /// The command for this request under `key`. The request hash lets the
    /// orders processor tell a retry from a different request under the same key.
    pub fn into_command(self, key: &IdempotencyKey) -> PlaceOrder {
        let order_id = d2c_proto::ids::order_id(&self.customer_id, key.as_str()).to_string();
        let request_hash = self.fingerprint();
        PlaceOrder {
            order_id,
            customer_id: self.customer_id,
            lines: self.lines,
            currency: self.currency,
            idempotency_key: key.as_str().to_owned(),
            request_hash,
            payment_method: self.payment_method,
            cart_id: String::new(),
        }
    }

    /// SHA-256 over the parsed request, so whitespace or key order in the JSON
    /// does not make a retry look like a different request.
    fn fingerprint(&self) -> Vec<u8> {
        let mut hasher = Sha256::new();
        for part in [&self.customer_id, &self.currency, &self.payment_method] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        for line in &self.lines {
            hasher.update((line.sku.len() as u64).to_be_bytes());
            hasher.update(line.sku.as_bytes());
            hasher.update(line.quantity.to_be_bytes());
            match line.unit_price_minor {
                Some(price) => {
                    hasher.update([1]);
                    hasher.update(price.to_be_bytes());
                }
                None => hasher.update([0]),
            }
        }
        hasher.finalize().to_vec()
    }
}

/// Stock is reserved per (order, SKU), so one SKU may appear once.
fn first_repeated_sku(lines: &[RequestedLine]) -> Option<usize> {
    let mut seen = std::collections::HashSet::new();
    lines
        .iter()
        .position(|line| !seen.insert(line.sku.as_str()))
}

fn parse_line(index: usize, line: &LineRequest) -> Result<RequestedLine, ApiError> {
    if let Err(invalid) = Sku::parse(&line.sku) {
        return Err(ApiError::invalid(
            format!("lines[{index}].sku"),
            invalid.to_string(),
        ));
    }
    if !(1..=MAX_QUANTITY).contains(&line.quantity) {
        return Err(ApiError::invalid(
            format!("lines[{index}].quantity"),
            format!("quantity must be between 1 and {MAX_QUANTITY}"),
        ));
    }
    if line
        .unit_price_minor
        .is_some_and(|price| !(0..=MAX_UNIT_PRICE_MINOR).contains(&price))
    {
        return Err(ApiError::invalid(
            format!("lines[{index}].unit_price_minor"),
            format!("unit_price_minor must be between 0 and {MAX_UNIT_PRICE_MINOR}"),
        ));
    }
    Ok(RequestedLine {
        sku: line.sku.clone(),
        quantity: line.quantity,
        unit_price_minor: line.unit_price_minor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> Result<ValidOrder, ApiError> {
        ValidOrder::parse(parse_json(json.as_bytes())?, &CustomerId("c-1".into()))
    }

    const GOOD: &str = r#"{"currency":"EUR","payment_method":"pm_card_visa","lines":[{"sku":"S-1","quantity":2,"unit_price_minor":100}]}"#;

    #[test]
    fn good_request_parses() {
        assert!(request(GOOD).is_ok());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("not json", 400, None),
            (r#"{"lines":[]}"#, 422, Some("currency")),
            (
                r#"{"customer_id":"c","currency":"EUR","lines":[]}"#,
                422,
                Some("customer_id"),
            ),
            (r#"{"currency":"EURO","lines":[]}"#, 422, Some("currency")),
            (r#"{"currency":"EUR","lines":[]}"#, 422, Some("lines")),
            (
                r#"{"currency":"EUR","lines":[{"sku":"a","quantity":0,"unit_price_minor":1}]}"#,
                422,
                Some("lines[0].quantity"),
            ),
            (
                r#"{"currency":"EUR","lines":[{"sku":"a","quantity":"x","unit_price_minor":1}]}"#,
                422,
                Some("lines[0].quantity"),
            ),
            (
                r#"{"currency":"EUR","lines":[{"sku":"a","quantity":1,"unit_price_minor":-1}]}"#,
                422,
                Some("lines[0].unit_price_minor"),
            ),
            (
                r#"{"currency":"EUR","lines":[],"extra":1}"#,
                422,
                Some("extra"),
            ),
            (
                r#"{"currency":"EUR","lines":[{"sku":"a","quantity":1,"unit_price_minor":1},{"sku":"a","quantity":1,"unit_price_minor":1}]}"#,
                422,
                Some("lines[1].sku"),
            ),
        ];
        for (json, status, field) in cases {
            let json = &json.replacen("{\"", r#"{"payment_method":"pm_card_visa",""#, 1);
            let error = request(json).expect_err(json);
            assert_eq!(error.status.as_u16(), status, "{json}: {error:?}");
            assert_eq!(error.field.as_deref(), field, "{json}: {error:?}");
        }
    }

    #[test]
    fn the_shown_price_is_optional_and_part_of_the_fingerprint() {
        let key = IdempotencyKey::parse("k1").expect("valid key");
        let unpriced = GOOD.replace(r#","unit_price_minor":100"#, "");
        let without = request(&unpriced).expect("valid").into_command(&key);
        assert_eq!(without.lines[0].unit_price_minor, None);
        let with = request(GOOD).expect("valid").into_command(&key);
        assert_eq!(with.lines[0].unit_price_minor, Some(100));
        assert_ne!(without.request_hash, with.request_hash);
    }

    #[test]
    fn payment_method_is_required_and_checked() {
        let without = GOOD.replace(r#""payment_method":"pm_card_visa","#, "");
        assert_eq!(
            request(&without).expect_err("missing").field.as_deref(),
            Some("payment_method")
        );
        let bad = GOOD.replace("pm_card_visa", "4242 4242");
        assert_eq!(
            request(&bad).expect_err("bad").field.as_deref(),
            Some("payment_method")
        );
    }

    #[test]
    fn idempotency_key_rules() {
        assert!(IdempotencyKey::parse("abc-123").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }

    #[test]
    fn same_request_same_order_and_fingerprint() {
        let key = IdempotencyKey::parse("k1").expect("valid key");
        let spaced = GOOD.replace(',', " , ");
        let a = request(GOOD).expect("valid").into_command(&key);
        let b = request(&spaced).expect("valid").into_command(&key);
        assert_eq!(a.order_id, b.order_id);
        assert_eq!(a.request_hash, b.request_hash);
        let other = request(&GOOD.replace("\"quantity\":2", "\"quantity\":3"))
            .expect("valid")
            .into_command(&key);
        assert_eq!(a.order_id, other.order_id);
        assert_ne!(a.request_hash, other.request_hash);
    }
}
