//! From consumed records to what one Postgres transaction writes: every
//! record archived, and the read-model rows of the events that carry a whole
//! product or order. Pure: no I/O, so a batch can be checked in unit tests.

use d2c_proto::catalog::v1::{Product, ProductArchived, ProductCreated, ProductUpdated};
use d2c_proto::envelope::header;
use d2c_proto::orders::v1::{
    Order, OrderCancellationRequested, OrderCancelled, OrderConfirmed, OrderPlaced, OrderRejected,
    OrderUpdated,
};
use d2c_readside::ArchivedEvent;
use d2c_runtime::router::Decoder;
use rdkafka::message::{Headers, Message, OwnedMessage};
use std::sync::LazyLock;

/// A record left out of the read models, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Projection {
    pub events: Vec<ArchivedEvent>,
    pub products: Vec<Product>,
    /// (offset on orders.events, order): the offset is the version.
    pub orders: Vec<(i64, Order)>,
    pub skipped: Vec<Skipped>,
}

/// The read-model row an event carries, if any.
#[allow(clippy::large_enum_variant)] // one row per record, moved once into a batch
enum Row {
    Product(Product),
    Order(Order),
}

/// Projects a batch. `now_ms` stands in for the timestamp of a record that
/// has neither a timestamp nor a sent-at header (real brokers always set one).
pub fn project(records: &[OwnedMessage], now_ms: i64) -> Projection {
    let mut projection = Projection::default();
    for record in records {
        let (event, envelope_error) = archived(record, now_ms);
        let outcome = envelope_error
            .map(Err)
            .unwrap_or_else(|| read_model_row(&event.message_type, &event.payload));
        match outcome {
            Ok(Some(Row::Product(product))) => projection.products.push(product),
            Ok(Some(Row::Order(order))) => projection.orders.push((record.offset(), order)),
            Ok(None) => {}
            Err(reason) => projection.skipped.push(Skipped {
                topic: record.topic().to_owned(),
                partition: record.partition(),
                offset: record.offset(),
                reason,
            }),
        }
        projection.events.push(event);
    }
    projection
}

