//! AdjustStock (admin): add or remove units on hand, once per adjustment id.

use crate::reply::{check_sku, level_reply, rejected};
use crate::table::{record_change, stock_or_empty, InventoryRead, InventoryWrite};
use d2c_proto::common::v1::rejection::Code;
use d2c_proto::inventory::v1::{stock_changed::Reason, AdjustStock, StockReply};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;

pub fn apply(
    state: &dyn StateRead,
    command: AdjustStock,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let reply = adjust(state, &command, effects)?;
    effects.reply(&command.sku, &reply);
    Ok(())
}

/// Applies the command; the answer is the level after it (or as it stands,
/// for a retry) or a rejection. A refused adjustment is not recorded: sent
/// again, it is judged again.
fn adjust(
    state: &dyn StateRead,
    command: &AdjustStock,
    effects: &mut Effects,
) -> Result<StockReply, HandlerError> {
    if let Err(rejection) = check_sku(&command.sku) {
        return Ok(rejection);
    }
    if command.adjustment_id.is_empty() {
        return Ok(rejected(
            Code::Invalid,
            "adjustment_id",
            "adjustment_id is required",
        ));
    }
    let mut record = stock_or_empty(state, &command.sku)?;
    if state.adjustment_applied(&command.sku, &command.adjustment_id)? {
        return Ok(level_reply(&record));
    }
    let on_hand = command
        .delta
        .checked_add(record.on_hand)
        .filter(|on_hand| *on_hand >= record.reserved)
        .filter(|on_hand| on_hand.checked_add(record.sold).is_some());
    let Some(on_hand) = on_hand else {
        return Ok(rejected(
            Code::Conflict,
            "delta",
            format!(
                "on_hand {} + delta {} would fall below the {} units reserved or overflow",
                record.on_hand, command.delta, record.reserved
            ),
        ));
    };
    record.on_hand = on_hand;
    effects.put_adjustment(&command.sku, &command.adjustment_id);
    record_change(effects, &record, Reason::Adjusted, "", command.delta);
    Ok(level_reply(&record))
}
