//! Customer authentication at the edge.
//!
//! Passwords are hashed here (argon2id, random salt) before registration
//! travels to the customers processor, and verified here against the hash
//! the processor returns: the password itself never reaches Kafka, and the
//! processor's handlers stay deterministic. The expensive hashing runs on
//! the blocking pool, off the request threads.
//!
//! A login yields a bearer token in the JWT compact form, HS256-signed with
//! `D2C_AUTH_SECRET`, carrying the customer id and an expiry. Verifying one
//! needs no state, so every gateway instance accepts every token.

use crate::error::ApiError;
use crate::AppState;
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hmac::{Hmac, Mac};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::Duration;

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 256;

/// The signed part of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The customer id.
    pub sub: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a signed d2c token")]
    Malformed,
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
}

/// Signs and checks tokens with one secret (HS256, by `jsonwebtoken`).
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

impl Tokens {
    pub fn new(secret: &str, ttl: Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `customer_id`, valid from `now_secs` for the TTL.
    pub fn issue(&self, customer_id: &str, now_secs: i64) -> (String, Claims) {
        let claims = Claims {
            sub: customer_id.to_owned(),
            iat: now_secs,
            exp: now_secs.saturating_add(self.ttl.as_secs() as i64),
        };
        // Signing HS256 claims of plain strings and integers cannot fail.
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default();
        (token, claims)
    }

    /// The claims of a token this secret signed (HS256 only: a token naming
    /// another algorithm, `none` included, is refused) that has not expired
    /// at `now_secs`. The expiry is checked here against the caller's clock,
    /// without leeway, so one request uses one "now" and tests can choose it.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|error| match error.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed,
            })?
            .claims;
        if claims.exp <= now_secs {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

pub fn now_secs() -> i64 {
    d2c_platform::now_ms() / 1000
}

/// The customer a request is made by: a valid bearer token is required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerId(pub String);

impl CustomerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The bearer credential of a request, or why there is none.
fn bearer<'a>(parts: &'a Parts, who: &str) -> Result<&'a str, ApiError> {
    let header = parts
        .headers
        .get("authorization")
        .ok_or_else(|| ApiError::unauthorized(format!("this route needs {who} bearer token")))?;
    header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))
}

impl FromRequestParts<AppState> for CustomerId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts, "a customer's")?;
        let claims = app
            .tokens
            .verify(token, now_secs())
            .map_err(|error| ApiError::unauthorized(error.to_string()))?;
        Ok(CustomerId(claims.sub))
    }
}

/// An operator: the request carries the admin token (`D2C_ADMIN_TOKEN`).
/// A customer's token is a valid credential of the wrong kind: 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts, "the admin")?;
        if admin_token_matches(token, app.config.admin_token.expose()) {
            return Ok(Admin);
        }
        if app.tokens.verify(token, now_secs()).is_ok() {
            return Err(ApiError::forbidden(
                "admin routes are not open to customers",
            ));
        }
        Err(ApiError::unauthorized("the admin token is not valid"))
    }
}

/// Compares in constant time (through HMAC), so the response time tells
/// nothing about how much of a guess was right. An empty configured token
/// matches nothing.
fn admin_token_matches(given: &str, configured: &str) -> bool {
    if configured.is_empty() {
        return false;
    }
    let digest = |value: &str| {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"d2c-admin-token")
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        mac.update(value.as_bytes());
        mac
    };
    digest(given)
        .verify_slice(&digest(configured).finalize().into_bytes())
        .is_ok()
}

/// Checks a password's length rules (in characters, not bytes).
pub fn check_password(password: &str) -> Result<(), ApiError> {
    let chars = password.chars().count();
    if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "password",
            format!("a password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"),
        ))
    }
}

/// Password hashes running at once, at most: argon2id (the crate's default
/// parameters) takes 19 MiB and a core's worth of CPU for each, so more at
/// once than there are cores only adds memory. A burst of logins waits here.
static HASHING: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::sync::Semaphore::new(cores)
});

