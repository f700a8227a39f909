//! The business report of a period, from the read models and the event
//! archive.
//!
//! - Orders confirmed, revenue by currency and top products come from the
//!   `confirmed` versions in `order_versions` (the d2c.orders.v1.Order
//!   documents), rejection reasons from the `rejected` ones. An order counts
//!   in the period its first version in that status reached the read side
//!   (`projected_at`): every settled checkout is counted once, in exactly one
//!   period, however late the projector saw it, and a duplicate on the topic
//!   (a replayed batch) adds nothing. An order confirmed and later cancelled
//!   still counts as confirmed, as the `d2c_orders_confirmed_total` counter
//!   does.
//! - Checkout latency, for the same orders, comes from the archive: the
//!   record time of the order's first OrderConfirmed or OrderRejected minus
//!   that of its first OrderPlaced; p50 and p99 by `percentile_cont`.

use crate::database::without_nul;
use crate::{ReadsideError, Result};
use d2c_proto::common::v1::rejection::Code;
use d2c_proto::orders::v1::{Order, OrderConfirmed, OrderPlaced, OrderRejected};
use prost::{Message, Name};
use sqlx::{PgPool, Row};
use std::collections::BTreeMap;

/// The job name of a business report in `job_runs`.
pub const JOB_BUSINESS_REPORT: &str = "business_report";

/// The lock that elects the one replica posting business reports. Its own
/// key, so electing it never waits on the maintenance lock: "d2creprt".
pub const REPORT_LOCK_KEY: i64 = 0x6432_6372_6570_7274;

/// How far around the period the archive is searched for an order's
/// records: a checkout takes moments, its projection maybe minutes.
const ARCHIVE_MARGIN_MS: i64 = 86_400_000;

