//! Handler tests against a real (temporary) RocksDB store, run the way the
//! runtime runs them: one message at a time, changes committed after each.

use crate::checkout_cart::request_hash;
use crate::{handler, Account, CartRead, CustomerRead};
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::customers::v1::{
    cart_reply, credentials_reply, customer_reply, AddAddress, Address, Cart, CartCheckedOut,
    CartLine, CartReply, CartStatus, CheckoutCart, CreateCart, CredentialsReply, Customer,
    CustomerRegistered, CustomerReply, CustomerUpdated, GetCart, GetCredentials, GetCustomer,
    RegisterCustomer, RemoveAddress, SetCartLine,
};
use d2c_proto::orders::v1::{PlaceOrder, RequestedLine};
use d2c_proto::{ids, Envelope, ReplyTo};
use d2c_runtime::handler::{Destination, Outgoing};
use d2c_runtime::router::Router;
use d2c_runtime::testing::{replies, TestEnv};
use d2c_runtime::Effects;
use d2c_topology::topic;
use prost::{Message, Name};

const T0: i64 = 1_700_000_000_000;
const EMAIL: &str = "ann@example.com";
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

/// The shared handler test environment; this crate's helpers are on
/// [`Helpers`].
type Fixture = TestEnv<Router>;

trait Helpers {
    fn account(&self, customer_id: &str) -> Option<Account>;
    fn cart(&self, customer_id: &str, cart_id: &str) -> Option<Cart>;
    fn registered(&mut self) -> String;
    fn cart_with(&mut self, lines: &[(&str, i64, i64)]) -> String;
}

impl Helpers for Fixture {
    fn account(&self, customer_id: &str) -> Option<Account> {
        self.test.store.account(customer_id).expect("read account")
    }

    fn cart(&self, customer_id: &str, cart_id: &str) -> Option<Cart> {
        self.test
            .store
            .cart(customer_id, cart_id)
            .expect("read cart")
    }

    /// A registered customer (Ann), its id.
    fn registered(&mut self) -> String {
        customer_of(&self.handle(&register(EMAIL, HASH)));
        ann()
    }

    /// Ann with an open EUR cart `C-1` holding `lines`.
    fn cart_with(&mut self, lines: &[(&str, i64, i64)]) -> String {
        let customer_id = self.registered();
        cart_of(&self.handle(&create_cart(&customer_id, "C-1", "EUR")));
        for (sku, quantity, price) in lines {
            cart_of(&self.handle(&set_line(&customer_id, "C-1", sku, *quantity, *price)));
        }
        customer_id
    }
}

fn gateway_replies() -> ReplyTo {
    ReplyTo {
        topic: "gateway.replies".into(),
        partition: 0,
    }
}

fn ann() -> String {
    ids::customer_id(EMAIL).to_string()
}

fn register(email: &str, password_hash: &str) -> RegisterCustomer {
    RegisterCustomer {
        customer_id: ids::customer_id(email).to_string(),
        email: email.into(),
        name: "Ann Example".into(),
        password_hash: password_hash.into(),
    }
}

fn address(address_id: &str) -> Address {
    Address {
        address_id: address_id.into(),
        label: "home".into(),
        name: "Ann Example".into(),
        line1: "Hauptstraße 1".into(),
        line2: String::new(),
        city: "Berlin".into(),
        postal_code: "10115".into(),
        country: "DE".into(),
    }
}

fn add_address(customer_id: &str, address: Address) -> AddAddress {
    AddAddress {
        customer_id: customer_id.into(),
        address: Some(address),
    }
}

fn create_cart(customer_id: &str, cart_id: &str, currency: &str) -> CreateCart {
    CreateCart {
        customer_id: customer_id.into(),
        cart_id: cart_id.into(),
        currency: currency.into(),
    }
}

fn set_line(customer_id: &str, cart_id: &str, sku: &str, quantity: i64, price: i64) -> SetCartLine {
    SetCartLine {
        customer_id: customer_id.into(),
        cart_id: cart_id.into(),
        sku: sku.into(),
        quantity,
        unit_price_minor: price,
        product_id: "P-1".into(),
    }
}

fn checkout(customer_id: &str, key: &str) -> CheckoutCart {
    CheckoutCart {
        customer_id: customer_id.into(),
        cart_id: "C-1".into(),
        payment_method: "pm_card_visa".into(),
        idempotency_key: key.into(),
    }
}

/// The one reply, of type `R`, keyed by Ann's customer id.
fn reply<R: Message + Name + Default>(effects: &Effects) -> R {
    let replies = replies(effects);
    assert_eq!(replies.len(), 1, "exactly one reply");
    assert_eq!(replies[0].envelope.message_type, R::full_name());
    assert_eq!(
        replies[0].destination,
        Destination::Reply(gateway_replies())
    );
    R::decode(replies[0].payload.as_slice()).expect("reply decodes")
}

