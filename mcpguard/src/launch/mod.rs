//! From "the daemon decided to launch a server" to "the server's first
//! instruction runs confined".
//!
//! The daemon is a multi-threaded tokio process, so it never does real work
//! between `fork` and `exec`. [`spawn`] instead re-executes the mcpguard
//! binary as `mcpguard __exec-server` with the server's stdio and a control
//! socket at fd 3. That helper ([`helper_main`]) is single-threaded and starts
//! as root; it
//!
//! 1. reads the [`LaunchSpec`] from fd 3 (u32 little-endian length + JSON),
//! 2. joins the server's cgroup (whose eBPF policy entry the daemon has
//!    already installed, so there is no unguarded window),
//! 3. builds the private mount namespace ([`mounts`]) and the Landlock
//!    ruleset ([`sandbox::prepare`]) while still root, opening every path
//!    the user named (policy lists, `[network] unix`, the working
//!    directory) with the user's credentials ([`reach`]), so root's reach
//!    never becomes the server's,
//! 4. drops to the caller's uid/gid/groups and verifies it cannot regain root,
//!    then sets `no_new_privs`,
//! 5. enforces Landlock,
//! 6. changes to the server's cwd as the user and resolves the program,
//!    then installs the syscall fence ([`seccomp`]), forks the
//!    persistence fence's executor ([`persist_fence`]) and installs the
//!    socket fence ([`notify`], which also traps name-creating
//!    calls for that executor) last, so nothing before them is refused,
//! 7. writes a status line to fd 3 (with the socket fence's listener
//!    attached), marks fd 3 close-on-exec and `execve`s the server with
//!    exactly the spec's environment.
//!
//! The daemon reads the status line, then waits for EOF on its end of the
//! socket: EOF means the `execve` succeeded (fd 3 closed on exec); a second
//! line means it failed. Every helper failure is reported as one JSON line
//! naming the step and the cause.

pub mod cgroup;
mod helper;
pub mod limits;
pub mod mount_api;
pub mod mounts;
pub mod notify;
pub mod persist;
pub mod persist_fence;
pub mod reach;
pub mod ro_view;
pub mod sandbox;
pub mod seccomp;

