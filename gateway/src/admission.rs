//! Admission control: how many requests this gateway keeps in flight through
//! Kafka at once.
//!
//! Past the limit a request is answered `503` with `Retry-After` before
//! anything reaches Kafka. Without a limit, a load above what the processors
//! can confirm only lengthens the queue ahead of them: every request waits
//! longer, past the reply timeout, and fewer orders are confirmed in time
//! than the platform could confirm (measured: at 1,000 checkouts/s on a box
//! that confirms about 500/s, 185/s were confirmed within 10 s).
//!
//! The limit adapts (AIMD, from `tower-acc`): a reply slower than the
//! `slow` threshold, or none before the reply timeout, shrinks it by a
//! tenth; a timely reply while at least half of it is in use grows it by
//! one. It starts at its maximum, so a load the processors keep up with is
//! never refused; it only comes down once replies are slow.

use crate::metrics::GATEWAY_METRICS;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tower_acc::{Aimd, Algorithm as _};

/// The limit's bounds and what counts as a slow reply.
#[derive(Clone, Debug)]
pub struct AdmissionSettings {
    /// The limit at start, and its ceiling.
    pub max: usize,
    /// The limit never goes below this.
    pub min: usize,
    /// A reply slower than this shrinks the limit.
    pub slow: Duration,
}

/// Why the settings cannot make a limit.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("D2C_ADMISSION_MIN ({min}) must be at least 1 and at most D2C_ADMISSION_MAX ({max})")]
    Bounds { min: usize, max: usize },
}

/// The limit of this gateway instance; shared by every request it serves.
pub struct Admission {
    state: Mutex<State>,
}

struct State {
    limit: Aimd,
    in_flight: usize,
}

/// A request let in: it holds its place until it ends. Say how it ended
/// with [`Admitted::replied`] or [`Admitted::timed_out`]; dropped without
/// either (the client went away, the send failed), it teaches the limit
/// nothing.
pub struct Admitted {
    admission: Arc<Admission>,
    started: Instant,
    ended: bool,
}

impl Admission {
    pub fn new(settings: &AdmissionSettings) -> Result<Arc<Self>, AdmissionError> {
        let AdmissionSettings { max, min, slow } = *settings;
        if min == 0 || min > max {
            return Err(AdmissionError::Bounds { min, max });
        }
        let limit = Aimd::builder()
            .initial_limit(max)
            .max_limit(max)
            .min_limit(min)
            .timeout(slow)
            .build();
        GATEWAY_METRICS.admission_limit.set(gauge(max));
        Ok(Arc::new(Self {
            state: Mutex::new(State {
                limit,
                in_flight: 0,
            }),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A place for one more request, or `None` when the limit is reached.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut state = self.lock();
        if state.in_flight >= state.limit.max_concurrency() {
            GATEWAY_METRICS.requests_shed.inc();
            return None;
        }
        state.in_flight += 1;
        Some(Admitted {
            admission: Arc::clone(self),
            started: Instant::now(),
            ended: false,
        })
    }

    /// Requests in flight at most, as things stand.
    pub fn limit(&self) -> usize {
        self.lock().limit.max_concurrency()
    }

    fn end(&self, rtt: Duration, timed_out: bool, canceled: bool) {
        let mut state = self.lock();
        let in_flight = state.in_flight;
        state.limit.update(rtt, in_flight, timed_out, canceled);
        state.in_flight = in_flight.saturating_sub(1);
        GATEWAY_METRICS
            .admission_limit
            .set(gauge(state.limit.max_concurrency()));
    }
}

impl Admitted {
    /// The reply arrived.
    pub fn replied(mut self) {
        self.ended = true;
        self.admission.end(self.started.elapsed(), false, false);
    }

    /// No reply before the reply timeout.
    pub fn timed_out(mut self) {
        self.ended = true;
        self.admission.end(self.started.elapsed(), true, false);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if !self.ended {
            self.admission.end(self.started.elapsed(), false, true);
        }
    }
}

fn gauge(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, min: usize, slow: Duration) -> Arc<Admission> {
        Admission::new(&AdmissionSettings { max, min, slow }).expect("valid settings")
    }

    #[test]
    fn requests_past_the_limit_are_refused_until_one_ends() {
        let admission = admission(3, 1, Duration::from_secs(60));
        let held: Vec<Admitted> = (0..3).map(|_| admission.admit().expect("room")).collect();
        assert!(admission.admit().is_none(), "the fourth is over the limit");
        let mut held = held.into_iter();
        held.next().expect("held").replied();
        assert!(admission.admit().is_some(), "a place was freed");
    }

    #[test]
    fn slow_replies_shrink_the_limit_to_its_floor() {
        let admission = admission(100, 10, Duration::ZERO);
        let full: Vec<Admitted> = (0..100).map(|_| admission.admit().expect("room")).collect();
        // Every reply is slower than a zero threshold.
        for admitted in full {
            admitted.replied();
        }
        assert_eq!(admission.limit(), 10, "shrunk to the floor");
        let busy: Vec<Admitted> = (0..10).map(|_| admission.admit().expect("room")).collect();
        assert!(admission.admit().is_none(), "the floor is the limit now");
        drop(busy);
    }

    #[test]
    fn timely_replies_while_busy_raise_the_limit() {
        let admission = admission(20, 5, Duration::from_millis(50));
        for _ in 0..20 {
            admission.admit().expect("room").timed_out();
        }
        assert_eq!(admission.limit(), 5);
        let abandoned: Vec<Admitted> = (0..5).map(|_| admission.admit().expect("room")).collect();
        drop(abandoned);
        assert_eq!(admission.limit(), 5, "abandoned requests teach nothing");
        let busy: Vec<Admitted> = (0..5).map(|_| admission.admit().expect("room")).collect();
        for admitted in busy {
            admitted.replied();
        }
        assert!(admission.limit() > 5, "limit {}", admission.limit());
    }

    #[test]
    fn a_floor_above_the_ceiling_is_refused() {
        let settings = AdmissionSettings {
            max: 5,
            min: 6,
            slow: Duration::from_secs(1),
        };
        assert!(Admission::new(&settings).is_err());
        let zero = AdmissionSettings { min: 0, ..settings };
        assert!(Admission::new(&zero).is_err());
    }
}
