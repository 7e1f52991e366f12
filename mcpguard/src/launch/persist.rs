//! Read-only persistence paths inside the write grants.
//!
//! Landlock grants a hierarchy and cannot take a child back out, so a
//! write grant on a project also grants its `.git/hooks`, `.git/config`,
//! `.vscode/`, `.envrc`, `.mcp.json`: places where code written now runs
//! later, outside the guard ([`crate::policy::persist`]). In the server's
//! private mount namespace, after [`super::mounts::apply`], the helper
//! searches each write grant (as the user, [`super::reach`]; at most
//! [`MAX_DEPTH`] levels and [`MAX_DIRS`] directories) and binds every such
//! path that exists over itself, read-only: writing into one fails with
//! `EROFS`, and renaming or removing one (a mount point) with `EBUSY`. A
//! `.git` directory is also bound over itself read-write, so it cannot be
//! renamed away and replaced by one with fresh hooks. Families the policy
//! names in `[filesystem] allow_persistence` are left writable.
//!
//! Each bind is made from an `O_PATH` fd opened (without following a
//! symlink at the last component) while the user's identity was on, with
//! `open_tree` + `mount_setattr` + `move_mount` on that fd: no path is
//! looked up twice, so nothing can be swapped in between. A persistence
//! name that is a symlink is not bound (the mount would land on its
//! target) and is listed in [`PersistReport::symlinks`].
//!
//! Not covered here: names created after launch (a new `.envrc`, a
//! `.vscode/` or a `git init`'s `.git/hooks`), which no mount can cover:
//! the persistence fence refuses those ([`super::persist_fence`]).

use std::{
    ffi::OsStr,
    os::{fd::OwnedFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
};

use nix::{
    dir::{Dir, Type},
    errno::Errno,
    fcntl::{open, openat, OFlag},
    sys::stat::{fstat, Mode},
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{
    mount_api::bind_over,
    reach::{ReachError, UserFs},
};
use crate::{kernel::proc, policy::persist::PersistKind};

/// Deepest directory below a write grant that is searched.
pub const MAX_DEPTH: usize = 8;
/// Most directories searched per launch, over all write grants: a grant of
/// a whole home stops here, and the report says so.
pub const MAX_DIRS: usize = 10_000;
/// Directories never searched: dependency trees, not projects a user
/// opens or commits in.
const SKIP: &[&[u8]] = &[b"node_modules"];

#[derive(Debug, Error)]
pub enum PersistError {
    #[error("cannot bind {} read-only over itself: {errno}", path.display())]
    Bind { path: PathBuf, errno: Errno },
    #[error("persistence paths: {0}")]
    Reach(#[from] ReachError),
}

/// What the daemon asks for.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct PersistSpec {
    /// The write grants, expanded.
    pub write: Vec<PathBuf>,
    /// `[filesystem] allow_persistence`.
    pub allow: Vec<PersistKind>,
}

impl PersistSpec {
    /// Whether new persistence names need the run-time fence: there is a
    /// write grant and a family the policy does not allow.
    pub fn wants_fence(&self) -> bool {
        !self.write.is_empty()
            && (crate::policy::persist::ALL.iter()).any(|k| !self.allow.contains(k))
    }
}

/// What was done, for the launch record.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistReport {
    /// Persistence paths bound read-only over themselves.
    pub read_only: Vec<PathBuf>,
    /// `.git` directories bound over themselves so they cannot be renamed.
    pub pinned: Vec<PathBuf>,
    /// Of `read_only`, the directories repositories' `core.hooksPath`
    /// names (their names say nothing; the daemon's records need them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks_paths: Vec<PathBuf>,
    /// Persistence names that are symlinks, left as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symlinks: Vec<PathBuf>,
    /// Directories searched.
    pub searched: usize,
    /// The search stopped at [`MAX_DIRS`]: deeper paths were not searched.
    #[serde(default)]
    pub truncated: bool,
    /// The pid of the persistence fence's executor
    /// ([`super::persist_fence`]), when the fence is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<u32>,
}

/// Binds the persistence paths below `spec.write`. Runs in the launch
/// helper, as root, inside the server's mount namespace.
pub fn apply(spec: &PersistSpec, user: &UserFs) -> Result<PersistReport, PersistError> {
    user.as_user(|| {
        let mut search = Search {
            allow: &spec.allow,
            grant: PathBuf::new(),
            report: PersistReport::default(),
        };
        for grant in outermost(&spec.write) {
            // A grant that is not a directory the user can open has no
            // tree to search.
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
            let Ok(fd) = open(grant, flags, Mode::empty()) else {
                continue;
            };
            search.grant = real_path(&fd).unwrap_or_else(|| grant.clone());
            search.dir(fd, grant, 0)?;
        }
        Ok(search.report)
    })?
}

/// The grants not below another one (searched with it), in order.
fn outermost(grants: &[PathBuf]) -> Vec<&PathBuf> {
    grants
        .iter()
        .filter(|g| !grants.iter().any(|o| o != *g && g.starts_with(o)))
        .collect()
}

/// Where an fd's object is, as the kernel names it.
fn real_path(fd: &OwnedFd) -> Option<PathBuf> {
    proc::fd_path(fd).ok()
}

struct Search<'a> {
    allow: &'a [PersistKind],
    /// The grant being searched, as the kernel names it.
    grant: PathBuf,
    report: PersistReport,
}

