//! `mcpguard policy learn | check | explain`: getting a policy right.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::Subcommand;

use super::run;
use crate::{
    daemon::DEFAULT_SOCKET,
    policy::{self, mcp::Permit, OnTaint, Policy, SecretSource, SocketKind, ToolChange},
    wrap::starter::shell_word,
};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Run a server with nothing enforced and everything recorded, then
    /// write a least-privilege policy from what it did.
    Learn {
        /// Name of the policy to learn (also the server name). An existing
        /// policy of that name supplies `[env]` and `[secrets]`.
        #[arg(long)]
        policy: String,
        /// Where to write the proposal (default:
        /// ~/.config/mcpguard/policies/<name>.toml, or <name>.learned.toml
        /// beside it if that exists).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, env = "MCPGUARD_SOCKET", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// The server command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Validate a policy file; errors name file:line:col. Warns (on
    /// stderr) about single-file rules on files tools usually replace.
    Check { file: PathBuf },
    /// Say in plain words what a policy lets a server do.
    Explain { file: PathBuf },
}

pub fn main(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Learn {
            policy,
            out,
            socket,
            command,
        } => learn(&policy, out, &socket, command),
        PolicyCommand::Check { file } => match Policy::load(&file) {
            Ok(p) => {
                println!("{}: ok (server {:?})", file.display(), p.name);
                for w in policy::learn::replaced_file_warnings(&p) {
                    eprintln!("mcpguard: warning: {}: {w}", file.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mcpguard: {e}");
                ExitCode::FAILURE
            }
        },
        PolicyCommand::Explain { file } => match Policy::load(&file) {
            Ok(p) => {
                print!("{}", crate::term::escape_lines(&explain(&p)));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mcpguard: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn learn(name: &str, out: Option<PathBuf>, socket: &Path, argv: Vec<String>) -> ExitCode {
    let home = run::home();
    let dev_dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"));
    // Start from the existing policy of that name, for its env and secrets;
    // otherwise from nothing but the usual environment.
    let (path, text) = match policy::resolve(name, &home, Some(dev_dir)) {
        Ok(p) => match std::fs::read_to_string(&p) {
            Ok(t) => (p, t),
            Err(e) => {
                eprintln!("mcpguard: cannot read policy {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        Err(policy::PolicyError::NotFound { .. }) => (
            PathBuf::from(format!("{name}.toml")),
            format!("name = {name:?}\n[env]\npass = [\"PATH\", \"HOME\", \"LANG\"]\n"),
        ),
        Err(e) => {
            eprintln!("mcpguard: {e}");
            return ExitCode::from(2);
        }
    };
    // `--policy` may be a path: the proposal is named by the policy's name.
    let name = match Policy::parse(&text, &path) {
        Ok(p) => p.name,
        Err(e) => {
            eprintln!("mcpguard: {e}");
            return ExitCode::from(2);
        }
    };
    let name = name.as_str();
    eprintln!("mcpguard: learning {name}: nothing is enforced in this run; everything is recorded");
    let mut learned = None;
    let status = match run::launch(&path, text, socket, argv, true, &mut |p, n| {
        learned = Some((p, n))
    }) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("mcpguard: {}", crate::term::escape(&message));
            return ExitCode::from(126);
        }
    };
    let Some((proposal, notes)) = learned else {
        eprintln!("mcpguard: the daemon sent no proposal");
        return ExitCode::FAILURE;
    };
    let default = home
        .join(".config/mcpguard/policies")
        .join(format!("{name}.toml"));
    let out = out.unwrap_or_else(|| {
        if default.exists() {
            default.with_file_name(format!("{name}.learned.toml"))
        } else {
            default.clone()
        }
    });
    // stdout is the server's JSON-RPC channel (learn stands in for the
    // server command in a client's config): everything else goes to stderr.
    if let Err(e) = write_proposal(&out, &proposal) {
        eprintln!(
            "mcpguard: cannot write {}: {e}; the proposal follows",
            out.display()
        );
        eprint!("{}", crate::term::escape_lines(&proposal));
        return ExitCode::FAILURE;
    }
    for n in notes {
        eprintln!("mcpguard: note: {}", crate::term::escape(&n));
    }
    eprintln!("mcpguard: {}", summary(name, &proposal, &out));
    eprintln!("mcpguard: {}", adopt_command(&out, &default));
    status
}

/// The shell command that puts the proposal in place and checks it.
fn adopt_command(out: &Path, default: &Path) -> String {
    let word = |p: &Path| shell_word(&p.display().to_string());
    let check = format!("mcpguard policy check {}", word(default));
    if out == default {
        return format!("review it: {check}");
    }
    let mkdir = match default.parent() {
        Some(dir) if !dir.exists() => format!("mkdir -p {} && ", word(dir)),
        _ => String::new(),
    };
    format!(
        "adopt it: {mkdir}mv {} {} && {check}",
        word(out),
        word(default)
    )
}

fn write_proposal(out: &Path, proposal: &str) -> std::io::Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, proposal)
}

/// One line saying what the proposal grants and where it is.
fn summary(name: &str, proposal: &str, out: &Path) -> String {
    match Policy::parse(proposal, out) {
        Ok(p) => {
            let tools = p.tools.allow.as_ref().map_or(0, Vec::len);
            let called = proposal.matches(", # called").count();
            format!(
                "learned {name}: {} read, {} write, {} exec, {} network rules, {tools} tools \
                 ({called} called); wrote {}",
                p.filesystem.read.len(),
                p.filesystem.write.len(),
                p.filesystem.exec.len(),
                p.network.allow.len() + p.network.hosts.len(),
                out.display()
            )
        }
        Err(e) => format!(
            "learned {name}, wrote {} (it does not parse: {e})",
            out.display()
        ),
    }
}

/// A policy in plain words.
pub fn explain(p: &Policy) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Server {:?} ({}):", p.name, p.source.display());
    explain_files(&mut s, p);
    explain_network(&mut s, p);
    explain_identity(&mut s, p);
    explain_tools(&mut s, p);
    s
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".to_string()
    } else {
        items.join(", ")
    }
}

/// `[filesystem]`: what the server may read, write and execute.
fn explain_files(s: &mut String, p: &Policy) {
    let _ = writeln!(s, "- may read: {}", list(&p.filesystem.read));
    if p.filesystem.baseline {
        let _ = writeln!(
            s,
            "- may also read the runtime baseline: {}, and its own cgroup's limits \
             (`baseline = false` turns this off)",
            crate::policy::baseline::READ.join(", ")
        );
    }
    let _ = writeln!(s, "- may write: {}", list(&p.filesystem.write));
    if !p.filesystem.write.is_empty() {
        let allowed: Vec<String> = (p.filesystem.allow_persistence.iter())
            .map(ToString::to_string)
            .collect();
        let _ = writeln!(
            s,
            "- inside those, code other tools run later (git hooks and config, .vscode, .idea, \
             .envrc, .mcp.json, .cursor, .claude) is read-only where it exists, except: {}",
            list(&allowed)
        );
    }
    let _ = writeln!(s, "- may execute: {}", list(&p.filesystem.exec));
    let _ = writeln!(s, "- every other file is off limits (Landlock)");
    let _ = writeln!(
        s,
        "- sees everything but the write grants read-only: no chmod, chown, \
         timestamps, xattrs, truncate or mknod elsewhere (EROFS)"
    );
}

/// `[network]`: where it may connect, what resolves, what it may listen on.
fn explain_network(s: &mut String, p: &Policy) {
    let mut dest: Vec<String> = p.network.allow.iter().map(|r| r.text.clone()).collect();
    dest.extend(
        p.network
            .hosts
            .iter()
            .map(|h| format!("{} (by name)", h.text)),
    );
    let _ = writeln!(s, "- may connect or send to: {}", list(&dest));
    for tool in p.tools.call_net.tools() {
        let rules = p.tools.call_net.get(tool).map(|r| r.texts());
        let _ = writeln!(
            s,
            "- and only while a call to `{tool}` is in flight: {}",
            list(&rules.unwrap_or_default())
        );
    }
    let _ = writeln!(
        s,
        "- DNS: every lookup goes to mcpguard's resolver; {}",
        if p.network.hosts.is_empty() {
            "no name resolves".to_string()
        } else if p.network.allow_local_answers {
            "only the names above resolve, and their answers may open loopback and link-local addresses".to_string()
        } else {
            "only the names above resolve; answers pointing at this host or a cloud metadata endpoint open nothing".to_string()
        }
    );
    let binds: Vec<String> = p.network.bind.iter().map(|b| b.to_string()).collect();
    let _ = writeln!(s, "- may listen on TCP ports: {}", list(&binds));
    let _ = writeln!(
        s,
        "- sees /run, /tmp, /var/tmp and /dev/shm empty except: {}",
        list(&p.network.unix)
    );
    if !p.network.sockets.is_empty() {
        let kinds: Vec<String> = p
            .network
            .sockets
            .iter()
            .map(|k| match k {
                SocketKind::Raw => "raw".to_string(),
                SocketKind::Icmp => "ICMP".to_string(),
                SocketKind::Netlink => "netlink (every protocol)".to_string(),
                other => other.to_string(),
            })
            .collect();
        let _ = writeln!(s, "- may open {} sockets", kinds.join(" and "));
    }
}

/// What it runs with: environment, secrets, groups and resource limits.
fn explain_identity(s: &mut String, p: &Policy) {
    let _ = writeln!(
        s,
        "- gets these environment variables: {}",
        list(&p.env.pass)
    );
    for secret in &p.secrets {
        let from = match &secret.source {
            SecretSource::File(f) => format!("file {}", f.display()),
            SecretSource::Credential(c) => format!("systemd credential {c}"),
            SecretSource::Mint { helper, ttl_secs } => format!(
                "helper {helper}, minted afresh for each launch (lifetime {})",
                humantime::format_duration(std::time::Duration::from_secs(*ttl_secs))
            ),
        };
        let _ = writeln!(
            s,
            "- gets secret {} from {from}, redacted from everything it sends back",
            secret.env
        );
    }
    let _ = writeln!(
        s,
        "- keeps supplementary groups: {}",
        list(&p.identity.groups)
    );
    let _ = writeln!(
        s,
        "- may run at most {} tasks (processes and threads) and use at most {} of memory, \
         without swap{}; hitting either is recorded (`limit` records)",
        p.limits.pids,
        crate::policy::limits::show_size(p.limits.memory),
        if p.limits == crate::policy::Limits::default() {
            " (the defaults)"
        } else {
            ""
        }
    );
}

/// `[tools]` and `[mcp]`: what the client may see and call, what the
/// server may ask.
fn explain_tools(s: &mut String, p: &Policy) {
    match &p.tools.allow {
        Some(a) => {
            let _ = writeln!(s, "- tools the client may see and call: {}", list(a));
        }
        None => {
            let _ = writeln!(s, "- every tool is allowed unless denied below");
        }
    }
    if !p.tools.deny.is_empty() {
        let _ = writeln!(s, "- tools refused: {}", list(&p.tools.deny));
    }
    let _ = writeln!(
        s,
        "- a tool that changes after its first use is {}",
        match p.tools.on_tool_change {
            ToolChange::Warn => "reported",
            ToolChange::Block => "reported, hidden and refused",
        }
    );
    if !p.tools.ask.is_empty() {
        let _ = writeln!(
            s,
            "- calls that wait for your approval (in the client, or `mcpguard approve`), \
             refused after {} s: {}",
            p.tools.ask_timeout.as_secs(),
            list(&p.tools.ask)
        );
    }
    let acting = match &p.tools.taint_tools {
        Some(t) => list(t),
        None => "every tool the server does not mark read-only".into(),
    };
    let _ = writeln!(
        s,
        "- after a tool result or server request carries instructions aimed at the model, \
         calls to {acting} {} until you `mcpguard clear` the session",
        match p.tools.on_taint {
            OnTaint::Ask => "wait for your approval",
            OnTaint::Deny => "are refused",
            OnTaint::Warn => "are only recorded (on_taint = \"warn\")",
        }
    );
    let _ = writeln!(
        s,
        "- the server may ask the client's model for a completion (sampling): {}",
        permit(p.mcp.sampling)
    );
    let _ = writeln!(
        s,
        "- the server may ask the user for input (elicitation): {}",
        permit(p.mcp.elicitation)
    );
}

fn permit(p: Permit) -> &'static str {
    match p {
        Permit::Allow => "yes (recorded and checked for injection text)",
        Permit::Deny => "no (the daemon refuses it; recorded)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopt_command_moves_into_place_and_checks_quoting_odd_paths() {
        let default = Path::new("/nonexistent-home/.config/mcpguard/policies/git.toml");
        assert_eq!(
            adopt_command(Path::new("/tmp/my dir/git.toml"), default),
            "adopt it: mkdir -p /nonexistent-home/.config/mcpguard/policies && \
             mv '/tmp/my dir/git.toml' /nonexistent-home/.config/mcpguard/policies/git.toml && \
             mcpguard policy check /nonexistent-home/.config/mcpguard/policies/git.toml"
        );
        assert_eq!(
            adopt_command(default, default),
            "review it: mcpguard policy check /nonexistent-home/.config/mcpguard/policies/git.toml"
        );
    }

    #[test]
    fn explain_names_each_tools_per_call_rules() {
        let text = "name = \"f\"\n[tools.fetch]\nnetwork = [\"*:443\", \"10.0.0.0/8:80\"]\n";
        let p = Policy::parse(text, Path::new("f.toml")).unwrap();
        let shown = explain(&p);
        assert!(
            shown.contains("- may connect or send to: nothing\n")
                && shown.contains(
                    "- and only while a call to `fetch` is in flight: 10.0.0.0/8:80, *:443\n"
                ),
            "{shown}"
        );
    }
}
