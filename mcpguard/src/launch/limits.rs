//! Per-server resource limits: the `pids` and `memory` cgroup controllers.
//!
//! A server's task and memory bounds (policy `[limits]`) are written to its
//! cgroup before its first process joins, so a fork bomb meets `pids.max`
//! (fork fails with `EAGAIN`) and a balloon meets `memory.max` (reclaim,
//! then the OOM killer, inside the server only). Swap is capped as well
//! (`memory.swap.max = 0`; in v1 `memory.memsw.limit_in_bytes` equal to the
//! memory limit): otherwise a balloon at its limit is pushed out to swap and
//! keeps growing, spending the host's disk and latency on a limit that only
//! exists in name.
//!
//! On a pure cgroup v2 system the controllers are enabled down to the
//! daemon's subtree (`cgroup.subtree_control`). On hybrid systems, where
//! `pids` and `memory` are bound to v1 hierarchies and absent from the
//! unified one, the daemon keeps a parallel tree in each such hierarchy,
//! below its own cgroup there (so it stays inside whatever bounds the daemon
//! itself has), and the server joins its cgroup in each. A limit that cannot
//! be applied fails the launch.
//!
//! The kernel counts every time a server hits a limit (`pids.events`,
//! `memory.events`; `memory.failcnt` and `memory.oom_control` in v1);
//! [`LimitCounters::poll`] turns new counts into [`LimitHit`]s, which the
//! daemon writes as `limit` records.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use thiserror::Error;
use tracing::{debug, info, warn};

use super::cgroup::{Cgroup, CgroupTree};
use crate::{kernel::proc, policy::Limits};

/// The controllers limits need.
const CONTROLLERS: [&str; 2] = ["pids", "memory"];

/// Leaf the daemon moves itself into when the cgroup it was delegated must
/// enable controllers for its children: a cgroup v2 cgroup with processes
/// of its own cannot (the "no internal processes" rule).
const DAEMON_LEAF: &str = "mcpguard-daemon";

#[derive(Debug, Error)]
pub enum LimitError {
    #[error(
        "the {controller} controller is unavailable, so [limits] cannot be enforced: {reason}"
    )]
    Unavailable {
        controller: &'static str,
        reason: String,
    },
    #[error(
        "cannot enable the {controller} controller for the children of {}: {source}",
        path.display()
    )]
    Enable {
        controller: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot write {value} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot create cgroup {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error(
        "the host has swap but {} is missing (swap accounting is off), so the memory limit \
         could be escaped through swap",
        path.display()
    )]
    NoSwapLimit { path: PathBuf },
}

/// Where one controller is found.
#[derive(Clone, Debug)]
enum Home {
    /// In the unified hierarchy: the server's own cgroup carries it.
    Unified,
    /// In a v1 hierarchy: the daemon's tree there.
    V1(PathBuf),
    /// Nowhere usable: every launch fails with this reason.
    Missing(String),
}

/// Where the daemon applies limits, found once at startup.
#[derive(Clone, Debug)]
pub struct LimitTree {
    pids: Home,
    memory: Home,
}

impl LimitTree {
    /// Finds the `pids` and `memory` controllers for the servers of `tree`
    /// (named `name` below its parent): enables them in the unified
    /// hierarchy, or makes the parallel v1 trees. A controller that cannot
    /// be had is logged, and launches fail until it can.
    pub fn setup(mount: &Path, tree: &CgroupTree, name: &str) -> LimitTree {
        let homes = CONTROLLERS.map(|controller| {
            let home = find_home(mount, tree, name, controller).unwrap_or_else(|error| {
                warn!(controller, %error, "resource limits cannot be enforced: launches will be refused");
                Home::Missing(error.to_string())
            });
            info!(controller, ?home, "resource limit controller");
            home
        });
        let [pids, memory] = homes;
        LimitTree { pids, memory }
    }

    /// Writes `limits` for the server whose cgroup is `server` (launch name
    /// `launch`), before any of its tasks exist. On error nothing is left
    /// behind.
    pub fn apply(
        &self,
        server: &Cgroup,
        launch: &str,
        limits: &Limits,
    ) -> Result<ServerLimits, LimitError> {
        let mut join = Vec::new();
        let mut counters = Vec::new();
        match self.apply_into(&mut join, &mut counters, server, launch, limits) {
            Ok(()) => Ok(ServerLimits {
                join,
                counters: Arc::new(Mutex::new(LimitCounters(counters))),
            }),
            Err(error) => {
                remove_all(&join);
                Err(error)
            }
        }
    }

