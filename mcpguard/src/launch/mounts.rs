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
//! Every path to bind back is opened as the user ([`super::reach`]) and
//! bound from that fd, so the server gets back only what its user could
//! reach: a file inside a root-only directory, or a socket in another
//! user's `/run/user/<uid>`, is left out and listed in
//! [`MountReport::unreachable`]. The directories made in the tmpfs to hold
//! a bind are root's (`0755`), and never made inside another bind: a path
//! below a directory that is itself bound back is visible through it
//! already, so root never creates anything in a directory a user controls.
//!
//! Sockets elsewhere (an agent in `~/.ssh`, a daemon's socket in
//! `/var/lib`) cannot be hidden by emptying a directory without hiding the
//! files around them too. Every pathname socket outside the hidden
//! directories that is listening when the server starts (`/proc/net/unix`)
//! and that its policy does not name (or names, but its user cannot reach)
//! is covered with an empty root-owned file instead, so `connect()` to it fails (`EACCES`). A socket created
//! there after the server started, or bound by a relative path, is not
//! covered.
//!
//! `/proc` is a fresh procfs mounted with `hidepid=ptraceable` (Linux 5.8+):
//! a process there sees only the processes it could ptrace. Landlock's
//! ptrace scoping leaves a server unable to ptrace anything outside its own
//! Landlock domain, so the server's `/proc` lists its own processes and
//! nothing else (not the daemon, not the client, not sibling servers),
//! while the system-wide files (`/proc/stat`, `/proc/meminfo`, `/proc/sys`)
//! stay as they are. That is what lets the runtime baseline
//! ([`crate::policy::baseline`]) grant `/proc`.
//!
//! Last before `/proc`, everything but the write grants and the fresh
//! tmpfs mounts is made read-only ([`super::ro_view`]), so attribute
//! changes Landlock cannot refuse (`chmod`, `chown`, `utimensat`, xattrs)
//! fail with `EROFS` outside the write grants.
//!
//! The namespace is a slave of the host's, so mounts made on the host later
//! still show up, and nothing the server's namespace does propagates back.

