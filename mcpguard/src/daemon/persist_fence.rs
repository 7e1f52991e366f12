//! The daemon's side of a server's persistence fence
//! ([`crate::launch::persist_fence`]): the socket fence's thread
//! ([`super::sockets`]) hands over the name-creating calls it receives.
//!
//! For each call it copies the path(s) from the caller's memory once
//! (`/proc/<tid>/mem`), takes the directory each relative path starts
//! from (`/proc/<tid>/cwd`, or the caller's fd with `pidfd_getfd`), checks
//! that the call still waits (`SECCOMP_IOCTL_NOTIF_ID_VALID`), and hands
//! the copy to the server's executor, which refuses a persistence name or
//! performs the call. The answer goes back as the call's result or, for an
//! open, as the opened file installed in the caller
//! (`SECCOMP_IOCTL_NOTIF_ADDFD`). A call is never let through to the
//! kernel: a second thread could rewrite the path after the check.
//!
//! Each trapped call is recorded here, from the calling pid, with its
//! paths as the daemon copied them (the copy the call was made with): its
//! own `open`, `mkdir`, `rename` or `link` record (the kernel's syscall
//! tracepoints never see a call seccomp answered), and a `persist` record
//! for every persistence name it touched, refused or not. The executor's
//! own syscalls are not recorded (the auditor drops them).

use std::{
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{fs::FileExt, net::UnixDatagram},
    },
    time::Duration,
};

use nix::{
    fcntl::{open, OFlag},
    sys::stat::Mode,
};
use tracing::warn;

use crate::{
    audit::{
        decode::{bit_names, open_flag_names, RESOLVE_NAMES},
        errno_name, Body, PathCall, PathPair,
    },
    launch::{
        notify::Listener,
        persist_fence::{self, ExecReply, ExecRequest, Op},
    },
};

/// How long a call may wait for the executor before it fails.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(10);
/// PATH_MAX, the terminating NUL included.
const PATH_MAX: usize = 4096;

/// One trapped call.
pub struct Trapped {
    pub id: u64,
    /// The calling thread.
    pub pid: u32,
    pub nr: i32,
    pub args: [u64; 6],
}

/// Answers one trapped call through the server's executor and records
/// the persistence names it touched. `false`: the executor did not answer
/// (dead, or stopped past [`EXEC_TIMEOUT`]); a late reply could be taken
/// for the next call's, so the caller must not use it again. `record`
/// writes one record for the server, from the calling pid, with the time
/// of the call.
pub fn answer(
    listener: &Listener,
    executor: &UnixDatagram,
    n: &Trapped,
    record: &dyn Fn(Body, u32, u64),
) -> bool {
    // The call's time, for tying it to a tool call: taken before the
    // answer lets the server go on (and maybe finish the call).
    let at_ns = crate::audit::decode::boot_ns();
    let mut alive = true;
    let outcome = request(n).and_then(|(req, fds, call, at)| {
        // The copy is taken and the directories are open: only now is it
        // certain they were the caller's.
        if !listener.valid(n.id) {
            return Err(libc::ESRCH);
        }
        let done = execute(executor, &req, &fds);
        alive = done.is_some();
        let refused = ExecReply {
            result: -i64::from(libc::EACCES),
            hits: Vec::new(),
        };
        Ok((done.unwrap_or((refused, None)), req, call, at))
    });
    let sent = match &outcome {
        Err(errno) => listener
            .complete(n.id, Err(*errno))
            .map(|()| -i64::from(*errno)),
        Ok(((reply, fd), req, _, _)) => match (fd, &req.op) {
            (Some(fd), Op::Open { flags, .. }) if reply.result >= 0 => listener
                .complete_fd(n.id, fd, flags & libc::O_CLOEXEC != 0)
                .map(i64::from),
            _ if reply.result < 0 => listener
                .complete(n.id, Err(-reply.result as i32))
                .map(|()| reply.result),
            (None, Op::Open { .. }) => listener
                .complete(n.id, Err(libc::EIO))
                .map(|()| -i64::from(libc::EIO)),
            _ => listener
                .complete(n.id, Ok(reply.result))
                .map(|()| reply.result),
        },
    };
    let result = match sent {
        Ok(r) => r,
        Err(error) => {
            // ENOENT: the caller is gone, the call never completes.
            if error.raw_os_error() != Some(libc::ENOENT) {
                warn!(%error, pid = n.pid, "persist fence: answer");
            }
            return alive;
        }
    };
    let Ok(((reply, _), req, call, at)) = outcome else {
        return alive;
    };
    if let Some(body) = call_record(&req.op, call, &at, result) {
        record(body, n.pid, at_ns);
    }
    for hit in reply.hits {
        let result = if hit.refused {
            -i64::from(libc::EACCES)
        } else {
            reply.result.min(0)
        };
        let body = Body::Persist {
            family: hit.family.to_string(),
            call: call.to_owned(),
            path: hit.path.to_string_lossy().into_owned(),
            allowed: hit.allowed,
            result,
            errno: (result < 0).then(|| errno_name(-result)),
        };
        record(body, n.pid, at_ns);
    }
    alive
}

