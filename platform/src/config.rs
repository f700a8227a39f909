//! Configuration from environment variables, shared by every binary: typed
//! values with working local defaults, and secrets that never print.

use std::str::FromStr;

/// A variable that is set but does not parse, or a value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// One environment variable, parsed, or its default when unset.
pub fn var<T: FromStr>(name: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .map_err(|error| ConfigError(format!("{name}={value:?}: {error}"))),
        _ => Ok(default),
    }
}

/// A secret for logs: its kind prefix (`sk_test_`, `whsec_`, …) and no more.
pub fn mask(secret: &str) -> String {
    if secret.is_empty() {
        return "(empty)".into();
    }
    const KNOWN_PREFIXES: [&str; 5] = ["sk_test_", "sk_live_", "rk_test_", "rk_live_", "whsec_"];
    let prefix = KNOWN_PREFIXES
        .iter()
        .find(|prefix| secret.starts_with(*prefix))
        .copied()
        .unwrap_or("");
    format!("{prefix}****")
}

/// A credential from the environment. Its `Debug` shows only its kind prefix
/// (see [`mask`]), so printing a config never prints a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&mask(&self.0))
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self(value.to_owned()))
    }
}

/// A connection URL for logs: the password, if any, replaced by `****`.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:****@{host}"),
        None => url.to_owned(),
    }
}

