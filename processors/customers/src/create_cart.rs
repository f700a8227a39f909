//! CreateCart: open a cart for a registered customer. The sender chooses
//! the cart id (the gateway derives it from its `Idempotency-Key`), so a
//! retry finds the cart it opened.

use crate::reply::{answer, no_customer, rejection, Stop};
use crate::table::{CartRead, CartWrite, CustomerRead};
use crate::validate::{check_currency, check_identifier};
use d2c_proto::common::v1::rejection::Code;
use d2c_proto::customers::v1::{Cart, CartReply, CartStatus, CreateCart};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;

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
    if state.account(&command.customer_id)?.is_none() {
        return Err(no_customer(&command.customer_id).into());
    }
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
    Ok(cart)
}
