//! GetStock: a query answered by the partition that owns the SKU.

use crate::reply::{level_reply, rejected};
use crate::table::InventoryRead;
use d2c_proto::common::v1::rejection::Code;
use d2c_proto::inventory::v1::GetStock;
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;

pub fn apply(
    state: &dyn StateRead,
    query: GetStock,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let known = if d2c_proto::identifiers::is_identifier(&query.sku) {
        state.stock(&query.sku)?
    } else {
        None
    };
    let reply = match known {
        Some(record) => level_reply(&record),
        None => rejected(
            Code::NotFound,
            "sku",
            format!("sku {} has no stock record", query.sku),
        ),
    };
    effects.reply(&query.sku, &reply);
    Ok(())
}
