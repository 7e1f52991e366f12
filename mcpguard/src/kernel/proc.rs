//! The small `/proc` readers everyone needs: a process's cgroups
//! (`/proc/<pid>/cgroup`), a field of `/proc/<pid>/status`, and where an
//! open descriptor points (`/proc/self/fd/<n>`). Plain text parsing, no
//! policy.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    path::PathBuf,
};

/// The text of `/proc/<pid>/cgroup`; `None` reads this process's.
pub fn read_cgroup(pid: Option<u32>) -> io::Result<String> {
    match pid {
        Some(pid) => std::fs::read_to_string(format!("/proc/{pid}/cgroup")),
        None => std::fs::read_to_string("/proc/self/cgroup"),
    }
}

/// One line of a `/proc/<pid>/cgroup` text: `hierarchy:controllers:path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLine<'a> {
    /// Hierarchy id; `0` for the unified (v2) hierarchy.
    pub hierarchy: &'a str,
    /// Comma-separated v1 controllers; empty for v2.
    pub controllers: &'a str,
    /// Path relative to the hierarchy's root (or the cgroup namespace's).
    pub path: &'a str,
}

/// The well-formed lines of a `/proc/<pid>/cgroup` text.
pub fn cgroup_lines(text: &str) -> impl Iterator<Item = CgroupLine<'_>> {
    text.lines().filter_map(|line| {
        let mut parts = line.splitn(3, ':');
        Some(CgroupLine {
            hierarchy: parts.next()?,
            controllers: parts.next()?,
            path: parts.next()?,
        })
    })
}

/// The cgroup v2 path of a `/proc/<pid>/cgroup` text (its `0::` line).
pub fn unified_cgroup(text: &str) -> Option<&str> {
    text.lines().find_map(|line| line.strip_prefix("0::"))
}

/// The value of `field` (e.g. `"Tgid"`) in a `/proc/<pid>/status` text,
/// trimmed.
pub fn status_field<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':').map(str::trim))
}

/// Where the object `fd` refers to is, as this process's mount namespace
/// names it (`readlink /proc/self/fd/<fd>`).
pub fn fd_path(fd: impl AsFd) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_and_v2_lines() {
        let text = "12:cpu,cpuacct:/user.slice\n0::/system.slice/mcpguard.service\nbogus\n";
        let lines: Vec<_> = cgroup_lines(text).collect();
        assert_eq!(
            lines[0],
            CgroupLine {
                hierarchy: "12",
                controllers: "cpu,cpuacct",
                path: "/user.slice"
            }
        );
        assert_eq!(lines.len(), 2);
        assert_eq!(unified_cgroup(text), Some("/system.slice/mcpguard.service"));
        assert_eq!(unified_cgroup("1:name=systemd:/\n"), None);
    }

    #[test]
    fn status_fields_and_fd_paths() {
        let text = "Name:\tsh\nUmask:\t0022\nTgid:\t42\nTgidx:\t1\n";
        assert_eq!(status_field(text, "Tgid"), Some("42"));
        assert_eq!(status_field(text, "Umask"), Some("0022"));
        assert_eq!(status_field(text, "Pid"), None);
        let own = read_cgroup(None).unwrap();
        assert_eq!(own, read_cgroup(Some(std::process::id())).unwrap());
        let file = std::fs::File::open("/").unwrap();
        assert_eq!(fd_path(&file).unwrap(), PathBuf::from("/"));
    }
}
