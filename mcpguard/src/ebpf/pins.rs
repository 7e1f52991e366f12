//! Pinned enforcement links: the egress and socket-fence programs' cgroup
//! links are pinned in bpffs so they stay attached if the daemon dies.
//!
//! A SIGKILLed daemon takes its tracepoints (the audit) and its DNS
//! resolvers with it, but not enforcement: each server's main process dies
//! of its parent-death signal, and anything it forked stays confined by
//! Landlock, the seccomp fence and these pinned programs (name lookups go
//! to a resolver port nobody serves, so they fail closed). The next daemon
//! kills what is left in its cgroup tree, then replaces the pins with its
//! own; a clean stop removes them after its servers are gone.

use std::{
    fs, io,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use thiserror::Error;
use tracing::{info, warn};

/// Where bpffs is mounted when nothing else has mounted it.
const BPFFS_DEFAULT: &str = "/sys/fs/bpf";

#[derive(Debug, Error)]
pub enum PinError {
    #[error("cannot read /proc/self/mountinfo: {0}")]
    Mountinfo(#[source] io::Error),
    #[error("bpffs is not mounted and mounting it on {BPFFS_DEFAULT} failed: {0}")]
    Mount(#[source] nix::errno::Errno),
    #[error("cannot prepare pin directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The pin directory of the daemon whose cgroup tree is `cgroup_name`
/// (created, mode 0700, on bpffs; mounted first if need be). Pins left in
/// it by a previous daemon are removed: call this only after that daemon's
/// servers are gone.
pub fn prepare(cgroup_name: &str) -> Result<PathBuf, PinError> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(PinError::Mountinfo)?;
    let bpffs = match crate::mountinfo::find_mount(&mountinfo, "bpf") {
        Some(path) => path,
        None => {
            nix::mount::mount(
                Some("bpf"),
                BPFFS_DEFAULT,
                Some("bpf"),
                nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV
                    | nix::mount::MsFlags::MS_NOEXEC,
                Some("mode=0700"),
            )
            .map_err(PinError::Mount)?;
            info!(layer = "bpffs", path = BPFFS_DEFAULT, "mounted bpffs");
            PathBuf::from(BPFFS_DEFAULT)
        }
    };
    let dir = bpffs.join("mcpguard").join(cgroup_name);
    let dir_err = |source| PinError::Dir {
        path: dir.clone(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(dir_err)?;
    let stale = remove_all(&dir).map_err(dir_err)?;
    if stale > 0 {
        warn!(
            count = stale,
            dir = %dir.display(),
            "removed enforcement links pinned by a previous daemon"
        );
    }
    Ok(dir)
}

/// Removes every pin in `dir` (detaching the links); returns how many.
pub fn remove_all(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        fs::remove_file(entry?.path())?;
        removed += 1;
    }
    Ok(removed)
}
