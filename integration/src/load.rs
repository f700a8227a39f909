//! Open-model load: arrivals follow a fixed schedule (`start_i = t0 + i /
//! rate`) whatever the server does, and every latency is measured from the
//! scheduled start rather than the actual send. A closed-loop client would
//! slow down exactly when the server does and hide the queueing delay
//! (coordinated omission); here a slow server shows up as latency and errors
//! instead of a lower request rate.
//!
//! Shared by `loadgen` (one phase from the command line) and `bench` (every
//! phase and rate, with CPU and memory of every process).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Upper bound for the histograms; anything slower is clamped, and request
/// timeouts keep real values far below it anyway.
const HIST_MAX_US: u64 = 3_600_000_000;

/// How one scheduled operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationOutcome {
    /// 200/201: done.
    Done,
    /// 202 at first: the gateway stopped waiting and answered late. A
    /// checkout is only counted so once its order was then seen
    /// `confirmed` (its `Location` polled), and timed to that moment, not
    /// to the 202.
    Accepted,
    /// 409 out of stock or 402 declined: a correct business answer, timed
    /// like a success but counted apart.
    Refused,
    /// Anything else, by kind (`http_503`, `timeout`, `connect`, ...).
    Error(String),
}

/// Classifies a finished HTTP exchange. The body is drained first: the
/// connection only goes back to the pool once it has, and the response only
/// counts as complete once it has fully arrived.
pub async fn outcome_of(result: reqwest::Result<reqwest::Response>) -> OperationOutcome {
    let response = match result {
        Ok(response) => response,
        Err(e) => return OperationOutcome::Error(transport_error(&e).to_owned()),
    };
    let status = response.status().as_u16();
    if let Err(e) = response.bytes().await {
        return OperationOutcome::Error(transport_error(&e).to_owned());
    }
    outcome_of_status(status)
}

pub fn outcome_of_status(status: u16) -> OperationOutcome {
    match status {
        200 | 201 => OperationOutcome::Done,
        202 => OperationOutcome::Accepted,
        402 | 409 => OperationOutcome::Refused,
        s => OperationOutcome::Error(format!("http_{s}")),
    }
}

pub fn transport_error(e: &reqwest::Error) -> &'static str {
    if e.is_connect() {
        "connect"
    } else if e.is_timeout() {
        "timeout"
    } else {
        "other"
    }
}

/// One open-model run: `rate` arrivals a second for `warmup` (not measured)
/// then `duration` (measured).
#[derive(Debug, Clone)]
pub struct Schedule {
    pub rate: f64,
    pub duration: Duration,
    pub warmup: Duration,
    /// Arrivals beyond this many open operations count as
    /// `client_overloaded` instead of being sent.
    pub max_in_flight: usize,
    /// How long to wait for stragglers after the last arrival.
    pub drain: Duration,
    /// Prefix of the progress lines on stderr.
    pub label: String,
}

/// What a run measured. Latencies are from the scheduled start.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target_rate: f64,
    pub duration_s: f64,
    pub scheduled: u64,
    pub completed: u64,
    pub done: u64,
    /// Answered 202 at first; for checkouts, then seen confirmed and timed
    /// to the confirmation (a late rejection counts as refused, no
    /// confirmation before the timeout as the error `confirm_timeout`).
    pub accepted: u64,
    pub refused: u64,
    pub errors_total: u64,
    pub errors: BTreeMap<String, u64>,
    /// Answered operations (done, accepted, refused) per second of the
    /// measured window, or of the longer span until the last answer came.
    pub achieved_rate: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// `(quantile, ms)` from 0 to 99.99 %, for percentile plots.
    pub percentiles: Vec<(f64, f64)>,
    /// Answered operations during the warmup: a run that only worked while
    /// warming up still counts as having reached the server.
    #[serde(skip)]
    pub warmup_ok: u64,
}

#[derive(Default)]
struct Stats {
    done: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    errors_total: AtomicU64,
    warmup_ok: AtomicU64,
    warmup_finished: AtomicU64,
    /// Microseconds from the start of the measured window to the latest
    /// measured completion; the achieved rate is computed over this span.
    last_done_us: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    hist: Mutex<Option<Histogram<u64>>>,
}

