//! Business metrics of the orders processor, registered in the runtime's
//! registry so the admin endpoint's `/metrics` serves them.
//!
//! They are counted from the order events a committed batch sent
//! ([`d2c_runtime::Handler::committed`]), never in the handlers: a handler
//! runs again when its batch is replayed, a commit happens once.

use d2c_platform::metrics::METRICS as RUNTIME;
use d2c_proto::common::v1::rejection::Code;
use d2c_proto::orders::v1::{
    Order, OrderCancelled, OrderConfirmed, OrderDeadlineExpired, OrderRejected, OrderUpdated,
};
use d2c_runtime::handler::Destination;
use d2c_runtime::Outgoing;
use d2c_topology::topic;
use prometheus::{IntCounter, IntCounterVec, Opts};
use prost::{Message, Name};
use std::sync::LazyLock;

pub const SAGA_OUTCOMES: &str = "d2c_saga_outcomes_total";
pub const ORDERS_CONFIRMED: &str = "d2c_orders_confirmed_total";
pub const REVENUE_MINOR: &str = "d2c_revenue_minor_total";
pub const DEADLINES_EXPIRED: &str = "d2c_order_deadlines_expired_total";
pub const STEP_FAILURES: &str = "d2c_order_step_failures_total";

/// `outcome` label values of [`SAGA_OUTCOMES`].
pub mod outcome {
    pub const CONFIRMED: &str = "confirmed";
    pub const REJECTED: &str = "rejected";
    pub const CANCELLED: &str = "cancelled";
}

/// A `reason` label longer than this is cut: labels are for grouping.
const MAX_REASON_LEN: usize = 40;

pub struct OrdersMetrics {
    pub saga_outcomes: IntCounterVec,
    pub orders_confirmed: IntCounter,
    pub revenue_minor: IntCounterVec,
    pub deadlines_expired: IntCounterVec,
    pub step_failures: IntCounterVec,
}

fn register<M: prometheus::core::Collector + Clone + 'static>(metric: M) -> M {
    RUNTIME
        .registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|error| panic!("orders metric registered twice: {error}"));
    metric
}

impl OrdersMetrics {
    fn new() -> Self {
        Self {
            saga_outcomes: register(
                IntCounterVec::new(
                    Opts::new(
                        SAGA_OUTCOMES,
                        "Checkouts settled, by outcome (confirmed, rejected, cancelled) and rejection reason (empty unless rejected).",
                    ),
                    &["outcome", "reason"],
                )
                .unwrap_or_else(|error| panic!("metric {SAGA_OUTCOMES} is malformed: {error}")),
            ),
            orders_confirmed: register(
                IntCounter::new(ORDERS_CONFIRMED, "Orders confirmed (paid, stock committed).")
                    .unwrap_or_else(|error| {
                        panic!("metric {ORDERS_CONFIRMED} is malformed: {error}")
                    }),
            ),
            revenue_minor: register(
                IntCounterVec::new(
                    Opts::new(
                        REVENUE_MINOR,
                        "Totals of confirmed orders in minor units (cents), by currency; refunds are not subtracted.",
                    ),
                    &["currency"],
                )
                .unwrap_or_else(|error| panic!("metric {REVENUE_MINOR} is malformed: {error}")),
            ),
            deadlines_expired: register(
                IntCounterVec::new(
                    Opts::new(
                        DEADLINES_EXPIRED,
                        "Saga steps that passed their deadline, by step (reservation, authorization, capture, void, refund).",
                    ),
                    &["step"],
                )
                .unwrap_or_else(|error| panic!("metric {DEADLINES_EXPIRED} is malformed: {error}")),
            ),
            step_failures: register(
                IntCounterVec::new(
                    Opts::new(
                        STEP_FAILURES,
                        "Orders that reached a failure an operator must look at, by step (capture_failed, refund_failed).",
                    ),
                    &["step"],
                )
                .unwrap_or_else(|error| panic!("metric {STEP_FAILURES} is malformed: {error}")),
            ),
        }
    }
}