/// Every `D2C_` variable some part of the platform reads: the services,
/// `topology`, `./dev` and the test and bench tools. A shared environment
/// (one ConfigMap for every service, `./dev`'s exports) may hand any of them
/// to any process, so a process accepts them all; a `D2C_` name that is in
/// no list is a typo, and a typo silently falling back to a default is the
/// bug this catches. `D2C_KAFKA__*` is passed through to librdkafka, which
/// names a property it does not know. A test keeps this list equal to the
/// names the sources use.
pub const KNOWN_VARIABLES: &[&str] = &[
    "D2C_ADMIN_ADDR",
    "D2C_ADMIN_TOKEN",
    "D2C_ADMISSION_MAX",
    "D2C_ADMISSION_MIN",
    "D2C_ADMISSION_SLOW_MS",
    "D2C_AUTH_SECRET",
    "D2C_BENCH_ADMIN_BASE",
    "D2C_BENCH_HTTP_PORT",
    "D2C_BENCH_KAFKA_PORT",
    "D2C_BENCH_PRODUCTS",
    "D2C_BIN_DIR",
    "D2C_CACHE",
    "D2C_CACHE_DIR",
    "D2C_CACHE_PRODUCTS",
    "D2C_CACHE_SEARCHES",
    "D2C_CATALOG_ADMIN_PORT",
    "D2C_CHECKOUT_BURST",
    "D2C_CHECKOUT_RATE_PER_MINUTE",
    "D2C_COMMIT_LINGER_MS",
    "D2C_CUSTOMERS_ADMIN_PORT",
    "D2C_DATABASE_POOL",
    "D2C_DATABASE_URL",
    "D2C_DEADLINE_AUTHORIZATION_MS",
    "D2C_DEADLINE_CAPTURE_MS",
    "D2C_DEADLINE_REFUND_MS",
    "D2C_DEADLINE_RESERVATION_MS",
    "D2C_DEADLINE_VOID_MS",
    "D2C_DEMO_PRODUCTS",
    "D2C_FAULT_ACTION",
    "D2C_FAULT_AFTER",
    "D2C_FAULT_POINT",
    "D2C_FETCH_WAIT_MS",
    "D2C_GATEWAY_URL",
    "D2C_GROUP_ID",
    "D2C_HTTP_ADDR",
    "D2C_HTTP_PORT",
    "D2C_INVENTORY_ADMIN_PORT",
    "D2C_KAFKA_BROKERS",
    "D2C_KAFKA_CLIENT_PROPERTIES",
    "D2C_KAFKA_CLUSTER_ID",
    "D2C_KAFKA_CONTROLLER_PORT",
    "D2C_KAFKA_HEAP",
    "D2C_KAFKA_METRICS_PORT",
    "D2C_KAFKA_NODES",
    "D2C_KAFKA_NODE_ID",
    "D2C_KAFKA_PORT",
    "D2C_KAFKA_SASL_BROKERS",
    "D2C_KAFKA_SASL_PORT",
    "D2C_KAFKA_VOTERS",
    "D2C_KEEP_LOGS",
    "D2C_LINGER_MS",
    "D2C_LOG_FORMAT",
    "D2C_MAINTENANCE_INTERVAL_MS",
    "D2C_MAX_BATCH",
    "D2C_MAX_BODY_BYTES",
    "D2C_MAX_PENDING",
    "D2C_MEMBERSHIP_TIMEOUT_MS",
    "D2C_OPS_HELM",
    "D2C_ORDERS_ADMIN_PORT",
    "D2C_OTLP_BATCH_MS",
    "D2C_OTLP_ENDPOINT",
    "D2C_PARTITION_QUEUE",
    "D2C_PAYMENTS_ADMIN_PORT",
    "D2C_PAYMENT_PROVIDER",
    "D2C_PAYMENT_PROVIDER_KEY",
    "D2C_PAYMENT_PROVIDER_URL",
    "D2C_PAYMENT_RETRY_MAX_MS",
    "D2C_PAYMENT_TIMEOUT_MS",
    "D2C_PAYMENT_WEBHOOK_SECRET",
    "D2C_PG_DATA",
    "D2C_PG_PORT",
    "D2C_PROCESSING_GUARANTEE",
    "D2C_PROJECTOR_ADMIN_PORT",
    "D2C_PROJECTOR_NAME",
    "D2C_PROMETHEUS_PORT",
    "D2C_RELEASE",
    "D2C_REPLY_PARTITION",
    "D2C_REPLY_TIMEOUT_MS",
    "D2C_REPORT_INTERVAL_MS",
    "D2C_RESTORE_TIMEOUT_MS",
    "D2C_SCHEMATHESIS",
    "D2C_SEARCH_CACHE_TTL_MS",
    "D2C_SENTRY_DSN",
    "D2C_SENTRY_ENVIRONMENT",
    "D2C_SESSION_TIMEOUT_MS",
    "D2C_SKU_CACHE_TTL_MS",
    "D2C_SLACK_BATCH_MAX",
    "D2C_SLACK_BATCH_MS",
    "D2C_SLACK_MAX_PER_MINUTE",
    "D2C_SLACK_QUEUE",
    "D2C_SLACK_TIMEOUT_MS",
    "D2C_SLACK_WEBHOOK_URL",
    "D2C_STANDBY",
    "D2C_STATE_DIR",
    "D2C_STATS_INTERVAL_MS",
    "D2C_STRIPE_MOCK",
    "D2C_SWEEPER_ABORT",
    "D2C_SWEEPER_ADMIN_PORT",
    "D2C_SWEEPER_INTERVAL_MS",
    "D2C_SWEEPER_MIN_AGE_MS",
    "D2C_SYNC_WRITES",
    "D2C_TEST_KAFKA_PORT",
    "D2C_TEST_LOG",
    "D2C_TEST_TOPOLOGY_PROFILE",
    "D2C_TICK_MS",
    "D2C_TOKEN_TTL_SECS",
    "D2C_TOPIC_PREFIX",
    "D2C_TOPOLOGY_PROFILE",
    "D2C_TRANSACTIONAL_ID",
    "D2C_TRANSACTION_PRODUCERS",
    "D2C_TRANSACTION_TIMEOUT_MS",
    "D2C_VERSION_RETENTION_MS",
];

/// Fails, naming each one and the known name it is closest to, if the
/// environment holds a `D2C_` variable nothing reads. Every binary calls it
/// before reading its configuration.
pub fn reject_unknown_variables() -> Result<(), ConfigError> {
    let unknown = unknown_variables(std::env::vars_os().map(|(name, _)| name));
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ConfigError(format!(
        "unknown environment variable(s): {} (a typo? the known names are listed in README's configuration table)",
        unknown.join(", ")
    )))
}

