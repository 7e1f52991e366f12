//! The read-only view: everything a server sees is mounted read-only
//! except what its policy grants for writing.
//!
//! Landlock has no right for `chmod`, `chown`, `utimensat` or
//! `setxattr`/`removexattr`: without this view a server with no write
//! grant could make `~/.ssh/id_rsa` world-readable. A read-only mount
//! refuses the whole family (and every other write: `truncate`, `mknod`,
//! `unlink`, `mkdir`, opens for writing) with `EROFS`, before Landlock is
//! asked. So the launch helper, in the server's private mount namespace
//! ([`super::mounts`]), marks every mount read-only (`mount_setattr` with
//! `AT_RECURSIVE`) and binds each write grant back onto itself read-write:
//!
//! - The private tmpfs mounts (`/tmp`, `/dev/shm`, ...) stay writable; the
//!   paths kept inside them follow their grants like any other path.
//! - `/proc` is mounted fresh after the view and stays writable (its files
//!   are the server's own). Device nodes need no writable mount: writing
//!   `/dev/null` or a terminal works on a read-only `/dev`.
//! - A write grant is opened as the user and cloned from that fd
//!   (`open_tree`, a directory with what is mounted below it, a file on
//!   its own) before the view exists; the clone is made writable and moved
//!   onto the same fd (`move_mount`), so no path is looked up twice and a
//!   rename in between cannot redirect it. A grant below another grant is
//!   visible through it already. A grant that does not exist gets nothing:
//!   Landlock grants nothing there either, and a name created later under
//!   a granted parent is writable through it.
//! - Nested grants follow Landlock's union: a read-only path inside a
//!   write grant is writable (Landlock would allow it too), a write grant
//!   inside a read-only tree is writable.
//! - A mount that was read-only before the view (on the host, or because
//!   its superblock is) stays read-only inside a write grant: the clone
//!   keeps each mount's flags, and only the grant's own mount is made
//!   writable, when it was. The view never gives a server more than its
//!   user had.
//! - A write grant of `/` leaves nothing to make read-only: no view.
//!
//! Learning mode has no private namespace at all, so no view: the server
//! changes attributes as its user may, and the attribute audit records
//! every such call so `policy learn` proposes the write grant it needs.

use std::{
    ffi::CString,
    fs,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::OFlag,
    sys::{
        stat::fstat,
        statvfs::{fstatvfs, FsFlags},
    },
};

use super::{
    mounts::MountError,
    reach::{is_missing, UserFs},
};

/// `MOUNT_ATTR_RDONLY` from `<linux/mount.h>`.
const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `OPEN_TREE_CLONE` from `<linux/mount.h>`.
const OPEN_TREE_CLONE: libc::c_uint = 0x1;
/// `MOVE_MOUNT_F_EMPTY_PATH` and `MOVE_MOUNT_T_EMPTY_PATH`.
const MOVE_MOUNT_EMPTY_PATHS: libc::c_uint = 0x4 | 0x40;

/// `struct mount_attr` from `<linux/mount.h>` (`MOUNT_ATTR_SIZE_VER0`).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A write grant: where it is, the fd the user opened it by, and its
/// detached writable clone.
struct Grant {
    real: PathBuf,
    fd: OwnedFd,
    tree: OwnedFd,
}

/// Makes the namespace read-only but for `write` (the policy's write
/// grants, as the user reaches them) and `scratch` (the private tmpfs
/// mounts). Returns the paths bound back read-write. Runs as root in the
/// launch helper, after every other mount of the namespace but `/proc`.
pub fn apply(
    write: &[PathBuf],
    scratch: &[PathBuf],
    user: &UserFs,
) -> Result<Vec<PathBuf>, MountError> {
    if write.iter().any(|w| w == Path::new("/")) {
        return Ok(vec![PathBuf::from("/")]);
    }
    let grants = open_grants(write, user)?;
    set_read_only(None, Path::new("/"), true, true)?;
    for dir in scratch {
        set_read_only(None, dir, false, false)?;
    }
    let mut bound = Vec::new();
    for g in &grants {
        move_onto(&g.tree, &g.fd).map_err(|errno| MountError::Bind {
            path: g.real.clone(),
            errno,
        })?;
        bound.push(g.real.clone());
    }
    Ok(bound)
}

