//! `mcpguard run --policy P -- CMD...`: the client an MCP client starts in
//! place of the server. It hands its stdio to the daemon, forwards signals,
//! and exits with the server's status. It prints nothing but errors and
//! calls that wait for a person (see [`notify`]), on stderr, prefixed
//! `mcpguard:`.

use std::{
    os::{fd::RawFd, unix::net::UnixStream},
    path::{Path, PathBuf},
    process::ExitCode,
};

use nix::sys::signal::SigSet;

use super::notify;
use crate::{
    daemon::proto::{self, Request, Response},
    policy::{self, Policy},
};

/// Exit status when the server could not be launched (as a shell does for a
/// command that cannot execute).
const LAUNCH_FAILED: u8 = 126;

pub fn main(policy_arg: &str, socket: &Path, argv: Vec<String>) -> ExitCode {
    match run(policy_arg, socket, argv) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("mcpguard: {}", crate::term::escape(&message));
            ExitCode::from(LAUNCH_FAILED)
        }
    }
}

pub fn home() -> PathBuf {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn run(policy_arg: &str, socket: &Path, argv: Vec<String>) -> Result<ExitCode, String> {
    let dev_dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"));
    let path = policy::resolve(policy_arg, &home(), Some(dev_dir)).map_err(|e| e.to_string())?;
    // Read and check the policy as the calling user: errors surface here
    // with file:line:col before anything is launched. The daemon parses the
    // same text again; it trusts nothing from this side.
    let policy_text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read policy {}: {e}", path.display()))?;
    let policy = Policy::parse(&policy_text, &path).map_err(|e| e.to_string())?;
    // A runner command (`npx -y pkg`) the policy pinned starts the
    // installed copy instead.
    let argv = policy
        .command
        .resolve(&policy.name, argv, &home())
        .map_err(|e| e.to_string())?;
    launch(&path, policy_text, socket, argv, false, &mut |_, _| {})
}

/// What a learning run hands back: the proposed policy and notes.
pub type OnLearned<'a> = dyn FnMut(String, Vec<String>) + 'a;

/// Hand stdio and the launch request to the daemon, forward signals, and
/// wait for the server's exit status. With `learn`, the daemon enforces
/// nothing and sends a proposed policy to `on_learned` before the status.
pub fn launch(
    path: &Path,
    policy_text: String,
    socket: &Path,
    argv: Vec<String>,
    learn: bool,
    on_learned: &mut OnLearned<'_>,
) -> Result<ExitCode, String> {
    let how = How {
        stdio: [0, 1, 2],
        learn,
        forward_signals: true,
    };
    launch_with(path, policy_text, socket, argv, how, on_learned).map(|status| match status {
        Status::Code(c) => ExitCode::from(c as u8),
        Status::Signal(s) => ExitCode::from(128u8.wrapping_add(s as u8)),
        Status::Unknown => ExitCode::FAILURE,
    })
}

/// How [`launch_with`] starts a server.
#[derive(Clone, Copy, Debug)]
pub struct How {
    /// The server's stdin, stdout and stderr.
    pub stdio: [RawFd; 3],
    pub learn: bool,
    /// Forward SIGINT/SIGTERM/... to the server (a stand-in for the
    /// server does; a one-off command run by another subcommand does not,
    /// so Ctrl-C stops that subcommand, and with it the command).
    pub forward_signals: bool,
}

/// How a launched server ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Code(i32),
    Signal(i32),
    Unknown,
}

/// [`launch`] with the server's stdio and signal handling chosen.
pub fn launch_with(
    path: &Path,
    policy_text: String,
    socket: &Path,
    argv: Vec<String>,
    how: How,
    on_learned: &mut OnLearned<'_>,
) -> Result<Status, String> {
    launch_events(path, policy_text, socket, argv, how, &mut |event| {
        if let Event::Learned { policy, notes } = event {
            on_learned(policy, notes);
        }
    })
}

/// What the daemon tells a launching client before the exit status.
#[derive(Debug)]
pub enum Event {
    /// The server runs: its launch id (what its audit records carry).
    Started { launch: String },
    /// A learning run's proposed policy and notes.
    Learned { policy: String, notes: Vec<String> },
}

/// [`launch_with`], handing every [`Event`] to `on_event`.
pub fn launch_events(
    path: &Path,
    policy_text: String,
    socket: &Path,
    argv: Vec<String>,
    how: How,
    on_event: &mut dyn FnMut(Event),
) -> Result<Status, String> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the mcpguard daemon at {}: {e} (is `mcpguard daemon` running? --socket or MCPGUARD_SOCKET select another)",
            socket.display()
        )
    })?;
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/".into());
    let sent = proto::send_fds(&stream, &how.stdio).and_then(|()| {
        proto::write_frame(
            &mut &stream,
            &Request::Launch {
                version: proto::VERSION,
                request: proto::LaunchRequest {
                    policy_path: path.display().to_string(),
                    policy_text,
                    argv,
                    cwd,
                    env: std::env::vars().collect(),
                    learn: how.learn,
                },
            },
        )
    });
    if let Err(error) = sent {
        // The daemon may have refused us before reading the request (and
        // closed the socket): its reason beats our broken pipe.
        return Err(match proto::read_frame::<Response>(&mut &stream) {
            Ok(Some(Response::Error { message })) => message,
            _ => error.to_string(),
        });
    }

    if how.forward_signals {
        forward_signals(&stream)?;
    }

    loop {
        match proto::read_frame::<Response>(&mut &stream) {
            Ok(Some(Response::Started { launch, .. })) => {
                on_event(Event::Started { launch });
            }
            Ok(Some(Response::Learned { policy, notes })) => {
                on_event(Event::Learned { policy, notes });
            }
            Ok(Some(Response::Approval {
                approval,
                tool,
                why,
                timeout_secs,
            })) => notify::held(approval, &tool, why, timeout_secs),
            Ok(Some(Response::Error { message })) => return Err(message),
            Ok(Some(Response::Exited { code, signal })) => {
                return Ok(match (code, signal) {
                    (Some(c), _) => Status::Code(c),
                    (None, Some(s)) => Status::Signal(s),
                    (None, None) => Status::Unknown,
                });
            }
            // Answers to queries; never sent on a launch connection.
            Ok(Some(other)) => return Err(format!("unexpected answer from the daemon: {other:?}")),
            Ok(None) => {
                return Err("the daemon closed the connection before the server exited".into())
            }
            Err(e) => return Err(format!("talking to the daemon: {e}")),
        }
    }
}

/// Sends the signals `mcpguard run` receives on to the server, from a
/// thread of their own.
fn forward_signals(stream: &UnixStream) -> Result<(), String> {
    // Block the forwarded signals before any thread exists, so only the
    // forwarding thread receives them.
    let mut set = SigSet::empty();
    for sig in proto::FORWARDED_SIGNALS {
        set.add(*sig);
    }
    set.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    let fwd = stream.try_clone().map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let Ok(sig) = set.wait() else { return };
            if proto::write_frame(&mut &fwd, &Request::Signal { signal: sig as i32 }).is_err() {
                return;
            }
        })
        .map_err(|e| e.to_string())?;

    Ok(())
}
