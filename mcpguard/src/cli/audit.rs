//! `mcpguard audit`: review the audit trail.

use std::{
    io::{self, IsTerminal},
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::Args;

use super::status::{self, ViaDaemon};
use crate::{
    audit::query::{self, Clock, QueryError, View},
    daemon::{DEFAULT_AUDIT_LOG, DEFAULT_SOCKET},
};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: Option<super::audit_verify::AuditCommand>,
    /// The JSON Lines audit log to read. Without it a user asks the daemon
    /// (which knows its log) for their own records, and root reads
    /// /var/log/mcpguard/audit.jsonl.
    #[arg(long, env = "MCPGUARD_AUDIT_LOG")]
    log: Option<PathBuf>,
    #[command(flatten)]
    filter: query::Filter,
    /// Print the raw JSON lines (with --calls: one JSON summary per call).
    #[arg(long)]
    json: bool,
    /// One summary per tool call: its result, the files it read and
    /// wrote, the programs it ran, the hosts and names it reached, its
    /// denials.
    #[arg(long, conflicts_with = "follow")]
    calls: bool,
    /// Show times in UTC (default: local time; --json is always UTC).
    #[arg(long)]
    utc: bool,
    /// The daemon's socket: a user gets their own servers' records from the
    /// daemon (from its log, whatever --log says).
    #[arg(long, env = "MCPGUARD_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

/// How a run failed: usage errors exit 2, like clap's.
enum Failure {
    Usage(String),
    Other(String),
}

impl From<QueryError> for Failure {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Unknown { .. } | QueryError::BadSince { .. } => {
                Failure::Usage(e.to_string())
            }
            other => Failure::Other(other.to_string()),
        }
    }
}

impl From<ViaDaemon> for Failure {
    fn from(e: ViaDaemon) -> Self {
        match e {
            ViaDaemon::Usage(m) => Failure::Usage(m),
            ViaDaemon::Unreachable(m) | ViaDaemon::Failed(m) => Failure::Other(m),
        }
    }
}

pub fn main(args: AuditArgs) -> ExitCode {
    if let Some(command) = args.command {
        return super::audit_verify::main(command);
    }
    let result = prepare(&args).and_then(|(filter, view)| read(&args, &filter, &view));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("mcpguard audit: {}", crate::term::escape(&message));
            ExitCode::from(2)
        }
        Err(Failure::Other(message)) => {
            eprintln!("mcpguard audit: {}", crate::term::escape(&message));
            ExitCode::FAILURE
        }
    }
}

/// The filter as sent (`--since` read once, `--kind` checked) and the view.
fn prepare(args: &AuditArgs) -> Result<(query::Filter, View), Failure> {
    let mut filter = args.filter.clone();
    filter.resolve_since()?;
    filter.matcher()?;
    filter.in_call = args.calls;
    let clock = if args.utc {
        Clock::utc()
    } else {
        Clock::local().unwrap_or_else(|why| {
            eprintln!("mcpguard audit: {why}; showing UTC");
            Clock::utc()
        })
    };
    let view = View {
        json: args.json,
        color: io::stdout().is_terminal(),
        clock,
        calls: args.calls,
    };
    Ok((filter, view))
}

/// From the log or from the daemon, as the caller and `--log` say.
fn read(args: &AuditArgs, filter: &query::Filter, view: &View) -> Result<(), Failure> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let root = nix::unistd::geteuid().is_root();
    let default = Path::new(DEFAULT_AUDIT_LOG);
    let Some(log) = &args.log else {
        if root {
            return local(default, filter, view, &mut out).map_err(|e| missing(e, args));
        }
        // A user: the daemon knows its log and serves their own records.
        return match status::audit(&args.socket, filter, view, &mut out) {
            Err(ViaDaemon::Unreachable(why)) => local(default, filter, view, &mut out)
                .map_err(|e| Failure::Other(format!("{why}; and reading the log: {e}"))),
            other => other.map_err(Failure::from),
        };
    };
    match local(log, filter, view, &mut out) {
        // The log is root's; the daemon serves users their own records.
        Err(QueryError::PermissionDenied { .. }) if !root => {
            status::audit(&args.socket, filter, view, &mut out).map_err(|e| match e {
                ViaDaemon::Unreachable(why) => Failure::Other(format!(
                    "you cannot read the audit log, and asking the daemon for your own \
                     records failed: {why}"
                )),
                other => other.into(),
            })
        }
        other => other.map_err(Failure::from),
    }
}

fn local(
    log: &Path,
    filter: &query::Filter,
    view: &View,
    out: &mut impl io::Write,
) -> Result<(), QueryError> {
    query::run(log, filter, view, out).map(drop)
}

/// Root without `--log` and no log at the default path: say where the
/// daemon writes, if it answers.
fn missing(e: QueryError, args: &AuditArgs) -> Failure {
    let QueryError::NotFound { path } = &e else {
        return e.into();
    };
    let hint = match status::status(&args.socket).ok().and_then(|r| r.audit_log) {
        Some(a) if Path::new(&a.path) != path => {
            format!(" (the running daemon writes {}: --log {})", a.path, a.path)
        }
        _ => String::new(),
    };
    Failure::Other(format!("{e}{hint}"))
}
