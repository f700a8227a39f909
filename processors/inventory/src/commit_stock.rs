//! CommitStock (saga, from orders): the order is confirmed; its reserved
//! units are sold (they leave on hand).

use crate::table::{
    add, check_ids, record_change, stock_or_empty, sub, InventoryRead, InventoryWrite,
};
use d2c_proto::inventory::v1::{stock_changed::Reason, CommitStock, ReservationStatus};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;

pub fn apply(
    state: &dyn StateRead,
    command: CommitStock,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    check_ids("CommitStock", &command.order_id, &command.sku)?;
    let sku = &command.sku;
    let Some(mut reservation) = state.reservation(sku, &command.order_id)? else {
        return Ok(());
    };
    if reservation.status != ReservationStatus::Reserved as i32 {
        // Committed already (a retry), refused or released: nothing to do.
        return Ok(());
    }
    let quantity = reservation.quantity;
    let mut stock = stock_or_empty(state, sku)?;
    stock.reserved = sub(sku, "reserved", stock.reserved, quantity)?;
    stock.on_hand = sub(sku, "on_hand", stock.on_hand, quantity)?;
    stock.sold = add(sku, "sold", stock.sold, quantity)?;
    reservation.status = ReservationStatus::Committed as i32;
    effects.put_reservation(&reservation);
    record_change(
        effects,
        &stock,
        Reason::Committed,
        &command.order_id,
        quantity,
    );
    Ok(())
}