pub static METRICS: LazyLock<OrdersMetrics> = LazyLock::new(OrdersMetrics::new);

/// One settled checkout, as the metrics see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Confirmed { currency: String, total_minor: i64 },
    Rejected { reason: String },
    Cancelled,
}

/// The settled checkouts among `outgoing`: the OrderConfirmed,
/// OrderRejected and OrderCancelled events sent to orders.events.
pub fn settled(outgoing: &[Outgoing]) -> Vec<Settled> {
    outgoing
        .iter()
        .filter(
            |out| matches!(&out.destination, Destination::Topic(t) if t == topic::ORDERS_EVENTS),
        )
        .filter_map(|out| {
            let message_type = out.envelope.message_type.as_str();
            let payload = out.payload.as_slice();
            if message_type == OrderConfirmed::full_name() {
                let order = OrderConfirmed::decode(payload).ok()?.order?;
                Some(Settled::Confirmed {
                    currency: order.currency,
                    total_minor: order.total_minor,
                })
            } else if message_type == OrderRejected::full_name() {
                let order = OrderRejected::decode(payload).ok()?.order?;
                Some(Settled::Rejected {
                    reason: rejection_reason(&order),
                })
            } else if message_type == OrderCancelled::full_name() {
                Some(Settled::Cancelled)
            } else {
                None
            }
        })
        .collect()
}

/// Counts the checkouts a committed batch settled, and reports (once per
/// commit, so to Slack once) every deadline that passed and every step that
/// failed for good.
pub fn record(outgoing: &[Outgoing]) {
    for event in outgoing.iter().filter(
        |out| matches!(&out.destination, Destination::Topic(t) if t == topic::ORDERS_EVENTS),
    ) {
        let payload = event.payload.as_slice();
        if event.envelope.message_type == OrderDeadlineExpired::full_name() {
            if let Ok(expired) = OrderDeadlineExpired::decode(payload) {
                METRICS
                    .deadlines_expired
                    .with_label_values(&[&expired.step])
                    .inc();
                tracing::error!(order_id = %expired.order_id, step = %expired.step,
                    "An order's {} step passed its deadline; the saga compensated", expired.step);
            }
        } else if event.envelope.message_type == OrderUpdated::full_name() {
            if let Ok(updated) = OrderUpdated::decode(payload) {
                if matches!(updated.change.as_str(), "capture_failed" | "refund_failed") {
                    METRICS
                        .step_failures
                        .with_label_values(&[&updated.change])
                        .inc();
                    let order = updated.order.unwrap_or_default();
                    tracing::error!(order_id = %order.order_id, change = %updated.change, reason = %order.reason,
                        "An order needs an operator: {}", updated.change);
                }
            }
        }
    }
    for settled in settled(outgoing) {
        match settled {
            Settled::Confirmed {
                currency,
                total_minor,
            } => {
                METRICS
                    .saga_outcomes
                    .with_label_values(&[outcome::CONFIRMED, ""])
                    .inc();
                METRICS.orders_confirmed.inc();
                METRICS
                    .revenue_minor
                    .with_label_values(&[&currency])
                    .inc_by(u64::try_from(total_minor).unwrap_or(0));
            }
            Settled::Rejected { reason } => METRICS
                .saga_outcomes
                .with_label_values(&[outcome::REJECTED, &reason])
                .inc(),
            Settled::Cancelled => METRICS
                .saga_outcomes
                .with_label_values(&[outcome::CANCELLED, ""])
                .inc(),
        }
    }
}

