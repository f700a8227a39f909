//! The fault-injection run with its audit (see `d2c_integration::faults`),
//! for longer runs than the test suite's: a platform of its own on a private
//! broker and database, faults spread over `--duration`, then the audit.
//! Exits 1 on any violation.

use anyhow::{bail, Result};
use d2c_integration::cli::{parse_num, Flag, Flags};
use d2c_integration::faults::{run, FaultConfig};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage: faultrun [options]   (binaries from target/debug or D2C_BIN_DIR; Postgres via D2C_DATABASE_URL)
  --duration S          seconds of orders, faults spread over them (default 40)
  --rate N              orders per second (default 8)
  --restart-postgres B  restart the local Postgres cluster mid-run: true or false (default true)";

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
