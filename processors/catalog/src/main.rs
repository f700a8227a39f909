#[tokio::main]
async fn main() -> anyhow::Result<()> {
    d2c_catalog::processor().run().await
}