use std::{
    fs,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::OFlag,
    mount::{mount, MsFlags},
    sched::{unshare, CloneFlags},
    sys::stat::fstat,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{
    reach::{is_missing, unreachable_reason, ReachError, UserFs},
    sandbox::SkippedPath,
};
use crate::kernel::proc;

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
    #[error(transparent)]
    View(#[from] super::ro_view::ViewError),
    #[error("cannot mount a private /proc with hidepid=ptraceable (needs Linux 5.8+): {0}")]
    Proc(Errno),
    #[error("mounts: {0}")]
    Reach(#[from] ReachError),
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
    /// The sockets the policy names (`[network] unix`): never covered.
    #[serde(default)]
    pub sockets: Vec<PathBuf>,
    /// The write grants: everything else is mounted read-only
    /// ([`super::ro_view`]).
    #[serde(default)]
    pub write: Vec<PathBuf>,
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
    /// Listening sockets covered with an empty file.
    #[serde(default)]
    pub masked: Vec<PathBuf>,
    /// Whether `/proc` is the private `hidepid=ptraceable` procfs.
    #[serde(default)]
    pub private_proc: bool,
    /// The write grants bound back read-write over the read-only view
    /// (`/` alone: no view).
    #[serde(default)]
    pub writable: Vec<PathBuf>,
    /// Paths the policy names (list `filesystem` or `unix`) that the user
    /// cannot reach, so they were not bound back.
    #[serde(default)]
    pub unreachable: Vec<SkippedPath>,
}

/// Whether `path` lies at or below `dir`.
fn below(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
}

/// A path to bind back, opened as the user.
struct Kept {
    /// The path as the spec names it.
    asked: PathBuf,
    /// Where it is, as the kernel names the opened object.
    real: PathBuf,
    fd: OwnedFd,
    is_dir: bool,
}

/// Set up the namespace. Runs in the single-threaded launch helper, as
/// root, before privileges are dropped; opens the paths the policy names
/// as `user`.
pub fn apply(spec: &MountSpec, user: &UserFs) -> Result<MountReport, MountError> {
    let (hidden, names) = hidden_dirs();
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
    let (opened, unreachable) = open_named(spec, user)?;
    let allowed: Vec<PathBuf> = opened
        .iter()
        .filter(|k| spec.sockets.contains(&k.asked))
        .map(|k| k.real.clone())
        .collect();
    let keep = to_bind(opened, &hidden);

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
    let mut kept = Vec::new();
    for k in &keep {
        bind_back(k)?;
        kept.push(k.real.clone());
    }
    give_user_run(spec, &hidden, &keep)?;
    let masked = match hidden.first() {
        Some((scratch, _)) => mask_sockets(&listening_sockets(), &allowed, &hidden, scratch)?,
        None => Vec::new(),
    };
    let scratch: Vec<PathBuf> = hidden.iter().map(|(h, _)| h.clone()).collect();
    let writable = super::ro_view::apply(&spec.write, &scratch, user)?;
    mount_private_proc()?;
    Ok(MountReport {
        hidden: names,
        kept,
        masked,
        private_proc: true,
        writable,
        unreachable,
    })
}

/// The runtime directories that exist, as real paths, outermost first and
/// without duplicates (`/var/run` -> `/run`), with their tmpfs mode; and
/// every name they go by (`/var/run` and `/run`), for readers of the report
/// matching paths as a server passed them.
fn hidden_dirs() -> (Vec<(PathBuf, u32)>, Vec<PathBuf>) {
    let mut hidden: Vec<(PathBuf, u32)> = Vec::new();
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
    (hidden, names)
}

/// Opens every path of `spec.keep` as `user`: what it reached (with the
/// path as asked), and what the user cannot reach. Missing paths are left
/// out quietly; there is nothing to bind.
fn open_named(
    spec: &MountSpec,
    user: &UserFs,
) -> Result<(Vec<Kept>, Vec<SkippedPath>), MountError> {
    let mut opened = Vec::new();
    let mut unreachable = Vec::new();
    for (asked, fd) in spec
        .keep
        .iter()
        .zip(user.open_paths(&spec.keep, OFlag::empty())?)
    {
        let kept = fd.and_then(|fd| {
            let is_dir = fstat(&fd).map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)?;
            // The object's own name, not a second lookup of `asked`.
            let real = proc::fd_path(&fd)
                .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
            Ok(Kept {
                asked: asked.clone(),
                real,
                fd,
                is_dir,
            })
        });
        match kept {
            Ok(k) => opened.push(k),
            Err(errno) if is_missing(errno) => {}
            Err(errno) => unreachable.push(SkippedPath {
                list: if spec.sockets.contains(asked) {
                    "unix"
                } else {
                    "filesystem"
                }
                .to_owned(),
                path: asked.clone(),
                reason: unreachable_reason(errno, user.uid),
            }),
        }
    }
    Ok((opened, unreachable))
}

/// Of the opened paths, those to bind back: strictly below a hidden
/// directory (a policy naming "/tmp" itself gets the server's own empty
/// /tmp, never the host's, with everyone's sockets in it), once each, and
/// not below another kept directory (visible through it already; binding
/// it would make mount points inside a directory the user controls).
fn to_bind(opened: Vec<Kept>, hidden: &[(PathBuf, u32)]) -> Vec<Kept> {
    let mut keep: Vec<Kept> = Vec::new();
    for k in opened {
        if hidden
            .iter()
            .any(|(h, _)| below(&k.real, h) && k.real != *h)
            && !keep.iter().any(|other| other.real == k.real)
        {
            keep.push(k);
        }
    }
    let dirs: Vec<PathBuf> = keep
        .iter()
        .filter(|k| k.is_dir)
        .map(|k| k.real.clone())
        .collect();
    keep.retain(|k| !dirs.iter().any(|d| below(&k.real, d) && k.real != *d));
    keep
}

/// Binds one kept object from its fd onto a mount point made in the fresh
/// tmpfs.
fn bind_back(k: &Kept) -> Result<(), MountError> {
    make_mount_point(&k.real, k.is_dir)?;
    let source = format!("/proc/self/fd/{}", k.fd.as_raw_fd());
    let flags = if k.is_dir {
        MsFlags::MS_BIND | MsFlags::MS_REC
    } else {
        MsFlags::MS_BIND
    };
    mount(
        Some(source.as_str()),
        &k.real,
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(|errno| MountError::Bind {
        path: k.real.clone(),
        errno,
    })
}

/// `/run/user/<uid>` keeps its usual shape (owned by the user, 0700) when
/// something below it was bound back. Only now, after the binds: creating
/// mount points inside a 0700 directory root does not own would need
/// CAP_DAC_OVERRIDE, which the daemon does not keep. A `/run/user/<uid>`
/// that is itself bound back (or lies in a bound directory) is the real
/// one and left alone.
fn give_user_run(
    spec: &MountSpec,
    hidden: &[(PathBuf, u32)],
    keep: &[Kept],
) -> Result<(), MountError> {
    let user_run = PathBuf::from(format!("/run/user/{}", spec.uid));
    if !user_run.is_dir()
        || !hidden.iter().any(|(h, _)| below(&user_run, h))
        || keep.iter().any(|k| below(&user_run, &k.real))
    {
        return Ok(());
    }
    let err = |source| MountError::MountPoint {
        path: user_run.clone(),
        source,
    };
    fs::set_permissions(&user_run, fs::Permissions::from_mode(0o700)).map_err(err)?;
    std::os::unix::fs::chown(&user_run, Some(spec.uid), Some(spec.gid)).map_err(err)
}

/// Mounts a fresh procfs over `/proc` that shows only the processes the
/// viewer may ptrace (see the module docs). Fails on kernels before 5.8,
/// where procfs options are per pid namespace and `ptraceable` unknown:
/// the baseline grants `/proc`, so a launch without it must not go ahead.
fn mount_private_proc() -> Result<(), MountError> {
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("hidepid=ptraceable"),
    )
    .map_err(MountError::Proc)
}

/// Absolute paths of the pathname sockets in `/proc/net/unix` (bound in
/// this network namespace), without duplicates. Unreadable: none.
fn listening_sockets() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let mut paths: Vec<PathBuf> = parse_proc_net_unix(&text);
    paths.sort();
    paths.dedup();
    paths
}

