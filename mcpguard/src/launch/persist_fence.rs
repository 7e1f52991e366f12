//! The persistence fence: new persistence names (a `.envrc`, `.vscode/`,
//! a `git init`'s `.git/hooks/post-commit`) refused at run time.
//!
//! The read-only binds of [`super::persist`] cover what exists at launch;
//! no mount covers a name that is not there yet, Landlock cannot take a
//! name out of a granted tree, and this kernel runs no LSM program. So the
//! calls that create a name are handed to the daemon
//! (`SECCOMP_RET_USER_NOTIF`): `open`/`openat` with `O_CREAT` (the filter
//! tests the flags), `creat`, `openat2` (flags in memory: every call),
//! `mkdir*`, `mknod*`, `rename*`, `link*`, `symlink*`. A task can have only
//! one seccomp listener, so these traps are part of the socket fence's
//! filter ([`super::notify`]). Native syscalls only: the syscall
//! fence refuses every other ABI.
//!
//! The daemon copies the path from the caller's memory once and never lets
//! the call continue (another thread could rewrite the path after the
//! check). The call is performed instead by the executor ([`spawn_executor`]):
//! a process forked by the launch helper after Landlock, the privilege
//! drop and the syscall fence, before the socket fence, so it has the server's
//! Landlock domain, mount namespace, credentials and cgroup but not this
//! filter. It opens the parent directory (relative to the caller's
//! directory fd, which the daemon passes), learns where that is from
//! `/proc/self/fd`, checks the final name against the persistence families
//! ([`crate::policy::persist::classify`]) inside the write grants, and
//! refuses it (`EACCES`) or makes the call on that directory fd, never
//! following a symlink at the last component (one is followed by hand, its
//! target checked the same way). The daemon returns the result, or the
//! opened file with `SECCOMP_IOCTL_NOTIF_ADDFD`.
//!
//! The executor is a grandchild of the helper (the server cannot reap or
//! wait for it), non-dumpable since the privilege drop (the server cannot
//! trace it), holds nothing but its socket to the daemon, and exits when
//! the daemon closes that socket. If it is killed, trapped calls fail with
//! `EACCES`: closed, not open.

use std::{
    ffi::{CString, OsStr},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{ffi::OsStrExt, net::UnixDatagram},
    },
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    ipc,
    kernel::proc,
    policy::persist::{classify, PersistKind},
};

#[derive(Debug, Error)]
pub enum PersistFenceError {
    #[error("cannot start the persistence executor: {0}")]
    Executor(#[source] io::Error),
    #[error("the persistence fence rides on the socket fence, which the spec leaves out")]
    NoSocketFence,
}

/// Largest request or reply on the executor's socket: two paths of
/// PATH_MAX bytes, each byte up to four characters of JSON.
const MAX_MSG: usize = 64 * 1024;
/// Symlinks followed by hand at the last component of an `O_CREAT` open.
const MAX_LINKS: usize = 8;

/// Syscalls trapped whatever their arguments.
pub(super) fn always() -> Vec<u32> {
    let mut v = vec![
        libc::SYS_openat2,
        libc::SYS_mkdirat,
        libc::SYS_mknodat,
        libc::SYS_renameat,
        libc::SYS_renameat2,
        libc::SYS_linkat,
        libc::SYS_symlinkat,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_creat,
        libc::SYS_mkdir,
        libc::SYS_mknod,
        libc::SYS_rename,
        libc::SYS_link,
        libc::SYS_symlink,
    ]);
    v.into_iter().map(|n| n as u32).collect()
}

/// Syscalls trapped when their flags argument (by index) has `O_CREAT`.
pub(super) fn creating_opens() -> Vec<(u32, u32)> {
    let mut v = vec![(libc::SYS_openat as u32, 2)];
    #[cfg(target_arch = "x86_64")]
    v.push((libc::SYS_open as u32, 1));
    v
}

