//! `mcpguard policy learn`: turn what a server did in learning mode into a
//! proposed least-privilege policy.
//!
//! In learning mode nothing is enforced and everything is recorded; the
//! audit thread feeds the records of that one server to [`Observations`]
//! (this file: what was touched, with relative paths resolved against the
//! acting process's working directory), `paths` generalises files to the
//! narrowest sensible directories (never all of `$HOME`, never credential
//! stores, nothing launch-specific), and [`propose`] writes the policy text
//! and notes on what was left out.

mod paths;
mod propose;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
};

pub use propose::propose;

/// Warnings for `[filesystem]` rules on single files that tools usually
/// replace by rename: Landlock binds a rule to the inode it finds when the
/// server starts, so once the file is replaced the rule no longer covers it.
pub fn replaced_file_warnings(p: &super::Policy) -> Vec<String> {
    let lists = [
        ("read", &p.filesystem.read),
        ("write", &p.filesystem.write),
        ("exec", &p.filesystem.exec),
    ];
    let mut out = Vec::new();
    for (list, rules) in lists {
        for rule in rules.iter().filter(|r| paths::usually_replaced(r)) {
            out.push(format!(
                "[filesystem] {list} names the single file {rule:?}, which tools usually \
                 replace by writing a new file and renaming it over the old one; Landlock \
                 binds a rule to the file it finds at launch, so after a replacement the rule \
                 no longer covers it{}. Grant its directory if the server must see or make \
                 the new file",
                if list == "write" {
                    ", and the server cannot replace it itself"
                } else {
                    ""
                }
            ));
        }
    }
    out
}

use super::KernelFeature;
use crate::audit::{AuditRecord, Body, PathCall, PathPair};

/// What one server did, as far as the records show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observations {
    pub reads: BTreeSet<PathBuf>,
    pub writes: BTreeSet<PathBuf>,
    /// Directories the server created entries in or removed entries from
    /// (mkdir, unlink, rmdir, rename, link): they need write rights.
    pub dir_writes: BTreeSet<PathBuf>,
    /// Names a rename put a new file at: a rule on the file itself would
    /// stop matching (Landlock binds rules to inodes).
    pub replaced: BTreeSet<PathBuf>,
    pub execs: BTreeSet<PathBuf>,
    /// (address as recorded, port).
    pub connects: BTreeSet<(String, u16)>,
    /// Local ports the server bound or was reached on (`bind4/6` and
    /// `inbound4/6` records; port 0, always allowed, left out).
    pub binds: BTreeSet<u16>,
    /// Address → every name a lookup returned it for.
    pub names: BTreeMap<String, BTreeSet<String>>,
    pub unix: BTreeSet<String>,
    /// Tools the server listed in its `tools/list` answers.
    pub tools_listed: BTreeSet<String>,
    /// Tools the client called.
    pub tools: BTreeSet<String>,
    pub sockets: BTreeSet<String>,
    /// `[kernel] allow` features whose syscalls the server called (from the
    /// syscall names alone: a `memfd_create` is counted even if it sealed
    /// its memfd, so review these).
    pub kernel: BTreeSet<KernelFeature>,
    /// The launch's cgroup directory (from its launch record): paths below
    /// the daemon's cgroup tree name this launch and are never proposed.
    pub cgroup: Option<PathBuf>,
    /// Records whose path could not be read from the caller's memory.
    pub unreadable: u64,
    cwds: Cwds,
}

/// The working directory of each of the server's processes, tracked from
/// the records themselves rather than read from `/proc/<pid>/cwd` when a
/// record is decoded: records are decoded some milliseconds after the fact,
/// when short-lived processes (GitPython's `git` runs, which start with a
/// `chdir` into the repository) are already gone, and a live process may
/// have moved on. A fork inherits its parent's directory, a successful
/// `chdir` moves it, and a process first seen without a fork record is the
/// server itself, which starts in the launch directory. `fchdir` is not
/// recorded: a process that uses it keeps the directory it had before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cwds {
    launch: PathBuf,
    by_pid: HashMap<u32, PathBuf>,
}

impl Cwds {
    /// The directories of a server launched in `launch`.
    pub(crate) fn new(launch: PathBuf) -> Self {
        Self {
            launch,
            by_pid: HashMap::new(),
        }
    }

