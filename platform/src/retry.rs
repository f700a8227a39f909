//! The one retry-with-backoff every binary uses (`backon`): exponential,
//! doubling from a first delay to a cap, with no limit on attempts (callers
//! stop retrying by their `when` condition: an error that will not pass, a
//! revoked partition, a shutdown, a deadline).

pub use backon::{BackoffBuilder, BlockingRetryable, ExponentialBuilder, Retryable};
use std::time::Duration;

/// Waits `first`, then twice as long each time, at most `cap`, forever.
pub fn backoff(first: Duration, cap: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(cap)
        .with_factor(2.0)
        .without_max_times()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_never_end() {
        let delays: Vec<u128> = backoff(Duration::from_millis(100), Duration::from_millis(1_000))
            .build()
            .take(7)
            .map(|delay| delay.as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000, 1_000]);
    }
}