/// One call for the executor. `dirs[i]` says whether path `i` (of
/// [`Op::paths`]) comes with a directory fd (relative paths do, in order).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub op: Op,
    pub dirs: Vec<bool>,
    /// The caller's process and thread (for `/proc/self` in its paths).
    pub tgid: u32,
    pub tid: u32,
    pub umask: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `open`, `openat`, `creat`, `openat2` (`resolve`: its `RESOLVE_*`).
    Open {
        path: Vec<u8>,
        flags: i32,
        mode: u32,
        resolve: u64,
    },
    Mkdir {
        path: Vec<u8>,
        mode: u32,
    },
    Mknod {
        path: Vec<u8>,
        mode: u32,
        dev: u64,
    },
    Rename {
        old: Vec<u8>,
        new: Vec<u8>,
        flags: u32,
    },
    Link {
        old: Vec<u8>,
        new: Vec<u8>,
        flags: i32,
    },
    Symlink {
        target: Vec<u8>,
        path: Vec<u8>,
    },
}

impl Op {
    /// The paths the kernel resolves (a symlink's content is not one).
    pub fn paths(&self) -> Vec<&[u8]> {
        match self {
            Op::Open { path, .. } | Op::Mkdir { path, .. } | Op::Mknod { path, .. } => {
                vec![path]
            }
            Op::Symlink { path, .. } => vec![path],
            Op::Rename { old, new, .. } | Op::Link { old, new, .. } => vec![old, new],
        }
    }
}

/// A persistence name a call touched.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub family: PersistKind,
    pub path: PathBuf,
    /// The policy names the family in `allow_persistence`.
    pub allowed: bool,
    /// The call was refused for it.
    pub refused: bool,
}

/// The executor's answer: the result (`-errno` on failure; an opened file
/// comes along as an fd) and the persistence names involved.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ExecReply {
    pub result: i64,
    pub hits: Vec<Hit>,
}

/// What the executor checks names against.
#[derive(Debug, Clone)]
pub struct Families {
    /// The write grants, as the server's namespace names them.
    pub grants: Vec<PathBuf>,
    /// `core.hooksPath` directories: `git_hooks` below them.
    pub hooks: Vec<PathBuf>,
    pub allow: Vec<PersistKind>,
}

impl Families {
    /// The family of `path` (absolute, real), if it lies in a write grant.
    pub fn of(&self, path: &Path) -> Option<PersistKind> {
        if !self.grants.iter().any(|g| path.starts_with(g)) {
            return None;
        }
        classify(path).or_else(|| {
            (self.hooks.iter())
                .any(|h| path.starts_with(h))
                .then_some(PersistKind::GitHooks)
        })
    }
}

/// Receives one message and the fds it carries (close-on-exec); an empty
/// message is EOF.
pub fn recv(sock: &UnixDatagram) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_MSG];
    let msg = ipc::recv_fds::<2>(sock, &mut buf)?;
    buf.truncate(msg.len);
    Ok((buf, msg.fds))
}

/// Forks the executor (a grandchild: the caller cannot wait for it) and
/// returns the daemon's end of its socket and its pid. Call it in the
/// single-threaded launch helper, after every layer but this filter.
pub fn spawn_executor(families: Families) -> Result<(OwnedFd, u32), PersistFenceError> {
    let (ours, theirs) = UnixDatagram::pair().map_err(PersistFenceError::Executor)?;
    // Datagram pairs keep message boundaries. The grandchild's pid comes
    // back through a pipe.
    let (rd, wr) = nix::unistd::pipe().map_err(|e| PersistFenceError::Executor(e.into()))?;
    // SAFETY: the helper is single-threaded (checked at its start), so the
    // child may allocate and run ordinary code.
    match unsafe { nix::unistd::fork() }.map_err(|e| PersistFenceError::Executor(e.into()))? {
        nix::unistd::ForkResult::Child => {
            drop(ours);
            drop(rd);
            // SAFETY: as above; the intermediate child exits right away.
            match unsafe { nix::unistd::fork() } {
                Ok(nix::unistd::ForkResult::Child) => {
                    let pid = std::process::id().to_ne_bytes();
                    let _ = nix::unistd::write(&wr, &pid);
                    drop(wr);
                    executor_main(theirs, &families)
                }
                _ => std::process::exit(0),
            }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(theirs);
            drop(wr);
            let _ = nix::sys::wait::waitpid(child, None);
            let mut pid = [0u8; 4];
            let n = nix::unistd::read(&rd, &mut pid)
                .map_err(|e| PersistFenceError::Executor(e.into()))?;
            if n != 4 {
                return Err(PersistFenceError::Executor(io::Error::other(
                    "the executor did not start",
                )));
            }
            Ok((ours.into(), u32::from_ne_bytes(pid)))
        }
    }
}

