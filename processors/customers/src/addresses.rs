//! AddAddress and RemoveAddress: a customer's address book. The sender
//! chooses the address id, so a retried add finds its address and adds it
//! once.

use crate::reply::{answer, invalid, no_customer, rejection, Stop};
use crate::table::{Account, CustomerRead, CustomerWrite};
use crate::validate::{check_address, MAX_ADDRESSES};
use d2c_proto::common::v1::rejection::Code;
use d2c_proto::customers::v1::{
    AddAddress, Customer, CustomerReply, CustomerUpdated, RemoveAddress,
};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub fn apply_add(
    state: &dyn StateRead,
    command: AddAddress,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let outcome = add(state, &command, effects);
    answer::<CustomerReply>(effects, &command.customer_id, outcome)
}

pub fn apply_remove(
    state: &dyn StateRead,
    command: RemoveAddress,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let outcome = remove(state, &command, effects);
    answer::<CustomerReply>(effects, &command.customer_id, outcome)
}

fn add(
    state: &dyn StateRead,
    command: &AddAddress,
    effects: &mut Effects,
) -> Result<Customer, Stop> {
    let mut account = existing(state, &command.customer_id)?;
    let Some(address) = command.address.as_ref() else {
        return Err(invalid("address", "address is required").into());
    };
    check_address(address)?;
    let addresses = &account.customer.addresses;
    if let Some(known) = addresses
        .iter()
        .find(|known| known.address_id == address.address_id)
    {
        if known == address {
            return Ok(account.customer);
        }
        return Err(rejection(
            Code::Conflict,
            "address.address_id",
            format!(
                "address {} exists with different content",
                address.address_id
            ),
        )
        .into());
    }
    if addresses.len() >= MAX_ADDRESSES {
        return Err(invalid(
            "addresses",
            format!("a customer has at most {MAX_ADDRESSES} addresses"),
        )
        .into());
    }
    account.customer.addresses.push(address.clone());
    Ok(updated(account, effects))
}

fn remove(
    state: &dyn StateRead,
    command: &RemoveAddress,
    effects: &mut Effects,
) -> Result<Customer, Stop> {
    let mut account = existing(state, &command.customer_id)?;
    let addresses = &mut account.customer.addresses;
    let Some(index) = addresses
        .iter()
        .position(|known| known.address_id == command.address_id)
    else {
        return Err(rejection(
            Code::NotFound,
            "address_id",
            format!("there is no address {}", command.address_id),
        )
        .into());
    };
    addresses.remove(index);
    Ok(updated(account, effects))
}

fn existing(state: &dyn StateRead, customer_id: &str) -> Result<Account, Stop> {
    state
        .account(customer_id)?
        .ok_or_else(|| no_customer(customer_id).into())
}

/// Records the changed account at the next version and announces it.
fn updated(mut account: Account, effects: &mut Effects) -> Customer {
    account.customer.version += 1;
    effects.put_account(&account);
    effects.send(
        topic::CUSTOMERS_EVENTS,
        &account.customer.customer_id,
        &CustomerUpdated {
            customer: Some(account.customer.clone()),
        },
    );
    account.customer
}
