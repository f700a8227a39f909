//! The gateway's local catalog cache, kept coherent through `catalog.events`.
//!
//! Three caches (moka, bounded, TinyLFU):
//! - products by id, filled from the catalog processor's answers and from
//!   catalog events. An entry only ever moves to a higher version, so a
//!   slow answer carrying an older version cannot overwrite what an event
//!   already brought;
//! - products by SKU (cart prices), from the read side, with a TTL as a
//!   safety net behind the events;
//! - search result pages, from the read side, with a short TTL.
//!
//! Every gateway instance reads every partition of `catalog.events` (no
//! consumer group: each instance needs every event), and follows partitions
//! added later. A product event puts
//! the new version in place and clears the SKU and search caches, whose
//! entries an event cannot address one by one. The read side may apply an
//! event a moment after this instance saw it, so a search page refilled in
//! that moment can be stale; the search TTL bounds that.

use crate::metrics::GATEWAY_METRICS;
use bytes::Bytes;
use d2c_platform::global::{GlobalSink, GlobalTopic, GlobalTopicSettings};
use d2c_proto::catalog::product_of_event;
use d2c_proto::catalog::v1::Product;
use d2c_proto::Envelope;
use moka::future::Cache;
use moka::ops::compute::Op;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Sizes and lifetimes (see the gateway config).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub enabled: bool,
    pub products: u64,
    pub searches: u64,
    pub search_ttl: Duration,
    /// A SKU's product (its price) lives at most this long: events evict
    /// it at once, this bounds an event missed while the feed reconnects.
    pub sku_ttl: Duration,
}

pub struct CatalogCache {
    enabled: bool,
    products: Cache<String, Arc<Product>>,
    skus: Cache<String, Arc<Product>>,
    searches: Cache<String, Bytes>,
}

impl CatalogCache {
    pub fn new(settings: &CacheSettings) -> Arc<Self> {
        Arc::new(Self {
            enabled: settings.enabled,
            products: Cache::new(settings.products),
            skus: Cache::builder()
                .max_capacity(settings.products)
                .time_to_live(settings.sku_ttl)
                .build(),
            searches: Cache::builder()
                .max_capacity(settings.searches)
                .time_to_live(settings.search_ttl)
                .build(),
        })
    }

    /// The product `product_id`, from the cache or else from `load` (whose
    /// answer is then cached). `load` answering `Ok(None)` is not cached:
    /// the product may be created at any moment.
    pub async fn product<E, F>(&self, product_id: &str, load: F) -> Result<Option<Arc<Product>>, E>
    where
        F: Future<Output = Result<Option<Product>, E>>,
    {
        if self.enabled {
            if let Some(product) = self.products.get(product_id).await {
                observe("products", true);
                return Ok(Some(product));
            }
            observe("products", false);
        }
        let Some(product) = load.await? else {
            return Ok(None);
        };
        let product = Arc::new(product);
        if self.enabled {
            self.put_newer(Arc::clone(&product)).await;
        }
        Ok(Some(product))
    }

    /// The current product that sells `sku`, through the SKU cache.
    pub async fn product_by_sku<E, F>(&self, sku: &str, load: F) -> Result<Option<Arc<Product>>, E>
    where
        F: Future<Output = Result<Option<Product>, E>>,
    {
        if self.enabled {
            if let Some(product) = self.skus.get(sku).await {
                observe("skus", true);
                return Ok(Some(product));
            }
            observe("skus", false);
        }
        let Some(product) = load.await? else {
            return Ok(None);
        };
        let product = Arc::new(product);
        if self.enabled {
            self.skus.insert(sku.to_owned(), Arc::clone(&product)).await;
        }
        Ok(Some(product))
    }

    /// A search page (its JSON body) under its canonical key. Requests
    /// that miss the same key together share one load: when a popular page
    /// expires under load, the read side sees one query for it, not one per
    /// request (at 2,000 searches/s those misses alone held every pooled
    /// connection and the gateway answered 503). A failed load is not
    /// cached; each waiter gets its error.
    pub async fn search<E, F>(&self, key: &str, load: F) -> Result<Bytes, E>
    where
        E: Clone + Send + Sync + 'static,
        F: Future<Output = Result<Bytes, E>>,
    {
        if !self.enabled {
            return load.await;
        }
        if let Some(page) = self.searches.get(key).await {
            observe("searches", true);
            return Ok(page);
        }
        observe("searches", false);
        self.searches
            .try_get_with_by_ref(key, load)
            .await
            .map_err(|shared| E::clone(&shared))
    }

    /// A catalog event: the product's new version replaces an older one,
    /// and every SKU and search entry goes.
    pub async fn apply(&self, product: Product) {
        self.put_newer(Arc::new(product)).await;
        self.skus.invalidate_all();
        self.searches.invalidate_all();
        GATEWAY_METRICS.cache_invalidations.inc();
    }

    /// A product version this instance learnt of (e.g. an admin's write).
    pub async fn remember(&self, product: Product) {
        if self.enabled {
            self.put_newer(Arc::new(product)).await;
        }
    }

    async fn put_newer(&self, product: Arc<Product>) {
        let version = product.version;
        self.products
            .entry(product.product_id.clone())
            .and_compute_with(|existing| {
                let newer = existing.is_none_or(|entry| entry.value().version < version);
                std::future::ready(if newer { Op::Put(product) } else { Op::Nop })
            })
            .await;
    }
}

