//! `/customers`: accounts, owned by the customers processor (keyed by
//! customer id, which is derived from the e-mail address).
//!
//! - `POST /customers` registers: the password is hashed here (argon2id) and
//!   only the hash travels. 201; 409 when the e-mail is taken. A retry of
//!   the same registration (same e-mail, name and password) answers the
//!   customer it made: the salted hash differs per attempt, so the gateway
//!   checks the password against the stored credential instead.
//! - `POST /customers/login` checks the password against the stored hash
//!   and answers a bearer token. 200; 401 for a wrong e-mail or password
//!   (the same answer for both, so accounts cannot be probed).
//! - `GET /customers/me`, `POST /customers/me/addresses`,
//!   `DELETE /customers/me/addresses/{id}`: the logged-in customer.

use crate::auth::{self, CustomerId};
use crate::error::{ApiError, ErrorBody};
use crate::validate::{is_identifier, json_body, IdempotencyKey, MAX_ID_LEN};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use d2c_proto::customers::v1::{
    credentials_reply, customer_reply, AddAddress, Address, CredentialsReply, Customer,
    CustomerReply, GetCredentials, GetCustomer, RegisterCustomer, RemoveAddress,
};
use d2c_topology::topic;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_EMAIL_CHARS: usize = 254;
pub const MAX_ADDRESS_FIELD_CHARS: usize = 200;

/// `POST /customers` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The login; compared without regard to case or surrounding spaces.
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[schema(example = "Ann Example")]
    pub name: String,
    /// 8 to 256 characters. Never stored or logged in the clear.
    #[schema(example = "correct horse battery")]
    pub password: String,
}

/// `POST /customers/login` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenJson {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Seconds since the Unix epoch.
    pub expires_at: i64,
    pub customer_id: String,
}

/// An address, as sent and as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressJson {
    /// Set by the server (from the `Idempotency-Key`, if one is sent).
    #[serde(default)]
    pub address_id: String,
    #[serde(default)]
    #[schema(example = "home")]
    pub label: String,
    /// The recipient.
    pub name: String,
    pub line1: String,
    #[serde(default)]
    pub line2: String,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    #[schema(example = "DE")]
    pub country: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CustomerJson {
    pub customer_id: String,
    pub email: String,
    pub name: String,
    pub addresses: Vec<AddressJson>,
    pub registered_at_ms: i64,
    pub version: i64,
}

impl From<Address> for AddressJson {
    fn from(address: Address) -> Self {
        Self {
            address_id: address.address_id,
            label: address.label,
            name: address.name,
            line1: address.line1,
            line2: address.line2,
            city: address.city,
            postal_code: address.postal_code,
            country: address.country,
        }
    }
}

impl From<Customer> for CustomerJson {
    fn from(customer: Customer) -> Self {
        Self {
            customer_id: customer.customer_id,
            email: customer.email,
            name: customer.name,
            addresses: customer.addresses.into_iter().map(Into::into).collect(),
            registered_at_ms: customer.registered_at_ms,
            version: customer.version,
        }
    }
}

/// A plausible address: one `@` with something on both sides and a dot in
/// the domain. Deliverability is the mail server's business.
fn check_email(email: &str) -> Result<String, ApiError> {
    let normalised = d2c_proto::ids::normalise_email(email);
    let plausible = normalised.len() <= MAX_EMAIL_CHARS
        && !normalised.chars().any(char::is_whitespace)
        && normalised.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.contains('@') && domain.contains('.')
        });
    if plausible {
        Ok(normalised)
    } else {
        Err(ApiError::invalid(
            "email",
            "email must be an e-mail address",
        ))
    }
}

fn check_text(field: &str, value: &str, required: bool, max: usize) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if (required && value.trim().is_empty()) || chars > max {
        let least = usize::from(required);
        return Err(ApiError::invalid(
            field,
            format!("{field} must have {least} to {max} characters"),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/customers", tag = "customers",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = CustomerJson),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 409, description = "The e-mail is taken by another registration (`error.field` = email); the same name and password again answer 201 with the customer", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "A field is invalid (named in `error.field`)", body = ErrorBody),
        (status = 503, description = "The customers service did not answer in time", body = ErrorBody),
    ))]
