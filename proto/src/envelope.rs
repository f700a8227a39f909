//! Kafka header convention. Every record carries its message type (protobuf
//! full name) and a message id; commands that expect an answer also carry a
//! correlation id and a reply-to address. Receivers drop a message id they
//! have already handled, so a replayed producer is harmless.

use uuid::Uuid;

/// Header names. Lower case, `d2c-` prefixed, except the W3C `traceparent`.
pub mod header {
    pub const MESSAGE_TYPE: &str = "d2c-message-type";
    pub const MESSAGE_ID: &str = "d2c-message-id";
    pub const CORRELATION_ID: &str = "d2c-correlation-id";
    pub const REPLY_TO: &str = "d2c-reply-to";
    pub const TRACEPARENT: &str = "traceparent";
    pub const IDEMPOTENCY_KEY: &str = "d2c-idempotency-key";
    pub const SENT_AT: &str = "d2c-sent-at";
    /// Set on dead-lettered records: why the message could not be handled.
    pub const DEAD_LETTER_REASON: &str = "d2c-dead-letter-reason";
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("header {0} is missing")]
    Missing(&'static str),
    #[error("header {name} is not valid: {value:?}")]
    Invalid { name: &'static str, value: String },
}

/// Where a reply goes: one partition of one topic. Written `topic/partition`
/// (`/` cannot occur in a Kafka topic name, so the split is unambiguous).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    pub topic: String,
    pub partition: i32,
}

impl ReplyTo {
    pub fn parse(value: &str) -> Result<Self, EnvelopeError> {
        let invalid = || EnvelopeError::Invalid {
            name: header::REPLY_TO,
            value: value.to_owned(),
        };
        let (topic, partition) = value.rsplit_once('/').ok_or_else(invalid)?;
        let partition = partition.parse::<i32>().map_err(|_| invalid())?;
        if topic.is_empty() || partition < 0 {
            return Err(invalid());
        }
        Ok(Self {
            topic: topic.to_owned(),
            partition,
        })
    }
}

impl std::fmt::Display for ReplyTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub message_type: String,
    pub message_id: Uuid,
    pub correlation_id: Option<String>,
    pub reply_to: Option<ReplyTo>,
    pub traceparent: Option<String>,
    pub idempotency_key: Option<String>,
    /// Milliseconds since the Unix epoch, set by the original sender. Handlers
    /// use it as "now" so that a replay computes the same state.
    pub sent_at_ms: i64,
}

impl Envelope {
    pub fn new(message_type: String, message_id: Uuid, sent_at_ms: i64) -> Self {
        Self {
            message_type,
            message_id,
            correlation_id: None,
            reply_to: None,
            traceparent: None,
            idempotency_key: None,
            sent_at_ms,
        }
    }

    /// The envelope of a message caused by `self`: same correlation, trace and
    /// time, a message id derived from this one (so a replay repeats it).
    pub fn caused(&self, message_type: String, index: u32) -> Self {
        Self {
            message_type,
            message_id: crate::ids::derived_message_id(self.message_id, index),
            correlation_id: self.correlation_id.clone(),
            reply_to: None,
            traceparent: self.traceparent.clone(),
            idempotency_key: self.idempotency_key.clone(),
            sent_at_ms: self.sent_at_ms,
        }
    }

    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (header::MESSAGE_TYPE, self.message_type.clone()),
            (header::MESSAGE_ID, self.message_id.to_string()),
            (header::SENT_AT, self.sent_at_ms.to_string()),
        ];
        let optional = [
            (header::CORRELATION_ID, self.correlation_id.clone()),
            (
                header::REPLY_TO,
                self.reply_to.as_ref().map(ToString::to_string),
            ),
            (header::TRACEPARENT, self.traceparent.clone()),
            (header::IDEMPOTENCY_KEY, self.idempotency_key.clone()),
        ];
        headers.extend(
            optional
                .into_iter()
                .filter_map(|(name, value)| value.map(|value| (name, value))),
        );
        headers
    }

    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, EnvelopeError> {
        let mut found: [Option<String>; 7] = Default::default();
        let names = [
            header::MESSAGE_TYPE,
            header::MESSAGE_ID,
            header::SENT_AT,
            header::CORRELATION_ID,
            header::REPLY_TO,
            header::TRACEPARENT,
            header::IDEMPOTENCY_KEY,
        ];
        for (name, value) in headers {
            if let Some(slot) = names.iter().position(|known| *known == name) {
                let value = std::str::from_utf8(value).map_err(|_| EnvelopeError::Invalid {
                    name: names[slot],
                    value: String::from_utf8_lossy(value).into_owned(),
                })?;
                found[slot] = Some(value.to_owned());
            }
        }
        let [message_type, message_id, sent_at, correlation_id, reply_to, traceparent, idempotency_key] =
            found;
        let message_type = message_type.ok_or(EnvelopeError::Missing(header::MESSAGE_TYPE))?;
        let message_id = message_id.ok_or(EnvelopeError::Missing(header::MESSAGE_ID))?;
        let message_id = Uuid::parse_str(&message_id).map_err(|_| EnvelopeError::Invalid {
            name: header::MESSAGE_ID,
            value: message_id,
        })?;
        let sent_at = sent_at.ok_or(EnvelopeError::Missing(header::SENT_AT))?;
        let sent_at_ms = sent_at.parse().map_err(|_| EnvelopeError::Invalid {
            name: header::SENT_AT,
            value: sent_at,
        })?;
        let reply_to = reply_to.as_deref().map(ReplyTo::parse).transpose()?;
        Ok(Self {
            message_type,
            message_id,
            correlation_id,
            reply_to,
            traceparent,
            idempotency_key,
            sent_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        let mut envelope = Envelope::new(
            "d2c.orders.v1.PlaceOrder".into(),
            Uuid::new_v4(),
            1_700_000_000_000,
        );
        envelope.correlation_id = Some("c-1".into());
        envelope.reply_to = Some(ReplyTo {
            topic: "gateway.replies".into(),
            partition: 3,
        });
        envelope.traceparent =
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        envelope.idempotency_key = Some("key-1".into());
        envelope
    }

    #[test]
    fn headers_round_trip() {
        let envelope = sample();
        let headers = envelope.headers();
        let parsed = Envelope::from_headers(headers.iter().map(|(n, v)| (*n, v.as_bytes())))
            .expect("headers parse");
        assert_eq!(parsed, envelope);
    }

    #[test]
    fn missing_message_id_is_refused() {
        let headers = [
            (header::MESSAGE_TYPE, b"x".as_slice()),
            (header::SENT_AT, b"1"),
        ];
        assert_eq!(
            Envelope::from_headers(headers),
            Err(EnvelopeError::Missing(header::MESSAGE_ID))
        );
    }

    #[test]
    fn reply_to_keeps_dots_in_topic_names() {
        let reply_to = ReplyTo::parse("t1.gateway.replies/12").expect("valid");
        assert_eq!(reply_to.topic, "t1.gateway.replies");
        assert_eq!(reply_to.partition, 12);
        assert!(ReplyTo::parse("gateway.replies").is_err());
        assert!(ReplyTo::parse("gateway.replies/-1").is_err());
    }

    #[test]
    fn caused_messages_get_stable_ids() {
        let input = sample();
        let first = input.caused("a".into(), 0);
        let again = input.caused("a".into(), 0);
        let second = input.caused("a".into(), 1);
        assert_eq!(first.message_id, again.message_id);
        assert_ne!(first.message_id, second.message_id);
        assert_eq!(first.correlation_id, input.correlation_id);
    }
}
