//! Ring-buffer sample bytes → [`AuditRecord`].
//!
//! A sample is a `Record<T>` from `mcpguard_common::event`: a header whose
//! `kind` names the payload type. Nothing is read before the kind is known
//! and both the header's `len` and the sample's real length cover the whole
//! record; anything else is a [`DecodeError`], which the daemon counts as a
//! `decode` loss rather than guessing.

use std::{
    mem::size_of,
    net::Ipv6Addr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use mcpguard_common::{
    event::{
        kind, net_op, open_call, pair_call, path_call, path_source, ConnectEvent, EventHeader,
        ExecEvent, ExitEvent, ForkEvent, IoUringEvent, OpenEvent, PathEvent, PathPairEvent, Record,
        SocketEvent, SyscallEvent, UnixConnectEvent, VERDICT_ALLOW, VERDICT_DENY,
        VERDICT_WOULD_DENY,
    },
    limits::ARGV_SLOTS,
};

use super::{errno_of, AuditRecord, Body, Origin, PathCall, PathPair, SCHEMA_VERSION};
use crate::kernel::sockets::inet_protocol_name;

/// Why a sample could not become a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("sample of {len} bytes is shorter than an event header ({need} bytes)")]
    ShortHeader { len: usize, need: usize },
    #[error("unknown event kind {kind} ({len}-byte sample)")]
    UnknownKind { kind: u32, len: usize },
    #[error("{name} sample is {len} bytes, the record needs {need}")]
    ShortSample {
        name: &'static str,
        len: usize,
        need: usize,
    },
    #[error("{name} header says {header_len} bytes, the record needs {need}")]
    ShortHeaderLen {
        name: &'static str,
        header_len: u32,
        need: usize,
    },
    #[error("{name} event has {field} = {value}, which this build does not know")]
    BadField {
        name: &'static str,
        field: &'static str,
        value: u64,
    },
}

/// Maps kernel CLOCK_BOOTTIME stamps to wall-clock time.
///
/// The offset is sampled once, so a later `settimeofday` or NTP step shifts
/// records until [`BootClock::refresh`] is called; the daemon refreshes
/// periodically. Boot time itself never jumps, so event order is kept.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    /// realtime − boottime, in nanoseconds.
    offset_ns: i128,
}

impl BootClock {
    pub fn new() -> Self {
        BootClock {
            offset_ns: sample_offset_ns(),
        }
    }

    /// Re-sample the offset (after the wall clock was stepped).
    pub fn refresh(&mut self) {
        self.offset_ns = sample_offset_ns();
    }

    /// A clock with a fixed offset, for tests and replay.
    pub fn with_offset_ns(offset_ns: i128) -> Self {
        BootClock { offset_ns }
    }

    /// Wall-clock time of a `bpf_ktime_get_boot_ns()` stamp.
    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        let ns = self.offset_ns + i128::from(boot_ns);
        if ns >= 0 {
            let ns = u128::try_from(ns).unwrap_or(0);
            let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX);
            // Remainder of a division by 1e9 always fits in u32.
            let nanos = (ns % 1_000_000_000) as u32;
            UNIX_EPOCH
                .checked_add(Duration::new(secs, nanos))
                .unwrap_or(UNIX_EPOCH)
        } else {
            let ns = ns.unsigned_abs();
            let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX);
            let nanos = (ns % 1_000_000_000) as u32;
            UNIX_EPOCH
                .checked_sub(Duration::new(secs, nanos))
                .unwrap_or(UNIX_EPOCH)
        }
    }
}

impl Default for BootClock {
    fn default() -> Self {
        Self::new()
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    // Both clocks exist on every kernel mcpguard supports (BOOTTIME: 2.6.39);
    // failure would mean a broken libc, and 0 only skews the timestamps.
    if rc != 0 {
        tracing::warn!(clock, "clock_gettime failed; audit timestamps may be off");
        return 0;
    }
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_BOOTTIME now, in the kernel programs' time base
/// (`bpf_ktime_get_boot_ns`).
pub fn boot_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_BOOTTIME)).unwrap_or(0)
}

/// The cgroup id and CLOCK_BOOTTIME timestamp of a sample, if it is long
/// enough to have a header.
pub fn header_of(sample: &[u8]) -> Option<(u64, u64)> {
    read_checked::<EventHeader>(sample, "header", None)
        .ok()
        .map(|h| (h.cgroup_id, h.ts_ns))
}

/// Bracket the realtime read between two boottime reads so a preemption
/// between them costs at most half its length in accuracy.
fn sample_offset_ns() -> i128 {
    let before = clock_ns(libc::CLOCK_BOOTTIME);
    let real = clock_ns(libc::CLOCK_REALTIME);
    let after = clock_ns(libc::CLOCK_BOOTTIME);
    real - (before + after) / 2
}

/// Decode one ring-buffer sample. `origin` maps the header's cgroup id to the
/// launch it belongs to; it is called at most once, and only for samples
/// that decode.
pub fn decode(
    sample: &[u8],
    clock: &BootClock,
    origin: impl FnOnce(u64) -> Option<Origin>,
) -> Result<AuditRecord, DecodeError> {
    let header: EventHeader = read_checked(sample, "header", None)?;
    let (body, source) = body_of(&header, sample)?;
    let origin = origin(header.cgroup_id);
    let (comm, _) = c_string(&header.comm);
    Ok(AuditRecord {
        v: SCHEMA_VERSION,
        ts: super::format_ts(clock.wall(header.ts_ns)),
        server: origin.as_ref().map(|o| o.server.clone()),
        policy: origin.as_ref().map(|o| o.policy.clone()),
        launch: origin.map(|o| o.launch),
        pid: Some(header.pid),
        tid: Some(header.tid),
        uid: Some(header.uid),
        comm: Some(comm),
        path_source: source.map(str::to_owned),
        tool: None,
        call_id: None,
        calls: None,
        denied: body.is_denied(),
        body,
    })
}

