//! Per-customer limits on the checkout flow (OWASP API6, unrestricted access
//! to a sensitive business flow): each customer may start at most
//! `per_minute` checkouts a minute (`POST /orders`, `POST
//! /carts/{id}/checkout`), with bursts of `burst`. Beyond that the answer is
//! `429` with `Retry-After`, before anything reaches Kafka.
//!
//! The limit is per gateway instance (GCRA, in memory): with N instances a
//! customer spread over all of them gets up to N times the rate, which still
//! bounds abuse; a shared store would put a network hop on every checkout.

use crate::error::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

pub struct CheckoutLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl CheckoutLimiter {
    /// `per_minute` 0 means no limit.
    pub fn new(per_minute: u32, burst: u32) -> Arc<Self> {
        let limiter = NonZeroU32::new(per_minute).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        Arc::new(Self {
            limiter,
            clock: DefaultClock::default(),
        })
    }

    /// Counts one checkout of `customer_id`, or refuses it with how long to
    /// wait.
    pub fn check(&self, customer_id: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(&customer_id.to_owned())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(self.clock.now());
                ApiError::rate_limited(
                    "too many checkouts for this customer; retry after the time in Retry-After",
                    wait,
                )
            })
    }

    /// Forgets customers whose allowance is full again, so the table holds
    /// only recent customers; run now and then.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Runs [`Self::forget_idle`] every `every` for the life of the process.
    pub fn spawn_eviction(self: &Arc<Self>, every: Duration) {
        let limiter = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                limiter.forget_idle();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_customer_waits_and_others_do_not() {
        let limiter = CheckoutLimiter::new(60, 3);
        for _ in 0..3 {
            assert!(limiter.check("ann").is_ok());
        }
        let refused = limiter.check("ann").expect_err("over the burst");
        assert_eq!(refused.status.as_u16(), 429);
        assert_eq!(refused.retry_after_secs, Some(1), "one a second at 60/min");
        assert!(limiter.check("bob").is_ok(), "limits are per customer");
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = CheckoutLimiter::new(0, 0);
        for _ in 0..1_000 {
            assert!(limiter.check("ann").is_ok());
        }
    }
}