/// The unknown `D2C_` names among `names`, each with a suggestion.
fn unknown_variables(names: impl Iterator<Item = std::ffi::OsString>) -> Vec<String> {
    let mut unknown: Vec<String> = names
        .filter_map(|name| name.into_string().ok())
        .filter(|name| name.starts_with("D2C_"))
        .filter(|name| !name.starts_with(crate::kafka::PASSTHROUGH_PREFIX))
        .filter(|name| !KNOWN_VARIABLES.contains(&name.as_str()))
        .map(|name| match closest_known(&name) {
            Some(known) => format!("{name} (did you mean {known}?)"),
            None => name,
        })
        .collect();
    unknown.sort();
    unknown
}

fn closest_known(name: &str) -> Option<&'static str> {
    KNOWN_VARIABLES
        .iter()
        .map(|known| (strsim::levenshtein(name, known), *known))
        .filter(|(distance, _)| *distance <= 3)
        .min()
        .map(|(_, known)| known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        assert_eq!(format!("{:?}", Secret::new("sk_live_abc")), "sk_live_****");
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "****");
        assert_eq!(
            mask_url("postgres://app:s3cret@db:5432/d2c"),
            "postgres://app:****@db:5432/d2c"
        );
        assert_eq!(
            mask_url("postgres://postgres@127.0.0.1/d2c"),
            "postgres://postgres@127.0.0.1/d2c"
        );
    }

    #[test]
    fn unknown_variables_are_named_with_the_closest_known_one() {
        let names = [
            "D2C_SESION_TIMEOUT_MS",
            "D2C_KAFKA_BROKERS",
            "D2C_KAFKA__SECURITY_PROTOCOL",
            "PATH",
            "D2C_WHATEVER_ELSE_ENTIRELY",
        ]
        .map(std::ffi::OsString::from);
        assert_eq!(
            unknown_variables(names.into_iter()),
            [
                "D2C_SESION_TIMEOUT_MS (did you mean D2C_SESSION_TIMEOUT_MS?)",
                "D2C_WHATEVER_ELSE_ENTIRELY",
            ]
        );
    }

    /// The list is the names the sources use, no more and no fewer.
    #[test]
    fn the_known_list_is_what_the_sources_read() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = std::collections::BTreeSet::new();
        collect_names(&root, &mut found);
        for fixture in [
            "D2C_X",
            "D2C_SESION_TIMEOUT_MS",
            "D2C_WHATEVER_ELSE_ENTIRELY",
        ] {
            found.remove(fixture);
        }
        let known: std::collections::BTreeSet<String> = KNOWN_VARIABLES
            .iter()
            .map(|name| name.to_string())
            .collect();
        let missing: Vec<_> = found.difference(&known).collect();
        let unused: Vec<_> = known.difference(&found).collect();
        assert!(missing.is_empty(), "add to KNOWN_VARIABLES: {missing:?}");
        assert!(unused.is_empty(), "no source reads these: {unused:?}");
    }

    fn collect_names(dir: &std::path::Path, found: &mut std::collections::BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    collect_names(&path, found);
                }
                continue;
            }
            let source = name.ends_with(".rs")
                || name.ends_with(".sh")
                || name.ends_with(".yaml")
                || name.ends_with(".tpl")
                || name == "dev";
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if !source {
                continue;
            }
            let bytes = text.as_bytes();
            let mut at = 0;
            while let Some(offset) = text[at..].find("D2C_") {
                let start = at + offset;
                let end = start
                    + text[start..]
                        .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                        .unwrap_or(text.len() - start);
                let preceded = start > 0
                    && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
                let raw = &text[start..end];
                let passthrough = raw.starts_with(crate::kafka::PASSTHROUGH_PREFIX);
                // `D2C_DEADLINE_*` in prose names a family, not a variable.
                let family = raw.ends_with('_');
                if !preceded && !passthrough && !family && raw.len() > 4 {
                    found.insert(raw.to_owned());
                }
                at = end.max(start + 4);
            }
        }
    }
}
