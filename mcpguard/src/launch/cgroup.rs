//! cgroup v2 plumbing for per-server isolation.
//!
//! Every launched server lives in its own leaf cgroup under the daemon's
//! subtree (`<cgroup2 mount>/mcpguard/<policy>-<id>`). The leaf's inode number
//! is the cgroup id that `bpf_get_current_cgroup_id()` returns, so it is the
//! key of the server's eBPF policy entry. Killing a server means killing its
//! whole cgroup, which also catches children that double-forked away.
//!
//! Only the unified (v2) hierarchy is supported. On hybrid systems it is
//! mounted at `/sys/fs/cgroup/unified`, on pure v2 systems at `/sys/fs/cgroup`;
//! [`cgroup2_mount`] finds it wherever it is.
//!
//! Kept by hand rather than `cgroups-rs`: that crate models v1 and v2
//! controllers for container runtimes, while this needs a few files of the
//! unified hierarchy (create, delegate-check, kill, remove) with errors that
//! name the server.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::{
        signal::{kill, Signal},
        statfs::{statfs, CGROUP2_SUPER_MAGIC},
    },
    unistd::Pid,
};
use thiserror::Error;
use tracing::{debug, warn};

/// How often to re-check a cgroup while waiting for its tasks to die.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long [`CgroupTree::reap_stale`] waits for each stale cgroup to empty.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound on signal rounds in the `cgroup.kill`-less fallback, so a
/// cgroup that keeps refilling cannot pin the daemon forever.
const MAX_KILL_ROUNDS: usize = 1000;

/// Errors from cgroup v2 operations; each names the path involved.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// `/proc/self/mountinfo` could not be read.
    #[error("cannot read /proc/self/mountinfo: {source}")]
    Mountinfo {
        /// Underlying I/O error.
        source: io::Error,
    },
    /// No cgroup2 filesystem is mounted.
    #[error(
        "no cgroup2 filesystem is mounted (looked for fstype `cgroup2` in /proc/self/mountinfo); \
         mcpguard needs the unified hierarchy: mount it with \
         `mount -t cgroup2 none /sys/fs/cgroup/unified` or boot with systemd.unified_cgroup_hierarchy=1"
    )]
    NoCgroup2Mount,
    /// A cgroup name would escape its parent or is otherwise unusable.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The path exists but is not on a cgroup2 filesystem.
    #[error("{path} is not on a cgroup2 filesystem")]
    NotCgroup2 {
        /// The offending path.
        path: PathBuf,
    },
    /// A child cgroup that must be fresh already exists.
    #[error("cgroup {path} already exists")]
    AlreadyExists {
        /// The existing directory.
        path: PathBuf,
    },
    /// mkdir failed.
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        /// Directory being created.
        path: PathBuf,
        /// Underlying I/O error.
        source: io::Error,
    },
    /// stat/statfs/chmod on a cgroup directory failed.
    #[error("cannot inspect cgroup {path}: {source}")]
    Inspect {
        /// Directory being inspected.
        path: PathBuf,
        /// Underlying I/O error.
        source: io::Error,
    },
    /// Reading a cgroup interface file failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Interface file.
        path: PathBuf,
        /// Underlying I/O error.
        source: io::Error,
    },
    /// Writing a cgroup interface file failed.
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        /// Interface file.
        path: PathBuf,
        /// What was being written.
        value: &'static str,
        /// Underlying I/O error.
        source: io::Error,
    },
    /// A cgroup interface file had unexpected content.
    #[error("unexpected content in {path}: {content:?}")]
    Parse {
        /// Interface file.
        path: PathBuf,
        /// The content (or offending line).
        content: String,
    },
    /// SIGKILL could not be delivered in the fallback kill path.
    #[error("cannot SIGKILL pid {pid} of cgroup {path}: {errno}")]
    Signal {
        /// Cgroup being killed.
        path: PathBuf,
        /// Target pid.
        pid: u32,
        /// Error from kill(2).
        errno: Errno,
    },
    /// The cgroup still had tasks after the deadline.
    #[error("cgroup {path} still has tasks {waited:?} after being killed")]
    KillTimeout {
        /// Cgroup being removed.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// rmdir failed.
    #[error("cannot remove cgroup {path}: {source}")]
    Remove {
        /// Directory being removed.
        path: PathBuf,
        /// Underlying I/O error.
        source: io::Error,
    },
    /// Listing a cgroup's children failed.
    #[error("cannot list child cgroups of {path}: {source}")]
    ReadDir {
        /// Directory being listed.
        path: PathBuf,
        /// Underlying I/O error.
        source: io::Error,
    },
}

