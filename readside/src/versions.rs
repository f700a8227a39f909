//! Products are versioned by insert (one row of `product_versions` per
//! version the catalog published); every read takes each product's latest.

/// A version (aliased `p`) is the latest when no newer version of its
/// product exists (an anti-join on the primary key).
pub(crate) const IS_LATEST: &str = "NOT EXISTS (SELECT 1 FROM product_versions newer \
     WHERE newer.product_id = p.product_id AND newer.version > p.version)";
