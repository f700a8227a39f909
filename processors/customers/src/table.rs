//! The customers tables:
//!
//! - `Customers`: customer id → CustomerRecord (protobuf), the account with
//!   its credential as last changed.
//! - `Carts`: [`cart_key`] (customer id, `/`, cart id) → Cart (protobuf), so
//!   one customer's carts sit next to each other in key order.

use d2c_proto::customers::v1::{Cart, Customer, CustomerRecord};
use d2c_runtime::handler::read_record;
use d2c_runtime::{Effects, HandlerError};
use d2c_state::{StateError, StateRead, Table};

/// A stored account: the customer as answered, and the credential that is
/// never announced.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub customer: Customer,
    pub password_hash: String,
    /// The customer's open carts, oldest first.
    pub open_cart_ids: Vec<String>,
}

/// The key of a cart. A cart id is an identifier (no `/`), so the last `/`
/// always separates the two parts.
pub fn cart_key(customer_id: &str, cart_id: &str) -> String {
    format!("{customer_id}/{cart_id}")
}

pub trait CustomerRead {
    fn account(&self, customer_id: &str) -> Result<Option<Account>, HandlerError>;
}

pub trait CustomerWrite {
    fn put_account(&mut self, account: &Account);
}

pub trait CartRead {
    fn cart(&self, customer_id: &str, cart_id: &str) -> Result<Option<Cart>, HandlerError>;
}

pub trait CartWrite {
    fn put_cart(&mut self, cart: &Cart);
}

fn read_account(state: &dyn StateRead, customer_id: &str) -> Result<Option<Account>, HandlerError> {
    let Some(record) = read_record::<CustomerRecord>(state, Table::Customers, customer_id)? else {
        return Ok(None);
    };
    let customer = record.customer.ok_or_else(|| {
        HandlerError::State(StateError::Corrupt(format!(
            "Customers record {customer_id} has no customer"
        )))
    })?;
    Ok(Some(Account {
        customer,
        password_hash: record.password_hash,
        open_cart_ids: record.open_cart_ids,
    }))
}

fn read_cart(
    state: &dyn StateRead,
    customer_id: &str,
    cart_id: &str,
) -> Result<Option<Cart>, HandlerError> {
    read_record(state, Table::Carts, &cart_key(customer_id, cart_id))
}

impl<S: StateRead> CustomerRead for S {
    fn account(&self, customer_id: &str) -> Result<Option<Account>, HandlerError> {
        read_account(self, customer_id)
    }
}

impl CustomerRead for dyn StateRead + '_ {
    fn account(&self, customer_id: &str) -> Result<Option<Account>, HandlerError> {
        read_account(self, customer_id)
    }
}

impl<S: StateRead> CartRead for S {
    fn cart(&self, customer_id: &str, cart_id: &str) -> Result<Option<Cart>, HandlerError> {
        read_cart(self, customer_id, cart_id)
    }
}

impl CartRead for dyn StateRead + '_ {
    fn cart(&self, customer_id: &str, cart_id: &str) -> Result<Option<Cart>, HandlerError> {
        read_cart(self, customer_id, cart_id)
    }
}

impl CustomerWrite for Effects {
    fn put_account(&mut self, account: &Account) {
        let record = CustomerRecord {
            customer: Some(account.customer.clone()),
            password_hash: account.password_hash.clone(),
            open_cart_ids: account.open_cart_ids.clone(),
        };
        self.put_record(Table::Customers, &account.customer.customer_id, &record);
    }
}

impl CartWrite for Effects {
    fn put_cart(&mut self, cart: &Cart) {
        self.put_record(
            Table::Carts,
            &cart_key(&cart.customer_id, &cart.cart_id),
            cart,
        );
    }
}
