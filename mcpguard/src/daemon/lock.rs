//! One daemon per cgroup tree and per socket.
//!
//! A daemon takes an exclusive `flock` on two files under [`LOCK_DIR`] —
//! one keyed by its cgroup tree name (which also names its bpffs pin
//! directory), one by its socket's path — before it touches cgroups, pins
//! or the socket, and holds them for its whole life. A second daemon for
//! either refuses to start instead of reaping the first one's servers as
//! leftovers. The kernel drops the locks when the holder dies however it
//! dies, so they cannot go stale: after a SIGKILL the next daemon gets them
//! and reaps what is left, as before.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use nix::{errno::Errno, fcntl::Flock};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Where the lock files live (root-owned, 0755).
pub const LOCK_DIR: &str = "/run/mcpguard";

#[derive(Debug, Error)]
pub enum LockError {
    #[error(
        "another mcpguard daemon ({holder}) holds {what}: refusing to start \
         (lock file {path})"
    )]
    Held {
        what: String,
        holder: String,
        path: PathBuf,
    },
    #[error("lock directory {path} must be a root-owned directory not writable by others")]
    UnsafeDir { path: PathBuf },
    #[error("lock file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The held locks; dropping this (or dying) releases them.
#[derive(Debug)]
pub struct DaemonLocks {
    _held: Vec<Flock<File>>,
}

/// Locks the cgroup tree `cgroup_name` and then `socket`, in `dir`
/// (created 0755 if missing). Fails with [`LockError::Held`] naming the
/// holder's pid if another daemon holds either.
pub fn acquire(dir: &Path, cgroup_name: &str, socket: &Path) -> Result<DaemonLocks, LockError> {
    prepare_dir(dir)?;
    let socket = canonical_socket(socket);
    let tree = lock_one(
        &dir.join(format!("tree-{}.lock", key(cgroup_name.as_bytes()))),
        &format!("cgroup tree {cgroup_name:?}"),
    )?;
    let sock = lock_one(
        &dir.join(format!(
            "socket-{}.lock",
            key(socket.as_os_str().as_encoded_bytes())
        )),
        &format!("socket {}", socket.display()),
    )?;
    Ok(DaemonLocks {
        _held: vec![tree, sock],
    })
}

fn prepare_dir(dir: &Path) -> Result<(), LockError> {
    let io_err = |source| LockError::Io {
        path: dir.to_owned(),
        source,
    };
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {
            // The umask may have narrowed the mode; others need to reach
            // the default socket in the same directory.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(io_err)?;
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(io_err)?;
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(LockError::UnsafeDir {
            path: dir.to_owned(),
        });
    }
    Ok(())
}

/// The socket's path with its directory resolved (the socket itself may
/// not exist yet), so two spellings of one socket share a lock.
fn canonical_socket(socket: &Path) -> PathBuf {
    let absolute = std::path::absolute(socket).unwrap_or_else(|_| socket.to_owned());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or(absolute),
        _ => absolute,
    }
}

/// A fixed-length file-name-safe key (names and socket paths can be
/// longer than a file name once escaped).
fn key(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Opens (close-on-exec) and locks `path`, then records our pid and what
/// the lock is for in it.
fn lock_one(path: &Path, what: &str) -> Result<Flock<File>, LockError> {
    let io_err = |source| LockError::Io {
        path: path.to_owned(),
        source,
    };
    // A file unlinked (or replaced) between our open and our lock is no
    // lock at all: whoever opens the path next gets another file.
    let mut held = loop {
        let held = try_lock(path, what)?;
        let (ours, now) = (held.metadata(), fs::symlink_metadata(path));
        match (ours, now) {
            (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino()) => break held,
            (Err(e), _) => return Err(io_err(e)),
            _ => continue,
        }
    };
    held.set_len(0).map_err(io_err)?;
    held.rewind().map_err(io_err)?;
    writeln!(held, "{}\n{what}", std::process::id()).map_err(io_err)?;
    Ok(held)
}

fn try_lock(path: &Path, what: &str) -> Result<Flock<File>, LockError> {
    let io_err = |source| LockError::Io {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err)?;
    match Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(held),
        Err((mut file, Errno::EWOULDBLOCK)) => Err(LockError::Held {
            what: what.to_owned(),
            holder: holder(&mut file),
            path: path.to_owned(),
        }),
        Err((_, errno)) => Err(io_err(io::Error::from(errno))),
    }
}

/// "pid N" from a held lock file's first line.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok())
    {
        Some(pid) => format!("pid {pid}"),
        // It holds the lock but has not written its pid yet.
        None => "pid unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mcpguard-lock-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        // The directory check wants a root-owned directory: run as root.
        let dir = scratch("held");
        let socket = dir.join("s.sock");
        let first = acquire(&dir, "tree-a", &socket).unwrap();
        let err = acquire(&dir, "tree-a", &dir.join("other.sock")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cgroup tree \"tree-a\""), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        // Another spelling of the same socket is the same socket.
        let err = acquire(&dir, "tree-b", &dir.join(".").join("s.sock")).unwrap_err();
        assert!(err.to_string().contains("socket "), "{err}");
        drop(first);
        acquire(&dir, "tree-a", &socket).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_are_file_name_safe_and_distinct() {
        let long = "x".repeat(300);
        assert_eq!(key(long.as_bytes()).len(), 32);
        assert_ne!(key(b"a"), key(b"b"));
        assert!(key(b"a/../b").chars().all(|c| c.is_ascii_hexdigit()));
    }
}
