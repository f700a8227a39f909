//! RegisterCustomer: open an account at version 1. The customer id is
//! derived from the e-mail address, so every registration of one address
//! arrives here, at its one owner, and a second one is refused.

use crate::reply::{answer, invalid, rejection, Stop};
use crate::table::{Account, CustomerRead, CustomerWrite};
use crate::validate::{check_email, check_password_hash, check_required, MAX_NAME_CHARS};
use d2c_proto::common::v1::rejection::Code;
use d2c_proto::customers::v1::{Customer, CustomerRegistered, CustomerReply, RegisterCustomer};
use d2c_proto::ids;
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub fn apply(
    state: &dyn StateRead,
    command: RegisterCustomer,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let outcome = register(state, &command, effects);
    answer::<CustomerReply>(effects, &command.customer_id, outcome)
}

fn register(
    state: &dyn StateRead,
    command: &RegisterCustomer,
    effects: &mut Effects,
) -> Result<Customer, Stop> {
    let email = ids::normalise_email(&command.email);
    check_email(&email)?;
    if command.customer_id != ids::customer_id(&email).to_string() {
        // Only the id derived from the address meets earlier registrations
        // of it; any other id would let one e-mail open two accounts.
        return Err(invalid("email", "customer_id is not the id of this e-mail address").into());
    }
    check_required("name", &command.name, MAX_NAME_CHARS)?;
    check_password_hash(&command.password_hash)?;
    if let Some(existing) = state.account(&command.customer_id)? {
        // A salted hash is never computed twice by chance: the same hash
        // means the same command again, a retry rather than a second sign-up.
        if existing.password_hash == command.password_hash {
            return Ok(existing.customer);
        }
        return Err(rejection(
            Code::Conflict,
            "email",
            "an account with this e-mail exists",
        )
        .into());
    }
    let customer = Customer {
        customer_id: command.customer_id.clone(),
        email,
        name: command.name.clone(),
        addresses: Vec::new(),
        registered_at_ms: effects.cause().sent_at_ms,
        version: 1,
    };
    effects.put_account(&Account {
        customer: customer.clone(),
        password_hash: command.password_hash.clone(),
        open_cart_ids: Vec::new(),
    });
    effects.send(
        topic::CUSTOMERS_EVENTS,
        &customer.customer_id,
        &CustomerRegistered {
            customer: Some(customer.clone()),
        },
    );
    Ok(customer)
}
