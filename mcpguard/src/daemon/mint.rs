//! Minting short-lived credentials: a `[secrets]` entry `{ mint = "NAME" }`
//! gets a fresh value for every launch from a helper the administrator
//! installed in the daemon's minters directory (default
//! `/etc/mcpguard/minters`), run by the daemon as root, never by the server.
//!
//! The policy comes from the user, the helper from root, so a helper name
//! is a plain file name looked up only in `users/<user>/NAME`, then `NAME`,
//! of that directory; the helper must be a regular executable file owned by
//! root and not writable by group or others, in directories only root can
//! write, reached without symlinks. It runs with an empty environment but
//! for the `MCPGUARD_*` variables below (and a fixed `PATH`), stdin from
//! `/dev/null`, cwd `/`, in its own process group, for at most
//! [`MINT_TIMEOUT`]; what it prints on stdout (one trailing newline
//! trimmed) is the value. Its stderr may hold the value too: it is never
//! logged unredacted. Errors name the variable and the helper, never the
//! value.

use std::{
    fs::File,
    io::Read,
    os::{
        fd::{AsFd, OwnedFd},
        unix::{fs::MetadataExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::{
        signal::{killpg, Signal},
        wait::{waitid, Id, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};
use thiserror::Error;
use tracing::{info, warn};

use super::secrets::{root_only_dirs, BadDir, MAX_SECRET_BYTES};
use crate::mcp::redact::{Redactor, MIN_SECRET_LEN};

/// Where minting helpers live unless the daemon is told otherwise.
pub const DEFAULT_MINTERS_DIR: &str = "/etc/mcpguard/minters";
/// How long a helper may run before it is killed and the launch refused.
pub const MINT_TIMEOUT: Duration = Duration::from_secs(10);
/// The helper's `PATH` (the daemon's own is not passed on).
pub const HELPER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How much of a helper's stderr is kept (for the daemon's log, redacted).
const MAX_STDERR_BYTES: usize = 4096;

#[derive(Debug, Error)]
pub enum MintError {
    #[error(
        "secret {env}: no minting helper {helper:?} in the daemon's minters directory {} \
         (nor in its users/<you>/)", dir.display()
    )]
    NotFound {
        env: String,
        helper: String,
        dir: PathBuf,
    },
    #[error("secret {env}: minting helper {}: {source}", path.display())]
    Io {
        env: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "secret {env}: minting helper {} must be a regular executable file owned by root, \
         not writable by group or others, reached without symlinks", path.display()
    )]
    Unsafe { env: String, path: PathBuf },
    #[error(
        "secret {env}: minting helper {}: directory {} must be owned by root and writable \
         only by root", path.display(), dir.display()
    )]
    UnsafeDir {
        env: String,
        path: PathBuf,
        dir: PathBuf,
    },
    #[error("secret {env}: minting helper {helper:?} did not start: {source}")]
    Spawn {
        env: String,
        helper: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "secret {env}: minting helper {helper:?} failed ({status}); its stderr is in the \
         daemon's log, redacted"
    )]
    Failed {
        env: String,
        helper: String,
        status: String,
    },
    #[error(
        "secret {env}: minting helper {helper:?} did not finish within {}s and was killed",
        MINT_TIMEOUT.as_secs()
    )]
    Timeout { env: String, helper: String },
    #[error("secret {env}: minting helper {helper:?} printed more than {MAX_SECRET_BYTES} bytes")]
    TooLarge { env: String, helper: String },
    #[error(
        "secret {env}: minting helper {helper:?} printed fewer than {MIN_SECRET_LEN} bytes, \
         too short to redact reliably"
    )]
    TooShort { env: String, helper: String },
    #[error(
        "secret {env}: minting helper {helper:?} printed a NUL byte, which no environment \
         variable can hold"
    )]
    Nul { env: String, helper: String },
}

/// Who a credential is minted for: the helper sees these as `MCPGUARD_USER`,
/// `MCPGUARD_UID`, `MCPGUARD_SERVER` and `MCPGUARD_LAUNCH`.
pub struct MintFor<'a> {
    pub user: &'a str,
    pub uid: u32,
    /// The policy's `name`.
    pub server: &'a str,
    /// The launch id (`time-3`).
    pub launch: &'a str,
}

/// One `[secrets]` entry to mint: `MCPGUARD_ENV`, the helper's name, and
/// `MCPGUARD_TTL_SECS`.
pub struct MintAsk<'a> {
    pub env: &'a str,
    pub helper: &'a str,
    pub ttl_secs: u64,
}