impl Search<'_> {
    /// Searches one directory, and what lies below it.
    fn dir(&mut self, fd: OwnedFd, path: &Path, depth: usize) -> Result<(), PersistError> {
        if self.report.searched >= MAX_DIRS {
            self.report.truncated = true;
            return Ok(());
        }
        self.report.searched += 1;
        for (name, kind) in entries(&fd) {
            let name = OsStr::from_bytes(name.to_bytes());
            let child = path.join(name);
            if name.as_bytes() == b".git" {
                self.git(&fd, &child)?;
            } else if let Some(family) = PersistKind::of_entry(name) {
                if !self.allow.contains(&family) {
                    self.protect(&fd, name, &child)?;
                }
            } else if depth < MAX_DEPTH
                // No type from the filesystem: O_DIRECTORY decides.
                && matches!(kind, Some(Type::Directory) | None)
                && !SKIP.contains(&name.as_bytes())
            {
                let flags =
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                if let Ok(sub) = openat(&fd, name, flags, Mode::empty()) {
                    self.dir(sub, &child, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    /// A `.git` entry: a gitfile is bound read-only whole; a directory
    /// gets its hooks and config bound read-only, then is pinned.
    fn git(&mut self, parent: &OwnedFd, path: &Path) -> Result<(), PersistError> {
        let name = OsStr::new(".git");
        let Some((fd, kind)) = open_path(parent, name) else {
            return Ok(());
        };
        let hooks = !self.allow.contains(&PersistKind::GitHooks);
        let config = !self.allow.contains(&PersistKind::GitConfig);
        match kind {
            libc::S_IFREG if config => self.bind(&fd, path, true),
            libc::S_IFLNK => {
                self.report.symlinks.push(path.to_owned());
                Ok(())
            }
            libc::S_IFDIR if hooks || config => {
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
                let Ok(dir) = openat(parent, name, flags | OFlag::O_CLOEXEC, Mode::empty()) else {
                    return Ok(());
                };
                let inside: &[(&str, bool)] = &[
                    ("hooks", hooks),
                    ("config", config),
                    ("config.worktree", config),
                ];
                for (entry, _) in inside.iter().filter(|(_, guarded)| *guarded) {
                    self.protect(&dir, OsStr::new(entry), &path.join(entry))?;
                }
                if hooks {
                    self.hooks_path(&dir, path)?;
                }
                // Last: the clone takes the read-only binds inside along.
                self.bind_as(&fd, path, false)?;
                self.report.pinned.push(path.to_owned());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The directory a repository's `core.hooksPath` names (relative to
    /// its work tree, as git takes it), bound read-only when it lies in
    /// the grant being searched: `.githooks`, husky's `.husky/_`.
    fn hooks_path(&mut self, git_dir: &OwnedFd, git: &Path) -> Result<(), PersistError> {
        let Some(text) = read_small(git_dir, "config") else {
            return Ok(());
        };
        let (Some(named), Some(work_tree)) = (hooks_path(&text), git.parent()) else {
            return Ok(());
        };
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let Ok(fd) = open(&work_tree.join(named), flags, Mode::empty()) else {
            return Ok(());
        };
        match real_path(&fd) {
            Some(real) if real.starts_with(&self.grant) && real != self.grant => {
                self.bind(&fd, &real, true)?;
                self.report.hooks_paths.push(real);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Binds `parent`/`name` read-only over itself if it is a file or a
    /// directory; notes a symlink; leaves a missing name alone.
    fn protect(&mut self, parent: &OwnedFd, name: &OsStr, path: &Path) -> Result<(), PersistError> {
        match open_path(parent, name) {
            Some((fd, libc::S_IFREG | libc::S_IFDIR)) => self.bind(&fd, path, true),
            Some((_, libc::S_IFLNK)) => {
                self.report.symlinks.push(path.to_owned());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn bind(&mut self, fd: &OwnedFd, path: &Path, read_only: bool) -> Result<(), PersistError> {
        self.bind_as(fd, path, read_only)?;
        self.report.read_only.push(path.to_owned());
        Ok(())
    }

    fn bind_as(&self, fd: &OwnedFd, path: &Path, read_only: bool) -> Result<(), PersistError> {
        bind_over(fd, read_only).map_err(|errno| PersistError::Bind {
            path: path.to_owned(),
            errno,
        })
    }
}

/// The entries of a directory (not `.` and `..`), with their type where
/// the filesystem gives one; an unreadable directory has none.
fn entries(fd: &OwnedFd) -> Vec<(std::ffi::CString, Option<Type>)> {
    let Ok(dup) = fd.try_clone() else {
        return Vec::new();
    };
    let Ok(mut dir) = Dir::from_fd(dup) else {
        return Vec::new();
    };
    dir.iter()
        .filter_map(Result::ok)
        .filter(|e| !matches!(e.file_name().to_bytes(), b"." | b".."))
        .map(|e| {
            let kind = e.file_type();
            (e.file_name().to_owned(), kind)
        })
        .collect()
}

/// The text of a small regular file `parent`/`name` (a git config), not
/// following a symlink; `None` if it cannot be read or is over 64 KiB.
fn read_small(parent: &OwnedFd, name: &str) -> Option<String> {
    use std::io::Read;
    const MAX: u64 = 64 * 1024;
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = openat(parent, name, flags, Mode::empty()).ok()?;
    if fstat(&fd).ok()?.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX + 1)
        .read_to_string(&mut text)
        .ok()?;
    (text.len() as u64 <= MAX).then_some(text)
}

/// The last `hooksPath` of the `[core]` section in a git config's text,
/// unquoted and without a trailing comment.
fn hooks_path(config: &str) -> Option<&str> {
    let mut core = false;
    let mut found = None;
    for line in config.lines().map(str::trim) {
        if let Some(section) = line.strip_prefix('[') {
            let name = section.split([']', ' ', '"', '.']).next().unwrap_or("");
            core = name.eq_ignore_ascii_case("core");
            continue;
        }
        let Some((key, value)) = line.split_once('=').filter(|_| core) else {
            continue;
        };
        if key.trim().eq_ignore_ascii_case("hookspath") {
            let value = value.split(['#', ';']).next().unwrap_or("").trim();
            found = Some(value.trim_matches('"')).filter(|v| !v.is_empty());
        }
    }
    found
}

/// `parent`/`name` opened `O_PATH`, not following a symlink, with its
/// file type (`S_IFMT` bits); `None` when it cannot be opened.
fn open_path(parent: &OwnedFd, name: &OsStr) -> Option<(OwnedFd, libc::mode_t)> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(parent, name, flags, Mode::empty()).ok()?;
    let kind = fstat(&fd).ok()?.st_mode & libc::S_IFMT;
    Some((fd, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_path_is_read_from_the_core_section_only() {
        let config = "[core]\n\tbare = false\n\tHooksPath = \".husky/_\" # husky\n\
                      [alias]\n\thookspath = elsewhere\n";
        assert_eq!(hooks_path(config), Some(".husky/_"));
        assert_eq!(
            hooks_path("[core]\n\thooksPath = a\n\thooksPath = b\n"),
            Some("b")
        );
        assert_eq!(hooks_path("[alias]\n\thooksPath = a\n"), None);
        assert_eq!(hooks_path("[core]\n\thooksPath =\n"), None);
    }

    #[test]
    fn only_outermost_grants_are_searched() {
        let grants: Vec<PathBuf> = ["/p", "/p/sub", "/q", "/pq"].map(PathBuf::from).into();
        let want: Vec<&PathBuf> = vec![&grants[0], &grants[2], &grants[3]];
        assert_eq!(outermost(&grants), want);
    }
}
