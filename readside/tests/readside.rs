//! The read side against a real Postgres. Each test creates a database of its
//! own (`d2c_t<random>`) and drops it at the end, even when it fails.
//! D2C_DATABASE_URL names the server (any database on it; default the local
//! `postgres`).

use d2c_proto::catalog::v1::{Price, Product, Variant};
use d2c_proto::orders::v1::{Order, OrderStatus};
use d2c_readside::{
    archive_events, ensure_month_partitions, ensure_partitions_for, insert_order_version,
    insert_product_version, insert_product_versions, job_runs, order, orders_of_customer, product,
    product_by_sku, prune_versions, run_maintenance, search, ArchivedEvent, Leader, ReadsideError,
    SearchQuery, MAINTENANCE_LOCK_KEY,
};
use std::time::{Duration, SystemTime};

mod common;

use common::now_ms;
use d2c_readside::testing::TestDatabase;

fn event(topic: &str, partition: i32, offset: i64, recorded_at_ms: i64) -> ArchivedEvent {
    ArchivedEvent {
        topic: topic.into(),
        partition,
        offset,
        recorded_at_ms,
        message_type: "d2c.catalog.v1.ProductCreated".into(),
        message_id: Some(uuid::Uuid::new_v4()),
        key: Some(format!("p-{offset}")),
        payload: vec![1, 2, 3],
        headers: vec![(
            "d2c-message-type".into(),
            "d2c.catalog.v1.ProductCreated".into(),
        )],
    }
}

fn variant(sku: &str, prices: &[(&str, i64)]) -> Variant {
    Variant {
        sku: sku.into(),
        name: sku.into(),
        prices: prices
            .iter()
            .map(|(currency, amount_minor)| Price {
                currency: (*currency).into(),
                amount_minor: *amount_minor,
            })
            .collect(),
    }
}

fn product_v(id: &str, version: i64, name: &str, description: &str, category: &str) -> Product {
    Product {
        product_id: id.into(),
        name: name.into(),
        description: description.into(),
        category: category.into(),
        variants: vec![variant(&format!("{id}-SKU"), &[("EUR", 1000)])],
        archived: false,
        version,
        updated_at_ms: version,
    }
}

fn query(text: Option<&str>) -> SearchQuery {
    SearchQuery {
        text: text.map(str::to_owned),
        limit: 50,
        ..SearchQuery::default()
    }
}

async fn insert(db: &TestDatabase, products: &[Product]) {
    let mut conn = db.pool.acquire().await.expect("connection");
    insert_product_versions(&mut conn, products)
        .await
        .expect("products inserted");
}

fn ids(page: &d2c_readside::SearchPage) -> Vec<&str> {
    page.items
        .iter()
        .map(|(product, _)| product.product_id.as_str())
        .collect()
}

#[tokio::test]
async fn month_partitions_are_created_and_events_land_in_their_month() {
    let db = TestDatabase::migrated().await.expect("test database");
    let created = ensure_month_partitions(&db.pool, SystemTime::now(), 3, 3)
        .await
        .expect("partitions created");
    assert_eq!(created.len(), 7, "{created:?}");
    assert!(created.iter().all(|name| name.starts_with("events_y")));
    let partitions = db
        .count(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'events'::regclass AND c.relname LIKE 'events_y%m%'",
        )
        .await;
    assert_eq!(partitions, 7);
    // A second run finds them all there.
    let again = ensure_month_partitions(&db.pool, SystemTime::now(), 3, 3)
        .await
        .expect("second run");
    assert!(again.is_empty(), "{again:?}");

    let mut conn = db.pool.acquire().await.expect("connection");
    archive_events(&mut conn, &[event("catalog.events", 0, 0, now_ms())])
        .await
        .expect("archived");
    let (actual, expected): (String, String) = sqlx::query_as(
        "SELECT tableoid::regclass::text,
                to_char(now() AT TIME ZONE 'UTC', '\"events_y\"YYYY\"m\"MM')
         FROM events",
    )
    .fetch_one(&db.pool)
    .await
    .expect("row");
    assert_eq!(actual, expected);
}

