//! The runtime baseline: what every policy may read unless it says
//! `[filesystem] baseline = false`.
//!
//! Language runtimes (glibc, python, node/libuv/V8, git, Rust and Go
//! programs) probe the same few system files on every start: the CPU count,
//! memory and cgroup limits, the resolver configuration, their own `/proc`
//! entries. Refusing them changes nothing (each has a fallback) but logs
//! denials on every launch, and a log where denials are routine teaches
//! people to ignore denials. The baseline grants these reads, and only
//! reads: nothing here can be written or executed, and nothing here is
//! under anyone's home. (The user's own Python site directory,
//! `~/.local/lib/python3.X`, is left out on purpose: a server allowed to
//! write below `~/.local` could plant a symlink there that the next launch
//! would grant. Its probe, where it does not exist, fails with `ENOENT`,
//! which is not a denial.)
//!
//! `/proc` is granted whole because a Landlock rule binds to an inode, and
//! the server's processes' `/proc/<pid>` directories do not exist when the
//! rules are made. The launcher mounts a fresh procfs with
//! `hidepid=ptraceable` in the server's mount namespace: Landlock's ptrace
//! scoping makes every process outside the server's own domain
//! non-ptraceable, so those processes are not even listed, and their
//! `environ`, `cmdline` and the rest stay out of reach. See
//! [`crate::launch::mounts`].
//!
//! `/etc` is granted whole, not file by file, because the files runtimes
//! read there (`ld.so.cache`, `resolv.conf`, `localtime`, `passwd`) are
//! replaced by rename when the host updates them (ldconfig, resolvconf,
//! timedatectl, useradd); a rule on the old file would stop matching and a
//! long-running server would start failing. What world-readable `/etc`
//! holds is system configuration, not the user's secrets; what is secret
//! there (`shadow`, ssh host keys, mcpguard's own secrets) is readable by
//! root or a group only, and servers run as the user with supplementary
//! groups dropped.
//!
//! The server's own cgroup directories (whose `memory.max`, `cpu.max`,
//! `pids.max` runtimes size themselves by) depend on the launch; the daemon
//! adds them when it launches the server.

use std::path::{Path, PathBuf};

/// What the baseline lets every server read; a trailing `*` in the last
/// component matches any suffix.
pub const READ: &[&str] = &[
    // The server's own processes only (private procfs, hidepid=ptraceable):
    // /proc/self/{maps,cgroup,mountinfo,fd,stat,status}, and the system-wide
    // /proc/{stat,meminfo,cpuinfo}, /proc/sys/vm/overcommit_memory.
    "/proc",
    // CPU topology (online, possible, present, cpufreq) for CPU counts and
    // os.cpus(); NUMA nodes for allocators.
    "/sys/devices/system/cpu",
    "/sys/devices/system/node",
    // Transparent huge page settings (Go, V8, jemalloc).
    "/sys/kernel/mm/transparent_hugepage",
    // Loader cache, resolver and name-service configuration, time zone,
    // locale aliases, user and group names, TLS configuration and CA store.
    "/etc",
    // Time zones, locales and the CA certificates /etc/ssl/certs links to.
    "/usr/share/zoneinfo",
    "/usr/share/locale",
    "/usr/lib/locale",
    "/usr/share/ca-certificates",
    "/usr/local/share/ca-certificates",
    // Python's system-wide site directories.
    "/usr/lib/python3/dist-packages",
    "/usr/local/lib/python3*",
    // Stand-ins and randomness every runtime opens.
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
];

/// cgroup interface files runtimes size themselves by: the CPU quota
/// (cgroup v2 and v1, read by Rust's `available_parallelism`, Go, the JVM),
/// memory limits (libuv, V8) and the usable CPUs.
const CGROUP_PROBES: &[&str] = &[
    "cpu.max",
    "cpu.cfs_quota_us",
    "cpu.cfs_period_us",
    "memory.max",
    "memory.high",
    "memory.limit_in_bytes",
    "cpuset.cpus.effective",
];

