//! `mcpguard wrap` and `mcpguard unwrap`: rewrite MCP client config files
//! so every stdio server starts through `mcpguard run`, and back. The work
//! is in [`crate::wrap`]; this file parses arguments and reports, with
//! problems on stderr prefixed `mcpguard:`.
//!
//! Exit status: 0 when every file was handled, 1 when one failed, 2 for a
//! usage error (every file's format is settled before anything is written).

use std::{fmt::Write as _, fs::File, os::fd::AsRawFd, path::PathBuf, process::ExitCode, rc::Rc};

use clap::Args;

use super::run;
use crate::{
    daemon::DEFAULT_SOCKET,
    launch::sandbox::probe_landlock_abi,
    wrap::{self, Action, Client, FileReport, Guarded, Why, WrapConfig, WrapError, CLIENT_NAMES},
};

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
    /// Leave runner commands (`npx -y PKG`, `uvx PKG`, ...) unpinned: their
    /// starter policies let the runner reach its registry and write its
    /// cache at every start. By default wrap installs each such package
    /// once, pinned, through the daemon, and the server runs that copy.
    #[arg(long)]
    no_install: bool,
    /// The daemon's socket, through which installs run guarded.
    #[arg(long, env = "MCPGUARD_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// On a kernel whose Landlock lacks signal and abstract-socket scoping
    /// (before Linux 6.12), accept running without them: the policies wrap
    /// writes get `[kernel] accept_weaker`. Without it wrap stops there.
    #[arg(long)]
    accept_weaker: bool,
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

#[derive(Args)]
pub struct UpdateArgs {
    /// The daemon's socket, through which installs run guarded.
    #[arg(long, env = "MCPGUARD_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// As for wrap: the installs' policies accept the guarantees this
    /// kernel lacks.
    #[arg(long)]
    accept_weaker: bool,
    /// Pinned policies to update, by name or path (default: every pinned
    /// policy in ~/.config/mcpguard/policies).
    #[arg(value_name = "POLICY")]
    policies: Vec<String>,
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
    let Some(accept_weaker) = kernel_gate(args.accept_weaker) else {
        return FAILURE;
    };
    let policy_dir = match args.policy_dir.map(|d| std::path::absolute(&d)).transpose() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("mcpguard: --policy-dir: {e}");
            return USAGE;
        }
    };
    let installer: Option<Rc<dyn Guarded>> = if args.no_install {
        None
    } else if nix::unistd::geteuid().is_root() {
        // The daemon launches nothing for root, and an install for another
        // user's config must run as that user.
        eprintln!(
            "mcpguard: running as root: runner commands are left unpinned; run `mcpguard wrap` \
             as the user whose config it is to pin them"
        );
        None
    } else {
        Some(Rc::new(ThroughDaemon {
            socket: args.socket.clone(),
        }))
    };
    let cfg = WrapConfig {
        client: args.client,
        mcpguard,
        policy_dir,
        home: None,
        dry_run: args.dry_run,
        installer,
        accept_weaker,
    };
    let mut status = 0;
    for path in &args.files {
        match wrap::wrap_file(path, &cfg) {
            Ok(report) => {
                print!("{}", describe(&report, true, args.dry_run));
                print!("{}", describe_policies(&report, args.dry_run));
            }
            Err(e) => status = status.max(fail(&e)),
        }
    }
    status
}

