//! ReserveStock (saga, from orders): hold units of a SKU for an order, or
//! refuse; either way answer orders on orders.messages, keyed by order id.

use crate::table::{
    add, check_ids, corrupt, record_change, stock_or_empty, sub, InventoryRead, InventoryWrite,
};
use d2c_proto::inventory::v1::{
    stock_changed::Reason, ReservationRecord, ReservationResult, ReservationStatus, ReserveStock,
    StockRefused,
};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub fn apply(
    state: &dyn StateRead,
    command: ReserveStock,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    check_ids("ReserveStock", &command.order_id, &command.sku)?;
    let result = match state.reservation(&command.sku, &command.order_id)? {
        Some(existing) => answer_again(&existing, &command)?,
        None => decide(state, &command, effects)?,
    };
    effects.send(topic::ORDERS_MESSAGES, &command.order_id, &result);
    Ok(())
}

/// A new reservation: hold the units if enough are available, else refuse.
/// Both outcomes are recorded, so that a retry gets the same answer.
fn decide(
    state: &dyn StateRead,
    command: &ReserveStock,
    effects: &mut Effects,
) -> Result<ReservationResult, HandlerError> {
    let sku = &command.sku;
    let mut stock = stock_or_empty(state, sku)?;
    let available = sub(sku, "available", stock.on_hand, stock.reserved)?;
    let reserved = command.quantity > 0 && available >= command.quantity;
    if reserved {
        stock.reserved = add(sku, "reserved", stock.reserved, command.quantity)?;
        effects.put_reservation(&ReservationRecord {
            order_id: command.order_id.clone(),
            sku: sku.clone(),
            quantity: command.quantity,
            status: ReservationStatus::Reserved as i32,
            available_when_refused: 0,
        });
        record_change(
            effects,
            &stock,
            Reason::Reserved,
            &command.order_id,
            command.quantity,
        );
    } else {
        effects.put_reservation(&ReservationRecord {
            order_id: command.order_id.clone(),
            sku: sku.clone(),
            quantity: command.quantity,
            status: ReservationStatus::Refused as i32,
            available_when_refused: available,
        });
        effects.send(
            topic::INVENTORY_EVENTS,
            sku,
            &StockRefused {
                order_id: command.order_id.clone(),
                sku: sku.clone(),
                requested: command.quantity,
                available,
            },
        );
    }
    Ok(ReservationResult {
        order_id: command.order_id.clone(),
        sku: sku.clone(),
        reserved,
        requested: command.quantity,
        available: if reserved { 0 } else { available },
    })
}

/// A retry: the answer decided the first time, whatever happened since
/// (a reservation later committed or released was still granted). A RELEASED
/// tombstone (quantity 0, released before it was reserved) answers "not
/// reserved".
fn answer_again(
    record: &ReservationRecord,
    command: &ReserveStock,
) -> Result<ReservationResult, HandlerError> {
    let status = ReservationStatus::try_from(record.status).unwrap_or_default();
    let tombstone = status == ReservationStatus::Released && record.quantity == 0;
    let reserved = match status {
        ReservationStatus::Reserved | ReservationStatus::Committed => true,
        ReservationStatus::Released => !tombstone,
        ReservationStatus::Refused => false,
        ReservationStatus::Unspecified => {
            return Err(corrupt(format!(
                "reservation of {} for {} has status {}",
                record.sku, record.order_id, record.status
            )))
        }
    };
    Ok(ReservationResult {
        order_id: record.order_id.clone(),
        sku: record.sku.clone(),
        reserved,
        requested: if tombstone {
            command.quantity
        } else {
            record.quantity
        },
        available: if reserved {
            0
        } else {
            record.available_when_refused
        },
    })
}
