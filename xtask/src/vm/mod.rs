//! `cargo xtask vm`: runs a set of the integration tests as root on another
//! kernel, booted in QEMU (TCG) from a busybox initramfs that shares the
//! host's root read-only over 9p, so the guest runs the binaries built
//! here; and reports what the kernel offered and what passed
//! (`target/vm/<kernel>/report.{json,md}`).
//!
//! The guest side is POSIX sh under xtask/vm/: init.sh (the initramfs
//! /init), guest.sh (PID 1 in script mode: mounts, then run-set.sh) and,
//! in systemd mode, the script named by [`SYSTEMD_GUEST_SCRIPT`].

mod initramfs;
mod kernel;
mod qemu;
mod report;
mod table;

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
pub use kernel::Choice;
use serde_json::Value;

use crate::sh;

/// The smoke set: one test per layer (Landlock file rules, eBPF egress,
/// the per-server resolver, launch and exec records, the MCP tap with a
/// Python peer, the layers `status` shows), none needing the network.
pub const SMOKE: &[&str] = &[
    "enforce::reads_outside_the_policy_fail_with_eacces_and_leave_a_denied_open_record",
    "enforce::egress_allows_listed_destinations_and_denies_the_rest_with_eperm_and_a_record",
    "dns::names_resolve_and_connect_only_as_the_policy_allows",
    "argv::tokens_and_secrets_on_a_command_line_are_redacted_from_launch_and_exec_records",
    "mcp::the_tap_denies_tools_redacts_secrets_and_ties_syscalls_to_calls",
    "lifecycle::server_runs_as_the_caller_with_no_new_privs_and_only_the_passed_env",
    "status_shows_layers_and_only_the_callers_own_servers_with_counts_and_last_denial",
];

/// What `cargo xtask test` runs on each kernel (the `ci` set): Landlock
/// file rules, eBPF egress, the MCP tap, and the guarantees that depend on
/// the kernel's Landlock ABI (`kernels::`: status, refusal, opt-in, wrap);
/// every boot also logs the daemon's layer lines and `status` into the
/// report.
pub const CI: &[&str] = &[
    "enforce::reads_outside_the_policy_fail_with_eacces_and_leave_a_denied_open_record",
    "enforce::egress_allows_listed_destinations_and_denies_the_rest_with_eperm_and_a_record",
    "mcp::the_tap_denies_tools_redacts_secrets_and_ties_syscalls_to_calls",
    "kernels::",
];

/// The kernels `cargo xtask test` boots.
pub const CI_KERNELS: [Choice; 2] = [Choice::V6_1, Choice::V6_12];

/// The kernel `cargo xtask test` runs the systemd lifecycle on (with
/// `MCPGUARD_VM_SYSTEMD=1`).
pub const SYSTEMD_KERNEL: Choice = Choice::V6_12;

/// The systemd lifecycle script `--set systemd` boots into (relative to
/// the workspace root): run as root by a oneshot unit with systemd as
/// PID 1, `VM_OUT` and `MCPGUARD_ROOT` set; exit 0 = pass.
pub const SYSTEMD_GUEST_SCRIPT: &str = "xtask/vm/systemd-guest.sh";

/// How long a guest may run before it is killed.
const DEFAULT_TIMEOUT_SECS: u64 = 3600;

#[derive(clap::Args)]
pub struct Args {
    /// The kernel: Debian's 6.1, Debian's 6.12, or the host's.
    #[arg(long, required_unless_present = "table")]
    kernel: Option<Choice>,
    /// `smoke`, `ci` (the part of smoke `cargo xtask test` runs), `escape`
    /// (the escape suite), `systemd` (systemd as PID 1 running
    /// xtask/vm/systemd-guest.sh) or test-name filters.
    #[arg(long, num_args = 1.., default_value = "smoke")]
    set: Vec<String>,
    /// Kill the guest after this many seconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    timeout: u64,
    /// Also store the report as `docs/kernels/<kernel>.json`, the source of
    /// the README's kernel table.
    #[arg(long)]
    record: bool,
    /// Regenerate the README's kernel table from docs/kernels/*.json and
    /// exit.
    #[arg(long)]
    table: bool,
}

pub fn run(args: &Args) -> Result<()> {
    if args.table {
        return table::write_readme();
    }
    let choice = args.kernel.context("--kernel is required")?;
    let report = run_set(choice, &args.set, Duration::from_secs(args.timeout))?;
    if args.record {
        table::record(choice, &report)?;
    }
    let failed = report["failed"].as_u64().unwrap_or(0);
    if report["exit"].as_i64() != Some(0) {
        bail!(
            "kernel {}: the set failed (exit {}, {failed} failed: {})",
            choice.name(),
            report["exit"],
            report::join(&report["failed_tests"])
        );
    }
    Ok(())
}

/// `cargo xtask test`'s stage: the `ci` set on each of [`CI_KERNELS`],
/// then, with `MCPGUARD_VM_SYSTEMD=1`, the systemd lifecycle on
/// [`SYSTEMD_KERNEL`]; errors naming every kernel where something failed.
pub fn ci() -> Result<()> {
    let mut failed: Vec<String> = CI_KERNELS
        .into_iter()
        .filter_map(|kernel| stage(kernel, "ci", "vm stage"))
        .collect();
    // The systemd lifecycle (about 5 minutes), on the kernel Debian 13
    // ships, when asked: CI's budget does not hold it.
    if std::env::var_os("MCPGUARD_VM_SYSTEMD").is_some_and(|v| v == "1") {
        failed.extend(stage(SYSTEMD_KERNEL, "systemd", "vm systemd lifecycle"));
    }
    anyhow::ensure!(
        failed.is_empty(),
        "the VM stage failed on {}",
        failed.join("; ")
    );
    Ok(())
}

