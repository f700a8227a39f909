//! SetStock (admin): set the units on hand of a SKU.

use crate::reply::{check_sku, level_reply, rejected};
use crate::table::{record_change, stock_or_empty};
use d2c_proto::common::v1::rejection::Code;
use d2c_proto::inventory::v1::{stock_changed::Reason, SetStock, StockReply};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;

pub fn apply(
    state: &dyn StateRead,
    command: SetStock,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let reply = set(state, &command, effects)?;
    effects.reply(&command.sku, &reply);
    Ok(())
}

/// Applies the command; the answer is the new level or a rejection.
fn set(
    state: &dyn StateRead,
    command: &SetStock,
    effects: &mut Effects,
) -> Result<StockReply, HandlerError> {
    if let Err(rejection) = check_sku(&command.sku) {
        return Ok(rejection);
    }
    if command.on_hand < 0 {
        return Ok(rejected(
            Code::Invalid,
            "on_hand",
            "on_hand cannot be negative",
        ));
    }
    let mut record = stock_or_empty(state, &command.sku)?;
    if command.on_hand < record.reserved {
        return Ok(rejected(
            Code::Conflict,
            "on_hand",
            format!(
                "on_hand cannot be set below the {} units reserved",
                record.reserved
            ),
        ));
    }
    if command.on_hand.checked_add(record.sold).is_none() {
        return Ok(rejected(Code::Invalid, "on_hand", "on_hand is too large"));
    }
    // Both are >= 0, so the difference cannot overflow.
    let change = command.on_hand - record.on_hand;
    record.on_hand = command.on_hand;
    record_change(effects, &record, Reason::Set, "", change);
    Ok(level_reply(&record))
}
