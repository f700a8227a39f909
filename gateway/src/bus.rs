//! Sending commands to processors and waiting for their replies (the deferred
//! result of an HTTP request).

use crate::admission::Admission;
use crate::error::ApiError;
use crate::replies::{Pending, Reply};
use d2c_platform::producer::KafkaProducer;
use d2c_proto::{Envelope, ReplyTo};
use d2c_topology::TopicNames;
use rdkafka::producer::FutureRecord;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument as _;
use uuid::Uuid;

pub enum RequestOutcome {
    Replied(Reply),
    /// The command was sent but its reply did not come in time; a reply
    /// arriving later carries `correlation_id`.
    TimedOut {
        correlation_id: String,
    },
    /// The command was sent without waiting: too many requests are parked.
    NotWaited {
        correlation_id: String,
    },
}

#[derive(Clone)]
pub struct Bus {
    pub producer: KafkaProducer,
    pub names: TopicNames,
    pub reply_to: ReplyTo,
    pub pending: Arc<Pending>,
    pub reply_timeout: Duration,
    pub admission: Arc<Admission>,
}

impl Bus {
    /// Publish `message` to `topic` keyed by `key` and wait for the reply
    /// until the reply timeout (counted from now) runs out; `503` at once,
    /// with nothing sent, when the admission limit is reached.
    pub async fn request<M: prost::Message + prost::Name>(
        &self,
        topic: &str,
        key: &str,
        message: &M,
        idempotency_key: Option<&str>,
    ) -> Result<RequestOutcome, ApiError> {
        let Some(admitted) = self.admission.admit() else {
            return Err(ApiError::unavailable(
                "the platform is at capacity; retry after the time in Retry-After",
            ));
        };
        let deadline = Instant::now() + self.reply_timeout;
        let correlation_id = Uuid::new_v4().to_string();
        // Parked before sending, so even an instant reply finds its request.
        let parked = self.pending.park(&correlation_id);
        let mut envelope = Envelope::new(M::full_name(), Uuid::new_v4(), d2c_platform::now_ms());
        envelope.correlation_id = Some(correlation_id.clone());
        envelope.reply_to = Some(self.reply_to.clone());
        envelope.idempotency_key = idempotency_key.map(str::to_owned);
        // A child of the request's `http` span; the processors' spans become
        // children of this one through the record's `traceparent`.
        let span = tracing::info_span!(
            "publish",
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.destination.name = topic,
            d2c.message_type = %envelope.message_type,
        );
        envelope.traceparent = d2c_platform::tracing_context::traceparent_of(&span);
        self.publish(topic, key, &envelope, &message.encode_to_vec(), deadline)
            .instrument(span)
            .await?;
        let Some(parked) = parked else {
            return Ok(RequestOutcome::NotWaited { correlation_id });
        };
        let mut parked = parked;
        match tokio::time::timeout_at(deadline, &mut parked.receiver).await {
            Ok(Ok(reply)) => {
                admitted.replied();
                Ok(RequestOutcome::Replied(reply))
            }
            _ => {
                admitted.timed_out();
                Ok(RequestOutcome::TimedOut { correlation_id })
            }
        }
    }

    /// A request that must be answered now: the decoded reply, or 503 (and
    /// the route's reply-timeout counter) when `service` does not answer in
    /// time.
    pub async fn ask<M, R>(
        &self,
        topic: &str,
        key: &str,
        message: &M,
        route: &str,
        service: &str,
    ) -> Result<R, ApiError>
    where
        M: prost::Message + prost::Name,
        R: prost::Message + prost::Name + Default,
    {
        let RequestOutcome::Replied(reply) = self.request(topic, key, message, None).await? else {
            crate::metrics::GATEWAY_METRICS
                .reply_timeouts
                .with_label_values(&[route])
                .inc();
            return Err(ApiError::unavailable(format!(
                "the {service} service did not answer in time; retry shortly"
            )));
        };
        R::decode(reply.payload.as_slice())
            .map_err(|error| ApiError::internal(format!("undecodable {}: {error}", R::full_name())))
    }

    async fn publish(
        &self,
        topic: &str,
        key: &str,
        envelope: &Envelope,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<(), ApiError> {
        let topic = self.names.name(topic);
        let headers = d2c_platform::kafka::envelope_headers(envelope);
        let record = FutureRecord::to(&topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        // The send itself may take longer than the reply budget when the
        // broker is slow; the command must still reach it, so wait for the
        // ack up to the producer's own delivery timeout.
        let queue_timeout = deadline.saturating_duration_since(Instant::now());
        match self.producer.send(record, queue_timeout).await {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(ApiError::unavailable(format!(
                "the request could not be handed to the platform: {error}"
            ))),
        }
    }
}
