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
    if let Some(path) = crate::mountinfo::find_mount(&mountinfo, "tracefs") {
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
}
