//! Ring-buffer records written by the kernel programs.
//!
//! Every record is an [`EventHeader`] followed by the payload its `kind`
//! names ([`Record<T>`]). User space checks `kind` and `len` before it reads
//! a payload, and drops (and counts) anything that does not fit.

use crate::limits::{ARGV_SLOTS, ARG_LEN, COMM_LEN, PATH_LEN, UNIX_PATH_LEN};

/// `EventHeader::kind` values.
pub mod kind {
    pub const EXEC: u32 = 1;
    pub const FORK: u32 = 2;
    pub const EXIT: u32 = 3;
    pub const OPEN: u32 = 4;
    pub const CONNECT: u32 = 5;
    pub const UNIX_CONNECT: u32 = 6;
    pub const SOCKET: u32 = 7;
    /// `link`, `linkat`, `symlink`, `symlinkat` ([`super::PathPairEvent`]).
    pub const LINK: u32 = 8;
    /// `rename`, `renameat`, `renameat2` ([`super::PathPairEvent`]).
    pub const RENAME: u32 = 9;
    /// A watched syscall's exit ([`super::SyscallEvent`]).
    pub const SYSCALL: u32 = 10;
    /// A request submitted to an io_uring ([`super::IoUringEvent`]).
    pub const IO_URING: u32 = 11;
    /// `mkdir`, `mkdirat` ([`super::PathEvent`]).
    pub const MKDIR: u32 = 12;
    /// `unlink`, `unlinkat` without `AT_REMOVEDIR` ([`super::PathEvent`]).
    pub const UNLINK: u32 = 13;
    /// `rmdir`, `unlinkat` with `AT_REMOVEDIR` ([`super::PathEvent`]).
    pub const RMDIR: u32 = 14;
    /// `chdir` ([`super::PathEvent`]): what relative paths of that process
    /// mean from then on.
    pub const CHDIR: u32 = 15;
    /// A refused (or, in learning mode, any) change to a file's metadata or
    /// contents that no open covers: the `chmod`, `chown`, `utimes`,
    /// `setxattr`/`removexattr`, `truncate` and `mknod` families
    /// ([`super::PathEvent`], `call` the native syscall number).
    pub const ATTR: u32 = 16;
}

/// Where a path in a record came from: whether it can differ from the
/// object the kernel acted on.
pub mod path_source {
    /// Read from the caller's memory at syscall entry (or at exit, for a
    /// record decided only there by the audit level). Another thread can
    /// rewrite that memory around the kernel's own copy, so the path is
    /// what the caller claimed, not necessarily what the kernel resolved. The result (and so the verdict) is the syscall's own.
    pub const USER: u32 = 0;
    /// The kernel's own copy, the one it resolved (`bprm->filename` as
    /// `sched_process_exec` reports it).
    pub const KERNEL: u32 = 1;
}

/// Common prefix of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u32,
    /// Size of the whole record, header included.
    pub len: u32,
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME nanoseconds.
    pub ts_ns: u64,
    /// cgroup v2 id of the task (the server's cgroup inode).
    pub cgroup_id: u64,
    /// Thread-group id (the process id user space sees).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Task command name, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// A header and the payload its kind names.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Record<T> {
    pub header: EventHeader,
    pub payload: T,
}

/// An `execve`/`execveat`: `ret` is 0 when the new image started, else the
/// negative errno the call failed with (Landlock denials are `-EACCES`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub ret: i32,
    /// How many argv slots were filled (at most `ARGV_SLOTS`).
    pub argc: u32,
    /// One of [`path_source`]: the kernel's copy for a successful exec,
    /// the caller's memory for a failed one (the kernel's copy is gone by
    /// the syscall's exit).
    pub filename_source: u32,
    pub _pad: u32,
    /// Path of the program, NUL-terminated (see `filename_source`).
    pub filename: [u8; PATH_LEN],
    /// The first `ARGV_SLOTS` arguments, each NUL-terminated and truncated.
    pub argv: [[u8; ARG_LEN]; ARGV_SLOTS],
}