    fn of(&self, pid: Option<u32>) -> &Path {
        pid.and_then(|p| self.by_pid.get(&p))
            .unwrap_or(&self.launch)
    }

    /// `path` as the process `pid` named it, from its working directory.
    pub(crate) fn resolve(&self, pid: Option<u32>, path: &str) -> PathBuf {
        normalise(&self.of(pid).join(path))
    }

    /// Follows a `chdir`, `fork` or `exit` record; other records are left
    /// alone.
    pub(crate) fn follow(&mut self, rec: &AuditRecord) {
        match &rec.body {
            Body::Chdir(p) if p.result == 0 => {
                if let Some(pid) = rec.pid {
                    let to = self.resolve(rec.pid, &p.path);
                    self.by_pid.insert(pid, to);
                }
            }
            Body::Fork { child_pid } => {
                let cwd = self.of(rec.pid).to_owned();
                self.by_pid.insert(*child_pid, cwd);
            }
            Body::Exit {} => {
                if let Some(pid) = rec.pid {
                    self.by_pid.remove(&pid);
                }
            }
            _ => {}
        }
    }
}

/// `path` without `.` and `..` components (lexically: a `..` after a
/// symlink is taken as written, as the kernel would not, but the result is
/// canonicalised again where the file still exists).
pub(crate) fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// The path as recorded and, if it differs, where it leads: Landlock
/// checks the file a symlink resolves to (venv/bin/python is
/// /usr/bin/python3.11; /etc/localtime is a zoneinfo file). Not for /proc:
/// there the daemon would resolve its own `self` and fds.
fn with_target(p: PathBuf) -> Vec<PathBuf> {
    if p.starts_with("/proc") {
        return vec![p];
    }
    match std::fs::canonicalize(&p) {
        Ok(real) if real != p => vec![p, real],
        _ => vec![p],
    }
}

fn parent(p: &Path) -> PathBuf {
    p.parent().map_or_else(|| p.to_owned(), Path::to_owned)
}

impl Observations {
    /// Observations of a server launched in `cwd`.
    pub fn new(cwd: PathBuf) -> Self {
        Self {
            cwds: Cwds::new(cwd),
            ..Self::default()
        }
    }

    /// Whether a path names this launch: it has the launch's cgroup leaf
    /// name (the launch id) as a component, or it lies in a cgroup
    /// hierarchy below a directory named like the daemon's cgroup subtree
    /// (cgroup v1 controllers mirror the v2 path, under other prefixes).
    pub fn launch_specific(&self, path: &Path) -> bool {
        let Some(cgroup) = self.cgroup.as_deref() else {
            return false;
        };
        let names = |p: &Path| p.file_name().map(std::ffi::OsStr::to_owned);
        let (leaf, tree) = (names(cgroup), cgroup.parent().and_then(names));
        path.components().any(|c| {
            let c = Some(c.as_os_str().to_owned());
            c == leaf || (c == tree && path.starts_with("/sys/fs/cgroup"))
        })
    }

    /// Where a recorded path leads, or `None` for a path relative to a
    /// directory fd (which the records cannot resolve) or an empty one (the
    /// kernel program could not read it: the page was not in memory yet).
    fn abs(&mut self, rec: &AuditRecord, path: &str, dirfd: Option<i32>) -> Option<Vec<PathBuf>> {
        if path.is_empty() {
            self.unreadable += 1;
            return None;
        }
        if dirfd.is_some() && !path.starts_with('/') {
            return None;
        }
        Some(with_target(self.cwds.resolve(rec.pid, path)))
    }