#[derive(Debug, Clone, PartialEq)]
pub struct BusinessReport {
    /// The period, milliseconds since the Unix epoch: `[from_ms, to_ms)`.
    pub from_ms: i64,
    pub to_ms: i64,
    pub orders_confirmed: u64,
    pub orders_rejected: u64,
    /// By currency, alphabetically.
    pub revenue: Vec<Revenue>,
    /// Most units sold first (then by SKU), at most the number asked for.
    pub top_products: Vec<TopProduct>,
    /// Most frequent first (then by reason).
    pub rejections: Vec<RejectionCount>,
    /// `None` when no checkout placed in the period has settled.
    pub checkout_latency: Option<CheckoutLatency>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revenue {
    pub currency: String,
    /// Sum of the confirmed orders' totals, in minor units.
    pub total_minor: i64,
    pub orders: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopProduct {
    pub sku: String,
    /// The name of the product that sells the SKU, if it is projected.
    pub product_name: Option<String>,
    pub units: i64,
    pub orders: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionCount {
    /// The payment decline code (`insufficient_funds`, `card_declined`, …),
    /// else the rejection's code (`out_of_stock`).
    pub reason: String,
    pub orders: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckoutLatency {
    pub checkouts: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The report of `[from_ms, to_ms)`, with at most `top` products.
pub async fn business_report(
    pool: &PgPool,
    from_ms: i64,
    to_ms: i64,
    top: usize,
) -> Result<BusinessReport> {
    if to_ms < from_ms {
        return Err(ReadsideError::InvalidQuery(
            "a report period must not end before it starts",
        ));
    }
    let mut report = BusinessReport {
        from_ms,
        to_ms,
        orders_confirmed: 0,
        orders_rejected: 0,
        revenue: Vec::new(),
        top_products: Vec::new(),
        rejections: Vec::new(),
        checkout_latency: None,
    };
    let mut revenue: BTreeMap<String, Revenue> = BTreeMap::new();
    let mut products: BTreeMap<String, TopProduct> = BTreeMap::new();
    let mut rejections: BTreeMap<String, u64> = BTreeMap::new();
    let settled = settled_orders(pool, from_ms, to_ms).await?;
    let order_ids: Vec<String> = settled
        .iter()
        .map(|(_, order)| without_nul(&order.order_id))
        .collect();
    for (status, order) in settled {
        if status == "confirmed" {
            report.orders_confirmed += 1;
            let entry = revenue
                .entry(order.currency.clone())
                .or_insert_with(|| Revenue {
                    currency: order.currency.clone(),
                    total_minor: 0,
                    orders: 0,
                });
            entry.total_minor += order.total_minor;
            entry.orders += 1;
            for line in &order.lines {
                let entry = products
                    .entry(line.sku.clone())
                    .or_insert_with(|| TopProduct {
                        sku: line.sku.clone(),
                        product_name: None,
                        units: 0,
                        orders: 0,
                    });
                entry.units += line.quantity;
                entry.orders += 1;
            }
        } else {
            report.orders_rejected += 1;
            *rejections.entry(rejection_reason(&order)).or_default() += 1;
        }
    }
    report.revenue = revenue.into_values().collect();
    let mut top_products: Vec<TopProduct> = products.into_values().collect();
    top_products.sort_by(|a, b| b.units.cmp(&a.units).then_with(|| a.sku.cmp(&b.sku)));
    top_products.truncate(top);
    for product in &mut top_products {
        product.product_name = crate::product_by_sku(pool, &product.sku)
            .await?
            .map(|product| product.name);
    }
    report.top_products = top_products;
    let mut rejections: Vec<RejectionCount> = rejections
        .into_iter()
        .map(|(reason, orders)| RejectionCount { reason, orders })
        .collect();
    rejections.sort_by(|a, b| {
        b.orders
            .cmp(&a.orders)
            .then_with(|| a.reason.cmp(&b.reason))
    });
    report.rejections = rejections;
    report.checkout_latency = checkout_latency(pool, &order_ids, from_ms, to_ms).await?;
    Ok(report)
}

/// (status, order) of every order whose first confirmed or rejected
/// version was projected in the period.
async fn settled_orders(pool: &PgPool, from_ms: i64, to_ms: i64) -> Result<Vec<(String, Order)>> {
    let rows = sqlx::query(
        "SELECT o.order_id, o.status, o.version, o.doc
         FROM order_versions o
         WHERE o.status IN ('confirmed', 'rejected')
           AND o.projected_at >= timestamptz 'epoch' + $1::int8 * interval '1 millisecond'
           AND o.projected_at <  timestamptz 'epoch' + $2::int8 * interval '1 millisecond'
           AND NOT EXISTS (SELECT 1 FROM order_versions earlier
                           WHERE earlier.order_id = o.order_id AND earlier.status = o.status
                             AND earlier.version < o.version)
         ORDER BY o.order_id, o.status",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let status: String = row.try_get("status")?;
            let doc: Vec<u8> = row.try_get("doc")?;
            let order = Order::decode(doc.as_slice()).map_err(|source| ReadsideError::Decode {
                table: "order_versions",
                id: row.try_get("order_id").unwrap_or_default(),
                version: row.try_get("version").unwrap_or_default(),
                source,
            })?;
            Ok((status, order))
        })
        .collect()
}

/// p50/p99 of settled minus placed record time over `order_ids`.
async fn checkout_latency(
    pool: &PgPool,
    order_ids: &[String],
    from_ms: i64,
    to_ms: i64,
) -> Result<Option<CheckoutLatency>> {
    if order_ids.is_empty() {
        return Ok(None);
    }
    let settled_types = vec![OrderConfirmed::full_name(), OrderRejected::full_name()];
    let row = sqlx::query(
        "WITH records AS (
             SELECT key, message_type = $2 AS is_placed, recorded_at FROM events
             WHERE key = ANY($1) AND (message_type = $2 OR message_type = ANY($3))
               AND recorded_at >= timestamptz 'epoch' + ($4::int8 - $6::int8) * interval '1 millisecond'
               AND recorded_at <  timestamptz 'epoch' + ($5::int8 + $6::int8) * interval '1 millisecond'),
         latency AS (
             SELECT (extract(epoch FROM min(recorded_at) FILTER (WHERE NOT is_placed)
                                      - min(recorded_at) FILTER (WHERE is_placed)) * 1000)::float8 AS ms
             FROM records GROUP BY key)
         SELECT count(ms) AS checkouts,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50_ms,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99_ms
         FROM latency WHERE ms IS NOT NULL",
    )
    .bind(order_ids)
    .bind(OrderPlaced::full_name())
    .bind(&settled_types)
    .bind(from_ms)
    .bind(to_ms)
    .bind(ARCHIVE_MARGIN_MS)
    .fetch_one(pool)
    .await?;
    let checkouts: i64 = row.try_get("checkouts")?;
    let p50: Option<f64> = row.try_get("p50_ms")?;
    let p99: Option<f64> = row.try_get("p99_ms")?;
    Ok(match (checkouts, p50, p99) {
        (1.., Some(p50_ms), Some(p99_ms)) => Some(CheckoutLatency {
            checkouts: u64::try_from(checkouts).unwrap_or(0),
            p50_ms,
            p99_ms,
        }),
        _ => None,
    })
}

/// Why an order was rejected, for grouping: the decline code of a declined
/// payment, else the rejection's code name (`out_of_stock`).
pub fn rejection_reason(order: &Order) -> String {
    let Some(rejection) = &order.rejection else {
        return "unknown".into();
    };
    let reason = without_nul(rejection.reason.trim());
    if !reason.is_empty() {
        return reason;
    }
    let name = Code::try_from(rejection.code)
        .unwrap_or(Code::Unspecified)
        .as_str_name();
    name.strip_prefix("CODE_")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// The `job_runs` detail of a posted report: it starts with the period, so
/// the next run (on whichever replica leads then) knows where to go on.
pub fn report_run_detail(report: &BusinessReport) -> String {
    format!(
        "period {}..{}: {} confirmed, {} rejected",
        report.from_ms, report.to_ms, report.orders_confirmed, report.orders_rejected
    )
}

/// Where the last posted report's period ended, if one was posted.
pub async fn last_reported_until(pool: &PgPool) -> Result<Option<i64>> {
    let detail: Option<String> = sqlx::query_scalar(
        "SELECT detail FROM job_runs WHERE job = $1 AND detail LIKE 'period %'
         ORDER BY id DESC LIMIT 1",
    )
    .bind(JOB_BUSINESS_REPORT)
    .fetch_optional(pool)
    .await?;
    Ok(detail.as_deref().and_then(period_end))
}

/// `to_ms` of a detail written by [`report_run_detail`].
fn period_end(detail: &str) -> Option<i64> {
    let period = detail.strip_prefix("period ")?.split(':').next()?;
    let (_, to) = period.split_once("..")?;
    to.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use d2c_proto::common::v1::Rejection;

    #[test]
    fn the_period_end_is_read_back_from_the_detail() {
        let report = BusinessReport {
            from_ms: 1_000,
            to_ms: 61_000,
            orders_confirmed: 3,
            orders_rejected: 1,
            revenue: Vec::new(),
            top_products: Vec::new(),
            rejections: Vec::new(),
            checkout_latency: None,
        };
        let detail = report_run_detail(&report);
        assert_eq!(detail, "period 1000..61000: 3 confirmed, 1 rejected");
        assert_eq!(period_end(&detail), Some(61_000));
        assert_eq!(period_end("failed (period 1..2): Slack said 500"), None);
    }

    #[test]
    fn rejections_are_grouped_by_decline_code_else_by_code() {
        let order = |code: Code, reason: &str| Order {
            rejection: Some(Rejection {
                code: code as i32,
                reason: reason.into(),
                ..Rejection::default()
            }),
            ..Order::default()
        };
        assert_eq!(
            rejection_reason(&order(Code::PaymentDeclined, "card_declined")),
            "card_declined"
        );
        assert_eq!(
            rejection_reason(&order(Code::OutOfStock, "")),
            "out_of_stock"
        );
        assert_eq!(rejection_reason(&Order::default()), "unknown");
    }
}
