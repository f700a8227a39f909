//! The scheduled business report, posted to Slack by one replica.
//!
//! Every replica checks now and then (a tenth of the interval, at most a
//! minute apart) whether it holds the report lock ([`REPORT_LOCK_KEY`], a
//! Postgres advisory lock: one holder among the live replicas). The holder
//! reports when a whole interval has passed since the end of the last
//! reported period, as `job_runs` records it: the next period starts where
//! the last one ended, on whichever replica posted it, so periods neither
//! overlap nor leave gaps when the leader changes (a backlog after downtime
//! is capped at [`MAX_PERIODS_BEHIND`] intervals). A failed post is recorded
//! and retried later; the next success covers the failed period too.
//!
//! A period ends a moment before now ([`settle_delay`]), so checkouts whose
//! projection transaction is still committing land in it rather than in a
//! period already reported.
//!
//! Rare double post: a leader whose session broke while it was posting, and
//! a new leader that took the lock meanwhile, can both report a period.

use crate::metrics::METRICS;
use d2c_platform::config::Secret;
use d2c_readside::{
    business_report, last_reported_until, record_job_run, report_run_detail, BusinessReport,
    Leader, JOB_BUSINESS_REPORT, REPORT_LOCK_KEY,
};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Products listed in a report.
pub const TOP_PRODUCTS: usize = 5;
/// A report covers at most this many intervals (after a long downtime).
pub const MAX_PERIODS_BEHIND: u32 = 24;
/// One post to Slack may take this long.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// `outcome` label values of the reports counter.
pub mod outcome {
    pub const POSTED: &str = "posted";
    pub const FAILED: &str = "failed";
}

pub struct BusinessReports {
    pub pool: PgPool,
    pub runner: String,
    pub interval: Duration,
    pub webhook: Secret,
}

enum Round {
    NotLeader,
    NotDue,
    Posted,
    Failed,
}

#[derive(Debug, thiserror::Error)]
enum ReportError {
    #[error(transparent)]
    Readside(#[from] d2c_readside::ReadsideError),
    // Without the URL: the webhook URL is the credential.
    #[error("posting to Slack failed: {0}")]
    Post(reqwest::Error),
}

impl BusinessReports {
    /// Runs until `stop`, then gives the lock up.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let client = match reqwest::Client::builder().timeout(POST_TIMEOUT).build() {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(error = %error.without_url(), "No HTTP client for Slack; business reports are off");
                return;
            }
        };
        let mut leader = Leader::new(&self.pool, REPORT_LOCK_KEY);
        let mut ticks = tokio::time::interval(check_every(self.interval));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry_at: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|stopping| *stopping) => break,
            }
            if retry_at.is_some_and(|at| Instant::now() < at) {
                continue;
            }
            retry_at = match self.round(&mut leader, &client).await {
                Round::Failed => Some(Instant::now() + self.interval.min(Duration::from_secs(300))),
                Round::NotLeader | Round::NotDue | Round::Posted => None,
            };
        }
        if let Err(error) = leader.release().await {
            tracing::debug!(%error, "Releasing the report lock failed; it ends with the session");
        }
    }

    async fn round(&self, leader: &mut Leader, client: &reqwest::Client) -> Round {
        match leader.try_acquire().await {
            Ok(true) => {}
            Ok(false) => return Round::NotLeader,
            Err(error) => {
                tracing::warn!(%error, "Cannot reach Postgres to try for the report lock");
                return Round::NotLeader;
            }
        }
        let interval_ms = millis(self.interval);
        let to = d2c_platform::now_ms() - millis(settle_delay(self.interval));
        let from = match last_reported_until(&self.pool).await {
            Ok(Some(last)) => last.max(to - interval_ms * i64::from(MAX_PERIODS_BEHIND)),
            Ok(None) => to - interval_ms,
            Err(error) => {
                tracing::warn!(%error, "Cannot read when the last business report ended");
                return Round::Failed;
            }
        };
        if to - from < interval_ms {
            return Round::NotDue;
        }
        let started = Instant::now();
        let outcome = self.report(client, from, to).await;
        let detail = match &outcome {
            Ok(report) => report_run_detail(report),
            Err(error) => format!("failed (period {from}..{to}): {error}"),
        };
        if let Err(error) = record_job_run(
            &self.pool,
            JOB_BUSINESS_REPORT,
            &self.runner,
            started.elapsed(),
            &detail,
        )
        .await
        {
            // The next round will report this period again.
            tracing::warn!(%error, %detail, "A business report run could not be recorded");
        }
        match outcome {
            Ok(report) => {
                METRICS.reports.with_label_values(&[outcome::POSTED]).inc();
                tracing::info!(
                    from_ms = report.from_ms,
                    to_ms = report.to_ms,
                    orders_confirmed = report.orders_confirmed,
                    "Business report posted"
                );
                Round::Posted
            }
            Err(error) => {
                METRICS.reports.with_label_values(&[outcome::FAILED]).inc();
                tracing::warn!(%error, from_ms = from, to_ms = to, "Business report not posted; trying again later");
                Round::Failed
            }
        }
    }

    async fn report(
        &self,
        client: &reqwest::Client,
        from: i64,
        to: i64,
    ) -> Result<BusinessReport, ReportError> {
        let report = business_report(&self.pool, from, to, TOP_PRODUCTS).await?;
        client
            .post(self.webhook.expose())
            .json(&slack_message(&report, &self.runner))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| ReportError::Post(error.without_url()))?;
        Ok(report)
    }
}

