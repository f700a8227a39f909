//! The projector against a real broker and a real Postgres: catalog events
//! made over HTTP end up archived and projected, a replay from the start (a
//! new consumer group) changes no row, and of two projectors on one database
//! exactly one runs the maintenance jobs until it dies.

use d2c_integration::app::{until, Answer, Api};
use d2c_integration::harness::{test_partitions, Platform, Service};
use d2c_integration::kafka::read_all;
use d2c_integration::postgres::TestDatabase;
use serde_json::{json, Value};
use std::time::Duration;

/// Every service whose `*.events` topic the projector subscribes to (plus
/// the gateway's replies), so no subscribed topic is missing.
const SERVICES: &[&str] = &[
    "catalog",
    "gateway",
    "orders",
    "inventory",
    "payments",
    "customers",
];

fn database_env(db: &TestDatabase) -> Vec<(&'static str, String)> {
    vec![("D2C_DATABASE_URL", db.url.clone())]
}

async fn projector_ready(
    platform: &Platform,
    name: &str,
    env: &[(&str, String)],
) -> anyhow::Result<Service> {
    let projector = platform.projector(name, env).await?;
    projector.wait_ready(Duration::from_secs(60)).await?;
    Ok(projector)
}

fn product(name: &str, sku: &str) -> Value {
    json!({
        "name": name,
        "description": "Made of linen",
        "category": "shirts",
        "variants": [{"sku": sku, "prices": [{"currency": "EUR", "amount_minor": 4900}]}]
    })
}

