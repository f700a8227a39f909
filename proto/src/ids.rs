//! Deterministic identifiers. Everything that must come out the same when a
//! request is retried or a message replayed is a UUIDv5 of its cause.

use uuid::Uuid;

const ORDER_NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_2c0e_8f4a_4c55_9a1e_0d2c_0a11_0001);
const WEBHOOK_NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_2c0e_8f4a_4c55_9a1e_0d2c_0a11_0002);
const PRODUCT_NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_2c0e_8f4a_4c55_9a1e_0d2c_0a11_0003);
const CUSTOMER_NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_2c0e_8f4a_4c55_9a1e_0d2c_0a11_0004);
const CART_NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_2c0e_8f4a_4c55_9a1e_0d2c_0a11_0005);
const ADDRESS_NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_2c0e_8f4a_4c55_9a1e_0d2c_0a11_0006);
const REFUND_NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_2c0e_8f4a_4c55_9a1e_0d2c_0a11_0007);

/// The order a (customer, idempotency key) pair names: retries of one
/// checkout map to one order, on any gateway instance.
pub fn order_id(customer_id: &str, idempotency_key: &str) -> Uuid {
    Uuid::new_v5(&ORDER_NAMESPACE, &pair(customer_id, idempotency_key))
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

/// An e-mail address as accounts know it: trimmed and lower case, so that
/// `Ann@Example.com ` and `ann@example.com` are one account.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The customer an e-mail address names: every registration and login of
/// one address meets at one owner (the partition of this id), which is what
/// makes "this e-mail is taken" decidable without a lock.
pub fn customer_id(email: &str) -> Uuid {
    Uuid::new_v5(&CUSTOMER_NAMESPACE, normalise_email(email).as_bytes())
}

/// The cart a create request names: retries under one `Idempotency-Key`
/// open one cart.
pub fn cart_id(customer_id: &str, idempotency_key: &str) -> Uuid {
    Uuid::new_v5(&CART_NAMESPACE, &pair(customer_id, idempotency_key))
}

/// The refund a refund request names: retries under one `Idempotency-Key`
/// make one refund of the order.
pub fn refund_id(order_id: &str, idempotency_key: &str) -> Uuid {
    Uuid::new_v5(&REFUND_NAMESPACE, &pair(order_id, idempotency_key))
}

/// The address an add request names: retries under one `Idempotency-Key`
/// add one address.
pub fn address_id(customer_id: &str, idempotency_key: &str) -> Uuid {
    Uuid::new_v5(&ADDRESS_NAMESPACE, &pair(customer_id, idempotency_key))
}

/// Two names joined by a byte that occurs in neither, so ("ab","c") and
/// ("a","bc") stay apart.
fn pair(first: &str, second: &str) -> Vec<u8> {
    let mut name = Vec::with_capacity(first.len() + second.len() + 1);
    name.extend_from_slice(first.as_bytes());
    name.push(0);
    name.extend_from_slice(second.as_bytes());
    name
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
    fn customer_id_ignores_case_and_spaces() {
        assert_eq!(
            customer_id(" Ann@Example.com"),
            customer_id("ann@example.com")
        );
        assert_ne!(
            customer_id("ann@example.com"),
            customer_id("bob@example.com")
        );
        assert_ne!(cart_id("c1", "k1"), cart_id("c1", "k2"));
        assert_ne!(cart_id("ab", "c"), cart_id("a", "bc"));
    }

    #[test]
    fn webhook_message_id_is_stable_per_event() {
        assert_eq!(webhook_message_id("evt_1"), webhook_message_id("evt_1"));
        assert_ne!(webhook_message_id("evt_1"), webhook_message_id("evt_2"));
        assert_ne!(webhook_message_id("evt_1"), order_id("evt_1", ""));
    }
}
