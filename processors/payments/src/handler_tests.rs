//! The payment state machine, driven through the handler against a real
//! (temporary) RocksDB store, the way the runtime runs it.

use crate::table::PaymentRead;
use crate::PaymentsHandler;
use d2c_proto::payments::v1::{
    provider_outcome::Kind, AuthorizePayment, PaymentAuthorized, PaymentDeclined, PaymentRefunded,
    PaymentRequested, PaymentResult, PaymentStatus, ProviderOutcome, RefundPayment,
    RefundRequested,
};
use d2c_proto::Envelope;
use d2c_runtime::handler::Destination;
use d2c_runtime::testing::TestStore;
use d2c_runtime::{Effects, HandlerError};
use d2c_topology::topic;
use prost::{Message, Name};

fn temp_store() -> TestStore {
    TestStore::new()
}

fn envelope_for<M: Name>(id: u128) -> Envelope {
    Envelope::new(M::full_name(), uuid::Uuid::from_u128(id), 1_700_000_000_000)
}

fn try_handle<M: Message + Name>(
    store: &TestStore,
    id: u128,
    message: &M,
) -> Result<Effects, HandlerError> {
    store.handle(
        &PaymentsHandler,
        &envelope_for::<M>(id),
        &message.encode_to_vec(),
    )
}

fn handle<M: Message + Name>(store: &TestStore, id: u128, message: &M) -> Effects {
    try_handle(store, id, message).expect("handled")
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
        }
    }
}

fn refund_outcome(order_id: &str) -> ProviderOutcome {
    ProviderOutcome {
        order_id: order_id.into(),
        kind: Kind::Refund as i32,
        approved: true,
        provider_ref: "re_1".into(),
        ..ProviderOutcome::default()
    }
}

/// Messages of type `M` sent to `logical_topic`, decoded.
fn sent<M: Message + Name + Default>(effects: &Effects, logical_topic: &str) -> Vec<M> {
    effects
        .outgoing()
        .iter()
        .filter(|out| out.destination == Destination::Topic(logical_topic.into()))
        .filter(|out| out.envelope.message_type == M::full_name())
        .map(|out| M::decode(out.payload.as_slice()).expect("decodes"))
        .collect()
}

fn results(effects: &Effects) -> Vec<PaymentResult> {
    sent(effects, topic::ORDERS_MESSAGES)
}

fn status(store: &TestStore, order_id: &str) -> PaymentStatus {
    let record = store
        .store
        .payment(order_id)
        .expect("read")
        .expect("recorded");
    PaymentStatus::try_from(record.status).expect("known status")
}

/// Authorize and approve `order_id`.
fn authorized(store: &TestStore, order_id: &str) {
    handle(store, 1, &authorize(order_id, "pm_card_visa"));
    handle(store, 2, &charge_outcome(order_id, true));
}

#[test]
fn payments_authorize_records_the_request_and_asks_the_provider() {
    let store = temp_store();
    let effects = handle(&store, 1, &authorize("o-1", "pm_card_visa"));
    let requested: Vec<PaymentRequested> = sent(&effects, topic::PAYMENTS_EVENTS);
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

    let repeat = handle(&store, 9, &authorize("o-1", "pm_card_visa"));
    assert!(repeat.outgoing().is_empty(), "in flight: nothing new");
    assert!(repeat.changes().is_empty());
}

#[test]
fn payments_approval_authorizes_and_answers_orders() {
    let store = temp_store();
    handle(&store, 1, &authorize("o-1", "pm_card_visa"));
    let effects = handle(&store, 2, &charge_outcome("o-1", true));
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
    let store = temp_store();
    authorized(&store, "o-1");
    let again = handle(&store, 3, &charge_outcome("o-1", true));
    assert!(again.outgoing().is_empty());
    assert!(again.changes().is_empty());
    let contradiction = handle(&store, 4, &charge_outcome("o-1", false));
    assert!(
        contradiction.outgoing().is_empty(),
        "the first outcome wins"
    );
    assert_eq!(status(&store, "o-1"), PaymentStatus::Authorized);
    let unknown = handle(&store, 5, &charge_outcome("o-unknown", true));
    assert!(unknown.outgoing().is_empty());
}

#[test]
fn payments_decline_is_recorded_and_answered() {
    let store = temp_store();
    handle(&store, 1, &authorize("o-1", "pm_card_chargeDeclined"));
    let effects = handle(&store, 2, &charge_outcome("o-1", false));
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
    let store = temp_store();
    authorized(&store, "o-1");
    let repeat = handle(&store, 7, &authorize("o-1", "pm_card_visa"));
    assert!(repeat.changes().is_empty());
    assert!(sent::<PaymentRequested>(&repeat, topic::PAYMENTS_EVENTS).is_empty());
    let answers = results(&repeat);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, PaymentStatus::Authorized as i32);
    assert_eq!(answers[0].provider_ref, "pi_1");

    handle(&store, 11, &authorize("o-2", "pm_card_chargeDeclined"));
    handle(&store, 12, &charge_outcome("o-2", false));
    let answers = results(&handle(
        &store,
        13,
        &authorize("o-2", "pm_card_chargeDeclined"),
    ));
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, PaymentStatus::Declined as i32);
    assert_eq!(answers[0].decline_code, "card_declined");
}