/// How often a replica checks for the lock and whether a report is due.
fn check_every(interval: Duration) -> Duration {
    (interval / 10).clamp(Duration::from_millis(10), Duration::from_secs(60))
}

/// How long before now a period ends.
fn settle_delay(interval: Duration) -> Duration {
    (interval / 10).min(Duration::from_secs(2))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The report as a Slack message: a one-line `text` (notifications, and
/// clients without blocks) and blocks for reading.
pub fn slack_message(report: &BusinessReport, runner: &str) -> Value {
    let revenue = if report.revenue.is_empty() {
        "none".to_owned()
    } else {
        report
            .revenue
            .iter()
            .map(|revenue| money(revenue.total_minor, &revenue.currency))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rejections = report
        .rejections
        .iter()
        .map(|rejection| format!("{} {}", rejection.reason, rejection.orders))
        .collect::<Vec<_>>()
        .join(", ");
    let latency = match &report.checkout_latency {
        Some(latency) => format!(
            "p50 {:.0} ms, p99 {:.0} ms ({} checkouts)",
            latency.p50_ms, latency.p99_ms, latency.checkouts
        ),
        None => "no checkouts".to_owned(),
    };
    let period = period(report.from_ms, report.to_ms);
    let mut text = format!(
        "Business report {period}: {} orders confirmed (revenue {revenue}), {} rejected",
        report.orders_confirmed, report.orders_rejected
    );
    if !rejections.is_empty() {
        let _ = write!(text, " ({rejections})");
    }
    let _ = write!(text, ", checkout latency {latency}.");

    let mut top = String::from("*Top products*");
    if report.top_products.is_empty() {
        top.push_str("\nnone");
    }
    for (rank, product) in report.top_products.iter().enumerate() {
        let name = match &product.product_name {
            Some(name) => format!("{} ({})", escape(name), escape(&product.sku)),
            None => escape(&product.sku),
        };
        let _ = write!(
            top,
            "\n{}. {name}: {} units in {} orders",
            rank + 1,
            product.units,
            product.orders
        );
    }
    let mut reasons = String::from("*Rejection reasons*");
    if report.rejections.is_empty() {
        reasons.push_str("\nnone");
    }
    for rejection in &report.rejections {
        let _ = write!(
            reasons,
            "\n• {}: {}",
            escape(&rejection.reason),
            rejection.orders
        );
    }
    let revenue_lines = if report.revenue.is_empty() {
        "none".to_owned()
    } else {
        report
            .revenue
            .iter()
            .map(|revenue| {
                format!(
                    "{} ({} orders)",
                    money(revenue.total_minor, &revenue.currency),
                    revenue.orders
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let field =
        |title: &str, value: &str| json!({"type": "mrkdwn", "text": format!("*{title}*\n{value}")});
    json!({
        "text": escape(&text),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Business report"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": period}},
            {"type": "section", "fields": [
                field("Orders confirmed", &report.orders_confirmed.to_string()),
                field("Revenue", &escape(&revenue_lines)),
                field("Orders rejected", &report.orders_rejected.to_string()),
                field("Checkout latency", &latency),
            ]},
            {"type": "section", "text": {"type": "mrkdwn", "text": top}},
            {"type": "section", "text": {"type": "mrkdwn", "text": reasons}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": format!("Posted by {}", escape(runner))}
            ]},
        ],
    })
}

/// Slack's mrkdwn needs these three escaped, and only these.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `EUR 1,234.50`: the currency's ISO 4217 minor unit, thousands grouped.
pub fn money(minor: i64, currency: &str) -> String {
    let exponent = match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    };
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    let scale = 10u64.pow(exponent);
    let digits = (minor / scale).to_string();
    let mut major = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            major.push(',');
        }
        major.push(digit);
    }
    if exponent == 0 {
        format!("{currency} {sign}{major}")
    } else {
        format!(
            "{currency} {sign}{major}.{:0width$}",
            minor % scale,
            width = exponent as usize
        )
    }
}

