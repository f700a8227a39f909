//! The inventory processor: owns the stock of each SKU (keyed by SKU) and the
//! reservations the orders saga holds on it. Handlers are pure: state and
//! message in, effects out.
//!
//! Everything about one SKU arrives on `inventory.messages` keyed by SKU, so
//! one worker owns each SKU and overselling cannot happen. Per SKU the stock
//! record keeps these invariants after every message:
//!
//! ```text
//!   0 <= reserved <= on_hand        available = on_hand - reserved
//!   sold >= 0                       on_hand + sold fits in an i64
//! ```
//!
//! Admin commands (answered with `StockReply` to the sender):
//!
//! - `SetStock` sets `on_hand`; refused (CONFLICT, field `on_hand`) below what
//!   is reserved.
//! - `AdjustStock` adds `delta` to `on_hand`, once per `adjustment_id` (a
//!   retry answers the current level and changes nothing); refused (CONFLICT,
//!   field `delta`) if `on_hand` would drop below `reserved` or overflow.
//! - `GetStock` answers the level; an unknown SKU is NOT_FOUND.
//!
//! Reservations, one per (SKU, order id), follow the saga commands of orders:
//!
//! ```text
//!                 ReserveStock, enough available
//!   (none) ────────────────────────────────────────▶ RESERVED ──CommitStock──▶ COMMITTED
//!     │ │                                               │                          │
//!     │ │ ReserveStock, not enough                      │ ReleaseStock             │ ReleaseStock
//!     │ └──────────────────────▶ REFUSED                ▼                          │
//!     │                                             RELEASED ◀─────────────────────┘
//!     │ ReleaseStock (before any ReserveStock)          ▲
//!     └────────────────────── tombstone, quantity 0 ────┘
//! ```
//!
//! | transition           | stock change (q = quantity)       | event on inventory.events |
//! |----------------------|-----------------------------------|---------------------------|
//! | (none) → RESERVED    | reserved += q                     | StockChanged RESERVED     |
//! | (none) → REFUSED     | none                              | StockRefused              |
//! | RESERVED → COMMITTED | reserved, on_hand -= q; sold += q | StockChanged COMMITTED    |
//! | RESERVED → RELEASED  | reserved -= q                     | StockChanged RELEASED     |
//! | COMMITTED → RELEASED | on_hand += q; sold -= q           | StockChanged RETURNED     |
//! | (none) → RELEASED    | none (tombstone, quantity 0)      | none                      |
//!
//! Every ReserveStock is answered with a `ReservationResult` on
//! `orders.messages` keyed by order id. A ReserveStock for a reservation that
//! exists already is a retry: it gets the answer decided the first time
//! (reserved unless REFUSED or a tombstone) and changes nothing. REFUSED and
//! RELEASED are final; any other command that finds no transition above is
//! ignored. The tombstone makes a ReleaseStock that overtakes its ReserveStock
//! final too: the late ReserveStock is answered `reserved = false`.
//! A reservation quantity below 1 is refused.
//!
//! Saga commands without an order id, or whose SKU is not one (1 to 64
//! letters, digits or `-_.:`, `d2c_proto::identifiers::Sku`, the rule the
//! gateway and the catalog apply too), are malformed and dead-lettered; the
//! admin commands answer such a SKU with INVALID.

pub mod adjust_stock;
pub mod commit_stock;
pub mod get_stock;
pub mod release_stock;
mod reply;
pub mod reserve_stock;
pub mod set_stock;
mod table;

#[cfg(test)]
mod inventory_tests;

pub use table::{level, InventoryRead, InventoryWrite};

use d2c_proto::inventory::v1::{
    AdjustStock, CommitStock, GetStock, ReleaseStock, ReserveStock, SetStock,
};
use d2c_runtime::router::Router;
use d2c_runtime::Processor;

pub const SERVICE: &str = "inventory";
/// Admin port (/health, /ready, /metrics) when D2C_ADMIN_ADDR is not set.
pub const DEFAULT_ADMIN_PORT: u16 = 9102;

/// The inventory processor, ready to run.
pub fn processor() -> Processor {
    Processor::new(SERVICE, DEFAULT_ADMIN_PORT).handler(handler())
}

/// Every command and query inventory handles, by type.
///
/// `SetStock` is an absolute set: applied again after an `AdjustStock`
/// it would undo the adjustment, so copies are dropped by message id.
pub fn handler() -> Router {
    Router::new(SERVICE)
        .dedupe()
        .on::<ReserveStock, _>(reserve_stock::apply)
        .on::<ReleaseStock, _>(release_stock::apply)
        .on::<CommitStock, _>(commit_stock::apply)
        .on::<SetStock, _>(set_stock::apply)
        .on::<AdjustStock, _>(adjust_stock::apply)
        .on::<GetStock, _>(get_stock::apply)
}
