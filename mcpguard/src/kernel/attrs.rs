//! The attribute syscalls the kernel programs watch (`attrs.rs` in the
//! eBPF crate): their numbers and the format-file fields holding their
//! arguments, so the loader can fill `ATTR_CALLS` from this kernel's
//! tracefs format files ([`crate::ebpf::attrs`]) and the decoder can name
//! a record's call.
//!
//! These are the changes no open covers: mode, owner, times, extended
//! attributes, size, and device or FIFO nodes. Landlock has no right for
//! most of them; the server's read-only mount view refuses them outside
//! the write grants.

/// One watched syscall: its name (as the tracepoint names it), number, and
/// the format-file fields holding the path, the fd (or directory fd) and
/// the mode, and an errno that also counts as a refusal for it.
pub struct AttrCall {
    pub name: &'static str,
    pub nr: u32,
    pub path: Option<&'static str>,
    pub fd: Option<&'static str>,
    pub mode: Option<&'static str>,
    pub extra_errno: u16,
}

const fn call(
    name: &'static str,
    nr: libc::c_long,
    path: Option<&'static str>,
    fd: Option<&'static str>,
    mode: Option<&'static str>,
) -> AttrCall {
    AttrCall {
        name,
        nr: nr as u32,
        path,
        fd,
        mode,
        extra_errno: 0,
    }
}

/// Syscalls numbered from 424 on have one number on every architecture;
/// the `libc` crate does not name these yet.
const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_REMOVEXATTRAT: libc::c_long = 466;

const FN: Option<&str> = Some("filename");
const PN: Option<&str> = Some("pathname");
const FD: Option<&str> = Some("fd");
const DFD: Option<&str> = Some("dfd");
const MODE: Option<&str> = Some("mode");

/// Every watched call this architecture has.
pub fn calls() -> Vec<AttrCall> {
    let mut calls = vec![
        call("fchmod", libc::SYS_fchmod, None, FD, MODE),
        call("fchmodat", libc::SYS_fchmodat, FN, DFD, MODE),
        call("fchmodat2", libc::SYS_fchmodat2, FN, DFD, MODE),
        call("fchown", libc::SYS_fchown, None, FD, None),
        call("fchownat", libc::SYS_fchownat, FN, DFD, None),
        call("utimensat", libc::SYS_utimensat, FN, DFD, None),
        call("setxattr", libc::SYS_setxattr, PN, None, None),
        call("lsetxattr", libc::SYS_lsetxattr, PN, None, None),
        call("fsetxattr", libc::SYS_fsetxattr, None, FD, None),
        call("setxattrat", SYS_SETXATTRAT, PN, DFD, None),
        call("removexattr", libc::SYS_removexattr, PN, None, None),
        call("lremovexattr", libc::SYS_lremovexattr, PN, None, None),
        call("fremovexattr", libc::SYS_fremovexattr, None, FD, None),
        call("removexattrat", SYS_REMOVEXATTRAT, PN, DFD, None),
        call("truncate", libc::SYS_truncate, Some("path"), None, None),
        AttrCall {
            // An fd not open for writing: the read-only grant at work.
            extra_errno: libc::EINVAL as u16,
            ..call("ftruncate", libc::SYS_ftruncate, None, FD, None)
        },
        call("mknodat", libc::SYS_mknodat, FN, DFD, MODE),
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        call("chmod", libc::SYS_chmod, FN, None, MODE),
        call("chown", libc::SYS_chown, FN, None, None),
        call("lchown", libc::SYS_lchown, FN, None, None),
        call("utime", libc::SYS_utime, FN, None, None),
        call("utimes", libc::SYS_utimes, FN, None, None),
        call("futimesat", libc::SYS_futimesat, FN, DFD, None),
        call("mknod", libc::SYS_mknod, FN, None, MODE),
    ]);
    calls
}

/// The name of watched call `nr`.
pub fn name_of(nr: u32) -> Option<&'static str> {
    calls().into_iter().find(|c| c.nr == nr).map(|c| c.name)
}

/// Whether `nr` is a call on an fd (no path).
pub fn on_fd(nr: u32) -> bool {
    calls().into_iter().any(|c| c.nr == nr && c.path.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_are_unique() {
        let calls = calls();
        for (i, a) in calls.iter().enumerate() {
            for b in &calls[i + 1..] {
                assert_ne!(a.nr, b.nr, "{} and {}", a.name, b.name);
                assert_ne!(a.name, b.name);
            }
        }
        assert!(calls.len() <= mcpguard_common::limits::MAX_ATTR_CALLS as usize);
        assert_eq!(name_of(libc::SYS_fchmodat as u32), Some("fchmodat"));
        assert!(on_fd(libc::SYS_ftruncate as u32));
        assert!(!on_fd(libc::SYS_truncate as u32));
    }
}
