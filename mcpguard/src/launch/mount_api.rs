//! The mount API by descriptor (`open_tree`, `mount_setattr`,
//! `move_mount`, Linux 5.12+): a mount is cloned from, changed on and
//! attached to the fd a path was opened by, so no path is looked up twice.
//! Shared by the read-only view ([`super::ro_view`]) and the persistence
//! binds ([`super::persist`]).

use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

use nix::errno::Errno;

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

/// `open_tree(2)`: a detached copy of the mount at `fd` (with everything
/// mounted below it, for a directory), each mount keeping its flags.
pub fn clone_tree(fd: &OwnedFd, recursive: bool) -> Result<OwnedFd, Errno> {
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
pub fn move_onto(tree: &OwnedFd, onto: &OwnedFd) -> Result<(), Errno> {
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
pub fn set_read_only(
    dir: Option<&OwnedFd>,
    path: &Path,
    read_only: bool,
    recursive: bool,
) -> Result<(), Errno> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
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
        return Err(Errno::last());
    }
    Ok(())
}

/// Binds the object `fd` names over itself (with what is mounted below
/// it), read-only if asked: a detached clone of it ([`clone_tree`]), made
/// read-only ([`set_read_only`]), attached on the same object
/// ([`move_onto`]). Linux 5.12+.
pub fn bind_over(fd: &OwnedFd, read_only: bool) -> Result<(), Errno> {
    let tree = clone_tree(fd, true)?;
    if read_only {
        set_read_only(Some(&tree), Path::new(""), true, true)?;
    }
    move_onto(&tree, fd)
}
