//! The payment state machine, driven through the handler against a real
//! (temporary) RocksDB store, the way the runtime runs it.

use crate::handler;
use crate::table::PaymentRead;
use d2c_proto::payments::v1::{
    provider_outcome::Kind, AuthorizePayment, CapturePayment, CaptureRequested, PaymentAuthorized,
    PaymentCaptured, PaymentDeclined, PaymentRefunded, PaymentRequested, PaymentResult,
    PaymentStatus, PaymentStepFailed, PaymentVoided, ProviderOutcome, RefundPayment,
    RefundRequested, VoidPayment, VoidRequested,
};
use d2c_runtime::handler::Destination;
use d2c_runtime::router::Router;
use d2c_runtime::testing::{sent, TestEnv};
use d2c_runtime::{Effects, HandlerError};
use d2c_topology::topic;

/// The payments handler against a fresh store.
fn fixture() -> TestEnv<Router> {
    TestEnv::new(handler())
}

fn authorize(order_id: &str, token: &str) -> AuthorizePayment {
    AuthorizePayment {
        order_id: order_id.into(),
        customer_id: "cust-1".into(),
        amount_minor: 3_000,
        currency: "EUR".into(),
        payment_method: token.into(),
    }
}

fn charge_outcome(order_id: &str, approved: bool) -> ProviderOutcome {
    if approved {
        ProviderOutcome {
            order_id: order_id.into(),
            kind: Kind::Charge as i32,
            approved: true,
            provider_ref: "pi_1".into(),
            ..ProviderOutcome::default()
        }
    } else {
        ProviderOutcome {
            order_id: order_id.into(),
            kind: Kind::Charge as i32,
            approved: false,
            provider_ref: "pi_1".into(),
            decline_code: "card_declined".into(),
            message: "Your card was declined.".into(),
            ..ProviderOutcome::default()
        }
    }
}

fn refund_outcome(order_id: &str, refund_id: &str) -> ProviderOutcome {
    ProviderOutcome {
        order_id: order_id.into(),
        kind: Kind::Refund as i32,
        approved: true,
        provider_ref: format!("re_{refund_id}"),
        refund_id: refund_id.into(),
        ..ProviderOutcome::default()
    }
}

fn results(effects: &Effects) -> Vec<PaymentResult> {
    sent(effects, topic::ORDERS_MESSAGES)
}

fn status(store: &TestEnv<Router>, order_id: &str) -> PaymentStatus {
    let record = store
        .store()
        .payment(order_id)
        .expect("read")
        .expect("recorded");
    PaymentStatus::try_from(record.status).expect("known status")
}

/// Authorize and approve `order_id`.
fn authorized(store: &mut TestEnv<Router>, order_id: &str) {
    store.handle(&authorize(order_id, "pm_card_visa"));
    store.handle(&charge_outcome(order_id, true));
}

#[test]
fn payments_authorize_records_the_request_and_asks_the_provider() {
    let mut store = fixture();
    let effects = store.handle(&authorize("o-1", "pm_card_visa"));
    let requested: Vec<PaymentRequested> = sent(&effects, topic::PAYMENTS_PROVIDER_REQUESTS);
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0].order_id, "o-1");
    assert_eq!(requested[0].amount_minor, 3_000);
    assert_eq!(requested[0].payment_method, "pm_card_visa");
    assert_eq!(requested[0].idempotency_key, "d2c-charge-o-1");
    assert_eq!(effects.outgoing()[0].key, b"o-1");
    assert!(
        results(&effects).is_empty(),
        "no answer before the provider's"
    );
    assert_eq!(status(&store, "o-1"), PaymentStatus::Requested);

    let repeat = store.handle(&authorize("o-1", "pm_card_visa"));
    assert!(repeat.outgoing().is_empty(), "in flight: nothing new");
    assert!(repeat.changes().is_empty());
}

#[test]
fn payments_approval_authorizes_and_answers_orders() {
    let mut store = fixture();
    store.handle(&authorize("o-1", "pm_card_visa"));
    let effects = store.handle(&charge_outcome("o-1", true));
    let events: Vec<PaymentAuthorized> = sent(&effects, topic::PAYMENTS_EVENTS);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].provider_ref, "pi_1");
    assert_eq!(events[0].amount_minor, 3_000);
    let answers = results(&effects);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, PaymentStatus::Authorized as i32);
    assert_eq!(answers[0].provider_ref, "pi_1");
    let answer = effects
        .outgoing()
        .iter()
        .find(|out| out.destination == Destination::Topic(topic::ORDERS_MESSAGES.into()))
        .expect("answer");
    assert_eq!(answer.key, b"o-1");
    assert_eq!(status(&store, "o-1"), PaymentStatus::Authorized);
}

