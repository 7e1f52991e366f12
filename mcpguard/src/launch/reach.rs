//! Opening the paths a user named, with that user's credentials.
//!
//! The launch helper runs as root, but most paths it opens come from the
//! user: the policy's filesystem lists, `[network] unix`, the client's
//! working directory. Opened as root (with `CAP_DAC_READ_SEARCH`), a path
//! inside a directory the user cannot enter would still yield an fd, and a
//! bind mount of that fd into the server's fresh `/tmp` or `/run` would
//! put the file behind new, traversable parent directories: a server could
//! then read a world-readable file in a root-only directory, or connect to
//! a socket in another user's `0700` runtime directory. So the helper
//! resolves every user-named path here, and only here.
//!
//! [`UserFs::open_paths`] opens each path with `O_PATH` while the calling
//! thread's filesystem identity (fsuid, fsgid, supplementary groups) is the
//! server's: the kernel resolves every component with the user's
//! credentials in one `openat`, and an fsuid other than 0 also clears the
//! capabilities that bypass permission checks from the effective set. The
//! fd names the object that resolution reached; everything later (the
//! Landlock rule, the bind source through `/proc/self/fd/N`) uses the fd,
//! never the path again. A check by path before a bind by path (`access`
//! with the user's ids, then `mount` as root) would leave a window in which
//! the user swaps a symlink; an fd cannot be swapped, so there is nothing
//! to race. A forked child that opens as the user and passes fds back
//! would give the same guarantee with more moving parts.
//!
//! A path the user cannot reach is not an error: like a path that does not
//! exist, it gets no rule and no bind, and the launch record says why (see
//! [`unreachable_reason`]). A policy is shared by every user who runs it,
//! and what one of them may not reach must simply stay out of reach for
//! their server, not stop it.
//!
//! The identity is per thread (raw `setgroups`, not glibc's, which would
//! change every thread); the helper is single-threaded, and the unit tests
//! call this from threads of their own.

use std::{
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::{open, OFlag},
    sys::stat::Mode,
    unistd::{Gid, Uid},
};
use thiserror::Error;

/// Failures to take on or give back the user's filesystem identity.
#[derive(Debug, Error)]
pub enum ReachError {
    #[error(
        "cannot take uid {uid}'s filesystem identity to open the paths it named: {what} {errno}"
    )]
    Enter {
        uid: u32,
        what: &'static str,
        errno: Errno,
    },
    #[error("cannot return to root's filesystem identity after opening uid {uid}'s paths: {what}")]
    Leave { uid: u32, what: &'static str },
}

/// The identity a server will run with, used for filesystem lookups while
/// the helper is still root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFs {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (only those the policy names).
    pub groups: Vec<u32>,
}

/// The ids `setfsuid`/`setfsgid` reject, which makes them report the
/// current value without changing it.
const QUERY: u32 = u32::MAX;

impl UserFs {
    /// Opens each of `paths` with `O_PATH | O_CLOEXEC | extra` as the user,
    /// returning one result per path, in order. The outer error means the
    /// identity could not be switched (nothing was opened) or not switched
    /// back (the caller must not go on as root).
    pub fn open_paths(
        &self,
        paths: &[PathBuf],
        extra: OFlag,
    ) -> Result<Vec<Result<OwnedFd, Errno>>, ReachError> {
        self.as_user(|| paths.iter().map(|path| open_as_is(path, extra)).collect())
    }

    /// [`Self::open_paths`] for one path.
    pub fn open_path(
        &self,
        path: &Path,
        extra: OFlag,
    ) -> Result<Result<OwnedFd, Errno>, ReachError> {
        self.as_user(|| open_as_is(path, extra))
    }

    /// Runs `lookups` with the user's filesystem identity, then returns to
    /// root's.
    pub(super) fn as_user<T>(&self, lookups: impl FnOnce() -> T) -> Result<T, ReachError> {
        let saved = self.enter()?;
        let out = lookups();
        self.leave(&saved)?;
        Ok(out)
    }

    /// Switches groups, fsgid and fsuid and checks they took; from the
    /// fsuid change on, the kernel also leaves the DAC-bypassing
    /// capabilities out of the effective set (`setfsuid(2)`), until fsuid
    /// is 0 again. Returns root's supplementary groups, for [`Self::leave`].
    fn enter(&self) -> Result<Vec<libc::gid_t>, ReachError> {
        let fail = |what, errno| ReachError::Enter {
            uid: self.uid,
            what,
            errno,
        };
        if self.uid == 0 {
            return Err(fail("(uid 0 is never a server's)", Errno::EINVAL));
        }
        let saved = thread_groups().map_err(|e| fail("getgroups", e))?;
        set_thread_groups(&self.groups).map_err(|e| fail("setgroups", e))?;
        nix::unistd::setfsgid(Gid::from_raw(self.gid));
        nix::unistd::setfsuid(Uid::from_raw(self.uid));
        let (fsuid, fsgid) = current_fs_ids();
        if (fsuid, fsgid) != (self.uid, self.gid) {
            // Best effort back to root before reporting.
            let _ = self.leave(&saved);
            return Err(fail("setfsuid/setfsgid did not take", Errno::EPERM));
        }
        Ok(saved)
    }

