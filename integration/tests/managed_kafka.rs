//! A managed Kafka needs client properties this code cannot guess (SASL,
//! TLS). The suite's broker also listens with SASL/PLAIN credentials
//! (`kafka/broker`, D2C_KAFKA_SASL_PORT); services given only that listener
//! and the credentials as `D2C_KAFKA__*` variables must work end to end, and
//! must never print the password.

use d2c_integration::app::Api;
use d2c_integration::customer;
use d2c_integration::harness::Platform;
use serde_json::json;
use std::time::Duration;

const PASSWORD: &str = "d2c-secret";

/// The SASL listener of the suite's broker (`./dev test` sets it).
fn sasl_brokers() -> String {
    std::env::var("D2C_KAFKA_SASL_BROKERS").unwrap_or_else(|_| "127.0.0.1:19094".into())
}

fn sasl_env(password: &str) -> Vec<(&'static str, String)> {
    vec![
        ("D2C_KAFKA_BROKERS", sasl_brokers()),
        ("D2C_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT".into()),
        ("D2C_KAFKA__SASL_MECHANISMS", "PLAIN".into()),
        ("D2C_KAFKA__SASL_USERNAME", "d2c".into()),
        ("D2C_KAFKA__SASL_PASSWORD", password.into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reach_kafka_through_passed_through_sasl_properties() {
    let platform = Platform::new(&["orders", "inventory", "payments", "catalog", "gateway"])
        .await
        .expect("platform")
        .with_env(&sasl_env(PASSWORD));
    let started = tokio::try_join!(
        platform.orders_ready("orders"),
        platform.processor_ready("inventory", "inventory", &[]),
        platform.processor_ready("payments", "payments", &[]),
        platform.processor_ready("catalog", "catalog", &[]),
        platform.gateway_ready("gateway", 0, 15_000),
    );
    let (orders, inventory, payments, catalog, gateway) = match started {
        Ok(services) => services,
        Err(error) => {
            platform.print_logs();
            panic!("services on the SASL listener: {error:#}");
        }
    };
    Api::new(customer::admin_client(), gateway.url(""))
        .stock_sku("SASL-1", 10)
        .await
        .expect("stock set");
    let (status, body) = Api::new(customer::client("sasl-customer"), gateway.url(""))
        .place_order(
            "sasl-1",
            &json!({
                "currency": "EUR",
                "payment_method": "pm_card_visa",
                "lines": [{"sku": "SASL-1", "quantity": 1, "unit_price_minor": 1000}]
            }),
        )
        .await
        .expect("gateway answers");
    assert_eq!(status, 201, "{body}");

    for service in [&orders, &inventory, &payments, &catalog, &gateway] {
        let log = service.log_tail(400);
        assert!(
            log.contains("sasl.password"),
            "the printed config names the passed-through properties:\n{log}"
        );
        assert!(
            !log.contains(PASSWORD),
            "the SASL password was printed:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_keeps_a_service_from_becoming_ready() {
    let platform = Platform::new(&["orders"])
        .await
        .expect("platform")
        .with_env(&sasl_env("not-the-password"));
    let orders = platform.orders("orders").await.expect("orders starts");
    let ready = orders.wait_ready(Duration::from_secs(8)).await;
    assert!(
        ready.is_err(),
        "a processor with a wrong SASL password must not report ready"
    );
}
