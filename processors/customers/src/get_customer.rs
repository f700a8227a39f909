//! GetCustomer: a query answered by the partition that owns the customer.

use crate::reply::{answer, no_customer, Stop};
use crate::table::CustomerRead;
use d2c_proto::customers::v1::{Customer, CustomerReply, GetCustomer};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;

pub fn apply(
    state: &dyn StateRead,
    query: GetCustomer,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let outcome = find(state, &query.customer_id);
    answer::<CustomerReply>(effects, &query.customer_id, outcome)
}

fn find(state: &dyn StateRead, customer_id: &str) -> Result<Customer, Stop> {
    match state.account(customer_id)? {
        Some(account) => Ok(account.customer),
        None => Err(no_customer(customer_id).into()),
    }
}