/// The record as archived, and why its envelope is unreadable if it is.
fn archived(record: &OwnedMessage, now_ms: i64) -> (ArchivedEvent, Option<String>) {
    let headers: Vec<(String, String)> = record
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                    (h.key.to_owned(), value.into_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let envelope = d2c_platform::kafka::envelope_of(record);
    let header = |name: &str| {
        headers
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let recorded_at_ms = record
        .timestamp()
        .to_millis()
        .filter(|ms| *ms >= 0)
        .or_else(|| envelope.as_ref().ok().map(|e| e.sent_at_ms))
        .unwrap_or(now_ms);
    let event = ArchivedEvent {
        topic: record.topic().to_owned(),
        partition: record.partition(),
        offset: record.offset(),
        recorded_at_ms,
        message_type: header(header::MESSAGE_TYPE).unwrap_or_default(),
        message_id: header(header::MESSAGE_ID).and_then(|id| id.parse().ok()),
        key: record
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned()),
        payload: record.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers,
    };
    (
        event,
        envelope.err().map(|error| format!("envelope: {error}")),
    )
}

/// What a read-model event carries.
enum Carried {
    Product(Option<Box<Product>>),
    Order(Option<Box<Order>>),
}

/// The events that carry a read-model row, by type.
static READ_MODEL_EVENTS: LazyLock<Decoder<Carried>> = LazyLock::new(|| {
    Decoder::new()
        .on(|event: ProductCreated| Carried::Product(event.product.map(Box::new)))
        .on(|event: ProductUpdated| Carried::Product(event.product.map(Box::new)))
        .on(|event: ProductArchived| Carried::Product(event.product.map(Box::new)))
        .on(|event: OrderPlaced| Carried::Order(event.order.map(Box::new)))
        .on(|event: OrderConfirmed| Carried::Order(event.order.map(Box::new)))
        .on(|event: OrderRejected| Carried::Order(event.order.map(Box::new)))
        .on(|event: OrderCancellationRequested| Carried::Order(event.order.map(Box::new)))
        .on(|event: OrderUpdated| Carried::Order(event.order.map(Box::new)))
        .on(|event: OrderCancelled| Carried::Order(event.order.map(Box::new)))
});

/// Decodes the product or order an event of `message_type` carries; other
/// event types carry no read-model row.
fn read_model_row(message_type: &str, payload: &[u8]) -> Result<Option<Row>, String> {
    let Some(decoded) = READ_MODEL_EVENTS.decode(message_type, payload) else {
        return Ok(None);
    };
    match decoded.map_err(|error| format!("{message_type}: {error}"))? {
        Carried::Product(product) => product
            .map(|product| Some(Row::Product(*product)))
            .ok_or_else(|| format!("{message_type} carries no product")),
        Carried::Order(order) => order
            .map(|order| Some(Row::Order(*order)))
            .ok_or_else(|| format!("{message_type} carries no order")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d2c_proto::Envelope;
    use prost::{Message as _, Name};
    use rdkafka::Timestamp;

    fn record(
        topic: &str,
        offset: i64,
        message_type: &str,
        payload: Vec<u8>,
        timestamp: Timestamp,
    ) -> OwnedMessage {
        let envelope = Envelope::new(message_type.into(), uuid_of(offset), 1_700_000_000_000);
        let headers = d2c_platform::kafka::envelope_headers(&envelope);
        OwnedMessage::new(
            Some(payload),
            Some(b"key-1".to_vec()),
            topic.into(),
            timestamp,
            3,
            offset,
            Some(headers),
        )
    }

    fn uuid_of(offset: i64) -> uuid::Uuid {
        uuid::Uuid::from_u128(offset as u128 + 1)
    }

    fn product(version: i64) -> Product {
        Product {
            product_id: "p1".into(),
            name: "Shirt".into(),
            version,
            ..Product::default()
        }
    }

    #[test]
    fn catalog_and_order_events_become_read_model_rows() {
        let created = ProductCreated {
            product: Some(product(1)),
        };
        let order = Order {
            order_id: "o1".into(),
            ..Order::default()
        };
        let placed = OrderPlaced {
            order: Some(order.clone()),
        };
        let records = [
            record(
                "catalog.events",
                10,
                &ProductCreated::full_name(),
                created.encode_to_vec(),
                Timestamp::CreateTime(1_700_000_000_500),
            ),
            record(
                "orders.events",
                42,
                &OrderPlaced::full_name(),
                placed.encode_to_vec(),
                Timestamp::NotAvailable,
            ),
            record(
                "payments.events",
                7,
                "d2c.payments.v1.PaymentAuthorized",
                vec![1, 2],
                Timestamp::LogAppendTime(1_700_000_000_900),
            ),
        ];
        let projection = project(&records, 5);
        assert_eq!(projection.products, vec![product(1)]);
        assert_eq!(projection.orders, vec![(42, order)]);
        assert!(projection.skipped.is_empty(), "{:?}", projection.skipped);
        assert_eq!(projection.events.len(), 3);
        let first = &projection.events[0];
        assert_eq!(first.recorded_at_ms, 1_700_000_000_500);
        assert_eq!(first.message_type, "d2c.catalog.v1.ProductCreated");
        assert_eq!(first.message_id, Some(uuid_of(10)));
        assert_eq!(first.key.as_deref(), Some("key-1"));
        assert_eq!(first.partition, 3);
        // No record timestamp: the envelope's sent-at.
        assert_eq!(projection.events[1].recorded_at_ms, 1_700_000_000_000);
        assert_eq!(projection.events[2].payload, vec![1, 2]);
    }

    #[test]
    fn undecodable_records_are_archived_but_skipped() {
        let records = [
            record(
                "catalog.events",
                1,
                &ProductUpdated::full_name(),
                vec![0xff, 0xff, 0xff],
                Timestamp::CreateTime(1),
            ),
            record(
                "catalog.events",
                2,
                &ProductArchived::full_name(),
                ProductArchived { product: None }.encode_to_vec(),
                Timestamp::CreateTime(2),
            ),
            OwnedMessage::new(
                Some(vec![9]),
                None,
                "orders.events".into(),
                Timestamp::NotAvailable,
                0,
                5,
                None,
            ),
        ];
        let projection = project(&records, 77);
        assert_eq!(projection.events.len(), 3);
        assert!(projection.products.is_empty());
        assert!(projection.orders.is_empty());
        let offsets: Vec<i64> = projection.skipped.iter().map(|s| s.offset).collect();
        assert_eq!(offsets, vec![1, 2, 5]);
        let headerless = &projection.events[2];
        assert_eq!(headerless.message_type, "");
        assert_eq!(headerless.message_id, None);
        assert_eq!(headerless.key, None);
        assert_eq!(headerless.recorded_at_ms, 77);
    }
}
