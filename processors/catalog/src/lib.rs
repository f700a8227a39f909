//! The catalog processor: owns the products (keyed by product id), their
//! variants (one per SKU) and prices. Handlers are pure: state and message
//! in, effects out. Time is the envelope's sent-at, never a clock, so a
//! replay repeats the same effects.
//!
//! Everything about one product arrives on `catalog.messages` keyed by
//! product id, so one worker owns each product. Every command and query is
//! answered with a `ProductReply` to the sender; every change is announced
//! on `catalog.events`, keyed by product id.
//!
//! ```text
//!              CreateProduct                 ArchiveProduct
//!   (none) ─────────────────▶ ACTIVE ─────────────────────────▶ ARCHIVED
//!                             │   ▲                              (final)
//!                             └───┘ UpdateProduct
//! ```
//!
//! | command        | refused with                                     | change                        | event           |
//! |----------------|--------------------------------------------------|-------------------------------|-----------------|
//! | CreateProduct  | INVALID (field named); CONFLICT if the id exists with other content | version 1 | ProductCreated  |
//! | UpdateProduct  | INVALID; NOT_FOUND; CONFLICT if `expected_version` (0 = any) differs; ILLEGAL_TRANSITION if archived | content replaced, version + 1 | ProductUpdated |
//! | ArchiveProduct | INVALID; NOT_FOUND                               | archived, version + 1 (first time only) | ProductArchived (first time only) |
//! | GetProduct     | NOT_FOUND                                        | none                          | none            |
//!
//! A CreateProduct for an existing id with identical content is a retry: it
//! is answered with the stored product and changes nothing. A second
//! ArchiveProduct likewise answers the archived product.
//!
//! Content rules (see [`content`]): `product_id`, `category` and every SKU are
//! identifiers (1 to 64 letters, digits or `-_.:`); `name` has 1 to 200
//! characters; there is at least one variant and a SKU appears once per
//! product; a price's currency is three upper-case letters, its amount is
//! between 0 and 100,000,000 minor units, and a variant has at most one price
//! per currency. A refusal names the field, e.g. `variants[1].prices[0].currency`.

pub mod archive_product;
pub mod content;
pub mod create_product;
pub mod get_product;
mod reply;
mod table;
pub mod update_product;

#[cfg(test)]
mod catalog_tests;

pub use table::{CatalogRead, CatalogWrite};

use d2c_proto::catalog::v1::{ArchiveProduct, CreateProduct, GetProduct, UpdateProduct};
use d2c_runtime::router::Router;
use d2c_runtime::Processor;

pub const SERVICE: &str = "catalog";
/// Admin port (/health, /ready, /metrics) when D2C_ADMIN_ADDR is not set.
pub const DEFAULT_ADMIN_PORT: u16 = 9104;

/// The catalog processor, ready to run.
pub fn processor() -> Processor {
    Processor::new(SERVICE, DEFAULT_ADMIN_PORT).handler(handler())
}

/// Every command and query catalog handles, by type.
///
/// `UpdateProduct` without an expected version bumps the version each
/// time it is applied, so copies are dropped by message id.
pub fn handler() -> Router {
    Router::new(SERVICE)
        .dedupe()
        .on::<CreateProduct, _>(create_product::apply)
        .on::<UpdateProduct, _>(update_product::apply)
        .on::<ArchiveProduct, _>(archive_product::apply)
        .on::<GetProduct, _>(get_product::apply)
}
