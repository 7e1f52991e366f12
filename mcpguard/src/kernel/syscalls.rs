//! The syscall ABI table: which syscalls the seccomp filters gate (and
//! which `[kernel] allow` feature lifts each), which the audit watches,
//! their numbers and names, and the `struct seccomp_data` layout. Policy,
//! launch, eBPF and audit all read it, so it depends on none of them.

use serde::Deserialize;

/// `[kernel] allow` entries: interfaces refused by default because they
/// slip past the other layers' view or widen the kernel's attack surface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelFeature {
    /// `io_uring_*`: its opens and connects are still confined by Landlock
    /// and the egress programs, but bypass the syscall tracepoints the
    /// audit uses.
    IoUring,
    /// New namespaces (`unshare`, `clone` with `CLONE_NEW*`, `clone3`,
    /// `setns`), unprivileged user namespaces included.
    Namespaces,
    /// Executable memfds (`memfd_create` without `MFD_NOEXEC_SEAL`), which
    /// Landlock cannot stop from being executed.
    MemfdExec,
    /// `bpf()`.
    Bpf,
    /// `perf_event_open()`.
    PerfEvent,
    /// `userfaultfd()`, a common exploit primitive.
    Userfaultfd,
    /// The kernel keyrings (`add_key`, `request_key`, `keyctl`).
    Keyring,
}

impl std::fmt::Display for KernelFeature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::IoUring => "io_uring",
            Self::Namespaces => "namespaces",
            Self::MemfdExec => "memfd_exec",
            Self::Bpf => "bpf",
            Self::PerfEvent => "perf_event",
            Self::Userfaultfd => "userfaultfd",
            Self::Keyring => "keyring",
        })
    }
}

/// The syscall ABIs both seccomp filters know.
#[cfg(target_arch = "x86_64")]
pub mod arch {
    /// AUDIT_ARCH_X86_64.
    pub const NATIVE: u32 = 0xc000_003e;
    /// x32 syscalls carry this bit in their number, under the native arch.
    pub const X32_BIT: Option<u32> = Some(0x4000_0000);
    /// AUDIT_ARCH_I386, its `socket` and `socketcall`.
    pub const COMPAT: Option<(u32, u32, Option<u32>)> = Some((0x4000_0003, 359, Some(102)));
}

#[cfg(target_arch = "aarch64")]
pub mod arch {
    /// AUDIT_ARCH_AARCH64.
    pub const NATIVE: u32 = 0xc000_00b7;
    pub const X32_BIT: Option<u32> = None;
    /// AUDIT_ARCH_ARM and its `socket` (EABI has no `socketcall`).
    pub const COMPAT: Option<(u32, u32, Option<u32>)> = Some((0x4000_0028, 281, None));
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub mod arch {
    pub const NATIVE: u32 = 0;
    pub const X32_BIT: Option<u32> = None;
    pub const COMPAT: Option<(u32, u32, Option<u32>)> = None;
}

pub const SUPPORTED: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// `struct seccomp_data`: the syscall number, the arch, and the low 32
/// bits of argument `i` (every flag and int argument the fences check).
pub const OFF_NR: u32 = 0;
pub const OFF_ARCH: u32 = 4;
pub const fn off_arg(i: u32) -> u32 {
    16 + 8 * i + if cfg!(target_endian = "big") { 4 } else { 0 }
}

/// Every `CLONE_NEW*` flag (and `CLONE_NEWTIME`, which only `unshare`
/// takes; in `clone` that bit is part of the exit signal).
pub const CLONE_NEW_MASK: u32 = 0x0002_0000 // NEWNS
    | 0x0200_0000 // NEWCGROUP
    | 0x0400_0000 // NEWUTS
    | 0x0800_0000 // NEWIPC
    | 0x1000_0000 // NEWUSER
    | 0x2000_0000 // NEWPID
    | 0x4000_0000; // NEWNET
pub const CLONE_NEWTIME: u32 = 0x80;

pub const MFD_NOEXEC_SEAL: u32 = 0x8;
pub const MFD_EXEC: u32 = 0x10;

/// What the filter does with one syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Refuse every call.
    Always,
    /// Refuse when the argument has any of these bits.
    ArgHasAny { arg: u8, bits: u32 },
    /// `memfd_create`: refuse unless the memfd is sealed non-executable.
    MemfdNoExec,
}

