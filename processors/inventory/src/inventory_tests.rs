//! Handler tests against a real (temporary) RocksDB store, run the way the
//! runtime runs them: one message at a time, changes committed after each.

use crate::{handler, InventoryRead};
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::inventory::v1::{
    stock_changed::Reason, stock_reply, AdjustStock, CommitStock, GetStock, ReleaseStock,
    ReservationResult, ReservationStatus, ReserveStock, SetStock, StockChanged, StockLevel,
    StockRecord, StockRefused, StockReply,
};
use d2c_runtime::router::Router;
use d2c_runtime::testing::{on_topic, replies, TestEnv};
use d2c_runtime::{Effects, HandlerError};
use d2c_topology::topic;
use prost::{Message, Name};

/// The shared handler test environment; this crate's helpers are on
/// [`Helpers`].
type Fixture = TestEnv<Router>;

trait Helpers {
    fn stock(&self, sku: &str) -> Option<StockRecord>;
    fn level(&self, sku: &str) -> StockLevel;
    fn set(&mut self, sku: &str, on_hand: i64) -> StockReply;
    fn reserve(&mut self, order_id: &str, sku: &str, quantity: i64) -> Effects;
    fn release(&mut self, order_id: &str, sku: &str) -> Effects;
    fn commit(&mut self, order_id: &str, sku: &str) -> Effects;
}

impl Helpers for Fixture {
    fn stock(&self, sku: &str) -> Option<StockRecord> {
        self.test.store.stock(sku).expect("read stock")
    }

    fn level(&self, sku: &str) -> StockLevel {
        crate::level(&self.stock(sku).expect("stocked"))
    }

    fn set(&mut self, sku: &str, on_hand: i64) -> StockReply {
        stock_reply(&self.handle(&SetStock {
            sku: sku.into(),
            on_hand,
        }))
    }

    fn reserve(&mut self, order_id: &str, sku: &str, quantity: i64) -> Effects {
        self.handle(&ReserveStock {
            order_id: order_id.into(),
            sku: sku.into(),
            quantity,
        })
    }

    fn release(&mut self, order_id: &str, sku: &str) -> Effects {
        self.handle(&ReleaseStock {
            order_id: order_id.into(),
            sku: sku.into(),
        })
    }

    fn commit(&mut self, order_id: &str, sku: &str) -> Effects {
        self.handle(&CommitStock {
            order_id: order_id.into(),
            sku: sku.into(),
        })
    }
}

fn stock_reply(effects: &Effects) -> StockReply {
    let replies = replies(effects);
    assert_eq!(replies.len(), 1, "exactly one reply");
    assert_eq!(replies[0].envelope.message_type, StockReply::full_name());
    StockReply::decode(replies[0].payload.as_slice()).expect("reply decodes")
}

fn level_of(reply: StockReply) -> StockLevel {
    match reply.result {
        Some(stock_reply::Result::Level(level)) => level,
        other => panic!("level expected, got {other:?}"),
    }
}

fn rejection_of(reply: StockReply) -> Rejection {
    match reply.result {
        Some(stock_reply::Result::Rejected(rejection)) => rejection,
        other => panic!("rejection expected, got {other:?}"),
    }
}

/// The one ReservationResult sent to orders, checking it is keyed by order.
fn reservation_result(effects: &Effects) -> ReservationResult {
    let sent = on_topic(effects, topic::ORDERS_MESSAGES);
    assert_eq!(sent.len(), 1, "exactly one message to orders");
    assert_eq!(
        sent[0].envelope.message_type,
        ReservationResult::full_name()
    );
    let result = ReservationResult::decode(sent[0].payload.as_slice()).expect("result decodes");
    assert_eq!(sent[0].key, result.order_id.as_bytes());
    assert!(replies(effects).is_empty(), "saga answers are not replies");
    result
}

fn stock_changed(effects: &Effects) -> Vec<StockChanged> {
    on_topic(effects, topic::INVENTORY_EVENTS)
        .into_iter()
        .filter(|out| out.envelope.message_type == StockChanged::full_name())
        .map(|out| StockChanged::decode(out.payload.as_slice()).expect("event decodes"))
        .collect()
}