/// The executor's loop: one request, one reply, until the daemon closes.
fn executor_main(sock: UnixDatagram, families: &Families) -> ! {
    // Keep only the socket, at fd 0: the server's stdio, the control
    // socket and the listeners must not be held open by this process.
    let raw = sock.as_raw_fd();
    // SAFETY: dup2 onto fd 0, then close_range above it; nothing else in
    // this process uses those descriptors any more.
    unsafe {
        if raw != 0 {
            libc::dup2(raw, 0);
        }
        libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32);
    }
    std::mem::forget(sock);
    // SAFETY: fd 0 is the socket, owned by this loop from now on.
    let sock = unsafe { UnixDatagram::from_raw_fd(0) };
    loop {
        let Ok((bytes, fds)) = recv(&sock) else {
            std::process::exit(0)
        };
        if bytes.is_empty() {
            std::process::exit(0);
        }
        let Ok(req) = serde_json::from_slice::<ExecRequest>(&bytes) else {
            std::process::exit(1)
        };
        let (reply, fd) = perform(&req, fds, families);
        let out = serde_json::to_vec(&reply).unwrap_or_default();
        let attach: Vec<RawFd> = fd.iter().map(AsRawFd::as_raw_fd).collect();
        if ipc::send_fds(&sock, &out, &attach).is_err() {
            std::process::exit(0);
        }
    }
}

/// Where a path starts: a directory fd, or the root (absolute paths).
type Base = Option<OwnedFd>;

/// Performs one request; an open's file comes back as the fd.
pub fn perform(
    req: &ExecRequest,
    fds: Vec<OwnedFd>,
    families: &Families,
) -> (ExecReply, Option<OwnedFd>) {
    // SAFETY: umask only sets this process's mask.
    unsafe { libc::umask(req.umask as libc::mode_t) };
    let mut fds = fds.into_iter();
    let mut bases: Vec<Base> = req
        .dirs
        .iter()
        .map(|d| if *d { fds.next() } else { None })
        .collect();
    bases.resize_with(2, || None);
    let mut ex = Exec {
        req,
        families,
        hits: Vec::new(),
    };
    let new_base = bases.pop().flatten();
    let first = bases.pop().flatten();
    let (result, fd) = match ex.run(first, new_base) {
        Ok((r, fd)) => (r, fd),
        Err(errno) => (-i64::from(errno), None),
    };
    (
        ExecReply {
            result,
            hits: ex.hits,
        },
        fd,
    )
}

struct Exec<'a> {
    req: &'a ExecRequest,
    families: &'a Families,
    hits: Vec<Hit>,
}

/// A name to create or change: its directory, the name as passed (with
/// any trailing slashes) and its real path.
struct Named {
    dir: OwnedFd,
    raw: CString,
    real: Option<PathBuf>,
}

type Done = (i64, Option<OwnedFd>);

