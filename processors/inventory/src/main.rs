#[tokio::main]
async fn main() -> anyhow::Result<()> {
    d2c_inventory::processor().run().await
}
