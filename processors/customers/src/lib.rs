//! The customers processor: owns the accounts (keyed by customer id), their
//! credential, their addresses and their carts. Handlers are pure: state and
//! message in, effects out. Time is the envelope's sent-at, never a clock,
//! so a replay repeats the same effects.
//!
//! Everything about one customer arrives on `customers.messages` keyed by
//! customer id, so one worker owns each customer and its carts. The customer
//! id is derived from the normalised e-mail address
//! ([`d2c_proto::ids::customer_id`]): two registrations of one address meet
//! here and the second is refused, with no lock anywhere. Every command and
//! query is answered to the sender, keyed by customer id, except an accepted
//! checkout, which orders answers. Account changes are announced on
//! `customers.events`, keyed by customer id, never with the password hash.
//!
//! ```text
//!  account:          RegisterCustomer
//!            (none) ──────────────────▶ REGISTERED ──┐ AddAddress
//!                                            ▲       │ RemoveAddress
//!                                            └───────┘ (version + 1)
//!
//!  cart:             CreateCart          CheckoutCart (PlaceOrder forwarded to orders)
//!            (none) ────────────▶ OPEN ────────────────▶ CHECKED_OUT
//!                                 │  ▲                    (final)
//!                                 └──┘ SetCartLine
//! ```
//!
//! | command          | refused with                                         | change                          | answer / event |
//! |------------------|------------------------------------------------------|---------------------------------|----------------|
//! | RegisterCustomer | INVALID (`email` also when the id is not the e-mail's); CONFLICT `email` if the e-mail has an account with another password hash | version 1 | CustomerReply; CustomerRegistered |
//! | GetCustomer      | NOT_FOUND `customer_id`                              | none                            | CustomerReply  |
//! | GetCredentials   | NOT_FOUND `customer_id`                              | none                            | CredentialsReply (to the requester only) |
//! | AddAddress       | NOT_FOUND `customer_id`; INVALID `address.*`, `addresses` (over 20); CONFLICT `address.address_id` if the id exists with other content | address appended, version + 1 | CustomerReply; CustomerUpdated |
//! | RemoveAddress    | NOT_FOUND `customer_id`, `address_id`                | address removed, version + 1    | CustomerReply; CustomerUpdated |
//! | CreateCart       | NOT_FOUND `customer_id`; INVALID `cart_id`, `currency`; CONFLICT `currency` if the cart exists in another currency; LIMIT_REACHED `carts` at 20 open carts | OPEN, version 1; listed in the account's open carts | CartReply |
//! | SetCartLine      | NOT_FOUND `cart_id`; ILLEGAL_TRANSITION `status` unless OPEN; INVALID `sku`, `quantity`, `unit_price_minor`, `product_id`, `lines` (over 100) | line added, changed or removed, version + 1 (only if it differs) | CartReply |
//! | GetCart          | NOT_FOUND `cart_id`                                  | none                            | CartReply      |
//! | CheckoutCart     | NOT_FOUND `cart_id`; INVALID `payment_method`, `idempotency_key`, `lines` (empty cart); ILLEGAL_TRANSITION `status` if checked out under another key | CHECKED_OUT with order id and key, version + 1 | PlaceOrder forwarded to `orders.messages` (orders answers); CartCheckedOut |
//!
//! Retries change nothing and answer what stands: a RegisterCustomer with
//! the stored password hash answers the customer; an AddAddress with an
//! address identical to the stored one of that id answers the customer; a
//! CreateCart for an existing cart in the same currency answers the cart; a
//! SetCartLine that sets what is there answers the cart; a CheckoutCart of a
//! checked-out cart with its idempotency key forwards the same PlaceOrder
//! again (same order id, same request hash, see [`checkout_cart`]), which
//! orders answers as a duplicate.
//!
//! Content rules (see [`validate`]): the e-mail, trimmed and lower-cased, is
//! 3 to 254 characters with one `@`; names have 1 to 200 characters; the
//! password hash is an argon2 PHC string (`$argon2…`), computed by the
//! gateway; address, cart ids and SKUs are identifiers (1 to 64 letters,
//! digits or `-_.:`); a country is two upper-case letters, a currency three;
//! a quantity is 0 to 1,000 and a unit price 0 to 100,000,000 minor units.
//!
//! A customer has at most 20 open carts (CreateCart refuses the 21st with
//! LIMIT_REACHED `carts`); the account record lists them, so the check is a
//! point lookup, and a checkout frees the cart's place.

pub mod addresses;
pub mod checkout_cart;
pub mod create_cart;
pub mod credentials;
pub mod get_cart;
pub mod get_customer;
pub mod register;
pub mod reopen_cart;
mod reply;
pub mod set_cart_line;
mod table;
pub mod validate;

#[cfg(test)]
mod customers_tests;

pub use table::{cart_key, Account, CartRead, CartWrite, CustomerRead, CustomerWrite};

use d2c_proto::customers::v1::{
    AddAddress, CheckoutCart, CreateCart, GetCart, GetCredentials, GetCustomer, RegisterCustomer,
    RemoveAddress, ReopenCart, SetCartLine,
};
use d2c_runtime::router::Router;
use d2c_runtime::Processor;

pub const SERVICE: &str = "customers";
/// Admin port (/health, /ready, /metrics) when D2C_ADMIN_ADDR is not set.
pub const DEFAULT_ADMIN_PORT: u16 = 9105;

/// The customers processor, ready to run.
pub fn processor() -> Processor {
    Processor::new(SERVICE, DEFAULT_ADMIN_PORT).handler(handler())
}

/// Every command and query customers handles, by type.
pub fn handler() -> Router {
    Router::new(SERVICE)
        .on::<RegisterCustomer, _>(register::apply)
        .on::<GetCustomer, _>(get_customer::apply)
        .on::<GetCredentials, _>(credentials::apply)
        .on::<AddAddress, _>(addresses::apply_add)
        .on::<RemoveAddress, _>(addresses::apply_remove)
        .on::<CreateCart, _>(create_cart::apply)
        .on::<SetCartLine, _>(set_cart_line::apply)
        .on::<GetCart, _>(get_cart::apply)
        .on::<CheckoutCart, _>(checkout_cart::apply)
        .on::<ReopenCart, _>(reopen_cart::apply)
}
