//! `topology apply | verify | health | list`: keeps the cluster in line with
//! topology.toml.
//!
//! Environment: D2C_KAFKA_BROKERS (default 127.0.0.1:9092), D2C_TOPIC_PREFIX
//! (default empty), D2C_TOPOLOGY_PROFILE (default none: the file's defaults,
//! which are production's), and D2C_KAFKA__* client properties (see
//! `d2c_platform::kafka`). `--file PATH` reads another topology file than the
//! one built in; `--profile NAME` picks one of its profiles.
//!
//! Exit status: 0 when the cluster matches, 1 when drift remains, 2 on an
//! error (including a partition change `apply` refuses).

use anyhow::{bail, Context};
use d2c_platform::kafka::{client_config, KafkaProperties};
use d2c_topology::{Applied, ApplyOptions, Cluster, Drift, Topology, TopologyFile};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: topology <apply|verify|health|list> [--file PATH] [--profile NAME] [--prefix PREFIX] [--brokers HOST:PORT] [--timeout-secs N] [--only SERVICE,...] [--force-partitions]";

struct Args {
    command: String,
    file: Option<PathBuf>,
    profile: Option<String>,
    prefix: String,
    brokers: String,
    timeout: Duration,
    only: Option<String>,
    force_partitions: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    d2c_platform::config::reject_unknown_variables()?;
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        command: String::new(),
        file: None,
        profile: std::env::var("D2C_TOPOLOGY_PROFILE")
            .ok()
            .filter(|name| !name.is_empty()),
        prefix: std::env::var("D2C_TOPIC_PREFIX").unwrap_or_default(),
        brokers: std::env::var("D2C_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        timeout: Duration::from_secs(10),
        only: None,
        force_partitions: false,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--file" => parsed.file = Some(PathBuf::from(value("--file")?)),
            "--profile" => parsed.profile = Some(value("--profile")?),
            "--prefix" => parsed.prefix = value("--prefix")?,
            "--brokers" => parsed.brokers = value("--brokers")?,
            "--only" => parsed.only = Some(value("--only")?),
            "--force-partitions" => parsed.force_partitions = true,
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

fn topology(args: &Args) -> anyhow::Result<Topology> {
    let file = match &args.file {
        Some(path) => TopologyFile::load(path)?,
        None => TopologyFile::embedded()?,
    };
    let mut topology = file.resolve(args.profile.as_deref())?;
    if let Some(only) = &args.only {
        let services: Vec<&str> = only.split(',').map(str::trim).collect();
        topology = topology.only_services(&services);
    }
    Ok(topology.with_prefix(&args.prefix))
}

fn cluster(args: &Args) -> anyhow::Result<Cluster> {
    let properties = KafkaProperties::from_env();
    if !properties.is_empty() {
        eprintln!("topology: Kafka client properties from the environment: {properties:?}");
    }
    Ok(Cluster::new(
        &client_config(&args.brokers, "d2c-topology"),
        args.timeout,
    )?)
}

async fn run() -> anyhow::Result<ExitCode> {
    let args = parse_args()?;
    if args.force_partitions && args.command != "apply" {
        bail!("--force-partitions is an option of apply\n{USAGE}");
    }
    match args.command.as_str() {
        "health" => {
            let topics = cluster(&args)?.live_topics().await.with_context(|| {
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
            for topic in topology(&args)?.topics() {
                println!(
                    "{} partitions={} replication_factor={} {:?}",
                    topic.name,
                    topic.partitions,
                    topic.replication_factor,
                    topic.configs()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        "verify" => {
            let topology = topology(&args)?;
            let inspection = cluster(&args)?.inspect(&topology).await?;
            report(&inspection.drift);
            if inspection.drift.is_empty() {
                println!("topology matches: {} topics", topology.topics().len());
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::FAILURE)
            }
        }
        "apply" => {
            let topology = topology(&args)?;
            let options = ApplyOptions {
                force_partitions: args.force_partitions,
            };
            let applied = cluster(&args)?.apply(&topology, options).await?;
            report_changes(&applied);
            report(&applied.remaining.drift);
            if applied.remaining.drift.is_empty() {
                println!(
                    "topology applied: {} topics, {} created, {} grown, {} configs corrected",
                    topology.topics().len(),
                    applied.created.len(),
                    applied.grown.len(),
                    applied.reconfigured.len()
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

fn report_changes(applied: &Applied) {
    for name in &applied.created {
        println!("created {name}");
    }
    for change in &applied.grown {
        println!(
            "grew {} from {} to {} partitions",
            change.topic, change.live, change.declared
        );
    }
    for change in &applied.reconfigured {
        println!(
            "set {} {}={} (was {})",
            change.topic, change.key, change.to, change.from
        );
    }
}

fn report(drift: &[Drift]) {
    for item in drift {
        println!("drift: {item}");
    }
}