    fn apply_into(
        &self,
        join: &mut Vec<PathBuf>,
        counters: &mut Vec<Counter>,
        server: &Cgroup,
        launch: &str,
        limits: &Limits,
    ) -> Result<(), LimitError> {
        let pids = dir_for(join, &self.pids, "pids", server, launch)?;
        write(&pids.join("pids.max"), &limits.pids.to_string())?;
        counters.push(Counter {
            resource: "pids",
            event: "max",
            file: pids.join("pids.events"),
            key: Some("max"),
            limit: limits.pids,
            seen: 0,
        });

        let memory = dir_for(join, &self.memory, "memory", server, launch)?;
        let bytes = limits.memory.to_string();
        let v1 = matches!(self.memory, Home::V1(_));
        if v1 {
            // memsw (memory + swap) may never be below the memory limit, so
            // the memory limit goes first.
            write(&memory.join("memory.limit_in_bytes"), &bytes)?;
            write_swap_limit(&memory.join("memory.memsw.limit_in_bytes"), &bytes)?;
        } else {
            write(&memory.join("memory.max"), &bytes)?;
            write_swap_limit(&memory.join("memory.swap.max"), "0")?;
        }
        let counter = |event, file: &str, key| Counter {
            resource: "memory",
            event,
            file: memory.join(file),
            key,
            limit: limits.memory,
            seen: 0,
        };
        if v1 {
            counters.extend([
                counter("max", "memory.failcnt", None),
                counter("oom_kill", "memory.oom_control", Some("oom_kill")),
            ]);
        } else {
            counters.extend([
                counter("max", "memory.events", Some("max")),
                counter("oom", "memory.events", Some("oom")),
                counter("oom_kill", "memory.events", Some("oom_kill")),
            ]);
        }
        Ok(())
    }

    /// Removes the daemon's v1 trees (at shutdown, once every server is
    /// gone), so no empty cgroup is left inside the daemon's own.
    pub fn remove(&self) {
        for home in [&self.pids, &self.memory] {
            if let Home::V1(root) = home {
                for child in child_dirs(root) {
                    rmdir_until(&child, Instant::now() + Duration::from_secs(2));
                }
                rmdir_until(root, Instant::now() + Duration::from_secs(2));
            }
        }
    }
}

/// What [`LimitTree::apply`] set up for one server.
#[derive(Debug)]
pub struct ServerLimits {
    /// v1 cgroups the server joins besides its unified one.
    pub join: Vec<PathBuf>,
    /// The kernel's counts of the server hitting its limits, shared by the
    /// audit thread (which polls them while the server runs) and the
    /// session (which polls them once more when it is gone).
    pub counters: Arc<Mutex<LimitCounters>>,
}

impl ServerLimits {
    /// Removes the server's v1 cgroups. Call once its unified cgroup is
    /// empty: the same tasks were in these.
    pub fn remove(&self) {
        remove_all(&self.join);
    }
}

fn remove_all(dirs: &[PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(2);
    for dir in dirs {
        rmdir_until(dir, deadline);
    }
}

/// The cgroup directory that carries `controller` for a server, created
/// (and added to `join`) when it is a v1 one.
fn dir_for(
    join: &mut Vec<PathBuf>,
    home: &Home,
    controller: &'static str,
    server: &Cgroup,
    launch: &str,
) -> Result<PathBuf, LimitError> {
    match home {
        Home::Unified => Ok(server.path.clone()),
        Home::V1(root) => {
            let dir = root.join(launch);
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&dir)
                .map_err(|source| LimitError::Create {
                    path: dir.clone(),
                    source,
                })?;
            join.push(dir.clone());
            Ok(dir)
        }
        Home::Missing(reason) => Err(LimitError::Unavailable {
            controller,
            reason: reason.clone(),
        }),
    }
}

/// One kernel counter of limit hits.
#[derive(Clone, Debug)]
struct Counter {
    resource: &'static str,
    event: &'static str,
    file: PathBuf,
    /// The `key value` line of a flat-keyed file; `None`: the whole file is
    /// the number.
    key: Option<&'static str>,
    limit: u64,
    seen: u64,
}

