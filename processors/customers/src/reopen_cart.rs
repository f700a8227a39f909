//! ReopenCart, from orders: the checkout of a cart was refused on price
//! before anything was held for it, so the cart opens again with the
//! catalog's current prices (a SKU no longer sold loses its line) and the
//! storefront can show them and check out again.
//!
//! Only the checkout that placed `order_id` is undone: a cart already
//! reopened (a redelivery) or checked out again since is left alone.

use crate::table::{CartRead, CartWrite, CustomerRead, CustomerWrite};
use d2c_proto::customers::v1::{CartReopened, CartStatus, ReopenCart};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub fn apply(
    state: &dyn StateRead,
    command: ReopenCart,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let Some(mut cart) = state.cart(&command.customer_id, &command.cart_id)? else {
        return Ok(());
    };
    if cart.status() != CartStatus::CheckedOut || cart.order_id != command.order_id {
        return Ok(());
    }
    cart.lines.retain_mut(|line| {
        let current = command
            .lines
            .iter()
            .find(|repriced| repriced.sku == line.sku)
            .map(|repriced| repriced.unit_price_minor);
        match current {
            Some(Some(price)) => {
                line.unit_price_minor = price;
                true
            }
            Some(None) => false,
            None => true,
        }
    });
    cart.status = CartStatus::Open as i32;
    cart.order_id.clear();
    cart.idempotency_key.clear();
    cart.version += 1;
    cart.updated_at_ms = effects.cause().sent_at_ms;
    if let Some(mut account) = state.account(&command.customer_id)? {
        if !account.open_cart_ids.contains(&cart.cart_id) {
            account.open_cart_ids.push(cart.cart_id.clone());
            effects.put_account(&account);
        }
    }
    effects.put_cart(&cart);
    effects.send(
        topic::CUSTOMERS_EVENTS,
        &cart.customer_id,
        &CartReopened {
            cart: Some(cart.clone()),
        },
    );
    Ok(())
}
