//! The one error type of the HTTP edge: logs the cause, answers a short JSON
//! body `{"error": {"code", "message", "field"?}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

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
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    skus: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<&'a str>,
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

    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        error.retry_after_secs = Some(1);
        error
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, code = self.code, message = %self.message, "Request failed");
        } else {
            tracing::debug!(status = %self.status, code = self.code, message = %self.message, "Request refused");
        }
        let details = self.details.as_deref();
        let body = Body {
            error: Detail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
                skus: details.map(|d| d.skus.as_slice()).unwrap_or_default(),
                reason: details.and_then(|d| d.reason.as_deref()),
                order_id: details.and_then(|d| d.order_id.as_deref()),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}