use std::{
    io::{self, Write},
    os::{
        fd::{AsRawFd, OwnedFd, RawFd},
        unix::{net::UnixStream, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

pub use helper::helper_main;
pub use sandbox::{
    probe_landlock_abi, Enforcement, LandlockReport, PortRestriction, SandboxError, SkippedPath,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{debug, warn};

use crate::{ipc, policy::sockets::SocketRules};

/// Hidden subcommand that runs [`helper_main`]; main.rs must dispatch it
/// before any other setup (no tokio runtime, no logging to stdout).
pub const HELPER_SUBCOMMAND: &str = "__exec-server";

/// Where the helper finds its control socket.
pub const CONTROL_FD: RawFd = 3;

/// Largest encoded [`LaunchSpec`] the helper accepts.
pub const MAX_SPEC_LEN: usize = 1 << 20;

/// How long [`spawn`] waits for the helper to report and exec.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Helper exit code when a step before `execve` failed.
pub const EXIT_SETUP_FAILED: i32 = 126;

/// Helper exit code when `execve` itself failed.
pub const EXIT_EXEC_FAILED: i32 = 127;

/// Longest status line the daemon reads from a helper.
const MAX_REPLY_LEN: usize = 1 << 20;

/// Everything the helper needs to start one server; the wire format between
/// daemon and helper.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct LaunchSpec {
    /// Program and arguments; `argv[0]` without `/` is looked up in the
    /// `PATH` of `env`.
    pub argv: Vec<String>,
    /// The server's complete environment (nothing else is passed).
    pub env: Vec<(String, String)>,
    /// Absolute working directory, entered as the user.
    pub cwd: PathBuf,
    /// Caller's uid (never 0).
    pub uid: u32,
    /// Caller's primary gid.
    pub gid: u32,
    /// Caller's supplementary groups.
    pub groups: Vec<u32>,
    /// Absolute path of the server's (already created) cgroup directory.
    pub cgroup: PathBuf,
    /// Cgroups in v1 hierarchies (hybrid systems) that carry the server's
    /// resource limits; joined before `cgroup`.
    #[serde(default)]
    pub limit_cgroups: Vec<PathBuf>,
    /// Landlock allow-lists.
    pub sandbox: SandboxSpec,
    /// The private mount namespace (Unix socket fence); `None` leaves the
    /// server in the daemon's namespace.
    #[serde(default)]
    pub mounts: Option<mounts::MountSpec>,
    /// Persistence paths in the write grants bound read-only in that
    /// namespace ([`persist`]); needs `mounts`.
    #[serde(default)]
    pub persist: Option<persist::PersistSpec>,
    /// Kernel interfaces the syscall fence lets through (`[kernel] allow`).
    /// Learning mode installs no fence.
    #[serde(default)]
    pub kernel_allow: Vec<crate::policy::KernelFeature>,
    /// The socket fence ([`notify`]); `None` installs none.
    #[serde(default)]
    pub sockets: Option<SocketRules>,
}

/// A server that is running: its process, what the helper reported, and
/// the listener of its socket fence (when the spec asked for one).
pub struct Launched {
    pub child: Child,
    pub status: LaunchStatus,
    pub socket_fence: Option<notify::Listener>,
    /// The persistence fence's executor (its calls come through the
    /// socket fence's listener).
    pub executor: Option<std::os::unix::net::UnixDatagram>,
}

/// Landlock allow-lists of one server, already expanded (`~` resolved).
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct SandboxSpec {
    /// Readable hierarchies.
    pub read: Vec<PathBuf>,
    /// Readable and writable hierarchies.
    pub write: Vec<PathBuf>,
    /// Readable and executable hierarchies.
    pub exec: Vec<PathBuf>,
    /// Allowed TCP connect ports, inclusive ranges. `None` leaves TCP
    /// connect to the eBPF layer (which sees addresses and audits every
    /// decision); `Some(vec![])` denies every TCP connect in Landlock too.
    #[serde(default)]
    pub connect_tcp: Option<Vec<(u16, u16)>>,
    /// Allowed TCP bind ports, inclusive ranges. `None` leaves binds to
    /// the eBPF layer (TCP and UDP, every refusal recorded); `Some(vec![])`
    /// denies every TCP bind in Landlock too.
    #[serde(default)]
    pub bind_tcp: Option<Vec<(u16, u16)>>,
    /// Refuse to launch unless Landlock confines the filesystem. The
    /// filesystem rules are applied either way; this only decides whether a
    /// kernel without Landlock is fatal.
    pub require_fs: bool,
    /// Learning mode (`mcpguard policy learn`): apply no Landlock rules at
    /// all, so everything the server touches can be observed.
    #[serde(default)]
    pub learn: bool,
}

/// What the helper reports once the server is about to be exec'd.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LaunchStatus {
    /// Absolute path that was exec'd.
    pub exe: PathBuf,
    /// The server's pid (the helper's pid, kept across exec).
    pub pid: u32,
    /// Verified real/effective/saved uid.
    pub uid: u32,
    /// Verified real/effective/saved gid.
    pub gid: u32,
    /// Verified supplementary groups, sorted.
    pub groups: Vec<u32>,
    /// Cgroup the server runs in.
    pub cgroup: PathBuf,
    /// What Landlock achieved.
    pub landlock: LandlockReport,
    /// Which runtime directories the server sees empty, and what was kept.
    #[serde(default)]
    pub mounts: Option<mounts::MountReport>,
    /// Persistence paths bound read-only in the write grants.
    #[serde(default)]
    pub persist: Option<persist::PersistReport>,
    /// The syscall fence; `None` in learning mode.
    #[serde(default)]
    pub seccomp: Option<seccomp::FenceReport>,
    /// Every fd the server starts with (the control socket is
    /// close-on-exec and not counted): stdio, and nothing of the daemon's.
    #[serde(default)]
    pub fds: Vec<i32>,
}

/// The helper step that failed.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading or decoding the spec from fd 3.
    ReadSpec,
    /// The spec is unacceptable (e.g. uid 0).
    ValidateSpec,
    /// Leaving the daemon's session.
    Session,
    /// Joining the server's cgroup.
    Cgroup,
    /// The private mount namespace.
    Mounts,
    /// Building or enforcing Landlock.
    Landlock,
    /// Dropping to the caller's identity.
    Privileges,
    /// Entering the working directory.
    Chdir,
    /// Finding the program.
    Resolve,
    /// Installing the syscall fence or the socket fence.
    Seccomp,
    /// Writing the status line.
    Report,
    /// `execve` itself.
    Exec,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::ReadSpec => "read spec",
            Self::ValidateSpec => "validate spec",
            Self::Session => "session",
            Self::Cgroup => "cgroup",
            Self::Mounts => "mounts",
            Self::Landlock => "landlock",
            Self::Privileges => "privileges",
            Self::Chdir => "chdir",
            Self::Resolve => "resolve program",
            Self::Seccomp => "seccomp",
            Self::Report => "report",
            Self::Exec => "exec",
        };
        f.write_str(name)
    }
}