#[tokio::test]
async fn an_event_without_its_month_partition_is_refused_until_created() {
    let db = TestDatabase::migrated().await.expect("test database");
    // 2001-09-09: far outside the months maintenance keeps ready.
    let old = event("orders.events", 1, 7, 1_000_000_000_000);
    let mut conn = db.pool.acquire().await.expect("connection");
    let error = archive_events(&mut conn, std::slice::from_ref(&old))
        .await
        .expect_err("no partition for 2001");
    assert!(error.is_missing_partition(), "{error}");
    let created = ensure_partitions_for(&db.pool, &[old.recorded_at_ms])
        .await
        .expect("partition created");
    assert_eq!(created, vec!["events_y2001m09".to_owned()]);
    assert_eq!(
        archive_events(&mut conn, &[old]).await.expect("archived"),
        1
    );
}

#[tokio::test]
async fn archiving_a_batch_twice_inserts_it_once() {
    let db = TestDatabase::migrated().await.expect("test database");
    ensure_month_partitions(&db.pool, SystemTime::now(), 1, 1)
        .await
        .expect("partitions");
    let at = now_ms();
    let batch: Vec<ArchivedEvent> = (0..50)
        .map(|offset| event("catalog.events", (offset % 3) as i32, offset, at + offset))
        .collect();
    let mut conn = db.pool.acquire().await.expect("connection");
    assert_eq!(archive_events(&mut conn, &batch).await.expect("first"), 50);
    assert_eq!(archive_events(&mut conn, &batch).await.expect("again"), 0);
    // A batch overlapping the first one adds only what is new.
    let overlapping: Vec<ArchivedEvent> = (40..60)
        .map(|offset| event("catalog.events", (offset % 3) as i32, offset, at + offset))
        .collect();
    assert_eq!(
        archive_events(&mut conn, &overlapping)
            .await
            .expect("overlap"),
        10
    );
    assert_eq!(db.count("SELECT count(*) FROM events").await, 60);
    let header: String =
        sqlx::query_scalar("SELECT headers->>'d2c-message-type' FROM events WHERE \"offset\" = 3")
            .fetch_one(&db.pool)
            .await
            .expect("headers");
    assert_eq!(header, "d2c.catalog.v1.ProductCreated");
}

#[tokio::test]
async fn reads_take_the_latest_version() {
    let db = TestDatabase::migrated().await.expect("test database");
    let v1 = product_v("p1", 1, "Linen shirt", "Light", "shirts");
    let mut v2 = product_v("p1", 2, "Washed linen shirt", "Light", "shirts");
    v2.variants = vec![variant("NEW-SKU", &[("EUR", 900)])];
    let mut conn = db.pool.acquire().await.expect("connection");
    assert_eq!(insert_product_version(&mut conn, &v1).await.expect("v1"), 1);
    assert_eq!(insert_product_version(&mut conn, &v2).await.expect("v2"), 1);
    // A replayed version inserts nothing.
    assert_eq!(
        insert_product_version(&mut conn, &v1)
            .await
            .expect("replay"),
        0
    );
    drop(conn);

    assert_eq!(
        product(&db.pool, "p1").await.expect("read"),
        Some(v2.clone())
    );
    assert_eq!(product(&db.pool, "nope").await.expect("read"), None);
    assert_eq!(
        product_by_sku(&db.pool, "NEW-SKU").await.expect("by sku"),
        Some(v2.clone())
    );
    // The old SKU belongs to a superseded version only.
    assert_eq!(
        product_by_sku(&db.pool, "p1-SKU").await.expect("by sku"),
        None
    );
    let found = search(&db.pool, &query(Some("shirt")))
        .await
        .expect("search");
    assert_eq!(found.total, 1);
    assert_eq!(found.items[0].0, v2);

    let mut v3 = v2.clone();
    v3.version = 3;
    v3.archived = true;
    insert(&db, &[v3.clone()]).await;
    assert_eq!(product(&db.pool, "p1").await.expect("read"), Some(v3));
    let found = search(&db.pool, &query(Some("shirt")))
        .await
        .expect("search");
    assert_eq!(found.total, 0, "an archived product is not on sale");
    assert!(found.items.is_empty());
}

