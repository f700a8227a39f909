//! CPU time and resident memory of the platform's processes, read from
//! `/proc` (Linux): what `bench` divides by the operations of a phase. A
//! process counts with its descendants (Postgres serves each connection
//! from a child of the postmaster) and with the children it has reaped.

use std::collections::HashMap;
use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProcError {
    #[error("process {0} is gone")]
    Gone(u32),
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
}

/// Linux reports CPU times in USER_HZ ticks, which is 100 on every
/// architecture Linux runs on (the kernel's ABI, whatever CONFIG_HZ is).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds since the process started.
    pub cpu_s: f64,
    /// Resident memory now.
    pub rss_bytes: u64,
}

struct Stat {
    ppid: u32,
    cpu_ticks: u64,
}

/// The fields of `/proc/<pid>/stat` we need. The command name (field 2) may
/// hold spaces and parentheses, so the fields are counted after its last
/// `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): field N is fields[N - 3].
    let number = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    let cpu_ticks = number(14)? + number(15)? + number(16)? + number(17)?;
    Some(Stat {
        ppid: u32::try_from(number(4)?).ok()?,
        cpu_ticks,
    })
}

fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Every live process's parent, for finding descendants.
fn parents() -> HashMap<u32, u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?.ppid)))
        .collect()
}

/// `root` and every live descendant of it.
fn tree(root: u32, parents: &HashMap<u32, u32>) -> Vec<u32> {
    let mut members = vec![root];
    let mut index = 0;
    while index < members.len() {
        let parent = members[index];
        members.extend(
            parents
                .iter()
                .filter(|&(_, &ppid)| ppid == parent)
                .map(|(&pid, _)| pid),
        );
        index += 1;
    }
    members
}

/// CPU and memory of `root` and its descendants.
pub fn tree_usage(root: u32) -> Result<Usage, ProcError> {
    let root_stat = read_stat(root).ok_or(ProcError::Gone(root))?;
    let parents = parents();
    let mut usage = Usage {
        cpu_s: root_stat.cpu_ticks as f64 / TICKS_PER_SECOND,
        rss_bytes: rss_bytes(root),
    };
    for pid in tree(root, &parents).into_iter().skip(1) {
        if let Some(stat) = read_stat(pid) {
            usage.cpu_s += stat.cpu_ticks as f64 / TICKS_PER_SECOND;
            usage.rss_bytes += rss_bytes(pid);
        }
    }
    Ok(usage)
}

/// The pid in the first line of a pid file (ours, or Postgres's
/// `postmaster.pid`).
pub fn pid_from_file(path: &Path) -> Result<u32, ProcError> {
    let text = std::fs::read_to_string(path).map_err(|e| ProcError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    text.lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .ok_or_else(|| ProcError::Read {
            path: path.display().to_string(),
            message: "no pid on the first line".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parens_does_not_shift_fields() {
        let line = "42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 3 2 20 0 1 0 100 1000 200";
        let stat = parse_stat(line).expect("parses");
        assert_eq!(stat.ppid, 7);
        assert_eq!(stat.cpu_ticks, 250 + 50 + 3 + 2);
    }

    #[test]
    fn a_busy_child_counts_toward_its_parent() {
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5",
            ])
            .spawn()
            .expect("spawns sh");
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let me = tree_usage(std::process::id()).expect("reads");
        let alone = read_stat(std::process::id()).expect("own stat");
        let _ = child.kill();
        let _ = child.wait();
        assert!(me.rss_bytes > 0);
        assert!(
            me.cpu_s > alone.cpu_ticks as f64 / TICKS_PER_SECOND,
            "the child's CPU is added: {me:?}"
        );
    }
}
