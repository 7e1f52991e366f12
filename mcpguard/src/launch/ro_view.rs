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
    os::fd::OwnedFd,
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
use thiserror::Error;

use super::{
    mount_api::{clone_tree, move_onto, set_read_only},
    reach::{is_missing, ReachError, UserFs},
};
use crate::kernel::proc;

/// Why the view could not be built (part of [`super::mounts::MountError`]).
#[derive(Debug, Error)]
pub enum ViewError {
    #[error("cannot bind {} back into the private namespace: {errno}", path.display())]
    Bind { path: PathBuf, errno: Errno },
    #[error("cannot set the read-only view on {} (needs Linux 5.12+): {errno}", path.display())]
    ReadOnly { path: PathBuf, errno: Errno },
    #[error("mounts: {0}")]
    Reach(#[from] ReachError),
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
) -> Result<Vec<PathBuf>, ViewError> {
    if write.iter().any(|w| w == Path::new("/")) {
        return Ok(vec![PathBuf::from("/")]);
    }
    let grants = open_grants(write, user)?;
    let read_only_error = |path: &Path| {
        let path = path.to_owned();
        move |errno| ViewError::ReadOnly { path, errno }
    };
    set_read_only(None, Path::new("/"), true, true).map_err(read_only_error(Path::new("/")))?;
    for dir in scratch {
        set_read_only(None, dir, false, false).map_err(read_only_error(dir))?;
    }
    let mut bound = Vec::new();
    for g in &grants {
        move_onto(&g.tree, &g.fd).map_err(|errno| ViewError::Bind {
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
fn open_grants(write: &[PathBuf], user: &UserFs) -> Result<Vec<Grant>, ViewError> {
    let mut opened: Vec<(PathBuf, OwnedFd, bool)> = Vec::new();
    for (asked, fd) in write.iter().zip(user.open_paths(write, OFlag::empty())?) {
        let Ok(fd) = fd else { continue };
        let err = |errno| ViewError::ReadOnly {
            path: asked.clone(),
            errno,
        };
        let is_dir = fstat(&fd).map_err(err)?.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let real = match proc::fd_path(&fd) {
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
        let err = |errno| ViewError::ReadOnly {
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
            set_read_only(Some(&tree), Path::new(""), false, false).map_err(|errno| {
                ViewError::ReadOnly {
                    path: PathBuf::new(),
                    errno,
                }
            })?;
        }
        if is_dir {
            dirs.push(real.clone());
        }
        grants.push(Grant { real, fd, tree });
    }
    Ok(grants)
}
