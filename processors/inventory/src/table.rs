//! The inventory tables:
//!
//! - `Stock`: SKU → StockRecord (protobuf).
//! - `Reservations`: SKU + NUL + order id (a SKU never holds a NUL byte) → ReservationRecord (protobuf).
//! - `StockAdjustments`: SKU + NUL + adjustment id → empty value (its
//!   presence means the adjustment was applied).
//!
//! The SKU comes first in every key so that all of a SKU's state sits
//! together, on the partition that owns the SKU.

use d2c_proto::identifiers::Sku;
use d2c_proto::inventory::v1::{
    stock_changed::Reason, ReservationRecord, StockChanged, StockLevel, StockRecord,
};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::{StateError, StateRead, Table};
use d2c_topology::topic;
use prost::Message;

pub trait InventoryRead {
    fn stock(&self, sku: &str) -> Result<Option<StockRecord>, HandlerError>;
    fn reservation(
        &self,
        sku: &str,
        order_id: &str,
    ) -> Result<Option<ReservationRecord>, HandlerError>;
    fn adjustment_applied(&self, sku: &str, adjustment_id: &str) -> Result<bool, HandlerError>;
}

pub trait InventoryWrite {
    fn put_stock(&mut self, record: &StockRecord);
    fn put_reservation(&mut self, record: &ReservationRecord);
    fn put_adjustment(&mut self, sku: &str, adjustment_id: &str);
}

fn pair_key(sku: &str, id: &str) -> String {
    format!("{sku}\0{id}")
}

fn decode<M: Message + Default>(
    bytes: Option<Vec<u8>>,
    what: impl FnOnce() -> String,
) -> Result<Option<M>, HandlerError> {
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    M::decode(bytes.as_slice())
        .map(Some)
        .map_err(|error| corrupt(format!("{}: {error}", what())))
}

pub(crate) fn corrupt(detail: String) -> HandlerError {
    HandlerError::State(StateError::Corrupt(detail))
}

impl<S: StateRead + ?Sized> InventoryRead for S {
    fn stock(&self, sku: &str) -> Result<Option<StockRecord>, HandlerError> {
        decode(self.get(Table::Stock, sku.as_bytes())?, || {
            format!("stock of {sku}")
        })
    }

    fn reservation(
        &self,
        sku: &str,
        order_id: &str,
    ) -> Result<Option<ReservationRecord>, HandlerError> {
        let key = pair_key(sku, order_id);
        decode(self.get(Table::Reservations, key.as_bytes())?, || {
            format!("reservation of {sku} for {order_id}")
        })
    }

    fn adjustment_applied(&self, sku: &str, adjustment_id: &str) -> Result<bool, HandlerError> {
        let key = pair_key(sku, adjustment_id);
        Ok(self.get(Table::StockAdjustments, key.as_bytes())?.is_some())
    }
}

impl InventoryWrite for Effects {
    fn put_stock(&mut self, record: &StockRecord) {
        self.put_record(Table::Stock, &record.sku, record);
    }

    fn put_reservation(&mut self, record: &ReservationRecord) {
        let key = pair_key(&record.sku, &record.order_id);
        self.put_record(Table::Reservations, &key, record);
    }

    fn put_adjustment(&mut self, sku: &str, adjustment_id: &str) {
        let key = pair_key(sku, adjustment_id);
        self.put(Table::StockAdjustments, key.as_bytes(), Vec::new());
    }
}

/// The level a stock record shows: available is on_hand - reserved.
pub fn level(record: &StockRecord) -> StockLevel {
    StockLevel {
        sku: record.sku.clone(),
        on_hand: record.on_hand,
        reserved: record.reserved,
        available: record.on_hand.saturating_sub(record.reserved),
        sold: record.sold,
    }
}

/// The stock of `sku`, or an empty record if the SKU has never been stocked.
pub(crate) fn stock_or_empty(
    state: &dyn StateRead,
    sku: &str,
) -> Result<StockRecord, HandlerError> {
    Ok(state.stock(sku)?.unwrap_or_else(|| StockRecord {
        sku: sku.to_owned(),
        ..StockRecord::default()
    }))
}

/// Records the new stock and announces it on inventory.events (keyed by SKU).
pub(crate) fn record_change(
    effects: &mut Effects,
    record: &StockRecord,
    reason: Reason,
    order_id: &str,
    quantity: i64,
) {
    effects.put_stock(record);
    effects.send(
        topic::INVENTORY_EVENTS,
        &record.sku,
        &StockChanged {
            level: Some(level(record)),
            reason: reason as i32,
            order_id: order_id.to_owned(),
            quantity,
        },
    );
}

/// Checked arithmetic on stored quantities. The invariants make these
/// operations safe; a failure means the stored state broke them.
pub(crate) fn add(sku: &str, what: &str, value: i64, amount: i64) -> Result<i64, HandlerError> {
    value
        .checked_add(amount)
        .filter(|result| *result >= 0)
        .ok_or_else(|| {
            corrupt(format!(
                "stock of {sku}: {what} {value} + {amount} is invalid"
            ))
        })
}

pub(crate) fn sub(sku: &str, what: &str, value: i64, amount: i64) -> Result<i64, HandlerError> {
    value
        .checked_sub(amount)
        .filter(|result| *result >= 0)
        .ok_or_else(|| {
            corrupt(format!(
                "stock of {sku}: {what} {value} - {amount} is invalid"
            ))
        })
}

/// Saga commands name the order and the SKU; without them there is nothing
/// to act on. A SKU is an identifier (`d2c_proto::identifiers::Sku`), so it
/// never holds the NUL byte that ends the SKU part of a key.
pub(crate) fn check_ids(message: &str, order_id: &str, sku: &str) -> Result<(), HandlerError> {
    if order_id.is_empty() {
        return Err(HandlerError::Malformed(format!(
            "{message} needs an order_id"
        )));
    }
    if let Err(invalid) = Sku::parse(sku) {
        return Err(HandlerError::Malformed(format!("{message}: {invalid}")));
    }
    Ok(())
}
