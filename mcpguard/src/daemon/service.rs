//! Running under systemd: readiness notification (`Type=notify`), whether
//! stderr goes to the journal, and the cgroup systemd delegated to the
//! daemon (`Delegate=yes`).
//!
//! The notification protocol is one Unix datagram of `KEY=VALUE` lines to
//! the socket named by `$NOTIFY_SOCKET` (a path, or an abstract address
//! written with a leading `@`); std's `UnixDatagram` is all it takes. See
//! sd_notify(3) and systemd.exec(5) (`$JOURNAL_STREAM`). Kept by hand rather
//! than taking the `sd-notify` or `libsystemd` crates: it is one datagram
//! sent with std, and those would add a dependency for these few lines.

use std::{
    ffi::{CString, OsStr, OsString},
    os::{
        fd::AsFd,
        unix::{
            ffi::OsStrExt,
            net::{SocketAddr, UnixDatagram},
        },
    },
    path::Path,
};

use thiserror::Error;
use tracing::{info, warn};

use crate::ebpf::Layers;

/// Environment variable naming systemd's notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// Environment variable with the `device:inode` of the journal stream
/// systemd connected stdout/stderr to.
pub const JOURNAL_STREAM: &str = "JOURNAL_STREAM";

#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("${NOTIFY_SOCKET}={0:?} is not a socket path or an @abstract address")]
    BadAddress(OsString),
    #[error("notifying systemd at {addr:?}: {source}")]
    Send {
        addr: OsString,
        #[source]
        source: std::io::Error,
    },
}

/// Sends state changes to systemd when it asked for them.
#[derive(Debug)]
pub struct Notifier {
    /// `$NOTIFY_SOCKET` as given, for messages.
    raw: OsString,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier systemd asked for, if it did (`$NOTIFY_SOCKET` set and
    /// non-empty).
    pub fn from_env() -> Result<Option<Self>, ServiceError> {
        match std::env::var_os(NOTIFY_SOCKET) {
            Some(raw) if !raw.is_empty() => Self::new(&raw).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for the socket named like `$NOTIFY_SOCKET`.
    pub fn new(raw: &OsStr) -> Result<Self, ServiceError> {
        Ok(Notifier {
            raw: raw.to_owned(),
            addr: notify_addr(raw)?,
        })
    }

    /// Send one notification (`KEY=VALUE` lines).
    pub fn notify(&self, state: &str) -> Result<(), ServiceError> {
        let send_err = |source| ServiceError::Send {
            addr: self.raw.clone(),
            source,
        };
        let socket = UnixDatagram::unbound().map_err(send_err)?;
        socket
            .send_to_addr(state.as_bytes(), &self.addr)
            .map_err(send_err)?;
        Ok(())
    }

    /// The daemon is listening.
    pub fn ready(&self, status: &str) -> Result<(), ServiceError> {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// The daemon is shutting down.
    pub fn stopping(&self, status: &str) -> Result<(), ServiceError> {
        self.notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)))
    }
}

/// The notifier, if systemd asked for one; a malformed address is logged
/// and ignored (systemd then times the start out and says so).
pub fn notifier() -> Option<Notifier> {
    match Notifier::from_env() {
        Ok(n) => n,
        Err(error) => {
            warn!(%error, "cannot notify systemd");
            None
        }
    }
}

/// Tell systemd (if it asked) that the daemon is listening.
pub fn ready(notifier: Option<&Notifier>, socket: &Path, layers: &Layers) {
    let Some(n) = notifier else { return };
    let mut status = format!("listening on {}", socket.display());
    if !layers.missing.is_empty() {
        status.push_str(&format!(
            "; {} layer(s) missing, see the log",
            layers.missing.len()
        ));
    }
    match n.ready(&status) {
        Ok(()) => info!(status, "told systemd the daemon is ready"),
        Err(error) => warn!(%error, "cannot notify systemd"),
    }
}

/// Tell systemd (if it asked) that the daemon is stopping.
pub fn stopping(notifier: Option<&Notifier>) {
    if let Some(Err(error)) = notifier.map(|n| n.stopping("stopping every server")) {
        warn!(%error, "cannot notify systemd");
    }
}

/// A STATUS value must be one line.
fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// `/path` or `@abstract` (the `@` stands for the leading NUL byte).
fn notify_addr(raw: &OsStr) -> Result<SocketAddr, ServiceError> {
    let bytes = raw.as_bytes();
    let bad = || ServiceError::BadAddress(raw.to_owned());
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(Path::new(raw)).map_err(|_| bad()),
        Some(b'@') if bytes.len() > 1 => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..]).map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// Whether stderr is the journal stream systemd connected (then the daemon
