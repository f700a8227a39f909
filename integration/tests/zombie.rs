//! A zombie is fenced (issue 12, hole 4). One of two inventory instances
//! stops itself (SIGSTOP, at the `before-commit` fault point: a batch's
//! outputs are on the broker, its commit not yet sent) under load, and stays
//! stopped past its session and transaction timeouts; the other takes its
//! partitions over and handles that batch again. When the zombie is
//! continued, what it was in the middle of must not become visible (its
//! transaction was aborted by the broker, and its offsets carry a stale group
//! generation), no command may be handled twice, and it must rejoin the group.
//! Under `at_least_once` the same run shows the batch's outputs twice.

use d2c_integration::harness::{test_partitions, Platform};
use d2c_integration::kafka::{produce_message, read_all};
use d2c_proto::inventory::v1::AdjustStock;
use d2c_proto::Envelope;
use prost::Name;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::process::Command;

const COMMANDS: usize = 240;
const SKUS: usize = 12;

async fn adjust(platform: &Platform, n: usize) {
    let sku = format!("ZOMBIE-{}", n % SKUS);
    let command = AdjustStock {
        sku: sku.clone(),
        delta: 1,
        adjustment_id: format!("adj-{n}"),
    };
    let envelope = Envelope::new(
        AdjustStock::full_name(),
        uuid::Uuid::from_u128(0x20_0000 + n as u128),
        d2c_platform::now_ms(),
    );
    produce_message(
        &platform.brokers,
        &platform.topic("inventory.messages"),
        &sku,
        &envelope,
        &command,
    )
    .await
    .expect("produced");
}

/// How long the zombie stays stopped.
const PAUSE: Duration = Duration::from_secs(7);

/// Whether the process is stopped (state `T` in /proc).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
            Some(state == "T")
        })
        .unwrap_or(false)
}

async fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_instance_is_fenced_and_rejoins() {
    let platform = Platform::new(&["inventory"]).await.expect("platform");
    let env = [
        ("D2C_PROCESSING_GUARANTEE", "exactly_once".to_owned()),
        ("D2C_SESSION_TIMEOUT_MS", "3000".to_owned()),
        ("D2C_TRANSACTION_TIMEOUT_MS", "4000".to_owned()),
    ];
    let mut stopping = env.to_vec();
    stopping.extend([
        ("D2C_FAULT_POINT", "before-commit".to_owned()),
        ("D2C_FAULT_ACTION", "stop".to_owned()),
        ("D2C_FAULT_AFTER", "5".to_owned()),
    ]);
    let zombie = platform
        .processor_ready("inventory", "zombie", &stopping)
        .await
        .expect("first instance");
    let survivor = platform
        .processor_ready("inventory", "survivor", &env)
        .await
        .expect("second instance");
    let pid = zombie.pid().expect("running");

    // 40 commands a second for 6 s; the zombie stops itself at its fifth
    // commit and is continued 7 s later, past the session timeout (3 s) and
    // the transaction timeout (4 s).
    let load = {
        let mut sent = 0;
        let mut stopped_at = None;
        let mut continued = false;
        while sent < COMMANDS {
            adjust(&platform, sent).await;
            sent += 1;
            if stopped_at.is_none() && is_stopped(pid) {
                stopped_at = Some(Instant::now());
            }
            if let Some(at) = stopped_at {
                if !continued && at.elapsed() > PAUSE {
                    signal(pid, "CONT").await;
                    continued = true;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let at = stopped_at.expect("the zombie stopped at its fault point");
        if !continued {
            tokio::time::sleep(PAUSE.saturating_sub(at.elapsed())).await;
            signal(pid, "CONT").await;
        }
        sent
    };
    assert_eq!(load, COMMANDS);
    assert!(
        zombie
            .log_tail(400)
            .contains("FAULT_POINT before-commit: continued"),
        "the zombie went on from its fault point:\n{}",
        zombie.log_tail(40)
    );

    // Every command's event, each exactly once, read committed.
    let topic = platform.topic("inventory.events");
    let mut seen: HashMap<uuid::Uuid, usize> = HashMap::new();
    for _ in 0..150 {
        let events = read_all(&platform.brokers, &topic, Duration::from_secs(20)).expect("read");
        seen.clear();
        for event in &events {
            if let Some(envelope) = &event.envelope {
                *seen.entry(envelope.message_id).or_default() += 1;
            }
        }
        if seen.len() >= COMMANDS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen.len(), COMMANDS, "one event per command");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "handled twice: {twice:?}");

    // The zombie is back in the group, owning partitions again.
    let mut owned = 0.0;
    for _ in 0..100 {
        owned = zombie
            .metric("d2c_assigned_partitions")
            .await
            .unwrap_or(0.0);
        if owned > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(owned > 0.0, "the zombie rejoined:\n{}", zombie.log_tail(40));
    let survivor_owned = survivor
        .metric("d2c_assigned_partitions")
        .await
        .expect("survivor metrics");
    assert_eq!(
        owned + survivor_owned,
        f64::from(test_partitions()),
        "every partition has one owner"
    );
    let aborted = zombie
        .metric_where("d2c_transactions_total", "outcome=\"aborted\"")
        .await
        .unwrap_or(0.0);
    eprintln!("zombie: {aborted} transactions aborted after SIGCONT");
}