/// A server's limit counters, with what was already reported.
#[derive(Clone, Debug, Default)]
pub struct LimitCounters(Vec<Counter>);

/// New hits of one limit since the previous poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitHit {
    /// `pids` or `memory`.
    pub resource: &'static str,
    /// `max` (the limit was reached: a fork refused, memory reclaimed),
    /// `oom` (an allocation failed), `oom_kill` (a task was killed).
    pub event: &'static str,
    /// The limit (tasks or bytes).
    pub limit: u64,
    /// New hits since the previous report.
    pub count: u64,
    /// Hits since the server started.
    pub total: u64,
}

impl LimitCounters {
    /// Reads every counter and returns those that grew. A counter that
    /// cannot be read (the cgroup is gone) is skipped.
    pub fn poll(&mut self) -> Vec<LimitHit> {
        let mut hits = Vec::new();
        for c in &mut self.0 {
            let Ok(text) = fs::read_to_string(&c.file) else {
                debug!(file = %c.file.display(), "limit counter unreadable");
                continue;
            };
            let value = match c.key {
                Some(key) => text.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == key).then(|| v.trim().parse::<u64>().ok())?
                }),
                None => text.trim().parse().ok(),
            };
            if let Some(total) = value.filter(|v| *v > c.seen) {
                hits.push(LimitHit {
                    resource: c.resource,
                    event: c.event,
                    limit: c.limit,
                    count: total - c.seen,
                    total,
                });
                c.seen = total;
            }
        }
        hits
    }
}

fn find_home(
    mount: &Path,
    tree: &CgroupTree,
    name: &str,
    controller: &'static str,
) -> Result<Home, LimitError> {
    let root_controllers = read(&mount.join("cgroup.controllers"))?;
    if root_controllers.split_whitespace().any(|c| c == controller) {
        enable_unified(mount, &tree.root, controller)?;
        return Ok(Home::Unified);
    }
    let unavailable = |reason: &str| LimitError::Unavailable {
        controller,
        reason: reason.to_owned(),
    };
    let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
    let v1 = crate::mountinfo::find_cgroup_v1(&mountinfo, controller).ok_or_else(|| {
        unavailable("it is neither in the cgroup v2 hierarchy nor mounted as a cgroup v1 hierarchy")
    })?;
    let own = read(Path::new("/proc/self/cgroup"))?;
    let own = proc::cgroup_lines(&own)
        .find(|l| l.controllers.split(',').any(|c| c == controller))
        .map(|l| l.path)
        .ok_or_else(|| unavailable("/proc/self/cgroup does not list its v1 hierarchy"))?;
    let root = v1.join(own.trim_start_matches('/')).join(name);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&root)
        .map_err(|source| LimitError::Create {
            path: root.clone(),
            source,
        })?;
    // Left by a crashed daemon; their tasks died with the unified tree's
    // stale cgroups, so they are empty.
    for stale in child_dirs(&root) {
        rmdir_until(&stale, Instant::now() + Duration::from_secs(2));
    }
    Ok(Home::V1(root))
}

/// Enables `controller` in `cgroup.subtree_control` of every cgroup from
/// the hierarchy's root down to `tree_root`, where it is not yet.
fn enable_unified(
    mount: &Path,
    tree_root: &Path,
    controller: &'static str,
) -> Result<(), LimitError> {
    let rel = tree_root.strip_prefix(mount).unwrap_or(Path::new(""));
    let mut dirs = vec![mount.to_path_buf()];
    for component in rel.components() {
        let next = dirs[dirs.len() - 1].join(component);
        dirs.push(next);
    }
    for dir in dirs {
        let enable_err = |source| LimitError::Enable {
            controller,
            path: dir.clone(),
            source,
        };
        // Under systemd's delegation the daemon starts in the cgroup it was
        // given, which is on this path: it moves to a leaf of its own before
        // any controller is enabled there. Not after a refusal: the kernel
        // accepts a threaded controller (`pids`) in a cgroup with processes,
        // which makes it a thread root, and then refuses `memory` there and
        // every domain controller below it with EOPNOTSUPP, not EBUSY. (The
        // root cgroup may hold processes: it is never left.)
        if dir != mount && holds_self(&dir) {
            move_self_to_leaf(&dir).map_err(enable_err)?;
        }
        let control = dir.join("cgroup.subtree_control");
        if read(&control)?.split_whitespace().any(|c| c == controller) {
            continue;
        }
        write_file(&control, &format!("+{controller}")).map_err(enable_err)?;
        debug!(controller, path = %dir.display(), "enabled controller for children");
    }
    Ok(())
}