/// Creates, updates or archives as an operator; each must succeed.
fn must(answer: anyhow::Result<Answer>) -> Value {
    let (status, body) = answer.expect("gateway answers");
    assert!((200..300).contains(&status), "{status}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_events_are_archived_and_projected_and_a_replay_changes_nothing() {
    let db = &TestDatabase::create().await.expect("database");
    let platform = Platform::new(SERVICES).await.expect("platform");
    let env = database_env(db);
    let started = tokio::try_join!(
        platform.processor_ready("catalog", "catalog", &[]),
        platform.gateway_ready("gateway", 0, 10_000),
        projector_ready(&platform, "projector-1", &env),
    );
    let (_catalog, gateway, mut projector) = match started {
        Ok(services) => services,
        Err(error) => {
            platform.print_logs();
            panic!("services did not start: {error:#}");
        }
    };
    let admin = Api::new(d2c_integration::customer::admin_client(), gateway.url(""));

    let created = must(
        admin
            .create_product_keyed("shirt", &product("Linen shirt", "SHIRT-1"))
            .await,
    );
    let shirt = created["product_id"].as_str().expect("id").to_owned();
    must(
        admin
            .update_product(&shirt, &product("Washed linen shirt", "SHIRT-1"))
            .await,
    );
    must(
        admin
            .update_product(&shirt, &product("Washed linen shirt", "SHIRT-2"))
            .await,
    );
    let created = must(
        admin
            .create_product_keyed("towel", &product("Linen towel", "TOWEL-1"))
            .await,
    );
    let towel = created["product_id"].as_str().expect("id").to_owned();
    must(admin.archive_product(&towel).await);

    let topic = platform.topic("catalog.events");
    let published = read_all(&platform.brokers, &topic, Duration::from_secs(10))
        .expect("catalog.events readable")
        .len() as i64;
    assert_eq!(published, 5, "one event per change");
    let archived_sql = &format!("SELECT count(*) FROM events WHERE topic = '{topic}'");
    until(
        Duration::from_secs(20),
        "every catalog event archived",
        move || async move { db.count(archived_sql).await == published },
    )
    .await;
    until(
        Duration::from_secs(5),
        "every product version projected",
        move || async move { db.count("SELECT count(*) FROM product_versions").await == published },
    )
    .await;

    let latest = d2c_readside::product(&db.pool, &shirt)
        .await
        .expect("read")
        .expect("projected");
    assert_eq!(latest.version, 3);
    assert_eq!(latest.name, "Washed linen shirt");
    let by_sku = d2c_readside::product_by_sku(&db.pool, "SHIRT-2")
        .await
        .expect("read");
    assert_eq!(by_sku.as_ref(), Some(&latest));
    let archived = d2c_readside::product(&db.pool, &towel)
        .await
        .expect("read")
        .expect("projected");
    assert!(archived.archived);
    let found = d2c_readside::search(
        &db.pool,
        &d2c_readside::SearchQuery {
            text: Some("lin".into()),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .expect("search");
    assert_eq!(found.total, 1, "the archived towel is not on sale");
    assert_eq!(found.items[0].0.product_id, shirt);
    let typed = db
        .count(&format!(
            "SELECT count(*) FROM events WHERE topic = '{topic}'
               AND message_type LIKE 'd2c.catalog.v1.Product%' AND message_id IS NOT NULL
               AND key IN ('{shirt}', '{towel}') AND headers ? 'd2c-sent-at'"
        ))
        .await;
    assert_eq!(
        typed, published,
        "archived rows keep type, id, key, headers"
    );

    let status = projector.terminate().await.expect("projector stops");
    assert!(status.success(), "projector exit: {status}");
    let counts = move || async move {
        (
            db.count("SELECT count(*) FROM events").await,
            db.count("SELECT count(*) FROM product_versions").await,
        )
    };
    let before = counts().await;

    // A new group starts from the beginning of every topic.
    let mut replay_env = env.clone();
    replay_env.push((
        "D2C_GROUP_ID",
        format!("{}projector-replay", platform.prefix),
    ));
    let replayer = projector_ready(&platform, "projector-2", &replay_env)
        .await
        .expect("replaying projector");
    let label = &format!("topic=\"{topic}\"");
    let replaying = &replayer;
    until(
        Duration::from_secs(20),
        "the replay consumed every event",
        move || async move {
            replaying
                .metric_where("d2c_projector_events_total", label)
                .await
                .unwrap_or(0.0)
                >= published as f64
        },
    )
    .await;
    assert_eq!(counts().await, before, "a replay inserts nothing");
    let inserted = replayer
        .metric("d2c_projector_rows_inserted_total")
        .await
        .expect("metrics");
    assert_eq!(inserted, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_projector_runs_the_jobs_and_another_takes_over_when_it_dies() {
    let db = &TestDatabase::create().await.expect("database");
    let platform = Platform::new(SERVICES).await.expect("platform");
    let mut env = database_env(db);
    env.push(("D2C_MAINTENANCE_INTERVAL_MS", "500".into()));
    // The dead one's partitions move once its session expires; a short
    // session keeps that within the test's bounds.
    env.push(("D2C_SESSION_TIMEOUT_MS", "3000".into()));
    let started = tokio::try_join!(
        platform.projector("projector-a", &env),
        platform.projector("projector-b", &env),
    );
    let (a, b) = match started {
        Ok(services) => services,
        Err(error) => {
            platform.print_logs();
            panic!("projectors did not start: {error:#}");
        }
    };
    // Each round records two jobs: three rounds.
    until(
        Duration::from_secs(20),
        "maintenance ran",
        move || async move { db.count("SELECT count(*) FROM job_runs").await >= 6 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let runners: Vec<String> = sqlx::query_scalar("SELECT DISTINCT runner FROM job_runs")
        .fetch_all(&db.pool)
        .await
        .expect("runners");
    assert_eq!(runners.len(), 1, "one runner while both live: {runners:?}");
    let partitions = db
        .count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass")
        .await;
    assert_eq!(partitions, 7, "3 months back, this one, 3 ahead");

    let (mut leader, survivor) = if runners[0] == a.name { (a, b) } else { (b, a) };
    leader.kill9().await.expect("killed");
    let took_over = &format!(
        "SELECT count(*) FROM job_runs WHERE runner = '{}'",
        survivor.name
    );
    until(
        Duration::from_secs(10),
        "the survivor took over",
        move || async move { db.count(took_over).await >= 2 },
    )
    .await;
    // Leadership moved once: every run of the dead leader precedes every run
    // of the survivor. (A run the leader had sent just before dying may
    // still land after the kill, hence no cut by time.)
    let interleaved = db
        .count(&format!(
            "SELECT count(*) FROM job_runs dead, job_runs alive
             WHERE dead.runner = '{}' AND alive.runner = '{}' AND dead.id > alive.id",
            leader.name, survivor.name
        ))
        .await;
    assert_eq!(
        interleaved, 0,
        "the dead leader ran nothing after the takeover"
    );

    // The survivor also takes the dead one's partitions once its session
    // expires, so projection goes on.
    let survivor = &survivor;
    until(
        Duration::from_secs(30),
        "the survivor owns every partition",
        move || async move {
            survivor
                .metric("d2c_assigned_partitions")
                .await
                .unwrap_or(0.0)
                == f64::from(5 * test_partitions())
        },
    )
    .await;
}