fn customer_of(effects: &Effects) -> Customer {
    match reply::<CustomerReply>(effects).result {
        Some(customer_reply::Result::Customer(customer)) => customer,
        other => panic!("customer expected, got {other:?}"),
    }
}

fn cart_of(effects: &Effects) -> Cart {
    match reply::<CartReply>(effects).result {
        Some(cart_reply::Result::Cart(cart)) => cart,
        other => panic!("cart expected, got {other:?}"),
    }
}

fn rejection_of(effects: &Effects) -> Rejection {
    let replies = replies(effects);
    assert_eq!(replies.len(), 1, "exactly one reply");
    let payload = replies[0].payload.as_slice();
    let message_type = replies[0].envelope.message_type.as_str();
    let result = if message_type == CustomerReply::full_name() {
        match CustomerReply::decode(payload).expect("decodes").result {
            Some(customer_reply::Result::Rejected(rejection)) => Some(rejection),
            _ => None,
        }
    } else if message_type == CartReply::full_name() {
        match CartReply::decode(payload).expect("decodes").result {
            Some(cart_reply::Result::Rejected(rejection)) => Some(rejection),
            _ => None,
        }
    } else {
        match CredentialsReply::decode(payload).expect("decodes").result {
            Some(credentials_reply::Result::Rejected(rejection)) => Some(rejection),
            _ => None,
        }
    };
    result.unwrap_or_else(|| panic!("rejection expected in the {message_type}"))
}

/// Refused with `code` naming `field`, and nothing else happened.
fn assert_rejected(effects: &Effects, code: Code, field: &str) -> Rejection {
    let rejection = rejection_of(effects);
    assert_eq!(
        (rejection.code, rejection.field.as_str()),
        (code as i32, field),
        "{rejection:?}"
    );
    assert_eq!(effects.outgoing().len(), 1, "a refusal only answers");
    assert!(effects.changes().is_empty(), "a refusal changes nothing");
    rejection
}

fn events(effects: &Effects) -> Vec<&Outgoing> {
    effects
        .outgoing()
        .iter()
        .filter(|out| out.destination == Destination::Topic(topic::CUSTOMERS_EVENTS.into()))
        .collect()
}

fn only_event<M: Message + Name + Default>(effects: &Effects) -> (Vec<u8>, M) {
    let events = events(effects);
    assert_eq!(events.len(), 1, "exactly one event");
    assert_eq!(events[0].envelope.message_type, M::full_name());
    let event = M::decode(events[0].payload.as_slice()).expect("event decodes");
    (events[0].key.clone(), event)
}

fn forwarded(effects: &Effects) -> Vec<&Outgoing> {
    effects
        .outgoing()
        .iter()
        .filter(|out| out.destination == Destination::Topic(topic::ORDERS_MESSAGES.into()))
        .collect()
}

fn only_forwarded(effects: &Effects) -> (&Outgoing, PlaceOrder) {
    let forwarded = forwarded(effects);
    assert_eq!(forwarded.len(), 1, "exactly one PlaceOrder");
    assert_eq!(forwarded[0].envelope.message_type, PlaceOrder::full_name());
    let order = PlaceOrder::decode(forwarded[0].payload.as_slice()).expect("decodes");
    (forwarded[0], order)
}

/// Answered with `expected`, and nothing stored or announced.
fn assert_unchanged_customer(effects: &Effects, expected: &Customer) {
    assert_eq!(&customer_of(effects), expected);
    assert_eq!(effects.outgoing().len(), 1, "only the answer");
    assert!(effects.changes().is_empty());
}

fn assert_unchanged_cart(effects: &Effects, expected: &Cart) {
    assert_eq!(&cart_of(effects), expected);
    assert_eq!(effects.outgoing().len(), 1, "only the answer");
    assert!(effects.changes().is_empty());
}

// --- accounts ---------------------------------------------------------------

#[test]
fn customers_register_answers_records_and_announces() {
    let mut fx = Fixture::new(handler());
    let effects = fx.handle(&register(EMAIL, HASH));
    let customer = customer_of(&effects);
    assert_eq!(
        customer,
        Customer {
            customer_id: ann(),
            email: EMAIL.into(),
            name: "Ann Example".into(),
            addresses: Vec::new(),
            registered_at_ms: T0 + 1_000,
            version: 1,
        }
    );
    assert_eq!(replies(&effects)[0].key, ann().into_bytes());
    assert_eq!(
        fx.account(&ann()),
        Some(Account {
            customer: customer.clone(),
            password_hash: HASH.into(),
            open_cart_ids: Vec::new(),
        })
    );
    let (key, event) = only_event::<CustomerRegistered>(&effects);
    assert_eq!(key, ann().into_bytes());
    assert_eq!(event.customer, Some(customer.clone()));
    let announced = &events(&effects)[0].payload;
    assert!(
        !announced.windows(HASH.len()).any(|w| w == HASH.as_bytes()),
        "the hash is never announced"
    );
    assert_eq!(effects.outgoing().len(), 2, "the answer and the event");

    let got = fx.handle(&GetCustomer { customer_id: ann() });
    assert_unchanged_customer(&got, &customer);
}