#[test]
fn payments_duplicate_outcome_changes_nothing() {
    let mut store = fixture();
    authorized(&mut store, "o-1");
    let again = store.handle(&charge_outcome("o-1", true));
    assert!(again.outgoing().is_empty());
    assert!(again.changes().is_empty());
    let contradiction = store.handle(&charge_outcome("o-1", false));
    assert!(
        contradiction.outgoing().is_empty(),
        "the first outcome wins"
    );
    assert_eq!(status(&store, "o-1"), PaymentStatus::Authorized);
    let unknown = store.handle(&charge_outcome("o-unknown", true));
    assert!(unknown.outgoing().is_empty());
}

#[test]
fn payments_decline_is_recorded_and_answered() {
    let mut store = fixture();
    store.handle(&authorize("o-1", "pm_card_chargeDeclined"));
    let effects = store.handle(&charge_outcome("o-1", false));
    let events: Vec<PaymentDeclined> = sent(&effects, topic::PAYMENTS_EVENTS);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].decline_code, "card_declined");
    let answers = results(&effects);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, PaymentStatus::Declined as i32);
    assert_eq!(answers[0].decline_code, "card_declined");
    assert_eq!(answers[0].message, "Your card was declined.");
    assert_eq!(status(&store, "o-1"), PaymentStatus::Declined);
}

#[test]
fn payments_duplicate_authorize_after_decision_resends_the_result() {
    let mut store = fixture();
    authorized(&mut store, "o-1");
    let repeat = store.handle(&authorize("o-1", "pm_card_visa"));
    assert!(repeat.changes().is_empty());
    assert!(sent::<PaymentRequested>(&repeat, topic::PAYMENTS_PROVIDER_REQUESTS).is_empty());
    let answers = results(&repeat);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, PaymentStatus::Authorized as i32);
    assert_eq!(answers[0].provider_ref, "pi_1");

    store.handle(&authorize("o-2", "pm_card_chargeDeclined"));
    store.handle(&charge_outcome("o-2", false));
    let answers = results(&store.handle(&authorize("o-2", "pm_card_chargeDeclined")));
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, PaymentStatus::Declined as i32);
    assert_eq!(answers[0].decline_code, "card_declined");
}

#[test]
fn payments_invalid_request_is_declined_without_asking_the_provider() {
    let mut store = fixture();
    type Mutation = fn(&mut AuthorizePayment);
    let cases: [(&str, Mutation); 3] = [
        ("payment_method", |c| c.payment_method.clear()),
        ("amount", |c| c.amount_minor = -1),
        ("currency", |c| c.currency = "eur".into()),
    ];
    for (index, (field, mutate)) in cases.into_iter().enumerate() {
        let order_id = format!("o-bad-{index}");
        let mut command = authorize(&order_id, "pm_card_visa");
        mutate(&mut command);
        let effects = store.handle(&command);
        assert!(
            sent::<PaymentRequested>(&effects, topic::PAYMENTS_PROVIDER_REQUESTS).is_empty(),
            "{field}"
        );
        let answers = results(&effects);
        assert_eq!(answers.len(), 1, "{field}");
        assert_eq!(answers[0].status, PaymentStatus::Declined as i32);
        assert_eq!(answers[0].decline_code, "invalid_request");
        assert_eq!(status(&store, &order_id), PaymentStatus::Declined);
    }
    let effects = store.handle(&authorize("", "pm_card_visa"));
    assert_eq!(results(&effects)[0].decline_code, "invalid_request");
    assert!(
        effects.changes().is_empty(),
        "no record without an order id"
    );
}

fn refund(order_id: &str, refund_id: &str, amount_minor: i64) -> RefundPayment {
    RefundPayment {
        order_id: order_id.into(),
        refund_id: refund_id.into(),
        amount_minor,
    }
}

