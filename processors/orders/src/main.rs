use d2c_orders::deadlines::{millis_var, Deadlines};
use d2c_orders::prices::{CatalogPrices, CatalogView};
use d2c_orders::{handler, DEFAULT_ADMIN_PORT, SERVICE};
use d2c_platform::global::{GlobalTopic, GlobalTopicSettings, StartAt};
use d2c_runtime::{Handler, Processor, RuntimeConfig};
use d2c_topology::{topic, TopicNames};
use std::sync::Arc;
use std::time::Duration;

/// How long an order for a SKU this instance has not seen waits for the
/// catalog view to catch up before it is refused: a product created a
/// moment ago reaches the view within milliseconds, so this only bounds a
/// broker that does not answer.
const CATALOG_MISS_WAIT: Duration = Duration::from_secs(2);

/// How long a start may spend loading the catalog before giving up.
const CATALOG_LOAD_LIMIT: Duration = Duration::from_secs(300);

/// D2C_TICK_MS's default: how often deadlines are checked, so a step ends
/// at most this long after its deadline (deadlines are a minute or more).
/// Each tick is a batch on every owned partition; measured idle on the
/// 2-core box (release, 48 partitions, 30 s): the orders process took 3 % of
/// a core at 1 s, 1 % at 5 s.
const DEFAULT_TICK_MS: u64 = 5_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Processor::new(SERVICE, DEFAULT_ADMIN_PORT)
        .handler_built(with_catalog_prices)
        .run()
        .await
}

/// The handler, once this instance's catalog view is whole: an order must
/// never be refused because the view was still loading.
fn with_catalog_prices(
    config: &RuntimeConfig,
    names: &TopicNames,
) -> anyhow::Result<Arc<dyn Handler>> {
    // Configuration first: a bad value fails before the catalog loads.
    let deadlines = Deadlines::from_env().map_err(anyhow::Error::msg)?;
    let tick = millis_var("D2C_TICK_MS", Duration::from_millis(DEFAULT_TICK_MS))
        .map_err(anyhow::Error::msg)?;
    tracing::info!(?deadlines, ?tick, "Order deadlines");
    let view = Arc::new(CatalogView::default());
    let feed = GlobalTopic::start(
        GlobalTopicSettings {
            brokers: config.brokers.clone(),
            client_id: format!("{SERVICE}-catalog"),
            topic: names.name(topic::CATALOG_EVENTS),
            start: StartAt::Beginning,
            fetch_wait: config.fetch_wait,
            stats_interval: config.stats_interval,
            refresh: Duration::from_secs(10),
        },
        view.clone(),
    )?;
    feed.load(CATALOG_LOAD_LIMIT)?;
    tracing::info!(skus = view.len(), "Catalog prices loaded");
    let prices = CatalogPrices::new(view, feed, CATALOG_MISS_WAIT);
    d2c_orders::deadlines::configure(deadlines);
    Ok(Arc::new(handler(Arc::new(prices)).ticks(tick)))
}
