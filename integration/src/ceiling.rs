//! The Kafka-only ceiling on this box: what the broker alone sustains with
//! Kafka's own Java producer (`org.apache.kafka.tools.ProducerPerformance`),
//! small records, with and without transactions, measured in the same run
//! as the platform's load so that "the broker's limit" is a number, not a
//! guess. The broker's requests and CPU over each run come from its JMX
//! exporter (`brokerwork`).
//!
//! The Java client on a Kafka 4 broker may negotiate transaction version 2
//! (no `AddPartitionsToTxn`/`AddOffsetsToTxn` round trips); librdkafka 2.12,
//! which our processors use, cannot. The requests per transaction printed
//! for each run say which one ran.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::brokerwork::{self, Counters, CPU_SECONDS, RECORDS_IN};
use crate::load::round_to;

/// One way of producing, run for a fixed time.
#[derive(Debug, Clone)]
pub struct Plan {
    pub label: &'static str,
    /// Concurrent producer processes.
    pub producers: usize,
    /// `None`: no transactions; `Some(ms)`: a transaction commits once it
    /// is this old (0: after every record).
    pub transaction_ms: Option<u64>,
    /// Records per second per producer (`None`: as fast as it can).
    pub throughput: Option<u64>,
}

/// The runs `bench` makes: plain batching; small transactions (a commit
/// once 1 ms old, at 1,000 records/s: a few records each, what one
/// transaction costs the broker); 1 ms transactions from four producers as
/// fast as they can (the broker's transaction rate); and 5 ms transactions
/// as fast as one producer can (batching inside a transaction).
/// ProducerPerformance refuses a duration of 0.
pub const PLANS: [Plan; 4] = [
    Plan {
        label: "no transactions, batched",
        producers: 1,
        transaction_ms: None,
        throughput: None,
    },
    Plan {
        label: "1 ms transactions at 1,000 records/s, 1 producer",
        producers: 1,
        transaction_ms: Some(1),
        throughput: Some(1000),
    },
    Plan {
        label: "1 ms transactions, 4 producers",
        producers: 4,
        transaction_ms: Some(1),
        throughput: None,
    },
    Plan {
        label: "5 ms transactions, 1 producer",
        producers: 1,
        transaction_ms: Some(5),
        throughput: None,
    },
];

#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub label: String,
    pub producers: usize,
    pub seconds: f64,
    pub records_per_s: f64,
    pub transactions_per_s: f64,
    pub broker_cores: f64,
    pub broker_cpu_us_per_record: Option<f64>,
    pub broker_cpu_us_per_transaction: Option<f64>,
    /// Broker requests per transaction (per 1,000 records without).
    pub requests_per_unit: String,
}

/// Records a producer is asked for: more than it can send in `seconds`, so
/// the run ends on the time limit (`kill`), never early.
const RECORDS_CAP: u64 = 50_000_000;
const RECORD_SIZE: &str = "100";

/// Where a run produces and how the broker is observed.
pub struct Target<'a> {
    /// `kafka/broker`, which runs Kafka's tool classes.
    pub tool: &'a Path,
    pub brokers: &'a str,
    pub topic: &'a str,
    pub client: &'a reqwest::Client,
    /// The broker's `/metrics` (JMX exporter).
    pub metrics: &'a str,
}

/// The JVMs' start and JIT warm-up, not measured.
const WARMUP: Duration = Duration::from_secs(4);

/// What the broker does per second with nothing but the platform idling
/// (fetch long-polls, heartbeats, ticks), measured over `window`: taken out
/// of every ceiling run, so the rows show what the producers caused.
pub async fn background(target: &Target<'_>, window: Duration) -> Option<Background> {
    let before = brokerwork::scrape(target.client, target.metrics).await?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after = brokerwork::scrape(target.client, target.metrics).await?;
    Some(Background {
        grown: after.since(&before),
        seconds: started.elapsed().as_secs_f64(),
    })
}

pub struct Background {
    grown: Counters,
    seconds: f64,
}

