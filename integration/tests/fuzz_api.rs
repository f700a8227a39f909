//! schemathesis against `/openapi.json` of a running platform: generated
//! requests for every documented route, as a logged-in customer and as an
//! operator, find no 5xx, no response that breaks the documented schema or
//! status codes, and no schema-invalid request that is accepted.
//!
//! schemathesis comes from PyPI; `./dev test` installs it into a venv and
//! names it in `D2C_SCHEMATHESIS`. Without it the test fails and says so.

use d2c_integration::app::TestApp;
use d2c_integration::customer::TEST_ADMIN_TOKEN;
use std::process::Command;
use std::time::Duration;

/// Generated cases per operation and phase; small, so the run stays about a
/// minute while every route and error shape is still exercised.
const MAX_EXAMPLES: &str = "25";

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_schema_conformance,response_headers_conformance,negative_data_rejection";

fn schemathesis() -> String {
    std::env::var("D2C_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_owned())
}

/// One schemathesis run over the operations `filter` selects, sending
/// `authorization`; Err with its report when it finds anything.
fn run_schemathesis(
    schema_url: &str,
    authorization: &str,
    filter: &[&str],
    name: &str,
) -> Result<String, String> {
    let output = Command::new(schemathesis())
        .args(["--no-color", "run"])
        .arg(schema_url)
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: Hypothesis's lambda-source cache is not thread-safe (a
        // "recursion depth mismatch" internal error with two).
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        .args(["--seed", "20261201"])
        .args(["--suppress-health-check", "too_slow,filter_too_much"])
        .args(["--header", &format!("Authorization: {authorization}")])
        .args(["--generation-database", "none"])
        .args(filter)
        .current_dir(std::env::temp_dir())
        .output()
        .map_err(|error| {
            format!(
                "{} is not runnable ({error}): ./dev test installs it from PyPI \
                 into a venv and sets D2C_SCHEMATHESIS",
                schemathesis()
            )
        })?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(report)
    } else {
        Err(format!("schemathesis ({name}) found problems:\n{report}"))
    }
}

fn summary(report: &str) -> String {
    report
        .lines()
        .filter(|line| {
            line.contains("passed") || line.contains("Test cases") || line.contains("operations")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let shop = TestApp::full(1, 3_000).await.expect("storefront");
    let email = "fuzz@example.com";
    let password = "a long enough password";
    let anonymous = shop.anonymous();
    let (status, body) = anonymous.register(email, password).await.expect("register");
    assert_eq!(status, 201, "{body}");
    let (status, body) = anonymous.login(email, password).await.expect("login");
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().expect("token").to_owned();
    shop.stock_sku("SKU-1", 1_000).await.expect("stock");

    let schema_url = shop.url("/openapi.json");
    let customer = format!("Bearer {token}");
    let admin = format!("Bearer {TEST_ADMIN_TOKEN}");
    let runs = tokio::task::spawn_blocking(move || {
        let customer_run = run_schemathesis(
            &schema_url,
            &customer,
            &["--exclude-path-regex", "^/admin/"],
            "customer routes",
        );
        let admin_run = run_schemathesis(
            &schema_url,
            &admin,
            &["--include-path-regex", "^/admin/"],
            "admin routes",
        );
        (customer_run, admin_run)
    });
    let (customer_run, admin_run) = tokio::time::timeout(Duration::from_secs(600), runs)
        .await
        .expect("schemathesis ends within 10 minutes")
        .expect("schemathesis task");
    let mut problems = Vec::new();
    for run in [customer_run, admin_run] {
        match run {
            Ok(report) => eprintln!("{}", summary(&report)),
            Err(problem) => problems.push(problem),
        }
    }
    if !problems.is_empty() {
        shop.platform.print_logs();
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