    /// Take what a record shows.
    pub fn observe(&mut self, rec: &AuditRecord) {
        match &rec.body {
            Body::Open {
                path,
                flags,
                result,
                dirfd,
                ..
            } if *result >= 0 => {
                let writes = flags
                    .iter()
                    .any(|f| matches!(f.as_str(), "O_WRONLY" | "O_RDWR" | "O_CREAT" | "O_TRUNC"));
                let Some(paths) = self.abs(rec, path, *dirfd) else {
                    return;
                };
                let set = if writes {
                    &mut self.writes
                } else {
                    &mut self.reads
                };
                set.extend(paths);
            }
            Body::Mkdir(p) | Body::Unlink(p) | Body::Rmdir(p) => self.dir_change(rec, p),
            // Learning mode records every attribute change; outside a write
            // grant the read-only view would refuse it. Calls on an fd carry
            // no path: the open that made the fd shows the file.
            Body::Attr(p) if p.result == 0 && p.fd.is_none() => {
                if let Some(paths) = self.abs(rec, &p.path, p.dirfd) {
                    self.writes.extend(paths);
                }
            }
            Body::Rename(p) => self.pair_change(rec, p, true),
            Body::Link(p) => self.pair_change(rec, p, false),
            Body::Chdir(_) | Body::Fork { .. } | Body::Exit {} => self.cwds.follow(rec),
            Body::Exec {
                filename, result, ..
            } if *result == 0 => {
                if let Some(paths) = self.abs(rec, filename, None) {
                    self.execs.extend(paths);
                }
            }
            Body::Launch { cgroup, .. } => self.cgroup = Some(PathBuf::from(cgroup)),
            _ => self.observe_net_and_mcp(rec),
        }
    }

    /// A mkdir, unlink or rmdir that worked changed its parent directory.
    fn dir_change(&mut self, rec: &AuditRecord, p: &PathCall) {
        if p.result != 0 {
            return;
        }
        if let Some(paths) = self.abs(rec, &p.path, p.dirfd) {
            if let Some(first) = paths.first() {
                self.dir_writes.insert(parent(first));
            }
        }
    }

    /// A rename or link that worked changed the directory of its new name
    /// (and a rename or hard link also involved the old name's directory:
    /// Landlock wants REFER there). A rename's new name is a replaced file.
    fn pair_change(&mut self, rec: &AuditRecord, p: &PathPair, rename: bool) {
        if p.result != 0 {
            return;
        }
        let resolve = |path: &str, dirfd: Option<i32>| {
            (dirfd.is_none() || path.starts_with('/')).then(|| self.cwds.resolve(rec.pid, path))
        };
        let old = resolve(&p.old_path, p.old_dirfd).filter(|_| !p.call.starts_with("symlink"));
        let new = resolve(&p.new_path, p.new_dirfd);
        self.dir_writes
            .extend(old.iter().chain(&new).map(|f| parent(f)));
        if let Some(new) = new.filter(|_| rename) {
            self.replaced.insert(new);
        }
    }

    fn observe_net_and_mcp(&mut self, rec: &AuditRecord) {
        match &rec.body {
            Body::Connect {
                op,
                addr,
                port,
                verdict,
                ..
            } if verdict != "deny" => {
                if op.starts_with("bind") || op.starts_with("inbound") {
                    self.binds.extend((*port != 0).then_some(*port));
                } else {
                    self.connects.insert((addr.clone(), *port));
                }
            }
            Body::Dns {
                qname,
                verdict,
                detail,
                ..
            } if verdict == "allow" => {
                for a in detail["answers"].as_array().into_iter().flatten() {
                    if let Some(addr) = a["addr"].as_str() {
                        self.names
                            .entry(addr.to_owned())
                            .or_default()
                            .insert(qname.clone());
                    }
                }
            }
            Body::UnixConnect {
                path,
                result,
                abstract_addr: false,
                ..
            } if *result == 0 => {
                self.unix.insert(path.clone());
            }
            Body::Socket {
                family,
                protocol,
                sock_type,
                verdict,
            } if verdict == "would_deny" => {
                if let Some(key) = super::sockets::key_for(family, sock_type, protocol) {
                    self.sockets.insert(key);
                }
            }
            Body::Syscall { name, result, .. } if *result >= 0 => {
                if let Some(f) = crate::kernel::syscalls::feature_of(name) {
                    self.kernel.insert(f);
                }
            }
            Body::Mcp { event, .. } if event == "tools_call" => {
                if let Some(t) = &rec.tool {
                    self.tools.insert(t.clone());
                }
            }
            Body::Mcp { event, detail } if event == "tools_list" => {
                // `hashes` names every tool the server listed, before the
                // starting policy hid any.
                if let Some(listed) = detail["hashes"].as_object() {
                    self.tools_listed.extend(listed.keys().cloned());
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