/// Has the executor perform `req`; `None` if it did not answer (the call
/// then fails with `EACCES`: closed, not open).
fn execute(
    executor: &UnixDatagram,
    req: &ExecRequest,
    fds: &[OwnedFd],
) -> Option<(ExecReply, Option<OwnedFd>)> {
    let bytes = serde_json::to_vec(req).ok()?;
    let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let got = crate::ipc::send_fds(executor, &bytes, &raw).and_then(|_| {
        let (bytes, fds) = persist_fence::recv(executor)?;
        let reply: ExecReply = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
        Ok((reply, fds.into_iter().next()))
    });
    match got {
        Ok(r) => Some(r),
        Err(error) => {
            warn!(%error, "persist fence: the executor did not answer; refusing this server's name-creating calls from now on");
            None
        }
    }
}

/// The call's own record, as the syscall tracepoints would have written
/// it (`mknod` has none).
fn call_record(op: &Op, call: &str, at: &[i32], result: i64) -> Option<Body> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let dirfd = |i: usize| at.get(i).copied().filter(|fd| *fd != libc::AT_FDCWD);
    let errno = (result < 0).then(|| errno_name(-result));
    let pair = |old: &[u8], new: &[u8], flags: Vec<String>, old_dirfd| PathPair {
        call: call.to_owned(),
        old_path: text(old),
        old_path_truncated: false,
        new_path: text(new),
        new_path_truncated: false,
        flags,
        old_dirfd,
        new_dirfd: dirfd(at.len() - 1),
        result,
        errno: errno.clone(),
    };
    Some(match op {
        Op::Open {
            path,
            flags,
            mode,
            resolve,
        } => Body::Open {
            call: call.to_owned(),
            path: text(path),
            path_truncated: false,
            flags: {
                let mut names = open_flag_names(*flags as u32);
                names.extend(bit_names(*resolve as u32, RESOLVE_NAMES));
                names
            },
            mode: (flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE)
                .then_some(*mode),
            dirfd: dirfd(0),
            result,
            errno,
        },
        Op::Mkdir { path, mode } => Body::Mkdir(PathCall {
            call: call.to_owned(),
            path: text(path),
            path_truncated: false,
            mode: Some(*mode),
            dirfd: dirfd(0),
            fd: None,
            result,
            errno,
        }),
        Op::Mknod { .. } => return None,
        Op::Rename { old, new, flags } => {
            let names = [
                (1, "RENAME_NOREPLACE"),
                (2, "RENAME_EXCHANGE"),
                (4, "RENAME_WHITEOUT"),
            ];
            Body::Rename(pair(old, new, bit_names(*flags, &names), dirfd(0)))
        }
        Op::Link { old, new, flags } => {
            let names = [(0x400, "AT_SYMLINK_FOLLOW"), (0x1000, "AT_EMPTY_PATH")];
            Body::Link(pair(old, new, bit_names(*flags as u32, &names), dirfd(0)))
        }
        Op::Symlink { target, path } => Body::Link(pair(target, path, Vec::new(), None)),
    })
}