/// Paths read by the kernel programs come from the caller's memory unless
/// the event says otherwise.
const USER: Option<&str> = Some("user");

/// The body of a sample of kind `header.kind`, and where its path was read
/// from (`None`: it has no path).
fn body_of(
    header: &EventHeader,
    sample: &[u8],
) -> Result<(Body, Option<&'static str>), DecodeError> {
    let len = Some(header.len);
    Ok(match header.kind {
        kind::EXEC => {
            let ev = read_checked::<Record<ExecEvent>>(sample, "exec", len)?.payload;
            let source = Some(source_name(ev.filename_source)?);
            (exec_body(&ev), source)
        }
        kind::FORK => {
            let ev = read_checked::<Record<ForkEvent>>(sample, "fork", len)?.payload;
            (
                Body::Fork {
                    child_pid: ev.child_pid,
                },
                None,
            )
        }
        kind::EXIT => {
            // Checked for length like the others so a truncated exit is a
            // counted drop, not a silently accepted record.
            read_checked::<Record<ExitEvent>>(sample, "exit", len)?;
            (Body::Exit {}, None)
        }
        kind::OPEN => {
            let ev = read_checked::<Record<OpenEvent>>(sample, "open", len)?.payload;
            (open_body(&ev)?, USER)
        }
        kind::MKDIR | kind::UNLINK | kind::RMDIR | kind::CHDIR => {
            (path_body(header.kind, sample, header.len)?, USER)
        }
        kind::ATTR => {
            let body = attr_body(sample, header.len)?;
            // Calls on an fd carry no path.
            let source = if matches!(&body, Body::Attr(p) if p.fd.is_none()) {
                USER
            } else {
                None
            };
            (body, source)
        }
        kind::LINK => (Body::Link(pair_body(sample, header.len, "link")?), USER),
        kind::RENAME => (Body::Rename(pair_body(sample, header.len, "rename")?), USER),
        kind::CONNECT => {
            let ev = read_checked::<Record<ConnectEvent>>(sample, "connect", len)?.payload;
            (connect_body(&ev)?, None)
        }
        kind::SOCKET => {
            let ev = read_checked::<Record<SocketEvent>>(sample, "socket", len)?.payload;
            (socket_body(&ev)?, None)
        }
        kind::IO_URING => {
            let ev = read_checked::<Record<IoUringEvent>>(sample, "io_uring", len)?.payload;
            (
                Body::IoUring {
                    op: io_uring_op(ev.opcode),
                },
                None,
            )
        }
        kind::SYSCALL => {
            let ev = read_checked::<Record<SyscallEvent>>(sample, "syscall", len)?.payload;
            (syscall_body(&ev)?, None)
        }
        kind::UNIX_CONNECT => {
            let ev = read_checked::<Record<UnixConnectEvent>>(sample, "unix_connect", len)?.payload;
            (unix_connect_body(&ev), USER)
        }
        other => {
            return Err(DecodeError::UnknownKind {
                kind: other,
                len: sample.len(),
            })
        }
    })
}

fn socket_body(ev: &SocketEvent) -> Result<Body, DecodeError> {
    let verdict = match ev.verdict {
        VERDICT_ALLOW => "allow",
        VERDICT_DENY => "deny",
        VERDICT_WOULD_DENY => "would_deny",
        other => {
            return Err(DecodeError::BadField {
                name: "socket",
                field: "verdict",
                value: u64::from(other),
            })
        }
    };
    Ok(Body::Socket {
        family: match ev.family {
            2 => "inet".into(),
            10 => "inet6".into(),
            f => f.to_string(),
        },
        sock_type: match ev.sock_type {
            1 => "stream".into(),
            2 => "dgram".into(),
            3 => "raw".into(),
            5 => "seqpacket".into(),
            t => t.to_string(),
        },
        protocol: inet_protocol_name(ev.protocol),
        verdict: verdict.into(),
    })
}

fn syscall_body(ev: &SyscallEvent) -> Result<Body, DecodeError> {
    let name = crate::kernel::syscalls::name_of(ev.nr).ok_or(DecodeError::BadField {
        name: "syscall",
        field: "nr",
        value: u64::from(ev.nr),
    })?;
    Ok(Body::Syscall {
        name: name.to_owned(),
        result: ev.ret,
        errno: errno_of(ev.ret),
    })
}

fn unix_connect_body(ev: &UnixConnectEvent) -> Body {
    let (path, path_truncated) = c_string(&ev.path);
    Body::UnixConnect {
        path,
        path_truncated,
        abstract_addr: ev.abstract_addr != 0,
        result: ev.ret,
        errno: errno_of(ev.ret),
        fenced: false,
    }
}

/// Marker for the kernel-written types [`read_checked`] copies out of raw
/// bytes.
///
/// # Safety
///
/// Implement it only for `#[repr(C)]` types whose fields are integers and
/// arrays of integers (or other `Plain` types), so every bit pattern is a
/// valid value.
unsafe trait Plain: Copy {}
// SAFETY: `Record` is `#[repr(C)]`, a `Plain` header and a `Plain` payload.
unsafe impl<T: Plain> Plain for Record<T> {}
// SAFETY: `#[repr(C)]` in mcpguard-common, integer fields only.
unsafe impl Plain for EventHeader {}
// SAFETY: `#[repr(C)]` in mcpguard-common, integer fields only.
unsafe impl Plain for ExecEvent {}
// SAFETY: `#[repr(C)]` in mcpguard-common, integer fields only.
unsafe impl Plain for ForkEvent {}
// SAFETY: `#[repr(C)]` in mcpguard-common, integer fields only.
unsafe impl Plain for ExitEvent {}
// SAFETY: `#[repr(C)]` in mcpguard-common, integer fields only.
unsafe impl Plain for OpenEvent {}
// SAFETY: `#[repr(C)]` in mcpguard-common, integer fields only.
unsafe impl Plain for ConnectEvent {}
// SAFETY: `#[repr(C)]` in mcpguard-common, integer fields only.
unsafe impl Plain for UnixConnectEvent {}
// SAFETY: `#[repr(C)]` in mcpguard-common, integer fields only.
unsafe impl Plain for SocketEvent {}
// SAFETY: `#[repr(C)]` in mcpguard-common, integer fields only.
unsafe impl Plain for SyscallEvent {}
// SAFETY: `#[repr(C)]` in mcpguard-common, integer fields only.
unsafe impl Plain for IoUringEvent {}
// SAFETY: `#[repr(C)]` in mcpguard-common, integer fields only.
unsafe impl Plain for PathPairEvent {}

