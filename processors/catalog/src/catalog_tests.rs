//! Handler tests against a real (temporary) RocksDB store, run the way the
//! runtime runs them: one message at a time, changes committed after each.

use crate::{handler, CatalogRead};
use d2c_proto::catalog::v1::{
    product_reply, ArchiveProduct, CreateProduct, GetProduct, Price, Product, ProductArchived,
    ProductCreated, ProductReply, ProductUpdated, UpdateProduct, Variant,
};
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::Envelope;
use d2c_runtime::handler::Outgoing;
use d2c_runtime::router::Router;
use d2c_runtime::testing::{on_topic, replies, TestEnv};
use d2c_runtime::Effects;
use d2c_topology::topic;
use prost::{Message, Name};

const T0: i64 = 1_700_000_000_000;

/// The shared handler test environment; this crate's helpers are on
/// [`Helpers`].
type Fixture = TestEnv<Router>;

trait Helpers {
    fn stored(&self, product_id: &str) -> Option<Product>;
}

impl Helpers for Fixture {
    fn stored(&self, product_id: &str) -> Option<Product> {
        self.test.store.product(product_id).expect("read product")
    }
}

fn variant(sku: &str, prices: &[(&str, i64)]) -> Variant {
    Variant {
        sku: sku.into(),
        name: format!("{sku} variant"),
        prices: prices
            .iter()
            .map(|(currency, amount_minor)| Price {
                currency: (*currency).into(),
                amount_minor: *amount_minor,
            })
            .collect(),
    }
}

fn create(product_id: &str) -> CreateProduct {
    CreateProduct {
        product_id: product_id.into(),
        name: "Linen shirt".into(),
        description: "A shirt made of linen".into(),
        category: "shirts".into(),
        variants: vec![
            variant("SHIRT-S", &[("EUR", 4_900), ("USD", 5_500)]),
            variant("SHIRT-M", &[("EUR", 4_900)]),
        ],
    }
}

fn update(product_id: &str, expected_version: i64, name: &str) -> UpdateProduct {
    let create = create(product_id);
    UpdateProduct {
        product_id: product_id.into(),
        expected_version,
        name: name.into(),
        description: create.description,
        category: create.category,
        variants: create.variants,
    }
}

fn reply(effects: &Effects) -> ProductReply {
    let replies = replies(effects);
    assert_eq!(replies.len(), 1, "exactly one reply");
    assert_eq!(replies[0].envelope.message_type, ProductReply::full_name());
    ProductReply::decode(replies[0].payload.as_slice()).expect("reply decodes")
}

fn product_of(effects: &Effects) -> Product {
    match reply(effects).result {
        Some(product_reply::Result::Product(product)) => product,
        other => panic!("product expected, got {other:?}"),
    }
}

fn rejection_of(effects: &Effects) -> Rejection {
    match reply(effects).result {
        Some(product_reply::Result::Rejected(rejection)) => rejection,
        other => panic!("rejection expected, got {other:?}"),
    }
}

fn assert_rejected(effects: &Effects, code: Code, field: &str) {
    let rejection = rejection_of(effects);
    assert_eq!(
        (rejection.code, rejection.field.as_str()),
        (code as i32, field),
        "{rejection:?}"
    );
    assert!(events(effects).is_empty(), "a refusal announces nothing");
    assert!(effects.changes().is_empty(), "a refusal changes nothing");
}

fn events(effects: &Effects) -> Vec<&Outgoing> {
    on_topic(effects, topic::CATALOG_EVENTS)
}

fn only_event<M: Message + Name + Default>(effects: &Effects) -> (Vec<u8>, M) {
    let events = events(effects);
    assert_eq!(events.len(), 1, "exactly one event");
    assert_eq!(events[0].envelope.message_type, M::full_name());
    let event = M::decode(events[0].payload.as_slice()).expect("event decodes");
    (events[0].key.clone(), event)
}

