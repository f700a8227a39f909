//! Orders by customer, versioned by insert: one row per event on
//! orders.events, the event's offset as version.

use crate::database::without_nul;
use crate::{ReadsideError, Result};
use d2c_proto::orders::v1::Order;
use prost::Message;
use sqlx::{PgConnection, PgPool, Row};

/// Inserts one order version; a version already stored is left as it is.
pub async fn insert_order_version(
    conn: &mut PgConnection,
    version: i64,
    order: &Order,
) -> Result<u64> {
    insert_order_versions(conn, &[(version, order.clone())]).await
}

/// Inserts (version, order) rows in one statement; versions already stored
/// (a replay) are skipped. Returns how many rows were inserted.
pub async fn insert_order_versions(
    conn: &mut PgConnection,
    orders: &[(i64, Order)],
) -> Result<u64> {
    if orders.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(orders.len());
    let mut versions = Vec::with_capacity(orders.len());
    let mut customers = Vec::with_capacity(orders.len());
    let mut statuses = Vec::with_capacity(orders.len());
    let mut placed = Vec::with_capacity(orders.len());
    let mut docs = Vec::with_capacity(orders.len());
    for (version, order) in orders {
        ids.push(without_nul(&order.order_id));
        versions.push(*version);
        customers.push(without_nul(&order.customer_id));
        statuses.push(status_name(order));
        placed.push(order.placed_at_ms);
        docs.push(order.encode_to_vec());
    }
    let inserted = sqlx::query(
        "INSERT INTO order_versions (order_id, version, customer_id, status, placed_at_ms, doc)
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::int8[],
                              $6::bytea[])
         ON CONFLICT DO NOTHING",
    )
    .bind(ids)
    .bind(versions)
    .bind(customers)
    .bind(statuses)
    .bind(placed)
    .bind(docs)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected())
}

/// `placed`, `awaiting_payment`, …: the names the HTTP API uses.
fn status_name(order: &Order) -> String {
    let name = order.status().as_str_name();
    name.strip_prefix("ORDER_STATUS_")
        .unwrap_or(name)
        .to_lowercase()
}

/// A customer's orders, latest version of each, newest placed first.
pub async fn orders_of_customer(
    pool: &PgPool,
    customer_id: &str,
    limit: i64,
    offset: i64,
) -> Result<Vec<Order>> {
    if limit < 0 || offset < 0 {
        return Err(ReadsideError::InvalidQuery(
            "limit and offset must not be negative",
        ));
    }
    let rows = sqlx::query(
        "SELECT o.order_id, o.version, o.doc FROM order_versions o
         WHERE o.customer_id = $1
           AND NOT EXISTS (SELECT 1 FROM order_versions newer
                           WHERE newer.order_id = o.order_id AND newer.version > o.version)
         ORDER BY o.placed_at_ms DESC, o.order_id
         LIMIT $2 OFFSET $3",
    )
    .bind(without_nul(customer_id))
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_row).collect()
}

/// The latest version of an order.
pub async fn order(pool: &PgPool, order_id: &str) -> Result<Option<Order>> {
    let row = sqlx::query(
        "SELECT order_id, version, doc FROM order_versions
         WHERE order_id = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(without_nul(order_id))
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(decode_row).transpose()
}

fn decode_row(row: &sqlx::postgres::PgRow) -> Result<Order> {
    let doc: Vec<u8> = row.try_get("doc")?;
    Order::decode(doc.as_slice()).map_err(|source| ReadsideError::Decode {
        table: "order_versions",
        id: row.try_get("order_id").unwrap_or_default(),
        version: row.try_get("version").unwrap_or_default(),
        source,
    })
}

/// How many orders are in one status now, and how long the longest-waiting
/// of them has been in it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusAge {
    pub status: String,
    pub orders: i64,
    pub oldest_seconds: f64,
}

/// Every status some order is in now, with its count and the age of its
/// oldest order (since that order's latest event was projected). Settled
/// statuses (`confirmed`, `fulfilled`, `rejected`, `cancelled`) are left out:
/// orders stay in them for good. One pass over the latest version of each
/// order projected in the last `window`; an order untouched for longer is
/// not counted.
pub async fn orders_by_status_age(
    pool: &PgPool,
    window: std::time::Duration,
) -> Result<Vec<StatusAge>> {
    let rows = sqlx::query(
        "SELECT status, count(*) AS orders,
                COALESCE(EXTRACT(EPOCH FROM now() - min(projected_at)), 0)::float8 AS oldest
           FROM (SELECT DISTINCT ON (order_id) order_id, status, projected_at
                   FROM order_versions
                  WHERE projected_at > now() - $1::int8 * interval '1 second'
                  ORDER BY order_id, version DESC) latest
          WHERE status NOT IN ('confirmed', 'fulfilled', 'rejected', 'cancelled')
          GROUP BY status
          ORDER BY status",
    )
    .bind(i64::try_from(window.as_secs()).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(StatusAge {
                status: row.try_get("status")?,
                orders: row.try_get("orders")?,
                oldest_seconds: row.try_get("oldest")?,
            })
        })
        .collect()
}