#[test]
fn payments_invalid_request_is_declined_without_asking_the_provider() {
    let store = temp_store();
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
        let effects = handle(&store, 100 + index as u128, &command);
        assert!(
            sent::<PaymentRequested>(&effects, topic::PAYMENTS_EVENTS).is_empty(),
            "{field}"
        );
        let answers = results(&effects);
        assert_eq!(answers.len(), 1, "{field}");
        assert_eq!(answers[0].status, PaymentStatus::Declined as i32);
        assert_eq!(answers[0].decline_code, "invalid_request");
        assert_eq!(status(&store, &order_id), PaymentStatus::Declined);
    }
    let effects = handle(&store, 200, &authorize("", "pm_card_visa"));
    assert_eq!(results(&effects)[0].decline_code, "invalid_request");
    assert!(
        effects.changes().is_empty(),
        "no record without an order id"
    );
}

#[test]
fn payments_refund_flow() {
    let store = temp_store();
    authorized(&store, "o-1");
    let refund = RefundPayment {
        order_id: "o-1".into(),
    };
    let requested = handle(&store, 3, &refund);
    let events: Vec<RefundRequested> = sent(&requested, topic::PAYMENTS_EVENTS);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].provider_ref, "pi_1");
    assert_eq!(events[0].amount_minor, 3_000);
    assert_eq!(events[0].idempotency_key, "d2c-refund-o-1");
    assert!(results(&requested).is_empty());
    assert_eq!(status(&store, "o-1"), PaymentStatus::RefundRequested);

    let mut failed = refund_outcome("o-1");
    failed.approved = false;
    let failed = handle(&store, 4, &failed);
    assert!(
        failed.outgoing().is_empty(),
        "a failed refund stays requested"
    );
    assert_eq!(status(&store, "o-1"), PaymentStatus::RefundRequested);

    let done = handle(&store, 5, &refund_outcome("o-1"));
    let events: Vec<PaymentRefunded> = sent(&done, topic::PAYMENTS_EVENTS);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].provider_ref, "re_1");
    let answers = results(&done);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, PaymentStatus::Refunded as i32);
    assert_eq!(answers[0].provider_ref, "re_1");
    let record = store.store.payment("o-1").expect("read").expect("recorded");
    assert_eq!(record.status, PaymentStatus::Refunded as i32);
    assert_eq!(record.refund_ref, "re_1");
    assert_eq!(record.provider_ref, "pi_1", "the charge's ref is kept");

    let duplicate = handle(&store, 6, &refund_outcome("o-1"));
    assert!(duplicate.outgoing().is_empty());
    let again = handle(&store, 7, &refund);
    let answers = results(&again);
    assert_eq!(
        answers.len(),
        1,
        "a repeated RefundPayment is answered again"
    );
    assert_eq!(answers[0].status, PaymentStatus::Refunded as i32);
    assert!(again.changes().is_empty());
    let authorize_again = results(&handle(&store, 8, &authorize("o-1", "pm_card_visa")));
    assert_eq!(authorize_again[0].status, PaymentStatus::Authorized as i32);
}

#[test]
fn payments_refund_twice_requests_one_refund() {
    let store = temp_store();
    authorized(&store, "o-1");
    let refund = RefundPayment {
        order_id: "o-1".into(),
    };
    let first = handle(&store, 3, &refund);
    let second = handle(&store, 4, &refund);
    assert_eq!(
        sent::<RefundRequested>(&first, topic::PAYMENTS_EVENTS).len(),
        1
    );
    assert!(second.outgoing().is_empty());
    assert!(second.changes().is_empty());
}

#[test]
fn payments_refund_without_a_charge_is_trivially_done() {
    let store = temp_store();
    let refund = |order_id: &str| RefundPayment {
        order_id: order_id.into(),
    };
    let none = handle(&store, 1, &refund("o-none"));
    let answers = results(&none);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, PaymentStatus::Refunded as i32);
    assert_eq!(answers[0].message, "nothing to refund");
    assert!(none.changes().is_empty());

    handle(
        &store,
        2,
        &authorize("o-declined", "pm_card_chargeDeclined"),
    );
    handle(&store, 3, &charge_outcome("o-declined", false));
    let declined = handle(&store, 4, &refund("o-declined"));
    assert_eq!(results(&declined)[0].message, "nothing to refund");
    assert!(sent::<RefundRequested>(&declined, topic::PAYMENTS_EVENTS).is_empty());

    handle(&store, 5, &authorize("o-flight", "pm_card_visa"));
    let in_flight = handle(&store, 6, &refund("o-flight"));
    assert!(in_flight.outgoing().is_empty(), "charge in flight: nothing");
    assert_eq!(status(&store, "o-flight"), PaymentStatus::Requested);
}

#[test]
fn payments_unknown_messages_are_malformed() {
    let store = temp_store();
    let error = try_handle(
        &store,
        1,
        &PaymentAuthorized {
            order_id: "o-1".into(),
            ..PaymentAuthorized::default()
        },
    )
    .expect_err("not a command");
    assert!(matches!(error, HandlerError::Malformed(_)));
    let mut no_kind = charge_outcome("o-1", true);
    no_kind.kind = Kind::Unspecified as i32;
    assert!(matches!(
        try_handle(&store, 2, &no_kind),
        Err(HandlerError::Malformed(_))
    ));
}

#[test]
fn payments_replay_gives_identical_effects() {
    let a = temp_store();
    let b = temp_store();
    let first = handle(&a, 9, &authorize("o-9", "pm_card_visa"));
    let second = handle(&b, 9, &authorize("o-9", "pm_card_visa"));
    assert_eq!(first.outgoing(), second.outgoing());
}