/// A minted credential. No `Debug`: the value must not reach a log.
pub struct Minted {
    /// The helper that minted it.
    pub path: PathBuf,
    /// When it stops being valid: the helper's start plus the lifetime.
    pub expires_at: SystemTime,
    pub value: Vec<u8>,
}

/// Where minting helpers come from, as configured on the daemon.
pub struct Minters {
    pub dir: PathBuf,
}

impl Minters {
    /// Run `ask`'s helper for `to` and return its credential.
    pub fn mint(&self, ask: &MintAsk<'_>, to: &MintFor<'_>) -> Result<Minted, MintError> {
        let path = self.find(ask, to.user)?;
        let started = SystemTime::now();
        let captured = run(&path, ask, to)?;
        let value = checked_value(ask, captured)?;
        info!(
            env = ask.env,
            helper = %path.display(),
            launch = to.launch,
            ttl_secs = ask.ttl_secs,
            "secret minted"
        );
        Ok(Minted {
            path,
            expires_at: started + Duration::from_secs(ask.ttl_secs),
            value,
        })
    }

    /// The user's own helper of that name, else the shared one; checked.
    fn find(&self, ask: &MintAsk<'_>, user: &str) -> Result<PathBuf, MintError> {
        let io = |path: &Path, source| MintError::Io {
            env: ask.env.to_owned(),
            path: path.to_owned(),
            source,
        };
        let dir = self.dir.canonicalize().map_err(|e| io(&self.dir, e))?;
        let own = is_plain_name(user).then(|| dir.join("users").join(user).join(ask.helper));
        for path in own.into_iter().chain([dir.join(ask.helper)]) {
            match std::fs::symlink_metadata(&path) {
                Ok(_) => return checked_helper(ask.env, path, &dir),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path, e)),
            }
        }
        Err(MintError::NotFound {
            env: ask.env.to_owned(),
            helper: ask.helper.to_owned(),
            dir: self.dir.clone(),
        })
    }
}

/// A user name that is a single path component.
fn is_plain_name(user: &str) -> bool {
    !user.is_empty() && !user.contains('/') && user != "." && user != ".."
}

/// `path` (below the resolved minters directory `dir`) is root's own
/// executable, and no symlink or loose directory leads to it.
fn checked_helper(env: &str, path: PathBuf, dir: &Path) -> Result<PathBuf, MintError> {
    let io = |source| MintError::Io {
        env: env.to_owned(),
        path: path.clone(),
        source,
    };
    let unsafe_helper = || MintError::Unsafe {
        env: env.to_owned(),
        path: path.clone(),
    };
    if path.canonicalize().map_err(io)? != path {
        return Err(unsafe_helper());
    }
    let meta = std::fs::symlink_metadata(&path).map_err(io)?;
    if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o022 != 0 || meta.mode() & 0o100 == 0 {
        return Err(unsafe_helper());
    }
    root_only_dirs(&path, dir).map_err(|bad| match bad {
        BadDir::Io(_, e) => io(e),
        BadDir::Unsafe(bad) => MintError::UnsafeDir {
            env: env.to_owned(),
            path: path.clone(),
            dir: bad,
        },
    })?;
    Ok(path)
}

/// What a helper printed, within bounds.
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs the helper to its end within [`MINT_TIMEOUT`]; its process group
/// is killed on every way out, so nothing it started stays behind.
fn run(path: &Path, ask: &MintAsk<'_>, to: &MintFor<'_>) -> Result<Captured, MintError> {
    let (env, helper) = (ask.env.to_owned(), ask.helper.to_owned());
    let mut child = command(path, ask, to)
        .spawn()
        .map_err(|source| MintError::Spawn {
            env: env.clone(),
            helper: helper.clone(),
            source,
        })?;
    let deadline = Instant::now() + MINT_TIMEOUT;
    let outcome =
        capture(&mut child, deadline).and_then(|c| wait_until(&child, deadline).map(|()| c));
    // The group's leader is not reaped yet, so the group id is still its.
    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let status = child.wait();
    let failed = |status: String| MintError::Failed {
        env: env.clone(),
        helper: helper.clone(),
        status,
    };
    match outcome {
        Err(Late::Timeout) => Err(MintError::Timeout { env, helper }),
        Err(Late::TooLarge) => Err(MintError::TooLarge { env, helper }),
        Err(Late::Io(e)) => Err(failed(format!("reading its output: {e}"))),
        Ok(captured) => match status {
            Ok(s) if s.success() => Ok(captured),
            Ok(s) => {
                log_stderr(ask, &captured, "minting helper failed");
                Err(failed(s.to_string()))
            }
            Err(e) => Err(failed(format!("waiting for it: {e}"))),
        },
    }
}