impl Exec<'_> {
    fn run(&mut self, first: Base, second: Base) -> Result<Done, i32> {
        match &self.req.op {
            Op::Open {
                path,
                flags,
                mode,
                resolve,
            } => {
                let path = self.magic(path);
                if flags & libc::O_CREAT == 0 {
                    let fd = open(first.as_ref(), &cstr(&path)?, *flags, *mode, *resolve)?;
                    return Ok((0, Some(fd)));
                }
                self.create_open(first, &path, *flags, *mode, *resolve, 0)
            }
            Op::Mkdir { path, mode } => {
                let n = self.name(first.as_ref(), path)?;
                // SAFETY: mkdirat with a directory fd and a C string.
                errno(unsafe { libc::mkdirat(n.dir.as_raw_fd(), n.raw.as_ptr(), *mode) })
            }
            Op::Mknod { path, mode, dev } => {
                let n = self.name(first.as_ref(), path)?;
                // SAFETY: as above.
                errno(unsafe {
                    libc::mknodat(
                        n.dir.as_raw_fd(),
                        n.raw.as_ptr(),
                        *mode,
                        *dev as libc::dev_t,
                    )
                })
            }
            Op::Symlink { target, path } => {
                let n = self.name(first.as_ref(), path)?;
                self.symlink_target(&n, target);
                let t = cstr(target)?;
                // SAFETY: as above.
                errno(unsafe { libc::symlinkat(t.as_ptr(), n.dir.as_raw_fd(), n.raw.as_ptr()) })
            }
            Op::Link { old, new, flags } => {
                let n = self.name(second.as_ref(), new)?;
                let old = cstr(&self.magic(old))?;
                let olddir = first.as_ref().map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
                // SAFETY: as above.
                errno(unsafe {
                    libc::linkat(
                        olddir,
                        old.as_ptr(),
                        n.dir.as_raw_fd(),
                        n.raw.as_ptr(),
                        *flags,
                    )
                })
            }
            Op::Rename { old, new, flags } => {
                // Moving a persistence path away changes it as much as
                // writing one: both names are checked.
                let o = self.name(first.as_ref(), old)?;
                let n = self.name(second.as_ref(), new)?;
                // SAFETY: as above.
                errno(unsafe {
                    libc::renameat2(
                        o.dir.as_raw_fd(),
                        o.raw.as_ptr(),
                        n.dir.as_raw_fd(),
                        n.raw.as_ptr(),
                        *flags,
                    )
                })
            }
        }
    }

    /// `/proc/self`, `/proc/thread-self`, `/dev/fd` and `/dev/std*` name
    /// the caller, not this process.
    fn magic(&self, path: &[u8]) -> Vec<u8> {
        let (tgid, tid) = (self.req.tgid, self.req.tid);
        let rules: [(&[u8], String); 6] = [
            (b"/proc/self", format!("/proc/{tgid}")),
            (b"/proc/thread-self", format!("/proc/{tgid}/task/{tid}")),
            (b"/dev/fd", format!("/proc/{tgid}/fd")),
            (b"/dev/stdin", format!("/proc/{tgid}/fd/0")),
            (b"/dev/stdout", format!("/proc/{tgid}/fd/1")),
            (b"/dev/stderr", format!("/proc/{tgid}/fd/2")),
        ];
        for (from, to) in rules {
            if let Some(rest) = path.strip_prefix(from) {
                if rest.is_empty() || rest[0] == b'/' {
                    let mut out = to.into_bytes();
                    out.extend_from_slice(rest);
                    return out;
                }
            }
        }
        path.to_vec()
    }

    /// Opens the directory of `path`'s last component and checks that
    /// name: `EACCES` for a persistence name the policy does not allow.
    fn name(&mut self, base: Option<&OwnedFd>, path: &[u8]) -> Result<Named, i32> {
        self.name_with(base, path, 0)
    }

    fn name_with(
        &mut self,
        base: Option<&OwnedFd>,
        path: &[u8],
        resolve: u64,
    ) -> Result<Named, i32> {
        let path = self.magic(path);
        let (dir, raw, clean) = split(&path);
        if path.is_empty() {
            return Err(libc::ENOENT);
        }
        if clean.is_empty() {
            // `/`: no name is made; the kernel answers for `.` there.
            let dir = open(None, &cstr(b"/")?, libc::O_PATH | libc::O_DIRECTORY, 0, 0)?;
            return Ok(Named {
                dir,
                raw: cstr(b".")?,
                real: None,
            });
        }
        let dir = match dir {
            None => match base {
                Some(b) => dup(b)?,
                None => return Err(libc::EBADF),
            },
            Some(d) => open(
                base,
                &cstr(d)?,
                libc::O_PATH | libc::O_DIRECTORY,
                0,
                resolve,
            )?,
        };
        let real = real_path(&dir).map(|d| d.join(OsStr::from_bytes(clean)));
        if let Some(real) = &real {
            self.check(real)?;
        }
        Ok(Named {
            dir,
            raw: cstr(raw)?,
            real,
        })
    }

    /// Records a persistence name; `EACCES` if the policy does not allow it.
    fn check(&mut self, real: &Path) -> Result<(), i32> {
        let last = real.file_name().map(OsStr::as_bytes);
        if matches!(last, None | Some(b".") | Some(b"..")) {
            return Ok(());
        }
        let Some(family) = self.families.of(real) else {
            return Ok(());
        };
        let allowed = self.families.allow.contains(&family);
        self.hits.push(Hit {
            family,
            path: real.to_owned(),
            allowed,
            refused: !allowed,
        });
        if allowed {
            Ok(())
        } else {
            Err(libc::EACCES)
        }
    }

    /// A symlink leading into a persistence path is recorded (what is
    /// later written through it is checked when that happens).
    fn symlink_target(&mut self, link: &Named, target: &[u8]) {
        let Some(real) = &link.real else { return };
        let t = Path::new(OsStr::from_bytes(target));
        let to = match real.parent() {
            Some(dir) if !t.is_absolute() => crate::policy::learn::normalise(&dir.join(t)),
            _ => crate::policy::learn::normalise(t),
        };
        if let Some(family) = self.families.of(&to) {
            self.hits.push(Hit {
                family,
                path: to,
                allowed: self.families.allow.contains(&family),
                refused: false,
            });
        }
    }

    /// An `O_CREAT` open: the name is checked, then opened without
    /// following a symlink there; one is followed by hand (a dangling
    /// symlink would otherwise create its target unchecked).
    fn create_open(
        &mut self,
        base: Base,
        path: &[u8],
        flags: i32,
        mode: u32,
        resolve: u64,
        depth: usize,
    ) -> Result<Done, i32> {
        let n = self.name_with(base.as_ref(), path, resolve)?;
        let follow = flags & (libc::O_NOFOLLOW | libc::O_EXCL) == 0 && resolve == 0;
        // procfs makes no names, and its magic links (`/proc/<pid>/fd/1`)
        // cannot be followed by hand.
        let nofollow = if follow && on_procfs(&n.dir) {
            0
        } else {
            libc::O_NOFOLLOW
        };
        match open(Some(&n.dir), &n.raw, flags | nofollow, mode, resolve) {
            Ok(fd) => Ok((0, Some(fd))),
            Err(libc::ELOOP) if follow && depth < MAX_LINKS => {
                let target = readlink_at(&n.dir, &n.raw).ok_or(libc::ELOOP)?;
                let base = if target.first() == Some(&b'/') {
                    None
                } else {
                    Some(n.dir)
                };
                self.create_open(base, &target, flags, mode, 0, depth + 1)
            }
            Err(e) => Err(e),
        }
    }
}