#[test]
fn customers_register_retry_answers_and_duplicate_email_conflicts() {
    let mut fx = Fixture::new(handler());
    let first = customer_of(&fx.handle(&register(EMAIL, HASH)));
    assert_unchanged_customer(&fx.handle(&register(EMAIL, HASH)), &first);

    let other_hash = format!("{HASH}-other");
    let refused = assert_rejected(
        &fx.handle(&register(EMAIL, &other_hash)),
        Code::Conflict,
        "email",
    );
    assert_eq!(refused.message, "an account with this e-mail exists");
    assert_eq!(
        fx.account(&ann()).map(|a| a.password_hash),
        Some(HASH.into())
    );
}

#[test]
fn customers_register_refuses_an_id_not_derived_from_the_email() {
    let mut fx = Fixture::new(handler());
    let mut command = register(EMAIL, HASH);
    command.customer_id = ids::customer_id("bob@example.com").to_string();
    assert_rejected(&fx.handle(&command), Code::Invalid, "email");
    command.customer_id = "C-1".into();
    assert_rejected(&fx.handle(&command), Code::Invalid, "email");
    assert_eq!(
        fx.account(&ids::customer_id("bob@example.com").to_string()),
        None
    );
}

#[test]
fn customers_email_is_normalised() {
    let mut fx = Fixture::new(handler());
    let shouted = register("  Ann@Example.COM ", HASH);
    assert_eq!(shouted.customer_id, ann(), "one id for both spellings");
    let customer = customer_of(&fx.handle(&shouted));
    assert_eq!(customer.email, EMAIL);
    assert_eq!(customer.customer_id, ann());
    assert_unchanged_customer(&fx.handle(&register(EMAIL, HASH)), &customer);
    assert_rejected(
        &fx.handle(&register(EMAIL, "$argon2id$another")),
        Code::Conflict,
        "email",
    );
}

#[test]
fn customers_register_validation_names_the_field() {
    let mut fx = Fixture::new(handler());
    let long_email = format!("{}@example.com", "a".repeat(243));
    let cases: Vec<(RegisterCustomer, &str)> = vec![
        (register("no-at-sign", HASH), "email"),
        (register("two@at@example.com", HASH), "email"),
        (register("@example.com", HASH), "email"),
        (register("ann@", HASH), "email"),
        (register("a b@example.com", HASH), "email"),
        (register(&long_email, HASH), "email"),
        (register(EMAIL, ""), "password_hash"),
        (register(EMAIL, "hunter2"), "password_hash"),
        (
            RegisterCustomer {
                name: " ".into(),
                ..register(EMAIL, HASH)
            },
            "name",
        ),
        (
            RegisterCustomer {
                name: "x".repeat(201),
                ..register(EMAIL, HASH)
            },
            "name",
        ),
    ];
    for (command, field) in cases {
        assert_rejected(&fx.handle(&command), Code::Invalid, field);
    }
    // The limits themselves are allowed.
    let shortest = customer_of(&fx.handle(&register("a@b", HASH)));
    assert_eq!(shortest.email, "a@b");
    let mut longest = register(&format!("{}@example.com", "a".repeat(242)), HASH);
    longest.name = "é".repeat(200);
    assert_eq!(customer_of(&fx.handle(&longest)).version, 1);
}

#[test]
fn customers_credentials_are_answered_never_announced() {
    let mut fx = Fixture::new(handler());
    let customer_id = fx.registered();
    let effects = fx.handle(&GetCredentials {
        customer_id: customer_id.clone(),
    });
    let credentials = match reply::<CredentialsReply>(&effects).result {
        Some(credentials_reply::Result::Credentials(credentials)) => credentials,
        other => panic!("credentials expected, got {other:?}"),
    };
    assert_eq!(credentials.customer_id, customer_id);
    assert_eq!(credentials.password_hash, HASH);
    assert_eq!(effects.outgoing().len(), 1, "only the answer");
    assert!(effects.changes().is_empty());

    let unknown = fx.handle(&GetCredentials {
        customer_id: ids::customer_id("bob@example.com").to_string(),
    });
    assert_rejected(&unknown, Code::NotFound, "customer_id");
    assert_eq!(
        replies(&unknown)[0].envelope.message_type,
        CredentialsReply::full_name()
    );
}

#[test]
fn customers_get_unknown_is_not_found() {
    let mut fx = Fixture::new(handler());
    for customer_id in [ann(), String::new(), "x/y".into()] {
        assert_rejected(
            &fx.handle(&GetCustomer { customer_id }),
            Code::NotFound,
            "customer_id",
        );
    }
}

// --- addresses --------------------------------------------------------------

