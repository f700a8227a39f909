//! Typed dispatch: a service registers one function per message type it
//! handles, each taking the decoded message, instead of comparing type
//! names in an if-chain. An unknown type, or a payload that does not decode
//! as its type, is `Malformed` (dead-lettered by the runtime). The router
//! is the service's [`Handler`], with what else the runtime asks of one
//! (drop copies by message id, ticks, a hook after each commit).

use crate::handler::{Effects, Handler, HandlerError, Incoming, Outgoing};
use d2c_proto::Envelope;
use d2c_state::StateRead;
use std::collections::HashMap;
use std::time::Duration;

type Route = Box<
    dyn Fn(&dyn StateRead, &Envelope, &[u8], &mut Effects) -> Result<(), HandlerError>
        + Send
        + Sync,
>;

type OnCommit = Box<dyn Fn(&[Outgoing]) + Send + Sync>;

/// Message type name → the function that handles it.
pub struct Router {
    service: &'static str,
    routes: HashMap<String, Route>,
    dedupe_by_message_id: bool,
    tick_interval: Option<Duration>,
    on_commit: Option<OnCommit>,
}

impl Router {
    /// The routes of `service` (named in the error of an unrouted type).
    pub fn new(service: &'static str) -> Self {
        Self {
            service,
            routes: HashMap::new(),
            dedupe_by_message_id: false,
            tick_interval: None,
            on_commit: None,
        }
    }

    /// Copies of a message handled before are dropped by message id (see
    /// [`Handler::dedupe_by_message_id`]): for a service whose commands are
    /// not idempotent when applied twice.
    pub fn dedupe(mut self) -> Self {
        self.dedupe_by_message_id = true;
        self
    }

    /// A `d2c.common.v1.Tick` on each owned partition every `interval` (for
    /// timers kept in the state; route `Tick` too).
    pub fn ticks(mut self, interval: Duration) -> Self {
        self.tick_interval = Some(interval);
        self
    }

    /// `record` runs once per committed batch with what it sent (business
    /// counters; see [`Handler::committed`]).
    pub fn on_commit(mut self, record: impl Fn(&[Outgoing]) + Send + Sync + 'static) -> Self {
        self.on_commit = Some(Box::new(record));
        self
    }

    /// Messages of type `M` go to `handle`, decoded.
    ///
    /// # Panics
    /// When `M` already has a route: a wiring mistake, found at start.
    pub fn on<M, F>(self, handle: F) -> Self
    where
        M: prost::Message + prost::Name + Default + 'static,
        F: Fn(&dyn StateRead, M, &mut Effects) -> Result<(), HandlerError> + Send + Sync + 'static,
    {
        self.on_envelope::<M, _>(move |state, _, message, effects| handle(state, message, effects))
    }

    /// [`Router::on`] for a function that also reads the message's envelope
    /// (reply address, sent-at).
    ///
    /// # Panics
    /// When `M` already has a route.
    pub fn on_envelope<M, F>(mut self, handle: F) -> Self
    where
        M: prost::Message + prost::Name + Default + 'static,
        F: Fn(&dyn StateRead, &Envelope, M, &mut Effects) -> Result<(), HandlerError>
            + Send
            + Sync
            + 'static,
    {
        let name = M::full_name();
        let route: Route = Box::new(move |state, envelope, payload, effects| {
            let message = M::decode(payload).map_err(|error| {
                HandlerError::Malformed(format!(
                    "payload is not a valid {}: {error}",
                    M::full_name()
                ))
            })?;
            handle(state, envelope, message, effects)
        });
        assert!(
            self.routes.insert(name.clone(), route).is_none(),
            "{name} is routed twice"
        );
        self
    }

    /// The message types routed, sorted (for docs and tests).
    pub fn message_types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        types.sort_unstable();
        types
    }
}

/// Typed decoding for consumers that are not handlers (a sink): message
/// type → the function that decodes its payload into the sink's own type.
pub struct Decoder<T> {
    decoders: HashMap<String, Box<Decode<T>>>,
}

type Decode<T> = dyn Fn(&[u8]) -> Result<T, prost::DecodeError> + Send + Sync;

impl<T> Default for Decoder<T> {
    fn default() -> Self {
        Self {
            decoders: HashMap::new(),
        }
    }
}

impl<T> Decoder<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages of type `M` decode into `wrap(message)`.
    ///
    /// # Panics
    /// When `M` already has a decoder: a wiring mistake, found at start.
    pub fn on<M, F>(mut self, wrap: F) -> Self
    where
        M: prost::Message + prost::Name + Default + 'static,
        F: Fn(M) -> T + Send + Sync + 'static,
    {
        let name = M::full_name();
        let decode: Box<Decode<T>> = Box::new(move |payload| M::decode(payload).map(&wrap));
        assert!(
            self.decoders.insert(name.clone(), decode).is_none(),
            "{name} is decoded twice"
        );
        self
    }

    /// `None` for a type it has no decoder for; else the payload decoded,
    /// or why it does not decode.
    pub fn decode(
        &self,
        message_type: &str,
        payload: &[u8],
    ) -> Option<Result<T, prost::DecodeError>> {
        self.decoders
            .get(message_type)
            .map(|decode| decode(payload))
    }
}

