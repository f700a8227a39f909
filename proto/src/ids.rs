//! Deterministic identifiers. Everything that must come out the same when a
//! request is retried or a message replayed is a UUIDv5 of its cause.

use uuid::Uuid;

const ORDER_NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_2c0e_8f4a_4c55_9a1e_0d2c_0a11_0001);
const WEBHOOK_NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_2c0e_8f4a_4c55_9a1e_0d2c_0a11_0002);
const PRODUCT_NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_2c0e_8f4a_4c55_9a1e_0d2c_0a11_0003);

/// The order a (customer, idempotency key) pair names: retries of one
/// checkout map to one order, on any gateway instance.
pub fn order_id(customer_id: &str, idempotency_key: &str) -> Uuid {
    let mut name = Vec::with_capacity(customer_id.len() + idempotency_key.len() + 1);
    name.extend_from_slice(customer_id.as_bytes());
    // A separator that cannot occur in either part keeps ("ab","c") and
    // ("a","bc") apart.
    name.push(0);
    name.extend_from_slice(idempotency_key.as_bytes());
    Uuid::new_v5(&ORDER_NAMESPACE, &name)
}

/// The id of the `index`-th message produced while handling `cause`.
pub fn derived_message_id(cause: Uuid, index: u32) -> Uuid {
    Uuid::new_v5(&cause, &index.to_be_bytes())
}

/// The id of the message a provider webhook event (the provider's event id,
/// e.g. `evt_…`) becomes: a redelivered webhook gets the same id, and the
/// copy is dropped.
pub fn webhook_message_id(event_id: &str) -> Uuid {
    Uuid::new_v5(&WEBHOOK_NAMESPACE, event_id.as_bytes())
}

/// The product a create request names when the client gives no product id:
/// retries under one `Idempotency-Key` create one product.
pub fn product_id(idempotency_key: &str) -> Uuid {
    Uuid::new_v5(&PRODUCT_NAMESPACE, idempotency_key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_id_is_stable_and_separates_parts() {
        assert_eq!(order_id("c1", "k1"), order_id("c1", "k1"));
        assert_ne!(order_id("ab", "c"), order_id("a", "bc"));
        assert_ne!(order_id("c1", "k1"), order_id("c2", "k1"));
    }

    #[test]
    fn product_id_is_stable_per_key() {
        assert_eq!(product_id("k1"), product_id("k1"));
        assert_ne!(product_id("k1"), product_id("k2"));
        assert_ne!(product_id("k1"), webhook_message_id("k1"));
    }

    #[test]
    fn webhook_message_id_is_stable_per_event() {
        assert_eq!(webhook_message_id("evt_1"), webhook_message_id("evt_1"));
        assert_ne!(webhook_message_id("evt_1"), webhook_message_id("evt_2"));
        assert_ne!(webhook_message_id("evt_1"), order_id("evt_1", ""));
    }
}
