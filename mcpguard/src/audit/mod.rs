//! The audit trail: one versioned JSON Lines record per event.
//!
//! Kernel ring-buffer samples become [`AuditRecord`]s in [`mod@decode`]; the
//! daemon builds its own records (daemon start/stop, launches, server exits,
//! losses) with [`AuditRecord::new`]; [`writer`] appends them to the log,
//! each line sealed into a hash chain ([`chain`]), [`query`] is what
//! `mcpguard audit` does with it and [`verify`] checks the chain.
//!
//! The JSON shape is a contract with every reader of the log, so it is pinned
//! by golden tests below. Within schema version [`SCHEMA_VERSION`] fields may
//! be added but never renamed or retyped; readers must ignore keys and kinds
//! they do not know.

pub mod chain;
pub mod decode;
pub mod landlock;
pub mod query;
pub mod verify;
pub mod writer;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use self::decode::{decode, BootClock, DecodeError};
pub use crate::kernel::errno::errno_name;

/// Value of every record's `v` key.
pub const SCHEMA_VERSION: u32 = 1;

/// Every `kind` this schema version defines, for CLI help and validation.
pub const KINDS: &[&str] = &[
    "daemon",
    "launch",
    "launch_failed",
    "secret_minted",
    "server_exit",
    "exec",
    "fork",
    "exit",
    "open",
    "connect",
    "loss",
    "mcp",
    "tool_changed",
    "dns",
    "unix_connect",
    "socket",
    "link",
    "rename",
    "syscall",
    "limit",
    "io_uring",
    "mkdir",
    "unlink",
    "rmdir",
    "chdir",
    "persist",
    "attr",
    "dns_stranger",
    "landlock",
];

/// Which guarded server an event belongs to, resolved from its cgroup.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Origin {
    /// The policy's `name`.
    pub server: String,
    /// Policy file name or path the launch used.
    pub policy: String,
    /// Launch id, unique per daemon run (also the cgroup's leaf name).
    pub launch: String,
    /// The uid the server runs as (the `mcpguard run` caller's).
    pub uid: u32,
}

/// One line of the audit log.
///
/// The origin is stored flattened (`server`, `policy`, `launch`) rather than
/// as a nested [`Origin`] because the origin's uid and the task's uid share
/// the single `uid` key: for kernel events it is the task's uid from the
/// event header, for daemon-made records the origin's uid.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// [`SCHEMA_VERSION`].
    pub v: u32,
    /// RFC 3339, UTC, microseconds: `2024-05-01T11:02:03.123456Z`.
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// Where the record's path (`path`, `filename`, `old_path` and
    /// `new_path`) came from, on kernel records that carry one: `user` when
    /// it was read from the caller's memory at syscall entry (or exit, for
    /// a refusal outside a tool call at the default audit level), which
    /// another thread can rewrite around the kernel's copy, so the path is what
    /// the caller claimed and may not be what the kernel resolved; `kernel`
    /// when it is the kernel's own copy (successful execs). The `result`
    /// and `verdict` fields never come from user memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_source: Option<String>,
    /// The MCP tool call this record belongs to: on `mcp` records of a call,
    /// and on kernel records that happened while exactly that call was in
    /// flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The JSON-RPC id of that call (a number or a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<serde_json::Value>,
    /// Several calls were in flight: their (id, tool) pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<Vec<serde_json::Value>>,
    /// Whether enforcement refused the action; see [`Body::is_denied`].
    pub denied: bool,
    #[serde(flatten)]
    pub body: Body,
}