#[tokio::test]
async fn a_name_match_ranks_above_a_description_match() {
    let db = TestDatabase::migrated().await.expect("test database");
    insert(
        &db,
        &[
            product_v("a", 1, "Cotton towel", "Soft, made of linen blend", "bath"),
            product_v("b", 1, "Linen towel", "Soft and light", "bath"),
            product_v("c", 1, "Wool blanket", "Warm", "bedroom"),
        ],
    )
    .await;
    let found = search(&db.pool, &query(Some("linen")))
        .await
        .expect("search");
    assert_eq!(ids(&found), vec!["b", "a"]);
    assert!(found.items[0].1 > found.items[1].1, "{:?}", found.items);
    // A category match sits between the two.
    insert(&db, &[product_v("d", 1, "Throw", "Warm", "linen")]).await;
    let found = search(&db.pool, &query(Some("linen")))
        .await
        .expect("search");
    assert_eq!(ids(&found), vec!["b", "d", "a"]);
}

#[tokio::test]
async fn words_match_as_prefixes_while_typing() {
    let db = TestDatabase::migrated().await.expect("test database");
    insert(
        &db,
        &[
            product_v("a", 1, "Linen shirt", "Light", "shirts"),
            product_v("b", 1, "Wool sweater", "Warm", "knitwear"),
        ],
    )
    .await;
    for typed in [
        "l", "li", "lin", "LINE", "linen", "linens", "lin sh", "shirts",
    ] {
        let found = search(&db.pool, &query(Some(typed))).await.expect("search");
        assert_eq!(ids(&found), vec!["a"], "typed {typed:?}");
    }
    let found = search(&db.pool, &query(Some("lin wool")))
        .await
        .expect("search");
    assert_eq!(found.total, 0, "every word must match");
    // Text without a single word searches nothing away.
    let found = search(&db.pool, &query(Some("  !? ")))
        .await
        .expect("search");
    assert_eq!(ids(&found), vec!["a", "b"]);
}

#[tokio::test]
async fn category_and_price_filters() {
    let db = TestDatabase::migrated().await.expect("test database");
    let mut cheap = product_v("cheap", 1, "Cheap shirt", "", "shirts");
    cheap.variants = vec![
        variant("C-1", &[("EUR", 1500), ("USD", 1700)]),
        variant("C-2", &[("EUR", 900)]),
    ];
    let mut dear = product_v("dear", 1, "Dear shirt", "", "shirts");
    dear.variants = vec![variant("D-1", &[("EUR", 9000)])];
    let mut sock = product_v("sock", 1, "Sock", "", "socks");
    sock.variants = vec![variant("S-1", &[("EUR", 500), ("USD", 600)])];
    insert(&db, &[cheap, dear, sock]).await;

    let by = |category: Option<&str>, currency: Option<&str>, min, max| SearchQuery {
        category: category.map(str::to_owned),
        currency: currency.map(str::to_owned),
        min_price: min,
        max_price: max,
        limit: 50,
        ..SearchQuery::default()
    };
    let run = |q: SearchQuery| {
        let pool = db.pool.clone();
        async move { search(&pool, &q).await.expect("search") }
    };
    // Sorted by name without text.
    assert_eq!(
        ids(&run(by(None, None, None, None)).await),
        vec!["cheap", "dear", "sock"]
    );
    assert_eq!(
        ids(&run(by(Some("shirts"), None, None, None)).await),
        vec!["cheap", "dear"]
    );
    // The lowest variant price counts: cheap is 9.00 EUR.
    assert_eq!(
        ids(&run(by(None, Some("EUR"), Some(800), Some(1000))).await),
        vec!["cheap"]
    );
    assert_eq!(
        ids(&run(by(None, Some("EUR"), Some(1000), None)).await),
        vec!["dear"]
    );
    assert_eq!(
        ids(&run(by(Some("shirts"), Some("EUR"), None, Some(9000))).await),
        vec!["cheap", "dear"]
    );
    // A currency alone keeps the products priced in it.
    assert_eq!(
        ids(&run(by(None, Some("USD"), None, None)).await),
        vec!["cheap", "sock"]
    );
    let mut text = by(None, Some("EUR"), None, Some(1000));
    text.text = Some("shirt".into());
    assert_eq!(ids(&run(text).await), vec!["cheap"]);

    let error = search(&db.pool, &by(None, None, Some(1), None))
        .await
        .expect_err("a price needs a currency");
    assert!(matches!(error, ReadsideError::InvalidQuery(_)), "{error}");
}

