//! Protobuf messages of the platform, and the envelope convention that every
//! Kafka record follows: the value is the protobuf encoding of one message,
//! the headers carry what routing, tracing and de-duplication need.

pub mod envelope;
pub mod ids;

pub use envelope::{Envelope, EnvelopeError, ReplyTo};

pub mod common {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/d2c.common.v1.rs"));
    }
}

pub mod orders {
    pub mod v1 {
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
