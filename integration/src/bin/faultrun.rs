//! The fault-injection run with its audit (see `d2c_integration::faults`),
//! for longer runs than the test suite's: a platform of its own on a private
//! broker and database, faults spread over `--duration`, then the audit.
//! Exits 1 on any violation.

use anyhow::{bail, Result};
use d2c_integration::cli::{parse_num, Flag, Flags};
use d2c_integration::faults::{run, FaultConfig, Plan};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage: faultrun [options]   (binaries from target/debug or D2C_BIN_DIR; Postgres via D2C_DATABASE_URL)
  --duration S          seconds of orders, faults spread over them (default 40)
  --rate N              orders per second (default 8)
  --restart-postgres B  restart the local Postgres cluster mid-run: true or false (default true)
  --brokers N           1: one broker, restarted mid-run (default); 3: a cluster of three,
                        the busiest leader killed -9 and restarted later
  --plan P              faults (default) or scale-out: orders 1 -> 2 -> 4 -> 2 instances,
                        gateway 1 -> 3, kill -9 of one orders instance; latency by stretch
  --group-protocol P    consumer (KIP-848, the services' default) or classic (cooperative-sticky)";

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let mut config = FaultConfig::default();
    let mut flags = Flags::from_env(USAGE);
    while let Some(flag) = flags.next_flag()? {
        let Flag::Value { name, value } = flag else {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        };
        match name.as_str() {
            "--duration" => config.duration = Duration::from_secs(parse_num(&name, &value)?),
            "--rate" => config.rate = parse_num(&name, &value)?,
            "--restart-postgres" => config.restart_postgres = parse_num(&name, &value)?,
            "--brokers" => config.brokers = parse_num(&name, &value)?,
            "--plan" => {
                config.plan = match value.as_str() {
                    "faults" => Plan::Faults,
                    "scale-out" => Plan::ScaleOut,
                    other => bail!("--plan: faults or scale-out, not {other:?}"),
                }
            }
            "--group-protocol" => match value.as_str() {
                "classic" | "consumer" => config.env.push(("D2C_KAFKA__GROUP_PROTOCOL", value)),
                other => bail!("--group-protocol: classic or consumer, not {other:?}"),
            },
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let audit = run(config).await?;
    println!("{audit}");
    Ok(if audit.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
