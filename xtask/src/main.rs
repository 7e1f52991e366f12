//! `cargo xtask`: set-up, build, test, bench and demo orchestration for
//! mcpguard.
//!
//! Every command but `setup` runs `setup` first; `setup` is idempotent and
//! takes seconds once everything is in place.

mod bench;
mod demo;
mod escape;
mod fuzz;
mod layers;
mod setup;
mod sh;
mod vm;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "mcpguard's set-up, build, test and demo tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the build and the tests need (root; idempotent): apt
    /// packages, nightly rust-src, bpf-linker against the nightly's LLVM,
    /// the unprivileged test user and the MCP peers from PyPI and npm.
    Setup,
    /// Build the daemon with its eBPF programs.
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Unit tests and root integration tests against the real kernel.
    Test {
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// Check that mcpguard's modules import in one direction (no cycle at
    /// any level of the module tree) and print the top-level layers.
    Layers,
    /// Start a daemon, run a real MCP server under guard with a real MCP
    /// client and a hostile probe, and print the audit trail.
    Demo,
    /// Measure what each guard layer costs against the same work run bare;
    /// writes bench/report.md and bench/report.json in the target directory.
    Bench {
        /// Run each item briefly to check the harness (not the numbers),
        /// with the debug build.
        #[arg(long)]
        quick: bool,
        /// Only these sections, comma-separated (launch, syscalls, audit,
        /// memory, tap, dns, wrapped, landlock, volume); default: all.
        #[arg(long, value_delimiter = ',', value_name = "SECTION")]
        only: Vec<String>,
    },
    /// Run the fuzz targets (policy, mcp, dns) longer than `test` does, in
    /// release mode, and report how many inputs each ran.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60.0)]
        secs: f64,
        /// One target: policy, mcp or dns (default: all).
        target: Option<String>,
    },
    /// Boot another kernel (Debian 6.1 or 6.12 under QEMU TCG, or the
    /// host's) and run a set of the integration tests on it as root;
    /// report in `target/vm/<kernel>/`.
    Vm(vm::Args),
    /// Internal: the bench's Landlock-only runner. Confines itself with
    /// the policy's Landlock ruleset alone, then execs the command.
    #[command(name = bench::landlock::SUBCOMMAND, hide = true)]
    LandlockExec {
        #[arg(long)]
        policy: PathBuf,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    match dispatch(Cli::parse().command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Setup => setup::run(),
        Command::Build { release } => {
            setup::run()?;
            build(release)
        }
        Command::Test { filter } => {
            setup::run()?;
            test(filter.as_deref())
        }
        Command::Layers => layers::run(&root()),
        Command::Demo => {
            setup::run()?;
            build(false)?;
            demo::run()
        }
        Command::Bench { quick, only } => {
            setup::run()?;
            // Full runs measure the build users run; quick runs reuse the
            // debug build the tests already made.
            build(!quick)?;
            bench::run(quick, &only)
        }
        Command::Fuzz { secs, target } => {
            setup::run()?;
            fuzz::run(secs, target.as_deref())
        }
        Command::Vm(args) => {
            setup::run()?;
            vm::run(&args)
        }
        Command::LandlockExec { policy, command } => bench::landlock::exec_under(&policy, &command),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

fn build(release: bool) -> Result<()> {
    let mut cmd = sh::cargo(&["build", "--package", "mcpguard"]);
    if release {
        cmd.arg("--release");
    }
    sh::run(&mut cmd)
}

fn test(filter: Option<&str>) -> Result<()> {
    anyhow::ensure!(
        nix_is_root(),
        "the integration tests load eBPF programs and manage cgroups: run `cargo xtask test` as root"
    );
    // Lints first: cheap, and a red lint is a red build.
    // rustfmt.toml uses nightly-only import grouping.
    sh::run(
        sh::cmd(
            "rustup",
            &["run", "nightly", "cargo", "fmt", "--all", "--check"],
        )
        .current_dir(root()),
    )?;
    layers::run(&root())?;
    sh::run(&mut sh::cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "mcpguard-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Doc links are checked like code: a broken or private link is an error.
    sh::run(
        sh::cargo(&[
            "doc",
            "--workspace",
            "--exclude",
            "mcpguard-ebpf",
            "--no-deps",
        ])
        .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    // One invocation: unit tests of every host crate, then the single
    // integration binary. Kernel state is shared, so one test at a time.
    let mut cmd = sh::cargo(&["test", "--workspace", "--exclude", "mcpguard-ebpf"]);
    if let Some(f) = filter {
        cmd.arg(f);
    }
    cmd.args(["--", "--test-threads=1"]);
    cmd.env("MCPGUARD_TEST_USER", setup::TEST_USER);
    cmd.env("MCPGUARD_TEST_OTHER_USER", setup::OTHER_USER);
    cmd.env("MCPGUARD_ESCAPE_ROWS", escape::rows_dir());
    escape::reset()?;
    let result = sh::run_counting_tests(&mut cmd);
    // The report is written even when tests failed: its red rows say which.
    let red = escape::write_report()?;
    eprintln!(
        "xtask: escape report {} ({red} red rows)",
        escape::report_path().display()
    );
    let (passed, failed) = result?;
    // A filtered run leaves classes without rows; a full run must not.
    if filter.is_none() {
        anyhow::ensure!(red == 0, "the escape report has {red} red rows");
    }
    // The bench harness, briefly: CI checks that it runs, not its numbers.
    build(false)?;
    bench::run(true, &[])?;
    // The kernels developers run, in QEMU (TCG): about 5 minutes for both;
    // MCPGUARD_VM_SMOKE=0 skips it, MCPGUARD_VM_SYSTEMD=1 adds the systemd
    // lifecycle (about 5.5 minutes more).
    if std::env::var_os("MCPGUARD_VM_SMOKE").is_none_or(|v| v != "0") {
        vm::ci()?;
    }
    // One closing line for the whole run (cargo's last "test result" is
    // that of whichever binary ran last, often one without tests).
    println!("tests: {passed} passed, {failed} failed");
    Ok(())
}

pub fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
