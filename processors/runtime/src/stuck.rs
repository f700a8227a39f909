//! Noticing a Kafka client stuck inside librdkafka, and giving up on the
//! process when nothing in it can repair the client.
//!
//! librdkafka 2.12 can keep waiting for a group coordinator whose broker
//! died (librdkafka issue 5511): a consumer that never settles in its group,
//! a partition that never gets its starting offset, a transaction that never
//! ends. A fresh client looks the coordinator up again.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long each of a set of things has been waiting without a break.
pub(crate) struct Waiting<K> {
    limit: Duration,
    since: Mutex<HashMap<K, Instant>>,
}

impl<K: Eq + Hash + Clone> Waiting<K> {
    /// `limit` zero: nothing ever waits past it.
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            since: Mutex::new(HashMap::new()),
        }
    }

    /// `waiting` are what waits at `now` (anything else has stopped
    /// waiting, and its clock starts again next time); returns those that
    /// have waited for the limit or longer, with how long.
    pub fn past_limit(
        &self,
        waiting: impl IntoIterator<Item = K>,
        now: Instant,
    ) -> Vec<(K, Duration)> {
        let mut since = self
            .since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.limit.is_zero() {
            since.clear();
            return Vec::new();
        }
        let waiting: Vec<K> = waiting.into_iter().collect();
        since.retain(|key, _| waiting.contains(key));
        waiting
            .into_iter()
            .filter_map(|key| {
                let waited = now.duration_since(*since.entry(key.clone()).or_insert(now));
                (waited >= self.limit).then_some((key, waited))
            })
            .collect()
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }
}

/// Ends the process at once, non-zero, for its supervisor to start a fresh
/// one: for a client wedged where no orderly stop can finish (its threads
/// cannot be joined, the batches waiting on it cannot complete). Nothing of
/// an open transaction is ever read; the next instance fences it.
pub(crate) fn exit_for_fresh_start(reason: &str) -> ! {
    tracing::error!(%reason, "The Kafka client is stuck; exiting for a fresh start");
    d2c_platform::telemetry::flush();
    std::process::exit(70);
}

#[cfg(test)]
mod tests {
    use super::Waiting;
    use std::time::{Duration, Instant};

    #[test]
    fn each_key_has_its_own_clock_and_stopping_resets_it() {
        let waiting = Waiting::new(Duration::from_secs(10));
        let start = Instant::now();
        assert!(waiting.past_limit(["a"], start).is_empty());
        let later = start + Duration::from_secs(10);
        assert_eq!(
            waiting.past_limit(["a", "b"], later),
            [("a", Duration::from_secs(10))]
        );
        assert!(waiting.past_limit(["b"], later).is_empty());
        assert!(waiting
            .past_limit(["a"], later + Duration::from_secs(5))
            .is_empty());
    }

    #[test]
    fn a_zero_limit_never_reports_anything() {
        let waiting = Waiting::new(Duration::ZERO);
        let start = Instant::now();
        assert!(waiting.past_limit([()], start).is_empty());
        assert!(waiting
            .past_limit([()], start + Duration::from_secs(3600))
            .is_empty());
    }
}