/// A new task (process or thread) cloned by `header.pid`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkEvent {
    pub parent_pid: u32,
    pub child_pid: u32,
}

/// A thread-group leader exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    /// `task->exit_code` is not reachable without BTF offsets; the daemon
    /// reports the server's own exit status from `waitpid`.
    pub _reserved: u64,
}

/// Which syscall an [`OpenEvent`] came from.
pub mod open_call {
    pub const OPENAT: u32 = 0;
    pub const OPENAT2: u32 = 1;
    pub const OPEN: u32 = 2;
    pub const CREAT: u32 = 3;
}

/// A file open, paired from syscall entry (path, flags) and exit (result).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OpenEvent {
    /// File descriptor, or negative errno.
    pub ret: i64,
    /// `open(2)` flags.
    pub flags: u32,
    pub mode: u32,
    /// Directory fd the path is relative to (`AT_FDCWD` = -100).
    pub dirfd: i32,
    /// One of [`open_call`].
    pub call: u32,
    /// `openat2`'s `RESOLVE_*` flags, else 0.
    pub resolve: u32,
    pub _pad: u32,
    /// Path as passed, read from user memory at syscall entry, or at exit
    /// for a call whose record was decided only there (see the audit
    /// levels) ([`path_source::USER`]).
    pub path: [u8; PATH_LEN],
}

/// Which syscall a [`PathEvent`] came from.
pub mod path_call {
    pub const MKDIR: u32 = 16;
    pub const MKDIRAT: u32 = 17;
    pub const UNLINK: u32 = 18;
    pub const UNLINKAT: u32 = 19;
    pub const RMDIR: u32 = 20;
    pub const CHDIR: u32 = 21;
}

/// `unlinkat(2)`'s flag that makes it an `rmdir`.
pub const AT_REMOVEDIR: u32 = 0x200;

/// A one-path call (`mkdir`, `unlink`, `rmdir`, `chdir`): the same layout
/// as an open, so the kernel side pairs entry and exit through the same
/// per-thread slot (a thread is in one syscall at a time). `call` is one
/// of [`path_call`] (distinct from [`open_call`] values), `flags`
/// `unlinkat`'s flags, `mode` `mkdir`'s mode, `resolve` unused (0).
pub type PathEvent = OpenEvent;

/// Which syscall a [`PathPairEvent`] came from.
pub mod pair_call {
    pub const LINK: u32 = 0;
    pub const LINKAT: u32 = 1;
    pub const SYMLINK: u32 = 2;
    pub const SYMLINKAT: u32 = 3;
    pub const RENAME: u32 = 4;
    pub const RENAMEAT: u32 = 5;
    pub const RENAMEAT2: u32 = 6;
}

/// A link, symlink or rename: two paths, paired from syscall entry (paths
/// and flags as passed, read from user memory: [`path_source::USER`]) and
/// exit (the result). Landlock refuses these with `-EACCES`, or `-EXDEV`
/// when the move or link would give the file rights it lacks where it is.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PathPairEvent {
    /// 0, or the negative errno.
    pub ret: i64,
    /// One of [`pair_call`].
    pub call: u32,
    /// `linkat`'s `AT_*` or `renameat2`'s `RENAME_*` flags, else 0.
    pub flags: u32,
    /// Directory fds the paths are relative to (`AT_FDCWD` = -100).
    pub old_dirfd: i32,
    pub new_dirfd: i32,
    /// The existing file (for a symlink: the link's content, unresolved).
    pub old_path: [u8; PATH_LEN],
    /// The name created.
    pub new_path: [u8; PATH_LEN],
}

