//! `mcpguard audit`: review the audit trail.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use clap::Args;

use crate::{
    audit::query,
    daemon::{DEFAULT_AUDIT_LOG, DEFAULT_SOCKET},
};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: Option<super::audit_verify::AuditCommand>,
    /// The JSON Lines audit log.
    #[arg(long, env = "MCPGUARD_AUDIT_LOG", default_value = DEFAULT_AUDIT_LOG)]
    log: PathBuf,
    #[command(flatten)]
    filter: query::Filter,
    /// Print the raw JSON lines.
    #[arg(long)]
    json: bool,
    /// The daemon's socket: a user who cannot read the log gets their own
    /// servers' records from the daemon (from its log, whatever --log says).
    #[arg(long, env = "MCPGUARD_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: std::path::PathBuf,
}

pub fn main(args: AuditArgs) -> ExitCode {
    if let Some(command) = args.command {
        return super::audit_verify::main(command);
    }
    let mut filter = args.filter;
    if let Err(e) = filter.resolve_since() {
        eprintln!("mcpguard audit: {e}");
        return ExitCode::from(2);
    }
    let stdout = std::io::stdout();
    let color = stdout.is_terminal();
    let mut out = stdout.lock();
    match query::run(&args.log, &filter, args.json, color, &mut out) {
        Ok(_) => ExitCode::SUCCESS,
        // The log is root's; the daemon serves users their own records.
        Err(query::QueryError::PermissionDenied { .. }) if !nix::unistd::geteuid().is_root() => {
            drop(out);
            super::status::audit(&args.socket, filter, args.json)
        }
        Err(e) => {
            eprintln!("mcpguard audit: {e}");
            ExitCode::FAILURE
        }
    }
}