/// A trapped call as the executor's request, the directory fds it needs,
/// the syscall's name and the dirfd argument of each path; or the errno
/// the call fails with.
/// A request, its directory fds, the syscall's name, the dirfd arguments.
type Prepared = (ExecRequest, Vec<OwnedFd>, &'static str, Vec<i32>);

fn request(n: &Trapped) -> Result<Prepared, i32> {
    let mem = File::open(format!("/proc/{}/mem", n.pid)).map_err(|_| libc::ESRCH)?;
    let a = n.args;
    let path = |i: usize| read_path(&mem, a[i]);
    let dfd = |i: usize| a[i] as i32;
    let cwd = libc::AT_FDCWD;
    let nr = i64::from(n.nr);
    // (op, call, the dirfd each path starts from)
    let (op, call, at): (Op, &'static str, Vec<i32>) = match nr {
        libc::SYS_openat => (open_op(path(1)?, a[2], a[3]), "openat", vec![dfd(0)]),
        libc::SYS_openat2 => (
            openat2_op(&mem, path(1)?, a[2], a[3])?,
            "openat2",
            vec![dfd(0)],
        ),
        libc::SYS_mkdirat => (mkdir_op(path(1)?, a[2]), "mkdirat", vec![dfd(0)]),
        libc::SYS_mknodat => (mknod_op(path(1)?, a[2], a[3]), "mknodat", vec![dfd(0)]),
        libc::SYS_renameat => (
            rename_op(path(1)?, path(3)?, 0),
            "renameat",
            vec![dfd(0), dfd(2)],
        ),
        libc::SYS_renameat2 => (
            rename_op(path(1)?, path(3)?, a[4]),
            "renameat2",
            vec![dfd(0), dfd(2)],
        ),
        libc::SYS_linkat => (
            link_op(path(1)?, path(3)?, a[4]),
            "linkat",
            vec![dfd(0), dfd(2)],
        ),
        libc::SYS_symlinkat => (symlink_op(path(0)?, path(2)?), "symlinkat", vec![dfd(1)]),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_open => (open_op(path(0)?, a[1], a[2]), "open", vec![cwd]),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_creat => {
            let flags = (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64;
            (open_op(path(0)?, flags, a[1]), "creat", vec![cwd])
        }
        #[cfg(target_arch = "x86_64")]
        libc::SYS_mkdir => (mkdir_op(path(0)?, a[1]), "mkdir", vec![cwd]),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_mknod => (mknod_op(path(0)?, a[1], a[2]), "mknod", vec![cwd]),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_rename => (rename_op(path(0)?, path(1)?, 0), "rename", vec![cwd, cwd]),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_link => (link_op(path(0)?, path(1)?, 0), "link", vec![cwd, cwd]),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_symlink => (symlink_op(path(0)?, path(1)?), "symlink", vec![cwd]),
        _ => return Err(libc::ENOSYS),
    };
    let (tgid, umask) = status(n.pid)?;
    let mut dirs = Vec::new();
    let mut fds = Vec::new();
    let empty_ok = matches!(&op, Op::Link { flags, .. } if flags & libc::AT_EMPTY_PATH != 0);
    for (i, (p, dirfd)) in op.paths().into_iter().zip(at.iter().copied()).enumerate() {
        let relative = p.first() != Some(&b'/');
        dirs.push(relative);
        if relative {
            // linkat(AT_EMPTY_PATH) links the fd itself, which need not be
            // a directory.
            let any = i == 0 && empty_ok && p.is_empty();
            fds.push(dir_of(n.pid, tgid, dirfd, !any)?);
        }
    }
    let req = ExecRequest {
        op,
        dirs,
        tgid,
        tid: n.pid,
        umask,
    };
    Ok((req, fds, call, at))
}

fn open_op(path: Vec<u8>, flags: u64, mode: u64) -> Op {
    Op::Open {
        path,
        flags: flags as i32,
        mode: mode as u32 & 0o7777,
        resolve: 0,
    }
}

/// `openat2`'s `struct open_how`, read from the caller's memory.
fn openat2_op(mem: &File, path: Vec<u8>, how: u64, size: u64) -> Result<Op, i32> {
    if size < 24 {
        return Err(libc::EINVAL);
    }
    if size > 4096 {
        return Err(libc::E2BIG);
    }
    let mut buf = vec![0u8; size as usize];
    mem.read_exact_at(&mut buf, how).map_err(|_| libc::EFAULT)?;
    if buf[24..].iter().any(|&b| b != 0) {
        return Err(libc::E2BIG);
    }
    let word = |i: usize| u64::from_ne_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    if word(0) > u64::from(u32::MAX) {
        return Err(libc::EINVAL);
    }
    Ok(Op::Open {
        path,
        flags: word(0) as i32,
        mode: word(1) as u32,
        resolve: word(2),
    })
}

fn mkdir_op(path: Vec<u8>, mode: u64) -> Op {
    Op::Mkdir {
        path,
        mode: mode as u32,
    }
}

fn mknod_op(path: Vec<u8>, mode: u64, dev: u64) -> Op {
    Op::Mknod {
        path,
        mode: mode as u32,
        dev,
    }
}

fn rename_op(old: Vec<u8>, new: Vec<u8>, flags: u64) -> Op {
    Op::Rename {
        old,
        new,
        flags: flags as u32,
    }
}

fn link_op(old: Vec<u8>, new: Vec<u8>, flags: u64) -> Op {
    Op::Link {
        old,
        new,
        flags: flags as i32,
    }
}

fn symlink_op(target: Vec<u8>, path: Vec<u8>) -> Op {
    Op::Symlink { target, path }
}

/// A NUL-terminated string at `addr` in the caller's memory, read once.
fn read_path(mem: &File, addr: u64) -> Result<Vec<u8>, i32> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < PATH_MAX {
        // Up to the page end: the next page may not be mapped.
        let chunk = (4096 - (at % 4096)) as usize;
        let mut buf = vec![0u8; chunk.min(PATH_MAX - out.len())];
        let n = mem.read_at(&mut buf, at).map_err(|_| libc::EFAULT)?;
        if n == 0 {
            return Err(libc::EFAULT);
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    Err(libc::ENAMETOOLONG)
}

/// The caller's process id and umask.
fn status(tid: u32) -> Result<(u32, u32), i32> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/status")).map_err(|_| libc::ESRCH)?;
    let field = |name| crate::kernel::proc::status_field(&text, name);
    let tgid = field("Tgid").and_then(|v| v.parse().ok());
    let umask = field("Umask").and_then(|v| u32::from_str_radix(v, 8).ok());
    match (tgid, umask) {
        (Some(t), Some(u)) => Ok((t, u)),
        _ => Err(libc::ESRCH),
    }
}

/// A pidfd through which `pidfd_getfd` reaches thread `tid`'s fd table:
/// the thread's own (`PIDFD_THREAD`, Linux 6.9+); before 6.9, which
/// refuses that flag with EINVAL, its process's, when `kcmp` says the
/// thread shares that table (threads made by pthread_create do).
fn fd_table_pidfd(tid: u32, tgid: u32) -> Result<OwnedFd, i32> {
    let open = |pid: u32, flags: i32| {
        // SAFETY: pidfd_open takes a pid and flags; PIDFD_THREAD (O_EXCL)
        // names the thread itself, whose fd table the call used.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
        if fd < 0 {
            return Err(nix::errno::Errno::last_raw());
        }
        // SAFETY: the kernel just returned this descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    };
    match open(tid, libc::O_EXCL) {
        Ok(fd) => Ok(fd),
        Err(libc::EINVAL) => {
            // SAFETY: kcmp compares two tasks' resources; KCMP_FILES (2)
            // takes no further arguments. 0: the same file table.
            let same =
                tid == tgid || unsafe { libc::syscall(libc::SYS_kcmp, tid, tgid, 2, 0, 0) } == 0;
            if !same {
                return Err(libc::ESRCH);
            }
            open(tgid, 0).map_err(|_| libc::ESRCH)
        }
        Err(_) => Err(libc::ESRCH),
    }
}

/// The directory a relative path of the caller starts from: its working
/// directory (`O_PATH`), or its own open file for a dirfd
/// (`pidfd_getfd`: the same open file, opened with the caller's
/// credentials, as `linkat(AT_EMPTY_PATH)` needs).
fn dir_of(tid: u32, tgid: u32, dirfd: i32, directory: bool) -> Result<OwnedFd, i32> {
    if dirfd == libc::AT_FDCWD {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        return open(format!("/proc/{tid}/cwd").as_str(), flags, Mode::empty())
            .map_err(|e| e as i32);
    }
    if dirfd < 0 {
        return Err(libc::EBADF);
    }
    let pidfd = fd_table_pidfd(tid, tgid)?;
    // SAFETY: pidfd_getfd duplicates the target's fd into this process
    // (close-on-exec); flags must be 0.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), dirfd, 0) };
    if fd < 0 {
        return Err(libc::EBADF);
    }
    // SAFETY: as above.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let is_dir =
        nix::sys::stat::fstat(&fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
    if directory && !is_dir {
        return Err(libc::ENOTDIR);
    }
    Ok(fd)
}