/// `2026-12-01 09:00:00 – 10:00:00 UTC` (the date again when it changes).
fn period(from_ms: i64, to_ms: i64) -> String {
    let (from_date, from_time) = utc(from_ms);
    let (to_date, to_time) = utc(to_ms);
    if from_date == to_date {
        format!("{from_date} {from_time} – {to_time} UTC")
    } else {
        format!("{from_date} {from_time} – {to_date} {to_time} UTC")
    }
}

/// (date, time of day) in UTC of a Unix time in milliseconds.
fn utc(ms: i64) -> (String, String) {
    let seconds = ms.div_euclid(1_000);
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!(
            "{:02}:{:02}:{:02}",
            of_day / 3_600,
            of_day % 3_600 / 60,
            of_day % 60
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use d2c_readside::{CheckoutLatency, RejectionCount, Revenue, TopProduct};

    #[test]
    fn money_uses_the_currency_minor_unit() {
        assert_eq!(money(123_450, "EUR"), "EUR 1,234.50");
        assert_eq!(money(5, "USD"), "USD 0.05");
        assert_eq!(money(1_234_567, "JPY"), "JPY 1,234,567");
        assert_eq!(money(1_500, "KWD"), "KWD 1.500");
        assert_eq!(money(-250, "EUR"), "EUR -2.50");
    }

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(utc(0), ("1970-01-01".into(), "00:00:00".into()));
        assert_eq!(
            utc(1_764_583_200_000),
            ("2025-12-01".into(), "10:00:00".into())
        );
        assert_eq!(
            period(1_709_164_800_000, 1_709_251_199_000),
            "2024-02-29 00:00:00 – 23:59:59 UTC"
        );
    }

    #[test]
    fn the_message_says_the_numbers_in_text_and_blocks() {
        let report = BusinessReport {
            from_ms: 1_764_579_600_000,
            to_ms: 1_764_583_200_000,
            orders_confirmed: 3,
            orders_rejected: 2,
            revenue: vec![Revenue {
                currency: "EUR".into(),
                total_minor: 4_500,
                orders: 3,
            }],
            top_products: vec![TopProduct {
                sku: "SKU-A".into(),
                product_name: Some("Shirt <linen> & co".into()),
                units: 3,
                orders: 2,
            }],
            rejections: vec![RejectionCount {
                reason: "insufficient_funds".into(),
                orders: 2,
            }],
            checkout_latency: Some(CheckoutLatency {
                checkouts: 5,
                p50_ms: 35.0,
                p99_ms: 952.5,
            }),
        };
        let message = slack_message(&report, "projector-a");
        assert_eq!(
            message["text"],
            "Business report 2025-12-01 09:00:00 – 10:00:00 UTC: 3 orders confirmed \
             (revenue EUR 45.00), 2 rejected (insufficient_funds 2), checkout latency \
             p50 35 ms, p99 952 ms (5 checkouts)."
        );
        let blocks = message["blocks"].to_string();
        assert!(blocks.contains("1. Shirt &lt;linen&gt; &amp; co (SKU-A): 3 units in 2 orders"));
        assert!(blocks.contains("Posted by projector-a"));
    }
}
