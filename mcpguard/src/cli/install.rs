//! `mcpguard install` and `mcpguard uninstall`: a thin shell over
//! [`crate::install`] that reports every path and the next step.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use clap::Args;

use crate::install::{self, Change, Layout, Step, DEFAULT_PREFIX};

#[derive(Args)]
pub struct InstallArgs {
    /// Install below this directory instead of / (for packaging).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// The binary goes to PREFIX/bin/mcpguard.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: PathBuf,
}

#[derive(Args)]
pub struct UninstallArgs {
    /// Uninstall from below this directory instead of /.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Where the binary was installed (default: what the installed unit
    /// runs, else /usr/local).
    #[arg(long)]
    prefix: Option<PathBuf>,
}

const NEXT: &str = "systemctl daemon-reload && systemctl enable --now mcpguard";

fn require_root(what: &str) -> Result<(), ExitCode> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        eprintln!(
            "mcpguard {what}: run it as root: it manages root-owned files (sudo mcpguard {what})"
        );
        Err(ExitCode::FAILURE)
    }
}

fn print(steps: &[Step]) {
    for step in steps {
        println!("{step}");
    }
}

pub fn install_main(args: InstallArgs) -> ExitCode {
    if let Err(code) = require_root("install") {
        return code;
    }
    let run = || -> Result<Vec<Step>, install::InstallError> {
        let layout = Layout::new(&args.root, &args.prefix)?;
        let exe = std::env::current_exe().map_err(install::InstallError::CurrentExe)?;
        install::install(&layout, &exe)
    };
    let steps = match run() {
        Ok(steps) => steps,
        Err(e) => {
            eprintln!("mcpguard install: {e}");
            return ExitCode::FAILURE;
        }
    };
    print(&steps);
    if steps.iter().any(|s| s.change == Change::Kept) {
        println!("\nPolicies marked `kept` were left as they are.");
    }
    if args.root == Path::new("/") {
        println!("\nNext: {NEXT}");
        println!("Then `mcpguard status` shows the daemon and its layers.");
    } else {
        println!(
            "\nInstalled below {}. On the target system: {NEXT}",
            args.root.display()
        );
    }
    ExitCode::SUCCESS
}

pub fn uninstall_main(args: UninstallArgs) -> ExitCode {
    if let Err(code) = require_root("uninstall") {
        return code;
    }
    // On a live system, stop the service before its files go away.
    let live = args.root == Path::new("/") && Path::new("/run/systemd/system").is_dir();
    if live {
        systemctl(&["disable", "--now", "mcpguard.service"]);
    }
    let steps = match install::uninstall(&args.root, args.prefix.as_deref()) {
        Ok(steps) => steps,
        Err(e) => {
            eprintln!("mcpguard uninstall: {e}");
            return ExitCode::FAILURE;
        }
    };
    print(&steps);
    if live {
        systemctl(&["daemon-reload"]);
    } else if args.root == Path::new("/") {
        println!(
            "\nIf the service was enabled on this machine: systemctl disable --now mcpguard \
             (before), systemctl daemon-reload (after)."
        );
    }
    println!("Configuration, state and logs were left in place.");
    ExitCode::SUCCESS
}

fn systemctl(args: &[&str]) {
    println!("running systemctl {}", args.join(" "));
    match Command::new("systemctl").args(args).status() {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("mcpguard: systemctl {} exited {status}", args.join(" ")),
        Err(e) => eprintln!("mcpguard: cannot run systemctl: {e}"),
    }
}