/// logs to the journal natively, with structured fields).
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os(JOURNAL_STREAM) else {
        return false;
    };
    let Some((dev, ino)) = parse_journal_stream(&value) else {
        return false;
    };
    nix::sys::stat::fstat(std::io::stderr().as_fd())
        .is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

fn parse_journal_stream(value: &OsStr) -> Option<(u64, u64)> {
    let text = value.to_str()?;
    let (dev, ino) = text.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The daemon's own cgroup, relative to the cgroup2 mount (`/system.slice/
/// mcpguard.service`), when it runs as a systemd service (`$INVOCATION_ID`)
/// whose cgroup systemd delegated (`Delegate=yes`). Servers then live below
/// it, so systemd's `KillMode=` reaches them and they die with the daemon,
/// and no write access to the cgroup root (CAP_DAC_OVERRIDE) is needed.
///
/// systemd marks a delegated cgroup with the `user.delegate` xattr (252+,
/// readable without privileges) and `trusted.delegate` (readable with
/// CAP_SYS_ADMIN only).
pub fn delegated_cgroup(mount: &Path) -> Option<String> {
    std::env::var_os("INVOCATION_ID")?;
    let own = crate::kernel::proc::read_cgroup(None).ok()?;
    let rel = own_cgroup(&own)?;
    let dir = mount.join(rel.trim_start_matches('/'));
    ["user.delegate", "trusted.delegate"]
        .iter()
        .any(|name| xattr_is_true(&dir, name))
        .then(|| rel.to_string())
}

/// The cgroup v2 path of a `/proc/<pid>/cgroup` text, unless it is the
/// root (a process there was not started by a service manager).
fn own_cgroup(proc_cgroup: &str) -> Option<&str> {
    crate::kernel::proc::unified_cgroup(proc_cgroup).filter(|p| p.starts_with('/') && *p != "/")
}

fn xattr_is_true(path: &Path, name: &str) -> bool {
    let (Ok(path), Ok(name)) = (
        CString::new(path.as_os_str().as_bytes()),
        CString::new(name),
    ) else {
        return false;
    };
    let mut buf = [0u8; 16];
    // SAFETY: both strings are NUL-terminated and live across the call;
    // the kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let Ok(n) = usize::try_from(n) else {
        return false;
    };
    matches!(
        buf.get(..n).map(|v| v.trim_ascii()),
        Some(b"1" | b"yes" | b"true" | b"on")
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn notifies_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("mcpguard-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::new(path.as_os_str()).unwrap();
        n.ready("listening on /run/mcpguard/mcpguard.sock\nsecond line")
            .unwrap();
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "READY=1\nSTATUS=listening on /run/mcpguard/mcpguard.sock second line"
        );
        n.stopping("bye").unwrap();
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\nSTATUS=bye");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn notifies_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("mcpguard-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        n.ready("ok").unwrap();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ok");
    }

    #[test]
    fn rejects_addresses_that_are_neither_paths_nor_abstract() {
        for bad in ["", "@", "relative/sock", "vsock:2:1"] {
            assert!(
                matches!(
                    notify_addr(OsStr::new(bad)),
                    Err(ServiceError::BadAddress(_))
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn a_missing_notify_socket_is_an_error_to_send_to() {
        let n = Notifier::new(OsStr::new("/nonexistent/mcpguard/notify")).unwrap();
        assert!(matches!(n.ready("x"), Err(ServiceError::Send { .. })));
    }

    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert_eq!(
            parse_journal_stream(OsStr::new("8:123456")),
            Some((8, 123456))
        );
        assert_eq!(parse_journal_stream(OsStr::new("8-123")), None);
        assert_eq!(parse_journal_stream(OsStr::new("x:1")), None);
    }

    #[test]
    fn own_cgroup_skips_v1_lines_and_the_root() {
        let hybrid =
            "9:name=systemd:/system.slice/mcpguard.service\n0::/system.slice/mcpguard.service\n";
        assert_eq!(own_cgroup(hybrid), Some("/system.slice/mcpguard.service"));
        assert_eq!(own_cgroup("0::/\n"), None);
        assert_eq!(own_cgroup("4:memory:/x\n"), None);
    }
}
