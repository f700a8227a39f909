//! Baseline for the platform's latency: the broker's own produce→consume
//! round trip on one existing partition, with the same client settings the
//! services use (idempotent producer, acks=all, no linger, short fetch wait).
//!
//! It never creates, deletes or truncates topics and uses no transactions, so
//! it is safe to point at a shared broker. Messages are tagged with a
//! per-run id and a `d2c-probe` header; the consumer side ignores everything
//! else on the partition.

use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use d2c_integration::cli::{parse_num, Flag, Flags};
use d2c_platform::kafka::client_config;
use hdrhistogram::Histogram;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

const USAGE: &str = "\
usage: broker-rtt [options]
  --brokers LIST        bootstrap servers (env D2C_KAFKA_BROKERS, default 127.0.0.1:9092)
  --topic NAME          existing topic (default ${D2C_TOPIC_PREFIX}gateway.replies)
  --partition N         partition to use (default 0)
  --count N             messages to send (default 2000)
  --rate N              messages per second (default 200)
  --fetch-wait-ms MS    consumer fetch.wait.max.ms (env D2C_FETCH_WAIT_MS, default 100)";

const HIST_MAX_US: u64 = 3_600_000_000;
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Gives the consumer time to connect to the partition leader and issue its
/// first fetch, so the first samples do not include connection setup.
const CONSUMER_WARMUP: Duration = Duration::from_secs(1);
const STRAGGLER_WAIT: Duration = Duration::from_secs(10);
const PROBE_HEADER: &str = "d2c-probe";