pub async fn register(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: RegisterRequest = json_body(body, app.config.max_body_bytes)?;
    let email = check_email(&request.email)?;
    check_text("name", &request.name, true, MAX_NAME_CHARS)?;
    auth::check_password(&request.password)?;
    let password_hash = auth::hash_password(request.password.clone()).await?;
    let customer_id = d2c_proto::ids::customer_id(&email).to_string();
    let command = RegisterCustomer {
        customer_id: customer_id.clone(),
        email,
        name: request.name.clone(),
        password_hash,
    };
    let customer = match customer_request(&app, &customer_id, &command, "/customers").await {
        Err(taken) if taken.code == "conflict" && taken.field.as_deref() == Some("email") => {
            same_registration(&app, &customer_id, &request.name, request.password)
                .await?
                .ok_or(taken)?
        }
        answered => answered?,
    };
    Ok((
        StatusCode::CREATED,
        [("location", "/customers/me")],
        Json(CustomerJson::from(customer)),
    )
        .into_response())
}

/// The password hash the customers service stores for `customer_id`, if it
/// has an account.
async fn stored_password_hash(
    app: &AppState,
    customer_id: &str,
    route: &str,
) -> Result<Option<String>, ApiError> {
    let query = GetCredentials {
        customer_id: customer_id.to_owned(),
    };
    let reply: CredentialsReply = app
        .bus
        .ask(
            topic::CUSTOMERS_MESSAGES,
            customer_id,
            &query,
            route,
            "customers",
        )
        .await?;
    Ok(match reply.result {
        Some(credentials_reply::Result::Credentials(credentials)) => {
            Some(credentials.password_hash)
        }
        _ => None,
    })
}

/// The stored customer, if `name` and `password` are what it registered
/// with: then a registration that met its own earlier attempt is a retry.
async fn same_registration(
    app: &AppState,
    customer_id: &str,
    name: &str,
    password: String,
) -> Result<Option<Customer>, ApiError> {
    let Some(stored) = stored_password_hash(app, customer_id, "/customers").await? else {
        return Ok(None);
    };
    if !auth::verify_password(password, stored).await? {
        return Ok(None);
    }
    let query = GetCustomer {
        customer_id: customer_id.to_owned(),
    };
    let customer = customer_request(app, customer_id, &query, "/customers").await?;
    Ok((customer.name == name).then_some(customer))
}

#[utoipa::path(post, path = "/customers/login", tag = "customers",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A bearer token", body = TokenJson),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "Wrong e-mail or password", body = ErrorBody),
        (status = 422, description = "A field is missing or malformed", body = ErrorBody),
        (status = 503, description = "The customers service did not answer in time", body = ErrorBody),
    ))]
pub async fn login(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: LoginRequest = json_body(body, app.config.max_body_bytes)?;
    let refused = || ApiError::unauthorized("the e-mail or the password is wrong");
    let Ok(email) = check_email(&request.email) else {
        return Err(refused());
    };
    if request.password.chars().count() > auth::MAX_PASSWORD_CHARS {
        return Err(refused());
    }
    let customer_id = d2c_proto::ids::customer_id(&email).to_string();
    // No account: checked against a decoy (see `verify_password`), so an
    // unknown e-mail takes as long as a wrong password.
    let stored = stored_password_hash(&app, &customer_id, "/customers/login")
        .await?
        .unwrap_or_default();
    if !auth::verify_password(request.password, stored).await? {
        return Err(refused());
    }
    let (token, claims) = app.tokens.issue(&customer_id, auth::now_secs());
    Ok(Json(TokenJson {
        token,
        token_type: "Bearer".into(),
        expires_at: claims.exp,
        customer_id,
    })
    .into_response())
}

#[utoipa::path(get, path = "/customers/me", tag = "customers",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The logged-in customer", body = CustomerJson),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 503, description = "The customers service did not answer in time", body = ErrorBody),
    ))]
pub async fn me(State(app): State<AppState>, customer: CustomerId) -> Result<Response, ApiError> {
    let query = GetCustomer {
        customer_id: customer.0.clone(),
    };
    let customer = customer_request(&app, customer.as_str(), &query, "/customers/me").await?;
    Ok(Json(CustomerJson::from(customer)).into_response())
}

#[utoipa::path(post, path = "/customers/me/addresses", tag = "customers",
    security(("bearer" = [])),
    request_body = AddressJson,
    params(("Idempotency-Key" = String, Header, description = "Required: a retry with the same key adds the address once")),
    responses(
        (status = 201, description = "The customer with the new address", body = CustomerJson),
        (status = 400, description = "Not JSON, or no/bad Idempotency-Key", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 409, description = "The address id exists with other content", body = ErrorBody),
        (status = 422, description = "A field is invalid, or 20 addresses already", body = ErrorBody),
        (status = 503, description = "The customers service did not answer in time", body = ErrorBody),
    ))]