fn level(sku: &str, on_hand: i64, reserved: i64, sold: i64) -> StockLevel {
    StockLevel {
        sku: sku.into(),
        on_hand,
        reserved,
        available: on_hand - reserved,
        sold,
    }
}

#[test]
fn set_stock_records_announces_and_answers() {
    let mut fx = Fixture::new(handler());
    let effects = fx.handle(&SetStock {
        sku: "SKU-1".into(),
        on_hand: 10,
    });
    assert_eq!(level_of(stock_reply(&effects)), level("SKU-1", 10, 0, 0));
    let events = stock_changed(&effects);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, Reason::Set as i32);
    assert_eq!(
        on_topic(&effects, topic::INVENTORY_EVENTS)[0].key,
        b"SKU-1".to_vec()
    );
    assert_eq!(fx.level("SKU-1"), level("SKU-1", 10, 0, 0));
}

#[test]
fn set_stock_rejects_invalid_fields() {
    let mut fx = Fixture::new(handler());
    let rejection = rejection_of(fx.set("", 1));
    assert_eq!(
        (rejection.code, rejection.field.as_str()),
        (Code::Invalid as i32, "sku")
    );
    let effects = fx.handle(&SetStock {
        sku: "SKU-1".into(),
        on_hand: -1,
    });
    let rejection = rejection_of(stock_reply(&effects));
    assert_eq!(
        (rejection.code, rejection.field.as_str()),
        (Code::Invalid as i32, "on_hand")
    );
    assert!(effects.changes().is_empty());
    assert!(fx.stock("SKU-1").is_none());
}

#[test]
fn set_stock_below_reserved_is_refused() {
    let mut fx = Fixture::new(handler());
    fx.set("SKU-1", 10);
    fx.reserve("o-1", "SKU-1", 6);
    let effects = fx.handle(&SetStock {
        sku: "SKU-1".into(),
        on_hand: 5,
    });
    let rejection = rejection_of(stock_reply(&effects));
    assert_eq!(
        (rejection.code, rejection.field.as_str()),
        (Code::Conflict as i32, "on_hand")
    );
    assert!(effects.changes().is_empty());
    assert_eq!(fx.level("SKU-1"), level("SKU-1", 10, 6, 0));
    // Exactly the reserved units is fine: nothing left available.
    assert_eq!(level_of(fx.set("SKU-1", 6)), level("SKU-1", 6, 6, 0));
}

#[test]
fn reserve_within_stock_holds_units_and_answers_orders() {
    let mut fx = Fixture::new(handler());
    fx.set("SKU-1", 10);
    let effects = fx.reserve("o-1", "SKU-1", 4);
    assert_eq!(
        reservation_result(&effects),
        ReservationResult {
            order_id: "o-1".into(),
            sku: "SKU-1".into(),
            reserved: true,
            requested: 4,
            available: 0,
        }
    );
    let events = stock_changed(&effects);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, Reason::Reserved as i32);
    assert_eq!(events[0].order_id, "o-1");
    assert_eq!(events[0].quantity, 4);
    assert_eq!(events[0].level, Some(level("SKU-1", 10, 4, 0)));
    assert_eq!(fx.level("SKU-1"), level("SKU-1", 10, 4, 0));
    let record = fx
        .test
        .store
        .reservation("SKU-1", "o-1")
        .expect("read")
        .expect("recorded");
    assert_eq!(record.status, ReservationStatus::Reserved as i32);
    assert_eq!(record.quantity, 4);
}

