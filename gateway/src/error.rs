//! The one error type of the HTTP edge: logs the cause, answers a short JSON
//! body `{"error": {"code", "message", "field"?}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use d2c_proto::common::v1::{rejection::Code, Rejection};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after_secs: Option<u32>,
    /// Rarely set, so kept behind a pointer: an error travels in every
    /// `Result` of the request path.
    pub details: Option<Box<Details>>,
}

/// What a refused checkout adds to its error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    pub order_id: Option<String>,
    /// Out of stock: the SKUs concerned.
    pub skus: Vec<String>,
    /// Machine-readable detail, e.g. a payment decline code.
    pub reason: Option<String>,
    /// Price changed: the line's current unit price.
    pub current_price_minor: Option<i64>,
}

/// Every error response: `{"error": {...}}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `bad_request`, `invalid_field`, `unauthorized`,
    /// `forbidden`, `not_found`, `conflict`, `idempotency_key_reused`,
    /// `out_of_stock`, `price_changed`, `payment_declined`, `illegal_transition`,
    /// `limit_reached`, `rate_limited`, `timed_out`,
    /// `body_too_large`, `unavailable`, `internal`.
    #[schema(example = "invalid_field")]
    pub code: String,
    /// A sentence for a human.
    pub message: String,
    /// The offending field or parameter, as the request spells it, e.g.
    /// `lines[1].quantity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Out of stock: the SKUs concerned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skus: Vec<String>,
    /// Payment declined: the decline code, e.g. `insufficient_funds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The order a refused checkout created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// Price changed: the catalog's current unit price of the line named in
    /// `field` (every changed SKU is in `skus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_price_minor: Option<i64>,
}

/// The read side (Postgres) failed: the cause is logged, the client gets a
/// 503 to retry.
pub fn read_side(error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "Read-side query failed");
    ApiError::unavailable("the read side is unavailable; retry shortly")
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_secs: None,
            details: None,
        }
    }

    fn details_mut(&mut self) -> &mut Details {
        self.details.get_or_insert_with(Box::default)
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The order a refusal is about (a rejected checkout still has an id).
    pub fn with_order(mut self, order_id: impl Into<String>) -> Self {
        self.details_mut().order_id = Some(order_id.into());
        self
    }

    pub fn out_of_stock(message: impl Into<String>, field: String, skus: Vec<String>) -> Self {
        let mut error = Self::new(StatusCode::CONFLICT, "out_of_stock", message).with_field(field);
        error.details_mut().skus = skus;
        error
    }

    pub fn payment_declined(message: impl Into<String>, reason: String) -> Self {
        let mut error = Self::new(StatusCode::PAYMENT_REQUIRED, "payment_declined", message)
            .with_field("payment_method");
        error.details_mut().reason = (!reason.is_empty()).then_some(reason);
        error
    }

    pub fn illegal_transition(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "illegal_transition", message).with_field("status")
    }

    /// The storefront showed a price the catalog no longer has: 409
    /// `price_changed`, with the line's current price.
    pub fn price_changed(
        field: impl Into<String>,
        message: impl Into<String>,
        skus: Vec<String>,
        current_price_minor: Option<i64>,
    ) -> Self {
        let mut error = Self::new(StatusCode::CONFLICT, "price_changed", message).with_field(field);
        let details = error.details_mut();
        details.skus = skus;
        details.current_price_minor = current_price_minor;
        error
    }

    /// A saga step passed its deadline and the order was rejected: 409
    /// `timed_out` (`field` names the step).
    pub fn timed_out(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "timed_out", message).with_field(field)
    }

    /// A per-customer limit (e.g. 20 open carts): 409 `limit_reached`.
    pub fn limit_reached(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "limit_reached", message).with_field(field)
    }

    /// The request contradicts the current state (a stale version, an id
    /// taken by other content): 409 naming the field.
    pub fn conflict(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message).with_field(field)
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message).with_field(field)
    }

    pub fn conflict_key(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            message,
        )
        .with_field("Idempotency-Key")
    }

    /// No valid credential: 401, with the scheme to use.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message).with_field("Authorization")
    }

    /// A credential that is valid but not enough for this route: 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message).with_field("Authorization")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    }

    /// Too many requests of one kind from one customer: 429
    /// `rate_limited`, with `Retry-After` in whole seconds (at least 1).
    pub fn rate_limited(message: impl Into<String>, wait: std::time::Duration) -> Self {
        let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        error.retry_after_secs = Some(u32::try_from(seconds.max(1)).unwrap_or(u32::MAX));
        error
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        error.retry_after_secs = Some(1);
        error
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<Rejection> for ApiError {
    /// A processor's refusal as the HTTP edge answers it.
    fn from(rejection: Rejection) -> Self {
        let Rejection {
            code,
            field,
            message,
            skus,
            reason,
            current_price_minor,
        } = rejection;
        match Code::try_from(code) {
            Ok(Code::Invalid) => ApiError::invalid(field, message),
            Ok(Code::NotFound) => ApiError::not_found(message),
            // A key reused for another request is the client's mistake in
            // the request (422, like Stripe); other conflicts are with state.
            Ok(Code::Conflict) if field == "Idempotency-Key" => ApiError::conflict_key(message),
            Ok(Code::Conflict) => ApiError::conflict(field, message),
            Ok(Code::OutOfStock) => ApiError::out_of_stock(message, field, skus),
            Ok(Code::PaymentDeclined) => ApiError::payment_declined(message, reason),
            Ok(Code::IllegalTransition) if field.is_empty() => {
                ApiError::illegal_transition(message)
            }
            Ok(Code::IllegalTransition) => ApiError::illegal_transition(message).with_field(field),
            Ok(Code::LimitReached) => ApiError::limit_reached(field, message),
            Ok(Code::TimedOut) => ApiError::timed_out(field, message),
            Ok(Code::PriceChanged) => {
                ApiError::price_changed(field, message, skus, current_price_minor)
            }
            Ok(Code::Unspecified) | Err(_) => {
                ApiError::internal(format!("unexpected rejection: {message}"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, code = self.code, message = %self.message, "Request failed");
        } else {
            tracing::debug!(status = %self.status, code = self.code, message = %self.message, "Request refused");
        }
        let details = self.details.map(|details| *details).unwrap_or_default();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
                skus: details.skus,
                reason: details.reason,
                order_id: details.order_id,
                current_price_minor: details.current_price_minor,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}
