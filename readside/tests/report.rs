//! The business report against a real Postgres: order versions and archived
//! events written with the projector's own write functions, then the report
//! of a period checked number by number. A version's projection time is set
//! by hand where a test needs it outside the period. Each test has a
//! database of its own.

use d2c_proto::catalog::v1::{Price, Product, Variant};
use d2c_proto::common::v1::rejection::Code;
use d2c_proto::common::v1::Rejection;
use d2c_proto::orders::v1::{Order, OrderLine, OrderStatus};
use d2c_readside::{
    archive_events, business_report, ensure_month_partitions, insert_order_versions,
    insert_product_versions, last_reported_until, record_job_run, report_run_detail, ArchivedEvent,
    BusinessReport, RejectionCount, Revenue, TopProduct, JOB_BUSINESS_REPORT,
};
use std::time::{Duration, SystemTime};

mod common;

use common::now_ms;
use d2c_readside::testing::TestDatabase;

fn line(sku: &str, quantity: i64, unit_price_minor: i64) -> OrderLine {
    OrderLine {
        sku: sku.into(),
        quantity,
        unit_price_minor,
    }
}

fn order(id: &str, placed_at_ms: i64, currency: &str, lines: Vec<OrderLine>) -> Order {
    Order {
        order_id: id.into(),
        customer_id: "cust-1".into(),
        total_minor: lines
            .iter()
            .map(|line| line.quantity * line.unit_price_minor)
            .sum(),
        lines,
        currency: currency.into(),
        status: OrderStatus::Placed as i32,
        placed_at_ms,
        ..Order::default()
    }
}

fn with_status(order: &Order, status: OrderStatus) -> Order {
    Order {
        status: status as i32,
        ..order.clone()
    }
}

fn rejected(order: &Order, code: Code, reason: &str) -> Order {
    Order {
        rejection: Some(Rejection {
            code: code as i32,
            reason: reason.into(),
            ..Rejection::default()
        }),
        ..with_status(order, OrderStatus::Rejected)
    }
}

/// An orders.events record of `order_id`, recorded at `at_ms`.
fn event(offset: i64, order_id: &str, message_type: &str, at_ms: i64) -> ArchivedEvent {
    ArchivedEvent {
        topic: "orders.events".into(),
        partition: 0,
        offset,
        recorded_at_ms: at_ms,
        message_type: message_type.into(),
        message_id: Some(uuid::Uuid::new_v4()),
        key: Some(order_id.into()),
        payload: Vec::new(),
        headers: Vec::new(),
    }
}