/// Splits a path into its directory part (`None`: the base itself), the
/// last component as passed (trailing slashes kept) and that component
/// without them.
fn split(path: &[u8]) -> (Option<&[u8]>, &[u8], &[u8]) {
    let end = path.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    let trimmed = &path[..end];
    match trimmed.iter().rposition(|&b| b == b'/') {
        None => (None, path, trimmed),
        Some(0) => (Some(b"/"), &path[1..], &trimmed[1..]),
        Some(i) => (Some(&path[..i]), &path[i + 1..], &trimmed[i + 1..]),
    }
}

fn cstr(b: &[u8]) -> Result<CString, i32> {
    CString::new(b).map_err(|_| libc::EINVAL)
}

fn errno(ret: libc::c_int) -> Result<Done, i32> {
    if ret < 0 {
        Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok((i64::from(ret), None))
    }
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd, i32> {
    fd.try_clone()
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// `openat` (or `openat2` with `resolve`), close-on-exec in this process.
fn open(
    base: Option<&OwnedFd>,
    path: &CString,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> Result<OwnedFd, i32> {
    let dir = base.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    let flags = flags | libc::O_CLOEXEC;
    let ret = if resolve == 0 {
        // SAFETY: openat with a C string; the mode is read only with O_CREAT.
        unsafe { libc::openat(dir, path.as_ptr(), flags, mode) }
    } else {
        let how = OpenHow {
            flags: flags as u64,
            mode: if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
                u64::from(mode)
            } else {
                0
            },
            resolve,
        };
        // SAFETY: openat2 reads `how` (its size passed) and the C string.
        unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            ) as i32
        }
    };
    if ret < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    // SAFETY: the kernel just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(ret) })
}

fn readlink_at(dir: &OwnedFd, name: &CString) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: readlinkat writes at most buf.len() bytes into buf.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n <= 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

