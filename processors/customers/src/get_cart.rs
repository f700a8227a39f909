//! GetCart: a query answered by the partition that owns the customer.

use crate::reply::{answer, no_cart, Stop};
use crate::table::CartRead;
use crate::validate::is_identifier;
use d2c_proto::customers::v1::{Cart, CartReply, GetCart};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;

pub fn apply(
    state: &dyn StateRead,
    query: GetCart,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let outcome = find_cart(state, &query.customer_id, &query.cart_id);
    answer::<CartReply>(effects, &query.customer_id, outcome)
}

/// The customer's cart `cart_id`. Carts are keyed under their customer, so
/// another customer's cart is simply not there.
pub(crate) fn find_cart(
    state: &dyn StateRead,
    customer_id: &str,
    cart_id: &str,
) -> Result<Cart, Stop> {
    // A cart id that is no identifier cannot have been created, and must not
    // reach the key, whose `/` separator it could forge.
    if !is_identifier(cart_id) {
        return Err(no_cart(cart_id).into());
    }
    state
        .cart(customer_id, cart_id)?
        .ok_or_else(|| no_cart(cart_id).into())
}
