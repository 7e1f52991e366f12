//! `cargo xtask fuzz`: the fuzz targets of `cargo xtask test`
//! (`mcpguard/src/fuzz.rs` and the `fuzz` modules of policy, mcp and dns),
//! for longer and in release mode, with the inputs each one ran.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
};

use anyhow::{bail, Context, Result};

use crate::sh;

/// Target name → the test-name filter that selects it.
const TARGETS: &[(&str, &str)] = &[
    ("policy", "policy::fuzz::"),
    ("mcp", "mcp::fuzz::"),
    ("dns", "dns::view::fuzz::"),
];

pub fn run(secs: f64, target: Option<&str>) -> Result<()> {
    anyhow::ensure!(
        secs.is_finite() && secs > 0.0,
        "--secs must be a positive number"
    );
    let filter = match target {
        None => "::fuzz::",
        Some(t) => match TARGETS.iter().find(|(name, _)| *name == t) {
            Some((_, filter)) => filter,
            None => bail!(
                "no fuzz target {t:?}; targets: {}",
                TARGETS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    let mut cmd = sh::cargo(&[
        "test",
        "--release",
        "--package",
        "mcpguard",
        "--lib",
        filter,
        "--",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd.env("MCPGUARD_FUZZ_SECS", secs.to_string())
        .stderr(Stdio::piped());
    eprintln!(
        "xtask: fuzzing {} for {secs} s each",
        target.unwrap_or("every target")
    );
    let mut child = cmd.spawn().context("cannot start cargo test")?;
    let stderr = child.stderr.take().context("cargo test stderr")?;
    // The runner ends each target with `fuzz <target>: <n> inputs in ...`.
    let mut report = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading cargo test output")?;
        eprintln!("{line}");
        if line.starts_with("fuzz ") && line.contains(" inputs in ") {
            report.push(line);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!("fuzz report:");
    for line in &report {
        println!("  {line}");
    }
    if !status.success() {
        bail!("a fuzz target failed ({status}); its panic above names the seed and the input");
    }
    anyhow::ensure!(!report.is_empty(), "no fuzz target ran");
    Ok(())
}
