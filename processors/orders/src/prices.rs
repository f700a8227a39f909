//! Prices come from the catalog, never from the client.
//!
//! Each orders instance keeps the catalog's current offer per SKU in memory,
//! fed from every partition of `catalog.events` (a global table: the topic
//! is compacted and every event carries the whole product, so reading it
//! from the beginning rebuilds the catalog as it stands). Pricing a line is a
//! local lookup: no remote call, no lock held across partitions.
//!
//! A product's events may be read in any order relative to other products,
//! but one product's events come from one partition, in order; a version
//! lower than the one held is still ignored, so the view never goes back.
//! A SKU this instance has not seen is confirmed against a caught-up table
//! before an order is refused for it, so a product created a moment ago is
//! priced.

use d2c_platform::global::{GlobalSink, GlobalTopic};
use d2c_proto::catalog::product_of_event;
use d2c_proto::catalog::v1::{Price, Product};
use d2c_proto::Envelope;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What the catalog says about one SKU now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub product_id: String,
    pub archived: bool,
    pub prices: Vec<Price>,
}

impl Offer {
    /// The unit price in `currency`, if the SKU is sold in it.
    pub fn price_in(&self, currency: &str) -> Option<i64> {
        self.prices
            .iter()
            .find(|price| price.currency == currency)
            .map(|price| price.amount_minor)
    }
}

/// Where the orders handler looks prices up.
pub trait PriceBook: Send + Sync + 'static {
    fn offer(&self, sku: &str) -> Option<Arc<Offer>>;
}

/// The catalog as its events tell it: the latest version of each product,
/// indexed by SKU.
#[derive(Debug, Default)]
pub struct CatalogView {
    inner: RwLock<View>,
}

#[derive(Debug, Default)]
struct View {
    /// product id → (version, its SKUs)
    products: HashMap<String, (i64, Vec<String>)>,
    skus: HashMap<String, Arc<Offer>>,
}

impl CatalogView {
    /// Takes `product` if it is newer than the version held.
    pub fn put(&self, product: &Product) {
        let mut view = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let held = view.products.get(&product.product_id).map(|(v, _)| *v);
        if held.is_some_and(|version| version >= product.version) {
            return;
        }
        let old_skus = view
            .products
            .remove(&product.product_id)
            .map(|(_, skus)| skus)
            .unwrap_or_default();
        for sku in old_skus {
            // Another product may have claimed the SKU since.
            if view
                .skus
                .get(&sku)
                .is_some_and(|offer| offer.product_id == product.product_id)
            {
                view.skus.remove(&sku);
            }
        }
        let mut skus = Vec::with_capacity(product.variants.len());
        for variant in &product.variants {
            skus.push(variant.sku.clone());
            view.skus.insert(
                variant.sku.clone(),
                Arc::new(Offer {
                    product_id: product.product_id.clone(),
                    archived: product.archived,
                    prices: variant.prices.clone(),
                }),
            );
        }
        view.products
            .insert(product.product_id.clone(), (product.version, skus));
    }

    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .skus
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PriceBook for CatalogView {
    fn offer(&self, sku: &str) -> Option<Arc<Offer>> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .skus
            .get(sku)
            .cloned()
    }
}

impl GlobalSink for CatalogView {
    fn apply(&self, envelope: &Envelope, payload: &[u8]) {
        match product_of_event(&envelope.message_type, payload) {
            Some(Ok(product)) => self.put(&product),
            Some(Err(error)) => {
                tracing::warn!(%error, message_type = %envelope.message_type, "Undecodable catalog event skipped")
            }
            None => {}
        }
    }
}

/// The view, fed by its global topic, confirming misses against it.
pub struct CatalogPrices {
    view: Arc<CatalogView>,
    feed: GlobalTopic,
    miss_wait: Duration,
}

impl CatalogPrices {
    pub fn new(view: Arc<CatalogView>, feed: GlobalTopic, miss_wait: Duration) -> Self {
        Self {
            view,
            feed,
            miss_wait,
        }
    }
}

impl PriceBook for CatalogPrices {
    fn offer(&self, sku: &str) -> Option<Arc<Offer>> {
        if let Some(offer) = self.view.offer(sku) {
            return Some(offer);
        }
        match self.feed.catch_up_blocking(self.miss_wait) {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                sku,
                topic = self.feed.topic(),
                "Catalog view still behind after the miss wait"
            ),
            Err(error) => tracing::warn!(%error, sku, "Catalog view not confirmed"),
        }
        self.view.offer(sku)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d2c_proto::catalog::v1::{ProductUpdated, Variant};
    use prost::Message;

    pub(crate) fn product(id: &str, version: i64, skus: &[(&str, i64)]) -> Product {
        Product {
            product_id: id.into(),
            version,
            variants: skus
                .iter()
                .map(|(sku, amount)| Variant {
                    sku: (*sku).into(),
                    prices: vec![Price {
                        currency: "EUR".into(),
                        amount_minor: *amount,
                    }],
                    ..Variant::default()
                })
                .collect(),
            ..Product::default()
        }
    }

    fn price(view: &CatalogView, sku: &str) -> Option<i64> {
        view.offer(sku).and_then(|offer| offer.price_in("EUR"))
    }

    #[test]
    fn the_latest_version_wins_whatever_the_order_read() {
        let view = CatalogView::default();
        view.put(&product("p-1", 2, &[("S-1", 250)]));
        view.put(&product("p-1", 1, &[("S-1", 100)]));
        assert_eq!(price(&view, "S-1"), Some(250));
        view.put(&product("p-1", 3, &[("S-1", 300)]));
        assert_eq!(price(&view, "S-1"), Some(300));
    }

    #[test]
    fn a_variant_removed_from_its_product_is_no_longer_priced() {
        let view = CatalogView::default();
        view.put(&product("p-1", 1, &[("S-1", 100), ("S-2", 200)]));
        view.put(&product("p-1", 2, &[("S-1", 100)]));
        assert_eq!(price(&view, "S-2"), None);
        assert_eq!(view.len(), 1);
    }

    #[test]
    fn archiving_keeps_the_sku_known_but_marked() {
        let view = CatalogView::default();
        view.put(&product("p-1", 1, &[("S-1", 100)]));
        let mut archived = product("p-1", 2, &[("S-1", 100)]);
        archived.archived = true;
        view.put(&archived);
        assert!(view.offer("S-1").expect("known").archived);
    }

    #[test]
    fn events_feed_the_view_and_other_messages_are_ignored() {
        let view = CatalogView::default();
        let event = ProductUpdated {
            product: Some(product("p-1", 1, &[("S-1", 100)])),
        };
        let mut envelope = Envelope::new(
            "d2c.catalog.v1.ProductCreated".into(),
            uuid::Uuid::from_u128(1),
            1,
        );
        view.apply(&envelope, &event.encode_to_vec());
        assert_eq!(price(&view, "S-1"), Some(100));
        envelope.message_type = "d2c.catalog.v1.Something".into();
        view.apply(&envelope, b"\xff\xff");
        assert_eq!(view.len(), 1);
    }
}
