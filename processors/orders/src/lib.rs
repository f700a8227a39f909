//! The orders processor: owns each order (keyed by order id) and answers for
//! it. Handlers are pure: state and message in, effects out.
//!
//! Order states (enforced by the handlers; more arrive with the checkout saga):
//!
//! ```text
//!   (none) --PlaceOrder--> PLACED
//! ```
//!
//! A PlaceOrder for an order that exists is an idempotent retry: same request
//! → the order as it stands, nothing new emitted; same key with a different
//! request → refused as a conflict.

pub mod get_order;
pub mod place_order;
mod table;

pub use table::{OrderRead, OrderWrite};

use d2c_proto::orders::v1::{GetOrder, PlaceOrder};
use d2c_runtime::{Effects, Handler, HandlerError, Incoming};
use d2c_state::StateRead;
use prost::Name;

pub const SERVICE: &str = "orders";
/// Admin port (/health, /ready, /metrics) when D2C_ADMIN_ADDR is not set.
pub const DEFAULT_ADMIN_PORT: u16 = 9101;

#[derive(Debug, Default)]
pub struct OrdersHandler;

impl Handler for OrdersHandler {
    fn handle(
        &self,
        state: &dyn StateRead,
        message: &Incoming<'_>,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let message_type = message.envelope.message_type.as_str();
        if message_type == PlaceOrder::full_name() {
            place_order::apply(state, message.envelope, message.decode()?, effects)
        } else if message_type == GetOrder::full_name() {
            get_order::apply(state, message.decode()?, effects)
        } else {
            Err(HandlerError::Malformed(format!(
                "orders does not handle {message_type}"
            )))
        }
    }
}
