#[tokio::main]
async fn main() -> anyhow::Result<()> {
    d2c_customers::processor().run().await
}
