//! Flag parsing shared by the load tools: `--flag value` or `--flag=value`,
//! every flag taking a value, `-h`/`--help` asking for usage.

use anyhow::{Context, Result};

pub enum Flag {
    Help,
    Value { name: String, value: String },
}

pub struct Flags {
    args: std::vec::IntoIter<String>,
    usage: &'static str,
}

impl Flags {
    pub fn from_env(usage: &'static str) -> Self {
        Self::new(std::env::args().skip(1).collect(), usage)
    }

    pub fn new(args: Vec<String>, usage: &'static str) -> Self {
        Self {
            args: args.into_iter(),
            usage,
        }
    }

    pub fn next_flag(&mut self) -> Result<Option<Flag>> {
        let Some(arg) = self.args.next() else {
            return Ok(None);
        };
        if arg == "-h" || arg == "--help" {
            return Ok(Some(Flag::Help));
        }
        let (name, value) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), value.to_owned()),
            None => {
                let value = self
                    .args
                    .next()
                    .with_context(|| format!("{arg} needs a value\n{}", self.usage))?;
                (arg, value)
            }
        };
        Ok(Some(Flag::Value { name, value }))
    }
}

pub fn parse_num<T>(flag: &str, raw: &str) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    raw.parse()
        .with_context(|| format!("invalid value {raw:?} for {flag}"))
}

/// The operator's token for admin routes: `D2C_ADMIN_TOKEN`, or the
/// gateway's local default.
pub fn admin_token() -> String {
    std::env::var("D2C_ADMIN_TOKEN")
        .ok()
        .filter(|token| !token.is_empty())
        .unwrap_or_else(|| d2c_gateway::config::DEV_ADMIN_TOKEN.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(args: &[&str]) -> Result<Vec<(String, String)>> {
        let mut flags = Flags::new(args.iter().map(|a| a.to_string()).collect(), "usage");
        let mut out = Vec::new();
        while let Some(flag) = flags.next_flag()? {
            if let Flag::Value { name, value } = flag {
                out.push((name, value));
            }
        }
        Ok(out)
    }

    #[test]
    fn both_spellings_and_missing_values() {
        let parsed = all(&["--rate", "5", "--url=http://x"]).expect("parses");
        assert_eq!(
            parsed,
            vec![
                ("--rate".into(), "5".into()),
                ("--url".into(), "http://x".into())
            ]
        );
        assert!(all(&["--rate"]).is_err());
        assert!(parse_num::<u32>("--rate", "x").is_err());
    }
}