#[test]
fn customers_add_address_records_announces_and_retries() {
    let mut fx = Fixture::new(handler());
    let customer_id = fx.registered();
    let effects = fx.handle(&add_address(&customer_id, address("home")));
    let customer = customer_of(&effects);
    assert_eq!(customer.addresses, vec![address("home")]);
    assert_eq!(customer.version, 2);
    let (key, event) = only_event::<CustomerUpdated>(&effects);
    assert_eq!(key, customer_id.clone().into_bytes());
    assert_eq!(event.customer, Some(customer.clone()));
    assert_eq!(
        fx.account(&customer_id).map(|a| a.customer),
        Some(customer.clone())
    );
    assert_eq!(
        fx.account(&customer_id).map(|a| a.password_hash),
        Some(HASH.into()),
        "the credential survives the change"
    );

    assert_unchanged_customer(
        &fx.handle(&add_address(&customer_id, address("home"))),
        &customer,
    );

    let mut moved = address("home");
    moved.city = "Hamburg".into();
    assert_rejected(
        &fx.handle(&add_address(&customer_id, moved)),
        Code::Conflict,
        "address.address_id",
    );
    let second = customer_of(&fx.handle(&add_address(&customer_id, address("work"))));
    assert_eq!(second.version, 3);
    assert_eq!(second.addresses, vec![address("home"), address("work")]);
}

#[test]
fn customers_address_validation_names_the_field() {
    let mut fx = Fixture::new(handler());
    let customer_id = fx.registered();
    type Change = Box<dyn Fn(&mut Address)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|a| a.address_id = String::new()),
            "address.address_id",
        ),
        (
            Box::new(|a| a.address_id = "a b".into()),
            "address.address_id",
        ),
        (
            Box::new(|a| a.address_id = "a".repeat(65)),
            "address.address_id",
        ),
        (Box::new(|a| a.label = "l".repeat(51)), "address.label"),
        (Box::new(|a| a.name = String::new()), "address.name"),
        (Box::new(|a| a.line1 = " ".into()), "address.line1"),
        (Box::new(|a| a.line1 = "l".repeat(201)), "address.line1"),
        (Box::new(|a| a.line2 = "l".repeat(201)), "address.line2"),
        (Box::new(|a| a.city = String::new()), "address.city"),
        (
            Box::new(|a| a.postal_code = String::new()),
            "address.postal_code",
        ),
        (Box::new(|a| a.country = "de".into()), "address.country"),
        (Box::new(|a| a.country = "DEU".into()), "address.country"),
        (Box::new(|a| a.country = String::new()), "address.country"),
    ];
    for (change, field) in cases {
        let mut candidate = address("home");
        change(&mut candidate);
        assert_rejected(
            &fx.handle(&add_address(&customer_id, candidate)),
            Code::Invalid,
            field,
        );
    }
    let missing = AddAddress {
        customer_id: customer_id.clone(),
        address: None,
    };
    assert_rejected(&fx.handle(&missing), Code::Invalid, "address");
    // The limits themselves are allowed.
    let mut longest = address("a".repeat(64).as_str());
    longest.label = "l".repeat(50);
    longest.line2 = "é".repeat(200);
    assert_eq!(
        customer_of(&fx.handle(&add_address(&customer_id, longest))).version,
        2
    );
}

#[test]
fn customers_address_of_unknown_customer_is_not_found() {
    let mut fx = Fixture::new(handler());
    assert_rejected(
        &fx.handle(&add_address(&ann(), address("home"))),
        Code::NotFound,
        "customer_id",
    );
    assert_rejected(
        &fx.handle(&RemoveAddress {
            customer_id: ann(),
            address_id: "home".into(),
        }),
        Code::NotFound,
        "customer_id",
    );
}

#[test]
fn customers_remove_address() {
    let mut fx = Fixture::new(handler());
    let customer_id = fx.registered();
    fx.handle(&add_address(&customer_id, address("home")));
    fx.handle(&add_address(&customer_id, address("work")));
    let remove = RemoveAddress {
        customer_id: customer_id.clone(),
        address_id: "home".into(),
    };
    let effects = fx.handle(&remove);
    let customer = customer_of(&effects);
    assert_eq!(customer.addresses, vec![address("work")]);
    assert_eq!(customer.version, 4);
    let (key, event) = only_event::<CustomerUpdated>(&effects);
    assert_eq!(key, customer_id.clone().into_bytes());
    assert_eq!(event.customer, Some(customer.clone()));
    assert_eq!(
        fx.account(&customer_id).map(|a| a.customer),
        Some(customer.clone())
    );

    assert_rejected(&fx.handle(&remove), Code::NotFound, "address_id");
    assert_eq!(fx.account(&customer_id).map(|a| a.customer), Some(customer));
}

#[test]
fn customers_at_most_twenty_addresses() {
    let mut fx = Fixture::new(handler());
    let customer_id = fx.registered();
    for index in 0..20 {
        let id = format!("a{index}");
        customer_of(&fx.handle(&add_address(&customer_id, address(&id))));
    }
    let full = fx
        .account(&customer_id)
        .map(|a| a.customer)
        .expect("stored");
    assert_eq!(full.addresses.len(), 20);
    assert_rejected(
        &fx.handle(&add_address(&customer_id, address("a20"))),
        Code::Invalid,
        "addresses",
    );
    // A retry of one already there is still answered.
    assert_unchanged_customer(&fx.handle(&add_address(&customer_id, address("a3"))), &full);
}