/// Copy a `T` out of the start of `sample` after checking that both the
/// sample and (when given) the header's `len` cover all of it.
fn read_checked<T: Plain>(
    sample: &[u8],
    name: &'static str,
    header_len: Option<u32>,
) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if sample.len() < need {
        return Err(match header_len {
            None => DecodeError::ShortHeader {
                len: sample.len(),
                need,
            },
            Some(_) => DecodeError::ShortSample {
                name,
                len: sample.len(),
                need,
            },
        });
    }
    if let Some(header_len) = header_len {
        if (header_len as usize) < need {
            return Err(DecodeError::ShortHeaderLen {
                name,
                header_len,
                need,
            });
        }
    }
    // SAFETY: `sample` holds at least `size_of::<T>()` bytes (checked above);
    // `read_unaligned` copies them without alignment requirements (ring
    // buffer samples are only 8-byte aligned by convention, not by type);
    // `T: Plain` guarantees any bytes form a valid `T`.
    Ok(unsafe { std::ptr::read_unaligned(sample.as_ptr().cast::<T>()) })
}

/// A NUL-terminated buffer as a string, lossily; `true` when the buffer had
/// no NUL, i.e. the kernel cut the string at the buffer's size.
fn c_string(buf: &[u8]) -> (String, bool) {
    match buf.iter().position(|&b| b == 0) {
        Some(end) => (String::from_utf8_lossy(&buf[..end]).into_owned(), false),
        None => (String::from_utf8_lossy(buf).into_owned(), true),
    }
}

fn exec_body(ev: &ExecEvent) -> Body {
    let (filename, path_truncated) = c_string(&ev.filename);
    // A count beyond the slots is a kernel-side bug; never index past them.
    let argc = (ev.argc as usize).min(ARGV_SLOTS);
    let argv = ev.argv[..argc].iter().map(|a| c_string(a).0).collect();
    Body::Exec {
        filename,
        path_truncated,
        argv,
        argc_truncated: ev.argc as usize >= ARGV_SLOTS,
        result: ev.ret,
        errno: errno_of(i64::from(ev.ret)),
    }
}

/// `IORING_OP_*` names, by opcode (`<linux/io_uring.h>`).
const IO_URING_OPS: &[&str] = &[
    "nop",
    "readv",
    "writev",
    "fsync",
    "read_fixed",
    "write_fixed",
    "poll_add",
    "poll_remove",
    "sync_file_range",
    "sendmsg",
    "recvmsg",
    "timeout",
    "timeout_remove",
    "accept",
    "async_cancel",
    "link_timeout",
    "connect",
    "fallocate",
    "openat",
    "close",
    "files_update",
    "statx",
    "read",
    "write",
    "fadvise",
    "madvise",
    "send",
    "recv",
    "openat2",
    "epoll_ctl",
    "splice",
    "provide_buffers",
    "remove_buffers",
    "tee",
    "shutdown",
    "renameat",
    "unlinkat",
    "mkdirat",
    "symlinkat",
    "linkat",
    "msg_ring",
    "fsetxattr",
    "setxattr",
    "fgetxattr",
    "getxattr",
    "socket",
    "uring_cmd",
    "send_zc",
    "sendmsg_zc",
    "read_multishot",
    "waitid",
    "futex_wait",
    "futex_wake",
    "futex_waitv",
    "fixed_fd_install",
    "ftruncate",
    "bind",
    "listen",
];

fn io_uring_op(opcode: u32) -> String {
    IO_URING_OPS
        .get(opcode as usize)
        .map_or_else(|| format!("op{opcode}"), |op| (*op).to_owned())
}

fn open_body(ev: &OpenEvent) -> Result<Body, DecodeError> {
    let call = match ev.call {
        open_call::OPENAT => "openat",
        open_call::OPENAT2 => "openat2",
        open_call::OPEN => "open",
        open_call::CREAT => "creat",
        other => {
            return Err(DecodeError::BadField {
                name: "open",
                field: "call",
                value: u64::from(other),
            })
        }
    };
    let (path, path_truncated) = c_string(&ev.path);
    let flags = ev.flags as i32;
    let mode_used = flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
    // `open`/`creat` have no dirfd argument; whatever the kernel side put
    // there means nothing.
    let has_dirfd = matches!(ev.call, open_call::OPENAT | open_call::OPENAT2);
    let mut flags = open_flag_names(ev.flags);
    flags.extend(bit_names(ev.resolve, RESOLVE_NAMES));
    Ok(Body::Open {
        call: call.to_string(),
        path,
        path_truncated,
        flags,
        mode: mode_used.then_some(ev.mode),
        dirfd: (has_dirfd && ev.dirfd != libc::AT_FDCWD).then_some(ev.dirfd),
        result: ev.ret,
        errno: errno_of(ev.ret),
    })
}