/// The baseline's launch-specific part. `own` are the cgroup directories
/// the server is placed in (its cgroup v2 directory, its v1 limit
/// directories): each is readable whole. In the v1 hierarchies it does not
/// join (`cpu` on a hybrid host), the server stays in the daemon's cgroup.
/// In every cgroup the server is in, and each ancestor up to the
/// hierarchy's mount (runtimes walk up looking for the tightest quota),
/// only the `CGROUP_PROBES` files that exist are readable: the server
/// gets no view of sibling cgroups.
pub fn cgroup_paths(own: &[PathBuf]) -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = crate::mountinfo::cgroup_mounts(&mountinfo);
    let mount_of = |dir: &Path| {
        mounts
            .iter()
            .filter(|m| dir.starts_with(m))
            .max_by_key(|m| m.components().count())
            .cloned()
    };
    let mut dirs: Vec<PathBuf> = own.to_vec();
    let inherited = crate::kernel::proc::read_cgroup(None).unwrap_or_default();
    for line in crate::kernel::proc::cgroup_lines(&inherited) {
        let path = line.path;
        let Some(controller) = (line.controllers.split(',').next()).filter(|c| !c.is_empty())
        else {
            continue;
        };
        let Some(mount) = crate::mountinfo::find_cgroup_v1(&mountinfo, controller) else {
            continue;
        };
        if !own.iter().any(|d| d.starts_with(&mount)) {
            dirs.push(mount.join(path.trim_start_matches('/')));
        }
    }
    let mut out: Vec<PathBuf> = own.iter().filter(|d| d.is_dir()).cloned().collect();
    for dir in &dirs {
        let Some(mount) = mount_of(dir) else {
            continue;
        };
        for level in dir.ancestors().take_while(|a| a.starts_with(&mount)) {
            for file in CGROUP_PROBES.iter().map(|f| level.join(f)) {
                if file.is_file() && !out.contains(&file) {
                    out.push(file);
                }
            }
        }
    }
    out
}

/// The baseline's read list: patterns expanded, and paths that do not
/// exist left out (they would grant nothing, and a launch record listing
/// them as skipped would be noise).
pub fn read_paths() -> Vec<PathBuf> {
    READ.iter().flat_map(|p| expand(Path::new(p))).collect()
}

/// `path` itself if it exists; for a last component ending in `*`, the
/// existing entries of its parent whose name starts with the rest, sorted.
fn expand(path: &Path) -> Vec<PathBuf> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some(prefix) = name.strip_suffix('*') else {
        return if path.exists() {
            vec![path.to_owned()]
        } else {
            Vec::new()
        };
    };
    let Some(parent) = path.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_name()
                .to_str()?
                .starts_with(prefix)
                .then(|| e.path())
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_expand_to_existing_entries_and_missing_paths_drop_out() {
        let dir = std::env::temp_dir().join(format!("mcpguard-baseline-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["python3.11", "python3.12", "perl5"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        assert_eq!(
            expand(&dir.join("python3*")),
            [dir.join("python3.11"), dir.join("python3.12")]
        );
        assert_eq!(expand(&dir.join("perl5")), [dir.join("perl5")]);
        assert!(expand(&dir.join("ruby")).is_empty());
        assert!(expand(&dir.join("nothing/python3*")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_baseline_is_absolute_and_stays_out_of_homes() {
        for p in READ {
            assert!(p.starts_with('/'), "{p}");
            assert!(
                super::super::check_path(p.trim_end_matches('*')).is_ok(),
                "{p}"
            );
            assert!(!p.starts_with("/home") && !p.starts_with("/root"), "{p}");
        }
        let read = read_paths();
        assert!(read.contains(&PathBuf::from("/proc")));
        assert!(read.contains(&PathBuf::from("/etc")));
    }
}
