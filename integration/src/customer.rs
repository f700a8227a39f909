//! Customers for tests that are not about accounts: a bearer token signed
//! with the secret the harness gives its gateways, exactly as a login would
//! issue it, so the checkout tests need no customers processor. The account
//! flow itself (register, login, wrong password, expiry) is tested over HTTP
//! in `tests/customers.rs`.

use d2c_gateway::auth::{now_secs, Tokens};
use std::time::Duration;

/// `D2C_AUTH_SECRET` of every gateway a test starts.
pub const TEST_AUTH_SECRET: &str = "d2c-integration-tests-secret";
/// `D2C_ADMIN_TOKEN` of every gateway a test starts.
pub const TEST_ADMIN_TOKEN: &str = "d2c-integration-tests-admin";

/// A valid token for `customer_id`, for an hour.
pub fn token(customer_id: &str) -> String {
    Tokens::new(TEST_AUTH_SECRET, Duration::from_secs(3_600))
        .issue(customer_id, now_secs())
        .0
}

/// An HTTP client that acts as `customer_id` on every request.
pub fn client(customer_id: &str) -> reqwest::Client {
    bearer_client(&token(customer_id))
}

/// An HTTP client that acts as an operator (admin routes).
pub fn admin_client() -> reqwest::Client {
    bearer_client(TEST_ADMIN_TOKEN)
}

/// An HTTP client that sends `token` as its bearer credential.
///
/// # Panics
/// When the token is not a header value or the client cannot be built
/// (tests only).
pub fn bearer_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .expect("a token is a valid header value");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}