/// Runs `plan` for `duration` after its warm-up; `None` (said on stderr) if
/// the tool cannot run or the broker's metrics cannot be read.
pub async fn run(
    target: &Target<'_>,
    plan: &Plan,
    duration: Duration,
    background: &Background,
) -> Option<Ceiling> {
    let (tool, brokers, topic) = (target.tool, target.brokers, target.topic);
    let scrape = || brokerwork::scrape(target.client, target.metrics);
    let mut children = Vec::new();
    for index in 0..plan.producers {
        let mut command = Command::new(tool);
        command
            .args(["tool", "org.apache.kafka.tools.ProducerPerformance"])
            .args(["--topic", topic, "--record-size", RECORD_SIZE])
            .args(["--num-records", &RECORDS_CAP.to_string()])
            .args([
                "--throughput",
                &plan.throughput.map_or("-1".to_owned(), |t| t.to_string()),
            ]);
        if let Some(ms) = plan.transaction_ms {
            command
                .args(["--transactional-id", &format!("bench-ceiling-{index}")])
                .args(["--transaction-duration-ms", &ms.to_string()]);
        }
        command
            .args(["--bootstrap-server", brokers])
            .args(["--command-property", "acks=all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match command.spawn() {
            Ok(child) => children.push(child),
            Err(e) => {
                eprintln!("bench: running {}: {e}", tool.display());
                return None;
            }
        }
    }
    tokio::time::sleep(WARMUP).await;
    let before = scrape().await;
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    let after = scrape().await;
    let seconds = started.elapsed().as_secs_f64();
    for mut child in children {
        // What the producers did is read from the broker, not from them
        // (their own figures are still buffered when they are stopped).
        let _ = child.kill();
        let _ = child.wait();
    }
    let grown = after?.since(&before?);
    let caused = grown.minus(&background.grown, seconds / background.seconds);
    Some(ceiling(plan, &caused, seconds))
}

fn ceiling(plan: &Plan, grown: &Counters, seconds: f64) -> Ceiling {
    let records = grown.total(RECORDS_IN);
    let transactions = grown.requests_of("EndTxn");
    let cpu_us = 1_000_000.0 * grown.total(CPU_SECONDS);
    let per = |value: f64, unit: f64| (unit > 0.0).then(|| round_to(value / unit, 1));
    let (unit, scale) = if transactions > 0.0 {
        (transactions, 1.0)
    } else {
        (records, 1000.0)
    };
    let requests_per_unit = if unit > 0.0 {
        let scaled = grown
            .requests
            .iter()
            .map(|(request, count)| (request.clone(), round_to(count * scale / unit, 1)))
            .collect();
        brokerwork::requests_text(&scaled)
    } else {
        String::new()
    };
    Ceiling {
        label: plan.label.to_owned(),
        producers: plan.producers,
        seconds: round_to(seconds, 1),
        records_per_s: round_to(records / seconds, 0),
        transactions_per_s: round_to(transactions / seconds, 0),
        broker_cores: round_to(cpu_us / 1_000_000.0 / seconds, 2),
        broker_cpu_us_per_record: per(cpu_us, records),
        broker_cpu_us_per_transaction: per(cpu_us, transactions),
        requests_per_unit,
    }
}

pub const TABLE_HEADER: &str = "| Kafka alone | producers | records/s | transactions/s | broker cores | broker CPU µs/record | broker CPU µs/transaction | broker requests per transaction (per 1,000 records without) |\n|---|---|---|---|---|---|---|---|";

pub fn table_row(ceiling: &Ceiling) -> String {
    let figure = |value: Option<f64>| value.map_or("–".to_owned(), |v| format!("{v}"));
    format!(
        "| {} | {} | {} | {} | {:.2} | {} | {} | {} |",
        ceiling.label,
        ceiling.producers,
        ceiling.records_per_s,
        ceiling.transactions_per_s,
        ceiling.broker_cores,
        figure(ceiling.broker_cpu_us_per_record),
        figure(ceiling.broker_cpu_us_per_transaction),
        ceiling.requests_per_unit,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_runs_are_reported_per_transaction() {
        let grown = brokerwork::parse(
            "kafka_network_requestmetrics_requests_total{request=\"EndTxn\",version=\"5\"} 100\n\
             kafka_network_requestmetrics_requests_total{request=\"Produce\",version=\"12\"} 200\n\
             kafka_server_brokertopicmetrics_messagesin_total 100\n\
             process_cpu_seconds_total 0.5\n",
        );
        let row = ceiling(&PLANS[1], &grown, 10.0);
        assert_eq!(row.transactions_per_s, 10.0);
        assert_eq!(row.records_per_s, 10.0);
        assert_eq!(row.broker_cpu_us_per_transaction, Some(5000.0));
        assert_eq!(row.requests_per_unit, "Produce 2, EndTxn 1");
        assert_eq!(row.broker_cores, 0.05);
    }

    #[test]
    fn plain_runs_are_reported_per_thousand_records() {
        let grown = brokerwork::parse(
            "kafka_network_requestmetrics_requests_total{request=\"Produce\",version=\"12\"} 50\n\
             kafka_server_brokertopicmetrics_messagesin_total 100000\n\
             process_cpu_seconds_total 1\n",
        );
        let row = ceiling(&PLANS[0], &grown, 10.0);
        assert_eq!(row.transactions_per_s, 0.0);
        assert_eq!(row.broker_cpu_us_per_record, Some(10.0));
        assert_eq!(row.broker_cpu_us_per_transaction, None);
        assert_eq!(row.requests_per_unit, "Produce 0.5");
    }
}
