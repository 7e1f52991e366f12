//! `mcpguard wrap` and `mcpguard unwrap`: rewrite MCP client config files
//! so every stdio server starts through `mcpguard run`, and back. The work
//! is in [`crate::wrap`]; this file parses arguments and reports, with
//! problems on stderr prefixed `mcpguard:`.
//!
//! Exit status: 0 when every file was handled, 1 when one failed, 2 for a
//! usage error (every file's format is settled before anything is written).

use std::{fmt::Write as _, path::PathBuf, process::ExitCode};

use clap::Args;

use crate::wrap::{self, Action, Client, FileReport, WrapConfig, WrapError, CLIENT_NAMES};

const USAGE: u8 = 2;
const FAILURE: u8 = 1;

#[derive(Args)]
pub struct WrapArgs {
    /// Config format: claude-desktop, claude-code, cursor or vscode (default:
    /// judged from the file name).
    #[arg(long, value_name = "CLIENT", value_parser = parse_client)]
    client: Option<Client>,
    /// Print the changes as a diff; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// The mcpguard binary the configs should start (default: this one).
    #[arg(long, value_name = "PATH")]
    mcpguard: Option<PathBuf>,
    /// Look for and write starter policies here instead of
    /// ~/.config/mcpguard/policies. Configs name them by path unless `mcpguard
    /// run` searches this directory.
    #[arg(long, value_name = "DIR")]
    policy_dir: Option<PathBuf>,
    /// MCP client config files, e.g. ~/.config/Claude/claude_desktop_config.json,
    /// ~/.claude.json, .mcp.json, ~/.cursor/mcp.json, .vscode/mcp.json.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

#[derive(Args)]
pub struct UnwrapArgs {
    /// Config format (default: judged from the file name).
    #[arg(long, value_name = "CLIENT", value_parser = parse_client)]
    client: Option<Client>,
    /// Print the changes as a diff; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// MCP client config files.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

fn parse_client(s: &str) -> Result<Client, String> {
    s.parse()
        .map_err(|_| format!("expected one of: {CLIENT_NAMES}"))
}

pub fn wrap_main(args: WrapArgs) -> ExitCode {
    ExitCode::from(run_wrap(args))
}

pub fn unwrap_main(args: UnwrapArgs) -> ExitCode {
    ExitCode::from(run_unwrap(args))
}

fn run_wrap(args: WrapArgs) -> u8 {
    if let Some(code) = check_formats(&args.files, args.client) {
        return code;
    }
    let mcpguard = match args.mcpguard {
        Some(path) => match path.to_str() {
            Some(p) => p.to_owned(),
            None => {
                eprintln!("mcpguard: --mcpguard {}: not valid UTF-8", path.display());
                return USAGE;
            }
        },
        None => match wrap::current_mcpguard() {
            Ok(p) => p,
            Err(e) => return fail(&e),
        },
    };
    let policy_dir = match args.policy_dir.map(|d| std::path::absolute(&d)).transpose() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("mcpguard: --policy-dir: {e}");
            return USAGE;
        }
    };
    let cfg = WrapConfig {
        client: args.client,
        mcpguard,
        policy_dir,
        home: None,
        dry_run: args.dry_run,
    };
    let mut status = 0;
    let mut starters = Vec::new();
    for path in &args.files {
        match wrap::wrap_file(path, &cfg) {
            Ok(report) => {
                print!("{}", describe(&report, true, args.dry_run));
                starters.extend(report.starters);
            }
            Err(e) => status = status.max(fail(&e)),
        }
    }
    if !starters.is_empty() {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{} policies for these servers. They deny the network and nearly all files:\n\
             edit each one to allow what its server needs (or learn it later).",
            if args.dry_run {
                "Would write starter"
            } else {
                "Wrote starter"
            }
        );
        let width = starters.iter().map(|s| s.server.len()).max().unwrap_or(0);
        for s in &starters {
            let _ = writeln!(out, "  {:width$}  {}", s.server, s.path.display());
        }
        print!("{out}");
    }
    status
}