/// Opens each write grant as the user and clones it: those that exist and
/// do not lie below another grant. Missing or unreachable grants are left
/// out (the mount and Landlock reports name unreachable ones).
fn open_grants(write: &[PathBuf], user: &UserFs) -> Result<Vec<Grant>, MountError> {
    let mut opened: Vec<(PathBuf, OwnedFd, bool)> = Vec::new();
    for (asked, fd) in write.iter().zip(user.open_paths(write, OFlag::empty())?) {
        let Ok(fd) = fd else { continue };
        let err = |errno| MountError::ReadOnly {
            path: asked.clone(),
            errno,
        };
        let is_dir = fstat(&fd).map_err(err)?.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let real = match fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
            Ok(real) => real,
            Err(e) => {
                let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
                if is_missing(errno) {
                    continue;
                }
                return Err(err(errno));
            }
        };
        opened.push((real, fd, is_dir));
    }
    opened.sort_by_key(|(real, ..)| real.components().count());
    let mut grants: Vec<Grant> = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (real, fd, is_dir) in opened {
        if dirs.iter().any(|d| real.starts_with(d)) {
            continue;
        }
        let err = |errno| MountError::ReadOnly {
            path: real.clone(),
            errno,
        };
        let tree = clone_tree(&fd, is_dir).map_err(err)?;
        // Only a mount that was writable: the view adds no right.
        let writable = !fstatvfs(&fd)
            .map_err(err)?
            .flags()
            .contains(FsFlags::ST_RDONLY);
        if writable {
            set_read_only(Some(&tree), Path::new(""), false, false)?;
        }
        if is_dir {
            dirs.push(real.clone());
        }
        grants.push(Grant { real, fd, tree });
    }
    Ok(grants)
}

/// `open_tree(2)`: a detached copy of the mount at `fd` (with everything
/// mounted below it, for a directory), each mount keeping its flags.
fn clone_tree(fd: &OwnedFd, recursive: bool) -> Result<OwnedFd, Errno> {
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | libc::AT_EMPTY_PATH as libc::c_uint
        | if recursive {
            libc::AT_RECURSIVE as libc::c_uint
        } else {
            0
        };
    // SAFETY: the path is a NUL-terminated empty string, used with
    // AT_EMPTY_PATH on a live fd; the kernel returns a new fd or -1.
    let rc = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) };
    if rc < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `rc` is a new fd this process owns and nothing else holds.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

/// `move_mount(2)`: attaches the detached `tree` on top of what `onto`
/// names.
fn move_onto(tree: &OwnedFd, onto: &OwnedFd) -> Result<(), Errno> {
    // SAFETY: both paths are NUL-terminated empty strings, used with the
    // EMPTY_PATH flags on live fds.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            onto.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_EMPTY_PATHS,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `mount_setattr(2)`: sets (or clears) `MOUNT_ATTR_RDONLY` on the mount
/// at `path` (relative to `dir`, or the mount `dir` is when `path` is
/// empty), and with `recursive` on every mount below it.
fn set_read_only(
    dir: Option<&OwnedFd>,
    path: &Path,
    read_only: bool,
    recursive: bool,
) -> Result<(), MountError> {
    let err = |errno| MountError::ReadOnly {
        path: path.to_owned(),
        errno,
    };
    let c_path =
        CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| err(Errno::EINVAL))?;
    let attr = MountAttr {
        attr_set: if read_only { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: if read_only { 0 } else { MOUNT_ATTR_RDONLY },
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    if dir.is_some() && path.as_os_str().is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    let dirfd = dir.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    // SAFETY: `c_path` is a NUL-terminated string and `attr` a live
    // `struct mount_attr` of the size passed; the kernel only reads both.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            c_path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(err(Errno::last()));
    }
    Ok(())
}