#[test]
fn catalog_create_answers_records_and_announces() {
    let mut fx = Fixture::new(handler());
    let effects = fx.handle(&create("P-1"));
    let product = product_of(&effects);
    assert_eq!(product.product_id, "P-1");
    assert_eq!(product.name, "Linen shirt");
    assert_eq!(product.category, "shirts");
    assert_eq!(product.variants, create("P-1").variants);
    assert_eq!(product.version, 1);
    assert!(!product.archived);
    assert_eq!(product.updated_at_ms, T0 + 1_000, "time is the sent-at");
    assert_eq!(fx.stored("P-1"), Some(product.clone()));
    let (key, event) = only_event::<ProductCreated>(&effects);
    assert_eq!(key, b"P-1".to_vec());
    assert_eq!(event.product, Some(product.clone()));
    assert_eq!(replies(&effects)[0].key, b"P-1".to_vec());

    let got = fx.handle(&GetProduct {
        product_id: "P-1".into(),
    });
    assert_eq!(product_of(&got), product);
    assert!(events(&got).is_empty());
}

#[test]
fn catalog_validation_names_the_field() {
    let mut fx = Fixture::new(handler());
    type Change = Box<dyn Fn(&mut CreateProduct)>;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|c| c.product_id = String::new()), "product_id"),
        (
            Box::new(|c| c.product_id = "has space".into()),
            "product_id",
        ),
        (Box::new(|c| c.name = String::new()), "name"),
        (Box::new(|c| c.name = "x".repeat(201)), "name"),
        (Box::new(|c| c.category = String::new()), "category"),
        (Box::new(|c| c.category = "a/b".into()), "category"),
        (Box::new(|c| c.variants.clear()), "variants"),
        (
            Box::new(|c| c.variants[1].sku = "".into()),
            "variants[1].sku",
        ),
        (
            Box::new(|c| c.variants[1].sku = "SHIRT-S".into()),
            "variants[1].sku",
        ),
        (
            Box::new(|c| c.variants[1].prices[0].currency = "eur".into()),
            "variants[1].prices[0].currency",
        ),
        (
            Box::new(|c| c.variants[0].prices[1].currency = "EURO".into()),
            "variants[0].prices[1].currency",
        ),
        (
            Box::new(|c| c.variants[0].prices[1].currency = "EUR".into()),
            "variants[0].prices[1].currency",
        ),
        (
            Box::new(|c| c.variants[0].prices[0].amount_minor = -1),
            "variants[0].prices[0].amount_minor",
        ),
        (
            Box::new(|c| c.variants[1].prices[0].amount_minor = 100_000_001),
            "variants[1].prices[0].amount_minor",
        ),
    ];
    for (change, field) in cases {
        let mut command = create("P-1");
        change(&mut command);
        let effects = fx.handle(&command);
        assert_rejected(&effects, Code::Invalid, field);
    }
    // The limits themselves are allowed.
    let mut command = create("P-1");
    command.name = "é".repeat(200);
    command.variants[0].prices[0].amount_minor = 100_000_000;
    command.variants[0].prices[1].amount_minor = 0;
    assert_eq!(product_of(&fx.handle(&command)).version, 1);
}

#[test]
fn catalog_create_retry_answers_the_product_and_changes_nothing() {
    let mut fx = Fixture::new(handler());
    let first = product_of(&fx.handle(&create("P-1")));
    let retry = fx.handle(&create("P-1"));
    assert_eq!(product_of(&retry), first);
    assert!(events(&retry).is_empty());
    assert!(retry.changes().is_empty());
}

#[test]
fn catalog_conflicting_create_is_refused() {
    let mut fx = Fixture::new(handler());
    let first = product_of(&fx.handle(&create("P-1")));
    let mut other = create("P-1");
    other.variants[0].prices[0].amount_minor = 5_000;
    assert_rejected(&fx.handle(&other), Code::Conflict, "product_id");
    assert_eq!(fx.stored("P-1"), Some(first));
}