// --- carts ------------------------------------------------------------------

#[test]
fn customers_create_cart_retry_and_currency_conflict() {
    let mut fx = Fixture::new(handler());
    let customer_id = fx.registered();
    let effects = fx.handle(&create_cart(&customer_id, "C-1", "EUR"));
    let cart = cart_of(&effects);
    assert_eq!(
        cart,
        Cart {
            cart_id: "C-1".into(),
            customer_id: customer_id.clone(),
            currency: "EUR".into(),
            lines: Vec::new(),
            status: CartStatus::Open as i32,
            order_id: String::new(),
            version: 1,
            created_at_ms: T0 + 2_000,
            updated_at_ms: T0 + 2_000,
            idempotency_key: String::new(),
        }
    );
    assert_eq!(effects.outgoing().len(), 1, "no event for a new cart");
    assert_eq!(replies(&effects)[0].key, customer_id.clone().into_bytes());
    assert_eq!(fx.cart(&customer_id, "C-1"), Some(cart.clone()));

    assert_unchanged_cart(&fx.handle(&create_cart(&customer_id, "C-1", "EUR")), &cart);
    assert_rejected(
        &fx.handle(&create_cart(&customer_id, "C-1", "USD")),
        Code::Conflict,
        "currency",
    );
    let got = fx.handle(&GetCart {
        customer_id: customer_id.clone(),
        cart_id: "C-1".into(),
    });
    assert_unchanged_cart(&got, &cart);
}

#[test]
fn customers_open_carts_are_limited_and_a_checkout_frees_a_place() {
    let mut fx = Fixture::new(handler());
    let customer_id = fx.registered();
    for index in 0..crate::create_cart::MAX_OPEN_CARTS {
        cart_of(&fx.handle(&create_cart(
            &customer_id,
            &format!("C-{}", index + 1),
            "EUR",
        )));
    }
    assert_rejected(
        &fx.handle(&create_cart(&customer_id, "C-21", "EUR")),
        Code::LimitReached,
        "carts",
    );
    assert_eq!(
        fx.cart(&customer_id, "C-21"),
        None,
        "the 21st cart is not opened"
    );
    // A retry of an open cart still answers it: it takes no new place.
    cart_of(&fx.handle(&create_cart(&customer_id, "C-20", "EUR")));

    // An empty cart cannot be checked out, and keeps its place.
    assert_rejected(
        &fx.handle(&checkout(&customer_id, "k-0")),
        Code::Invalid,
        "lines",
    );
    assert_rejected(
        &fx.handle(&create_cart(&customer_id, "C-21", "EUR")),
        Code::LimitReached,
        "carts",
    );
    cart_of(&fx.handle(&set_line(&customer_id, "C-1", "SKU-1", 1, 500)));
    fx.handle(&checkout(&customer_id, "k-1"));
    let account = fx.account(&customer_id).expect("account");
    assert_eq!(
        account.open_cart_ids.len(),
        crate::create_cart::MAX_OPEN_CARTS - 1
    );
    assert!(!account.open_cart_ids.contains(&"C-1".to_owned()));
    cart_of(&fx.handle(&create_cart(&customer_id, "C-21", "EUR")));
}

#[test]
fn customers_create_cart_refusals() {
    let mut fx = Fixture::new(handler());
    assert_rejected(
        &fx.handle(&create_cart(&ann(), "C-1", "EUR")),
        Code::NotFound,
        "customer_id",
    );
    let customer_id = fx.registered();
    for (cart_id, currency, field) in [
        ("", "EUR", "cart_id"),
        ("C/1", "EUR", "cart_id"),
        ("C-1", "eur", "currency"),
        ("C-1", "EURO", "currency"),
        ("C-1", "", "currency"),
    ] {
        assert_rejected(
            &fx.handle(&create_cart(&customer_id, cart_id, currency)),
            Code::Invalid,
            field,
        );
    }
}