#[tokio::test]
async fn pages_are_stable_without_duplicates_and_count_everything() {
    let db = TestDatabase::migrated().await.expect("test database");
    // Equal ranks everywhere: the tie-break alone orders them.
    let products: Vec<Product> = (0..23)
        .map(|n| product_v(&format!("p{n:02}"), 1, "Linen shirt", "Light", "shirts"))
        .collect();
    insert(&db, &products).await;
    for text in [Some("linen"), None] {
        let mut seen = Vec::new();
        for page in 0..4 {
            let mut q = query(text);
            q.limit = 7;
            q.offset = page * 7;
            let found = search(&db.pool, &q).await.expect("page");
            assert_eq!(found.total, 23, "text {text:?} page {page}");
            seen.extend(ids(&found).into_iter().map(str::to_owned));
        }
        let mut unique = seen.clone();
        unique.dedup();
        assert_eq!(seen.len(), 23, "text {text:?}");
        assert_eq!(unique, seen, "text {text:?}: sorted by id, no duplicates");
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, seen);
    }
}

#[tokio::test]
async fn hostile_query_text_does_not_error() {
    let db = TestDatabase::migrated().await.expect("test database");
    insert(&db, &[product_v("a", 1, "Apron, linen", "", "kitchen")]).await;
    for hostile in [
        "a & | ! ( ' :*",
        "'",
        "''",
        "\\",
        ":*",
        "!!!",
        "<->",
        "a <-> b",
        "(((",
        "lin:A",
        "x:*:*",
        "%_",
        "\u{0}",
        "‘curly’ “quotes”",
        "naïve ¹²³ ½ ﬁ",
        "日本語",
        "the",
        "a",
    ] {
        search(&db.pool, &query(Some(hostile)))
            .await
            .unwrap_or_else(|error| panic!("{hostile:?} failed: {error}"));
    }
    // "a" is an English stop word, yet typed as a first letter it finds
    // "apron".
    let found = search(&db.pool, &query(Some("a"))).await.expect("search");
    assert_eq!(found.total, 1);
}

#[tokio::test]
async fn one_leader_at_a_time_and_the_next_takes_over() {
    let db = TestDatabase::migrated().await.expect("test database");
    let mut first = Leader::new(&db.pool, MAINTENANCE_LOCK_KEY);
    let mut second = Leader::new(&db.pool, MAINTENANCE_LOCK_KEY);
    let a = first.try_acquire().await.expect("first try");
    let b = second.try_acquire().await.expect("second try");
    assert!(a ^ b, "exactly one leader: {a} {b}");
    let (mut holder, mut other) = if a { (first, second) } else { (second, first) };
    // Trying again changes nothing.
    assert!(holder.try_acquire().await.expect("again"));
    assert!(!other.try_acquire().await.expect("again"));

    drop(holder);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !other.try_acquire().await.expect("retry") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lock was not free after the holder dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(other.is_leader());

    // A lock on another key is independent.
    let mut unrelated = Leader::new(&db.pool, MAINTENANCE_LOCK_KEY + 1);
    assert!(unrelated.try_acquire().await.expect("other key"));
    other.release().await.expect("released");
    let mut next = Leader::new(&db.pool, MAINTENANCE_LOCK_KEY);
    assert!(next.try_acquire().await.expect("after release"));
}