fn observe(cache: &str, hit: bool) {
    GATEWAY_METRICS
        .cache_requests
        .with_label_values(&[cache, if hit { "hit" } else { "miss" }])
        .inc();
}

/// The client id of the catalog event consumer, and its lag's `group` label.
pub const CATALOG_CONSUMER: &str = "gateway-catalog";

/// Reads every partition of `topic` (catalog events) from its current end,
/// and every partition added later from its beginning, and applies each
/// product event to `cache`. Returns once assigned, with `assigned` set, so
/// an update made after start-up is never missed. The feed stops when the
/// returned value is dropped.
pub fn start_catalog_listener(
    settings: GlobalTopicSettings,
    cache: Arc<CatalogCache>,
    assigned: Arc<AtomicBool>,
) -> Result<GlobalTopic, rdkafka::error::KafkaError> {
    let sink = Arc::new(CacheFeed {
        cache,
        runtime: tokio::runtime::Handle::current(),
    });
    let feed = GlobalTopic::start(settings, sink)?;
    assigned.store(true, Ordering::Release);
    Ok(feed)
}

/// Applies catalog events to the cache from the feed's own thread.
struct CacheFeed {
    cache: Arc<CatalogCache>,
    runtime: tokio::runtime::Handle,
}

impl GlobalSink for CacheFeed {
    fn apply(&self, envelope: &Envelope, payload: &[u8]) {
        match product_of_event(&envelope.message_type, payload) {
            Some(Ok(product)) => self.runtime.block_on(self.cache.apply(product)),
            Some(Err(error)) => {
                tracing::warn!(%error, message_type = %envelope.message_type, "Undecodable catalog event")
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CacheSettings {
        CacheSettings {
            enabled: true,
            products: 100,
            searches: 100,
            search_ttl: Duration::from_secs(60),
            sku_ttl: Duration::from_secs(60),
        }
    }

    fn product(version: i64) -> Product {
        Product {
            product_id: "p-1".into(),
            name: format!("v{version}"),
            version,
            ..Product::default()
        }
    }

    async fn cached_version(cache: &CatalogCache) -> i64 {
        cache
            .product("p-1", async { Err::<Option<Product>, ()>(()) })
            .await
            .expect("cached")
            .expect("present")
            .version
    }

    #[tokio::test]
    async fn entries_only_move_to_newer_versions() {
        let cache = CatalogCache::new(&settings());
        let loaded = cache
            .product("p-1", async { Ok::<_, ()>(Some(product(2))) })
            .await
            .expect("loaded");
        assert_eq!(loaded.map(|p| p.version), Some(2));
        cache.apply(product(3)).await;
        assert_eq!(cached_version(&cache).await, 3);
        // A late event or answer with an older version changes nothing.
        cache.apply(product(1)).await;
        assert_eq!(cached_version(&cache).await, 3);
    }

    #[tokio::test]
    async fn events_clear_searches_and_skus() {
        let cache = CatalogCache::new(&settings());
        let page =
            |body: &'static str| async move { Ok::<_, ()>(Bytes::from_static(body.as_bytes())) };
        assert_eq!(
            cache.search("q=a", page("one")).await,
            Ok(Bytes::from_static(b"one"))
        );
        assert_eq!(
            cache.search("q=a", page("two")).await,
            Ok(Bytes::from_static(b"one"))
        );
        cache
            .product_by_sku("S-1", async { Ok::<_, ()>(Some(product(1))) })
            .await
            .expect("loaded");
        cache.apply(product(2)).await;
        assert_eq!(
            cache.search("q=a", page("two")).await,
            Ok(Bytes::from_static(b"two"))
        );
        let reloaded = cache
            .product_by_sku("S-1", async { Ok::<_, ()>(Some(product(2))) })
            .await
            .expect("loaded");
        assert_eq!(reloaded.map(|p| p.version), Some(2));
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_search_share_one_load() {
        let cache = CatalogCache::new(&settings());
        let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let requests = (0..50).map(|_| {
            let loads = Arc::clone(&loads);
            let cache = Arc::clone(&cache);
            async move {
                cache
                    .search("q=a", async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, ()>(Bytes::from_static(b"page"))
                    })
                    .await
            }
        });
        let pages = futures::future::join_all(requests).await;
        assert!(pages
            .iter()
            .all(|page| page == &Ok(Bytes::from_static(b"page"))));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_search_is_not_cached() {
        let cache = CatalogCache::new(&settings());
        let failed = cache
            .search("q=a", async { Err::<Bytes, &str>("down") })
            .await;
        assert_eq!(failed, Err("down"));
        let page = cache
            .search("q=a", async { Ok::<_, &str>(Bytes::from_static(b"page")) })
            .await;
        assert_eq!(page, Ok(Bytes::from_static(b"page")));
    }

    #[tokio::test]
    async fn a_disabled_cache_always_loads() {
        let cache = CatalogCache::new(&CacheSettings {
            enabled: false,
            ..settings()
        });
        cache
            .product("p-1", async { Ok::<_, ()>(Some(product(1))) })
            .await
            .expect("loaded");
        let missing = cache
            .product("p-1", async { Ok::<Option<Product>, ()>(None) })
            .await
            .expect("loaded");
        assert!(missing.is_none());
    }
}
