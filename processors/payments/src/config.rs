//! Payments configuration (on top of the runtime's): which provider, how to
//! reach it, how patiently. Printed at start with the secrets masked.

use crate::http_provider::HttpProvider;
use crate::provider::{PaymentProvider, ProviderError};
use crate::sandbox::SandboxProvider;
use d2c_platform::config::{mask, var};
use d2c_runtime::RuntimeError;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// In-process and deterministic (see the crate docs for its tokens).
    Sandbox,
    /// Stripe-style HTTP API at `provider_url`.
    Http,
}

impl FromStr for ProviderKind {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "sandbox" => Ok(ProviderKind::Sandbox),
            "http" => Ok(ProviderKind::Http),
            other => Err(format!("unknown provider {other:?} (sandbox or http)")),
        }
    }
}

#[derive(Clone)]
pub struct PaymentsConfig {
    /// D2C_PAYMENT_PROVIDER: `sandbox` (default) or `http`.
    pub provider: ProviderKind,
    /// D2C_PAYMENT_PROVIDER_URL: the HTTP provider's base URL.
    pub provider_url: String,
    /// D2C_PAYMENT_PROVIDER_KEY: the HTTP provider's secret key.
    pub provider_key: String,
    /// D2C_PAYMENT_TIMEOUT_MS: one provider request, connect to last byte.
    pub timeout: Duration,
    /// D2C_PAYMENT_RETRY_MAX_MS: the longest wait between retries.
    pub retry_max: Duration,
    /// D2C_PAYMENT_WEBHOOK_SECRET: the webhook signing secret.
    pub webhook_secret: String,
}

impl PaymentsConfig {
    pub fn from_env() -> Result<Self, RuntimeError> {
        Ok(Self {
            provider: var("D2C_PAYMENT_PROVIDER", ProviderKind::Sandbox)?,
            provider_url: var(
                "D2C_PAYMENT_PROVIDER_URL",
                "http://127.0.0.1:12111".to_owned(),
            )?,
            provider_key: var("D2C_PAYMENT_PROVIDER_KEY", "sk_test_local".to_owned())?,
            timeout: Duration::from_millis(var("D2C_PAYMENT_TIMEOUT_MS", 3_000)?),
            retry_max: Duration::from_millis(var("D2C_PAYMENT_RETRY_MAX_MS", 5_000)?),
            webhook_secret: var("D2C_PAYMENT_WEBHOOK_SECRET", "whsec_local".to_owned())?,
        })
    }

    /// The configured provider.
    pub fn build_provider(&self) -> Result<Arc<dyn PaymentProvider>, ProviderError> {
        Ok(match self.provider {
            ProviderKind::Sandbox => Arc::new(SandboxProvider::new()),
            ProviderKind::Http => Arc::new(HttpProvider::new(
                self.provider_url.clone(),
                self.provider_key.clone(),
                self.timeout,
            )?),
        })
    }

    /// Backoff between retries of a transient provider failure.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max: self.retry_max,
            ..RetryPolicy::default()
        }
    }
}

impl std::fmt::Debug for PaymentsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentsConfig")
            .field("provider", &self.provider)
            .field("provider_url", &self.provider_url)
            .field("provider_key", &mask(&self.provider_key))
            .field("timeout", &self.timeout)
            .field("retry_max", &self.retry_max)
            .field("webhook_secret", &mask(&self.webhook_secret))
            .finish()
    }
}

/// Exponential backoff between retries: `initial`, doubling, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// `initial`, doubling, at most `max`, for as long as the caller wants.
    pub fn backoff(&self) -> d2c_platform::retry::ExponentialBuilder {
        d2c_platform::retry::backoff(self.initial, self.max)
    }
}

#[cfg(test)]
mod payments_config_tests {
    use super::*;

    #[test]
    fn secrets_are_masked() {
        assert_eq!(mask("sk_test_abc123"), "sk_test_****");
        assert_eq!(mask("whsec_local"), "whsec_****");
        assert_eq!(mask("plainsecret"), "****");
        assert_eq!(mask("my_secret_x"), "****");
        assert_eq!(mask(""), "(empty)");
        let config = PaymentsConfig {
            provider: ProviderKind::Http,
            provider_url: "http://x".into(),
            provider_key: "sk_live_verysecret".into(),
            timeout: Duration::from_secs(1),
            retry_max: Duration::from_secs(1),
            webhook_secret: "whsec_verysecret".into(),
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("verysecret"), "{printed}");
    }

    #[test]
    fn provider_kinds_parse() {
        assert_eq!("sandbox".parse(), Ok(ProviderKind::Sandbox));
        assert_eq!("HTTP".parse(), Ok(ProviderKind::Http));
        assert!("stripe".parse::<ProviderKind>().is_err());
    }
}
