//! The order state machine, in one table. Every status change goes through
//! [`transition`], so an illegal change is refused where it is attempted
//! instead of silently overwriting a status.

use d2c_proto::orders::v1::{Order, OrderStatus};

/// The refund id of the refund a cancellation makes: CANCELLING waits for
/// it, and the saga tells it from an operator's partial refunds by it.
pub const CANCEL_REFUND_ID: &str = "cancellation";

/// Whether `from → to` is a step of the order lifecycle.
pub fn is_allowed(from: OrderStatus, to: OrderStatus) -> bool {
    use OrderStatus::*;
    matches!(
        (from, to),
        (Placed, AwaitingPayment)
            // The payment was authorized before the last line was reserved.
            | (Placed, Confirmed)
            | (Placed, Rejected)
            | (AwaitingPayment, Confirmed)
            | (AwaitingPayment, Rejected)
            | (Confirmed, Fulfilling)
            | (Fulfilling, Fulfilled)
            | (Fulfilling, CaptureFailed)
            // A capture that succeeds after its deadline still counts.
            | (CaptureFailed, Fulfilled)
            | (Confirmed, Cancelling)
            | (Fulfilled, Cancelling)
            | (Cancelling, Cancelled)
            | (Cancelling, RefundFailed)
            | (RefundFailed, Cancelled)
    )
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an order that is {} cannot become {}", label(*.from), label(*.to))]
pub struct IllegalTransition {
    pub from: OrderStatus,
    pub to: OrderStatus,
}

/// Moves `order` to `to` at `now_ms`, or refuses.
pub fn transition(
    order: &mut Order,
    to: OrderStatus,
    now_ms: i64,
) -> Result<(), IllegalTransition> {
    let from = status_of(order);
    if !is_allowed(from, to) {
        return Err(IllegalTransition { from, to });
    }
    order.status = to as i32;
    order.updated_at_ms = now_ms;
    Ok(())
}

pub fn status_of(order: &Order) -> OrderStatus {
    OrderStatus::try_from(order.status).unwrap_or(OrderStatus::Unspecified)
}

/// The lower-case name used in messages and the HTTP API.
pub fn label(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Unspecified => "unknown",
        OrderStatus::Placed => "placed",
        OrderStatus::AwaitingPayment => "awaiting_payment",
        OrderStatus::Confirmed => "confirmed",
        OrderStatus::Rejected => "rejected",
        OrderStatus::Cancelling => "cancelling",
        OrderStatus::Cancelled => "cancelled",
        OrderStatus::Fulfilling => "fulfilling",
        OrderStatus::Fulfilled => "fulfilled",
        OrderStatus::CaptureFailed => "capture_failed",
        OrderStatus::RefundFailed => "refund_failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [OrderStatus; 11] = [
        OrderStatus::Unspecified,
        OrderStatus::Placed,
        OrderStatus::AwaitingPayment,
        OrderStatus::Confirmed,
        OrderStatus::Rejected,
        OrderStatus::Cancelling,
        OrderStatus::Cancelled,
        OrderStatus::Fulfilling,
        OrderStatus::Fulfilled,
        OrderStatus::CaptureFailed,
        OrderStatus::RefundFailed,
    ];

    #[test]
    fn exactly_the_documented_steps_are_allowed() {
        let allowed: Vec<_> = ALL
            .iter()
            .flat_map(|from| ALL.iter().map(move |to| (*from, *to)))
            .filter(|(from, to)| is_allowed(*from, *to))
            .map(|(from, to)| format!("{}->{}", label(from), label(to)))
            .collect();
        assert_eq!(
            allowed,
            [
                "placed->awaiting_payment",
                "placed->confirmed",
                "placed->rejected",
                "awaiting_payment->confirmed",
                "awaiting_payment->rejected",
                "confirmed->cancelling",
                "confirmed->fulfilling",
                "cancelling->cancelled",
                "cancelling->refund_failed",
                "fulfilling->fulfilled",
                "fulfilling->capture_failed",
                "fulfilled->cancelling",
                "capture_failed->fulfilled",
                "refund_failed->cancelled",
            ]
        );
    }

    #[test]
    fn terminal_states_do_not_move() {
        for terminal in [OrderStatus::Rejected, OrderStatus::Cancelled] {
            let mut order = Order {
                status: terminal as i32,
                ..Order::default()
            };
            for to in ALL {
                assert!(transition(&mut order, to, 1).is_err());
            }
            assert_eq!(status_of(&order), terminal);
        }
    }
}