/// Finds where the cgroup2 (unified) hierarchy is mounted, by parsing
/// `/proc/self/mountinfo` for fstype `cgroup2`.
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|source| CgroupError::Mountinfo { source })?;
    crate::mountinfo::find_mount(&mountinfo, "cgroup2").ok_or(CgroupError::NoCgroup2Mount)
}

/// Rejects names that are not a single, ordinary path component.
fn validate_name(name: &str) -> Result<(), CgroupError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("`.` and `..` are not cgroups")
    } else if name.contains('/') {
        Some("contains `/`")
    } else if name.contains('\0') || name.contains('\n') {
        Some("contains NUL or newline")
    } else if name.starts_with("cgroup.") {
        // The kernel reserves this prefix for interface files.
        Some("the `cgroup.` prefix is reserved by the kernel")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CgroupError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Inode number of a cgroup directory, which is its cgroup id.
fn cgroup_id(path: &Path) -> Result<u64, CgroupError> {
    fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|source| CgroupError::Inspect {
            path: path.to_owned(),
            source,
        })
}

/// Fails unless `path` lives on a cgroup2 filesystem.
fn ensure_cgroup2(path: &Path) -> Result<(), CgroupError> {
    let fs = statfs(path).map_err(|errno| CgroupError::Inspect {
        path: path.to_owned(),
        source: io::Error::from(errno),
    })?;
    if fs.filesystem_type() == CGROUP2_SUPER_MAGIC {
        Ok(())
    } else {
        Err(CgroupError::NotCgroup2 {
            path: path.to_owned(),
        })
    }
}

/// Writes one value to a cgroup interface file (no O_CREAT, no O_TRUNC:
/// these are kernel files).
fn write_interface(path: &Path, value: &'static str) -> Result<(), CgroupError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            path: path.to_owned(),
            value,
            source,
        })
}

