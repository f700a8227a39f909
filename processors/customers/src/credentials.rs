//! GetCredentials: the stored password hash, for the gateway to verify a
//! login against. It goes only to the requester's reply address and is
//! never announced.

use crate::reply::{answer, no_customer, Stop};
use crate::table::CustomerRead;
use d2c_proto::customers::v1::{Credentials, CredentialsReply, GetCredentials};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;

pub fn apply(
    state: &dyn StateRead,
    query: GetCredentials,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let outcome = find(state, &query.customer_id);
    answer::<CredentialsReply>(effects, &query.customer_id, outcome)
}

fn find(state: &dyn StateRead, customer_id: &str) -> Result<Credentials, Stop> {
    match state.account(customer_id)? {
        Some(account) => Ok(Credentials {
            customer_id: account.customer.customer_id,
            password_hash: account.password_hash,
        }),
        None => Err(no_customer(customer_id).into()),
    }
}
