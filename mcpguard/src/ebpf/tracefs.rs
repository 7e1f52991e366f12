//! tracefs: make sure it is mounted and read tracepoint field offsets from
//! its `format` files, so the kernel programs never hard-code a layout.

use std::path::{Path, PathBuf};

use thiserror::Error;

const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error("cannot read /proc/self/mountinfo: {0}")]
    Mountinfo(#[source] std::io::Error),
    #[error("tracefs is not mounted and mounting it at {TRACEFS} failed: {0}")]
    Mount(#[source] nix::Error),
    #[error("cannot read tracepoint format {path}: {source}")]
    Format {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tracepoint {event} has no field `{field}` (see {path})")]
    NoField {
        event: String,
        field: String,
        path: PathBuf,
    },
}

/// Where tracefs is mounted, mounting it at `/sys/kernel/tracing` if it is
/// not mounted anywhere. Returns the path and whether this call mounted it.
pub fn ensure_mounted() -> Result<(PathBuf, bool), TracefsError> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(TracefsError::Mountinfo)?;
    if let Some(path) = find_mount(&mountinfo, "tracefs") {
        return Ok((path, false));
    }
    nix::mount::mount(
        Some("nodev"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(TracefsError::Mount)?;
    Ok((PathBuf::from(TRACEFS), true))
}

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
        Some(PathBuf::from(unescape_octal(mountpoint)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Byte offset of `field` in tracepoint `category/event`'s record.
pub fn field_offset(
    tracefs: &Path,
    category: &str,
    event: &str,
    field: &str,
) -> Result<u32, TracefsError> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(event)
        .join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Format {
        path: path.clone(),
        source,
    })?;
    parse_offset(&text, field).ok_or_else(|| TracefsError::NoField {
        event: format!("{category}/{event}"),
        field: field.to_owned(),
        path,
    })
}

/// Finds `field:<type> <field>;\toffset:N;` in a format file.
fn parse_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        let name = decl.rsplit([' ', '*']).next()?;
        // Arrays are declared as `char name[16]`.
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let off = line.split("offset:").nth(1)?.split(';').next()?;
        off.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORK: &str = "name: sched_process_fork
ID: 300
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:char child_comm[16];\toffset:16;\tsize:16;\tsigned:0;
\tfield:pid_t child_pid;\toffset:32;\tsize:4;\tsigned:1;
\tfield:const char *const * argv;\toffset:40;\tsize:8;\tsigned:0;
";

    #[test]
    fn parses_field_offsets_across_declaration_styles() {
        assert_eq!(parse_offset(FORK, "parent_pid"), Some(12));
        assert_eq!(parse_offset(FORK, "child_pid"), Some(32));
        assert_eq!(parse_offset(FORK, "child_comm"), Some(16));
        assert_eq!(parse_offset(FORK, "argv"), Some(40));
        assert_eq!(parse_offset(FORK, "pid"), None);
    }

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
}