fn outcome(order_id: &str, kind: Kind, approved: bool) -> ProviderOutcome {
    ProviderOutcome {
        order_id: order_id.into(),
        kind: kind as i32,
        approved,
        provider_ref: "pi_1".into(),
        decline_code: if approved {
            String::new()
        } else {
            "expired".into()
        },
        ..ProviderOutcome::default()
    }
}

/// An authorized payment of 30.00, captured.
fn captured(store: &mut TestEnv<Router>, order_id: &str) {
    authorized(store, order_id);
    let capture = CapturePayment {
        order_id: order_id.into(),
    };
    let requested = store.handle(&capture);
    let events: Vec<CaptureRequested> = sent(&requested, topic::PAYMENTS_PROVIDER_REQUESTS);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].idempotency_key, format!("d2c-capture-{order_id}"));
    assert_eq!(events[0].amount_minor, 3_000);
    assert!(results(&requested).is_empty(), "answered by the outcome");
    assert!(store.handle(&capture).outgoing().is_empty(), "in flight");
    let done = store.handle(&outcome(order_id, Kind::Capture, true));
    let answers = results(&done);
    assert_eq!(answers[0].status, PaymentStatus::Captured as i32);
    assert_eq!(answers[0].amount_minor, 3_000);
    assert_eq!(
        sent::<PaymentCaptured>(&done, topic::PAYMENTS_EVENTS).len(),
        1
    );
    assert_eq!(status(store, order_id), PaymentStatus::Captured);
}

#[test]
fn payments_capture_then_a_repeat_answers_captured() {
    let mut store = fixture();
    captured(&mut store, "o-1");
    let again = store.handle(&CapturePayment {
        order_id: "o-1".into(),
    });
    assert_eq!(results(&again)[0].status, PaymentStatus::Captured as i32);
    assert!(again.changes().is_empty());
    let duplicate = store.handle(&outcome("o-1", Kind::Capture, true));
    assert!(duplicate.outgoing().is_empty());
    let authorize_again = results(&store.handle(&authorize("o-1", "pm_card_visa")));
    assert_eq!(authorize_again[0].status, PaymentStatus::Authorized as i32);
}

#[test]
fn payments_a_refused_capture_is_recorded_and_announced() {
    let mut store = fixture();
    authorized(&mut store, "o-1");
    store.handle(&CapturePayment {
        order_id: "o-1".into(),
    });
    let refused = store.handle(&outcome("o-1", Kind::Capture, false));
    assert_eq!(
        results(&refused)[0].status,
        PaymentStatus::CaptureFailed as i32
    );
    assert_eq!(
        sent::<PaymentStepFailed>(&refused, topic::PAYMENTS_EVENTS).len(),
        1
    );
    assert_eq!(status(&store, "o-1"), PaymentStatus::CaptureFailed);
}

#[test]
fn payments_void_releases_the_hold_once() {
    let mut store = fixture();
    authorized(&mut store, "o-1");
    let void = VoidPayment {
        order_id: "o-1".into(),
    };
    let requested = store.handle(&void);
    let events: Vec<VoidRequested> = sent(&requested, topic::PAYMENTS_PROVIDER_REQUESTS);
    assert_eq!(events[0].idempotency_key, "d2c-void-o-1");
    assert!(store.handle(&void).outgoing().is_empty(), "in flight");
    let done = store.handle(&outcome("o-1", Kind::Void, true));
    assert_eq!(results(&done)[0].status, PaymentStatus::Voided as i32);
    assert_eq!(
        sent::<PaymentVoided>(&done, topic::PAYMENTS_EVENTS).len(),
        1
    );
    assert_eq!(
        results(&store.handle(&void))[0].status,
        PaymentStatus::Voided as i32
    );
    let no_capture = store.handle(&CapturePayment {
        order_id: "o-1".into(),
    });
    assert_eq!(
        results(&no_capture)[0].status,
        PaymentStatus::CaptureFailed as i32
    );
}

