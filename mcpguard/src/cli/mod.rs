//! Command-line interface: one file per subcommand.

mod approvals;
mod audit;
mod audit_verify;
mod daemon;
mod doctor;
mod install;
mod notify;
mod policy;
mod run;
mod status;
mod wrap;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{
    audit::writer::{DEFAULT_BACKLOG_BYTES, MIN_BACKLOG_BYTES},
    daemon::{
        mint::DEFAULT_MINTERS_DIR, DEFAULT_AUDIT_LOG, DEFAULT_SECRETS_DIR, DEFAULT_SOCKET,
        DEFAULT_STATE_DIR,
    },
};

#[derive(Parser)]
#[command(
    name = "mcpguard",
    version,
    about = "Kernel-enforced least privilege and an audit trail for MCP servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the enforcement daemon (root).
    Daemon {
        /// Unix socket `mcpguard run` connects to.
        #[arg(long, env = "MCPGUARD_SOCKET", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// JSON Lines audit log.
        #[arg(long, env = "MCPGUARD_AUDIT_LOG", default_value = DEFAULT_AUDIT_LOG)]
        audit_log: PathBuf,
        /// Most bytes of audit records held in memory while the audit log
        /// cannot be written (disk full, read-only, removed); enforcement
        /// goes on, and records beyond this are counted and reported by a
        /// `loss` record once the log works again.
        #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BACKLOG_BYTES as u64,
              value_parser = clap::value_parser!(u64).range(MIN_BACKLOG_BYTES as u64..))]
        audit_backlog: u64,
        /// Name of the cgroup subtree the daemon owns.
        #[arg(long, default_value = "mcpguard", hide = true)]
        cgroup_name: String,
        /// Size of the kernel audit ring buffer in bytes (a power of two).
        #[arg(long)]
        ring_buffer_bytes: Option<u32>,
        /// Root-owned state (tool pins).
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// The only directory `[secrets]` files may come from: files in it
        /// are for every user, files in users/<name>/ for that user only.
        #[arg(long, default_value = DEFAULT_SECRETS_DIR)]
        secrets_dir: PathBuf,
        /// The only directory `[secrets]` `mint` helpers may come from:
        /// root's executables, shared, or in users/<name>/ for that user
        /// only (looked up first).
        #[arg(long, default_value = DEFAULT_MINTERS_DIR)]
        minters_dir: PathBuf,
        /// Resolver that servers' allowed DNS queries are forwarded to
        /// (IP:PORT); default: the first nameserver in /etc/resolv.conf.
        #[arg(long)]
        upstream_dns: Option<std::net::SocketAddr>,
        #[command(flatten)]
        bounds: daemon::Bounds,
    },
    /// Run an MCP server under a policy (use in place of the server command).
    Run {
        /// Policy file, or a name looked up in ~/.config/mcpguard/policies,
        /// /etc/mcpguard/policies, then the repository's policies/.
        #[arg(long)]
        policy: String,
        #[arg(long, env = "MCPGUARD_SOCKET", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// The server command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Review the audit trail.
    Audit(audit::AuditArgs),
    /// The calls of your servers that wait for a decision (`[tools] ask`,
    /// tainted sessions), and your tainted sessions.
    Approvals(approvals::ListArgs),
    /// Let a waiting call through to its server.
    Approve(approvals::DecideArgs),
    /// Refuse a waiting call (the client gets an error saying so).
    Deny(approvals::DecideArgs),
    /// End a session's taint: its calls go through again without a
    /// person's approval.
    Clear(approvals::ClearArgs),
    /// Learn, check or explain a policy.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Rewrite MCP client configs so every stdio server runs through mcpguard.
    Wrap(wrap::WrapArgs),
    /// Undo `wrap`: give each server in MCP client configs its own command back.
    Unwrap(wrap::UnwrapArgs),
    /// Reinstall pinned servers (`wrap` pins `npx -y PKG`, `uvx PKG`, ...)
    /// from their runner words: the newest release, unless the words name a
    /// version.
    Update(wrap::UpdateArgs),
    /// The daemon's version, uptime and kernel layers, and its running
    /// servers (yours only, unless you are root).
    Status(status::StatusArgs),
    /// Probe what the daemon holds on this machine: a short guarded launch
    /// that tries a denied read, connect, name, exec, chmod, signal and
    /// abstract-socket connect, then, per class, held, recorded or missing.
    Doctor(doctor::DoctorArgs),
    /// Install the binary, the systemd unit, the shipped policies and the
    /// daemon's directories (root).
    Install(install::InstallArgs),
    /// Remove the binary and the systemd unit; keep policies, state and logs.
    Uninstall(install::UninstallArgs),
    /// Internal: the launch helper the daemon runs for each server.
    #[command(name = "__exec-server", hide = true)]
    ExecServer,
    /// Internal: the probe server `mcpguard doctor` launches.
    #[command(name = "__doctor-probe", hide = true)]
    DoctorProbe { targets: String },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Daemon {
            socket,
            audit_log,
            audit_backlog,
            cgroup_name,
            ring_buffer_bytes,
            state_dir,
            secrets_dir,
            minters_dir,
            upstream_dns,
            bounds,
        } => daemon::main(crate::daemon::Config {
            socket,
            audit_log,
            audit_backlog: usize::try_from(audit_backlog).unwrap_or(usize::MAX),
            cgroup_name,
            ring_bytes: ring_buffer_bytes,
            state_dir,
            secrets_dir,
            minters_dir,
            upstream_dns,
            rotation: bounds.rotation(),
            budget: bounds.budget(),
            launch_limits: bounds.launch_limits(),
        }),
        Command::Run {
            policy,
            socket,
            command,
        } => run::main(&policy, &socket, command),
        Command::Audit(args) => audit::main(args),
        Command::Approvals(args) => approvals::list_main(args),
        Command::Approve(args) => approvals::approve_main(args),
        Command::Deny(args) => approvals::deny_main(args),
        Command::Clear(args) => approvals::clear_main(args),
        Command::Policy { command } => policy::main(command),
        Command::Wrap(args) => wrap::wrap_main(args),
        Command::Unwrap(args) => wrap::unwrap_main(args),
        Command::Update(args) => wrap::update_main(args),
        Command::Status(args) => status::main(args),
        Command::Install(args) => install::install_main(args),
        Command::Uninstall(args) => install::uninstall_main(args),
        Command::Doctor(args) => doctor::main(args),
        Command::ExecServer => crate::launch::helper_main(),
        Command::DoctorProbe { targets } => doctor::probe_main(&targets),
    }
}