/// Runs the named set on `kernel`, logs how long it took as `what`, and
/// returns what failed, if anything.
fn stage(kernel: Choice, set: &str, what: &str) -> Option<String> {
    let start = Instant::now();
    let result = run_set(
        kernel,
        &[set.to_owned()],
        Duration::from_secs(DEFAULT_TIMEOUT_SECS),
    );
    eprintln!(
        "xtask: {what} on {}: {} s",
        kernel.name(),
        start.elapsed().as_secs()
    );
    match result {
        Ok(report) if report["exit"].as_i64() == Some(0) => None,
        Ok(report) => Some(format!(
            "{} ({set}): exit {}, failed: {}; see target/vm/{}/",
            kernel.name(),
            report["exit"],
            report::join(&report["failed_tests"]),
            kernel.name()
        )),
        Err(error) => Some(format!("{} ({set}): {error:#}", kernel.name())),
    }
}

/// Runs `set` on `choice` and returns the report (also written under
/// `target/vm/<kernel>/`).
pub fn run_set(choice: Choice, set: &[String], timeout: Duration) -> Result<Value> {
    let root = crate::root();
    let dir = root.join("target/vm").join(choice.name());
    let out = qemu::fresh_dir(&dir.join("out"))?;
    let systemd = set == ["systemd"];
    let (filters, init, script) = if systemd {
        let script = root.join(SYSTEMD_GUEST_SCRIPT);
        anyhow::ensure!(
            script.exists(),
            "{SYSTEMD_GUEST_SCRIPT} missing: the systemd lifecycle test is not in this checkout"
        );
        (Vec::new(), qemu::Init::Systemd, script)
    } else {
        (
            filters(set),
            qemu::Init::Script,
            root.join("xtask/vm/guest.sh"),
        )
    };
    write_run_env(&out, &filters)?;
    let start = Instant::now();
    let kernel = match choice {
        Choice::V6_1 => Some(kernel::debian(kernel::DEBIAN_6_1, &cache()?)?),
        Choice::V6_12 => Some(kernel::debian(kernel::DEBIAN_6_12, &cache()?)?),
        Choice::Host => kernel::host()?,
    };
    let how = match &kernel {
        Some(kernel) => {
            let initrd = initramfs::build(kernel, &cache()?)?;
            let boot = qemu::Boot {
                vmlinuz: &kernel.vmlinuz,
                initrd: &initrd,
                modules: Some(&kernel.modules),
                init,
                script: &script,
                out: &out,
                root: &root,
            };
            qemu::run(&boot, &dir.join("console.log"), timeout)?;
            "QEMU TCG guest".to_owned()
        }
        None => {
            anyhow::ensure!(
                !systemd,
                "--set systemd needs a kernel image to boot; /boot has none for the running kernel"
            );
            // Nothing to boot: the running kernel is the one to test.
            sh::run(
                sh::cmd("sh", &[])
                    .arg(root.join("xtask/vm/run-set.sh"))
                    .env("VM_OUT", &out),
            )?;
            "on the host directly (/boot holds no image of the running kernel)".to_owned()
        }
    };
    let run = report::Run {
        kernel: choice.name(),
        how: &how,
        set,
        wall: start.elapsed(),
    };
    let report = report::collect(&run, &out)?;
    report::write(&report, &dir)?;
    eprintln!(
        "xtask: kernel {} ({}, Landlock ABI {}): {} passed, {} failed in {} s; {}",
        choice.name(),
        report["release"].as_str().unwrap_or("?"),
        report["landlock_abi"],
        report["passed"],
        report["failed"],
        report["wall_secs"],
        dir.join("report.md").display()
    );
    Ok(report)
}

/// The test filters a set names.
fn filters(set: &[String]) -> Vec<String> {
    set.iter()
        .flat_map(|s| match s.as_str() {
            "smoke" => SMOKE.iter().map(|f| (*f).to_owned()).collect(),
            "ci" => CI.iter().map(|f| (*f).to_owned()).collect(),
            "escape" => vec!["escape::".to_owned()],
            other => vec![other.to_owned()],
        })
        .collect()
}

/// The kernel packages and initramfs images, kept across runs.
fn cache() -> Result<PathBuf> {
    let dir = crate::root().join("target/vm/cache");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Builds the integration test binary; returns its path.
fn test_binary() -> Result<PathBuf> {
    let out = sh::output(&mut sh::cargo(&[
        "test",
        "--package",
        "mcpguard",
        "--test",
        "integration",
        "--no-run",
        "--message-format=json",
    ]))?;
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["target"]["name"] == "integration")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo reported no executable for the integration tests")
}

/// The inputs run-set.sh sources: binaries, working directory, filters.
fn write_run_env(out: &Path, filters: &[String]) -> Result<()> {
    let root = crate::root();
    // Built even when no test runs: the build makes the daemon binary too.
    let built = test_binary()?.display().to_string();
    let test_bin = if filters.is_empty() { "" } else { &built };
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let env = format!(
        "DAEMON_BIN={}\nTEST_BIN={}\nTEST_CWD={}\nFILTERS={}\n",
        quote(&root.join("target/debug/mcpguard").display().to_string()),
        quote(test_bin),
        quote(&root.join("mcpguard").display().to_string()),
        quote(&filters.join(" ")),
    );
    fs::write(out.join("run.env"), env).context("writing run.env")
}