#[test]
fn payments_partial_refunds_never_exceed_the_capture() {
    let mut store = fixture();
    captured(&mut store, "o-1");
    let first = store.handle(&refund("o-1", "r-1", 1_000));
    let events: Vec<RefundRequested> = sent(&first, topic::PAYMENTS_PROVIDER_REQUESTS);
    assert_eq!(events[0].amount_minor, 1_000);
    assert_eq!(events[0].refund_id, "r-1");
    assert_eq!(events[0].idempotency_key, "d2c-refund-o-1-r-1");
    assert!(results(&first).is_empty(), "answered by the outcome");
    assert!(store
        .handle(&refund("o-1", "r-1", 1_000))
        .outgoing()
        .is_empty());

    let second = store.handle(&refund("o-1", "r-2", 1_500));
    assert_eq!(
        sent::<RefundRequested>(&second, topic::PAYMENTS_PROVIDER_REQUESTS).len(),
        1
    );
    // 1,000 + 1,500 pending: 500 left, so 600 is refused and recorded nowhere.
    let too_much = store.handle(&refund("o-1", "r-3", 600));
    assert_eq!(
        results(&too_much)[0].status,
        PaymentStatus::RefundFailed as i32
    );
    assert!(too_much.changes().is_empty());

    let done = store.handle(&refund_outcome("o-1", "r-1"));
    let answers = results(&done);
    assert_eq!(
        (answers[0].status, answers[0].refund_id.as_str()),
        (PaymentStatus::Refunded as i32, "r-1")
    );
    assert_eq!(answers[0].amount_minor, 1_000);
    assert_eq!(
        sent::<PaymentRefunded>(&done, topic::PAYMENTS_EVENTS)[0].refund_id,
        "r-1"
    );
    assert!(store
        .handle(&refund_outcome("o-1", "r-1"))
        .outgoing()
        .is_empty());
    let repeat = store.handle(&refund("o-1", "r-1", 1_000));
    assert_eq!(results(&repeat)[0].status, PaymentStatus::Refunded as i32);

    let mut refused = refund_outcome("o-1", "r-2");
    refused.approved = false;
    let refused = store.handle(&refused);
    assert_eq!(
        results(&refused)[0].status,
        PaymentStatus::RefundFailed as i32
    );
    assert_eq!(
        sent::<PaymentStepFailed>(&refused, topic::PAYMENTS_EVENTS).len(),
        1
    );
    // The refused 1,500 is available again: 0 means "the rest", 2,000.
    let rest = store.handle(&refund("o-1", "r-4", 0));
    assert_eq!(
        sent::<RefundRequested>(&rest, topic::PAYMENTS_PROVIDER_REQUESTS)[0].amount_minor,
        2_000
    );
}

#[test]
fn payments_refund_without_a_capture_is_trivially_done_or_refused() {
    let mut store = fixture();
    let none = store.handle(&refund("o-none", "r", 0));
    let answers = results(&none);
    assert_eq!(answers[0].status, PaymentStatus::Refunded as i32);
    assert_eq!(answers[0].message, "nothing to refund");
    assert!(none.changes().is_empty());

    store.handle(&authorize("o-declined", "pm_card_chargeDeclined"));
    store.handle(&charge_outcome("o-declined", false));
    let declined = store.handle(&refund("o-declined", "r", 0));
    assert_eq!(results(&declined)[0].message, "nothing to refund");
    assert!(sent::<RefundRequested>(&declined, topic::PAYMENTS_PROVIDER_REQUESTS).is_empty());

    authorized(&mut store, "o-held");
    let held = store.handle(&refund("o-held", "r", 0));
    assert_eq!(
        results(&held)[0].status,
        PaymentStatus::RefundFailed as i32,
        "void it instead"
    );
    assert_eq!(status(&store, "o-held"), PaymentStatus::Authorized);
}

#[test]
fn payments_unknown_messages_are_malformed() {
    let mut store = fixture();
    let error = store
        .try_handle(&PaymentAuthorized {
            order_id: "o-1".into(),
            ..PaymentAuthorized::default()
        })
        .expect_err("not a command");
    assert!(matches!(error, HandlerError::Malformed(_)));
    let mut no_kind = charge_outcome("o-1", true);
    no_kind.kind = Kind::Unspecified as i32;
    assert!(matches!(
        store.try_handle(&no_kind),
        Err(HandlerError::Malformed(_))
    ));
}

#[test]
fn payments_replay_gives_identical_effects() {
    let first = fixture().handle(&authorize("o-9", "pm_card_visa"));
    let second = fixture().handle(&authorize("o-9", "pm_card_visa"));
    assert_eq!(first.outgoing(), second.outgoing());
}
