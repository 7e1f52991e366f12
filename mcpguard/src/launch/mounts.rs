//! A private mount namespace per server, fencing Unix sockets.
//!
//! Landlock does not confine `connect()` to a pathname Unix socket, and the
//! sockets that matter live in a few runtime directories: the session bus
//! and agents in `/run/user/<uid>`, `docker.sock` in `/run`, ssh-agent and
//! X11 in `/tmp`. Before dropping privileges the launch helper gives the
//! server its own mount namespace in which those directories are fresh,
//! empty tmpfs mounts; only what the policy names is bound back in: the
//! sockets of `[network] unix`, the paths its `[filesystem]` lists name
//! below those directories, and the working directory. Binding a path back
//! grants nothing by itself; Landlock still decides access.
//!
//! The namespace is a slave of the host's, so mounts made on the host later
//! still show up, and nothing the server's namespace does propagates back.

use std::{
    fs,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::fs::{DirBuilderExt, PermissionsExt},
    },
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::{open, OFlag},
    mount::{mount, MsFlags},
    sched::{unshare, CloneFlags},
    sys::stat::Mode,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Directories replaced by empty tmpfs mounts, with the mode they get.
/// `/var/run` is usually a symlink to `/run` and is then the same mount.
pub const HIDDEN: &[(&str, u32)] = &[
    ("/run", 0o755),
    ("/var/run", 0o755),
    ("/tmp", 0o1777),
    ("/var/tmp", 0o1777),
    ("/dev/shm", 0o1777),
];

#[derive(Debug, Error)]
pub enum MountError {
    #[error("cannot create a private mount namespace: {0}")]
    Unshare(Errno),
    #[error("cannot make the mount namespace private: {0}")]
    Private(Errno),
    #[error("cannot mount an empty tmpfs on {}: {errno}", path.display())]
    Tmpfs { path: PathBuf, errno: Errno },
    #[error("cannot bind {} back into the private namespace: {errno}", path.display())]
    Bind { path: PathBuf, errno: Errno },
    #[error("cannot create mount point {}: {source}", path.display())]
    MountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the daemon asks for: paths to keep visible, and whose runtime
/// directory `/run/user/<uid>` is.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct MountSpec {
    /// Paths bound back in when they lie below a hidden directory.
    pub keep: Vec<PathBuf>,
    pub uid: u32,
    pub gid: u32,
}

/// What was done, for the launch record.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct MountReport {
    /// Directories replaced by empty tmpfs, under every name they go by.
    pub hidden: Vec<PathBuf>,
    /// Paths bound back in.
    pub kept: Vec<PathBuf>,
}

/// Whether `path` lies at or below `dir`.
fn below(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
}

/// Set up the namespace. Runs in the single-threaded launch helper, as
/// root, before privileges are dropped.
pub fn apply(spec: &MountSpec) -> Result<MountReport, MountError> {
    // Which directories exist, as real paths, outermost first and without
    // duplicates (/var/run -> /run).
    let mut hidden: Vec<(PathBuf, u32)> = Vec::new();
    // Every name the hidden directories go by (`/var/run` and `/run`), for
    // readers of the report matching paths as a server passed them.
    let mut names: Vec<PathBuf> = Vec::new();
    for (dir, mode) in HIDDEN {
        let Ok(real) = fs::canonicalize(dir) else {
            continue;
        };
        for n in [PathBuf::from(dir), real.clone()] {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        if hidden.iter().any(|(h, _)| below(&real, h)) {
            continue;
        }
        hidden.retain(|(h, _)| !below(h, &real));
        hidden.push((real, *mode));
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(MountError::Unshare)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(MountError::Private)?;

    // Open what is to be kept while it is still visible, inside the new
    // namespace (a bind source must be a mount of this namespace); the fds
    // reach the originals after the tmpfs hides them.
    let mut keep: Vec<(PathBuf, OwnedFd, bool)> = Vec::new();
    for path in &spec.keep {
        let Ok(real) = fs::canonicalize(path) else {
            continue;
        };
        // Only paths strictly below a hidden directory: a policy naming
        // "/tmp" itself gets the server's own empty /tmp, never the host's
        // (with everyone's sockets in it).
        if !hidden.iter().any(|(h, _)| below(&real, h) && real != *h)
            || keep.iter().any(|(k, _, _)| *k == real)
        {
            continue;
        }
        let Ok(meta) = fs::metadata(&real) else {
            continue;
        };
        let Ok(fd) = open(&real, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()) else {
            continue;
        };
        keep.push((real, fd, meta.is_dir()));
    }
    // Bind the outer paths first, so a kept directory does not cover a kept
    // path inside it with its (unhidden) contents in the wrong order.
    keep.sort_by_key(|(p, _, _)| p.components().count());

    for (dir, mode) in &hidden {
        let opts = format!("mode={mode:o}");
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            // noexec: a server may write here (Landlock permitting) but
            // never run what it wrote, even through a path Landlock's exec
            // rules would not name.
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(opts.as_str()),
        )
        .map_err(|errno| MountError::Tmpfs {
            path: dir.clone(),
            errno,
        })?;
    }
    // /run/user/<uid> keeps its usual shape (owned by the user, 0700) when
    // anything below it is bound back.
    let user_run = PathBuf::from(format!("/run/user/{}", spec.uid));

    let mut kept = Vec::new();
    for (path, fd, is_dir) in &keep {
        make_mount_point(path, *is_dir)?;
        let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let flags = if *is_dir {
            MsFlags::MS_BIND | MsFlags::MS_REC
        } else {
            MsFlags::MS_BIND
        };
        mount(
            Some(source.as_str()),
            path,
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(|errno| MountError::Bind {
            path: path.clone(),
            errno,
        })?;
        kept.push(path.clone());
    }
    // Only now hand the user's runtime dir to the user: creating mount
    // points inside a 0700 directory root does not own would need
    // CAP_DAC_OVERRIDE, which the daemon does not keep.
    if user_run.is_dir() && hidden.iter().any(|(h, _)| below(&user_run, h)) {
        let err = |source| MountError::MountPoint {
            path: user_run.clone(),
            source,
        };
        fs::set_permissions(&user_run, fs::Permissions::from_mode(0o700)).map_err(err)?;
        std::os::unix::fs::chown(&user_run, Some(spec.uid), Some(spec.gid)).map_err(err)?;
    }
    Ok(MountReport {
        hidden: names,
        kept,
    })
}

fn make_mount_point(path: &Path, is_dir: bool) -> Result<(), MountError> {
    let err = |source| MountError::MountPoint {
        path: path.to_owned(),
        source,
    };
    let dir = if is_dir {
        path
    } else {
        path.parent().unwrap_or(Path::new("/"))
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(err)?;
    if !is_dir && !path.exists() {
        fs::File::create(path).map_err(err)?;
    }
    Ok(())
}