/// The kind-specific part of a record; `kind` is the JSON tag.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// The daemon started or stopped.
    Daemon {
        /// `"start"` or `"stop"`.
        event: String,
        /// What the kernel probe found, layer by layer.
        layers: serde_json::Value,
    },
    /// A server was launched.
    Launch {
        argv: Vec<String>,
        /// The server's cgroup path.
        cgroup: String,
        cwd: String,
        /// Which enforcement layers are active for this launch.
        layers: serde_json::Value,
    },
    /// A launch was refused or failed before the server ran.
    LaunchFailed { argv: Vec<String>, error: String },
    /// A `[secrets]` value minted for this launch by the administrator's
    /// helper. Never the value.
    SecretMinted {
        /// The environment variable the server gets it in.
        env: String,
        /// The helper's name, as the policy gives it.
        helper: String,
        /// The helper that ran.
        path: String,
        /// The lifetime the helper was asked for.
        ttl_secs: u64,
        /// When that lifetime ends (RFC 3339, UTC).
        expires_at: String,
    },
    /// The server's main process ended (from `waitpid`).
    ServerExit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    /// `execve`/`execveat`.
    Exec {
        filename: String,
        /// Present (and true) only when `filename` was cut at the kernel's
        /// buffer size.
        #[serde(default, skip_serializing_if = "is_false")]
        path_truncated: bool,
        argv: Vec<String>,
        /// Every argv slot the kernel keeps was used, so more arguments may
        /// have followed. Individual entries are cut at `ARG_LEN` bytes.
        argc_truncated: bool,
        /// 0, or the negative errno the call failed with.
        result: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        errno: Option<String>,
    },
    /// A task cloned a child.
    Fork { child_pid: u32 },
    /// A process (thread-group leader) exited.
    Exit {},
    /// A file open.
    Open {
        /// `openat`, `openat2`, `open` or `creat`.
        call: String,
        /// The path as passed to the syscall (not resolved; see
        /// `path_source`).
        path: String,
        /// Present (and true) only when `path` was cut at the kernel's
        /// buffer size.
        #[serde(default, skip_serializing_if = "is_false")]
        path_truncated: bool,
        /// Symbolic flags; the access mode first, then `openat2`'s
        /// `RESOLVE_*` flags after the `O_*` ones.
        flags: Vec<String>,
        /// Only when the flags make the mode meaningful (`O_CREAT`,
        /// `O_TMPFILE`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
        /// Only when the path is relative to a directory fd (not `AT_FDCWD`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dirfd: Option<i32>,
        /// The file descriptor, or the negative errno.
        result: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        errno: Option<String>,
    },
    /// `mkdir` or `mkdirat`.
    Mkdir(PathCall),
    /// `unlink`, or `unlinkat` without `AT_REMOVEDIR`.
    Unlink(PathCall),
    /// `rmdir`, or `unlinkat` with `AT_REMOVEDIR`.
    Rmdir(PathCall),
    /// `chdir`: relative paths of this process's later records start here.
    Chdir(PathCall),
    /// A refused change no open covers (in learning mode, any): the
    /// `chmod`, `chown`, `utimes`, `setxattr`/`removexattr`, `truncate` and
    /// `mknod` families. Outside the write grants the server's read-only
    /// mount view refuses these with `EROFS`.
    Attr(PathCall),
    /// `link`, `linkat`, `symlink` or `symlinkat`.
    Link(PathPair),
    /// `rename`, `renameat` or `renameat2`.
    Rename(PathPair),
    /// A call that would create, change or remove a persistence path
    /// (`git_hooks`, `git_config`, `vscode`, ... see
    /// [`crate::policy::persist`]): written next to the call's own `open`,
    /// `mkdir`, `unlink`, `rmdir`, `link` or `rename` record, whatever its
    /// outcome.
    Persist {
        /// The family the path belongs to.
        family: String,
        /// The syscall, as on the call's own record.
        call: String,
        /// The persistence path: for a relative path, joined to the
        /// process's working directory as tracked from its records (see
        /// `path_source`); for a symlink, the path the link points to when
        /// that is the persistence path.
        path: String,
        /// The policy's `[filesystem] allow_persistence` names the family.
        #[serde(default, skip_serializing_if = "is_false")]
        allowed: bool,
        /// 0 (or an fd), or the negative errno: `EROFS` (written inside a
        /// path bound read-only) and `EBUSY` (renaming or removing one) are
        /// the launcher's refusals.
        result: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        errno: Option<String>,
    },
    /// A network decision by the cgroup programs. The address is the
    /// kernel's copy the hook decided on, never the caller's memory.
    Connect {
        /// `connect4`, `connect6`, `sendmsg4` or `sendmsg6` (egress: the
        /// destination); `bind4` or `bind6` (an explicit `bind()`: the local
        /// address and port); `inbound4` or `inbound6` (a packet dropped at
        /// a server's socket: the sender's address and the local port).
        op: String,
        /// `tcp`, `udp`, `icmp`, `icmpv6`, or the protocol number.
        protocol: String,
        /// IPv4 (also when IPv4-mapped) as `a.b.c.d`, else IPv6.
        addr: String,
        port: u16,
        /// `allow` or `deny`.
        verdict: String,
    },
    /// A JSON-RPC message on the server's stdio, or what the MCP tap did
    /// about it.
    Mcp {
        /// `initialize`, `tools_list`, `tools_call`, `tool_denied`,
        /// `server_request`, `server_request_denied`, `redacted`,
        /// `suspicious`, `approval_requested`, `approval`, `tainted`,
        /// `taint_cleared`, `non_json`, `oversize`, `session`, ...
        event: String,
        /// Event-specific fields; never a secret value (records are
        /// redacted before they are written).
        #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
        detail: serde_json::Value,
    },
    /// An inet socket the `sock_create` fence decided on (raw or ICMP).
    Socket {
        /// `inet` or `inet6`.
        family: String,
        /// `raw`, `dgram`, `stream`, ...
        sock_type: String,
        protocol: String,
        /// `allow` or `deny`.
        verdict: String,
    },
    /// A denial from Landlock's own audit record (ABI 7+): the rights it
    /// refused and what the kernel resolved (`path_source` is
    /// `"landlock"`). Always a denial.
    Landlock(landlock::Denial),
    /// A `connect()` to a Unix-domain socket.
    UnixConnect {
        /// The path as passed (for abstract sockets, the name after the
        /// leading NUL).
        path: String,
        #[serde(default, skip_serializing_if = "is_false")]
        path_truncated: bool,
        /// An abstract-namespace address (Landlock scopes these).
        #[serde(default, skip_serializing_if = "is_false")]
        abstract_addr: bool,
        /// 0, or the negative errno.
        result: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        errno: Option<String>,
        /// The socket is one the server's private mount namespace hides:
        /// the connect failed because of the fence.
        #[serde(default, skip_serializing_if = "is_false")]
        fenced: bool,
    },
    /// A call to a watched syscall: one the seccomp fence gates (refused
    /// unless `[kernel] allow` names its feature) or a cross-process one
    /// (`ptrace`, `kill`, ...), recorded on failure or always.
    Syscall {
        /// The syscall's name (`io_uring_setup`, `unshare`, `ptrace`, ...).
        name: String,
        /// The return value: negative errno on failure.
        result: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        errno: Option<String>,
    },
    /// A request a server submitted to an io_uring (policies that allow
    /// io_uring only). Its result is not recorded; Landlock and the egress
    /// programs decide it as they decide the syscall, and an egress
    /// decision has its own `connect` record.
    IoUring {
        /// `openat`, `connect`, `read`, ... (`IORING_OP_*`, lowercase), or
        /// `op<N>` for an opcode newer than this build.
        op: String,
    },
    /// A DNS query a guarded server sent (to any resolver: all of them reach
    /// the daemon's).
    Dns {
        /// The name asked for, lowercase, without the trailing dot.
        qname: String,
        /// `A`, `AAAA`, `TXT`, ...
        qtype: String,
        /// `udp` or `tcp`.
        transport: String,
        /// `allow` (forwarded upstream) or `deny` (answered NXDOMAIN here).
        verdict: String,
        /// rcode, answers with TTLs, how many addresses were opened, the
        /// rule that allowed the name.
        #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
        detail: serde_json::Value,
    },
    /// Queries that reached a server's resolver from a socket outside that
    /// server's cgroup (another user's process, or anything else on the
    /// machine). They are not answered, and are not the server's doing:
    /// these records name no server. At most one per resolver a second.
    DnsStranger {
        /// `udp` or `tcp`.
        transport: String,
        /// The sender's address and port (of the last query counted).
        peer: String,
        /// Queries refused since the previous record of this resolver.
        count: u64,
    },
    /// A tool differs from the one pinned on first use.
    ToolChanged {
        /// `added`, `changed` or `removed`.
        change: String,
        /// `warn` (let through) or `block` (hidden and refused).
        action: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        old_hash: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        new_hash: Option<String>,
    },
    /// A server hit one of its `[limits]` (counted by the kernel, reported
    /// within a second and once more when the server is gone).
    Limit {
        /// `pids` or `memory`.
        resource: String,
        /// `max`: the limit was reached (pids: a fork or clone failed with
        /// EAGAIN; memory: reclaim at the limit); `oom`: an allocation
        /// could not be met; `oom_kill`: the OOM killer killed a task.
        event: String,
        /// The limit: tasks, or bytes.
        limit: u64,
        /// New hits since the previous `limit` record of this event.
        count: u64,
        /// Hits since the server started.
        total: u64,
    },
    /// Events that never made it into the log.
    Loss {
        /// Lost since the previous loss record.
        lost: u64,
        /// Lost since the daemon started.
        total: u64,
        /// Where they were lost: `ringbuf` (the kernel ring buffer was
        /// full), `rate` (the server was over its share of the ring buffer
        /// while it was filling up), `decode`, `audit_sink` (the log could
        /// not be written and the in-memory backlog was full),
        /// `budget:<source>` (the server was over its record budget; the
        /// source is `kernel`, `socket_fence`, `dns`, `mcp` or `daemon`).
        source: String,
        /// `audit_sink`: when the first and the last lost record happened.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first_ts: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_ts: Option<String>,
        /// How many of `lost` were denials (refused opens, execs, connects,
        /// sockets), when the kernel could tell.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        denials: Option<u64>,
    },
}

