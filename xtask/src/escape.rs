//! Assembles `target/escape-report.md` from the rows the escape suite's
//! tests write (`target/escape/rows/*.json`, one per attack): a table per
//! attack class with blocked/recorded per row. A class without rows is a
//! red row of its own, so a suite that silently ran nothing cannot look
//! green.

use std::{fmt::Write as _, fs, path::PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// The classes, numbered as in the issue and the tests.
pub const CLASSES: [&str; 15] = [
    "Sensitive reads",
    "Path tricks",
    "Exec tricks",
    "Egress tricks",
    "Kernel-interface tricks",
    "TOCTOU",
    "Resource attacks",
    "Terminal tricks on the reviewer",
    "Server-to-client requests",
    "Attribute changes outside write grants",
    "Inbound channels",
    "Persistence through granted write trees",
    "Local users at a server's resolver",
    "Daemon memory and disk budgets",
    "Refusals that must leave a record",
];

pub fn rows_dir() -> PathBuf {
    crate::root().join("target/escape/rows")
}

pub fn report_path() -> PathBuf {
    crate::root().join("target/escape-report.md")
}

/// Clears the rows of an earlier run.
pub fn reset() -> Result<()> {
    let dir = rows_dir();
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// Writes the report; returns the number of red rows.
pub fn write_report() -> Result<usize> {
    let mut rows: Vec<Value> = Vec::new();
    if let Ok(entries) = fs::read_dir(rows_dir()) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            rows.push(
                serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?,
            );
        }
    }
    let mut md = String::from(
        "# mcpguard escape report\n\nEach row is one attack run as an unprivileged user \
         through `mcpguard run` against the real kernel. *blocked*: the kernel refused it; \
         *recorded*: the audit log holds the record named in the evidence.\n",
    );
    let mut red = 0;
    for (i, name) in CLASSES.iter().enumerate() {
        let class = i as u64 + 1;
        let _ = write!(
            md,
            "\n## {class}. {name}\n\n| attack | blocked | recorded | evidence |\n|---|---|---|---|\n"
        );
        let of_class: Vec<&Value> = rows
            .iter()
            .filter(|r| r["class"].as_u64() == Some(class))
            .collect();
        if of_class.is_empty() {
            red += 1;
            md.push_str("| (no test ran) | ✗ | ✗ | the suite wrote no row for this class |\n");
        }
        for row in of_class {
            let mark = |key: &str| if row[key] == true { "✓" } else { "✗" };
            if row["blocked"] != true || row["recorded"] != true {
                red += 1;
            }
            let evidence = row["evidence"].as_str().unwrap_or("").replace('|', "\\|");
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                row["attack"].as_str().unwrap_or("?"),
                mark("blocked"),
                mark("recorded"),
                evidence.replace('\n', " ")
            );
        }
    }
    let path = report_path();
    fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    Ok(red)
}