#[test]
fn customers_set_line_adds_changes_and_removes() {
    let mut fx = Fixture::new(handler());
    let customer_id = fx.cart_with(&[]);
    let added = fx.handle(&set_line(&customer_id, "C-1", "SKU-1", 2, 1_500));
    let cart = cart_of(&added);
    let line = |sku: &str, quantity, unit_price_minor| CartLine {
        sku: sku.into(),
        quantity,
        unit_price_minor,
        product_id: "P-1".into(),
    };
    assert_eq!(cart.lines, vec![line("SKU-1", 2, 1_500)]);
    assert_eq!((cart.version, cart.updated_at_ms), (2, T0 + 3_000));
    assert_eq!(cart.created_at_ms, T0 + 2_000);
    assert_eq!(added.outgoing().len(), 1, "no event for a line");
    assert_eq!(fx.cart(&customer_id, "C-1"), Some(cart.clone()));

    // Setting what is there changes nothing.
    assert_unchanged_cart(
        &fx.handle(&set_line(&customer_id, "C-1", "SKU-1", 2, 1_500)),
        &cart,
    );
    let appended = cart_of(&fx.handle(&set_line(&customer_id, "C-1", "SKU-2", 1, 900)));
    assert_eq!(
        appended.lines,
        vec![line("SKU-1", 2, 1_500), line("SKU-2", 1, 900)]
    );
    let changed = cart_of(&fx.handle(&set_line(&customer_id, "C-1", "SKU-1", 5, 1_400)));
    assert_eq!(
        changed.lines,
        vec![line("SKU-1", 5, 1_400), line("SKU-2", 1, 900)],
        "a change keeps the line's place"
    );
    assert_eq!(changed.version, 4);
    let removed = cart_of(&fx.handle(&set_line(&customer_id, "C-1", "SKU-1", 0, 1_400)));
    assert_eq!(removed.lines, vec![line("SKU-2", 1, 900)]);
    assert_eq!(removed.version, 5);
    // Removing an absent line is fine and changes nothing.
    assert_unchanged_cart(
        &fx.handle(&set_line(&customer_id, "C-1", "SKU-1", 0, 0)),
        &removed,
    );
    assert_eq!(fx.cart(&customer_id, "C-1"), Some(removed));
}

#[test]
fn customers_set_line_limits() {
    let mut fx = Fixture::new(handler());
    let customer_id = fx.cart_with(&[]);
    let cases = [
        (set_line(&customer_id, "C-1", "", 1, 100), "sku"),
        (set_line(&customer_id, "C-1", "SKU 1", 1, 100), "sku"),
        (set_line(&customer_id, "C-1", "SKU-1", -1, 100), "quantity"),
        (
            set_line(&customer_id, "C-1", "SKU-1", 1_001, 100),
            "quantity",
        ),
        (
            set_line(&customer_id, "C-1", "SKU-1", 1, -1),
            "unit_price_minor",
        ),
        (
            set_line(&customer_id, "C-1", "SKU-1", 1, 100_000_001),
            "unit_price_minor",
        ),
        (
            SetCartLine {
                product_id: "P 1".into(),
                ..set_line(&customer_id, "C-1", "SKU-1", 1, 100)
            },
            "product_id",
        ),
    ];
    for (command, field) in cases {
        assert_rejected(&fx.handle(&command), Code::Invalid, field);
    }
    // The limits themselves are allowed, and the product id is optional.
    let edge = SetCartLine {
        product_id: String::new(),
        ..set_line(&customer_id, "C-1", "SKU-0", 1_000, 100_000_000)
    };
    assert_eq!(cart_of(&fx.handle(&edge)).lines.len(), 1);
    for index in 1..100 {
        let sku = format!("SKU-{index}");
        cart_of(&fx.handle(&set_line(&customer_id, "C-1", &sku, 1, 0)));
    }
    let full = fx.cart(&customer_id, "C-1").expect("stored");
    assert_eq!(full.lines.len(), 100);
    assert_rejected(
        &fx.handle(&set_line(&customer_id, "C-1", "SKU-100", 1, 0)),
        Code::Invalid,
        "lines",
    );
    // A full cart still takes changes to its lines.
    let changed = cart_of(&fx.handle(&set_line(&customer_id, "C-1", "SKU-7", 3, 0)));
    assert_eq!(changed.lines.len(), 100);
}

#[test]
fn customers_set_line_on_missing_or_foreign_cart_is_not_found() {
    let mut fx = Fixture::new(handler());
    let ann_id = fx.cart_with(&[]);
    let bob = register("bob@example.com", HASH);
    let bob_id = customer_of(&fx.handle(&bob)).customer_id;
    for command in [
        set_line(&ann_id, "C-2", "SKU-1", 1, 100),
        set_line(&ann_id, "", "SKU-1", 1, 100),
        set_line(&bob_id, "C-1", "SKU-1", 1, 100),
        set_line(&format!("{ann_id}/C-1"), "C-1", "SKU-1", 1, 100),
    ] {
        assert_rejected(&fx.handle(&command), Code::NotFound, "cart_id");
    }
    assert_rejected(
        &fx.handle(&GetCart {
            customer_id: bob_id,
            cart_id: "C-1".into(),
        }),
        Code::NotFound,
        "cart_id",
    );
    assert!(fx.cart(&ann_id, "C-1").expect("stored").lines.is_empty());
}

// --- checkout ---------------------------------------------------------------

