//! `topology apply | verify | health | list`: keeps the cluster in line with
//! topology.toml.
//!
//! Environment: D2C_KAFKA_BROKERS (default 127.0.0.1:9092), D2C_TOPIC_PREFIX
//! (default empty), D2C_MAX_PARTITIONS (default none: the declared counts).
//! `--file PATH` reads another topology file than the one built in;
//! `--max-partitions N` caps every topic at N partitions, for local brokers.

use anyhow::{bail, Context};
use d2c_topology::{apply, inspect, topic_partitions, Topology};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: topology <apply|verify|health|list> [--file PATH] [--prefix PREFIX] [--brokers HOST:PORT] [--timeout-secs N] [--only SERVICE,...] [--max-partitions N]";

struct Args {
    command: String,
    file: Option<PathBuf>,
    prefix: String,
    brokers: String,
    timeout: Duration,
    only: Option<String>,
    max_partitions: Option<i32>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        command: String::new(),
        file: None,
        prefix: std::env::var("D2C_TOPIC_PREFIX").unwrap_or_default(),
        brokers: std::env::var("D2C_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        timeout: Duration::from_secs(10),
        only: None,
        max_partitions: std::env::var("D2C_MAX_PARTITIONS")
            .ok()
            .filter(|value| !value.is_empty())
            .map(|value| value.parse())
            .transpose()
            .context("D2C_MAX_PARTITIONS")?,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--file" => parsed.file = Some(PathBuf::from(value("--file")?)),
            "--prefix" => parsed.prefix = value("--prefix")?,
            "--brokers" => parsed.brokers = value("--brokers")?,
            "--only" => parsed.only = Some(value("--only")?),
            "--max-partitions" => {
                parsed.max_partitions = Some(
                    value("--max-partitions")?
                        .parse()
                        .context("--max-partitions")?,
                )
            }
            "--timeout-secs" => {
                parsed.timeout =
                    Duration::from_secs(value("--timeout-secs")?.parse().context("--timeout-secs")?)
            }
            "-h" | "--help" => bail!("{USAGE}"),
            command if parsed.command.is_empty() && !command.starts_with('-') => {
                parsed.command = command.to_owned()
            }
            other => bail!("unexpected argument {other}\n{USAGE}"),
        }
    }
    Ok(parsed)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("topology: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<ExitCode> {
    let args = parse_args()?;
    let mut topology = match &args.file {
        Some(path) => Topology::load(path)?,
        None => Topology::embedded()?,
    };
    if let Some(only) = &args.only {
        let services: Vec<&str> = only.split(',').map(str::trim).collect();
        topology = topology.only_services(&services);
    }
    if let Some(max) = args.max_partitions {
        topology = topology.capped(max);
    }
    let topology = topology.with_prefix(&args.prefix);
    match args.command.as_str() {
        "health" => {
            let topics = topic_partitions(&args.brokers, args.timeout)
                .await
                .with_context(|| {
                    format!("broker {} did not answer a Metadata request", args.brokers)
                })?;
            println!(
                "broker {} answered Metadata: {} topics",
                args.brokers,
                topics.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        "list" => {
            for topic in topology.topics() {
                println!(
                    "{} partitions={} {:?}",
                    topic.name,
                    topic.partitions,
                    topic.configs()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        "verify" => {
            let inspection = inspect(&args.brokers, &topology, args.timeout).await?;
            report(&inspection.notes, &inspection.drift);
            if inspection.drift.is_empty() {
                println!("topology matches: {} topics", topology.topics().len());
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::FAILURE)
            }
        }
        "apply" => {
            let (created, inspection) = apply(&args.brokers, &topology, args.timeout).await?;
            for name in &created {
                println!("created {name}");
            }
            report(&inspection.notes, &inspection.drift);
            if inspection.drift.is_empty() {
                println!(
                    "topology applied: {} topics, {} created",
                    topology.topics().len(),
                    created.len()
                );
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::FAILURE)
            }
        }
        "" => bail!("{USAGE}"),
        other => bail!("unknown command {other}\n{USAGE}"),
    }
}

fn report(notes: &[String], drift: &[d2c_topology::Drift]) {
    for note in notes {
        println!("note: {note}");
    }
    for item in drift {
        println!("drift: {item}");
    }
}