#[tokio::test]
async fn the_report_counts_the_checkouts_placed_in_its_period() {
    let db = TestDatabase::migrated().await.expect("test database");
    ensure_month_partitions(&db.pool, SystemTime::now(), 1, 1)
        .await
        .expect("month partitions");
    // Checkouts placed ten minutes ago, projected now.
    let placed_at = now_ms() - 600_000;
    let from = now_ms() - 1_000;

    let o1 = order(
        "o-1",
        placed_at + 1_000,
        "EUR",
        vec![line("SKU-A", 2, 1_000), line("SKU-B", 1, 1_000)],
    );
    let o2 = order(
        "o-2",
        placed_at + 2_000,
        "EUR",
        vec![line("SKU-A", 1, 1_500)],
    );
    let o3 = order("o-3", placed_at + 3_000, "USD", vec![line("SKU-C", 7, 100)]);
    let o4 = order(
        "o-4",
        placed_at + 4_000,
        "EUR",
        vec![line("SKU-A", 50, 1_000)],
    );
    let o5 = order(
        "o-5",
        placed_at + 5_000,
        "EUR",
        vec![line("SKU-B", 1, 1_000)],
    );
    let o6 = order(
        "o-6",
        placed_at + 6_000,
        "EUR",
        vec![line("SKU-B", 1, 1_000)],
    );
    let o7 = order(
        "o-7",
        placed_at + 7_000,
        "EUR",
        vec![line("SKU-B", 1, 1_000)],
    );
    let late = order("o-late", placed_at, "EUR", vec![line("SKU-A", 1, 9_999)]);
    let early = order("o-early", placed_at, "EUR", vec![line("SKU-A", 1, 9_999)]);
    let versions = vec![
        (1, o1.clone()),
        (2, with_status(&o1, OrderStatus::Confirmed)),
        // The same confirmation twice on the topic (a replayed batch),
        // projected in the next period.
        (3, with_status(&o1, OrderStatus::Confirmed)),
        (4, with_status(&o2, OrderStatus::Confirmed)),
        (5, with_status(&o3, OrderStatus::Confirmed)),
        // Cancelled later: it was still confirmed in the period.
        (6, with_status(&o3, OrderStatus::Cancelled)),
        (7, rejected(&o4, Code::OutOfStock, "")),
        (
            8,
            rejected(&o5, Code::PaymentDeclined, "insufficient_funds"),
        ),
        (
            9,
            rejected(&o6, Code::PaymentDeclined, "insufficient_funds"),
        ),
        // Placed, never settled.
        (10, o7.clone()),
        (11, with_status(&late, OrderStatus::Confirmed)),
        (12, with_status(&early, OrderStatus::Confirmed)),
    ];
    let shirt = Product {
        product_id: "p-shirt".into(),
        name: "Linen shirt".into(),
        category: "shirts".into(),
        variants: vec![Variant {
            sku: "SKU-A".into(),
            name: "M".into(),
            prices: vec![Price {
                currency: "EUR".into(),
                amount_minor: 1_000,
            }],
        }],
        version: 1,
        ..Product::default()
    };

    // Settled 10, 20, 30, 40, 50 and 1000 ms after being placed; o-1's
    // confirmation also arrives a second time, later.
    let placed = "d2c.orders.v1.OrderPlaced";
    let confirmed = "d2c.orders.v1.OrderConfirmed";
    let rejected_type = "d2c.orders.v1.OrderRejected";
    let mut events = Vec::new();
    for (index, (order, settled_type, after_ms)) in [
        (&o1, confirmed, 10),
        (&o2, confirmed, 20),
        (&o3, confirmed, 30),
        (&o4, rejected_type, 40),
        (&o5, rejected_type, 50),
        (&o6, rejected_type, 1_000),
    ]
    .into_iter()
    .enumerate()
    {
        let offset = index as i64 * 2;
        events.push(event(offset, &order.order_id, placed, order.placed_at_ms));
        events.push(event(
            offset + 1,
            &order.order_id,
            settled_type,
            order.placed_at_ms + after_ms,
        ));
    }
    events.push(event(100, "o-1", confirmed, o1.placed_at_ms + 5_000));
    events.push(event(101, "o-7", placed, o7.placed_at_ms));
    events.push(event(102, "o-late", placed, placed_at));
    events.push(event(103, "o-late", confirmed, placed_at + 5));

    let mut conn = db.pool.acquire().await.expect("connection");
    insert_order_versions(&mut conn, &versions)
        .await
        .expect("order versions");
    insert_product_versions(&mut conn, &[shirt])
        .await
        .expect("product");
    archive_events(&mut conn, &events).await.expect("events");
    drop(conn);
    let to = now_ms() + 1_000;
    for (order_id, version, projected_at_ms) in [
        ("o-1", 3, to + 5_000),
        ("o-late", 11, to + 10_000),
        ("o-early", 12, from - 10_000),
    ] {
        sqlx::query(
            "UPDATE order_versions
             SET projected_at = timestamptz 'epoch' + $3::int8 * interval '1 millisecond'
             WHERE order_id = $1 AND version = $2",
        )
        .bind(order_id)
        .bind(version)
        .bind(projected_at_ms)
        .execute(&db.pool)
        .await
        .expect("projection time set");
    }

    let report = business_report(&db.pool, from, to, 2)
        .await
        .expect("report");
    let latency = report.checkout_latency.clone().expect("latency measured");
    assert_eq!(latency.checkouts, 6);
    assert!((latency.p50_ms - 35.0).abs() < 0.01, "{latency:?}");
    // percentile_cont: between the 5th (50 ms) and 6th (1000 ms) value.
    assert!((latency.p99_ms - 952.5).abs() < 0.01, "{latency:?}");
    assert_eq!(
        report,
        BusinessReport {
            from_ms: from,
            to_ms: to,
            orders_confirmed: 3,
            orders_rejected: 3,
            revenue: vec![
                Revenue {
                    currency: "EUR".into(),
                    total_minor: 4_500,
                    orders: 2
                },
                Revenue {
                    currency: "USD".into(),
                    total_minor: 700,
                    orders: 1
                },
            ],
            top_products: vec![
                TopProduct {
                    sku: "SKU-C".into(),
                    product_name: None,
                    units: 7,
                    orders: 1
                },
                TopProduct {
                    sku: "SKU-A".into(),
                    product_name: Some("Linen shirt".into()),
                    units: 3,
                    orders: 2
                },
            ],
            rejections: vec![
                RejectionCount {
                    reason: "insufficient_funds".into(),
                    orders: 2
                },
                RejectionCount {
                    reason: "out_of_stock".into(),
                    orders: 1
                },
            ],
            checkout_latency: Some(latency),
        }
    );

    // The next period has the late order, and not o-1's duplicate again.
    let next = business_report(&db.pool, to, to + 60_000, 5)
        .await
        .expect("report");
    assert_eq!(next.orders_confirmed, 1);
    assert_eq!(
        next.revenue,
        [Revenue {
            currency: "EUR".into(),
            total_minor: 9_999,
            orders: 1
        }]
    );
    assert_eq!(
        next.checkout_latency.map(|latency| latency.checkouts),
        Some(1)
    );

    // An empty period: zeros, and no latency to speak of.
    let empty = business_report(&db.pool, to + 120_000, to + 180_000, 5)
        .await
        .expect("report");
    assert_eq!(empty.orders_confirmed, 0);
    assert!(empty.revenue.is_empty() && empty.top_products.is_empty());
    assert_eq!(empty.checkout_latency, None);
}

#[tokio::test]
async fn the_next_report_starts_where_the_last_posted_one_ended() {
    let db = TestDatabase::migrated().await.expect("test database");
    assert_eq!(last_reported_until(&db.pool).await.expect("read"), None);
    let report = business_report(&db.pool, 1_000, 61_000, 5)
        .await
        .expect("report");
    record_job_run(
        &db.pool,
        JOB_BUSINESS_REPORT,
        "projector-a",
        Duration::from_millis(3),
        &report_run_detail(&report),
    )
    .await
    .expect("recorded");
    // A failed post does not move the next period's start.
    record_job_run(
        &db.pool,
        JOB_BUSINESS_REPORT,
        "projector-a",
        Duration::from_millis(3),
        "failed (period 61000..121000): Slack answered 500",
    )
    .await
    .expect("recorded");
    assert_eq!(
        last_reported_until(&db.pool).await.expect("read"),
        Some(61_000)
    );
}
