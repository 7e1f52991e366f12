//! `mcpguard audit`: review the audit trail.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use clap::Args;

use crate::{
    audit::query,
    daemon::{proto::AuditQuery, DEFAULT_AUDIT_LOG, DEFAULT_SOCKET},
};

#[derive(Args)]
pub struct AuditArgs {
    /// The JSON Lines audit log.
    #[arg(long, env = "MCPGUARD_AUDIT_LOG", default_value = DEFAULT_AUDIT_LOG)]
    log: PathBuf,
    /// Only records of this server (policy `name`).
    #[arg(long)]
    server: Option<String>,
    /// Only records of this kind (exec, fork, exit, open, connect, launch, server_exit, loss, daemon, ...).
    #[arg(long)]
    kind: Option<String>,
    /// Only denials.
    #[arg(long)]
    denied: bool,
    /// Only one MCP tool: its calls, and the exec/open/connect records that
    /// happened while a call of it was in flight.
    #[arg(long)]
    tool: Option<String>,
    /// Only records since a time: a duration ago ("10m", "2h") or RFC 3339.
    #[arg(long)]
    since: Option<String>,
    /// Keep printing records as they are written.
    #[arg(long, short)]
    follow: bool,
    /// Print the raw JSON lines.
    #[arg(long)]
    json: bool,
    /// The daemon's socket: a user who cannot read the log gets their own
    /// servers' records from the daemon (from its log, whatever --log says).
    #[arg(long, env = "MCPGUARD_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: std::path::PathBuf,
}

pub fn main(args: AuditArgs) -> ExitCode {
    let since = match args
        .since
        .as_deref()
        .map(query::Filter::parse_since)
        .transpose()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcpguard audit: {e}");
            return ExitCode::from(2);
        }
    };
    let ask_daemon = AuditQuery {
        server: args.server.clone(),
        kind: args.kind.clone(),
        denied: args.denied,
        tool: args.tool.clone(),
        since: since.map(crate::audit::format_ts),
        follow: args.follow,
    };
    let filter = query::Filter {
        server: args.server,
        kind: args.kind,
        denied: args.denied,
        tool: args.tool,
        since,
    };
    let stdout = std::io::stdout();
    let color = stdout.is_terminal();
    let mut out = stdout.lock();
    match query::run(&args.log, &filter, args.follow, args.json, color, &mut out) {
        Ok(_) => ExitCode::SUCCESS,
        // The log is root's; the daemon serves users their own records.
        Err(query::QueryError::PermissionDenied { .. }) if !nix::unistd::geteuid().is_root() => {
            drop(out);
            super::status::audit(&args.socket, ask_daemon, args.json)
        }
        Err(e) => {
            eprintln!("mcpguard audit: {e}");
            ExitCode::FAILURE
        }
    }
}