/// Daemon-side launch failures.
#[derive(Debug, Error)]
pub enum LaunchError {
    /// The spec could not be serialized.
    #[error("cannot encode launch spec: {source}")]
    Encode {
        /// Underlying error.
        source: serde_json::Error,
    },
    /// The spec is larger than the helper accepts.
    #[error("launch spec is {len} bytes, more than the {MAX_SPEC_LEN} the helper accepts")]
    SpecTooLarge {
        /// Encoded size.
        len: usize,
    },
    /// The control socketpair could not be created.
    #[error("cannot create control socket for the launch helper: {source}")]
    Socket {
        /// Underlying error.
        source: io::Error,
    },
    /// The helper process could not be started.
    #[error("cannot start launch helper {exe} {HELPER_SUBCOMMAND}: {source}")]
    Spawn {
        /// Helper binary.
        exe: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// Talking to the helper over the control socket failed.
    #[error("control socket to the launch helper failed while {doing}: {source}")]
    Control {
        /// What we were doing.
        doing: &'static str,
        /// Underlying error.
        source: io::Error,
    },
    /// The helper did not finish in time (it was killed).
    #[error("launch helper did not {waiting_for} within {timeout:?}; killed it")]
    Timeout {
        /// What we were waiting for.
        waiting_for: &'static str,
        /// The deadline.
        timeout: Duration,
    },
    /// The helper exited without reporting.
    #[error("launch helper exited ({status}) without reporting a status")]
    HelperDied {
        /// Its exit status.
        status: ExitStatus,
    },
    /// The helper sent something that is not a status line.
    #[error("launch helper sent an unreadable status line {line:?}: {source}")]
    BadReply {
        /// The line (truncated to 200 bytes).
        line: String,
        /// Decode error.
        source: serde_json::Error,
    },
    /// The helper reported a failure.
    #[error("launch failed at step `{stage}`: {message}")]
    Helper {
        /// Failed step.
        stage: Stage,
        /// The helper's message.
        message: String,
    },
}

// ---------------------------------------------------------------------------
// Wire format

/// Failure line: `{"ok":false,"stage":"cgroup","error":"cannot join cgroup ..."}`.
#[derive(Serialize, Deserialize)]
struct ErrReply {
    ok: bool,
    stage: Stage,
    error: String,
}

/// Frames a spec for the helper ([`ipc::encode_frame`]).
fn encode_spec(spec: &LaunchSpec) -> Result<Vec<u8>, LaunchError> {
    ipc::encode_frame(spec, MAX_SPEC_LEN).map_err(|e| match e {
        ipc::FrameError::Json(source) => LaunchError::Encode { source },
        ipc::FrameError::TooLarge { len } => LaunchError::SpecTooLarge { len },
        other => unreachable!("encoding does no I/O: {other}"),
    })
}

/// Decodes one helper line: the status, or the helper's failure.
fn parse_reply(line: &[u8]) -> Result<LaunchStatus, LaunchError> {
    let bad = |source| LaunchError::BadReply {
        line: String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(line).map_err(bad)?;
    if value.get("ok") == Some(&serde_json::Value::Bool(true)) {
        serde_json::from_value(value).map_err(bad)
    } else {
        let reply: ErrReply = serde_json::from_value(value).map_err(bad)?;
        Err(LaunchError::Helper {
            stage: reply.stage,
            message: reply.error,
        })
    }
}

// ---------------------------------------------------------------------------
// Daemon side

/// Starts the helper `exe` (normally `/proc/self/exe`) for `spec` with the
/// given stdio, sends the spec and waits (at most [`LAUNCH_TIMEOUT`]) until
/// the server has been exec'd. Blocking: call it from `spawn_blocking`.
///
/// On success the returned child's pid is the server's pid. On failure the
/// helper has been reaped and nothing runs.
pub fn spawn(
    spec: &LaunchSpec,
    exe: &Path,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<Launched, LaunchError> {
    let frame = encode_spec(spec)?;
    let (mut control, helper_end) =
        UnixStream::pair().map_err(|source| LaunchError::Socket { source })?;
    let helper_raw = helper_end.as_raw_fd();

    let mut command = Command::new(exe);
    command
        .arg(HELPER_SUBCOMMAND)
        .env_clear()
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    // SAFETY: the closure runs between fork and exec in a copy of a
    // multi-threaded process, so it only makes async-signal-safe calls
    // (dup2, fcntl), does not allocate and touches no locks.
    unsafe {
        command.pre_exec(move || place_control_fd(helper_raw));
    }
    let spawned = command.spawn();
    // The Command still holds the server's stdio ends and our copy of the
    // helper's socket end; drop both so EOF and pipe closure propagate.
    drop(command);
    drop(helper_end);
    let mut child = spawned.map_err(|source| LaunchError::Spawn {
        exe: exe.to_owned(),
        source,
    })?;
    let argv0 = spec.argv.first().map_or("", String::as_str);
    // No credential on a command line reaches the daemon's log.
    let argv0 = crate::mcp::redact::Redactor::shapes_only().text(argv0, &mut Default::default());
    debug!(helper_pid = child.id(), %argv0, "launch helper started");

    let deadline = Instant::now() + LAUNCH_TIMEOUT;
    match converse(&mut control, &frame, deadline, &mut child) {
        Ok((status, fds)) => {
            let persist = (status.persist.as_ref()).is_some_and(|p| p.executor.is_some());
            let expected = usize::from(spec.sockets.is_some()) + usize::from(persist);
            if fds.len() != expected {
                reap_failed_helper(&mut child, deadline);
                return Err(LaunchError::Helper {
                    stage: Stage::Seccomp,
                    message: format!("the helper sent {} fence fds, not {expected}", fds.len()),
                });
            }
            let mut fds = fds.into_iter();
            let socket_fence = (spec.sockets.is_some())
                .then(|| fds.next().map(notify::Listener::new))
                .flatten();
            let executor = fds.next().map(std::os::unix::net::UnixDatagram::from);
            Ok(Launched {
                child,
                status,
                socket_fence,
                executor,
            })
        }
        Err(error) => {
            reap_failed_helper(&mut child, deadline);
            Err(error)
        }
    }
}

/// Puts the helper's socket end at fd 3 without close-on-exec.
fn place_control_fd(fd: RawFd) -> io::Result<()> {
    if fd == CONTROL_FD {
        // dup2 onto itself would keep FD_CLOEXEC; clear it explicitly.
        // SAFETY: fcntl on an fd we own; async-signal-safe.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
    } else {
        // SAFETY: dup2 is async-signal-safe; the new descriptor does not
        // inherit FD_CLOEXEC.
        if unsafe { libc::dup2(fd, CONTROL_FD) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends the spec, reads the status line (and the socket fence's listener
/// sent with it), then waits for EOF (exec done) or a failure line (exec
/// failed).
fn converse(
    control: &mut UnixStream,
    frame: &[u8],
    deadline: Instant,
    child: &mut Child,
) -> Result<(LaunchStatus, Vec<OwnedFd>), LaunchError> {
    control
        .set_write_timeout(Some(LAUNCH_TIMEOUT))
        .map_err(|source| LaunchError::Control {
            doing: "configuring it",
            source,
        })?;
    if let Err(source) = control.write_all(frame) {
        // A helper that died early closes its end: report how it died.
        if let Some(status) = wait_until(child, deadline) {
            return Err(LaunchError::HelperDied { status });
        }
        return Err(LaunchError::Control {
            doing: "sending the launch spec",
            source,
        });
    }

    let mut buffer = Vec::new();
    let mut fds = Vec::new();
    let Some(line) = read_line(control, &mut buffer, &mut fds, deadline, "report a status")? else {
        return match wait_until(child, deadline) {
            Some(status) => Err(LaunchError::HelperDied { status }),
            None => Err(LaunchError::Timeout {
                waiting_for: "exit after closing its control socket",
                timeout: LAUNCH_TIMEOUT,
            }),
        };
    };
    let status = parse_reply(&line)?;
    match read_line(control, &mut buffer, &mut fds, deadline, "exec the server")? {
        None => Ok((status, fds)),
        Some(line) => match parse_reply(&line) {
            // Only a failure can follow the status line.
            Ok(_) => Err(LaunchError::Helper {
                stage: Stage::Exec,
                message: "helper sent a second status line instead of executing".to_owned(),
            }),
            Err(error) => Err(error),
        },
    }
}

/// Reads one `\n`-terminated line before `deadline`; `None` on EOF. File
/// descriptors sent along are added to `fds`.
fn read_line(
    control: &mut UnixStream,
    buffer: &mut Vec<u8>,
    fds: &mut Vec<OwnedFd>,
    deadline: Instant,
    waiting_for: &'static str,
) -> Result<Option<Vec<u8>>, LaunchError> {
    let reader = ipc::Deadline::new(control, deadline);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let line = buffer.drain(..=end).take(end).collect();
            return Ok(Some(line));
        }
        if buffer.len() > MAX_REPLY_LEN {
            return Err(LaunchError::Control {
                doing: "reading the status line",
                source: io::Error::new(io::ErrorKind::InvalidData, "status line too long"),
            });
        }
        match reader.recv_fds::<2>(&mut chunk).map_err(io::Error::from) {
            Ok(msg) => {
                fds.extend(msg.fds);
                if msg.len == 0 {
                    // EOF; a final line without newline still counts.
                    return Ok((!buffer.is_empty()).then(|| std::mem::take(buffer)));
                }
                buffer.extend_from_slice(&chunk[..msg.len]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(LaunchError::Timeout {
                    waiting_for,
                    timeout: LAUNCH_TIMEOUT,
                })
            }
            Err(source) => {
                return Err(LaunchError::Control {
                    doing: "reading the status line",
                    source,
                })
            }
        }
    }
}

/// Polls for the child's exit until `deadline`.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}

/// Makes sure a helper that failed is gone and reaped.
fn reap_failed_helper(child: &mut Child, deadline: Instant) {
    // A helper that reported an error exits on its own right away.
    let grace = deadline.max(Instant::now() + Duration::from_millis(500));
    if wait_until(child, grace).is_some() {
        return;
    }
    warn!(
        helper_pid = child.id(),
        "killing unresponsive launch helper"
    );
    if let Err(error) = child.kill() {
        warn!(helper_pid = child.id(), %error, "cannot kill launch helper");
    }
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        io::{BufRead, BufReader, Cursor},
        os::unix::fs::{MetadataExt, PermissionsExt},
        process::Stdio,
    };

    use nix::errno::Errno;

    use super::{
        cgroup::{cgroup2_mount, Cgroup, CgroupTree},
        helper::{encode_err, encode_ok, read_spec, HelperError},
        *,
    };

    pub(super) const NOBODY: u32 = 65534;

    pub(super) fn sample_spec() -> LaunchSpec {
        LaunchSpec {
            argv: vec!["sh".into(), "-c".into(), "id -u".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: PathBuf::from("/"),
            uid: NOBODY,
            gid: NOBODY,
            groups: vec![],
            cgroup: PathBuf::from("/sys/fs/cgroup/unified/mcpguard/time-3"),
            limit_cgroups: Vec::new(),
            sandbox: SandboxSpec {
                read: vec!["/etc/ssl/certs".into()],
                write: vec!["/tmp".into()],
                exec: vec!["/usr".into()],
                connect_tcp: Some(vec![(443, 443)]),
                bind_tcp: Some(vec![]),
                require_fs: true,
                learn: false,
            },
            mounts: None,
            persist: None,
            kernel_allow: vec![],
            sockets: None,
        }
    }

    #[test]
    fn spec_frame_round_trips() {
        let spec = sample_spec();
        let frame = encode_spec(&spec).unwrap();
        assert_eq!(
            u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize,
            frame.len() - 4
        );
        let decoded = read_spec(&mut Cursor::new(frame)).unwrap();
        assert_eq!(
            serde_json::to_value(&decoded).unwrap(),
            serde_json::to_value(&spec).unwrap()
        );
    }

    #[test]
    fn oversized_frames_are_rejected_before_reading_the_body() {
        let mut frame = ((MAX_SPEC_LEN + 1) as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(b"{}");
        let err = read_spec(&mut Cursor::new(frame)).unwrap_err();
        assert!(matches!(err, HelperError::SpecTooLarge { len } if len == MAX_SPEC_LEN + 1));

        let mut spec = sample_spec();
        spec.argv.push("x".repeat(MAX_SPEC_LEN));
        assert!(matches!(
            encode_spec(&spec),
            Err(LaunchError::SpecTooLarge { .. })
        ));
    }

    #[test]
    fn status_and_error_lines_round_trip() {
        let status = LaunchStatus {
            exe: "/usr/bin/sh".into(),
            pid: 42,
            uid: NOBODY,
            gid: NOBODY,
            groups: vec![],
            cgroup: "/sys/fs/cgroup/unified/mcpguard/time-3".into(),
            landlock: LandlockReport {
                abi: Some(7),
                target_abi: 6,
                status: Enforcement::FullyEnforced,
                no_new_privs: true,
                skipped_paths: vec![],
                unenforced: vec![],
                connect_tcp: PortRestriction::Ports { count: 1 },
                bind_tcp: PortRestriction::Ports { count: 0 },
                log_denials: false,
            },
            mounts: None,
            persist: None,
            seccomp: Some(seccomp::FenceReport {
                refused: seccomp::refused(&[]),
                allowed: vec![],
            }),
            fds: vec![0, 1, 2],
        };
        let line = encode_ok(&status);
        assert!(line.starts_with(br#"{"ok":true,"#));
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(parse_reply(&line[..line.len() - 1]).unwrap(), status);

        let error = HelperError::JoinCgroup {
            path: "/sys/fs/cgroup/unified/mcpguard/time-3".into(),
            errno: Errno::EACCES,
        };
        let line = encode_err(&error);
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["ok"], false);
        assert_eq!(value["stage"], "cgroup");
        match parse_reply(&line[..line.len() - 1]).unwrap_err() {
            LaunchError::Helper { stage, message } => {
                assert_eq!(stage, Stage::Cgroup);
                assert_eq!(
                    message,
                    "cannot join cgroup /sys/fs/cgroup/unified/mcpguard/time-3: EACCES: Permission denied"
                );
            }
            other => panic!("unexpected {other}"),
        }
        assert!(matches!(
            parse_reply(b"not json"),
            Err(LaunchError::BadReply { .. })
        ));
    }

    // -- End to end: the real helper binary against the real kernel. --------

    /// The binary whose `__exec-server` subcommand runs [`helper_main`]:
    /// `$MCPGUARD_HELPER_EXE`, else the `mcpguard` binary next to this test
    /// binary (cargo builds it alongside integration tests).
    fn helper_exe() -> PathBuf {
        if let Some(exe) = std::env::var_os("MCPGUARD_HELPER_EXE") {
            return PathBuf::from(exe);
        }
        let test_exe = std::env::current_exe().unwrap();
        let sibling = test_exe
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("mcpguard"))
            .unwrap();
        assert!(
            sibling.exists(),
            "launch tests need the helper binary: build `mcpguard` first (cargo build) \
             or set MCPGUARD_HELPER_EXE; looked for {}",
            sibling.display()
        );
        sibling
    }

    /// A server cgroup plus a scratch dir, both removed on drop.
    struct Fixture {
        tree: CgroupTree,
        cgroup: Cgroup,
        dir: PathBuf,
    }

    impl Fixture {
        fn new(tag: &str) -> Self {
            let name = format!("mcpguard-test-launch-{tag}-{}", std::process::id());
            let tree = CgroupTree::create(&cgroup2_mount().unwrap(), &name).unwrap();
            let cgroup = tree.child("srv").unwrap();
            let dir = std::env::temp_dir().join(&name);
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("allowed")).unwrap();
            fs::create_dir_all(dir.join("denied")).unwrap();
            // World-readable, so only Landlock stands between nobody and the secret.
            for sub in ["", "allowed", "denied"] {
                fs::set_permissions(dir.join(sub), fs::Permissions::from_mode(0o755)).unwrap();
            }
            fs::write(dir.join("allowed/data.txt"), "public data\n").unwrap();
            fs::write(dir.join("denied/secret.txt"), "top secret\n").unwrap();
            Self { tree, cgroup, dir }
        }

        fn spec(&self, script: &str) -> LaunchSpec {
            LaunchSpec {
                argv: vec!["sh".into(), "-c".into(), script.into()],
                env: vec![
                    ("PATH".into(), "/usr/bin:/bin".into()),
                    ("MARK".into(), "from-spec".into()),
                ],
                cwd: self.dir.clone(),
                uid: NOBODY,
                gid: NOBODY,
                groups: vec![],
                cgroup: self.cgroup.path.clone(),
                limit_cgroups: Vec::new(),
                sandbox: SandboxSpec {
                    read: vec![self.dir.join("allowed")],
                    write: vec![],
                    exec: ["/usr", "/lib", "/lib64", "/bin"]
                        .into_iter()
                        .map(PathBuf::from)
                        .collect(),
                    connect_tcp: None,
                    bind_tcp: Some(vec![]),
                    require_fs: true,
                    learn: false,
                },
                mounts: None,
                persist: None,
                kernel_allow: vec![],
                sockets: Some(SocketRules::default()),
            }
        }

        fn launch(&self, spec: &LaunchSpec) -> Result<(Child, LaunchStatus), LaunchError> {
            self.launch_fenced(spec).map(|l| (l.child, l.status))
        }

        fn launch_fenced(&self, spec: &LaunchSpec) -> Result<Launched, LaunchError> {
            spawn(
                spec,
                &helper_exe(),
                Stdio::piped(),
                Stdio::piped(),
                Stdio::piped(),
            )
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = self.tree.reap_stale();
            let _ = fs::remove_dir(&self.tree.root);
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    fn helper_failure(result: Result<(Child, LaunchStatus), LaunchError>) -> (Stage, String) {
        match result {
            Err(LaunchError::Helper { stage, message }) => (stage, message),
            Err(other) => panic!("expected a helper failure, got: {other}"),
            Ok((mut child, status)) => {
                let _ = child.kill();
                panic!("expected a helper failure, but launched {status:?}")
            }
        }
    }

    #[test]
    fn the_socket_fence_hands_refused_sockets_to_the_daemon() {
        let fx = Fixture::new("fence");
        let script = "exec python3 -c 'import errno, socket\n\
                      socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close(); print(\"route ok\")\n\
                      try:\n    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)\n\
                      except OSError as e:\n    print(\"sock_diag\", errno.errorcode[e.errno])'";
        let mut launched = fx.launch_fenced(&fx.spec(script)).expect("launch");
        let fence = launched.socket_fence.take().expect("a listener");
        let req = fence.recv().expect("a notification");
        let notify::Call::Socket {
            family,
            sock_type,
            protocol,
        } = req.call
        else {
            panic!("not a socket() call: {req:?}");
        };
        // Python adds SOCK_CLOEXEC to the type.
        assert_eq!((family, sock_type & 0xf, protocol), (16, 3, 4));
        assert_eq!(req.pid, launched.child.id());
        fence.respond(req.id, Some(libc::EPERM)).unwrap();
        let out = launched.child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text, "route ok\nsock_diag EPERM\n", "{out:?}");
    }

    #[test]
    fn spawned_server_runs_confined_as_the_caller_in_its_cgroup() {
        let fx = Fixture::new("ok");
        let script = "id -u; id -g; id -G; echo \"mark=$MARK home=${HOME-unset}\"; pwd; \
                      cat allowed/data.txt; \
                      cat denied/secret.txt 2>&1 || echo secret-denied; \
                      read line; echo \"stdin=$line\"";
        let (mut child, status) = fx.launch(&fx.spec(script)).expect("launch");

        assert_eq!(status.pid, child.id());
        assert_eq!(status.exe, PathBuf::from("/usr/bin/sh"));
        assert_eq!((status.uid, status.gid), (NOBODY, NOBODY));
        assert_eq!(status.landlock.status, Enforcement::FullyEnforced);
        assert!(status.landlock.no_new_privs);
        assert_eq!(status.cgroup, fx.cgroup.path);

        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next_line = || stdout.next().expect("more output").expect("utf-8 line");
        let lines: Vec<String> = (0..8).map(|_| next_line()).collect();
        assert_eq!(lines[0], "65534", "id -u");
        assert_eq!(lines[1], "65534", "id -g");
        assert_eq!(lines[2], "65534", "id -G: no supplementary groups");
        assert_eq!(
            lines[3], "mark=from-spec home=unset",
            "exactly the spec env"
        );
        assert_eq!(Path::new(&lines[4]), fx.dir, "cwd");
        assert_eq!(lines[5], "public data");
        assert!(lines[6].contains("Permission denied"), "{lines:?}");
        assert_eq!(lines[7], "secret-denied");

        // The server now waits on stdin: inspect it from outside.
        assert_eq!(fx.cgroup.pids().unwrap(), vec![child.id()]);
        let mount = cgroup2_mount().unwrap();
        let relative = fx.cgroup.path.strip_prefix(&mount).unwrap();
        let proc_cgroup = fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
        assert!(
            proc_cgroup.contains(&format!("0::/{}\n", relative.display())),
            "{proc_cgroup}"
        );
        let proc_status = fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        assert!(
            proc_status.contains("Uid:\t65534\t65534\t65534\t65534\n"),
            "{proc_status}"
        );
        assert!(
            proc_status.contains("Gid:\t65534\t65534\t65534\t65534\n"),
            "{proc_status}"
        );
        assert!(proc_status.contains("NoNewPrivs:\t1\n"), "{proc_status}");
        // The control socket was closed on exec: the server has only stdio.
        let mut fds: Vec<String> = fs::read_dir(format!("/proc/{}/fd", child.id()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        fds.sort();
        assert_eq!(fds, ["0", "1", "2"]);

        child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
        assert_eq!(next_line(), "stdin=hello");
        let exit = child.wait().unwrap();
        assert!(exit.success(), "{exit}");
    }

    #[test]
    fn server_starts_with_default_signal_dispositions() {
        let fx = Fixture::new("signals");
        let mut spec = fx.spec("");
        // exec cat directly: a shell would install its own dispositions.
        spec.argv = vec!["cat".into(), "/proc/self/status".into()];
        spec.sandbox.read.push("/proc".into());
        let (child, _) = fx.launch(&spec).expect("launch");
        let output = child.wait_with_output().unwrap();
        let status = String::from_utf8(output.stdout).unwrap();
        // The Rust runtime of the helper ignores SIGPIPE; that must not leak.
        assert!(status.contains("SigIgn:\t0000000000000000\n"), "{status}");
        assert!(status.contains("SigBlk:\t0000000000000000\n"), "{status}");
    }

    #[test]
    fn root_is_refused() {
        let fx = Fixture::new("root");
        let mut spec = fx.spec("true");
        spec.uid = 0;
        let (stage, message) = helper_failure(fx.launch(&spec));
        assert_eq!(stage, Stage::ValidateSpec);
        assert!(message.contains("uid 0"), "{message}");
        assert!(fx.cgroup.pids().unwrap().is_empty(), "nothing was started");
    }

    #[test]
    fn a_missing_cgroup_is_named_in_the_error() {
        let fx = Fixture::new("nocg");
        let mut spec = fx.spec("true");
        spec.cgroup = fx.tree.root.join("does-not-exist");
        let (stage, message) = helper_failure(fx.launch(&spec));
        assert_eq!(stage, Stage::Cgroup);
        assert_eq!(
            message,
            format!(
                "cannot join cgroup {}: ENOENT: No such file or directory",
                spec.cgroup.display()
            )
        );
    }

    #[test]
    fn an_unknown_program_is_a_resolve_error() {
        let fx = Fixture::new("noprog");
        let mut spec = fx.spec("");
        spec.argv = vec!["mcpguard-no-such-program".into()];
        let (stage, message) = helper_failure(fx.launch(&spec));
        assert_eq!(stage, Stage::Resolve);
        assert!(message.contains("mcpguard-no-such-program"), "{message}");
    }

    #[test]
    fn a_program_outside_the_exec_list_fails_at_exec() {
        let fx = Fixture::new("noexec");
        let mut spec = fx.spec("true");
        spec.sandbox.read = std::mem::take(&mut spec.sandbox.exec);
        let (stage, message) = helper_failure(fx.launch(&spec));
        assert_eq!(stage, Stage::Exec);
        assert!(
            message.contains("/usr/bin/sh") && message.contains("EACCES"),
            "{message}"
        );
    }

    #[test]
    fn an_inaccessible_cwd_is_a_chdir_error() {
        let fx = Fixture::new("cwd");
        let private = fx.dir.join("private");
        fs::create_dir(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        let mut spec = fx.spec("true");
        spec.cwd = private.clone();
        let (stage, message) = helper_failure(fx.launch(&spec));
        assert_eq!(stage, Stage::Chdir);
        assert_eq!(
            message,
            format!(
                "cannot chdir to {} as uid 65534: EACCES: Permission denied",
                private.display()
            )
        );
    }

    /// The read-only view: attribute changes fail outside the write
    /// grants (with Landlock allowing them), work inside; device nodes, the
    /// private tmpfs mounts and `/proc` stay writable.
    #[test]
    fn everything_but_the_write_grants_is_read_only() {
        let fx = Fixture::new("ro-view");
        let (ro, rw) = (fx.dir.join("ro"), fx.dir.join("rw"));
        for d in [&ro, &rw] {
            fs::create_dir(d).unwrap();
            fs::write(d.join("f"), "x\n").unwrap();
            std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).unwrap();
            std::os::unix::fs::chown(d.join("f"), Some(NOBODY), Some(NOBODY)).unwrap();
        }
        // A mount the host has read-only, inside the write grant, stays so.
        let sub = rw.join("sub");
        fs::create_dir(&sub).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &sub,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .unwrap();
        let script = "for p in ro/f rw/f; do chmod 600 $p 2>&1 && echo chmod $p ok; done; \
            touch rw/sub/x 2>&1; \
            echo x > /dev/null && echo devnull ok; \
            echo x > /dev/shm/x && echo shm ok; \
            printf srv > /proc/self/comm && echo proc ok";
        let mut spec = fx.spec(script);
        // Landlock lets every write through; only the view refuses.
        spec.sandbox.read.push(fx.dir.clone());
        spec.sandbox.write = ["/dev/null", "/dev/shm", "/proc/self"]
            .into_iter()
            .map(PathBuf::from)
            .chain([ro.clone(), rw.clone()])
            .collect();
        spec.mounts = Some(mounts::MountSpec {
            keep: vec![fx.dir.clone()],
            sockets: vec![],
            write: vec![rw.clone(), fx.dir.join("missing")],
            uid: NOBODY,
            gid: NOBODY,
        });
        let launched = fx.launch(&spec);
        nix::mount::umount(&sub).unwrap();
        let (child, status) = launched.expect("launch");
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for refused in [
            "chmod: changing permissions of 'ro/f': Read-only file system",
            "touch: cannot touch 'rw/sub/x': Read-only file system",
        ] {
            assert!(text.contains(refused), "{refused}: {text}");
        }
        for line in ["chmod rw/f ok", "devnull ok", "shm ok", "proc ok"] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert_eq!(fs::metadata(ro.join("f")).unwrap().mode() & 0o777, 0o644);
        assert_eq!(fs::metadata(rw.join("f")).unwrap().mode() & 0o777, 0o600);
        assert_eq!(status.mounts.expect("a mount report").writable, vec![rw]);
    }

    #[test]
    fn persistence_paths_in_write_grants_are_read_only_unless_allowed() {
        let fx = Fixture::new("persist");
        let repo = fx.dir.join("allowed/repo");
        fs::create_dir_all(repo.join(".git/hooks")).unwrap();
        fs::create_dir_all(repo.join(".vscode")).unwrap();
        fs::create_dir_all(repo.join(".githooks")).unwrap();
        fs::write(
            repo.join(".git/config"),
            "[core]\n\thooksPath = .githooks\n",
        )
        .unwrap();
        fs::write(repo.join(".envrc"), "").unwrap();
        fs::write(repo.join("code.txt"), "").unwrap();
        std::os::unix::fs::chown(&fx.dir, Some(NOBODY), Some(NOBODY)).unwrap();
        Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&repo)
            .status()
            .unwrap();
        let script =
            "for p in .git/hooks/post-commit .git/config .githooks/pre-commit .vscode/tasks.json .envrc code.txt; do \
             (echo x >> $p) && echo \"$p ok\" || echo \"$p refused\"; done; \
             mv .git moved && echo 'mv ok' || echo 'mv refused'; \
             mkdir .claude && echo 'mkdir ok' || echo 'mkdir refused'";
        let mut spec = fx.spec(script);
        spec.cwd = repo.clone();
        spec.sandbox.write = vec![fx.dir.join("allowed")];
        spec.sandbox.read.push(fx.dir.join("allowed"));
        spec.mounts = Some(mounts::MountSpec {
            keep: vec![fx.dir.join("allowed")],
            sockets: vec![],
            write: vec![fx.dir.join("allowed")],
            uid: NOBODY,
            gid: NOBODY,
        });
        spec.persist = Some(persist::PersistSpec {
            write: spec.sandbox.write.clone(),
            allow: vec![crate::policy::persist::PersistKind::Direnv],
        });
        // The daemon's side of the fences answers the trapped calls.
        let launched = fx.launch_fenced(&spec).expect("launch");
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = bodies.clone();
        let fence = crate::daemon::sockets::SocketFence::start(
            launched.socket_fence.expect("a listener"),
            false,
            Box::new(move |body, _pid, _at_ns| sink.lock().unwrap().push(body)),
            launched.executor,
        )
        .unwrap();
        let (child, status) = (launched.child, launched.status);
        let out = child.wait_with_output().unwrap();
        drop(fence);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text,
            ".git/hooks/post-commit refused\n.git/config refused\n.githooks/pre-commit refused\n\
             .vscode/tasks.json refused\n\
             .envrc ok\ncode.txt ok\nmv refused\nmkdir refused\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A new name is a persist record, refused; the allowed one is not.
        let bodies = bodies.lock().unwrap();
        let persist = |p: &Path| {
            bodies.iter().find_map(|b| match b {
                crate::audit::Body::Persist {
                    path,
                    allowed,
                    result,
                    ..
                } if Path::new(path) == p => Some((*allowed, *result)),
                _ => None,
            })
        };
        let real = fs::canonicalize(&repo).unwrap();
        let eacces = -i64::from(libc::EACCES);
        assert_eq!(persist(&real.join(".claude")), Some((false, eacces)));
        assert_eq!(persist(&real.join(".envrc")), Some((true, 0)));
        let mut report = status.persist.expect("a persist report");
        report.read_only.sort();
        assert_eq!(
            report.read_only,
            [
                repo.join(".git/config"),
                repo.join(".git/hooks"),
                repo.join(".githooks"),
                repo.join(".vscode")
            ]
        );
        assert_eq!(report.pinned, [repo.join(".git")]);
        assert_eq!(report.hooks_paths, [repo.join(".githooks")]);
        assert!(!report.truncated);
        // The host's view is untouched.
        assert!(!repo.join(".git/hooks/post-commit").exists());
    }

    #[test]
    fn paths_the_user_cannot_reach_are_not_bound_back() {
        let fx = Fixture::new("reach");
        // World-readable, but in a root-only directory below /tmp: bound
        // back by root, it would sit behind fresh 0755 parents.
        let private = fx.dir.join("private");
        fs::create_dir(&private).unwrap();
        let file = private.join("open.txt");
        fs::write(&file, "root's eyes only\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        let allowed = fx.dir.join("allowed");
        let script = format!("cat {} 2>&1 || echo not-read; cat data.txt", file.display());
        let mut spec = fx.spec(&script);
        spec.cwd = allowed.clone();
        spec.sandbox.read.push(file.clone());
        spec.mounts = Some(mounts::MountSpec {
            keep: vec![file.clone(), allowed.clone()],
            sockets: vec![],
            write: vec![],
            uid: NOBODY,
            gid: NOBODY,
        });
        let (child, status) = fx.launch(&spec).expect("launch");
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.ends_with("not-read\npublic data\n"), "{text}");
        assert!(!text.contains("root's eyes"), "{text}");
        let mounts = status.mounts.expect("a mount report");
        assert_eq!(mounts.kept, vec![allowed]);
        assert_eq!(
            mounts.unreachable,
            vec![SkippedPath {
                list: "filesystem".into(),
                path: file.clone(),
                reason: "EACCES: Permission denied (uid 65534 cannot reach it)".into(),
            }]
        );
        // Opened in the server's namespace, where it was not bound back.
        assert!(
            status.landlock.skipped_paths.iter().any(|s| s.path == file),
            "{:?}",
            status.landlock.skipped_paths
        );
    }

    #[test]
    fn running_the_helper_without_a_control_socket_fails_cleanly() {
        let output = Command::new(helper_exe())
            .arg(HELPER_SUBCOMMAND)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(EXIT_SETUP_FAILED));
        assert!(String::from_utf8_lossy(&output.stderr).contains("not a control socket"));
    }
}