fn read_interface(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The daemon's subtree, e.g. `/sys/fs/cgroup/unified/mcpguard`.
#[derive(Debug, Clone)]
pub struct CgroupTree {
    /// Directory of the subtree's root cgroup.
    pub root: PathBuf,
    /// The same root as `/proc/<pid>/cgroup` names it (`/<name>`).
    rel: String,
    id: u64,
}

impl CgroupTree {
    /// Creates (or adopts) `<mount>/<name>` as a root-owned, mode 0755
    /// cgroup, so only root can create, kill or move tasks into servers'
    /// cgroups.
    pub fn create(mount: &Path, name: &str) -> Result<Self, CgroupError> {
        Self::create_in(mount, "", name)
    }

    /// [`CgroupTree::create`] below an existing cgroup, `parent` as
    /// `/proc/<pid>/cgroup` names it (`/system.slice/mcpguard.service`, the
    /// cgroup systemd delegated to the daemon); `""` or `/` is the root.
    pub fn create_in(mount: &Path, parent: &str, name: &str) -> Result<Self, CgroupError> {
        validate_name(name)?;
        let parent = parent.trim_matches('/');
        let mut base = mount.to_path_buf();
        for component in parent.split('/').filter(|c| !c.is_empty()) {
            validate_name(component)?;
            base.push(component);
        }
        ensure_cgroup2(&base)?;
        let rel = if parent.is_empty() {
            format!("/{name}")
        } else {
            format!("/{parent}/{name}")
        };
        let root = base.join(name);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&root)
            .map_err(|source| CgroupError::Create {
                path: root.clone(),
                source,
            })?;
        // A pre-existing directory may have been created with another mode
        // (or the umask may have narrowed ours); enforce what we promise.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).map_err(|source| {
            CgroupError::Inspect {
                path: root.clone(),
                source,
            }
        })?;
        ensure_cgroup2(&root)?;
        let id = cgroup_id(&root)?;
        debug!(path = %root.display(), id, "cgroup tree ready");
        Ok(Self { root, rel, id })
    }

    /// Creates a fresh child cgroup for one server. An existing directory
    /// is an error: reusing a cgroup could inherit another server's tasks
    /// or policy entry.
    pub fn child(&self, name: &str) -> Result<Cgroup, CgroupError> {
        validate_name(name)?;
        let path = self.root.join(name);
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::AlreadyExists {
                    CgroupError::AlreadyExists { path: path.clone() }
                } else {
                    CgroupError::Create {
                        path: path.clone(),
                        source,
                    }
                }
            })?;
        let id = cgroup_id(&path)?;
        debug!(path = %path.display(), id, "created server cgroup");
        Ok(Cgroup { path, id })
    }

    /// Whether a `/proc/<pid>/cgroup` text places the task inside this
    /// subtree, i.e. the task is (a descendant of) a guarded server.
    pub fn holds(&self, proc_cgroup: &str) -> bool {
        crate::kernel::proc::unified_cgroup(proc_cgroup).is_some_and(|path| {
            path == self.rel
                || path
                    .strip_prefix(self.rel.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// The cgroup id (inode number) of the subtree's root.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Kills and removes every child cgroup (left by a crashed daemon),
    /// returning how many were removed. All children are attempted; the
    /// first failure is returned after the others were tried.
    pub fn reap_stale(&self) -> Result<usize, CgroupError> {
        let mut removed = 0;
        let mut first_error = None;
        for cgroup in child_cgroups(&self.root)? {
            match cgroup.remove(REAP_TIMEOUT) {
                Ok(()) => {
                    warn!(path = %cgroup.path.display(), "removed stale server cgroup");
                    removed += 1;
                }
                Err(error) => {
                    warn!(path = %cgroup.path.display(), %error, "cannot remove stale server cgroup");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(removed),
        }
    }
}

/// Lists the child cgroups (subdirectories) of a cgroup directory.
fn child_cgroups(dir: &Path) -> Result<Vec<Cgroup>, CgroupError> {
    let read_dir_error = |source| CgroupError::ReadDir {
        path: dir.to_owned(),
        source,
    };
    let mut children = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_dir_error)? {
        let entry = entry.map_err(read_dir_error)?;
        let file_type = entry.file_type().map_err(read_dir_error)?;
        if file_type.is_dir() {
            let path = entry.path();
            let id = cgroup_id(&path)?;
            children.push(Cgroup { path, id });
        }
    }
    Ok(children)
}

/// One server's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// Directory of the cgroup.
    pub path: PathBuf,
    /// Cgroup id (inode number of the directory), the eBPF policy key.
    pub id: u64,
}

impl Cgroup {
    /// SIGKILLs every task in the cgroup and its descendants. Uses
    /// `cgroup.kill` (Linux 5.14+), which is atomic against forks; on older
    /// kernels falls back to freezing and signalling each task.
    pub fn kill(&self) -> Result<(), CgroupError> {
        let kill_file = self.path.join("cgroup.kill");
        match write_interface(&kill_file, "1") {
            Ok(()) => Ok(()),
            Err(CgroupError::Write { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                debug!(path = %self.path.display(), "no cgroup.kill; killing tasks one by one");
                self.kill_by_signal()
            }
            Err(error) => Err(error),
        }
    }

    /// Fallback for kernels without `cgroup.kill`: freeze (when possible,
    /// so nothing forks between reading the pid list and signalling), then
    /// SIGKILL every listed pid until the list is empty.
    fn kill_by_signal(&self) -> Result<(), CgroupError> {
        let freeze = self.path.join("cgroup.freeze");
        let frozen = write_interface(&freeze, "1").is_ok();
        let result = self.signal_until_empty();
        if frozen {
            // SIGKILL works on frozen tasks, but thawing lets stragglers exit
            // instead of lingering frozen if anything above failed.
            if let Err(error) = write_interface(&freeze, "0") {
                warn!(path = %self.path.display(), %error, "cannot thaw cgroup");
            }
        }
        result
    }

    fn signal_until_empty(&self) -> Result<(), CgroupError> {
        for _ in 0..MAX_KILL_ROUNDS {
            let pids = self.all_pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            for pid in pids {
                let Ok(raw) = i32::try_from(pid) else {
                    continue;
                };
                match kill(Pid::from_raw(raw), Signal::SIGKILL) {
                    // ESRCH: it exited between listing and signalling.
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(errno) => {
                        return Err(CgroupError::Signal {
                            path: self.path.clone(),
                            pid,
                            errno,
                        })
                    }
                }
            }
            thread::sleep(POLL_INTERVAL);
        }
        Err(CgroupError::KillTimeout {
            path: self.path.clone(),
            waited: POLL_INTERVAL * MAX_KILL_ROUNDS as u32,
        })
    }

    /// Pids in this cgroup and every descendant.
    fn all_pids(&self) -> Result<Vec<u32>, CgroupError> {
        let mut pids = self.pids()?;
        for child in child_cgroups(&self.path)? {
            pids.extend(child.all_pids()?);
        }
        Ok(pids)
    }

    /// Whether any task lives in this cgroup or below (`cgroup.events`).
    pub fn is_populated(&self) -> Result<bool, CgroupError> {
        let path = self.path.join("cgroup.events");
        let events = read_interface(&path)?;
        let value = events
            .lines()
            .find_map(|line| line.strip_prefix("populated "))
            .map(str::trim);
        match value {
            Some("0") => Ok(false),
            Some("1") => Ok(true),
            _ => Err(CgroupError::Parse {
                path,
                content: events,
            }),
        }
    }

    /// Kills every task, waits until the cgroup is empty, then removes it
    /// (and any descendants). Removing a cgroup that is already gone
    /// succeeds.
    pub fn remove(&self, timeout: Duration) -> Result<(), CgroupError> {
        if !self.path.exists() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        self.empty(timeout)?;
        self.remove_dirs(deadline)
    }

    /// Kills every task and waits until the cgroup is empty; the cgroup
    /// stays, so its counters can still be read.
    pub fn empty(&self, timeout: Duration) -> Result<(), CgroupError> {
        self.kill()?;
        let deadline = Instant::now() + timeout;
        while self.is_populated()? {
            if Instant::now() >= deadline {
                return Err(CgroupError::KillTimeout {
                    path: self.path.clone(),
                    waited: timeout,
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
        Ok(())
    }

    /// Depth-first rmdir. Retries EBUSY until the deadline: the kernel can
    /// report "not populated" slightly before the last task is unlinked.
    fn remove_dirs(&self, deadline: Instant) -> Result<(), CgroupError> {
        for child in child_cgroups(&self.path)? {
            child.remove_dirs(deadline)?;
        }
        loop {
            match fs::remove_dir(&self.path) {
                Ok(()) => {
                    debug!(path = %self.path.display(), "removed cgroup");
                    return Ok(());
                }
                Err(source) if source.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(source)
                    if source.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                {
                    thread::sleep(POLL_INTERVAL);
                }
                Err(source) => {
                    return Err(CgroupError::Remove {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// Pids listed in this cgroup's own `cgroup.procs` (not descendants).
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let path = self.path.join("cgroup.procs");
        let content = read_interface(&path)?;
        content
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                line.trim().parse::<u32>().map_err(|_| CgroupError::Parse {
                    path: path.clone(),
                    content: line.to_owned(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command};

    use super::*;

    /// A tree name no other test (or concurrent test run) uses.
    fn unique_name(tag: &str) -> String {
        format!("mcpguard-test-{tag}-{}", std::process::id())
    }

    fn spawn_sleep() -> Child {
        Command::new("sleep")
            .arg("300")
            .spawn()
            .expect("spawn sleep")
    }

    fn move_into(cgroup: &Cgroup, pid: u32) {
        fs::write(cgroup.path.join("cgroup.procs"), pid.to_string()).expect("move pid");
    }

    /// Removes the test tree even when the test fails half-way.
    struct TreeGuard(CgroupTree);

    impl Drop for TreeGuard {
        fn drop(&mut self) {
            let _ = self.0.reap_stale();
            let _ = fs::remove_dir(&self.0.root);
        }
    }

    #[test]
    fn parses_cgroup2_mount_from_hybrid_and_unified_mountinfo() {
        let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            crate::mountinfo::find_mount(hybrid, "cgroup2"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            crate::mountinfo::find_mount(unified, "cgroup2"),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let v1_only = "40 31 0:37 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(crate::mountinfo::find_mount(v1_only, "cgroup2"), None);
    }

    #[test]
    fn rejects_names_that_escape_or_collide_with_interface_files() {
        for bad in ["", ".", "..", "a/b", "cgroup.procs", "x\0y"] {
            assert!(
                matches!(validate_name(bad), Err(CgroupError::InvalidName { .. })),
                "{bad:?} should be rejected"
            );
        }
        validate_name("time-3").expect("ordinary name accepted");
    }

    #[test]
    fn finds_the_real_cgroup2_mount() {
        let mount = cgroup2_mount().expect("this machine has cgroup2");
        ensure_cgroup2(&mount).expect("mount point is cgroup2");
    }

    #[test]
    fn holds_matches_the_subtree_and_nothing_beside_it() {
        let mount = cgroup2_mount().unwrap();
        let tree = TreeGuard(CgroupTree::create(&mount, &unique_name("holds")).unwrap());
        let rel = format!("/{}", tree.0.root.file_name().unwrap().to_string_lossy());
        assert!(tree.0.holds(&format!("0::{rel}/srv-1\n")));
        assert!(tree.0.holds(&format!("12:pids:/x\n0::{rel}\n")));
        assert!(!tree.0.holds(&format!("0::{rel}-other/srv-1\n")));
        assert!(!tree.0.holds("0::/user.slice/session-1.scope\n"));
        // A v1-only line with the same path is not the unified hierarchy.
        assert!(!tree.0.holds(&format!("3:cpu:{rel}/srv-1\n")));
    }

    #[test]
    fn a_tree_below_a_delegated_cgroup_holds_only_its_own_subtree() {
        let mount = cgroup2_mount().unwrap();
        let parent = TreeGuard(CgroupTree::create(&mount, &unique_name("deleg")).unwrap());
        let parent_rel = format!("/{}", parent.0.root.file_name().unwrap().to_string_lossy());
        let tree = TreeGuard(CgroupTree::create_in(&mount, &parent_rel, "mcpguard").unwrap());
        assert_eq!(tree.0.root, parent.0.root.join("mcpguard"));
        assert!(tree.0.holds(&format!("0::{parent_rel}/mcpguard/srv-1\n")));
        // The daemon itself sits in the parent, outside the servers' tree.
        assert!(!tree.0.holds(&format!("0::{parent_rel}\n")));
        assert!(matches!(
            CgroupTree::create_in(&mount, "/a/../b", "mcpguard"),
            Err(CgroupError::InvalidName { .. })
        ));
        drop(tree);
    }

    #[test]
    fn tree_rejects_a_non_cgroup_mount() {
        let err = CgroupTree::create(Path::new("/tmp"), "x").unwrap_err();
        assert!(matches!(err, CgroupError::NotCgroup2 { .. }), "{err}");
    }

    #[test]
    fn child_lifecycle_against_the_real_kernel() {
        let mount = cgroup2_mount().unwrap();
        let tree = TreeGuard(CgroupTree::create(&mount, &unique_name("life")).unwrap());
        let meta = fs::metadata(&tree.0.root).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(meta.uid(), 0);
        assert_eq!(tree.0.id(), meta.ino());
        // Creating it again adopts the same directory.
        assert_eq!(
            CgroupTree::create(&mount, &tree.0.root.file_name().unwrap().to_string_lossy())
                .unwrap()
                .id(),
            tree.0.id()
        );

        let cgroup = tree.0.child("srv-1").unwrap();
        assert_eq!(cgroup.id, fs::metadata(&cgroup.path).unwrap().ino());
        assert!(matches!(
            tree.0.child("srv-1"),
            Err(CgroupError::AlreadyExists { .. })
        ));
        assert!(!cgroup.is_populated().unwrap());
        assert!(cgroup.pids().unwrap().is_empty());

        let mut sleeper = spawn_sleep();
        move_into(&cgroup, sleeper.id());
        assert_eq!(cgroup.pids().unwrap(), vec![sleeper.id()]);
        assert!(cgroup.is_populated().unwrap());
        let proc_cgroup = fs::read_to_string(format!("/proc/{}/cgroup", sleeper.id())).unwrap();
        let relative = cgroup.path.strip_prefix(&mount).unwrap();
        assert!(
            proc_cgroup.contains(&format!("0::/{}\n", relative.display())),
            "{proc_cgroup}"
        );

        cgroup.kill().unwrap();
        let status = sleeper.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert!(cgroup.pids().unwrap().is_empty());

        cgroup.remove(Duration::from_secs(5)).unwrap();
        assert!(!cgroup.path.exists());
        // Idempotent.
        cgroup.remove(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn remove_kills_live_tasks_first() {
        let mount = cgroup2_mount().unwrap();
        let tree = TreeGuard(CgroupTree::create(&mount, &unique_name("remove")).unwrap());
        let cgroup = tree.0.child("busy").unwrap();
        let mut sleeper = spawn_sleep();
        move_into(&cgroup, sleeper.id());
        // The sleeper stays a zombie until we reap it; removal must not wait for that.
        cgroup.remove(Duration::from_secs(5)).unwrap();
        assert!(!cgroup.path.exists());
        assert!(sleeper.wait().unwrap().code().is_none());
    }

    #[test]
    fn signal_fallback_empties_the_cgroup() {
        let mount = cgroup2_mount().unwrap();
        let tree = TreeGuard(CgroupTree::create(&mount, &unique_name("fallback")).unwrap());
        let cgroup = tree.0.child("old-kernel").unwrap();
        let mut sleepers = [spawn_sleep(), spawn_sleep()];
        for sleeper in &sleepers {
            move_into(&cgroup, sleeper.id());
        }
        cgroup.kill_by_signal().unwrap();
        for sleeper in &mut sleepers {
            assert!(sleeper.wait().unwrap().code().is_none());
        }
        assert!(cgroup.pids().unwrap().is_empty());
        // The freezer was thawed again.
        let events = fs::read_to_string(cgroup.path.join("cgroup.events")).unwrap();
        assert!(events.contains("frozen 0"), "{events}");
    }

    #[test]
    fn reap_stale_removes_every_child() {
        let mount = cgroup2_mount().unwrap();
        let tree = TreeGuard(CgroupTree::create(&mount, &unique_name("reap")).unwrap());
        let a = tree.0.child("a").unwrap();
        tree.0.child("b").unwrap();
        let mut sleeper = spawn_sleep();
        move_into(&a, sleeper.id());
        assert_eq!(tree.0.reap_stale().unwrap(), 2);
        assert!(sleeper.wait().unwrap().code().is_none());
        assert_eq!(tree.0.reap_stale().unwrap(), 0);
    }
}