/// Which cgroup hook decided a [`ConnectEvent`].
pub mod net_op {
    pub const CONNECT4: u32 = 0;
    pub const CONNECT6: u32 = 1;
    pub const SENDMSG4: u32 = 2;
    pub const SENDMSG6: u32 = 3;
    /// An explicit `bind()`: the address and port bound (local).
    pub const BIND4: u32 = 4;
    pub const BIND6: u32 = 5;
    /// A packet arriving at a server's socket (cgroup_skb ingress): the
    /// sender's address and the local port it was sent to.
    pub const INBOUND4: u32 = 6;
    pub const INBOUND6: u32 = 7;
}

/// `ConnectEvent::verdict` values.
pub const VERDICT_DENY: u32 = 0;
pub const VERDICT_ALLOW: u32 = 1;
/// Learning mode: allowed, but the policy would have denied it.
pub const VERDICT_WOULD_DENY: u32 = 2;

/// An egress decision. The cgroup hooks see the kernel's copy of the
/// destination (taken before the hook runs), so the address is the one
/// decided on and connected to, whatever the caller's memory says later.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectEvent {
    /// One of [`net_op`].
    pub op: u32,
    /// `VERDICT_DENY` or `VERDICT_ALLOW`.
    pub verdict: u32,
    /// IP protocol of the socket (6 TCP, 17 UDP, ...).
    pub protocol: u32,
    /// Destination port, host order.
    pub port: u16,
    pub _pad: u16,
    /// Destination in network order; IPv4 as `::ffff:a.b.c.d`.
    pub addr: [u8; 16],
}

/// A `connect()` to a Unix-domain socket, paired from syscall entry (the
/// address as passed) and exit (the result).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnixConnectEvent {
    /// 0, or the negative errno.
    pub ret: i64,
    /// 1 for an abstract address (leading NUL), 0 for a pathname.
    pub abstract_addr: u32,
    pub _pad: u32,
    /// `sun_path` as passed (after the leading NUL for abstract ones),
    /// NUL-terminated.
    pub path: [u8; UNIX_PATH_LEN],
}

/// An inet socket the `sock_create` fence refused (or, with
/// `FLAG_AUDIT_NET`, let through): raw and ICMP sockets.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketEvent {
    /// `AF_INET` or `AF_INET6`.
    pub family: u32,
    /// `SOCK_RAW`, `SOCK_DGRAM`, ...
    pub sock_type: u32,
    /// IP protocol number.
    pub protocol: u32,
    /// `VERDICT_DENY` or `VERDICT_ALLOW`.
    pub verdict: u32,
}

/// A request a server submitted to an io_uring (only servers whose policy
/// allows io_uring have one): the `IORING_OP_*` opcode. Its result is not
/// kept; Landlock and the cgroup hooks decide it like the syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IoUringEvent {
    pub opcode: u32,
    pub _pad: u32,
}

/// A call to one of the syscalls the daemon watches (the seccomp fence's
/// gated ones, plus cross-process ones like `ptrace` and `kill`), from its
/// `sys_exit` tracepoint: arguments are not kept, only the result.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallEvent {
    /// The native syscall number.
    pub nr: u32,
    pub _pad: u32,
    /// The return value: negative errno on failure.
    pub ret: i64,
}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 56);
const _: () = assert!(core::mem::size_of::<SyscallEvent>() == 16);
const _: () = assert!(core::mem::size_of::<IoUringEvent>() == 8);
const _: () = assert!(core::mem::size_of::<SocketEvent>() == 16);
const _: () = assert!(core::mem::size_of::<UnixConnectEvent>() == 16 + UNIX_PATH_LEN);
const _: () = assert!(core::mem::size_of::<ExecEvent>() == 16 + PATH_LEN + ARG_LEN * ARGV_SLOTS);
const _: () = assert!(core::mem::size_of::<ForkEvent>() == 8);
const _: () = assert!(core::mem::size_of::<ExitEvent>() == 8);
const _: () = assert!(core::mem::size_of::<OpenEvent>() == 32 + PATH_LEN);
const _: () = assert!(core::mem::size_of::<PathPairEvent>() == 24 + 2 * PATH_LEN);
const _: () = assert!(core::mem::size_of::<ConnectEvent>() == 32);