/// Which calls of a syscall the audit records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audit {
    /// Every call by a guarded server (rare syscalls).
    Always,
    /// Only failed calls (frequent ones, like `clone` and `kill`).
    Failures,
    /// None (`clone3`: refused on every thread start, libcs retry).
    Never,
}

/// One gated syscall.
pub struct Gate {
    pub name: &'static str,
    pub nr: libc::c_long,
    /// `None`: always refused.
    pub feature: Option<KernelFeature>,
    pub check: Check,
    pub errno: i32,
    pub audit: Audit,
}

const fn gate(
    name: &'static str,
    nr: libc::c_long,
    feature: Option<KernelFeature>,
    check: Check,
    audit: Audit,
) -> Gate {
    Gate {
        name,
        nr,
        feature,
        check,
        errno: libc::EPERM,
        audit,
    }
}

use Audit as A;
use Check as C;
use KernelFeature as F;

/// The gated syscalls, in filter order.
pub const GATES: &[Gate] = &[
    gate(
        "io_uring_setup",
        libc::SYS_io_uring_setup,
        Some(F::IoUring),
        C::Always,
        A::Always,
    ),
    gate(
        "io_uring_enter",
        libc::SYS_io_uring_enter,
        Some(F::IoUring),
        C::Always,
        A::Failures,
    ),
    gate(
        "io_uring_register",
        libc::SYS_io_uring_register,
        Some(F::IoUring),
        C::Always,
        A::Always,
    ),
    gate(
        "unshare",
        libc::SYS_unshare,
        Some(F::Namespaces),
        C::ArgHasAny {
            arg: 0,
            bits: CLONE_NEW_MASK | CLONE_NEWTIME,
        },
        A::Always,
    ),
    gate(
        "clone",
        libc::SYS_clone,
        Some(F::Namespaces),
        C::ArgHasAny {
            arg: 0,
            bits: CLONE_NEW_MASK,
        },
        A::Failures,
    ),
    Gate {
        errno: libc::ENOSYS,
        ..gate(
            "clone3",
            libc::SYS_clone3,
            Some(F::Namespaces),
            C::Always,
            A::Never,
        )
    },
    gate(
        "setns",
        libc::SYS_setns,
        Some(F::Namespaces),
        C::Always,
        A::Always,
    ),
    gate(
        "memfd_create",
        libc::SYS_memfd_create,
        Some(F::MemfdExec),
        C::MemfdNoExec,
        A::Always,
    ),
    gate("bpf", libc::SYS_bpf, Some(F::Bpf), C::Always, A::Always),
    gate(
        "perf_event_open",
        libc::SYS_perf_event_open,
        Some(F::PerfEvent),
        C::Always,
        A::Always,
    ),
    gate(
        "userfaultfd",
        libc::SYS_userfaultfd,
        Some(F::Userfaultfd),
        C::Always,
        A::Always,
    ),
    gate(
        "add_key",
        libc::SYS_add_key,
        Some(F::Keyring),
        C::Always,
        A::Always,
    ),
    gate(
        "request_key",
        libc::SYS_request_key,
        Some(F::Keyring),
        C::Always,
        A::Always,
    ),
    gate(
        "keyctl",
        libc::SYS_keyctl,
        Some(F::Keyring),
        C::Always,
        A::Always,
    ),
    gate("mount", libc::SYS_mount, None, C::Always, A::Always),
    gate("umount2", libc::SYS_umount2, None, C::Always, A::Always),
    gate(
        "pivot_root",
        libc::SYS_pivot_root,
        None,
        C::Always,
        A::Always,
    ),
    gate("chroot", libc::SYS_chroot, None, C::Always, A::Always),
    gate("open_tree", libc::SYS_open_tree, None, C::Always, A::Always),
    gate(
        "move_mount",
        libc::SYS_move_mount,
        None,
        C::Always,
        A::Always,
    ),
    gate("fsopen", libc::SYS_fsopen, None, C::Always, A::Always),
    gate("fsconfig", libc::SYS_fsconfig, None, C::Always, A::Always),
    gate("fsmount", libc::SYS_fsmount, None, C::Always, A::Always),
    gate("fspick", libc::SYS_fspick, None, C::Always, A::Always),
    gate(
        "mount_setattr",
        libc::SYS_mount_setattr,
        None,
        C::Always,
        A::Always,
    ),
    gate(
        "open_by_handle_at",
        libc::SYS_open_by_handle_at,
        None,
        C::Always,
        A::Always,
    ),
    gate(
        "init_module",
        libc::SYS_init_module,
        None,
        C::Always,
        A::Always,
    ),
    gate(
        "finit_module",
        libc::SYS_finit_module,
        None,
        C::Always,
        A::Always,
    ),
    gate(
        "delete_module",
        libc::SYS_delete_module,
        None,
        C::Always,
        A::Always,
    ),
    gate(
        "kexec_load",
        libc::SYS_kexec_load,
        None,
        C::Always,
        A::Always,
    ),
    gate(
        "kexec_file_load",
        libc::SYS_kexec_file_load,
        None,
        C::Always,
        A::Always,
    ),
];