fn holds_self(dir: &Path) -> bool {
    let me = std::process::id().to_string();
    fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| p.lines().any(|l| l == me))
}

fn move_self_to_leaf(dir: &Path) -> io::Result<()> {
    let leaf = dir.join(DAEMON_LEAF);
    match fs::DirBuilder::new().mode(0o755).create(&leaf) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    write_file(&leaf.join("cgroup.procs"), "0")?;
    info!(leaf = %leaf.display(), "moved the daemon into a leaf cgroup to enable controllers");
    Ok(())
}

/// Refuses to go on when the host has swap and the cgroup cannot bound it.
fn write_swap_limit(path: &Path, value: &str) -> Result<(), LimitError> {
    if !path.exists() {
        let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
        // The first line is a header; any other is an active swap area.
        return if swaps.lines().nth(1).is_some() {
            Err(LimitError::NoSwapLimit {
                path: path.to_owned(),
            })
        } else {
            Ok(())
        };
    }
    write(path, value)
}

fn write(path: &Path, value: &str) -> Result<(), LimitError> {
    write_file(path, value).map_err(|source| LimitError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

/// One write to a kernel interface file (no create, no truncate).
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
}

fn read(path: &Path) -> Result<String, LimitError> {
    fs::read_to_string(path).map_err(|source| LimitError::Read {
        path: path.to_owned(),
        source,
    })
}

fn child_dirs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// rmdir, retrying `EBUSY` until `deadline`: the last task of a killed
/// cgroup is unlinked a moment after it dies.
fn rmdir_until(dir: &Path, deadline: Instant) {
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(error) => {
                warn!(path = %dir.display(), %error, "cannot remove a limits cgroup");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::cgroup::cgroup2_mount;

    /// Against the real kernel, wherever this machine keeps the pids and
    /// memory controllers (v2, or v1 on hybrid systems).
    #[test]
    fn limits_are_written_counted_and_cleaned_up() {
        let mount = cgroup2_mount().unwrap();
        let name = format!("mcpguard-test-limits-{}", std::process::id());
        let tree = CgroupTree::create(&mount, &name).unwrap();
        let limits = LimitTree::setup(&mount, &tree, &name);
        let server = tree.child("srv-1").unwrap();
        let applied = limits
            .apply(
                &server,
                "srv-1",
                &Limits {
                    pids: 3,
                    memory: 32 << 20,
                },
            )
            .unwrap();
        let dir = |controller| {
            match controller {
                "pids" => applied.join.first().cloned(),
                _ => applied.join.last().cloned(),
            }
            .unwrap_or_else(|| server.path.clone())
        };
        let read = |d: PathBuf, f| fs::read_to_string(d.join(f)).unwrap().trim().to_owned();
        assert_eq!(read(dir("pids"), "pids.max"), "3");
        let memory = dir("memory");
        let v1 = memory.join("memory.limit_in_bytes").exists();
        let file = if v1 {
            "memory.limit_in_bytes"
        } else {
            "memory.max"
        };
        assert_eq!(read(memory, file), (32u64 << 20).to_string());

        // A task over the limit: fork fails, and the counter says so once.
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "read x; for i in 1 2 3 4; do sleep 5 & done; wait"]);
        let mut sh = cmd
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for d in &applied.join {
            fs::write(d.join("cgroup.procs"), sh.id().to_string()).unwrap();
        }
        fs::write(server.path.join("cgroup.procs"), sh.id().to_string()).unwrap();
        drop(sh.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        let hits = loop {
            let hits = applied.counters.lock().unwrap().poll();
            if !hits.is_empty() || Instant::now() > deadline {
                break hits;
            }
            thread::sleep(Duration::from_millis(20));
        };
        assert!(
            hits.iter()
                .any(|h| h.resource == "pids" && h.event == "max" && h.limit == 3),
            "{hits:?}"
        );
        assert!(applied.counters.lock().unwrap().poll().is_empty());

        server.remove(Duration::from_secs(5)).unwrap();
        let _ = sh.wait();
        applied.remove();
        limits.remove();
        assert!(applied.join.iter().all(|d| !d.exists()));
        let _ = fs::remove_dir(&tree.root);
    }
}