fn run_unwrap(args: UnwrapArgs) -> u8 {
    if let Some(code) = check_formats(&args.files, args.client) {
        return code;
    }
    // Only to recognise wrapped entries whose command is this binary under
    // another name; any command named `mcpguard` is recognised anyway.
    let this = wrap::current_mcpguard().unwrap_or_default();
    let mut status = 0;
    for path in &args.files {
        match wrap::unwrap_file(path, args.client, &this, args.dry_run) {
            Ok(report) => print!("{}", describe(&report, false, args.dry_run)),
            Err(e) => status = status.max(fail(&e)),
        }
    }
    status
}

/// Settles every file's format before any file is touched, so a usage
/// error leaves everything as it was.
fn check_formats(files: &[PathBuf], client: Option<Client>) -> Option<u8> {
    let mut status = None;
    for path in files {
        if let Err(e) = wrap::client_for(path, client) {
            status = Some(fail(&e));
        }
    }
    status
}

fn fail(e: &WrapError) -> u8 {
    eprintln!("mcpguard: {e}");
    if e.is_usage() {
        USAGE
    } else {
        FAILURE
    }
}

/// The report for one file: notes on stderr for servers left alone, the
/// diff (dry run) and a summary line returned for stdout.
fn describe(report: &FileReport, wrapping: bool, dry_run: bool) -> String {
    let path = report.path.display();
    let mut done = Vec::new();
    for s in &report.servers {
        let name = qualified(&s.table, &s.name);
        let note = match &s.action {
            Action::Wrapped { .. } | Action::Unwrapped => {
                done.push(name);
                continue;
            }
            Action::Remote => "left as is: remote server",
            Action::NoCommand => "left as is: no command",
            Action::AlreadyWrapped => "left as is: already runs through mcpguard",
            Action::UnknownWrapping => "left as is: runs mcpguard, but not as `run ... -- COMMAND`",
            Action::NotWrapped => continue,
        };
        eprintln!("mcpguard: {path}: {name}: {note}");
    }
    let mut out = report.diff.clone();
    let verb = match (wrapping, dry_run) {
        (true, false) => "wrapped",
        (true, true) => "would wrap",
        (false, false) => "unwrapped",
        (false, true) => "would unwrap",
    };
    if done.is_empty() {
        let _ = writeln!(out, "{path}: nothing to change");
    } else {
        let _ = writeln!(out, "{path}: {verb} {}", done.join(", "));
    }
    if let Some(backup) = &report.backup {
        let _ = writeln!(out, "{path}: original kept in {}", backup.display());
    }
    out
}

/// A server's name for messages, with its project for `~/.claude.json`'s
/// per-project servers.
fn qualified(table: &str, name: &str) -> String {
    match table.strip_prefix("projects.") {
        Some(rest) => {
            let project = rest.rsplit_once('.').map_or(rest, |(p, _)| p);
            format!("{name} (project {project})")
        }
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_format_is_a_usage_error_and_touches_nothing() {
        let dir = std::env::temp_dir().join(format!("mcpguard-cli-wrap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(".cursor")).expect("mkdir");
        let known = dir.join(".cursor/mcp.json");
        let text = r#"{"mcpServers": {"t": {"command": "srv"}}}"#;
        std::fs::write(&known, text).expect("write");
        let unknown = dir.join("other.json");
        std::fs::write(&unknown, "{}").expect("write");
        let args = WrapArgs {
            client: None,
            dry_run: false,
            mcpguard: Some("/usr/local/bin/mcpguard".into()),
            policy_dir: Some(dir.join("policies")),
            files: vec![known.clone(), unknown],
        };
        assert_eq!(run_wrap(args), USAGE);
        assert_eq!(std::fs::read_to_string(&known).expect("read"), text);

        let args = UnwrapArgs {
            client: None,
            dry_run: false,
            files: vec![dir.join("missing/.mcp.json")],
        };
        assert_eq!(run_unwrap(args), FAILURE);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn project_servers_are_named_with_their_project() {
        assert_eq!(
            qualified("projects.\"/home/me/app\".mcpServers", "db"),
            "db (project \"/home/me/app\")"
        );
        assert_eq!(qualified("mcpServers", "db"), "db");
    }

    #[test]
    fn client_names_parse() {
        assert_eq!(parse_client("vscode"), Ok(Client::VsCode));
        assert!(parse_client("zed").is_err_and(|e| e.contains("claude-desktop")));
    }
}