fn on_procfs(fd: &OwnedFd) -> bool {
    nix::sys::statfs::fstatfs(fd)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
}

/// `struct open_how` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Where a directory fd is, as this mount namespace names it.
fn real_path(fd: &OwnedFd) -> Option<PathBuf> {
    let p = proc::fd_path(fd).ok()?;
    p.is_absolute().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_last_component() {
        assert_eq!(split(b"a"), (None, &b"a"[..], &b"a"[..]));
        assert_eq!(split(b"a/b/"), (Some(&b"a"[..]), &b"b/"[..], &b"b"[..]));
        assert_eq!(split(b"/x"), (Some(&b"/"[..]), &b"x"[..], &b"x"[..]));
        assert_eq!(split(b"/a/b/c"), (Some(&b"/a/b"[..]), &b"c"[..], &b"c"[..]));
        assert_eq!(split(b"/").2, b"");
    }

    fn families(dir: &Path, allow: Vec<PersistKind>) -> Families {
        Families {
            grants: vec![std::fs::canonicalize(dir).unwrap()],
            hooks: vec![],
            allow,
        }
    }

    fn request(op: Op, dirs: Vec<bool>) -> ExecRequest {
        ExecRequest {
            op,
            dirs,
            tgid: std::process::id(),
            tid: std::process::id(),
            umask: 0o022,
        }
    }

    #[test]
    fn refuses_new_persistence_names_and_makes_the_rest() {
        let tmp = std::env::temp_dir().join(format!("mcpguard-pfence-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let root = std::fs::canonicalize(&tmp).unwrap();
        let fam = families(&root, vec![PersistKind::Idea]);
        let dirfd = || vec![OwnedFd::from(std::fs::File::open(&root).unwrap())];
        let open = |path: &str| Op::Open {
            path: path.into(),
            flags: libc::O_WRONLY | libc::O_CREAT,
            mode: 0o644,
            resolve: 0,
        };
        let (r, fd) = perform(&request(open(".envrc"), vec![true]), dirfd(), &fam);
        assert_eq!(r.result, -i64::from(libc::EACCES));
        assert!(fd.is_none() && !root.join(".envrc").exists());
        assert_eq!(r.hits[0].family, PersistKind::Direnv);
        assert_eq!(r.hits[0].path, root.join(".envrc"));
        let (r, fd) = perform(&request(open("src.txt"), vec![true]), dirfd(), &fam);
        assert_eq!((r.result, r.hits.len()), (0, 0));
        assert!(fd.is_some() && root.join("src.txt").is_file());
        // A dangling symlink leads to the name it would create.
        std::os::unix::fs::symlink(".mcp.json", root.join("lnk")).unwrap();
        let abs = root.join("lnk").to_str().unwrap().to_owned();
        let (r, _) = perform(&request(open(&abs), vec![false]), vec![], &fam);
        assert_eq!(r.result, -i64::from(libc::EACCES));
        assert!(!root.join(".mcp.json").exists());
        // mkdir .git, rename onto .vscode; an allowed family is made.
        let mkdir = |p: &str| Op::Mkdir {
            path: p.into(),
            mode: 0o755,
        };
        let (r, _) = perform(&request(mkdir(".git"), vec![true]), dirfd(), &fam);
        assert_eq!(r.result, -i64::from(libc::EACCES));
        let (r, _) = perform(&request(mkdir(".idea"), vec![true]), dirfd(), &fam);
        assert_eq!(r.result, 0);
        assert!(r.hits[0].allowed && root.join(".idea").is_dir());
        let rename = Op::Rename {
            old: "src.txt".into(),
            new: ".vscode".into(),
            flags: 0,
        };
        let mut two = dirfd();
        two.extend(dirfd());
        let (r, _) = perform(&request(rename, vec![true, true]), two, &fam);
        assert_eq!(r.result, -i64::from(libc::EACCES));
        assert!(root.join("src.txt").exists());
        // Outside the grants nothing is a persistence name.
        let other = families(&root.join(".idea"), vec![]);
        let (r, _) = perform(&request(mkdir("x/.git"), vec![true]), dirfd(), &other);
        assert_eq!(r.result, -i64::from(libc::ENOENT));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
