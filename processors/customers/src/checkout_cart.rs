//! CheckoutCart: turn an open, non-empty cart into an order. The cart is
//! handed on as a PlaceOrder to `orders.messages` with the requester's
//! reply address, so orders answers the parked HTTP request the way it
//! answers any checkout; only a refusal is answered from here.
//!
//! The order id comes from (customer, idempotency key), and the PlaceOrder
//! is rebuilt from the stored cart, so a retry with the same key forwards
//! the very same PlaceOrder and orders answers it as a duplicate.

use crate::get_cart::find_cart;
use crate::reply::{answer, invalid, rejection, Stop};
use crate::table::{CartWrite, CustomerRead, CustomerWrite};
use d2c_proto::common::v1::rejection::Code;
use d2c_proto::customers::v1::{Cart, CartCheckedOut, CartReply, CartStatus, CheckoutCart};
use d2c_proto::ids;
use d2c_proto::orders::v1::{PlaceOrder, RequestedLine};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;
use sha2::{Digest, Sha256};

pub fn apply(
    state: &dyn StateRead,
    command: CheckoutCart,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    match checkout(state, &command, effects) {
        Ok(()) => Ok(()),
        Err(stop) => answer::<CartReply>(effects, &command.customer_id, Err(stop)),
    }
}

fn checkout(
    state: &dyn StateRead,
    command: &CheckoutCart,
    effects: &mut Effects,
) -> Result<(), Stop> {
    let cart = find_cart(state, &command.customer_id, &command.cart_id)?;
    if command.payment_method.is_empty() {
        return Err(invalid("payment_method", "payment_method is required").into());
    }
    if command.idempotency_key.is_empty() {
        return Err(invalid("idempotency_key", "idempotency_key is required").into());
    }
    match cart.status() {
        CartStatus::Open => {
            let (customer_id, cart_id) = (cart.customer_id.clone(), cart.cart_id.clone());
            check_out(cart, command, effects)?;
            release_open_cart(state, &customer_id, &cart_id, effects)
        }
        CartStatus::CheckedOut if cart.idempotency_key == command.idempotency_key => {
            let order = place_order(&cart, &command.payment_method);
            effects.forward(topic::ORDERS_MESSAGES, &order.order_id, &order);
            Ok(())
        }
        CartStatus::CheckedOut | CartStatus::Unspecified => Err(rejection(
            Code::IllegalTransition,
            "status",
            format!(
                "this cart was already checked out as order {}",
                cart.order_id
            ),
        )
        .into()),
    }
}

/// A checked-out cart no longer counts towards the open-cart limit.
fn release_open_cart(
    state: &dyn StateRead,
    customer_id: &str,
    cart_id: &str,
    effects: &mut Effects,
) -> Result<(), Stop> {
    if let Some(mut account) = state.account(customer_id)? {
        let before = account.open_cart_ids.len();
        account.open_cart_ids.retain(|id| id != cart_id);
        if account.open_cart_ids.len() != before {
            effects.put_account(&account);
        }
    }
    Ok(())
}

fn check_out(mut cart: Cart, command: &CheckoutCart, effects: &mut Effects) -> Result<(), Stop> {
    if cart.lines.is_empty() {
        return Err(invalid("lines", "the cart is empty").into());
    }
    cart.status = CartStatus::CheckedOut as i32;
    cart.idempotency_key = command.idempotency_key.clone();
    cart.order_id = order_id(&cart);
    cart.version += 1;
    cart.updated_at_ms = effects.cause().sent_at_ms;
    let order = place_order(&cart, &command.payment_method);
    effects.put_cart(&cart);
    effects.forward(topic::ORDERS_MESSAGES, &order.order_id, &order);
    effects.send(
        topic::CUSTOMERS_EVENTS,
        &cart.customer_id,
        &CartCheckedOut {
            cart: Some(cart.clone()),
            order: Some(order),
        },
    );
    Ok(())
}

fn order_id(cart: &Cart) -> String {
    ids::order_id(&cart.customer_id, &cart.idempotency_key).to_string()
}

/// The order a checked-out cart places, from the cart alone plus the
/// payment method (which the cart does not keep).
pub fn place_order(cart: &Cart, payment_method: &str) -> PlaceOrder {
    PlaceOrder {
        order_id: order_id(cart),
        customer_id: cart.customer_id.clone(),
        lines: cart
            .lines
            .iter()
            // The price the cart showed: orders prices from the catalog
            // and refuses the order if the two differ.
            .map(|line| RequestedLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price_minor: Some(line.unit_price_minor),
            })
            .collect(),
        currency: cart.currency.clone(),
        idempotency_key: cart.idempotency_key.clone(),
        request_hash: request_hash(cart, payment_method),
        payment_method: payment_method.to_owned(),
        cart_id: cart.cart_id.clone(),
    }
}

/// SHA-256 over a length-prefixed encoding of what the order is made of, so
/// that no two different checkouts encode alike. The leading "cart" keeps a
/// cart checkout apart from a direct `POST /orders` under the same key. The
/// payment method is part of it: a retry that changes it is a different
/// request, which orders refuses as a reused key.
pub fn request_hash(cart: &Cart, payment_method: &str) -> Vec<u8> {
    let mut hasher = Sha256::new();
    for part in ["cart", &cart.cart_id, &cart.currency, payment_method] {
        hash_text(&mut hasher, part);
    }
    hasher.update((cart.lines.len() as u64).to_be_bytes());
    for line in &cart.lines {
        hash_text(&mut hasher, &line.sku);
        hasher.update(line.quantity.to_be_bytes());
        hasher.update(line.unit_price_minor.to_be_bytes());
    }
    hasher.finalize().to_vec()
}

fn hash_text(hasher: &mut Sha256, text: &str) {
    hasher.update((text.len() as u64).to_be_bytes());
    hasher.update(text.as_bytes());
}