/// Syscalls the filter does not gate whose refusals (by Landlock's scopes
/// or plain permissions) the audit still records: tracing or signalling
/// processes outside the server, reading their memory, `prctl` attempts
/// at capabilities or the memory map.
const WATCHED: &[(&str, libc::c_long, Audit)] = &[
    ("ptrace", libc::SYS_ptrace, Audit::Always),
    (
        "process_vm_readv",
        libc::SYS_process_vm_readv,
        Audit::Always,
    ),
    (
        "process_vm_writev",
        libc::SYS_process_vm_writev,
        Audit::Always,
    ),
    ("kill", libc::SYS_kill, Audit::Failures),
    ("tkill", libc::SYS_tkill, Audit::Failures),
    ("tgkill", libc::SYS_tgkill, Audit::Failures),
    (
        "pidfd_send_signal",
        libc::SYS_pidfd_send_signal,
        Audit::Failures,
    ),
    ("pidfd_open", libc::SYS_pidfd_open, Audit::Failures),
    ("pidfd_getfd", libc::SYS_pidfd_getfd, Audit::Always),
    ("execveat", libc::SYS_execveat, Audit::Failures),
    ("prctl", libc::SYS_prctl, Audit::Failures),
];

/// The syscalls the audit records: (tracepoint name, number, which calls).
pub fn audited() -> impl Iterator<Item = (&'static str, u32, Audit)> {
    GATES
        .iter()
        .map(|g| (g.name, g.nr, g.audit))
        .chain(WATCHED.iter().copied())
        .filter(|(_, _, audit)| *audit != Audit::Never)
        .map(|(name, nr, audit)| (name, nr as u32, audit))
}

/// The `[kernel] allow` feature that lets `name` through, if it is gated
/// by one.
pub fn feature_of(name: &str) -> Option<KernelFeature> {
    GATES.iter().find(|g| g.name == name)?.feature
}

/// The name of an audited syscall number.
pub fn name_of(nr: u32) -> Option<&'static str> {
    audited()
        .find(|(_, n, _)| *n == nr)
        .map(|(name, _, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audited_names_are_unique_and_skip_clone3() {
        let names: Vec<_> = audited().map(|(n, _, _)| n).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert!(!names.contains(&"clone3"));
        assert_eq!(name_of(libc::SYS_bpf as u32), Some("bpf"));
    }
}