/// The path column of `/proc/net/unix`: the rest of the line after the
/// inode, for sockets bound to an absolute path (abstract names start
/// with `@`, relative binds cannot be located).
fn parse_proc_net_unix(text: &str) -> Vec<PathBuf> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode Path: no column
            // before the path holds a `/`.
            line.find(" /").map(|i| PathBuf::from(&line[i + 1..]))
        })
        .collect()
}

/// Covers each socket in `found` that is still a socket here, lies outside
/// the `hidden` directories (what is visible there was bound back on
/// purpose) and is not one of `allowed` (the real paths of the sockets the
/// policy names that the user reached), with an empty root-owned file
/// (created in the fresh tmpfs `scratch` and unlinked once bound). Returns
/// what was covered.
fn mask_sockets(
    found: &[PathBuf],
    allowed: &[PathBuf],
    hidden: &[(PathBuf, u32)],
    scratch: &Path,
) -> Result<Vec<PathBuf>, MountError> {
    let real = |p: &PathBuf| fs::canonicalize(p).unwrap_or_else(|_| p.clone());
    let targets: Vec<&PathBuf> = found
        .iter()
        .filter(|p| {
            // A path that is something else now (the socket was removed)
            // is left alone.
            if !fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()) {
                return false;
            }
            let r = real(p);
            !allowed.contains(&r) && !hidden.iter().any(|(h, _)| below(&r, h))
        })
        .collect();
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let cover = scratch.join(".mcpguard-socket-cover");
    let err = |source| MountError::MountPoint {
        path: cover.clone(),
        source,
    };
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&cover)
        .map_err(err)?;
    let mut masked = Vec::new();
    for path in targets {
        mount(
            Some(cover.as_path()),
            path.as_path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|errno| MountError::Bind {
            path: path.clone(),
            errno,
        })?;
        masked.push(path.clone());
    }
    // The bind mounts hold the inode; the name must not show in the tmpfs.
    fs::remove_file(&cover).map_err(err)?;
    Ok(masked)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_unix_yields_absolute_paths_only() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01  2345 /run/docker.sock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 12345 /home/u/.ssh/agent dir/s\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 12346 @/tmp/.X11-unix/X0\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 12347 relative.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 12348\n";
        assert_eq!(
            parse_proc_net_unix(text),
            [
                PathBuf::from("/run/docker.sock"),
                PathBuf::from("/home/u/.ssh/agent dir/s")
            ]
        );
    }
}