async fn hashing_slot() -> Result<tokio::sync::SemaphorePermit<'static>, ApiError> {
    HASHING
        .acquire()
        .await
        .map_err(|_| ApiError::internal("password hashing is shut down"))
}

/// An argon2id PHC string for `password`, with a fresh random salt.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    let slot = hashing_slot().await?;
    tokio::task::spawn_blocking(move || {
        // Held by the hash itself: a request given up on still finishes it.
        let _slot = slot;
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
    })
    .await
    .map_err(|_| ApiError::internal("password hashing was cancelled"))?
    .map_err(|error| ApiError::internal(format!("password hashing failed: {error}")))
}

/// A hash no password is known for. An account that does not exist is
/// checked against it, so that a login for an unknown e-mail costs as much
/// as a wrong password and the timing tells nothing.
static DECOY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let salt = SaltString::generate(&mut OsRng);
    let secret = uuid::Uuid::new_v4().to_string();
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .unwrap_or_default()
});

/// Whether `password` matches the stored PHC string (empty: no account).
pub async fn verify_password(password: String, stored: String) -> Result<bool, ApiError> {
    let slot = hashing_slot().await?;
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let exists = !stored.is_empty();
        let stored = if exists { stored } else { DECOY_HASH.clone() };
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        exists && matches
    })
    .await
    .map_err(|_| ApiError::internal("password check was cancelled"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let tokens = Tokens::new("secret-1", Duration::from_secs(60));
        let (token, claims) = tokens.issue("cust-1", NOW);
        assert_eq!(tokens.verify(&token, NOW + 59), Ok(claims));
        assert_eq!(tokens.verify(&token, NOW + 60), Err(TokenError::Expired));
    }

    #[test]
    fn forged_or_mangled_tokens_are_refused() {
        let tokens = Tokens::new("secret-1", Duration::from_secs(60));
        let (token, _) = tokens.issue("cust-1", NOW);
        let other = Tokens::new("secret-2", Duration::from_secs(60));
        assert_eq!(other.verify(&token, NOW), Err(TokenError::BadSignature));
        // Another customer's id in a payload signed for the first one.
        let (header, rest) = token.split_once('.').expect("three parts");
        let (_, signature) = rest.split_once('.').expect("three parts");
        let forged_claims = URL_SAFE_NO_PAD.encode(br#"{"sub":"cust-2","iat":0,"exp":9999999999}"#);
        let forged = format!("{header}.{forged_claims}.{signature}");
        assert_eq!(tokens.verify(&forged, NOW), Err(TokenError::BadSignature));
        for garbage in ["", "a.b", "a.b.c", "...", "x.y.!!"] {
            assert!(tokens.verify(garbage, NOW).is_err(), "{garbage:?}");
        }
        // An unsigned token (`alg: none`) is never accepted.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"cust-2","iat":0,"exp":9999999999}"#)
        );
        assert_eq!(tokens.verify(&none, NOW), Err(TokenError::Malformed));
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse".into(), hash.clone())
            .await
            .expect("checked"));
        assert!(!verify_password("wrong horse".into(), hash)
            .await
            .expect("checked"));
        assert!(!verify_password("x".into(), "not a hash".into())
            .await
            .expect("checked"));
    }

    #[test]
    fn admin_tokens_compare_exactly() {
        assert!(admin_token_matches("s3cret", "s3cret"));
        assert!(!admin_token_matches("s3cre", "s3cret"));
        assert!(!admin_token_matches("s3cret ", "s3cret"));
        assert!(
            !admin_token_matches("", ""),
            "no configured token, no admin"
        );
    }

    #[test]
    fn password_length_is_checked_in_characters() {
        assert!(check_password("short").is_err());
        assert!(check_password("ééééééé").is_err());
        assert!(check_password("éééééééé").is_ok());
        assert!(check_password(&"x".repeat(257)).is_err());
    }
}