/// The one name of a mkdir, unlink, rmdir, chdir or attribute change.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PathCall {
    /// The syscall: `mkdir`, `mkdirat`, `unlink`, `unlinkat`, `rmdir`,
    /// `chdir`, or for `attr` records the attribute call (`chmod`,
    /// `fchmodat`, `fsetxattr`, `ftruncate`, ...).
    pub call: String,
    /// The path as passed (read from the caller's memory at entry).
    pub path: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub path_truncated: bool,
    /// `mkdir`'s, `chmod`'s or `mknod`'s mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Only when the path is relative to a directory fd (not `AT_FDCWD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirfd: Option<i32>,
    /// The fd acted on, for calls on an fd (`fchmod`, `fchown`,
    /// `fsetxattr`, `fremovexattr`, `ftruncate`); their `path` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// 0, or the negative errno (Landlock refuses with `EACCES`, the
    /// read-only view with `EROFS`).
    pub result: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
}

/// The two names of a link, symlink or rename.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PathPair {
    /// `link`, `linkat`, `symlink`, `symlinkat`, `rename`, `renameat` or
    /// `renameat2`.
    pub call: String,
    /// The existing name as passed (for a symlink: the link's content).
    pub old_path: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub old_path_truncated: bool,
    /// The new name as passed.
    pub new_path: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub new_path_truncated: bool,
    /// `AT_SYMLINK_FOLLOW`, `AT_EMPTY_PATH`, `RENAME_NOREPLACE`,
    /// `RENAME_EXCHANGE`, `RENAME_WHITEOUT`; other bits as one hex value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// Only when `old_path` is relative to a directory fd (not `AT_FDCWD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_dirfd: Option<i32>,
    /// Only when `new_path` is relative to a directory fd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_dirfd: Option<i32>,
    /// 0, or the negative errno. Landlock refuses with `EACCES`, or with
    /// `EXDEV` when the file would gain rights it lacks where it is.
    pub result: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Body {
    /// The record's `kind` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Daemon { .. } => "daemon",
            Body::Launch { .. } => "launch",
            Body::LaunchFailed { .. } => "launch_failed",
            Body::SecretMinted { .. } => "secret_minted",
            Body::ServerExit { .. } => "server_exit",
            Body::Exec { .. } => "exec",
            Body::Fork { .. } => "fork",
            Body::Exit {} => "exit",
            Body::Open { .. } => "open",
            Body::Mkdir(_) => "mkdir",
            Body::Unlink(_) => "unlink",
            Body::Rmdir(_) => "rmdir",
            Body::Chdir(_) => "chdir",
            Body::Attr(_) => "attr",
            Body::Link(_) => "link",
            Body::Rename(_) => "rename",
            Body::Connect { .. } => "connect",
            Body::Limit { .. } => "limit",
            Body::Loss { .. } => "loss",
            Body::Mcp { .. } => "mcp",
            Body::ToolChanged { .. } => "tool_changed",
            Body::Dns { .. } => "dns",
            Body::DnsStranger { .. } => "dns_stranger",
            Body::UnixConnect { .. } => "unix_connect",
            Body::Socket { .. } => "socket",
            Body::Syscall { .. } => "syscall",
            Body::IoUring { .. } => "io_uring",
            Body::Persist { .. } => "persist",
            Body::Landlock(_) => "landlock",
        }
    }

    /// Whether enforcement refused the action. Landlock refusals surface as
    /// `EACCES`, the egress programs' as `EPERM`, the read-only mount view's
    /// as `EROFS`; all count, whoever caused
    /// them, because the log cannot tell a policy denial from a plain
    /// permission error and hiding either would under-report.
    pub fn is_denied(&self) -> bool {
        match self {
            Body::Exec { result, .. } => is_denial_errno(i64::from(*result)),
            Body::Open { result, .. } | Body::Syscall { result, .. } => is_denial_errno(*result),
            Body::Mkdir(p) | Body::Unlink(p) | Body::Rmdir(p) | Body::Chdir(p) => {
                is_denial_errno(p.result)
            }
            // The kernel program records a call's own extra refusal errno
            // (`ftruncate`'s `EINVAL`) only when it refused.
            Body::Attr(p) => {
                is_denial_errno(p.result) || (p.call == "ftruncate" && p.result == -22)
            }
            // Landlock's REFER refusal is EXDEV. A genuine cross-device
            // rename fails the same way; counting it errs toward reporting.
            Body::Link(p) | Body::Rename(p) => {
                is_denial_errno(p.result) || p.result == -i64::from(libc::EXDEV)
            }
            Body::Connect { verdict, .. } => verdict == "deny",
            Body::Mcp { event, detail } => {
                event == "tool_denied"
                    || event == "server_request_denied"
                    || (event == "approval" && detail["approved"] == false)
            }
            Body::Dns { verdict, .. } | Body::Socket { verdict, .. } => verdict == "deny",
            Body::DnsStranger { .. } | Body::Landlock(_) => true,
            Body::UnixConnect { result, fenced, .. } => *fenced || is_denial_errno(*result),
            Body::Persist { result, .. } => {
                is_denial_errno(*result)
                    || [libc::EROFS, libc::EBUSY, libc::EXDEV].contains(&(-*result as i32))
            }
            // A refused fork, a failed allocation and a killed task are the
            // limit at work; reclaim at the memory limit is not a refusal.
            Body::Limit {
                resource, event, ..
            } => resource == "pids" || event != "max",
            _ => false,
        }
    }
}