/// The helper's command: nothing of the daemon's environment, only what
/// the helper contract names.
fn command(path: &Path, ask: &MintAsk<'_>, to: &MintFor<'_>) -> Command {
    let mut cmd = Command::new(path);
    cmd.env_clear()
        .env("PATH", HELPER_PATH)
        .env("MCPGUARD_USER", to.user)
        .env("MCPGUARD_UID", to.uid.to_string())
        .env("MCPGUARD_SERVER", to.server)
        .env("MCPGUARD_LAUNCH", to.launch)
        .env("MCPGUARD_ENV", ask.env)
        .env("MCPGUARD_TTL_SECS", ask.ttl_secs.to_string())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd
}

/// Why reading a helper's output stopped early.
enum Late {
    Timeout,
    TooLarge,
    Io(std::io::Error),
}

/// Reads stdout and stderr until both close: stdout up to
/// [`MAX_SECRET_BYTES`] (more is an error), stderr's first
/// [`MAX_STDERR_BYTES`] (the rest is read and dropped).
fn capture(child: &mut Child, deadline: Instant) -> Result<Captured, Late> {
    let mut pipes = [
        (
            child.stdout.take().map(|p| File::from(OwnedFd::from(p))),
            Vec::new(),
        ),
        (
            child.stderr.take().map(|p| File::from(OwnedFd::from(p))),
            Vec::new(),
        ),
    ];
    let mut chunk = [0u8; 4096];
    while pipes.iter().any(|(f, _)| f.is_some()) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Late::Timeout);
        }
        let ready = wait_readable(&pipes, left).map_err(Late::Io)?;
        for (i, (file, buf)) in pipes.iter_mut().enumerate() {
            let Some(f) = file.as_mut().filter(|_| ready[i]) else {
                continue;
            };
            match f.read(&mut chunk) {
                Ok(0) => *file = None,
                Ok(n) if i == 0 => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() as u64 > MAX_SECRET_BYTES {
                        return Err(Late::TooLarge);
                    }
                }
                Ok(n) => {
                    let room = MAX_STDERR_BYTES.saturating_sub(buf.len());
                    buf.extend_from_slice(&chunk[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Late::Io(e)),
            }
        }
    }
    let [(_, stdout), (_, stderr)] = pipes;
    Ok(Captured { stdout, stderr })
}

/// Which of the open pipes have something to read (or hung up), waiting
/// at most `left`.
fn wait_readable(
    pipes: &[(Option<File>, Vec<u8>); 2],
    left: Duration,
) -> std::io::Result<[bool; 2]> {
    let open: Vec<usize> = (0..2).filter(|&i| pipes[i].0.is_some()).collect();
    let mut fds: Vec<PollFd> = open
        .iter()
        .filter_map(|&i| pipes[i].0.as_ref())
        .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
        .collect();
    let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    let mut ready = [false; 2];
    for (slot, fd) in open.iter().zip(&fds) {
        ready[*slot] = fd.revents().is_some_and(|r| !r.is_empty());
    }
    Ok(ready)
}