#[test]
fn reserve_beyond_stock_is_refused_and_never_negative() {
    let mut fx = Fixture::new(handler());
    fx.set("SKU-1", 5);
    assert!(reservation_result(&fx.reserve("o-1", "SKU-1", 3)).reserved);
    let effects = fx.reserve("o-2", "SKU-1", 3);
    let result = reservation_result(&effects);
    assert!(!result.reserved);
    assert_eq!((result.requested, result.available), (3, 2));
    assert!(stock_changed(&effects).is_empty());
    let refused = on_topic(&effects, topic::INVENTORY_EVENTS);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].envelope.message_type, StockRefused::full_name());
    assert_eq!(fx.level("SKU-1"), level("SKU-1", 5, 3, 0));

    // Exactly what is left, then nothing more.
    assert!(reservation_result(&fx.reserve("o-3", "SKU-1", 2)).reserved);
    let result = reservation_result(&fx.reserve("o-4", "SKU-1", 1));
    assert!(!result.reserved);
    assert_eq!(result.available, 0);
    assert_eq!(fx.level("SKU-1"), level("SKU-1", 5, 5, 0));

    // Unknown SKUs have nothing available; quantities below 1 are refused.
    let result = reservation_result(&fx.reserve("o-5", "SKU-UNKNOWN", 1));
    assert!(!result.reserved);
    assert!(fx.stock("SKU-UNKNOWN").is_none());
    fx.set("SKU-2", 5);
    for (order, quantity) in [("o-6", 0), ("o-7", -3)] {
        assert!(!reservation_result(&fx.reserve(order, "SKU-2", quantity)).reserved);
    }
    assert_eq!(fx.level("SKU-2"), level("SKU-2", 5, 0, 0));
}

#[test]
fn duplicate_reserve_answers_identically_and_changes_nothing() {
    let mut fx = Fixture::new(handler());
    fx.set("SKU-1", 5);
    let first = reservation_result(&fx.reserve("o-1", "SKU-1", 4));
    let retry = fx.reserve("o-1", "SKU-1", 4);
    assert!(retry.changes().is_empty());
    assert_eq!(retry.outgoing().len(), 1, "only the answer to orders");
    assert_eq!(reservation_result(&retry), first);
    assert_eq!(fx.level("SKU-1"), level("SKU-1", 5, 4, 0));

    let refused = reservation_result(&fx.reserve("o-2", "SKU-1", 4));
    assert!(!refused.reserved);
    // More stock arrives, but the refusal stands for that order.
    fx.set("SKU-1", 50);
    let retry = fx.reserve("o-2", "SKU-1", 4);
    assert!(retry.changes().is_empty());
    assert_eq!(retry.outgoing().len(), 1);
    assert_eq!(reservation_result(&retry), refused);

    // A granted reservation is still reported granted after it was committed.
    fx.commit("o-1", "SKU-1");
    let retry = fx.reserve("o-1", "SKU-1", 4);
    assert!(retry.changes().is_empty());
    assert_eq!(reservation_result(&retry), first);
    assert_eq!(fx.level("SKU-1"), level("SKU-1", 46, 0, 4));
}

#[test]
fn release_returns_reserved_units() {
    let mut fx = Fixture::new(handler());
    fx.set("SKU-1", 5);
    fx.reserve("o-1", "SKU-1", 5);
    let effects = fx.release("o-1", "SKU-1");
    assert!(replies(&effects).is_empty());
    assert!(on_topic(&effects, topic::ORDERS_MESSAGES).is_empty());
    let events = stock_changed(&effects);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, Reason::Released as i32);
    assert_eq!(events[0].quantity, 5);
    assert_eq!(fx.level("SKU-1"), level("SKU-1", 5, 0, 0));
    // Released is final: again, or a commit after it, does nothing.
    for effects in [fx.release("o-1", "SKU-1"), fx.commit("o-1", "SKU-1")] {
        assert!(effects.changes().is_empty());
        assert!(effects.outgoing().is_empty());
    }
    assert_eq!(fx.level("SKU-1"), level("SKU-1", 5, 0, 0));
    assert!(reservation_result(&fx.reserve("o-2", "SKU-1", 5)).reserved);
}

#[test]
fn release_before_reserve_leaves_a_tombstone() {
    let mut fx = Fixture::new(handler());
    fx.set("SKU-1", 5);
    let effects = fx.release("o-1", "SKU-1");
    assert!(effects.outgoing().is_empty());
    let tombstone = fx
        .test
        .store
        .reservation("SKU-1", "o-1")
        .expect("read")
        .expect("tombstone");
    assert_eq!(tombstone.status, ReservationStatus::Released as i32);
    assert_eq!(tombstone.quantity, 0);

    let late = fx.reserve("o-1", "SKU-1", 2);
    assert!(late.changes().is_empty());
    let result = reservation_result(&late);
    assert!(!result.reserved);
    assert_eq!(result.requested, 2);
    assert_eq!(fx.level("SKU-1"), level("SKU-1", 5, 0, 0));
    // Releasing it again changes nothing.
    assert!(fx.release("o-1", "SKU-1").changes().is_empty());
}