#[test]
fn catalog_update_checks_the_version() {
    let mut fx = Fixture::new(handler());
    fx.handle(&create("P-1"));
    assert_rejected(
        &fx.handle(&update("P-1", 2, "Stale")),
        Code::Conflict,
        "expected_version",
    );
    let effects = fx.handle(&update("P-1", 1, "Linen shirt, washed"));
    let updated = product_of(&effects);
    assert_eq!(updated.version, 2);
    assert_eq!(updated.name, "Linen shirt, washed");
    assert_eq!(updated.updated_at_ms, T0 + 3_000);
    let (key, event) = only_event::<ProductUpdated>(&effects);
    assert_eq!(key, b"P-1".to_vec());
    assert_eq!(event.product, Some(updated.clone()));
    assert_eq!(fx.stored("P-1"), Some(updated));

    // 0 means any version.
    assert_eq!(product_of(&fx.handle(&update("P-1", 0, "Any"))).version, 3);
    assert_rejected(
        &fx.handle(&update("P-2", 0, "Nobody")),
        Code::NotFound,
        "product_id",
    );
    let mut invalid = update("P-1", 3, "Bad price");
    invalid.variants[0].prices[0].currency = "E".into();
    assert_rejected(
        &fx.handle(&invalid),
        Code::Invalid,
        "variants[0].prices[0].currency",
    );
}

#[test]
fn catalog_archive_is_idempotent_and_final() {
    let mut fx = Fixture::new(handler());
    fx.handle(&create("P-1"));
    let archive = ArchiveProduct {
        product_id: "P-1".into(),
    };
    let first = fx.handle(&archive);
    let archived = product_of(&first);
    assert!(archived.archived);
    assert_eq!(archived.version, 2);
    let (key, event) = only_event::<ProductArchived>(&first);
    assert_eq!(key, b"P-1".to_vec());
    assert_eq!(event.product, Some(archived.clone()));

    let again = fx.handle(&archive);
    assert_eq!(product_of(&again), archived);
    assert!(events(&again).is_empty());
    assert!(again.changes().is_empty());

    assert_rejected(
        &fx.handle(&update("P-1", 2, "Revived")),
        Code::IllegalTransition,
        "archived",
    );
    assert_eq!(fx.stored("P-1"), Some(archived));
    assert_rejected(
        &fx.handle(&ArchiveProduct {
            product_id: "P-9".into(),
        }),
        Code::NotFound,
        "product_id",
    );
}

#[test]
fn catalog_get_unknown_is_not_found() {
    let mut fx = Fixture::new(handler());
    for product_id in ["P-404", "", "bad id"] {
        assert_rejected(
            &fx.handle(&GetProduct {
                product_id: product_id.into(),
            }),
            Code::NotFound,
            "product_id",
        );
    }
}

#[test]
fn catalog_unknown_message_is_malformed() {
    let fx = Fixture::new(handler());
    let envelope = Envelope::new("d2c.catalog.v1.Nope".into(), uuid::Uuid::from_u128(9), T0);
    let error = fx
        .test
        .handle(&handler(), &envelope, &[])
        .expect_err("unknown type");
    assert!(!error.is_retryable());
}

#[test]
fn catalog_replay_gives_identical_effects() {
    // The same messages (same envelopes) against the same starting state
    // produce byte-identical effects: nothing depends on a clock.
    let script = |fx: &mut Fixture| -> Vec<(Envelope, Vec<u8>)> {
        let mut messages = Vec::new();
        let mut push = |envelope: Envelope, payload: Vec<u8>| messages.push((envelope, payload));
        push(
            fx.envelope::<CreateProduct>(),
            create("P-1").encode_to_vec(),
        );
        push(
            fx.envelope::<UpdateProduct>(),
            update("P-1", 1, "New name").encode_to_vec(),
        );
        push(
            fx.envelope::<ArchiveProduct>(),
            ArchiveProduct {
                product_id: "P-1".into(),
            }
            .encode_to_vec(),
        );
        push(
            fx.envelope::<GetProduct>(),
            GetProduct {
                product_id: "P-1".into(),
            }
            .encode_to_vec(),
        );
        messages
    };
    let mut first = Fixture::new(handler());
    let messages = script(&mut first);
    let run = |fx: &mut Fixture| -> Vec<(Vec<Outgoing>, Vec<d2c_state::Entry>)> {
        messages
            .iter()
            .map(|(envelope, payload)| {
                let effects = fx.handle_as(envelope, payload);
                let outgoing = effects.outgoing().to_vec();
                let (changes, _) = effects.into_parts();
                (outgoing, changes.into_entries())
            })
            .collect()
    };
    let once = run(&mut first);
    let mut second = Fixture::new(handler());
    let twice = run(&mut second);
    assert_eq!(once, twice);
    assert_eq!(first.stored("P-1"), second.stored("P-1"));
}