#[test]
fn customers_checkout_forwards_one_place_order_and_announces() {
    let mut fx = Fixture::new(handler());
    let customer_id = fx.cart_with(&[("SKU-1", 2, 1_500), ("SKU-2", 1, 900)]);
    let envelope = fx.envelope::<CheckoutCart>();
    let effects = fx.handle_as(&envelope, &checkout(&customer_id, "key-1").encode_to_vec());

    assert!(replies(&effects).is_empty(), "orders answers the requester");
    let order_id = ids::order_id(&customer_id, "key-1").to_string();
    let (out, order) = only_forwarded(&effects);
    assert_eq!(out.key, order_id.clone().into_bytes());
    assert_eq!(out.envelope.reply_to, Some(gateway_replies()));
    assert_eq!(out.envelope.correlation_id, envelope.correlation_id);
    assert_eq!(out.envelope.sent_at_ms, envelope.sent_at_ms);
    let stored = fx.cart(&customer_id, "C-1").expect("stored");
    assert_eq!(
        order,
        PlaceOrder {
            order_id: order_id.clone(),
            customer_id: customer_id.clone(),
            lines: vec![
                RequestedLine {
                    sku: "SKU-1".into(),
                    quantity: 2,
                    unit_price_minor: Some(1_500),
                },
                RequestedLine {
                    sku: "SKU-2".into(),
                    quantity: 1,
                    unit_price_minor: Some(900),
                },
            ],
            currency: "EUR".into(),
            idempotency_key: "key-1".into(),
            request_hash: request_hash(&stored, "pm_card_visa"),
            payment_method: "pm_card_visa".into(),
            cart_id: "C-1".into(),
        }
    );
    assert_eq!(order.request_hash.len(), 32, "SHA-256");

    assert_eq!(stored.status(), CartStatus::CheckedOut);
    assert_eq!(stored.order_id, order_id);
    assert_eq!(stored.idempotency_key, "key-1");
    assert_eq!(
        (stored.version, stored.updated_at_ms),
        (4, envelope.sent_at_ms)
    );
    let (key, event) = only_event::<CartCheckedOut>(&effects);
    assert_eq!(key, customer_id.into_bytes());
    assert_eq!(event.cart, Some(stored));
    assert_eq!(event.order, Some(order));
    assert_eq!(effects.outgoing().len(), 2, "the PlaceOrder and the event");
}

#[test]
fn customers_checkout_retry_forwards_the_same_place_order() {
    let mut fx = Fixture::new(handler());
    let customer_id = fx.cart_with(&[("SKU-1", 2, 1_500)]);
    let first = fx.handle(&checkout(&customer_id, "key-1"));
    let (_, placed) = only_forwarded(&first);
    let cart = fx.cart(&customer_id, "C-1").expect("stored");

    let envelope = fx.envelope::<CheckoutCart>();
    let retry = fx.handle_as(&envelope, &checkout(&customer_id, "key-1").encode_to_vec());
    let (out, again) = only_forwarded(&retry);
    assert_eq!(again, placed, "identical, request hash included");
    assert_eq!(out.envelope.reply_to, Some(gateway_replies()));
    assert_eq!(out.envelope.correlation_id, envelope.correlation_id);
    assert_eq!(retry.outgoing().len(), 1, "no event, no answer");
    assert!(retry.changes().is_empty());
    assert_eq!(fx.cart(&customer_id, "C-1"), Some(cart));

    // Another payment method is another request: orders refuses the key.
    let mut other_method = checkout(&customer_id, "key-1");
    other_method.payment_method = "pm_card_mastercard".into();
    let (_, changed) = only_forwarded(&fx.handle(&other_method));
    assert_eq!(changed.order_id, placed.order_id);
    assert_ne!(changed.request_hash, placed.request_hash);
}

#[test]
fn customers_checkout_under_another_key_is_an_illegal_transition() {
    let mut fx = Fixture::new(handler());
    let customer_id = fx.cart_with(&[("SKU-1", 2, 1_500)]);
    fx.handle(&checkout(&customer_id, "key-1"));
    let refused = assert_rejected(
        &fx.handle(&checkout(&customer_id, "key-2")),
        Code::IllegalTransition,
        "status",
    );
    let order_id = ids::order_id(&customer_id, "key-1").to_string();
    assert_eq!(
        refused.message,
        format!("this cart was already checked out as order {order_id}")
    );
    assert_rejected(
        &fx.handle(&set_line(&customer_id, "C-1", "SKU-2", 1, 100)),
        Code::IllegalTransition,
        "status",
    );
    // A new cart under the same id is a retry of the create, not a reopening.
    let cart = fx.cart(&customer_id, "C-1").expect("stored");
    assert_unchanged_cart(&fx.handle(&create_cart(&customer_id, "C-1", "EUR")), &cart);
}

