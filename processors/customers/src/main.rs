use d2c_customers::{CustomersHandler, DEFAULT_ADMIN_PORT, SERVICE};
use d2c_runtime::ProcessorSpec;
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    d2c_runtime::run(
        ProcessorSpec {
            service: SERVICE,
            default_admin_port: DEFAULT_ADMIN_PORT,
        },
        Arc::new(CustomersHandler),
    )
    .await
}