/// Waits, without reaping, for the helper to exit by the deadline.
fn wait_until(child: &Child, deadline: Instant) -> Result<(), Late> {
    let pid = Pid::from_raw(child.id() as i32);
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(_) => return Ok(()),
            Err(e) => return Err(Late::Io(e.into())),
        }
        if Instant::now() >= deadline {
            return Err(Late::Timeout);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The credential in what the helper printed: one trailing newline
/// trimmed, within bounds.
fn checked_value(ask: &MintAsk<'_>, captured: Captured) -> Result<Vec<u8>, MintError> {
    let (env, helper) = (ask.env.to_owned(), ask.helper.to_owned());
    let mut value = captured.stdout.clone();
    if value.last() == Some(&b'\n') {
        value.pop();
        if value.last() == Some(&b'\r') {
            value.pop();
        }
    }
    if value.len() < MIN_SECRET_LEN {
        log_stderr(ask, &captured, "minting helper printed too little");
        return Err(MintError::TooShort { env, helper });
    }
    if value.contains(&0) {
        return Err(MintError::Nul { env, helper });
    }
    let redact = Captured {
        stdout: value.clone(),
        stderr: captured.stderr,
    };
    log_stderr(ask, &redact, "minting helper's stderr");
    Ok(value)
}

/// The helper's stderr in the daemon's log, with what it printed on
/// stdout (the credential, or part of it) and credential shapes redacted.
fn log_stderr(ask: &MintAsk<'_>, captured: &Captured, message: &str) {
    if captured.stderr.is_empty() {
        return;
    }
    let stdout = captured.stdout.trim_ascii_end();
    let redactor = if stdout.len() >= MIN_SECRET_LEN {
        Redactor::new(&[(ask.env.to_owned(), stdout.to_vec())])
    } else {
        Redactor::new(&[])
    };
    let text = String::from_utf8_lossy(&captured.stderr);
    let stderr = redactor.text(&text, &mut Default::default());
    warn!(env = ask.env, helper = ask.helper, stderr = %stderr.trim_end(), "{message}");
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt};

    use super::*;

    fn minters(tag: &str) -> (Minters, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("mcpguard-minters-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("users/alice")).unwrap();
        for d in [&dir, &dir.join("users"), &dir.join("users/alice")] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        (Minters { dir: dir.clone() }, dir)
    }

    fn helper(path: &Path, script: &str, mode: u32) {
        fs::write(path, format!("#!/bin/sh\n{script}\n")).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mint(m: &Minters, name: &str, user: &str) -> Result<Minted, MintError> {
        let ask = MintAsk {
            env: "TOKEN",
            helper: name,
            ttl_secs: 120,
        };
        let to = MintFor {
            user,
            uid: 1000,
            server: "gh",
            launch: "gh-7",
        };
        m.mint(&ask, &to)
    }

    #[test]
    fn a_helper_gets_the_contract_and_its_output_is_the_value() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "run as root (cargo xtask test)"
        );
        let (m, dir) = minters("contract");
        helper(
            &dir.join("env"),
            "echo \"$MCPGUARD_USER:$MCPGUARD_UID:$MCPGUARD_SERVER:$MCPGUARD_LAUNCH:$MCPGUARD_ENV:$MCPGUARD_TTL_SECS:$(pwd):$HOME\"",
            0o755,
        );
        helper(&dir.join("users/alice/env"), "echo alice-own-helper", 0o700);
        let before = SystemTime::now();
        let got = mint(&m, "env", "bob").unwrap();
        assert_eq!(got.value, b"bob:1000:gh:gh-7:TOKEN:120:/:");
        assert_eq!(got.path, dir.canonicalize().unwrap().join("env"));
        assert!(got.expires_at >= before + Duration::from_secs(120));
        assert_eq!(mint(&m, "env", "alice").unwrap().value, b"alice-own-helper");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unsafe_or_failing_helpers_are_refused_without_the_value() {
        let (m, dir) = minters("refused");
        helper(&dir.join("loose"), "echo loose-token-123", 0o775);
        helper(&dir.join("noexec"), "echo noexec-token-123", 0o644);
        helper(&dir.join("fails"), "echo failing-token-123; exit 3", 0o755);
        helper(&dir.join("short"), "echo abc", 0o755);
        helper(
            &dir.join("huge"),
            "head -c 10000 /dev/zero | tr '\\0' a",
            0o755,
        );
        std::os::unix::fs::symlink("/usr/bin/env", dir.join("link")).unwrap();
        let err = |name| mint(&m, name, "bob").err().expect("refused");
        assert!(matches!(err("loose"), MintError::Unsafe { .. }));
        assert!(matches!(err("noexec"), MintError::Unsafe { .. }));
        assert!(matches!(err("link"), MintError::Unsafe { .. }));
        assert!(matches!(err("missing"), MintError::NotFound { .. }));
        assert!(matches!(err("short"), MintError::TooShort { .. }));
        assert!(matches!(err("huge"), MintError::TooLarge { .. }));
        let failed = err("fails");
        assert!(matches!(failed, MintError::Failed { .. }));
        let msg = failed.to_string();
        assert!(
            msg.contains("TOKEN") && msg.contains("\"fails\"") && msg.contains("3"),
            "{msg}"
        );
        assert!(!msg.contains("failing-token-123"), "{msg}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        helper(&dir.join("ok"), "echo fine-token-789", 0o755);
        assert!(matches!(err("ok"), MintError::UnsafeDir { .. }));
        fs::remove_dir_all(&dir).unwrap();
    }
}
