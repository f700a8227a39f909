//! ReleaseStock (saga, from orders): the order failed or was cancelled; give
//! back what its reservation holds, or return committed units to on hand.

use crate::table::{
    add, check_ids, record_change, stock_or_empty, sub, InventoryRead, InventoryWrite,
};
use d2c_proto::inventory::v1::{
    stock_changed::Reason, ReleaseStock, ReservationRecord, ReservationStatus,
};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;

pub fn apply(
    state: &dyn StateRead,
    command: ReleaseStock,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    check_ids("ReleaseStock", &command.order_id, &command.sku)?;
    let sku = &command.sku;
    let Some(mut reservation) = state.reservation(sku, &command.order_id)? else {
        // Released before it was reserved (the saga's messages overtook each
        // other): leave a tombstone so the late ReserveStock holds nothing.
        effects.put_reservation(&ReservationRecord {
            order_id: command.order_id.clone(),
            sku: sku.clone(),
            quantity: 0,
            status: ReservationStatus::Released as i32,
            available_when_refused: 0,
        });
        return Ok(());
    };
    let quantity = reservation.quantity;
    let mut stock = stock_or_empty(state, sku)?;
    let reason = match ReservationStatus::try_from(reservation.status).unwrap_or_default() {
        ReservationStatus::Reserved => {
            stock.reserved = sub(sku, "reserved", stock.reserved, quantity)?;
            Reason::Released
        }
        ReservationStatus::Committed => {
            stock.sold = sub(sku, "sold", stock.sold, quantity)?;
            stock.on_hand = add(sku, "on_hand", stock.on_hand, quantity)?;
            Reason::Returned
        }
        // Refused or released already: nothing is held.
        _ => return Ok(()),
    };
    reservation.status = ReservationStatus::Released as i32;
    effects.put_reservation(&reservation);
    record_change(effects, &stock, reason, &command.order_id, quantity);
    Ok(())
}