/// Why an order was rejected, as a label: the decline code for a declined
/// payment (`insufficient_funds`, `card_declined`, …), else the rejection's
/// code (`out_of_stock`). Decline codes come from the payment provider, so
/// they are cut to a short `[a-z0-9_]` word to keep the label set small.
pub fn rejection_reason(order: &Order) -> String {
    let Some(rejection) = &order.rejection else {
        return "unknown".into();
    };
    let reason: String = rejection
        .reason
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(MAX_REASON_LEN)
        .collect();
    if !reason.is_empty() {
        return reason;
    }
    let code = Code::try_from(rejection.code).unwrap_or(Code::Unspecified);
    let name = code.as_str_name();
    name.strip_prefix("CODE_")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use d2c_proto::common::v1::Rejection;
    use d2c_proto::orders::v1::OrderPlaced;
    use d2c_runtime::Effects;

    fn order(currency: &str, total_minor: i64, rejection: Option<Rejection>) -> Order {
        Order {
            order_id: "o-1".into(),
            currency: currency.into(),
            total_minor,
            rejection,
            ..Order::default()
        }
    }

    fn declined(reason: &str) -> Option<Rejection> {
        Some(Rejection {
            code: Code::PaymentDeclined as i32,
            reason: reason.into(),
            ..Rejection::default()
        })
    }

    #[test]
    fn settled_checkouts_are_read_from_the_order_events() {
        let mut effects = Effects::new(&crate::testing::envelope(1));
        effects.send(
            topic::ORDERS_EVENTS,
            "o-1",
            &OrderPlaced {
                order: Some(order("EUR", 1_000, None)),
            },
        );
        effects.send(
            topic::ORDERS_EVENTS,
            "o-1",
            &OrderConfirmed {
                order: Some(order("EUR", 2_500, None)),
            },
        );
        // The same message to another topic is not an order event.
        effects.send(
            topic::INVENTORY_MESSAGES,
            "o-1",
            &OrderConfirmed {
                order: Some(order("EUR", 9_999, None)),
            },
        );
        let out_of_stock = Some(Rejection {
            code: Code::OutOfStock as i32,
            ..Rejection::default()
        });
        effects.send(
            topic::ORDERS_EVENTS,
            "o-2",
            &OrderRejected {
                order: Some(order("EUR", 100, out_of_stock)),
            },
        );
        effects.send(
            topic::ORDERS_EVENTS,
            "o-3",
            &OrderRejected {
                order: Some(order("USD", 100, declined("insufficient_funds"))),
            },
        );
        effects.send(
            topic::ORDERS_EVENTS,
            "o-4",
            &OrderCancelled {
                order: Some(order("USD", 100, None)),
            },
        );
        assert_eq!(
            settled(effects.outgoing()),
            [
                Settled::Confirmed {
                    currency: "EUR".into(),
                    total_minor: 2_500
                },
                Settled::Rejected {
                    reason: "out_of_stock".into()
                },
                Settled::Rejected {
                    reason: "insufficient_funds".into()
                },
                Settled::Cancelled,
            ]
        );
    }

    #[test]
    fn the_handler_counts_a_confirmed_checkout_when_its_batch_commits() {
        use crate::testing::{confirmed_order, Harness};
        use d2c_runtime::Handler;

        let harness = Harness::new();
        let effects = confirmed_order(&harness);
        let confirmed = METRICS.orders_confirmed.get();
        let revenue = METRICS.revenue_minor.with_label_values(&["EUR"]).get();
        let outcomes = METRICS
            .saga_outcomes
            .with_label_values(&[outcome::CONFIRMED, ""])
            .get();
        harness.handler().committed(effects.outgoing());
        assert_eq!(METRICS.orders_confirmed.get(), confirmed + 1);
        assert_eq!(
            METRICS.revenue_minor.with_label_values(&["EUR"]).get(),
            revenue + 3_000
        );
        assert_eq!(
            METRICS
                .saga_outcomes
                .with_label_values(&[outcome::CONFIRMED, ""])
                .get(),
            outcomes + 1
        );
    }

    #[test]
    fn provider_reasons_become_short_label_words() {
        assert_eq!(
            rejection_reason(&order("EUR", 1, declined("Card-Declined!"))),
            "card_declined_"
        );
        let long = "x".repeat(100);
        assert_eq!(
            rejection_reason(&order("EUR", 1, declined(&long))).len(),
            MAX_REASON_LEN
        );
        assert_eq!(
            rejection_reason(&order("EUR", 1, declined(""))),
            "payment_declined"
        );
        assert_eq!(rejection_reason(&order("EUR", 1, None)), "unknown");
    }
}
