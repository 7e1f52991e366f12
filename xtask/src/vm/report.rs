//! What a `cargo xtask vm` run leaves: the results directory read into one
//! JSON value (kernel, Landlock ABI, the daemon's layer lines, test
//! counts, escape rows), written as report.json and report.md next to it.

use std::{fmt::Write as _, fs, path::Path, time::Duration};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::sh;

/// How the set ran, for the report.
pub struct Run<'a> {
    pub kernel: &'a str,
    /// "QEMU TCG", or why it ran on the host directly.
    pub how: &'a str,
    pub set: &'a [String],
    pub wall: Duration,
}

/// Reads `out` (the results directory) into the report.
pub fn collect(run: &Run<'_>, out: &Path) -> Result<Value> {
    let read = |name: &str| fs::read_to_string(out.join(name)).unwrap_or_default();
    let daemon = strip_ansi(&read("daemon.log"));
    // "<time> INFO mcpguard::daemon: <message> layer=...": from the level on.
    let layers: Vec<&str> = daemon
        .lines()
        .filter(|l| l.contains(" layer="))
        .map(|l| l.split_once("Z ").map_or(l, |(_, rest)| rest).trim())
        .collect();
    let landlock_abi = daemon
        .lines()
        .filter(|l| l.contains("layer=\"landlock\""))
        .find_map(|l| {
            l.split_once(" abi=")?
                .1
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        });
    let tests = read("test.log");
    let (passed, failed_tests) = outcomes(&tests);
    let failed = failed_tests.len();
    Ok(json!({
        "kernel": run.kernel,
        "release": read("kernel").trim(),
        "how": run.how,
        "lsm": read("lsm").trim(),
        "landlock_abi": landlock_abi,
        "set": run.set,
        "exit": read("exit").trim().parse::<i64>().ok(),
        "passed": passed,
        "failed": failed,
        "failed_tests": failed_tests,
        "wall_secs": run.wall.as_secs(),
        "layers": layers,
        "status": read("status.txt"),
        "date": sh::output(&mut sh::cmd("date", &["-u", "+%F %H:%M UTC"]))?.trim(),
        "commit": commit()?,
        "rows": rows(&out.join("rows"))?,
    }))
}

/// `text` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Skip to the sequence's final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The number of tests that passed, and the names of those that failed
/// or never finished (the binary aborted while they ran), from libtest's
/// `test <name> ... <verdict>` lines.
fn outcomes(log: &str) -> (usize, Vec<&str>) {
    let mut passed = 0;
    let mut failed = Vec::new();
    for line in log.lines() {
        let Some((name, verdict)) = line
            .strip_prefix("test ")
            .and_then(|l| l.split_once(" ..."))
        else {
            continue;
        };
        match verdict.trim() {
            "ok" => passed += 1,
            "ignored" => {}
            _ => failed.push(name),
        }
    }
    (passed, failed)
}

/// The checkout's commit, `-dirty` if it has uncommitted changes.
fn commit() -> Result<String> {
    let head =
        sh::output(sh::cmd("git", &["rev-parse", "--short", "HEAD"]).current_dir(crate::root()))?;
    let dirty = !sh::output(
        sh::cmd("git", &["status", "--porcelain", "--untracked-files=no"])
            .current_dir(crate::root()),
    )?
    .trim()
    .is_empty();
    Ok(format!(
        "{}{}",
        head.trim(),
        if dirty { "-dirty" } else { "" }
    ))
}

/// The escape rows the tests wrote, sorted by file name (class, index).
fn rows(dir: &Path) -> Result<Vec<Value>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
        })
        .collect()
}

/// Writes report.json and report.md into `dir`.
pub fn write(report: &Value, dir: &Path) -> Result<()> {
    fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    let mut md = format!(
        "# mcpguard on kernel {} ({})\n\n{}; Landlock ABI {}; LSMs `{}`.\n\n\
         Set: `{}`. {} passed, {} failed, {} s wall. Commit {}, {}.\n",
        report["kernel"].as_str().unwrap_or("?"),
        report["release"].as_str().unwrap_or("?"),
        report["how"].as_str().unwrap_or("?"),
        report["landlock_abi"]
            .as_u64()
            .map_or("none".into(), |a| a.to_string()),
        report["lsm"].as_str().unwrap_or(""),
        join(&report["set"]),
        report["passed"],
        report["failed"],
        report["wall_secs"],
        report["commit"].as_str().unwrap_or("?"),
        report["date"].as_str().unwrap_or("?"),
    );
    for (title, key) in [
        ("Failed tests", "failed_tests"),
        ("Daemon layer lines", "layers"),
    ] {
        let _ = write!(md, "\n## {title}\n\n");
        for line in report[key].as_array().into_iter().flatten() {
            let _ = writeln!(md, "- `{}`", line.as_str().unwrap_or(""));
        }
    }
    fs::write(dir.join("report.md"), md)?;
    Ok(())
}

/// A JSON array of strings, space-separated.
pub fn join(list: &Value) -> String {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_name_failed_and_unfinished_tests() {
        let log = "running 3 tests\ntest a::x ... ok\ntest a::y ... FAILED\ntest a::z ... \nthread panicked\nAborted\n";
        assert_eq!(outcomes(log), (1, vec!["a::y", "a::z"]));
        assert_eq!(outcomes("test result: ok. 7 passed; 0 failed"), (0, vec![]));
    }

    #[test]
    fn colour_sequences_are_stripped() {
        let line = "\x1b[2m2026-12-07T12:20:34Z\x1b[0m \x1b[32m INFO\x1b[0m x \x1b[3mabi\x1b[0m\x1b[2m=\x1b[0m6";
        assert_eq!(strip_ansi(line), "2026-12-07T12:20:34Z  INFO x abi=6");
    }
}