#[tokio::test]
async fn a_leader_whose_session_is_killed_loses_the_lock() {
    let db = TestDatabase::migrated().await.expect("test database");
    let mut leader = Leader::new(&db.pool, MAINTENANCE_LOCK_KEY);
    assert!(leader.try_acquire().await.expect("acquired"));
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_locks
         WHERE locktype = 'advisory' AND pid <> pg_backend_pid()
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .execute(&db.pool)
    .await
    .expect("terminated");
    let mut other = Leader::new(&db.pool, MAINTENANCE_LOCK_KEY);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !other.try_acquire().await.expect("other tries") {
        assert!(tokio::time::Instant::now() < deadline, "lock not freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The old leader notices: an error now, then no lock.
    let _ = leader.try_acquire().await;
    assert!(!leader.try_acquire().await.expect("reconnected"));
}

#[tokio::test]
async fn prune_removes_only_superseded_old_versions() {
    let db = TestDatabase::migrated().await.expect("test database");
    insert(
        &db,
        &[
            product_v("old", 1, "Old", "", "x"),
            product_v("old", 2, "Old", "", "x"),
            product_v("fresh", 1, "Fresh", "", "x"),
            product_v("fresh", 2, "Fresh", "", "x"),
            product_v("single", 1, "Single", "", "x"),
        ],
    )
    .await;
    let mut conn = db.pool.acquire().await.expect("connection");
    for version in [10, 20] {
        insert_order_version(&mut conn, version, &order_of("o1", "c1", version))
            .await
            .expect("order");
    }
    drop(conn);
    sqlx::query(
        "UPDATE product_versions SET projected_at = now() - interval '2 days'
         WHERE product_id IN ('old', 'single')",
    )
    .execute(&db.pool)
    .await
    .expect("aged");
    sqlx::query("UPDATE order_versions SET projected_at = now() - interval '2 days'")
        .execute(&db.pool)
        .await
        .expect("aged");

    let pruned = prune_versions(&db.pool, Duration::from_secs(86_400))
        .await
        .expect("pruned");
    assert_eq!((pruned.product_versions, pruned.order_versions), (1, 1));
    let left: Vec<(String, i64)> =
        sqlx::query_as("SELECT product_id, version FROM product_versions ORDER BY 1, 2")
            .fetch_all(&db.pool)
            .await
            .expect("rows");
    let expected = [("fresh", 1), ("fresh", 2), ("old", 2), ("single", 1)];
    assert_eq!(left, expected.map(|(id, v)| (id.to_owned(), v)).to_vec());
    assert_eq!(
        order(&db.pool, "o1")
            .await
            .expect("order")
            .map(|o| o.updated_at_ms),
        Some(20)
    );
}

fn order_of(id: &str, customer: &str, placed_at_ms: i64) -> Order {
    Order {
        order_id: id.into(),
        customer_id: customer.into(),
        currency: "EUR".into(),
        total_minor: 100,
        status: OrderStatus::Placed as i32,
        placed_at_ms,
        updated_at_ms: placed_at_ms,
        ..Order::default()
    }
}

#[tokio::test]
async fn orders_of_a_customer_newest_first_latest_version() {
    let db = TestDatabase::migrated().await.expect("test database");
    let mut conn = db.pool.acquire().await.expect("connection");
    let mut confirmed = order_of("o1", "c1", 1_000);
    confirmed.status = OrderStatus::Confirmed as i32;
    let rows = [
        (5, order_of("o1", "c1", 1_000)),
        (9, confirmed.clone()),
        (6, order_of("o2", "c1", 2_000)),
        (7, order_of("o3", "c1", 2_000)),
        (8, order_of("o4", "c2", 3_000)),
    ];
    for (version, order) in &rows {
        insert_order_version(&mut conn, *version, order)
            .await
            .expect("inserted");
    }
    assert_eq!(
        d2c_readside::insert_order_versions(&mut conn, &rows)
            .await
            .expect("replay"),
        0
    );
    drop(conn);
    let status: String = sqlx::query_scalar("SELECT status FROM order_versions WHERE version = 9")
        .fetch_one(&db.pool)
        .await
        .expect("status");
    assert_eq!(status, "confirmed");

    let all = orders_of_customer(&db.pool, "c1", 10, 0)
        .await
        .expect("orders");
    let listed: Vec<&str> = all.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(listed, vec!["o2", "o3", "o1"], "newest first, ties by id");
    assert_eq!(all[2], confirmed);
    let second_page = orders_of_customer(&db.pool, "c1", 2, 2)
        .await
        .expect("page");
    assert_eq!(second_page, vec![confirmed.clone()]);
    assert_eq!(order(&db.pool, "o1").await.expect("order"), Some(confirmed));
    assert_eq!(order(&db.pool, "nope").await.expect("order"), None);
}

#[tokio::test]
async fn maintenance_runs_are_recorded() {
    let db = TestDatabase::migrated().await.expect("test database");
    let report = run_maintenance(
        &db.pool,
        "replica-a",
        SystemTime::now(),
        Duration::from_secs(60),
    )
    .await
    .expect("maintenance");
    assert_eq!(report.created_partitions.len(), 7);
    run_maintenance(
        &db.pool,
        "replica-a",
        SystemTime::now(),
        Duration::from_secs(60),
    )
    .await
    .expect("maintenance again");
    let runs = job_runs(&db.pool).await.expect("runs");
    let jobs: Vec<&str> = runs.iter().map(|run| run.job.as_str()).collect();
    assert_eq!(
        jobs,
        vec![
            d2c_readside::JOB_MONTH_PARTITIONS,
            d2c_readside::JOB_PRUNE_VERSIONS,
            d2c_readside::JOB_MONTH_PARTITIONS,
            d2c_readside::JOB_PRUNE_VERSIONS
        ]
    );
    assert!(runs.iter().all(|run| run.runner == "replica-a"));
    assert!(runs
        .iter()
        .all(|run| run.started_at_ms <= run.finished_at_ms));
    assert_eq!(runs[2].detail, "created none");
}

#[tokio::test]
async fn orders_by_status_age_counts_each_order_once_at_its_latest_status() {
    use d2c_proto::orders::v1::{Order, OrderStatus};
    let db = TestDatabase::migrated().await.expect("test database");
    let order = |id: &str, status: OrderStatus| Order {
        order_id: id.into(),
        customer_id: "c-1".into(),
        status: status as i32,
        ..Order::default()
    };
    let mut conn = db.pool.acquire().await.expect("connection");
    for (version, order) in [
        (1, order("o-1", OrderStatus::Placed)),
        (2, order("o-1", OrderStatus::Confirmed)),
        (3, order("o-1", OrderStatus::Fulfilling)),
        (1, order("o-2", OrderStatus::Fulfilling)),
        (1, order("o-3", OrderStatus::Placed)),
        (2, order("o-3", OrderStatus::Rejected)),
        (1, order("o-4", OrderStatus::CaptureFailed)),
    ] {
        insert_order_version(&mut conn, version, &order)
            .await
            .expect("insert");
    }
    drop(conn);
    let ages = d2c_readside::orders_by_status_age(&db.pool, std::time::Duration::from_secs(3600))
        .await
        .expect("query");
    let counts: Vec<(&str, i64)> = ages
        .iter()
        .map(|age| (age.status.as_str(), age.orders))
        .collect();
    assert_eq!(
        counts,
        [("capture_failed", 1), ("fulfilling", 2)],
        "settled statuses are left out"
    );
    assert!(
        ages.iter()
            .all(|age| (0.0..60.0).contains(&age.oldest_seconds)),
        "{ages:?}"
    );
}
