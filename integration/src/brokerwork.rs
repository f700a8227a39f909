//! What the broker did for a step of load: requests by API, records
//! appended, and the transactions our processors committed, from two
//! scrapes of Prometheus text (the broker's JMX exporter, each processor's
//! `/metrics`) taken before and after the step. `bench` divides the
//! differences by the operations of the step.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::exposition::{self, label};

/// Counters summed over every series of a metric name, with the series of
/// `kafka_network_requestmetrics_requests_total` kept apart by request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Requests handled by the broker, by API (versions summed).
    pub requests: BTreeMap<String, f64>,
    /// Every other metric of interest, by name (labels summed).
    pub totals: BTreeMap<String, f64>,
}

const REQUESTS: &str = "kafka_network_requestmetrics_requests_total";
/// Records appended by producers (the broker's MessagesInPerSec count).
pub const RECORDS_IN: &str = "kafka_server_brokertopicmetrics_messagesin_total";
/// The scraped process's CPU (the JMX exporter reports the broker JVM's).
pub const CPU_SECONDS: &str = "process_cpu_seconds_total";
pub const TRANSACTIONS: &str = "d2c_transactions_total";
const COMMITTED: &str = "outcome=\"committed\"";
pub const TRANSACTION_PARTITIONS_SUM: &str = "d2c_transaction_partitions_sum";
pub const TRANSACTION_PARTITIONS_COUNT: &str = "d2c_transaction_partitions_count";
pub const TRANSACTION_BATCHES_SUM: &str = "d2c_transaction_batches_sum";
pub const TRANSACTION_BATCHES_COUNT: &str = "d2c_transaction_batches_count";

const TOTALS: [&str; 7] = [
    RECORDS_IN,
    CPU_SECONDS,
    TRANSACTIONS,
    TRANSACTION_PARTITIONS_SUM,
    TRANSACTION_PARTITIONS_COUNT,
    TRANSACTION_BATCHES_SUM,
    TRANSACTION_BATCHES_COUNT,
];

/// Reads the metrics above from a Prometheus text exposition; other lines
/// are ignored. Transactions count committed ones only.
pub fn parse(text: &str) -> Counters {
    let mut counters = Counters::default();
    for (name, labels, value) in exposition::series(text) {
        if let Some(request) = label(labels, "request").filter(|_| name == REQUESTS) {
            *counters.requests.entry(request.to_owned()).or_default() += value;
        }
    }
    for name in TOTALS {
        let labels = if name == TRANSACTIONS { COMMITTED } else { "" };
        let total = exposition::sum_series(text, name, labels);
        if total > 0.0 {
            counters.totals.insert(name.to_owned(), total);
        }
    }
    counters
}

impl Counters {
    /// `self` plus `other` (several processors' scrapes make one).
    pub fn add(&mut self, other: &Counters) {
        for (request, value) in &other.requests {
            *self.requests.entry(request.clone()).or_default() += value;
        }
        for (name, value) in &other.totals {
            *self.totals.entry(name.clone()).or_default() += value;
        }
    }

    /// What grew from `before` to `self` (a counter that went down, i.e. a
    /// restarted process, counts from zero).
    pub fn since(&self, before: &Counters) -> Counters {
        self.combine(
            before,
            |now, then| if now >= then { now - then } else { now },
        )
    }

    /// `self` less `scale` times `other`, never below zero: a run's growth
    /// without the background of a measured idle window `scale` times
    /// shorter.
    pub fn minus(&self, other: &Counters, scale: f64) -> Counters {
        self.combine(other, |mine, background| {
            (mine - background * scale).max(0.0)
        })
    }

    /// Each of `self`'s values with `other`'s (0 where it has none) through
    /// `f`, keeping what comes out positive.
    fn combine(&self, other: &Counters, f: impl Fn(f64, f64) -> f64) -> Counters {
        let each = |mine: &BTreeMap<String, f64>, theirs: &BTreeMap<String, f64>| {
            mine.iter()
                .map(|(key, value)| {
                    (
                        key.clone(),
                        f(*value, theirs.get(key).copied().unwrap_or(0.0)),
                    )
                })
                .filter(|(_, value)| *value > 0.0)
                .collect()
        };
        Counters {
            requests: each(&self.requests, &other.requests),
            totals: each(&self.totals, &other.totals),
        }
    }