/// A mkdir, unlink, rmdir or chdir sample (`kind`) as its record; the
/// call must belong to the kind.
fn path_body(kind: u32, sample: &[u8], header_len: u32) -> Result<Body, DecodeError> {
    let name = match kind {
        kind::MKDIR => "mkdir",
        kind::UNLINK => "unlink",
        kind::RMDIR => "rmdir",
        _ => "chdir",
    };
    let ev = &read_checked::<Record<PathEvent>>(sample, name, Some(header_len))?.payload;
    let call = match (kind, ev.call) {
        (kind::MKDIR, path_call::MKDIR) => "mkdir",
        (kind::MKDIR, path_call::MKDIRAT) => "mkdirat",
        (kind::UNLINK | kind::RMDIR, path_call::UNLINKAT) => "unlinkat",
        (kind::UNLINK, path_call::UNLINK) => "unlink",
        (kind::RMDIR, path_call::RMDIR) => "rmdir",
        (kind::CHDIR, path_call::CHDIR) => "chdir",
        (_, other) => {
            return Err(DecodeError::BadField {
                name,
                field: "call",
                value: u64::from(other),
            })
        }
    };
    let (path, path_truncated) = c_string(&ev.path);
    let has_dirfd = matches!(ev.call, path_call::MKDIRAT | path_call::UNLINKAT);
    let p = PathCall {
        call: call.to_string(),
        path,
        path_truncated,
        mode: (kind == kind::MKDIR).then_some(ev.mode),
        dirfd: (has_dirfd && ev.dirfd != libc::AT_FDCWD).then_some(ev.dirfd),
        fd: None,
        result: ev.ret,
        errno: errno_of(ev.ret),
    };
    Ok(match kind {
        kind::MKDIR => Body::Mkdir(p),
        kind::UNLINK => Body::Unlink(p),
        kind::RMDIR => Body::Rmdir(p),
        _ => Body::Chdir(p),
    })
}

/// An attribute-change sample: `call` is the syscall number, `dirfd` the
/// directory fd (or, for calls on an fd, the fd acted on).
fn attr_body(sample: &[u8], header_len: u32) -> Result<Body, DecodeError> {
    let ev = &read_checked::<Record<PathEvent>>(sample, "attr", Some(header_len))?.payload;
    let call = crate::kernel::attrs::name_of(ev.call).ok_or(DecodeError::BadField {
        name: "attr",
        field: "call",
        value: u64::from(ev.call),
    })?;
    let on_fd = crate::kernel::attrs::on_fd(ev.call);
    let (path, path_truncated) = if on_fd {
        (String::new(), false)
    } else {
        c_string(&ev.path)
    };
    let has_mode = call.contains("chmod") || call.starts_with("mknod");
    Ok(Body::Attr(PathCall {
        call: call.to_string(),
        path,
        path_truncated,
        mode: has_mode.then_some(ev.mode),
        dirfd: (!on_fd && ev.dirfd != libc::AT_FDCWD).then_some(ev.dirfd),
        fd: on_fd.then_some(ev.dirfd),
        result: ev.ret,
        errno: errno_of(ev.ret),
    }))
}

/// Where an event's path came from, by its [`path_source`] value.
fn source_name(source: u32) -> Result<&'static str, DecodeError> {
    match source {
        path_source::USER => Ok("user"),
        path_source::KERNEL => Ok("kernel"),
        other => Err(DecodeError::BadField {
            name: "exec",
            field: "filename_source",
            value: u64::from(other),
        }),
    }
}

/// The names of the set bits of `bits`; bits without a name as one hex
/// value, so nothing is hidden.
pub fn bit_names(bits: u32, named: &[(u32, &str)]) -> Vec<String> {
    let mut rest = bits;
    let mut names: Vec<String> = named
        .iter()
        .filter(|&&(bit, _)| bits & bit != 0)
        .map(|&(bit, name)| {
            rest &= !bit;
            name.to_string()
        })
        .collect();
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names
}

/// `openat2`'s `RESOLVE_*` flags.
pub const RESOLVE_NAMES: &[(u32, &str)] = &[
    (0x01, "RESOLVE_NO_XDEV"),
    (0x02, "RESOLVE_NO_MAGICLINKS"),
    (0x04, "RESOLVE_NO_SYMLINKS"),
    (0x08, "RESOLVE_BENEATH"),
    (0x10, "RESOLVE_IN_ROOT"),
    (0x20, "RESOLVE_CACHED"),
];

/// A `link` or `rename` sample (`name` is the kind) as its two paths.
fn pair_body(sample: &[u8], header_len: u32, name: &'static str) -> Result<PathPair, DecodeError> {
    let ev = &read_checked::<Record<PathPairEvent>>(sample, name, Some(header_len))?.payload;
    let bad = |value: u32| DecodeError::BadField {
        name,
        field: "call",
        value: u64::from(value),
    };
    let (call, flag_names): (&str, &[(u32, &str)]) = match (name, ev.call) {
        ("link", pair_call::LINK) => ("link", &[]),
        ("link", pair_call::LINKAT) => (
            "linkat",
            &[(0x400, "AT_SYMLINK_FOLLOW"), (0x1000, "AT_EMPTY_PATH")],
        ),
        ("link", pair_call::SYMLINK) => ("symlink", &[]),
        ("link", pair_call::SYMLINKAT) => ("symlinkat", &[]),
        ("rename", pair_call::RENAME) => ("rename", &[]),
        ("rename", pair_call::RENAMEAT) => ("renameat", &[]),
        ("rename", pair_call::RENAMEAT2) => (
            "renameat2",
            &[
                (1, "RENAME_NOREPLACE"),
                (2, "RENAME_EXCHANGE"),
                (4, "RENAME_WHITEOUT"),
            ],
        ),
        (_, other) => return Err(bad(other)),
    };
    let (old_path, old_path_truncated) = c_string(&ev.old_path);
    let (new_path, new_path_truncated) = c_string(&ev.new_path);
    let dirfd = |fd: i32| (fd != libc::AT_FDCWD).then_some(fd);
    Ok(PathPair {
        call: call.to_string(),
        old_path,
        old_path_truncated,
        new_path,
        new_path_truncated,
        flags: bit_names(ev.flags, flag_names),
        old_dirfd: dirfd(ev.old_dirfd),
        new_dirfd: dirfd(ev.new_dirfd),
        result: ev.ret,
        errno: errno_of(ev.ret),
    })
}