/// Landlock's `EACCES`, the egress programs' `EPERM`, and `EROFS`: the
/// read-only mount view refuses writes outside the write grants.
fn is_denial_errno(result: i64) -> bool {
    [libc::EACCES, libc::EPERM, libc::EROFS]
        .iter()
        .any(|e| result == -i64::from(*e))
}

impl AuditRecord {
    /// A record with no task fields (`pid`, `tid`, `comm`); set them on the
    /// returned value where they apply (e.g. the server's pid on `launch`).
    /// `uid` is the origin's.
    pub fn new(body: Body, origin: Option<&Origin>, ts: SystemTime) -> Self {
        AuditRecord {
            v: SCHEMA_VERSION,
            ts: format_ts(ts),
            server: origin.map(|o| o.server.clone()),
            policy: origin.map(|o| o.policy.clone()),
            launch: origin.map(|o| o.launch.clone()),
            pid: None,
            tid: None,
            uid: origin.map(|o| o.uid),
            comm: None,
            path_source: None,
            tool: None,
            call_id: None,
            calls: None,
            denied: body.is_denied(),
            body,
        }
    }

    /// The origin fields, if the record has all of them.
    pub fn origin(&self) -> Option<Origin> {
        Some(Origin {
            server: self.server.clone()?,
            policy: self.policy.clone()?,
            launch: self.launch.clone()?,
            uid: self.uid?,
        })
    }

