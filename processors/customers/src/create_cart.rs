//! CreateCart: open a cart for a registered customer. The sender chooses
//! the cart id (the gateway derives it from its `Idempotency-Key`), so a
//! retry finds the cart it opened. A customer has at most
//! [`MAX_OPEN_CARTS`] open carts: the account lists them, so the limit needs
//! no scan over the customer's carts.

use crate::reply::{answer, no_customer, rejection, Stop};
use crate::table::{CartRead, CartWrite, CustomerRead, CustomerWrite};
use crate::validate::{check_currency, check_identifier};
use d2c_proto::common::v1::rejection::Code;
use d2c_proto::customers::v1::{Cart, CartReply, CartStatus, CreateCart};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;

/// Open carts per customer at most; checking one out frees its place.
pub const MAX_OPEN_CARTS: usize = 20;

pub fn apply(
    state: &dyn StateRead,
    command: CreateCart,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let outcome = create(state, &command, effects);
    answer::<CartReply>(effects, &command.customer_id, outcome)
}

fn create(
    state: &dyn StateRead,
    command: &CreateCart,
    effects: &mut Effects,
) -> Result<Cart, Stop> {
    let Some(mut account) = state.account(&command.customer_id)? else {
        return Err(no_customer(&command.customer_id).into());
    };
    check_identifier("cart_id", &command.cart_id)?;
    check_currency(&command.currency)?;
    if let Some(existing) = state.cart(&command.customer_id, &command.cart_id)? {
        if existing.currency == command.currency {
            return Ok(existing);
        }
        return Err(rejection(
            Code::Conflict,
            "currency",
            format!("cart {} exists in {}", existing.cart_id, existing.currency),
        )
        .into());
    }
    if account.open_cart_ids.len() >= MAX_OPEN_CARTS {
        return Err(rejection(
            Code::LimitReached,
            "carts",
            format!("a customer has at most {MAX_OPEN_CARTS} open carts; check one out first"),
        )
        .into());
    }
    let now = effects.cause().sent_at_ms;
    let cart = Cart {
        cart_id: command.cart_id.clone(),
        customer_id: command.customer_id.clone(),
        currency: command.currency.clone(),
        status: CartStatus::Open as i32,
        version: 1,
        created_at_ms: now,
        updated_at_ms: now,
        ..Cart::default()
    };
    effects.put_cart(&cart);
    account.open_cart_ids.push(cart.cart_id.clone());
    effects.put_account(&account);
    Ok(cart)
}
