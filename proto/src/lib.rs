//! Protobuf messages of the platform, and the envelope convention that every
//! Kafka record follows: the value is the protobuf encoding of one message,
//! the headers carry what routing, tracing and de-duplication need.

pub mod actor;
pub mod envelope;
pub mod identifiers;
pub mod ids;

pub use envelope::{Envelope, EnvelopeError, ReplyTo};

pub mod common {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/d2c.common.v1.rs"));
    }
}

pub mod orders {
    pub mod v1 {
        // Generated: an order reply is an Order or a small Rejection, built
        // once per reply; boxing the order would cost an allocation instead.
        #![allow(clippy::large_enum_variant)]
        include!(concat!(env!("OUT_DIR"), "/d2c.orders.v1.rs"));
    }
}

pub mod inventory {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/d2c.inventory.v1.rs"));
    }
}

pub mod payments {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/d2c.payments.v1.rs"));
    }
}

pub mod catalog {
    /// The product a `catalog.events` record carries: ProductCreated,
    /// ProductUpdated and ProductArchived all carry the whole product as
    /// field 1. `None` for any other message type.
    pub fn product_of_event(
        message_type: &str,
        payload: &[u8],
    ) -> Option<Result<v1::Product, prost::DecodeError>> {
        if !message_type.starts_with("d2c.catalog.v1.Product") {
            return None;
        }
        match <v1::ProductUpdated as prost::Message>::decode(payload) {
            Ok(event) => event.product.map(Ok),
            Err(error) => Some(Err(error)),
        }
    }

    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/d2c.catalog.v1.rs"));
    }
}

pub mod customers {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/d2c.customers.v1.rs"));
    }
}

/// The protobuf full name of a message type, as carried in the
/// `d2c-message-type` header.
pub fn type_name<M: prost::Name>() -> String {
    M::full_name()
}