pub fn update_main(args: UpdateArgs) -> ExitCode {
    let home = run::home();
    let paths: Vec<PathBuf> = if args.policies.is_empty() {
        pinned_policies(&home.join(".config/mcpguard/policies"))
    } else {
        let mut paths = Vec::new();
        for p in &args.policies {
            match crate::policy::resolve(p, &home, None) {
                Ok(path) => paths.push(path),
                Err(e) => {
                    eprintln!("mcpguard: {e}");
                    return ExitCode::from(USAGE);
                }
            }
        }
        paths
    };
    if paths.is_empty() {
        println!("no pinned servers to update");
        return ExitCode::SUCCESS;
    }
    let Some(accept_weaker) = kernel_gate(args.accept_weaker) else {
        return ExitCode::from(FAILURE);
    };
    let guard = ThroughDaemon {
        socket: args.socket,
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let path_var = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let host = wrap::Host {
        home: &home,
        path: &path_var,
        env: &env,
        accept_weaker: &accept_weaker,
    };
    let mut status = 0;
    for path in &paths {
        match wrap::update::update(path, &host, &guard) {
            Ok(u) if u.before.as_deref() == Some(u.after.as_str()) => {
                println!("{}: {} (unchanged)", u.path.display(), u.after);
            }
            Ok(u) => println!(
                "{}: {} -> {}",
                u.path.display(),
                u.before.as_deref().unwrap_or("(unrecorded)"),
                u.after
            ),
            Err(e) => {
                eprintln!("mcpguard: {e}");
                status = FAILURE;
            }
        }
    }
    ExitCode::from(status)
}

/// The policies in `dir` that carry a pinned install.
fn pinned_policies(dir: &std::path::Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter(|p| crate::policy::Policy::load(p).is_ok_and(|policy| policy.command.pin.is_some()))
        .collect();
    paths.sort();
    paths
}

/// Runs package installs through the daemon, guarded, with their output
/// on wrap's stderr.
#[derive(Debug)]
struct ThroughDaemon {
    socket: PathBuf,
}

impl Guarded for ThroughDaemon {
    fn run(&self, policy_name: &str, policy_text: &str, argv: &[String]) -> Result<i32, String> {
        eprintln!(
            "mcpguard: {policy_name}: running `{}` guarded",
            argv.iter()
                .map(|w| wrap::starter::shell_word(w))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let devnull = File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
        let how = run::How {
            stdio: [devnull.as_raw_fd(), 2, 2],
            learn: false,
            forward_signals: false,
        };
        let label = PathBuf::from(format!("mcpguard-wrap:{policy_name}"));
        match run::launch_with(
            &label,
            policy_text.to_owned(),
            &self.socket,
            argv.to_vec(),
            how,
            &mut |_, _| {},
        )? {
            run::Status::Code(c) => Ok(c),
            run::Status::Signal(s) => Err(format!("`{}` was killed by signal {s}", argv[0])),
            run::Status::Unknown => Err(format!("`{}` ended without a status", argv[0])),
        }
    }
}

/// One line per wrapped server: the policy it uses and why, what was
/// pinned, and what its command line was granted.
fn describe_policies(report: &FileReport, dry_run: bool) -> String {
    let mut out = String::new();
    let width = report
        .choices
        .iter()
        .map(|c| c.server.len())
        .max()
        .unwrap_or(0);
    for c in &report.choices {
        let path = c.path.display();
        let why = match &c.why {
            Why::Yours => format!("uses your policy {path}"),
            Why::InstalledFits => {
                format!("uses the installed policy {path} (it says it fits this command)")
            }
            Why::PinMismatch { pinned, given } => format!(
                "uses {path}, which pins `{pinned}`; this entry runs `{given}`, which \
                 `mcpguard run` refuses: put the entry's words in the policy's [command] \
                 runner and run `mcpguard update {}`, or remove the policy and wrap again",
                c.policy
            ),
            Why::Broken { message } => format!("uses {path}, which does not parse: {message}"),
            Why::Starter { shadows } => {
                let verb = if dry_run { "would write" } else { "wrote" };
                let mut line = format!("{verb} starter policy {path}");
                if let Some(other) = shadows {
                    let _ = write!(
                        line,
                        " (the installed {} is written for another launch layout; yours takes precedence)",
                        other.display()
                    );
                }
                line
            }
        };
        let _ = writeln!(out, "  {:width$}  {why}", c.server);
        let Some(s) = report.starters.iter().find(|s| s.policy == c.policy) else {
            continue;
        };
        let pad = " ".repeat(width + 4);
        match (&s.pinned, dry_run) {
            (Some(p), false) => {
                let _ = writeln!(
                    out,
                    "{pad}pinned {p}, installed guarded; `mcpguard run` starts that copy"
                );
            }
            (Some(p), true) => {
                let _ = writeln!(out, "{pad}would install {p}, pinned");
            }
            (None, _) if s.unpinned => {
                let _ = writeln!(
                    out,
                    "{pad}NOT pinned: the runner fetches from its registry at every start"
                );
            }
            _ => {}
        }
        for (dir, missing) in &s.data {
            let made = match (missing, dry_run) {
                (true, false) => " (created)",
                (true, true) => " (would be created)",
                _ => "",
            };
            let _ = writeln!(out, "{pad}grants {dir}{made}: named in its command line");
        }
        for (rule, why) in &s.network {
            let _ = writeln!(out, "{pad}allows {rule}: {why}");
        }
        for note in &s.notes {
            let _ = writeln!(out, "{pad}note: {note}");
        }
    }
    out
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

/// The guarantees this kernel lacks that the written policies accept
/// (`--accept-weaker`); `None`, with the reason on stderr, when it lacks
/// some and the flag was not given.
fn kernel_gate(accept: bool) -> Option<Vec<crate::kernel::coverage::Class>> {
    wrap::kernel::gate(probe_landlock_abi(), accept)
        .map_err(|e| eprintln!("mcpguard: {e}"))
        .ok()
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
            no_install: true,
            socket: DEFAULT_SOCKET.into(),
            accept_weaker: false,
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
