//! The event archive: every consumed record, appended once.

use crate::database::without_nul;
use crate::Result;
use sqlx::PgConnection;
use uuid::Uuid;

/// One consumed record, as archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedEvent {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (or the envelope's sent-at when the record has
    /// none), milliseconds since the Unix epoch. Picks the month partition,
    /// and must be the same on every redelivery for archiving to be
    /// idempotent.
    pub recorded_at_ms: i64,
    /// Empty when the record carried no message-type header.
    pub message_type: String,
    pub message_id: Option<Uuid>,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    /// Header name → value (lossy UTF-8); a repeated name keeps its last value.
    pub headers: Vec<(String, String)>,
}

/// Appends `events` in one statement; records already archived are skipped.
/// Returns how many rows were inserted.
pub async fn archive_events(conn: &mut PgConnection, events: &[ArchivedEvent]) -> Result<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    let columns = Columns::of(events);
    let inserted = sqlx::query(
        r#"INSERT INTO events
               (topic, partition, "offset", recorded_at, message_type, message_id, key, payload, headers)
           SELECT topic, partition, "offset",
                  timestamptz 'epoch' + recorded_at_ms * interval '1 millisecond',
                  message_type, message_id, key, payload, headers::jsonb
           FROM UNNEST($1::text[], $2::int4[], $3::int8[], $4::int8[], $5::text[],
                       $6::uuid[], $7::text[], $8::bytea[], $9::text[])
                AS batch(topic, partition, "offset", recorded_at_ms, message_type,
                         message_id, key, payload, headers)
           ON CONFLICT DO NOTHING"#,
    )
    .bind(columns.topics)
    .bind(columns.partitions)
    .bind(columns.offsets)
    .bind(columns.recorded_at_ms)
    .bind(columns.message_types)
    .bind(columns.message_ids)
    .bind(columns.keys)
    .bind(columns.payloads)
    .bind(columns.headers)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected())
}

/// The batch as one array per column, for UNNEST.
#[derive(Default)]
struct Columns {
    topics: Vec<String>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    recorded_at_ms: Vec<i64>,
    message_types: Vec<String>,
    message_ids: Vec<Option<Uuid>>,
    keys: Vec<Option<String>>,
    payloads: Vec<Vec<u8>>,
    headers: Vec<String>,
}

impl Columns {
    fn of(events: &[ArchivedEvent]) -> Self {
        let mut columns = Self::default();
        for event in events {
            columns.topics.push(without_nul(&event.topic));
            columns.partitions.push(event.partition);
            columns.offsets.push(event.offset);
            columns.recorded_at_ms.push(event.recorded_at_ms);
            columns.message_types.push(without_nul(&event.message_type));
            columns.message_ids.push(event.message_id);
            columns.keys.push(event.key.as_deref().map(without_nul));
            columns.payloads.push(event.payload.clone());
            columns.headers.push(headers_json(&event.headers));
        }
        columns
    }
}

fn headers_json(headers: &[(String, String)]) -> String {
    let object: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(name, value)| {
            (
                without_nul(name),
                serde_json::Value::String(without_nul(value)),
            )
        })
        .collect();
    serde_json::Value::Object(object).to_string()
}