/// `open(2)` flags as names, the access mode first; bits without a name
/// are kept as one hex value so nothing is hidden.
pub fn open_flag_names(flags: u32) -> Vec<String> {
    let flags = flags as i32;
    let mut names = vec![match flags & libc::O_ACCMODE {
        libc::O_RDONLY => "O_RDONLY".to_string(),
        libc::O_WRONLY => "O_WRONLY".to_string(),
        libc::O_RDWR => "O_RDWR".to_string(),
        other => format!("O_ACCMODE={other}"),
    }];
    let mut rest = flags & !libc::O_ACCMODE;
    // O_TMPFILE includes the O_DIRECTORY bit; name it first so the
    // directory bit is not reported twice.
    const NAMED: &[(i32, &str)] = &[
        (libc::O_TMPFILE, "O_TMPFILE"),
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_CLOEXEC, "O_CLOEXEC"),
        (libc::O_PATH, "O_PATH"),
    ];
    for &(bits, name) in NAMED {
        if rest & bits == bits {
            names.push(name.to_string());
            rest &= !bits;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names
}

fn connect_body(ev: &ConnectEvent) -> Result<Body, DecodeError> {
    let bad = |field, value: u32| DecodeError::BadField {
        name: "connect",
        field,
        value: u64::from(value),
    };
    let op = match ev.op {
        net_op::CONNECT4 => "connect4",
        net_op::CONNECT6 => "connect6",
        net_op::SENDMSG4 => "sendmsg4",
        net_op::SENDMSG6 => "sendmsg6",
        net_op::BIND4 => "bind4",
        net_op::BIND6 => "bind6",
        net_op::INBOUND4 => "inbound4",
        net_op::INBOUND6 => "inbound6",
        other => return Err(bad("op", other)),
    };
    // An unknown verdict cannot be reported as either: refuse rather than
    // mislabel a decision.
    let verdict = match ev.verdict {
        VERDICT_ALLOW => "allow",
        VERDICT_DENY => "deny",
        VERDICT_WOULD_DENY => "would_deny",
        other => return Err(bad("verdict", other)),
    };
    let protocol = inet_protocol_name(ev.protocol);
    let v6 = Ipv6Addr::from(ev.addr);
    let addr = match v6.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => v6.to_string(),
    };
    Ok(Body::Connect {
        op: op.to_string(),
        protocol,
        addr,
        port: ev.port,
        verdict: verdict.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use mcpguard_common::limits::{ARG_LEN, COMM_LEN, PATH_LEN};

    use super::*;

    /// 2023-11-14T22:13:20Z, as realtime − boottime for a 1 s boot stamp.
    const OFFSET_NS: i128 = 1_699_999_999_000_000_000;
    const TS_NS: u64 = 1_123_456_789;
    const CGROUP: u64 = 777;

    fn origin_for(id: u64) -> Option<Origin> {
        (id == CGROUP).then(|| Origin {
            server: "time".into(),
            policy: "time".into(),
            launch: "time-3".into(),
            uid: 1000,
        })
    }

    fn buf<const N: usize>(s: &str) -> [u8; N] {
        let mut b = [0u8; N];
        b[..s.len()].copy_from_slice(s.as_bytes());
        b
    }

    fn header(kind: u32, len: usize) -> EventHeader {
        EventHeader {
            kind,
            len: len as u32,
            ts_ns: TS_NS,
            cgroup_id: CGROUP,
            pid: 4242,
            tid: 4243,
            uid: 1000,
            gid: 1000,
            comm: buf::<COMM_LEN>("python3"),
        }
    }

    /// The bytes the kernel would write for `payload`.
    fn sample<T: Plain>(kind: u32, payload: T) -> Vec<u8> {
        let rec = Record {
            header: header(kind, size_of::<Record<T>>()),
            payload,
        };
        // SAFETY: `rec` is a live, initialised `Record<T>`; the event types
        // have no padding (their sizes are const-asserted to the sum of
        // their fields), so every byte read is initialised.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&rec as *const Record<T>).cast::<u8>(),
                size_of::<Record<T>>(),
            )
        };
        bytes.to_vec()
    }

    fn decode_ok(bytes: &[u8]) -> AuditRecord {
        decode(bytes, &BootClock::with_offset_ns(OFFSET_NS), origin_for).expect("decodes")
    }

    fn exec_event(ret: i32, argc: u32, args: &[&str]) -> ExecEvent {
        let mut argv = [[0u8; ARG_LEN]; ARGV_SLOTS];
        for (slot, a) in argv.iter_mut().zip(args) {
            *slot = buf::<ARG_LEN>(a);
        }
        ExecEvent {
            ret,
            argc,
            filename_source: path_source::USER,
            _pad: 0,
            filename: buf::<PATH_LEN>("/usr/bin/curl"),
            argv,
        }
    }

    fn open_event(call: u32, flags: i32, dirfd: i32, ret: i64, path: [u8; PATH_LEN]) -> OpenEvent {
        OpenEvent {
            ret,
            flags: flags as u32,
            mode: 0o644,
            dirfd,
            call,
            resolve: 0,
            _pad: 0,
            path,
        }
    }

    #[test]
    fn attr_records_name_the_call_and_keep_path_or_fd() {
        let chmod = decode_ok(&sample(
            kind::ATTR,
            open_event(
                libc::SYS_fchmodat as u32,
                0,
                libc::AT_FDCWD,
                -i64::from(libc::EROFS),
                buf::<PATH_LEN>("/home/u/.ssh/id_rsa"),
            ),
        ));
        assert!(chmod.denied, "EROFS is the read-only view's refusal");
        assert_eq!(chmod.path_source.as_deref(), Some("user"));
        match &chmod.body {
            Body::Attr(p) => {
                assert_eq!(
                    (p.call.as_str(), p.path.as_str(), p.mode, p.dirfd, p.fd),
                    ("fchmodat", "/home/u/.ssh/id_rsa", Some(0o644), None, None)
                );
                assert_eq!(p.errno.as_deref(), Some("EROFS"));
            }
            other => panic!("expected attr, got {other:?}"),
        }
        // A call on an fd: no path, the fd kept, `ftruncate`'s EINVAL a
        // refusal.
        let ftruncate = decode_ok(&sample(
            kind::ATTR,
            open_event(
                libc::SYS_ftruncate as u32,
                0,
                5,
                -i64::from(libc::EINVAL),
                buf::<PATH_LEN>("stale"),
            ),
        ));
        assert!(ftruncate.denied);
        assert_eq!(ftruncate.path_source, None);
        assert!(
            matches!(&ftruncate.body, Body::Attr(p) if p.fd == Some(5) && p.path.is_empty() && p.dirfd.is_none() && p.mode.is_none())
        );
        // An unknown syscall number is a counted drop.
        let err = decode(
            &sample(kind::ATTR, open_event(9999, 0, 0, -1, [0; PATH_LEN])),
            &BootClock::with_offset_ns(OFFSET_NS),
            origin_for,
        );
        assert!(err.is_err());
    }

    #[test]
    fn one_path_calls_decode_by_kind_and_call() {
        let mkdir = decode_ok(&sample(
            kind::MKDIR,
            open_event(path_call::MKDIRAT, 0, 7, -13, buf::<PATH_LEN>("objects/ab")),
        ));
        assert!(mkdir.denied);
        match &mkdir.body {
            Body::Mkdir(p) => {
                assert_eq!(
                    (p.call.as_str(), p.path.as_str(), p.mode, p.dirfd),
                    ("mkdirat", "objects/ab", Some(0o644), Some(7))
                );
                assert_eq!(p.errno.as_deref(), Some("EACCES"));
            }
            other => panic!("expected mkdir, got {other:?}"),
        }
        let rmdir = decode_ok(&sample(
            kind::RMDIR,
            open_event(
                path_call::UNLINKAT,
                0x200,
                libc::AT_FDCWD,
                0,
                buf::<PATH_LEN>("d"),
            ),
        ));
        assert!(
            matches!(&rmdir.body, Body::Rmdir(p) if p.call == "unlinkat" && p.dirfd.is_none() && p.mode.is_none())
        );
        let chdir = decode_ok(&sample(
            kind::CHDIR,
            open_event(
                path_call::CHDIR,
                0,
                libc::AT_FDCWD,
                0,
                buf::<PATH_LEN>("/repo"),
            ),
        ));
        assert_eq!(chdir.body.kind(), "chdir");
        assert_eq!(chdir.path_source.as_deref(), Some("user"));
        // A call that does not belong to the kind is a counted drop.
        let err = decode(
            &sample(
                kind::UNLINK,
                open_event(path_call::MKDIR, 0, 0, 0, [0; PATH_LEN]),
            ),
            &BootClock::with_offset_ns(0),
            origin_for,
        )
        .unwrap_err();
        assert!(
            matches!(err, DecodeError::BadField { name: "unlink", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn exec_record_with_header_fields_and_wall_time() {
        let rec = decode_ok(&sample(
            kind::EXEC,
            exec_event(-13, 2, &["curl", "http://x"]),
        ));
        assert_eq!(
            rec.to_json_line(),
            r#"{"v":1,"ts":"2023-11-14T22:13:20.123456Z","server":"time","policy":"time","launch":"time-3","pid":4242,"tid":4243,"uid":1000,"comm":"python3","path_source":"user","denied":true,"kind":"exec","filename":"/usr/bin/curl","argv":["curl","http://x"],"argc_truncated":false,"result":-13,"errno":"EACCES"}"#
        );
    }

    #[test]
    fn exec_with_all_slots_used_is_marked_and_bad_argc_is_clamped() {
        let args = ["a", "b", "c", "d", "e", "f"];
        let rec = decode_ok(&sample(kind::EXEC, exec_event(0, 99, &args)));
        match rec.body {
            Body::Exec {
                argv,
                argc_truncated,
                errno,
                ..
            } => {
                assert_eq!(argv, args);
                assert!(argc_truncated);
                assert_eq!(errno, None);
            }
            other => panic!("expected exec, got {other:?}"),
        }
        assert!(!rec.denied);
    }

    #[test]
    fn successful_exec_names_the_kernels_copy_and_bad_sources_are_rejected() {
        let mut ev = exec_event(0, 1, &["curl"]);
        ev.filename_source = path_source::KERNEL;
        let rec = decode_ok(&sample(kind::EXEC, ev));
        assert_eq!(rec.path_source.as_deref(), Some("kernel"));
        ev.filename_source = 7;
        let err = decode(
            &sample(kind::EXEC, ev),
            &BootClock::with_offset_ns(0),
            origin_for,
        )
        .unwrap_err();
        assert_eq!(
            err,
            DecodeError::BadField {
                name: "exec",
                field: "filename_source",
                value: 7
            }
        );
    }

    #[test]
    fn openat2_resolve_flags() {
        let mut ev = open_event(
            open_call::OPENAT2,
            libc::O_RDONLY,
            4,
            -18,
            buf::<PATH_LEN>("../x"),
        );
        ev.resolve = 0x08 | 0x01 | 0x400;
        let rec = decode_ok(&sample(kind::OPEN, ev));
        assert_eq!(rec.path_source.as_deref(), Some("user"));
        match rec.body {
            Body::Open { flags, errno, .. } => {
                assert_eq!(
                    flags,
                    ["O_RDONLY", "RESOLVE_NO_XDEV", "RESOLVE_BENEATH", "0x400"]
                );
                assert_eq!(errno.as_deref(), Some("EXDEV"));
            }
            other => panic!("expected open, got {other:?}"),
        }
    }

    fn pair_event(call: u32, flags: u32, ret: i64) -> PathPairEvent {
        PathPairEvent {
            ret,
            call,
            flags,
            old_dirfd: libc::AT_FDCWD,
            new_dirfd: 3,
            old_path: buf::<PATH_LEN>("/home/u/.ssh/id_rsa"),
            new_path: [b'n'; PATH_LEN],
        }
    }

    #[test]
    fn link_and_rename_records() {
        let rec = decode_ok(&sample(
            kind::LINK,
            pair_event(pair_call::LINKAT, 0x1000, -i64::from(libc::EXDEV)),
        ));
        assert!(rec.denied, "Landlock's REFER refusal counts as a denial");
        assert_eq!(rec.path_source.as_deref(), Some("user"));
        match &rec.body {
            Body::Link(p) => {
                assert_eq!(p.call, "linkat");
                assert_eq!(p.old_path, "/home/u/.ssh/id_rsa");
                assert!(!p.old_path_truncated && p.new_path_truncated);
                assert_eq!(p.flags, ["AT_EMPTY_PATH"]);
                assert_eq!((p.old_dirfd, p.new_dirfd), (None, Some(3)));
                assert_eq!(p.errno.as_deref(), Some("EXDEV"));
            }
            other => panic!("expected link, got {other:?}"),
        }
        let rec = decode_ok(&sample(
            kind::RENAME,
            pair_event(pair_call::RENAMEAT2, 2 | 8, 0),
        ));
        assert!(!rec.denied);
        match &rec.body {
            Body::Rename(p) => {
                assert_eq!(p.call, "renameat2");
                assert_eq!(p.flags, ["RENAME_EXCHANGE", "0x8"]);
            }
            other => panic!("expected rename, got {other:?}"),
        }
        // A rename call number under the link kind is a kernel-side bug.
        let err = decode(
            &sample(kind::LINK, pair_event(pair_call::RENAME, 0, 0)),
            &BootClock::with_offset_ns(0),
            origin_for,
        )
        .unwrap_err();
        assert_eq!(
            err,
            DecodeError::BadField {
                name: "link",
                field: "call",
                value: u64::from(pair_call::RENAME)
            }
        );
    }

    #[test]
    fn fork_and_exit_records() {
        let rec = decode_ok(&sample(
            kind::FORK,
            ForkEvent {
                parent_pid: 4242,
                child_pid: 5000,
            },
        ));
        assert_eq!(rec.body, Body::Fork { child_pid: 5000 });
        let rec = decode_ok(&sample(kind::EXIT, ExitEvent { _reserved: 0 }));
        assert_eq!(rec.body, Body::Exit {});
        assert_eq!(rec.pid, Some(4242));
    }

    #[test]
    fn open_denied_record() {
        let ev = open_event(
            open_call::OPENAT,
            libc::O_RDONLY | libc::O_CLOEXEC,
            libc::AT_FDCWD,
            -13,
            buf::<PATH_LEN>("/root/.ssh/id_rsa"),
        );
        let rec = decode_ok(&sample(kind::OPEN, ev));
        assert!(rec.denied);
        assert_eq!(
            rec.body,
            Body::Open {
                call: "openat".into(),
                path: "/root/.ssh/id_rsa".into(),
                path_truncated: false,
                flags: vec!["O_RDONLY".into(), "O_CLOEXEC".into()],
                mode: None,
                dirfd: None,
                result: -13,
                errno: Some("EACCES".into()),
            }
        );
    }

    #[test]
    fn open_with_create_dirfd_and_truncated_non_utf8_path() {
        let mut path = [b'a'; PATH_LEN];
        path[0] = 0xff;
        let ev = open_event(
            open_call::OPENAT2,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            7,
            4,
            path,
        );
        match decode_ok(&sample(kind::OPEN, ev)).body {
            Body::Open {
                call,
                path,
                path_truncated,
                flags,
                mode,
                dirfd,
                errno,
                ..
            } => {
                assert_eq!(call, "openat2");
                assert!(path_truncated);
                assert!(path.starts_with('\u{fffd}'));
                assert_eq!(path.chars().count(), PATH_LEN);
                assert_eq!(flags, ["O_WRONLY", "O_CREAT", "O_TRUNC"]);
                assert_eq!(mode, Some(0o644));
                assert_eq!(dirfd, Some(7));
                assert_eq!(errno, None);
            }
            other => panic!("expected open, got {other:?}"),
        }
    }

    #[test]
    fn creat_ignores_dirfd() {
        let ev = open_event(open_call::CREAT, libc::O_CREAT, 3, 5, buf::<PATH_LEN>("f"));
        match decode_ok(&sample(kind::OPEN, ev)).body {
            Body::Open { call, dirfd, .. } => {
                assert_eq!(call, "creat");
                assert_eq!(dirfd, None);
            }
            other => panic!("expected open, got {other:?}"),
        }
    }

    #[test]
    fn flag_names_tmpfile_and_unknown_bits() {
        assert_eq!(
            open_flag_names((libc::O_RDWR | libc::O_TMPFILE) as u32),
            ["O_RDWR", "O_TMPFILE"]
        );
        assert_eq!(
            open_flag_names((libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_PATH) as u32),
            ["O_RDONLY", "O_DIRECTORY", "O_NOFOLLOW", "O_PATH"]
        );
        assert_eq!(
            open_flag_names(
                (libc::O_APPEND | libc::O_EXCL | libc::O_NONBLOCK | 0x4000_0000) as u32
            ),
            ["O_RDONLY", "O_EXCL", "O_APPEND", "O_NONBLOCK", "0x40000000"]
        );
    }

    fn connect_event(
        op: u32,
        verdict: u32,
        protocol: u32,
        addr: Ipv6Addr,
        port: u16,
    ) -> ConnectEvent {
        ConnectEvent {
            op,
            verdict,
            protocol,
            port,
            _pad: 0,
            addr: addr.octets(),
        }
    }

    #[test]
    fn connect_ipv4_mapped_is_printed_as_ipv4() {
        let addr = std::net::Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped();
        let rec = decode_ok(&sample(
            kind::CONNECT,
            connect_event(net_op::CONNECT4, VERDICT_ALLOW, 6, addr, 8080),
        ));
        assert!(!rec.denied);
        assert_eq!(
            rec.body,
            Body::Connect {
                op: "connect4".into(),
                protocol: "tcp".into(),
                addr: "127.0.0.1".into(),
                port: 8080,
                verdict: "allow".into(),
            }
        );
    }

    #[test]
    fn connect_ipv6_udp_deny() {
        let rec = decode_ok(&sample(
            kind::CONNECT,
            connect_event(
                net_op::SENDMSG6,
                VERDICT_DENY,
                17,
                "2001:db8::1".parse().unwrap(),
                53,
            ),
        ));
        assert!(rec.denied);
        match rec.body {
            Body::Connect {
                op, protocol, addr, ..
            } => {
                assert_eq!(
                    (op.as_str(), protocol.as_str(), addr.as_str()),
                    ("sendmsg6", "udp", "2001:db8::1")
                );
            }
            other => panic!("expected connect, got {other:?}"),
        }
    }

    #[test]
    fn connect_unknown_verdict_is_rejected_and_odd_protocol_numbered() {
        let err = decode(
            &sample(
                kind::CONNECT,
                connect_event(net_op::CONNECT6, 7, 6, Ipv6Addr::LOCALHOST, 1),
            ),
            &BootClock::with_offset_ns(0),
            origin_for,
        )
        .unwrap_err();
        assert_eq!(
            err,
            DecodeError::BadField {
                name: "connect",
                field: "verdict",
                value: 7
            }
        );
        let rec = decode_ok(&sample(
            kind::CONNECT,
            connect_event(net_op::CONNECT6, VERDICT_ALLOW, 132, Ipv6Addr::LOCALHOST, 1),
        ));
        match rec.body {
            Body::Connect { protocol, .. } => assert_eq!(protocol, "132"),
            other => panic!("expected connect, got {other:?}"),
        }
    }

    #[test]
    fn unknown_cgroup_has_no_origin_but_keeps_task_uid() {
        let rec = decode(
            &sample(kind::EXIT, ExitEvent { _reserved: 0 }),
            &BootClock::with_offset_ns(OFFSET_NS),
            |_| None,
        )
        .unwrap();
        assert_eq!((rec.server, rec.launch, rec.uid), (None, None, Some(1000)));
    }

    #[test]
    fn rejects_sample_shorter_than_header() {
        let bytes = sample(
            kind::FORK,
            ForkEvent {
                parent_pid: 1,
                child_pid: 2,
            },
        );
        let err = decode(&bytes[..10], &BootClock::with_offset_ns(0), origin_for).unwrap_err();
        assert_eq!(err, DecodeError::ShortHeader { len: 10, need: 56 });
    }

    #[test]
    fn rejects_sample_shorter_than_its_kind() {
        let bytes = sample(kind::OPEN, open_event(0, 0, 0, 0, [0; PATH_LEN]));
        let cut = &bytes[..bytes.len() - 1];
        let err = decode(cut, &BootClock::with_offset_ns(0), origin_for).unwrap_err();
        assert_eq!(
            err,
            DecodeError::ShortSample {
                name: "open",
                len: cut.len(),
                need: bytes.len()
            }
        );
    }

    #[test]
    fn rejects_header_len_shorter_than_its_kind() {
        let mut bytes = sample(
            kind::CONNECT,
            connect_event(0, 0, 6, Ipv6Addr::LOCALHOST, 1),
        );
        // header.len is the second u32.
        bytes[4..8].copy_from_slice(&60u32.to_ne_bytes());
        let err = decode(&bytes, &BootClock::with_offset_ns(0), origin_for).unwrap_err();
        assert_eq!(
            err,
            DecodeError::ShortHeaderLen {
                name: "connect",
                header_len: 60,
                need: 88
            }
        );
    }

    #[test]
    fn rejects_unknown_kind_without_calling_origin() {
        let mut bytes = sample(
            kind::FORK,
            ForkEvent {
                parent_pid: 1,
                child_pid: 2,
            },
        );
        bytes[0..4].copy_from_slice(&99u32.to_ne_bytes());
        let err = decode(
            &bytes,
            &BootClock::with_offset_ns(0),
            |_| -> Option<Origin> { panic!("origin looked up for an undecodable sample") },
        )
        .unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnknownKind {
                kind: 99,
                len: bytes.len()
            }
        );
    }

    #[test]
    fn decodes_from_unaligned_buffer() {
        let bytes = sample(
            kind::FORK,
            ForkEvent {
                parent_pid: 1,
                child_pid: 9,
            },
        );
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(&bytes);
        assert_eq!(decode_ok(&shifted[1..]).body, Body::Fork { child_pid: 9 });
    }

    #[test]
    fn comm_without_nul_is_kept_whole() {
        assert_eq!(
            c_string(b"0123456789abcdef"),
            ("0123456789abcdef".to_string(), true)
        );
        assert_eq!(c_string(b"ab\0cd"), ("ab".to_string(), false));
    }

    #[test]
    fn boot_clock_maps_to_now() {
        let clock = BootClock::new();
        let boot = u64::try_from(clock_ns(libc::CLOCK_BOOTTIME)).unwrap();
        let wall = clock.wall(boot);
        let now = SystemTime::now();
        let skew = now.duration_since(wall).unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(1), "skew {skew:?}");
    }

    #[test]
    fn boot_clock_handles_negative_offsets() {
        let clock = BootClock::with_offset_ns(-5_000_000_000);
        assert_eq!(
            clock.wall(7_000_000_000),
            UNIX_EPOCH + Duration::from_secs(2)
        );
        assert_eq!(clock.wall(1), UNIX_EPOCH - Duration::new(4, 999_999_999));
    }
}