impl Stats {
    fn record(
        &self,
        outcome: OperationOutcome,
        latency: Duration,
        measured: bool,
        since_window: Duration,
    ) {
        if !measured {
            self.warmup_finished.fetch_add(1, Ordering::Relaxed);
            if !matches!(outcome, OperationOutcome::Error(_)) {
                self.warmup_ok.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let counter = match outcome {
            OperationOutcome::Done => &self.done,
            OperationOutcome::Accepted => &self.accepted,
            OperationOutcome::Refused => &self.refused,
            OperationOutcome::Error(kind) => return self.error(kind),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(hist) = self
            .hist
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            hist.saturating_record(latency_us.max(1));
        }
        let done_us = u64::try_from(since_window.as_micros()).unwrap_or(u64::MAX);
        self.last_done_us.fetch_max(done_us, Ordering::Relaxed);
    }

    fn error(&self, kind: String) {
        self.errors_total.fetch_add(1, Ordering::Relaxed);
        *self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind)
            .or_default() += 1;
    }

    fn answered(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
            + self.accepted.load(Ordering::Relaxed)
            + self.refused.load(Ordering::Relaxed)
    }
}

/// Runs `operation(i)` for every arrival `i` of `schedule`, each on its own
/// task, and reports the measured window.
pub async fn run<F, Fut>(schedule: &Schedule, operation: F) -> Result<Report>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = OperationOutcome> + Send + 'static,
{
    let stats = Arc::new(Stats {
        hist: Mutex::new(Some(
            Histogram::new_with_bounds(1, HIST_MAX_US, 3).context("creating histogram")?,
        )),
        ..Stats::default()
    });
    let warmup_count = (schedule.warmup.as_secs_f64() * schedule.rate).ceil() as u64;
    let total = ((schedule.warmup + schedule.duration).as_secs_f64() * schedule.rate).ceil() as u64;
    let t0 = Instant::now();
    let window_start = t0 + Duration::from_secs_f64(warmup_count as f64 / schedule.rate);
    let sent = Arc::new(AtomicU64::new(0));
    let progress = tokio::spawn(report_progress(
        schedule.label.clone(),
        t0,
        total,
        Arc::clone(&stats),
        Arc::clone(&sent),
    ));

    let mut tasks = JoinSet::new();
    for i in 0..total {
        let scheduled_at = t0 + Duration::from_secs_f64(i as f64 / schedule.rate);
        tokio::time::sleep_until(scheduled_at).await;
        let measured = i >= warmup_count;
        while let Some(joined) = tasks.try_join_next() {
            if joined.is_err() {
                stats.error("panic".to_owned());
            }
        }
        if tasks.len() >= schedule.max_in_flight {
            let late = Instant::now().saturating_duration_since(window_start);
            let overloaded = OperationOutcome::Error("client_overloaded".to_owned());
            stats.record(overloaded, Duration::ZERO, measured, late);
            continue;
        }
        sent.fetch_add(1, Ordering::Relaxed);
        let pending = operation(i);
        let stats = Arc::clone(&stats);
        tasks.spawn(async move {
            let outcome = pending.await;
            let now = Instant::now();
            let latency = now.saturating_duration_since(scheduled_at);
            let since_window = now.saturating_duration_since(window_start);
            stats.record(outcome, latency, measured, since_window);
        });
    }

    let drain_deadline = Instant::now() + schedule.drain;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(drain_deadline, tasks.join_next()).await {
            Ok(Some(Err(_))) => stats.error("panic".to_owned()),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let abandoned = tasks.len();
    tasks.shutdown().await;
    for _ in 0..abandoned {
        stats.error("abandoned".to_owned());
    }
    progress.abort();
    report(schedule, &stats, total - warmup_count)
}

async fn report_progress(
    label: String,
    t0: Instant,
    total: u64,
    stats: Arc<Stats>,
    sent: Arc<AtomicU64>,
) {
    const EVERY: Duration = Duration::from_secs(5);
    let mut tick = tokio::time::interval_at(t0 + EVERY, EVERY);
    loop {
        tick.tick().await;
        let errors = stats.errors_total.load(Ordering::Relaxed);
        let finished = stats.answered() + errors + stats.warmup_finished.load(Ordering::Relaxed);
        let sent = sent.load(Ordering::Relaxed);
        eprintln!(
            "{label}: t={:.0}s sent={sent}/{total} answered={} errors={errors} in_flight={}",
            t0.elapsed().as_secs_f64(),
            stats.answered(),
            sent.saturating_sub(finished),
        );
    }
}

fn report(schedule: &Schedule, stats: &Stats, scheduled: u64) -> Result<Report> {
    let hist = stats
        .hist
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .context("histogram already taken")?;
    let errors_total = stats.errors_total.load(Ordering::Relaxed);
    let answered = stats.answered();
    // Over the nominal window, or longer if responses trailed past it, so a
    // backlog drained after the schedule ended does not inflate the rate.
    let duration_s = schedule.duration.as_secs_f64();
    let span_s = (stats.last_done_us.load(Ordering::Relaxed) as f64 / 1e6).max(duration_s);
    let ms = |q: f64| round_to(quantile_ms(&hist, q), 3);
    Ok(Report {
        target_rate: schedule.rate,
        duration_s,
        scheduled,
        completed: answered + errors_total,
        done: stats.done.load(Ordering::Relaxed),
        accepted: stats.accepted.load(Ordering::Relaxed),
        refused: stats.refused.load(Ordering::Relaxed),
        errors_total,
        errors: stats
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
        achieved_rate: round_to(answered as f64 / span_s, 1),
        p50_ms: ms(0.50),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: if hist.is_empty() {
            0.0
        } else {
            round_to(hist.max() as f64 / 1000.0, 3)
        },
        percentiles: percentile_curve(&hist),
        warmup_ok: stats.warmup_ok.load(Ordering::Relaxed),
    })
}

/// Ten points per "nine" from 0 % to 99.99 %: even spacing on a plot whose
/// x axis is `-log10(1 - q)`.
fn percentile_curve(hist: &Histogram<u64>) -> Vec<(f64, f64)> {
    if hist.is_empty() {
        return Vec::new();
    }
    (0..=40)
        .map(|step| {
            let q = 1.0 - 10f64.powf(-f64::from(step) / 10.0);
            (round_to(q, 6), round_to(quantile_ms(hist, q), 3))
        })
        .collect()
}

fn quantile_ms(hist: &Histogram<u64>, q: f64) -> f64 {
    if hist.is_empty() {
        return 0.0;
    }
    hist.value_at_quantile(q) as f64 / 1000.0
}

/// Keeps the JSON short; microsecond precision is all the histogram has.
pub fn round_to(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(rate: f64, max_in_flight: usize) -> Schedule {
        Schedule {
            rate,
            duration: Duration::from_millis(500),
            warmup: Duration::from_millis(100),
            max_in_flight,
            drain: Duration::from_secs(10),
            label: "test".to_owned(),
        }
    }

    #[tokio::test]
    async fn a_slow_server_shows_as_latency_from_the_scheduled_start() {
        // 200 arrivals a second, each taking 10 ms, one at a time: a closed
        // loop would send 100/s and report 10 ms; the open model keeps the
        // schedule, so the queue grows and the latency with it.
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        let report = run(&schedule(200.0, 10_000), |_| {
            let gate = Arc::clone(&gate);
            async move {
                let _one_at_a_time = gate.lock().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
                OperationOutcome::Done
            }
        })
        .await
        .expect("runs");
        assert_eq!(report.scheduled, 100);
        assert_eq!(report.done, 100, "{report:?}");
        assert!(report.p99_ms > 300.0, "queueing shows: {report:?}");
        assert!(report.achieved_rate < 150.0, "{report:?}");
    }

    #[tokio::test]
    async fn outcomes_are_counted_apart_and_overload_is_an_error() {
        let report = run(&schedule(100.0, 3), |i| async move {
            tokio::time::sleep(Duration::from_millis(if i % 2 == 0 { 1 } else { 200 })).await;
            match i % 4 {
                0 => OperationOutcome::Done,
                1 => OperationOutcome::Refused,
                2 => OperationOutcome::Accepted,
                _ => OperationOutcome::Error("http_503".to_owned()),
            }
        })
        .await
        .expect("runs");
        let counted = report.done + report.accepted + report.refused + report.errors_total;
        assert_eq!(counted, report.scheduled, "{report:?}");
        assert!(report.errors.contains_key("http_503"), "{report:?}");
        assert!(
            report.errors.contains_key("client_overloaded"),
            "{report:?}"
        );
        assert_eq!(report.percentiles.len(), 41);
        assert!(report.percentiles.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(outcome_of_status(201), OperationOutcome::Done);
        assert_eq!(outcome_of_status(202), OperationOutcome::Accepted);
        assert_eq!(outcome_of_status(409), OperationOutcome::Refused);
        assert_eq!(
            outcome_of_status(503),
            OperationOutcome::Error("http_503".to_owned())
        );
    }
}