#[test]
fn commit_moves_reserved_to_sold() {
    let mut fx = Fixture::new(handler());
    fx.set("SKU-1", 10);
    fx.reserve("o-1", "SKU-1", 3);
    let effects = fx.commit("o-1", "SKU-1");
    assert!(replies(&effects).is_empty());
    let events = stock_changed(&effects);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, Reason::Committed as i32);
    assert_eq!(events[0].level, Some(level("SKU-1", 7, 0, 3)));
    assert_eq!(fx.level("SKU-1"), level("SKU-1", 7, 0, 3));
    // A retried commit, or one without a reservation, does nothing.
    for effects in [fx.commit("o-1", "SKU-1"), fx.commit("o-9", "SKU-1")] {
        assert!(effects.changes().is_empty());
        assert!(effects.outgoing().is_empty());
    }
    assert_eq!(fx.level("SKU-1"), level("SKU-1", 7, 0, 3));
}

#[test]
fn release_of_committed_returns_stock() {
    let mut fx = Fixture::new(handler());
    fx.set("SKU-1", 10);
    fx.reserve("o-1", "SKU-1", 3);
    fx.commit("o-1", "SKU-1");
    let effects = fx.release("o-1", "SKU-1");
    let events = stock_changed(&effects);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, Reason::Returned as i32);
    assert_eq!(events[0].quantity, 3);
    assert_eq!(fx.level("SKU-1"), level("SKU-1", 10, 0, 0));
    assert!(fx.release("o-1", "SKU-1").changes().is_empty());
    assert_eq!(fx.level("SKU-1"), level("SKU-1", 10, 0, 0));
}

#[test]
fn adjustment_counts_once_per_id() {
    let mut fx = Fixture::new(handler());
    fx.set("SKU-1", 10);
    let adjust = |delta: i64, id: &str| AdjustStock {
        sku: "SKU-1".into(),
        delta,
        adjustment_id: id.into(),
    };
    let first = fx.handle(&adjust(5, "adj-1"));
    assert_eq!(level_of(stock_reply(&first)), level("SKU-1", 15, 0, 0));
    assert_eq!(stock_changed(&first)[0].reason, Reason::Adjusted as i32);
    let retry = fx.handle(&adjust(5, "adj-1"));
    assert!(retry.changes().is_empty());
    assert_eq!(retry.outgoing().len(), 1, "only the reply");
    assert_eq!(level_of(stock_reply(&retry)), level("SKU-1", 15, 0, 0));

    let second = fx.handle(&adjust(-3, "adj-2"));
    assert_eq!(level_of(stock_reply(&second)), level("SKU-1", 12, 0, 0));

    // Never below what is reserved, nor overflowing.
    fx.reserve("o-1", "SKU-1", 10);
    for (delta, id) in [(-3, "adj-3"), (i64::MAX, "adj-4")] {
        let refused = fx.handle(&adjust(delta, id));
        assert!(refused.changes().is_empty());
        let rejection = rejection_of(stock_reply(&refused));
        assert_eq!(
            (rejection.code, rejection.field.as_str()),
            (Code::Conflict as i32, "delta")
        );
    }
    assert_eq!(fx.level("SKU-1"), level("SKU-1", 12, 10, 0));

    let missing_id = fx.handle(&adjust(1, ""));
    let rejection = rejection_of(stock_reply(&missing_id));
    assert_eq!(
        (rejection.code, rejection.field.as_str()),
        (Code::Invalid as i32, "adjustment_id")
    );
}

#[test]
fn get_stock_answers_the_level_or_not_found() {
    let mut fx = Fixture::new(handler());
    let unknown = fx.handle(&GetStock {
        sku: "SKU-404".into(),
    });
    let rejection = rejection_of(stock_reply(&unknown));
    assert_eq!(
        (rejection.code, rejection.field.as_str()),
        (Code::NotFound as i32, "sku")
    );
    assert!(unknown.changes().is_empty());
    fx.set("SKU-1", 3);
    fx.reserve("o-1", "SKU-1", 1);
    let known = fx.handle(&GetStock {
        sku: "SKU-1".into(),
    });
    assert_eq!(level_of(stock_reply(&known)), level("SKU-1", 3, 1, 0));
    assert!(known.changes().is_empty());
}