    /// The record as one line of JSON, without a trailing newline.
    pub fn to_json_line(&self) -> String {
        // Cannot fail: every map key is a string and no field has a fallible
        // Serialize impl.
        serde_json::to_string(self).expect("audit record serialises to JSON")
    }
}

/// Last instant `humantime` can format (9999-12-31T23:59:59.999999Z).
const MAX_FORMATTABLE_SECS: u64 = 253_402_300_799;

/// RFC 3339 UTC with microseconds. Times outside 1970..=9999 are clamped:
/// the formatter cannot represent them, and a bad clock must not take the
/// audit stream down.
pub fn format_ts(ts: SystemTime) -> String {
    let max = UNIX_EPOCH + Duration::new(MAX_FORMATTABLE_SECS, 999_999_999);
    let clamped = ts.clamp(UNIX_EPOCH, max);
    humantime::format_rfc3339_micros(clamped).to_string()
}

/// `Some(name)` for a negative syscall result, `None` for success.
pub(crate) fn errno_of(result: i64) -> Option<String> {
    (result < 0).then(|| errno_name(-result))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// 2023-11-14T22:13:20.123456Z
    fn fixed_ts() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)
    }

    fn origin() -> Origin {
        Origin {
            server: "time".into(),
            policy: "time".into(),
            launch: "time-3".into(),
            uid: 1000,
        }
    }

    fn line(body: Body) -> String {
        AuditRecord::new(body, Some(&origin()), fixed_ts()).to_json_line()
    }

    const PREFIX: &str = r#"{"v":1,"ts":"2023-11-14T22:13:20.123456Z","server":"time","policy":"time","launch":"time-3","uid":1000,"#;

    fn assert_golden(body: Body, rest: &str) {
        let got = line(body.clone());
        assert_eq!(got, format!("{PREFIX}{rest}"));
        // Every golden line must read back as the same record.
        let back: AuditRecord = serde_json::from_str(&got).expect("golden line parses");
        assert_eq!(back, AuditRecord::new(body, Some(&origin()), fixed_ts()));
    }

    #[test]
    fn golden_daemon_without_origin() {
        let rec = AuditRecord::new(
            Body::Daemon {
                event: "start".into(),
                layers: json!({"landlock": 6, "egress": true}),
            },
            None,
            fixed_ts(),
        );
        assert_eq!(
            rec.to_json_line(),
            r#"{"v":1,"ts":"2023-11-14T22:13:20.123456Z","denied":false,"kind":"daemon","event":"start","layers":{"egress":true,"landlock":6}}"#
        );
    }

    #[test]
    fn golden_launch() {
        assert_golden(
            Body::Launch {
                argv: vec!["uvx".into(), "mcp-server-time".into()],
                cgroup: "/sys/fs/cgroup/mcpguard/time-3".into(),
                cwd: "/home/u".into(),
                layers: json!({"landlock": "fully_enforced", "egress": true}),
            },
            r#""denied":false,"kind":"launch","argv":["uvx","mcp-server-time"],"cgroup":"/sys/fs/cgroup/mcpguard/time-3","cwd":"/home/u","layers":{"egress":true,"landlock":"fully_enforced"}}"#,
        );
    }

    #[test]
    fn golden_launch_failed() {
        assert_golden(
            Body::LaunchFailed {
                argv: vec!["nope".into()],
                error: "landlock ABI 4 required".into(),
            },
            r#""denied":false,"kind":"launch_failed","argv":["nope"],"error":"landlock ABI 4 required"}"#,
        );
    }

    #[test]
    fn golden_secret_minted() {
        assert_golden(
            Body::SecretMinted {
                env: "GITHUB_TOKEN".into(),
                helper: "github-app".into(),
                path: "/etc/mcpguard/minters/github-app".into(),
                ttl_secs: 3600,
                expires_at: "2023-11-14T23:13:20.123456Z".into(),
            },
            r#""denied":false,"kind":"secret_minted","env":"GITHUB_TOKEN","helper":"github-app","path":"/etc/mcpguard/minters/github-app","ttl_secs":3600,"expires_at":"2023-11-14T23:13:20.123456Z"}"#,
        );
    }

    #[test]
    fn golden_server_exit() {
        assert_golden(
            Body::ServerExit {
                exit_code: Some(0),
                signal: None,
            },
            r#""denied":false,"kind":"server_exit","exit_code":0}"#,
        );
        assert_golden(
            Body::ServerExit {
                exit_code: None,
                signal: Some(9),
            },
            r#""denied":false,"kind":"server_exit","signal":9}"#,
        );
    }

    #[test]
    fn golden_exec_denied() {
        assert_golden(
            Body::Exec {
                filename: "/usr/bin/curl".into(),
                path_truncated: false,
                argv: vec!["curl".into(), "x".into()],
                argc_truncated: false,
                result: -libc::EACCES,
                errno: errno_of(i64::from(-libc::EACCES)),
            },
            r#""denied":true,"kind":"exec","filename":"/usr/bin/curl","argv":["curl","x"],"argc_truncated":false,"result":-13,"errno":"EACCES"}"#,
        );
    }

    #[test]
    fn golden_fork_and_exit() {
        assert_golden(
            Body::Fork { child_pid: 4243 },
            r#""denied":false,"kind":"fork","child_pid":4243}"#,
        );
        assert_golden(Body::Exit {}, r#""denied":false,"kind":"exit"}"#);
        assert_golden(
            Body::Mkdir(PathCall {
                call: "mkdirat".into(),
                path: "objects/ab".into(),
                path_truncated: false,
                mode: Some(0o755),
                dirfd: Some(5),
                fd: None,
                result: -13,
                errno: Some("EACCES".into()),
            }),
            r#""denied":true,"kind":"mkdir","call":"mkdirat","path":"objects/ab","mode":493,"dirfd":5,"result":-13,"errno":"EACCES"}"#,
        );
    }

    #[test]
    fn golden_open_denied_with_truncation_and_dirfd() {
        assert_golden(
            Body::Open {
                call: "openat".into(),
                path: "/root/.ssh/id_rsa".into(),
                path_truncated: true,
                flags: vec!["O_WRONLY".into(), "O_CREAT".into()],
                mode: Some(0o600),
                dirfd: Some(5),
                result: -13,
                errno: Some("EACCES".into()),
            },
            r#""denied":true,"kind":"open","call":"openat","path":"/root/.ssh/id_rsa","path_truncated":true,"flags":["O_WRONLY","O_CREAT"],"mode":384,"dirfd":5,"result":-13,"errno":"EACCES"}"#,
        );
    }

    #[test]
    fn golden_open_allowed() {
        assert_golden(
            Body::Open {
                call: "openat".into(),
                path: "/etc/hosts".into(),
                path_truncated: false,
                flags: vec!["O_RDONLY".into(), "O_CLOEXEC".into()],
                mode: None,
                dirfd: None,
                result: 3,
                errno: None,
            },
            r#""denied":false,"kind":"open","call":"openat","path":"/etc/hosts","flags":["O_RDONLY","O_CLOEXEC"],"result":3}"#,
        );
    }

    #[test]
    fn golden_persist() {
        assert_golden(
            Body::Persist {
                family: "git_hooks".into(),
                call: "openat".into(),
                path: "/p/.git/hooks/post-commit".into(),
                allowed: false,
                result: -30,
                errno: Some("EROFS".into()),
            },
            r#""denied":true,"kind":"persist","family":"git_hooks","call":"openat","path":"/p/.git/hooks/post-commit","result":-30,"errno":"EROFS"}"#,
        );
        assert_golden(
            Body::Persist {
                family: "direnv".into(),
                call: "rename".into(),
                path: "/p/.envrc".into(),
                allowed: true,
                result: 0,
                errno: None,
            },
            r#""denied":false,"kind":"persist","family":"direnv","call":"rename","path":"/p/.envrc","allowed":true,"result":0}"#,
        );
    }

    #[test]
    fn golden_link_and_rename() {
        let pair = |call: &str, result: i64| PathPair {
            call: call.into(),
            old_path: "/home/u/.ssh/id_rsa".into(),
            old_path_truncated: false,
            new_path: "key".into(),
            new_path_truncated: false,
            flags: vec![],
            old_dirfd: None,
            new_dirfd: Some(4),
            result,
            errno: errno_of(result),
        };
        assert_golden(
            Body::Link(pair("linkat", -18)),
            r#""denied":true,"kind":"link","call":"linkat","old_path":"/home/u/.ssh/id_rsa","new_path":"key","new_dirfd":4,"result":-18,"errno":"EXDEV"}"#,
        );
        assert_golden(
            Body::Rename(PathPair {
                flags: vec!["RENAME_NOREPLACE".into()],
                ..pair("renameat2", 0)
            }),
            r#""denied":false,"kind":"rename","call":"renameat2","old_path":"/home/u/.ssh/id_rsa","new_path":"key","flags":["RENAME_NOREPLACE"],"new_dirfd":4,"result":0}"#,
        );
    }

    #[test]
    fn path_source_sits_with_the_task_fields_and_reads_back() {
        let mut rec = AuditRecord::new(Body::Exit {}, Some(&origin()), fixed_ts());
        rec.comm = Some("cat".into());
        rec.path_source = Some("user".into());
        let line = rec.to_json_line();
        assert!(
            line.contains(r#""comm":"cat","path_source":"user","denied":false"#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<AuditRecord>(&line).unwrap(), rec);
    }

    #[test]
    fn golden_connect() {
        assert_golden(
            Body::Connect {
                op: "connect4".into(),
                protocol: "tcp".into(),
                addr: "10.1.2.3".into(),
                port: 443,
                verdict: "deny".into(),
            },
            r#""denied":true,"kind":"connect","op":"connect4","protocol":"tcp","addr":"10.1.2.3","port":443,"verdict":"deny"}"#,
        );
        assert_golden(
            Body::Connect {
                op: "sendmsg6".into(),
                protocol: "udp".into(),
                addr: "::1".into(),
                port: 53,
                verdict: "allow".into(),
            },
            r#""denied":false,"kind":"connect","op":"sendmsg6","protocol":"udp","addr":"::1","port":53,"verdict":"allow"}"#,
        );
    }

    #[test]
    fn golden_landlock() {
        let mut rec = AuditRecord::new(
            Body::Landlock(landlock::Denial {
                blockers: vec!["fs.read_file".into()],
                domain: "173d929d5".into(),
                path: Some("/etc/hostname".into()),
                dev: Some("vda".into()),
                ino: Some(611),
                ..Default::default()
            }),
            Some(&origin()),
            fixed_ts(),
        );
        rec.path_source = Some("landlock".into());
        rec.call_id = Some(serde_json::json!(4));
        rec.tool = Some("read".into());
        let line = rec.to_json_line();
        assert!(
            line.ends_with(r#""path_source":"landlock","tool":"read","call_id":4,"denied":true,"kind":"landlock","blockers":["fs.read_file"],"domain":"173d929d5","path":"/etc/hostname","dev":"vda","ino":611}"#),
            "{line}"
        );
        assert_golden(
            Body::Landlock(landlock::Denial {
                blockers: vec!["scope.abstract_unix_socket".into()],
                domain: "2".into(),
                path: Some("sock".into()),
                abstract_addr: true,
                ..Default::default()
            }),
            r#""denied":true,"kind":"landlock","blockers":["scope.abstract_unix_socket"],"domain":"2","path":"sock","abstract_addr":true}"#,
        );
        let back: AuditRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn golden_loss() {
        let rec = AuditRecord::new(
            Body::Loss {
                lost: 12,
                total: 40,
                source: "ringbuf".into(),
                first_ts: None,
                last_ts: None,
                denials: None,
            },
            None,
            fixed_ts(),
        );
        assert_eq!(
            rec.to_json_line(),
            r#"{"v":1,"ts":"2023-11-14T22:13:20.123456Z","denied":false,"kind":"loss","lost":12,"total":40,"source":"ringbuf"}"#
        );
        let rec = AuditRecord::new(
            Body::Loss {
                lost: 3,
                total: 3,
                source: "audit_sink".into(),
                first_ts: Some("2023-11-14T22:13:19.000001Z".into()),
                last_ts: Some("2023-11-14T22:13:20.000002Z".into()),
                denials: None,
            },
            None,
            fixed_ts(),
        );
        assert_eq!(
            rec.to_json_line(),
            r#"{"v":1,"ts":"2023-11-14T22:13:20.123456Z","denied":false,"kind":"loss","lost":3,"total":3,"source":"audit_sink","first_ts":"2023-11-14T22:13:19.000001Z","last_ts":"2023-11-14T22:13:20.000002Z"}"#
        );
        assert_golden(
            Body::Loss {
                lost: 900,
                total: 940,
                source: "rate".into(),
                first_ts: None,
                last_ts: None,
                denials: Some(3),
            },
            r#""denied":false,"kind":"loss","lost":900,"total":940,"source":"rate","denials":3}"#,
        );
    }

    #[test]
    fn golden_limit() {
        assert_golden(
            Body::Limit {
                resource: "pids".into(),
                event: "max".into(),
                limit: 64,
                count: 1200,
                total: 1200,
            },
            r#""denied":true,"kind":"limit","resource":"pids","event":"max","limit":64,"count":1200,"total":1200}"#,
        );
        let memory = |event: &str| Body::Limit {
            resource: "memory".into(),
            event: event.into(),
            limit: 64 << 20,
            count: 1,
            total: 1,
        };
        assert!(!memory("max").is_denied());
        assert!(memory("oom_kill").is_denied());
    }

    #[test]
    fn record_with_task_fields_keeps_key_order() {
        let mut rec = AuditRecord::new(Body::Fork { child_pid: 7 }, Some(&origin()), fixed_ts());
        rec.pid = Some(5);
        rec.tid = Some(6);
        rec.comm = Some("python3".into());
        assert_eq!(
            rec.to_json_line(),
            r#"{"v":1,"ts":"2023-11-14T22:13:20.123456Z","server":"time","policy":"time","launch":"time-3","pid":5,"tid":6,"uid":1000,"comm":"python3","denied":false,"kind":"fork","child_pid":7}"#
        );
        assert_eq!(rec.origin(), Some(origin()));
    }

    #[test]
    fn eperm_counts_as_denied_but_enoent_does_not() {
        let open = |result| Body::Open {
            call: "open".into(),
            path: "/x".into(),
            path_truncated: false,
            flags: vec![],
            mode: None,
            dirfd: None,
            result,
            errno: errno_of(result),
        };
        assert!(open(-1).is_denied());
        assert!(!open(-2).is_denied());
        assert!(!open(0).is_denied());
    }

    #[test]
    fn errno_names_common_and_fallback() {
        assert_eq!(errno_name(13), "EACCES");
        assert_eq!(errno_name(i64::from(libc::EMFILE)), "EMFILE");
        assert_eq!(errno_name(4095), "E4095");
        assert_eq!(errno_of(3), None);
        assert_eq!(errno_of(-2).as_deref(), Some("ENOENT"));
    }

    #[test]
    fn timestamps_out_of_range_are_clamped_not_panicking() {
        let early = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(format_ts(early), "1970-01-01T00:00:00.000000Z");
        let late = UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 1000);
        assert_eq!(format_ts(late), "9999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn kinds_lists_every_body_kind() {
        for body in [
            Body::Exit {},
            Body::Fork { child_pid: 1 },
            Body::ServerExit {
                exit_code: None,
                signal: None,
            },
            Body::Mcp {
                event: "session".into(),
                detail: serde_json::Value::Null,
            },
            Body::ToolChanged {
                change: "added".into(),
                action: "warn".into(),
                old_hash: None,
                new_hash: None,
            },
            Body::Syscall {
                name: "bpf".into(),
                result: -1,
                errno: None,
            },
            Body::IoUring {
                op: "openat".into(),
            },
            Body::SecretMinted {
                env: "T".into(),
                helper: "h".into(),
                path: "/h".into(),
                ttl_secs: 60,
                expires_at: String::new(),
            },
            Body::Limit {
                resource: "pids".into(),
                event: "max".into(),
                limit: 1,
                count: 1,
                total: 1,
            },
        ] {
            assert!(KINDS.contains(&body.kind()));
        }
        let call = PathCall {
            call: "mkdir".into(),
            path: "d".into(),
            path_truncated: false,
            mode: None,
            dirfd: None,
            fd: None,
            result: 0,
            errno: None,
        };
        for body in [
            Body::Mkdir(call.clone()),
            Body::Unlink(call.clone()),
            Body::Rmdir(call.clone()),
            Body::Chdir(call.clone()),
            Body::Attr(call),
            Body::Persist {
                family: "direnv".into(),
                call: "openat".into(),
                path: ".envrc".into(),
                allowed: false,
                result: 3,
                errno: None,
            },
            Body::Landlock(Default::default()),
        ] {
            assert!(KINDS.contains(&body.kind()));
        }
        assert_eq!(KINDS.len(), 29);
    }
}
