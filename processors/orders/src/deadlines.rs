//! No saga waits forever. Each waiting step of an order has a deadline:
//! reservation (PLACED), authorization (AWAITING_PAYMENT), capture
//! (FULFILLING), void or refund (CANCELLING), and every pending partial
//! refund.
//!
//! The timer lives in the partition's state next to the order
//! (`Table::Deadlines`, key = due time big-endian ++ order id, and the due
//! time in the order's record), so it is restored with the order after a
//! crash or a rebalance. Time is message time: the runtime sends a `Tick` to
//! every partition it owns every `D2C_TICK_MS`, handled in order with the
//! other messages, and the tick's sent-at decides what is due. A timer fires
//! once: firing moves the order on, which replaces or clears its timer in
//! the same batch.
//!
//! On expiry the saga compensates and ends visibly: a reservation or
//! authorization that took too long rejects the order (stock released, a
//! late authorization voided); a capture becomes CAPTURE_FAILED; a
//! cancellation's refund REFUND_FAILED; a void that is never confirmed ends
//! the cancel anyway (nothing was taken; the hold lapses); a partial refund
//! is marked failed. Each is logged as an error (Slack) and counted
//! (`d2c_order_deadlines_expired_total{step}`). A late success still counts
//! (see the status table).

use crate::status::{label, status_of, CANCEL_REFUND_ID};
use d2c_proto::orders::v1::{OrderRecord, OrderStatus, RefundStatus};
use d2c_runtime::Effects;
use d2c_state::Table;
use std::sync::OnceLock;
use std::time::Duration;

/// How long each step may wait. Configuration, fixed for the life of the
/// process (set once at start), so handling stays a function of the state
/// and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadlines {
    /// D2C_DEADLINE_RESERVATION_MS
    pub reservation: Duration,
    /// D2C_DEADLINE_AUTHORIZATION_MS
    pub authorization: Duration,
    /// D2C_DEADLINE_CAPTURE_MS
    pub capture: Duration,
    /// D2C_DEADLINE_VOID_MS
    pub void: Duration,
    /// D2C_DEADLINE_REFUND_MS
    pub refund: Duration,
}

impl Default for Deadlines {
    /// Generous against a healthy platform (a checkout settles in tens of
    /// milliseconds) and a provider's retried calls, short enough that a
    /// stuck order is seen the same hour.
    fn default() -> Self {
        Self {
            reservation: Duration::from_secs(60),
            authorization: Duration::from_secs(120),
            capture: Duration::from_secs(600),
            void: Duration::from_secs(600),
            refund: Duration::from_secs(600),
        }
    }
}

impl Deadlines {
    /// From `D2C_DEADLINE_*_MS`, each defaulting as [`Deadlines::default`].
    pub fn from_env() -> Result<Self, String> {
        let defaults = Self::default();
        Ok(Self {
            reservation: millis_var("D2C_DEADLINE_RESERVATION_MS", defaults.reservation)?,
            authorization: millis_var("D2C_DEADLINE_AUTHORIZATION_MS", defaults.authorization)?,
            capture: millis_var("D2C_DEADLINE_CAPTURE_MS", defaults.capture)?,
            void: millis_var("D2C_DEADLINE_VOID_MS", defaults.void)?,
            refund: millis_var("D2C_DEADLINE_REFUND_MS", defaults.refund)?,
        })
    }
}

/// The environment variable `name` as a positive number of milliseconds,
/// `default` when unset.
pub fn millis_var(name: &str, default: Duration) -> Result<Duration, String> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| {
                format!("{name} must be a positive number of milliseconds, not {value:?}")
            }),
        Err(_) => Ok(default),
    }
}

static CONFIGURED: OnceLock<Deadlines> = OnceLock::new();

/// Sets the deadlines for this process (once, at start).
pub fn configure(deadlines: Deadlines) {
    let _ = CONFIGURED.set(deadlines);
}

pub fn current() -> &'static Deadlines {
    CONFIGURED.get_or_init(Deadlines::default)
}

/// What an order waits for now, and since when, if anything.
pub fn waiting_step(record: &OrderRecord) -> Option<(&'static str, i64, Duration)> {
    let order = record.order.as_ref()?;
    let deadlines = current();
    let since = order.updated_at_ms;
    match status_of(order) {
        OrderStatus::Placed => Some(("reservation", since, deadlines.reservation)),
        OrderStatus::AwaitingPayment => Some(("authorization", since, deadlines.authorization)),
        OrderStatus::Fulfilling => Some(("capture", since, deadlines.capture)),
        OrderStatus::Cancelling if pending_refund(record, CANCEL_REFUND_ID).is_some() => {
            Some(("refund", since, deadlines.refund))
        }
        OrderStatus::Cancelling => Some(("void", since, deadlines.void)),
        OrderStatus::Fulfilled => order
            .refunds
            .iter()
            .filter(|refund| refund.status == RefundStatus::Pending as i32)
            .map(|refund| refund.requested_at_ms)
            .min()
            .map(|since| ("refund", since, deadlines.refund)),
        _ => None,
    }
}

fn pending_refund<'a>(record: &'a OrderRecord, refund_id: &str) -> Option<&'a str> {
    record.order.as_ref()?.refunds.iter().find_map(|refund| {
        (refund.refund_id == refund_id && refund.status == RefundStatus::Pending as i32)
            .then_some(refund.refund_id.as_str())
    })
}

/// The timer key of `order_id` due at `due_ms`: ordered by due time.
pub fn timer_key(due_ms: i64, order_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + order_id.len());
    key.extend_from_slice(&due_ms.max(0).to_be_bytes());
    key.extend_from_slice(order_id.as_bytes());
    key
}

/// Keeps the order's timer in step with what it waits for: the old timer
/// goes, a new one is set at (step start + step deadline).
pub fn reschedule(record: &mut OrderRecord, effects: &mut Effects) {
    let Some(order_id) = record.order.as_ref().map(|order| order.order_id.clone()) else {
        return;
    };
    let due = waiting_step(record).map(|(_, since, limit)| since + limit.as_millis() as i64);
    let due = due.unwrap_or(0);
    if due == record.deadline_ms {
        return;
    }
    if record.deadline_ms > 0 {
        effects.delete(Table::Deadlines, &timer_key(record.deadline_ms, &order_id));
    }
    if due > 0 {
        effects.put(Table::Deadlines, &timer_key(due, &order_id), Vec::new());
    }
    record.deadline_ms = due;
}

/// The order id of a timer key, and its due time.
pub fn parse_timer_key(key: &[u8]) -> Option<(i64, String)> {
    let (due, order_id) = key.split_at_checked(8)?;
    let due = i64::from_be_bytes(due.try_into().ok()?);
    Some((due, String::from_utf8(order_id.to_vec()).ok()?))
}

/// A log line and a label for an expired step.
pub fn describe(record: &OrderRecord, step: &str) -> String {
    let status = record
        .order
        .as_ref()
        .map(|order| label(status_of(order)))
        .unwrap_or("unknown");
    format!("the {step} step did not finish in time (order {status})")
}