#[test]
fn customers_checkout_refusals() {
    let mut fx = Fixture::new(handler());
    let customer_id = fx.cart_with(&[]);
    let refused = assert_rejected(
        &fx.handle(&checkout(&customer_id, "key-1")),
        Code::Invalid,
        "lines",
    );
    assert_eq!(refused.message, "the cart is empty");
    assert_eq!(
        replies(&fx.handle(&checkout(&customer_id, "key-1")))[0]
            .envelope
            .message_type,
        CartReply::full_name()
    );
    fx.handle(&set_line(&customer_id, "C-1", "SKU-1", 1, 100));
    let mut no_method = checkout(&customer_id, "key-1");
    no_method.payment_method.clear();
    assert_rejected(&fx.handle(&no_method), Code::Invalid, "payment_method");
    assert_rejected(
        &fx.handle(&checkout(&customer_id, "")),
        Code::Invalid,
        "idempotency_key",
    );
    let mut missing = checkout(&customer_id, "key-1");
    missing.cart_id = "C-9".into();
    assert_rejected(&fx.handle(&missing), Code::NotFound, "cart_id");
    assert_rejected(
        &fx.handle(&checkout(
            &ids::customer_id("bob@example.com").to_string(),
            "key-1",
        )),
        Code::NotFound,
        "cart_id",
    );
    let cart = fx.cart(&customer_id, "C-1").expect("stored");
    assert_eq!(cart.status(), CartStatus::Open);
}

// --- the handler ------------------------------------------------------------

#[test]
fn customers_unknown_message_is_malformed() {
    let fx = Fixture::new(handler());
    let envelope = Envelope::new("d2c.customers.v1.Nope".into(), uuid::Uuid::from_u128(9), T0);
    let error = fx
        .test
        .handle(&handler(), &envelope, &[])
        .expect_err("unknown type");
    assert!(matches!(error, d2c_runtime::HandlerError::Malformed(_)));
    assert!(!error.is_retryable());

    let garbage = Envelope::new(RegisterCustomer::full_name(), uuid::Uuid::from_u128(10), T0);
    let error = fx
        .test
        .handle(&handler(), &garbage, &[0xff, 0xff, 0xff])
        .expect_err("bad payload");
    assert!(matches!(error, d2c_runtime::HandlerError::Malformed(_)));
}

#[test]
fn customers_replay_gives_identical_effects() {
    // The same messages (same envelopes) against the same starting state
    // produce byte-identical effects: nothing depends on a clock.
    let customer_id = ann();
    let mut first = Fixture::new(handler());
    let messages: Vec<(Envelope, Vec<u8>)> = vec![
        (
            first.envelope::<RegisterCustomer>(),
            register(EMAIL, HASH).encode_to_vec(),
        ),
        (
            first.envelope::<AddAddress>(),
            add_address(&customer_id, address("home")).encode_to_vec(),
        ),
        (
            first.envelope::<CreateCart>(),
            create_cart(&customer_id, "C-1", "EUR").encode_to_vec(),
        ),
        (
            first.envelope::<SetCartLine>(),
            set_line(&customer_id, "C-1", "SKU-1", 2, 1_500).encode_to_vec(),
        ),
        (
            first.envelope::<CheckoutCart>(),
            checkout(&customer_id, "key-1").encode_to_vec(),
        ),
    ];
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
    assert_eq!(
        first.cart(&customer_id, "C-1"),
        second.cart(&customer_id, "C-1")
    );
}

#[test]
fn customers_a_cart_refused_on_price_opens_again_repriced_once() {
    use d2c_proto::customers::v1::{CartReopened, ReopenCart, RepricedLine};
    let mut fx = Fixture::new(handler());
    let customer_id = fx.cart_with(&[("SKU-1", 2, 1_500), ("SKU-2", 1, 900)]);
    let first = fx.handle(&checkout(&customer_id, "key-1"));
    let (_, placed) = only_forwarded(&first);
    let reopen = ReopenCart {
        customer_id: customer_id.clone(),
        cart_id: "C-1".into(),
        order_id: placed.order_id.clone(),
        lines: vec![
            RepricedLine {
                sku: "SKU-1".into(),
                unit_price_minor: Some(1_600),
            },
            RepricedLine {
                sku: "SKU-2".into(),
                unit_price_minor: None,
            },
        ],
    };
    let effects = fx.handle(&reopen);
    let (_, event) = only_event::<CartReopened>(&effects);
    let cart = fx.cart(&customer_id, "C-1").expect("stored");
    assert_eq!(event.cart.as_ref(), Some(&cart));
    assert_eq!(cart.status(), CartStatus::Open);
    assert!(cart.order_id.is_empty() && cart.idempotency_key.is_empty());
    let lines: Vec<_> = cart
        .lines
        .iter()
        .map(|line| (line.sku.as_str(), line.unit_price_minor))
        .collect();
    assert_eq!(lines, [("SKU-1", 1_600)], "SKU-2 is no longer sold");
    // A redelivered ReopenCart changes nothing.
    assert!(fx.handle(&reopen).outgoing().is_empty());
    // Checking out again with the same key places the repriced order.
    let again = fx.handle(&checkout(&customer_id, "key-1"));
    let (_, repriced) = only_forwarded(&again);
    assert_eq!(repriced.order_id, placed.order_id);
    assert_eq!(repriced.lines[0].unit_price_minor, Some(1_600));
}
