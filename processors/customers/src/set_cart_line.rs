//! SetCartLine: set one SKU's line of an open cart. A new SKU adds a line,
//! quantity 0 removes it; setting a line to what it already is changes
//! nothing, so a retry is harmless.

use crate::get_cart::find_cart;
use crate::reply::{answer, invalid, rejection, Stop};
use crate::table::CartWrite;
use crate::validate::{check_identifier, check_quantity, check_unit_price, MAX_LINES};
use d2c_proto::common::v1::rejection::Code;
use d2c_proto::customers::v1::{Cart, CartLine, CartReply, CartStatus, SetCartLine};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;

pub fn apply(
    state: &dyn StateRead,
    command: SetCartLine,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let outcome = set_line(state, &command, effects);
    answer::<CartReply>(effects, &command.customer_id, outcome)
}

fn set_line(
    state: &dyn StateRead,
    command: &SetCartLine,
    effects: &mut Effects,
) -> Result<Cart, Stop> {
    let mut cart = find_cart(state, &command.customer_id, &command.cart_id)?;
    if cart.status() != CartStatus::Open {
        return Err(rejection(
            Code::IllegalTransition,
            "status",
            format!("cart {} is checked out and cannot change", cart.cart_id),
        )
        .into());
    }
    check_line(command)?;
    if !change_lines(&mut cart.lines, command)? {
        return Ok(cart);
    }
    cart.version += 1;
    cart.updated_at_ms = effects.cause().sent_at_ms;
    effects.put_cart(&cart);
    Ok(cart)
}

fn check_line(command: &SetCartLine) -> Result<(), Stop> {
    check_identifier("sku", &command.sku)?;
    check_quantity(command.quantity)?;
    check_unit_price(command.unit_price_minor)?;
    // The product is optional: it only helps a storefront link the line.
    if !command.product_id.is_empty() {
        check_identifier("product_id", &command.product_id)?;
    }
    Ok(())
}

/// Applies the command to `lines`; whether anything changed.
fn change_lines(lines: &mut Vec<CartLine>, command: &SetCartLine) -> Result<bool, Stop> {
    let wanted = CartLine {
        sku: command.sku.clone(),
        quantity: command.quantity,
        unit_price_minor: command.unit_price_minor,
        product_id: command.product_id.clone(),
    };
    let position = lines.iter().position(|line| line.sku == command.sku);
    match (position, command.quantity) {
        (None, 0) => Ok(false),
        (Some(index), 0) => {
            lines.remove(index);
            Ok(true)
        }
        (Some(index), _) if lines[index] == wanted => Ok(false),
        (Some(index), _) => {
            lines[index] = wanted;
            Ok(true)
        }
        (None, _) if lines.len() >= MAX_LINES => {
            Err(invalid("lines", format!("a cart has at most {MAX_LINES} lines")).into())
        }
        (None, _) => {
            lines.push(wanted);
            Ok(true)
        }
    }
}
