//! The README's per-kernel table: `--record` stores a run's report as
//! `docs/kernels/<kernel>.json` (committed); `--table` regenerates the
//! README section between the kernel-table markers from those files.

use std::{fmt::Write as _, fs, path::PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use super::{report, Choice};
use crate::escape::CLASSES;

const START: &str = "<!-- kernel-table:start (cargo xtask vm --table) -->";
const END: &str = "<!-- kernel-table:end -->";

fn dir() -> PathBuf {
    crate::root().join("docs/kernels")
}

/// Stores `report` for the table, without what makes it bulky: the
/// `status` text and the evidence of rows that held (a red row keeps its
/// evidence: it says why).
pub fn record(choice: Choice, report: &Value) -> Result<()> {
    let mut stored = report.clone();
    if let Some(map) = stored.as_object_mut() {
        map.remove("status");
    }
    for row in stored["rows"].as_array_mut().into_iter().flatten() {
        if held(row) {
            if let Some(map) = row.as_object_mut() {
                map.remove("evidence");
            }
        }
    }
    fs::create_dir_all(dir())?;
    let path = dir().join(format!("{}.json", choice.name()));
    fs::write(&path, serde_json::to_string_pretty(&stored)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("xtask: recorded {}", path.display());
    Ok(())
}

/// Rewrites the README's kernel table from docs/kernels/*.json.
pub fn write_readme() -> Result<()> {
    let mut runs: Vec<Value> = Vec::new();
    for name in ["6.1", "6.12", "host"] {
        let path = dir().join(format!("{name}.json"));
        if let Ok(text) = fs::read_to_string(&path) {
            runs.push(
                serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?,
            );
        }
    }
    anyhow::ensure!(
        !runs.is_empty(),
        "no docs/kernels/*.json: run `cargo xtask vm --kernel K --set escape --record` first"
    );
    let readme_path = crate::root().join("README.md");
    let readme = fs::read_to_string(&readme_path)?;
    let (head, rest) = readme
        .split_once(START)
        .context("README.md lacks the kernel-table start marker")?;
    let (_, tail) = rest
        .split_once(END)
        .context("README.md lacks the kernel-table end marker")?;
    let body = render(&runs);
    fs::write(&readme_path, format!("{head}{START}\n{body}{END}{tail}"))?;
    eprintln!(
        "xtask: README.md kernel table rewritten from {} runs",
        runs.len()
    );
    Ok(())
}

/// The table: one column per kernel, one row per escape class
/// (attacks both blocked and recorded / attacks run; "no rows" where no
/// test of the class reported, e.g. it failed before its attacks ran),
/// then what ran where, the failed tests and the attacks not held.
fn render(runs: &[Value]) -> String {
    let mut md = String::from("| class |");
    for run in runs {
        let _ = write!(
            md,
            " {} (`{}`, Landlock ABI {}) |",
            run["kernel"].as_str().unwrap_or("?"),
            run["release"].as_str().unwrap_or("?"),
            abi(run)
        );
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(runs.len()));
    md.push('\n');
    for (i, name) in CLASSES.iter().enumerate() {
        let class = i as u64 + 1;
        let _ = write!(md, "| {class}. {name} |");
        for run in runs {
            let rows: Vec<&Value> = run["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["class"].as_u64() == Some(class))
                .collect();
            let held = rows.iter().filter(|r| held(r)).count();
            if rows.is_empty() {
                md.push_str(" no rows |");
            } else {
                let mark = if held == rows.len() { "✓" } else { "✗" };
                let _ = write!(md, " {mark} {held}/{} |", rows.len());
            }
        }
        md.push('\n');
    }
    md.push('\n');
    for run in runs {
        let _ = writeln!(
            md,
            "- **{}**: {} on {} (commit {}), set `{}`: {} tests passed, {} failed ({} s).",
            run["kernel"].as_str().unwrap_or("?"),
            run["how"].as_str().unwrap_or("?"),
            run["date"].as_str().unwrap_or("?"),
            run["commit"].as_str().unwrap_or("?"),
            report::join(&run["set"]),
            run["passed"],
            run["failed"],
            run["wall_secs"],
        );
        for test in run["failed_tests"].as_array().into_iter().flatten() {
            let _ = writeln!(md, "  - failed: `{}`", test.as_str().unwrap_or("?"));
        }
        let mut red: Vec<&Value> = run["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| !held(r))
            .collect();
        red.sort_by_key(|r| r["class"].as_u64());
        for row in red {
            let _ = writeln!(
                md,
                "  - class {} `{}`: blocked {}, recorded {}",
                row["class"],
                row["attack"].as_str().unwrap_or("?").replace('|', "\\|"),
                row["blocked"],
                row["recorded"],
            );
        }
    }
    md
}

fn held(row: &Value) -> bool {
    row["blocked"] == true && row["recorded"] == true
}

fn abi(run: &Value) -> String {
    run["landlock_abi"]
        .as_u64()
        .map_or_else(|| "none".to_owned(), |a| a.to_string())
}