pub async fn add_address(
    State(app): State<AppState>,
    customer: CustomerId,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: AddressJson = json_body(body, app.config.max_body_bytes)?;
    // Required: a random id would make a retried request add it twice.
    let key = IdempotencyKey::required(&headers, "to add an address")?;
    let address_id = d2c_proto::ids::address_id(customer.as_str(), key.as_str()).to_string();
    let address = check_address(request, address_id)?;
    let command = AddAddress {
        customer_id: customer.0.clone(),
        address: Some(address),
    };
    let customer =
        customer_request(&app, customer.as_str(), &command, "/customers/me/addresses").await?;
    Ok((StatusCode::CREATED, Json(CustomerJson::from(customer))).into_response())
}

fn check_address(request: AddressJson, address_id: String) -> Result<Address, ApiError> {
    let max = MAX_ADDRESS_FIELD_CHARS;
    check_text("label", &request.label, false, 50)?;
    check_text("name", &request.name, true, max)?;
    check_text("line1", &request.line1, true, max)?;
    check_text("line2", &request.line2, false, max)?;
    check_text("city", &request.city, true, max)?;
    check_text("postal_code", &request.postal_code, true, 20)?;
    let country_ok =
        request.country.len() == 2 && request.country.bytes().all(|b| b.is_ascii_uppercase());
    if !country_ok {
        return Err(ApiError::invalid(
            "country",
            "country must be an ISO 3166-1 alpha-2 code such as DE",
        ));
    }
    Ok(Address {
        address_id,
        label: request.label,
        name: request.name,
        line1: request.line1,
        line2: request.line2,
        city: request.city,
        postal_code: request.postal_code,
        country: request.country,
    })
}

#[utoipa::path(delete, path = "/customers/me/addresses/{address_id}", tag = "customers",
    security(("bearer" = [])),
    params(("address_id" = String, Path, description = "The address to remove")),
    responses(
        (status = 200, description = "The customer without the address", body = CustomerJson),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such address", body = ErrorBody),
        (status = 503, description = "The customers service did not answer in time", body = ErrorBody),
    ))]
pub async fn remove_address(
    State(app): State<AppState>,
    customer: CustomerId,
    Path(address_id): Path<String>,
) -> Result<Response, ApiError> {
    if !is_identifier(&address_id) {
        return Err(ApiError::not_found(format!(
            "there is no address {address_id} (ids are 1 to {MAX_ID_LEN} characters)"
        )));
    }
    let command = RemoveAddress {
        customer_id: customer.0.clone(),
        address_id,
    };
    let route = "/customers/me/addresses/{address_id}";
    let customer = customer_request(&app, customer.as_str(), &command, route).await?;
    Ok(Json(CustomerJson::from(customer)).into_response())
}

async fn customer_request<M: prost::Message + prost::Name>(
    app: &AppState,
    customer_id: &str,
    message: &M,
    route: &str,
) -> Result<Customer, ApiError> {
    let reply: CustomerReply = app
        .bus
        .ask(
            topic::CUSTOMERS_MESSAGES,
            customer_id,
            message,
            route,
            "customers",
        )
        .await?;
    match reply.result {
        Some(customer_reply::Result::Customer(customer)) => Ok(customer),
        Some(customer_reply::Result::Rejected(rejection)) => Err(rejection.into()),
        None => Err(ApiError::internal("empty customer reply")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            check_email(" Ann@Example.COM ").expect("valid"),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "a@b",
            "a b@example.com",
            "a@b@c.d",
        ] {
            let error = check_email(bad).expect_err(bad);
            assert_eq!(error.field.as_deref(), Some("email"), "{bad}");
        }
    }

    #[test]
    fn addresses_name_the_bad_field() {
        let good = AddressJson {
            address_id: String::new(),
            label: "home".into(),
            name: "Ann".into(),
            line1: "Main St 1".into(),
            line2: String::new(),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        };
        assert!(check_address(good.clone(), "a-1".into()).is_ok());
        let cases = [
            (
                AddressJson {
                    country: "de".into(),
                    ..good.clone()
                },
                "country",
            ),
            (
                AddressJson {
                    city: " ".into(),
                    ..good.clone()
                },
                "city",
            ),
            (
                AddressJson {
                    postal_code: "1".repeat(21),
                    ..good.clone()
                },
                "postal_code",
            ),
            (
                AddressJson {
                    line2: "x".repeat(201),
                    ..good.clone()
                },
                "line2",
            ),
        ];
        for (address, field) in cases {
            let error = check_address(address, "a-1".into()).expect_err(field);
            assert_eq!(error.field.as_deref(), Some(field));
        }
    }
}
