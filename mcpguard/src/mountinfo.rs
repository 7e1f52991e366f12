//! `/proc/self/mountinfo` parsing: where a filesystem type is mounted.

use std::path::PathBuf;

/// First mount point of filesystem type `fstype` in a mountinfo text.
pub fn find_mount(mountinfo: &str, fstype: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // mountinfo: id parent maj:min root mountpoint opts... - fstype source superopts
        let (left, right) = line.split_once(" - ")?;
        let ty = right.split_whitespace().next()?;
        if ty != fstype {
            return None;
        }
        let mountpoint = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape(mountpoint)))
    })
}

/// Mount point of the cgroup v1 hierarchy that `controller` is bound to
/// (fstype `cgroup`, the controller among its super options), on hybrid
/// systems.
pub fn find_cgroup_v1(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut fields = right.split_whitespace();
        if fields.next()? != "cgroup" {
            return None;
        }
        let superopts = fields.nth(1)?;
        superopts.split(',').any(|o| o == controller).then(|| {
            let mountpoint = left.split_whitespace().nth(4).unwrap_or_default();
            PathBuf::from(unescape(mountpoint))
        })
    })
}

/// Mount points of every cgroup hierarchy (fstype `cgroup` or `cgroup2`).
pub fn cgroup_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let ty = right.split_whitespace().next()?;
            let mountpoint = left.split_whitespace().nth(4)?;
            matches!(ty, "cgroup" | "cgroup2").then(|| PathBuf::from(unescape(mountpoint)))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = (b[i] == b'\\' && i + 3 < b.len())
            .then(|| &b[i + 1..i + 4])
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| {
                u8::try_from(d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'))).ok()
            });
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mounts_by_type_with_escapes() {
        let mi = "22 1 0:21 / /sys rw - sysfs sysfs rw\n\
                  40 22 0:35 / /sys/fs/cgroup/my\\040dir rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_mount(mi, "cgroup2"),
            Some(PathBuf::from("/sys/fs/cgroup/my dir"))
        );
        assert_eq!(find_mount(mi, "tracefs"), None);
    }

    #[test]
    fn lists_every_cgroup_hierarchy() {
        let mi = "22 1 0:21 / /sys rw - sysfs sysfs rw\n\
                  30 23 0:26 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                  40 22 0:35 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup_mounts(mi),
            [
                PathBuf::from("/sys/fs/cgroup/cpu"),
                PathBuf::from("/sys/fs/cgroup/unified")
            ]
        );
    }

    #[test]
    fn finds_v1_hierarchies_by_controller() {
        let mi = "30 23 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  31 23 0:27 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_cgroup_v1(mi, "pids"),
            Some(PathBuf::from("/sys/fs/cgroup/pids"))
        );
        assert_eq!(
            find_cgroup_v1(mi, "cpuacct"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(find_cgroup_v1(mi, "memory"), None);
        assert_eq!(find_cgroup_v1(mi, "cpu,cpuacct"), None);
    }

    #[test]
    fn unescapes_octal_sequences_in_mount_points() {
        assert_eq!(unescape(r"/mnt/with\040space"), "/mnt/with space");
        assert_eq!(unescape(r"/a\134b"), r"/a\b");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
        // Not a byte: kept literally rather than overflowing.
        assert_eq!(unescape(r"/x\777"), r"/x\777");
    }
}