    pub fn total(&self, name: &str) -> f64 {
        self.totals.get(name).copied().unwrap_or(0.0)
    }

    pub fn requests_of(&self, request: &str) -> f64 {
        self.requests.get(request).copied().unwrap_or(0.0)
    }
}

/// The broker's work per operation of a step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Work {
    /// Broker requests per operation, by API, largest first in the table.
    pub requests_per_op: BTreeMap<String, f64>,
    pub requests_total_per_op: f64,
    /// Records producers appended per operation.
    pub records_per_op: f64,
    /// Records per `Produce` request (how well producers batch).
    pub records_per_produce: Option<f64>,
    /// Consumer `Fetch` requests per record appended (how often a fetch
    /// comes back with little).
    pub fetches_per_record: Option<f64>,
    /// The broker JVM's CPU per operation and per request.
    pub broker_cpu_ms_per_op: Option<f64>,
    pub broker_cpu_us_per_request: Option<f64>,
    /// Kafka transactions our processors committed per operation, the
    /// partition batches each carried and the partitions each wrote.
    pub transactions_per_op: f64,
    pub batches_per_transaction: Option<f64>,
    pub partitions_per_transaction: Option<f64>,
}

fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0).then(|| crate::load::round_to(numerator / denominator, 2))
}

impl Work {
    /// `broker` and `processors` are what grew over the step.
    pub fn per_operation(broker: &Counters, processors: &Counters, operations: u64) -> Work {
        let ops = operations.max(1) as f64;
        let per_op = |value: f64| crate::load::round_to(value / ops, 2);
        let requests_total: f64 = broker.requests.values().sum();
        let records = broker.total(RECORDS_IN);
        let cpu_s = broker.total(CPU_SECONDS);
        let transactions = processors.total(TRANSACTIONS);
        Work {
            requests_per_op: broker
                .requests
                .iter()
                .map(|(request, count)| (request.clone(), per_op(*count)))
                .filter(|(_, count)| *count > 0.0)
                .collect(),
            requests_total_per_op: per_op(requests_total),
            records_per_op: per_op(records),
            records_per_produce: ratio(records, broker.requests_of("Produce")),
            fetches_per_record: ratio(broker.requests_of("FetchConsumer"), records),
            broker_cpu_ms_per_op: (cpu_s > 0.0).then(|| per_op(1000.0 * cpu_s)),
            broker_cpu_us_per_request: ratio(1_000_000.0 * cpu_s, requests_total),
            transactions_per_op: per_op(transactions),
            batches_per_transaction: ratio(
                processors.total(TRANSACTION_BATCHES_SUM),
                processors.total(TRANSACTION_BATCHES_COUNT),
            ),
            partitions_per_transaction: ratio(
                processors.total(TRANSACTION_PARTITIONS_SUM),
                processors.total(TRANSACTION_PARTITIONS_COUNT),
            ),
        }
    }

    /// `Produce 4.1, FetchConsumer 12.0, …`: the requests per operation,
    /// most frequent first.
    pub fn requests_text(&self) -> String {
        requests_text(&self.requests_per_op)
    }
}

