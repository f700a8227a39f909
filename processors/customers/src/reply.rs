//! Answers to the commands and queries, always keyed by customer id: a
//! `CustomerReply`, `CredentialsReply` or `CartReply` holding the value or
//! the rejection.

use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::customers::v1::{
    cart_reply, credentials_reply, customer_reply, Cart, CartReply, Credentials, CredentialsReply,
    Customer, CustomerReply,
};
use d2c_runtime::{Effects, HandlerError};

/// Why a command stops before its change: refused (the sender is answered
/// with the rejection) or failed (state unreadable: the runtime retries).
#[derive(Debug)]
pub(crate) enum Stop {
    Refused(Rejection),
    Failed(HandlerError),
}

impl From<Rejection> for Stop {
    fn from(rejection: Rejection) -> Self {
        Stop::Refused(rejection)
    }
}

impl From<HandlerError> for Stop {
    fn from(error: HandlerError) -> Self {
        Stop::Failed(error)
    }
}

pub(crate) fn rejection(code: Code, field: &str, message: impl Into<String>) -> Rejection {
    Rejection {
        code: code as i32,
        field: field.to_owned(),
        message: message.into(),
        ..Rejection::default()
    }
}

pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Rejection {
    rejection(Code::Invalid, field, message)
}

pub(crate) fn no_customer(customer_id: &str) -> Rejection {
    rejection(
        Code::NotFound,
        "customer_id",
        format!("there is no customer {customer_id}"),
    )
}

pub(crate) fn no_cart(cart_id: &str) -> Rejection {
    rejection(
        Code::NotFound,
        "cart_id",
        format!("there is no cart {cart_id}"),
    )
}

/// A reply message that holds either a value or a rejection.
pub(crate) trait Answer: prost::Message + prost::Name + Sized {
    type Value;
    fn value(value: Self::Value) -> Self;
    fn rejected(rejection: Rejection) -> Self;
}

impl Answer for CustomerReply {
    type Value = Customer;
    fn value(customer: Customer) -> Self {
        Self {
            result: Some(customer_reply::Result::Customer(customer)),
        }
    }
    fn rejected(rejection: Rejection) -> Self {
        Self {
            result: Some(customer_reply::Result::Rejected(rejection)),
        }
    }
}

impl Answer for CredentialsReply {
    type Value = Credentials;
    fn value(credentials: Credentials) -> Self {
        Self {
            result: Some(credentials_reply::Result::Credentials(credentials)),
        }
    }
    fn rejected(rejection: Rejection) -> Self {
        Self {
            result: Some(credentials_reply::Result::Rejected(rejection)),
        }
    }
}

impl Answer for CartReply {
    type Value = Cart;
    fn value(cart: Cart) -> Self {
        Self {
            result: Some(cart_reply::Result::Cart(cart)),
        }
    }
    fn rejected(rejection: Rejection) -> Self {
        Self {
            result: Some(cart_reply::Result::Rejected(rejection)),
        }
    }
}

/// Answers the sender with the outcome; a failure is handed to the runtime
/// unanswered, since the retried batch will answer.
pub(crate) fn answer<A: Answer>(
    effects: &mut Effects,
    customer_id: &str,
    outcome: Result<A::Value, Stop>,
) -> Result<(), HandlerError> {
    let reply = match outcome {
        Ok(value) => A::value(value),
        Err(Stop::Refused(rejection)) => A::rejected(rejection),
        Err(Stop::Failed(error)) => return Err(error),
    };
    effects.reply(customer_id, &reply);
    Ok(())
}