#[derive(Debug)]
struct Args {
    brokers: String,
    topic: String,
    partition: i32,
    count: u64,
    rate: f64,
    fetch_wait_ms: u64,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Args {
    fn parse() -> Result<Option<Self>> {
        let mut args = Args {
            brokers: env_nonempty("D2C_KAFKA_BROKERS")
                .unwrap_or_else(|| "127.0.0.1:9092".to_owned()),
            topic: format!(
                "{}gateway.replies",
                env_nonempty("D2C_TOPIC_PREFIX").unwrap_or_default()
            ),
            partition: 0,
            count: 2000,
            rate: 200.0,
            fetch_wait_ms: match env_nonempty("D2C_FETCH_WAIT_MS") {
                Some(raw) => parse_num("D2C_FETCH_WAIT_MS", &raw)?,
                None => 100,
            },
        };
        let mut flags = Flags::from_env(USAGE);
        while let Some(parsed) = flags.next_flag()? {
            let Flag::Value { name: flag, value } = parsed else {
                println!("{USAGE}");
                return Ok(None);
            };
            match flag.as_str() {
                "--brokers" => args.brokers = value,
                "--topic" => args.topic = value,
                "--partition" => args.partition = parse_num(&flag, &value)?,
                "--count" => args.count = parse_num(&flag, &value)?,
                "--rate" => args.rate = parse_num(&flag, &value)?,
                "--fetch-wait-ms" => args.fetch_wait_ms = parse_num(&flag, &value)?,
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        if !(args.rate.is_finite() && args.rate > 0.0) {
            bail!("--rate must be > 0");
        }
        if args.count == 0 {
            bail!("--count must be > 0");
        }
        if args.partition < 0 {
            bail!("--partition must be >= 0");
        }
        Ok(Some(args))
    }
}

fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).context("creating histogram")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn quantile_ms(hist: &Histogram<u64>, q: f64) -> f64 {
    if hist.is_empty() {
        return 0.0;
    }
    hist.value_at_quantile(q) as f64 / 1000.0
}

fn max_ms(hist: &Histogram<u64>) -> f64 {
    if hist.is_empty() {
        return 0.0;
    }
    hist.max() as f64 / 1000.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

struct ConsumeResult {
    hist: Histogram<u64>,
    received: u64,
    duplicates: u64,
    errors: u64,
}

/// Payload layout `<run id>:<index>:<nanos since t0>`; carrying the send time
/// in the message keeps the consumer free of shared state with the producer.
fn parse_payload(payload: &[u8], run_id: &str) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split(':');
    if parts.next()? != run_id {
        return None;
    }
    let index = parts.next()?.parse().ok()?;
    let sent_ns = parts.next()?.parse().ok()?;
    Some((index, sent_ns))
}

async fn consume(
    consumer: Arc<StreamConsumer>,
    run_id: String,
    t0: Instant,
    count: u64,
    mut stop: oneshot::Receiver<()>,
) -> Result<ConsumeResult> {
    let mut result = ConsumeResult {
        hist: new_histogram()?,
        received: 0,
        duplicates: 0,
        errors: 0,
    };
    let mut seen = vec![false; usize::try_from(count).context("--count too large")?];
    while result.received < count {
        let msg = tokio::select! {
            msg = consumer.recv() => msg,
            _ = &mut stop => break,
        };
        let now_ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                result.errors += 1;
                eprintln!("broker-rtt: consumer error: {e}");
                // Errors such as a lost leader repeat until resolved; don't spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some((index, sent_ns)) = msg.payload().and_then(|p| parse_payload(p, &run_id)) else {
            continue;
        };
        let Some(slot) = usize::try_from(index).ok().and_then(|i| seen.get_mut(i)) else {
            continue;
        };
        if std::mem::replace(slot, true) {
            result.duplicates += 1;
            continue;
        }
        result.received += 1;
        result
            .hist
            .saturating_record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
    }
    Ok(result)
}

/// Confirms the topic and partition exist without ever triggering
/// auto-creation: a metadata request for all topics creates nothing.
fn check_topic(consumer: &StreamConsumer, topic: &str, partition: i32) -> Result<()> {
    let metadata = consumer
        .fetch_metadata(None, METADATA_TIMEOUT)
        .context("fetching cluster metadata (is the broker up?)")?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        let mut existing: Vec<&str> = metadata.topics().iter().map(|t| t.name()).collect();
        existing.sort_unstable();
        bail!(
            "topic {topic:?} does not exist (broker-rtt never creates topics); existing: {existing:?}"
        );
    };
    if let Some(err) = found.error() {
        bail!("topic {topic:?} has metadata error {err:?}");
    }
    if !found.partitions().iter().any(|p| p.id() == partition) {
        bail!(
            "topic {topic:?} has no partition {partition} ({} partitions)",
            found.partitions().len()
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let Some(args) = Args::parse()? else {
        return Ok(ExitCode::SUCCESS);
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string();

    let consumer: StreamConsumer = client_config(&args.brokers, "broker-rtt")
        .set("group.id", uuid::Uuid::new_v4().to_string())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "latest")
        .set("allow.auto.create.topics", "false")
        .set("fetch.wait.max.ms", args.fetch_wait_ms.to_string())
        .set("fetch.min.bytes", "1")
        .create()
        .context("creating consumer")?;
    let consumer = Arc::new(consumer);

    let producer: FutureProducer = client_config(&args.brokers, "broker-rtt")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("allow.auto.create.topics", "false")
        // Bounds every delivery future, so the run cannot hang on a dead broker.
        .set("message.timeout.ms", STRAGGLER_WAIT.as_millis().to_string())
        .create()
        .context("creating producer")?;

    let (topic, partition) = (args.topic.clone(), args.partition);
    let high = tokio::task::block_in_place(|| -> Result<Option<i64>> {
        check_topic(&consumer, &topic, partition)?;
        // Starting at the current high watermark rather than Offset::End
        // closes the race where the consumer resolves "end" only after the
        // first probes were written and silently skips them.
        match consumer.fetch_watermarks(&topic, partition, METADATA_TIMEOUT) {
            Ok((_, high)) => Ok(Some(high)),
            Err(e) => {
                eprintln!("broker-rtt: watermarks unavailable ({e}); assigning at end");
                Ok(None)
            }
        }
    })?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(
            &args.topic,
            args.partition,
            high.map_or(Offset::End, Offset::Offset),
        )
        .context("building assignment")?;
    consumer
        .assign(&assignment)
        .context("assigning partition")?;

    // Let the fetcher connect and issue its first fetch; anything arriving now
    // is someone else's traffic and is ignored.
    let warmup_end = Instant::now() + CONSUMER_WARMUP;
    while tokio::time::timeout_at(warmup_end, consumer.recv())
        .await
        .is_ok()
    {}

    eprintln!(
        "broker-rtt: {} msgs at {}/s to {}[{}] via {} (fetch.wait.max.ms={})",
        args.count, args.rate, args.topic, args.partition, args.brokers, args.fetch_wait_ms
    );

    let t0 = Instant::now();
    let (stop_tx, stop_rx) = oneshot::channel();
    let mut consumer_task = tokio::spawn(consume(
        Arc::clone(&consumer),
        run_id.clone(),
        t0,
        args.count,
        stop_rx,
    ));

    let ack_hist = Arc::new(Mutex::new(new_histogram()?));
    let ack_errors = Arc::new(Mutex::new(0u64));
    let mut enqueue_errors = 0u64;
    let mut acks = JoinSet::new();
    for i in 0..args.count {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(i as f64 / args.rate)).await;
        let sent_at = Instant::now();
        let sent_ns = u64::try_from(sent_at.duration_since(t0).as_nanos()).unwrap_or(u64::MAX);
        let payload = format!("{run_id}:{i}:{sent_ns}");
        let headers = OwnedHeaders::new().insert(Header {
            key: PROBE_HEADER,
            value: Some("broker-rtt"),
        });
        let record = FutureRecord::to(&args.topic)
            .partition(args.partition)
            .key("broker-rtt")
            .payload(&payload)
            .headers(headers);
        match producer.send_result(record) {
            Ok(delivery) => {
                let (ack_hist, ack_errors) = (Arc::clone(&ack_hist), Arc::clone(&ack_errors));
                acks.spawn(async move {
                    match delivery.await {
                        Ok(Ok(_)) => ack_hist
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .saturating_record(micros(sent_at.elapsed())),
                        Ok(Err((e, _))) => {
                            eprintln!("broker-rtt: delivery failed: {e}");
                            *ack_errors.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                        }
                        Err(_) => {
                            *ack_errors.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                        }
                    }
                });
            }
            Err((e, _)) => {
                enqueue_errors += 1;
                eprintln!("broker-rtt: enqueue failed: {e}");
            }
        }
        while acks.try_join_next().is_some() {}
    }

    let deadline = Instant::now() + STRAGGLER_WAIT;
    while !acks.is_empty() {
        if tokio::time::timeout_at(deadline, acks.join_next())
            .await
            .is_err()
        {
            break;
        }
    }
    let unacked = acks.len() as u64;
    acks.shutdown().await;

    let consumed = match tokio::time::timeout_at(deadline, &mut consumer_task).await {
        Ok(joined) => joined,
        Err(_) => {
            // The task may have finished in the meantime and dropped the receiver.
            let _ = stop_tx.send(());
            consumer_task.await
        }
    }
    .context("consumer task panicked")??;

    let ack_hist = ack_hist
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let ack_errors = *ack_errors.lock().unwrap_or_else(PoisonError::into_inner) + unacked;
    let hist = &consumed.hist;
    let lost = args.count - consumed.received;
    let (p50, p95, p99, max) = (
        quantile_ms(hist, 0.50),
        quantile_ms(hist, 0.95),
        quantile_ms(hist, 0.99),
        max_ms(hist),
    );
    let (ack_p50, ack_p99, ack_max) = (
        quantile_ms(&ack_hist, 0.50),
        quantile_ms(&ack_hist, 0.99),
        max_ms(&ack_hist),
    );

    println!(
        "broker-rtt: n={} p50={p50:.2}ms p95={p95:.2}ms p99={p99:.2}ms max={max:.2}ms lost={lost}",
        consumed.received
    );
    println!(
        "produce-ack: n={} p50={ack_p50:.2}ms p99={ack_p99:.2}ms max={ack_max:.2}ms errors={}",
        ack_hist.len(),
        ack_errors + enqueue_errors
    );
    if consumed.duplicates > 0 || consumed.errors > 0 {
        println!(
            "consumer: duplicates={} errors={}",
            consumed.duplicates, consumed.errors
        );
    }
    let summary = serde_json::json!({
        "topic": args.topic,
        "partition": args.partition,
        "count": args.count,
        "rate": args.rate,
        "fetch_wait_ms": args.fetch_wait_ms,
        "received": consumed.received,
        "lost": lost,
        "duplicates": consumed.duplicates,
        "consumer_errors": consumed.errors,
        "p50_ms": round3(p50),
        "p95_ms": round3(p95),
        "p99_ms": round3(p99),
        "max_ms": round3(max),
        "ack_n": ack_hist.len(),
        "ack_errors": ack_errors + enqueue_errors,
        "ack_p50_ms": round3(ack_p50),
        "ack_p99_ms": round3(ack_p99),
        "ack_max_ms": round3(ack_max),
    });
    println!("BROKER_RTT_JSON {summary}");

    if consumed.received == 0 {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