    /// Back to fsuid/fsgid 0 and root's groups, checked.
    fn leave(&self, saved: &[libc::gid_t]) -> Result<(), ReachError> {
        let fail = |what| ReachError::Leave {
            uid: self.uid,
            what,
        };
        nix::unistd::setfsuid(Uid::from_raw(0));
        nix::unistd::setfsgid(Gid::from_raw(0));
        if current_fs_ids() != (0, 0) {
            return Err(fail("fsuid/fsgid are not 0"));
        }
        set_thread_groups(saved).map_err(|_| fail("setgroups"))
    }
}

/// Opens `path` with `O_PATH` (no access right is needed on the object
/// itself, only search on every directory leading to it).
fn open_as_is(path: &Path, extra: OFlag) -> Result<OwnedFd, Errno> {
    open(
        path,
        OFlag::O_PATH | OFlag::O_CLOEXEC | extra,
        Mode::empty(),
    )
}

/// The calling thread's fsuid and fsgid.
fn current_fs_ids() -> (u32, u32) {
    let uid = nix::unistd::setfsuid(Uid::from_raw(QUERY)).as_raw();
    let gid = nix::unistd::setfsgid(Gid::from_raw(QUERY)).as_raw();
    (uid, gid)
}

/// The calling thread's supplementary groups.
fn thread_groups() -> Result<Vec<libc::gid_t>, Errno> {
    // SAFETY: with size 0 getgroups only returns the count.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let count = usize::try_from(count).map_err(|_| Errno::last())?;
    let mut groups: Vec<libc::gid_t> = vec![0; count];
    // SAFETY: `groups` has room for `count` entries; the count cannot grow
    // in between because only this thread changes its own groups.
    let got = unsafe { libc::getgroups(count as libc::c_int, groups.as_mut_ptr()) };
    let got = usize::try_from(got).map_err(|_| Errno::last())?;
    groups.truncate(got);
    Ok(groups)
}

/// `setgroups` for the calling thread only: the raw syscall, because
/// glibc's wrapper applies it to every thread of the process.
fn set_thread_groups(groups: &[libc::gid_t]) -> Result<(), Errno> {
    // SAFETY: the kernel reads `groups.len()` gids from the pointer, which
    // points at that many.
    let ret = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    Errno::result(ret).map(drop)
}

/// Whether a failed open means "not there" (skipped quietly, as always)
/// rather than "there, but not for this user".
pub fn is_missing(errno: Errno) -> bool {
    // ENOTDIR: a component is a file, so the path cannot exist either.
    matches!(errno, Errno::ENOENT | Errno::ENOTDIR)
}

/// The launch record's reason for a path that was not opened as `uid`.
pub fn unreachable_reason(errno: Errno, uid: u32) -> String {
    if is_missing(errno) {
        errno.to_string()
    } else {
        format!("{errno} (uid {uid} cannot reach it)")
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt};

    use super::*;

    #[test]
    fn paths_open_with_the_users_credentials_and_root_comes_back() {
        let dir = std::env::temp_dir().join(format!("mcpguard-reach-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("private")).unwrap();
        fs::write(dir.join("open.txt"), "x").unwrap();
        fs::write(dir.join("private/open.txt"), "x").unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
        let nobody = UserFs {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        };
        let paths = [
            dir.join("open.txt"),
            dir.join("private/open.txt"),
            dir.join("missing"),
        ];
        // A thread of its own: the identity is per thread.
        let (results, after) = std::thread::spawn(move || {
            let before = thread_groups().unwrap();
            let results: Vec<Result<(), Errno>> = nobody
                .open_paths(&paths, OFlag::empty())
                .unwrap()
                .into_iter()
                .map(|r| r.map(drop))
                .collect();
            let groups_back = thread_groups().unwrap() == before;
            (results, (current_fs_ids(), groups_back))
        })
        .join()
        .unwrap();
        assert_eq!(results, [Ok(()), Err(Errno::EACCES), Err(Errno::ENOENT)]);
        assert_eq!(after, ((0, 0), true));
        assert_eq!(
            unreachable_reason(Errno::EACCES, 65534),
            "EACCES: Permission denied (uid 65534 cannot reach it)"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn uid_0_is_refused() {
        let root = UserFs {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        assert!(matches!(
            root.open_path(Path::new("/"), OFlag::empty()),
            Err(ReachError::Enter { uid: 0, .. })
        ));
    }
}
