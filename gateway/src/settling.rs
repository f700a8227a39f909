//! Checkouts this gateway answered `202`, until their reply arrives.
//!
//! A client polls a `202`'s `Location` (`GET /orders/{id}`). Asking the
//! order's owner is a `GetOrder` round trip through `orders.messages`; at
//! 1,000 checkouts/s those polls (every 20 ms per waiting checkout in our
//! load generator) swamped the orders partitions that were settling the
//! very checkouts being polled. While this gateway still waits for a
//! checkout's reply, a poll by the same customer is answered `202` here.
//!
//! Consistency: the reply's arrival ends the entry, so the next poll asks
//! the owner, which by then knows the outcome. An entry also ends after its
//! time to live: a reply that never reaches this gateway costs polls a round
//! trip after that, never a "still settling" for longer. Entries are per
//! instance: a poll that reaches another gateway asks the owner, as before.

use moka::sync::Cache;
use std::time::Duration;

/// How long a checkout's polls are answered here at most.
pub const SETTLING_FOR: Duration = Duration::from_secs(30);

/// Checkouts waiting for their late reply, by order id and by correlation
/// id (what the reply carries).
pub struct Settling {
    customers_by_order: Cache<String, String>,
    orders_by_correlation: Cache<String, String>,
}

impl Settling {
    /// At most `capacity` checkouts, each for `ttl` at most.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let cache = || {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        };
        Self {
            customers_by_order: cache(),
            orders_by_correlation: cache(),
        }
    }

    /// `customer_id`'s checkout `order_id` was answered `202`; its reply
    /// will carry `correlation_id`.
    pub fn begin(&self, correlation_id: &str, order_id: &str, customer_id: &str) {
        self.customers_by_order
            .insert(order_id.to_owned(), customer_id.to_owned());
        self.orders_by_correlation
            .insert(correlation_id.to_owned(), order_id.to_owned());
    }

    /// A reply nobody waited for arrived: if it settles a checkout, polls
    /// ask the owner from now on.
    pub fn reply_arrived(&self, correlation_id: &str) {
        if let Some(order_id) = self.orders_by_correlation.remove(correlation_id) {
            self.customers_by_order.invalidate(&order_id);
        }
    }

    /// Whether `customer_id`'s order `order_id` is a checkout of this
    /// gateway still waiting for its reply. Another customer (or an
    /// operator) asks the owner.
    pub fn still_settling(&self, order_id: &str, customer_id: &str) -> bool {
        !customer_id.is_empty()
            && self
                .customers_by_order
                .get(order_id)
                .is_some_and(|owner| owner == customer_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkout_settles_when_its_reply_arrives() {
        let settling = Settling::new(100, SETTLING_FOR);
        settling.begin("c-1", "o-1", "alice");
        assert!(settling.still_settling("o-1", "alice"));
        settling.reply_arrived("c-other");
        assert!(settling.still_settling("o-1", "alice"));
        settling.reply_arrived("c-1");
        assert!(!settling.still_settling("o-1", "alice"));
    }

    #[test]
    fn only_its_customer_is_answered_here() {
        let settling = Settling::new(100, SETTLING_FOR);
        settling.begin("c-1", "o-1", "alice");
        assert!(!settling.still_settling("o-1", "mallory"));
        assert!(
            !settling.still_settling("o-1", ""),
            "an operator asks the owner"
        );
        assert!(!settling.still_settling("o-2", "alice"));
    }

    #[test]
    fn an_entry_ends_after_its_time_to_live() {
        let settling = Settling::new(100, Duration::from_millis(50));
        settling.begin("c-1", "o-1", "alice");
        std::thread::sleep(Duration::from_millis(120));
        assert!(!settling.still_settling("o-1", "alice"));
    }
}