/// `Produce 4.1, FetchConsumer 12.0, …`: request counts, most frequent first.
pub fn requests_text(requests: &BTreeMap<String, f64>) -> String {
    let mut by_count: Vec<(&String, &f64)> = requests.iter().collect();
    by_count.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    by_count
        .iter()
        .map(|(request, count)| format!("{request} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One scrape of a `/metrics` URL; `None` (said on stderr) when it cannot be
/// read, so a step is still reported without it.
pub async fn scrape(client: &reqwest::Client, url: &str) -> Option<Counters> {
    scrape_text(client, url).await.map(|text| parse(&text))
}

/// One `/metrics` page as text; `None` (said on stderr) when it cannot be
/// read.
pub async fn scrape_text(client: &reqwest::Client, url: &str) -> Option<String> {
    let response = match client.get(url).send().await {
        Ok(response) => response,
        Err(e) => {
            eprintln!("bench: scraping {url}: {e}");
            return None;
        }
    };
    match response.text().await {
        Ok(text) => Some(text),
        Err(e) => {
            eprintln!("bench: reading {url}: {e}");
            None
        }
    }
}

/// The sum of every URL's counters (those that answered).
pub async fn scrape_all(client: &reqwest::Client, urls: &[String]) -> Counters {
    let mut sum = Counters::default();
    for url in urls {
        if let Some(counters) = scrape(client, url).await {
            sum.add(&counters);
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROKER: &str = "\
# TYPE kafka_network_requestmetrics_requests_total counter
kafka_network_requestmetrics_requests_total{request=\"Produce\",version=\"11\"} 100.0
kafka_network_requestmetrics_requests_total{request=\"Produce\",version=\"12\"} 20.0
kafka_network_requestmetrics_requests_total{request=\"FetchConsumer\",version=\"17\"} 300.0
kafka_network_requestmetrics_requests_total{request=\"EndTxn\",version=\"4\"} 40.0
kafka_server_brokertopicmetrics_messagesin_total 600.0
process_cpu_seconds_total 12.5
jvm_threads_current 80
";

    const PROCESSOR: &str = "\
d2c_transactions_total{outcome=\"committed\"} 30
d2c_transactions_total{outcome=\"aborted\"} 2
d2c_transaction_partitions_sum 120
d2c_transaction_partitions_count 30
d2c_transaction_batches_sum 45
d2c_transaction_batches_count 30
";

    #[test]
    fn requests_are_summed_over_versions_and_other_lines_ignored() {
        let counters = parse(BROKER);
        assert_eq!(counters.requests_of("Produce"), 120.0);
        assert_eq!(counters.requests_of("FetchConsumer"), 300.0);
        assert_eq!(counters.total(RECORDS_IN), 600.0);
        assert_eq!(counters.total(CPU_SECONDS), 12.5);
        assert!(!counters.totals.contains_key("jvm_threads_current"));
    }

    #[test]
    fn only_committed_transactions_count() {
        assert_eq!(parse(PROCESSOR).total(TRANSACTIONS), 30.0);
    }

    #[test]
    fn work_per_operation_is_what_grew_divided_by_the_operations() {
        let before = parse(BROKER);
        let after = parse(&BROKER.replace("100.0", "300.0").replace("600.0", "1000.0"));
        let broker = after.since(&before);
        assert_eq!(broker.requests_of("Produce"), 200.0);
        assert_eq!(broker.requests_of("FetchConsumer"), 0.0);
        let processors = parse(PROCESSOR).since(&Counters::default());
        let work = Work::per_operation(&broker, &processors, 100);
        assert_eq!(work.requests_per_op["Produce"], 2.0);
        assert_eq!(work.requests_total_per_op, 2.0);
        assert_eq!(work.records_per_op, 4.0);
        assert_eq!(work.records_per_produce, Some(2.0));
        assert_eq!(work.fetches_per_record, Some(0.0));
        assert_eq!(work.broker_cpu_ms_per_op, None);
        assert_eq!(work.transactions_per_op, 0.3);
        assert_eq!(work.batches_per_transaction, Some(1.5));
        assert_eq!(work.partitions_per_transaction, Some(4.0));
    }

    #[test]
    fn the_background_is_taken_out_in_proportion_to_the_time() {
        let run = parse(BROKER);
        let idle = parse(
            "kafka_network_requestmetrics_requests_total{request=\"FetchConsumer\",version=\"17\"} 100.0\n",
        );
        let caused = run.minus(&idle, 2.5);
        assert_eq!(caused.requests_of("FetchConsumer"), 50.0);
        assert_eq!(caused.requests_of("Produce"), 120.0);
        assert_eq!(run.minus(&idle, 4.0).requests_of("FetchConsumer"), 0.0);
    }

    #[test]
    fn a_restarted_process_counts_from_zero() {
        let before = parse(PROCESSOR);
        let after = parse(&PROCESSOR.replace("} 30", "} 5"));
        assert_eq!(after.since(&before).total(TRANSACTIONS), 5.0);
    }
}