impl Handler for Router {
    fn handle(
        &self,
        state: &dyn StateRead,
        message: &Incoming<'_>,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let message_type = message.envelope.message_type.as_str();
        match self.routes.get(message_type) {
            Some(route) => route(state, message.envelope, message.payload, effects),
            None => Err(HandlerError::Malformed(format!(
                "{} does not handle {message_type}",
                self.service
            ))),
        }
    }

    fn committed(&self, outgoing: &[Outgoing]) {
        if let Some(record) = &self.on_commit {
            record(outgoing);
        }
    }

    fn dedupe_by_message_id(&self) -> bool {
        self.dedupe_by_message_id
    }

    fn tick_interval(&self) -> Option<Duration> {
        self.tick_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d2c_proto::common::v1::Tick;
    use d2c_proto::orders::v1::GetOrder;
    use prost::{Message, Name};

    fn router() -> Router {
        Router::new("test").on::<GetOrder, _>(|_, query, effects| {
            effects.send("orders.events", &query.order_id, &Tick {});
            Ok(())
        })
    }

    fn incoming<'a>(envelope: &'a Envelope, payload: &'a [u8]) -> Incoming<'a> {
        Incoming {
            envelope,
            key: None,
            payload,
            partition: 0,
            offset: 0,
        }
    }

    #[test]
    fn a_routed_type_is_decoded_and_handled_and_others_are_malformed() {
        let store = crate::testing::TestStore::new();
        let router = router();
        assert_eq!(router.message_types(), [GetOrder::full_name()]);
        let query = GetOrder {
            order_id: "o-1".into(),
            ..GetOrder::default()
        };
        let envelope = Envelope::new(GetOrder::full_name(), uuid::Uuid::from_u128(1), 1);
        let payload = query.encode_to_vec();
        let mut effects = Effects::new(&envelope);
        router
            .handle(&store.store, &incoming(&envelope, &payload), &mut effects)
            .expect("handled");
        assert_eq!(effects.outgoing().len(), 1);

        let mut effects = Effects::new(&envelope);
        let garbage = incoming(&envelope, b"\xff\xff\xff");
        assert!(matches!(
            router.handle(&store.store, &garbage, &mut effects),
            Err(HandlerError::Malformed(_))
        ));
        let other = Envelope::new("x.Unknown".into(), uuid::Uuid::from_u128(2), 1);
        let error = router
            .handle(&store.store, &incoming(&other, &payload), &mut effects)
            .expect_err("not routed");
        assert!(
            error.to_string().contains("test does not handle x.Unknown"),
            "{error}"
        );
    }

    #[test]
    fn what_the_runtime_asks_of_a_handler_is_what_the_router_was_told() {
        let plain = router();
        assert!(!Handler::dedupe_by_message_id(&plain));
        assert_eq!(plain.tick_interval(), None);
        plain.committed(&[]);

        let commits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&commits);
        let told = router()
            .dedupe()
            .ticks(Duration::from_secs(5))
            .on_commit(move |outgoing| {
                counted.fetch_add(outgoing.len() + 1, std::sync::atomic::Ordering::Relaxed);
            });
        assert!(Handler::dedupe_by_message_id(&told));
        assert_eq!(told.tick_interval(), Some(Duration::from_secs(5)));
        told.committed(&[]);
        assert_eq!(commits.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn a_decoder_decodes_its_types_and_knows_no_others() {
        #[derive(Debug, PartialEq)]
        enum Wanted {
            Get(String),
        }
        let decoder = Decoder::new().on(|query: GetOrder| Wanted::Get(query.order_id));
        let payload = GetOrder {
            order_id: "o-1".into(),
            ..GetOrder::default()
        }
        .encode_to_vec();
        assert_eq!(
            decoder
                .decode(&GetOrder::full_name(), &payload)
                .map(Result::ok),
            Some(Some(Wanted::Get("o-1".into())))
        );
        assert!(matches!(
            decoder.decode(&GetOrder::full_name(), b"\xff\xff\xff"),
            Some(Err(_))
        ));
        assert!(decoder.decode("x.Unknown", &payload).is_none());
    }

    #[test]
    #[should_panic(expected = "routed twice")]
    fn a_type_routed_twice_is_a_wiring_mistake() {
        let _ = router().on::<GetOrder, _>(|_, _, _| Ok(()));
    }
}
