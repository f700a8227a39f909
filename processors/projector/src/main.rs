#[tokio::main]
async fn main() -> anyhow::Result<()> {
    d2c_projector::run().await?;
    Ok(())
}