#[test]
fn unknown_types_and_missing_ids_are_malformed() {
    let mut fx = Fixture::new(handler());
    let mut envelope = fx.envelope::<GetStock>();
    envelope.message_type = "d2c.inventory.v1.Nonsense".into();
    assert!(matches!(
        fx.try_handle_as(&envelope, &[]),
        Err(HandlerError::Malformed(_))
    ));
    let reserve = ReserveStock {
        order_id: String::new(),
        sku: "SKU-1".into(),
        quantity: 1,
    };
    let envelope = fx.envelope::<ReserveStock>();
    assert!(matches!(
        fx.try_handle_as(&envelope, &reserve.encode_to_vec()),
        Err(HandlerError::Malformed(_))
    ));
}

#[test]
fn replaying_a_message_gives_identical_effects() {
    let mut a = Fixture::new(handler());
    let mut b = Fixture::new(handler());
    for fx in [&mut a, &mut b] {
        fx.set("SKU-1", 5);
    }
    let first = a.reserve("o-1", "SKU-1", 2);
    let second = b.reserve("o-1", "SKU-1", 2);
    assert_eq!(first.outgoing(), second.outgoing());
}

/// A tiny deterministic generator (Knuth's MMIX LCG), so failures repeat.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

#[test]
fn random_saga_sequences_keep_invariants() {
    const SKUS: [&str; 2] = ["SKU-A", "SKU-B"];
    const ORDERS: [&str; 6] = ["o-1", "o-2", "o-3", "o-4", "o-5", "o-6"];
    for seed in [1_u64, 7, 42] {
        let mut fx = Fixture::new(handler());
        let mut random = Lcg(seed);
        let mut total = [0_i64; 2];
        let (mut granted, mut committed) = (0, 0);
        for (index, sku) in SKUS.iter().enumerate() {
            fx.set(sku, 8);
            total[index] = 8;
        }
        for step in 0..150 {
            let sku_index = random.below(SKUS.len() as u64) as usize;
            let sku = SKUS[sku_index];
            let order = ORDERS[random.below(ORDERS.len() as u64) as usize];
            match random.below(8) {
                0..=2 => {
                    let quantity = random.below(5) as i64;
                    let result = reservation_result(&fx.reserve(order, sku, quantity));
                    assert_eq!(result.order_id, order);
                    granted += usize::from(result.reserved);
                }
                3 | 4 => {
                    fx.release(order, sku);
                }
                5 | 6 => {
                    committed += usize::from(!fx.commit(order, sku).changes().is_empty());
                }
                _ => {
                    let delta = random.below(7) as i64 - 3;
                    let effects = fx.handle(&AdjustStock {
                        sku: sku.into(),
                        delta,
                        adjustment_id: format!("adj-{step}"),
                    });
                    if matches!(
                        stock_reply(&effects).result,
                        Some(stock_reply::Result::Level(_))
                    ) {
                        total[sku_index] += delta;
                    }
                }
            }
            for (index, sku) in SKUS.iter().enumerate() {
                let stock = fx.stock(sku).expect("stocked");
                let context = format!("seed {seed}, step {step}, {stock:?}");
                assert!(0 <= stock.reserved, "{context}");
                assert!(stock.reserved <= stock.on_hand, "{context}");
                assert!(stock.sold >= 0, "{context}");
                assert_eq!(stock.on_hand + stock.sold, total[index], "{context}");
                let (mut reserved, mut sold) = (0, 0);
                for order in ORDERS {
                    let Some(record) = fx.test.store.reservation(sku, order).expect("read") else {
                        continue;
                    };
                    match ReservationStatus::try_from(record.status) {
                        Ok(ReservationStatus::Reserved) => reserved += record.quantity,
                        Ok(ReservationStatus::Committed) => sold += record.quantity,
                        _ => {}
                    }
                }
                assert_eq!((stock.reserved, stock.sold), (reserved, sold), "{context}");
            }
        }
        // The sequence exercised the interesting paths, not only refusals.
        assert!(
            granted > 0 && committed > 0,
            "seed {seed}: {granted}, {committed}"
        );
    }
}
