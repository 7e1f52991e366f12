//! The syscall fence: a seccomp filter the helper installs right before
//! `execve`, for the kernel interfaces Landlock and the eBPF programs do
//! not cover.
//!
//! Each gated interface is a [`KernelFeature`]; a policy lifts the fence
//! for one with `[kernel] allow = ["io_uring", ...]`. What is always
//! refused needs a capability a server never has, or would undo the other
//! layers: mount-topology changes, `chroot`, kernel modules, kexec,
//! `open_by_handle_at`, and syscalls from a foreign ABI (x32, or i386
//! through `int 0x80`, whose syscall numbers this filter does not check).
//!
//! Refusals are `EPERM`, except `clone3` (`ENOSYS`: its flags sit in
//! user memory a filter cannot read, and libcs fall back to `clone`, whose
//! flags it can). The same table drives the audit: every gated syscall has
//! a `syscalls/sys_exit_*` tracepoint that records its calls by guarded
//! servers ([`audited`]), so a refusal here is also an audit record.

use libc::{SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::policy::KernelFeature;

// The syscall ABIs both fences know (shared with [`super::socket_fence`]).
#[cfg(target_arch = "x86_64")]
pub(super) mod arch {
    /// AUDIT_ARCH_X86_64.
    pub const NATIVE: u32 = 0xc000_003e;
    /// x32 syscalls carry this bit in their number, under the native arch.
    pub const X32_BIT: Option<u32> = Some(0x4000_0000);
    /// AUDIT_ARCH_I386, its `socket` and `socketcall`.
    pub const COMPAT: Option<(u32, u32, Option<u32>)> = Some((0x4000_0003, 359, Some(102)));
}

#[cfg(target_arch = "aarch64")]
pub(super) mod arch {
    /// AUDIT_ARCH_AARCH64.
    pub const NATIVE: u32 = 0xc000_00b7;
    pub const X32_BIT: Option<u32> = None;
    /// AUDIT_ARCH_ARM and its `socket` (EABI has no `socketcall`).
    pub const COMPAT: Option<(u32, u32, Option<u32>)> = Some((0x4000_0028, 281, None));
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(super) mod arch {
    pub const NATIVE: u32 = 0;
    pub const X32_BIT: Option<u32> = None;
    pub const COMPAT: Option<(u32, u32, Option<u32>)> = None;
}

pub(super) const SUPPORTED: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// `struct seccomp_data`: the syscall number, the arch, and the low 32
/// bits of argument `i` (every flag and int argument the fences check).
pub(super) const OFF_NR: u32 = 0;
pub(super) const OFF_ARCH: u32 = 4;
pub(super) const fn off_arg(i: u32) -> u32 {
    16 + 8 * i + if cfg!(target_endian = "big") { 4 } else { 0 }
}

/// Every `CLONE_NEW*` flag (and `CLONE_NEWTIME`, which only `unshare`
/// takes; in `clone` that bit is part of the exit signal).
const CLONE_NEW_MASK: u32 = 0x0002_0000 // NEWNS
    | 0x0200_0000 // NEWCGROUP
    | 0x0400_0000 // NEWUTS
    | 0x0800_0000 // NEWIPC
    | 0x1000_0000 // NEWUSER
    | 0x2000_0000 // NEWPID
    | 0x4000_0000; // NEWNET
const CLONE_NEWTIME: u32 = 0x80;

const MFD_NOEXEC_SEAL: u32 = 0x8;
const MFD_EXEC: u32 = 0x10;

/// What the filter does with one syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
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
struct Gate {
    name: &'static str,
    nr: libc::c_long,
    /// `None`: always refused.
    feature: Option<KernelFeature>,
    check: Check,
    errno: i32,
    audit: Audit,
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
const GATES: &[Gate] = &[
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

/// What the helper installed, for the launch record.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FenceReport {
    /// Gated syscalls the filter refuses for this server.
    pub refused: Vec<String>,
    /// Features the policy let through.
    pub allowed: Vec<KernelFeature>,
}

#[derive(Debug, Error)]
pub enum SeccompError {
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(nix::errno::Errno),
    #[error("cannot install the seccomp filter: {0}")]
    Install(nix::errno::Errno),
}

// The classic BPF instructions the fence uses, from libc's <linux/filter.h>.
const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn ret_errno(errno: i32) -> libc::sock_filter {
    stmt(BPF_RET_K, SECCOMP_RET_ERRNO | (errno as u32 & 0xffff))
}

/// The filter program for a policy that allows `allowed`.
fn program(allowed: &[KernelFeature]) -> Vec<libc::sock_filter> {
    let mut prog = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, arch::NATIVE, 1, 0),
        ret_errno(libc::ENOSYS),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    if let Some(bit) = arch::X32_BIT {
        prog.extend([jump(BPF_JGE_K, bit, 0, 1), ret_errno(libc::ENOSYS)]);
    }
    let allow = stmt(BPF_RET_K, SECCOMP_RET_ALLOW);
    for g in GATES {
        if g.feature.is_some_and(|f| allowed.contains(&f)) {
            continue;
        }
        // Each block ends in a return, so the accumulator only has to hold
        // the syscall number when a block is skipped.
        let body: Vec<libc::sock_filter> = match g.check {
            Check::Always => vec![ret_errno(g.errno)],
            Check::ArgHasAny { arg, bits } => vec![
                stmt(BPF_LD_W_ABS, off_arg(u32::from(arg))),
                jump(BPF_JSET_K, bits, 0, 1),
                ret_errno(g.errno),
                allow,
            ],
            Check::MemfdNoExec => vec![
                stmt(BPF_LD_W_ABS, off_arg(1)),
                jump(BPF_JSET_K, MFD_EXEC, 2, 0),
                jump(BPF_JSET_K, MFD_NOEXEC_SEAL, 0, 1),
                allow,
                ret_errno(g.errno),
            ],
        };
        prog.push(jump(BPF_JEQ_K, g.nr as u32, 0, body.len() as u8));
        prog.extend(body);
    }
    prog.push(allow);
    prog
}

/// The gated syscalls `allowed` leaves refused.
pub fn refused(allowed: &[KernelFeature]) -> Vec<String> {
    GATES
        .iter()
        .filter(|g| !g.feature.is_some_and(|f| allowed.contains(&f)))
        .map(|g| g.name.to_owned())
        .collect()
}

/// Installs the filter on the calling thread (the helper is single
/// threaded, and the filter is inherited across `execve` and `fork`).
pub fn install(allowed: &[KernelFeature]) -> Result<FenceReport, SeccompError> {
    load(&program(allowed))?;
    Ok(FenceReport {
        refused: refused(allowed),
        allowed: allowed.to_vec(),
    })
}

/// Sets `no_new_privs` (seccomp requires it of an unprivileged caller)
/// and loads `prog`; allocates nothing.
fn load(prog: &[libc::sock_filter]) -> Result<(), SeccompError> {
    nix::sys::prctl::set_no_new_privs().map_err(SeccompError::NoNewPrivs)?;
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points to `prog`, which outlives the call; the kernel
    // copies the program before returning.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if ret != 0 {
        return Err(SeccompError::Install(nix::errno::Errno::last()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn every_block_fits_a_jump_and_the_program_fits_the_kernel_limit() {
        let prog = program(&[]);
        assert!(prog.len() < 4096);
        assert_eq!(prog.last().unwrap().k, SECCOMP_RET_ALLOW);
    }

    #[test]
    fn allowing_a_feature_removes_exactly_its_syscalls() {
        let all = refused(&[]);
        let some = refused(&[KernelFeature::IoUring]);
        assert!(all.contains(&"io_uring_setup".to_owned()));
        assert!(!some.iter().any(|n| n.starts_with("io_uring")));
        assert_eq!(all.len() - some.len(), 3);
        assert!(some.contains(&"mount".to_owned()), "mount is never allowed");
    }

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

    /// Installs the filter in a forked child and reports what each probe
    /// returned, so the test process itself stays unfiltered.
    fn in_filtered_child(allowed: &[KernelFeature], probe: fn() -> i32) -> i32 {
        // Built before the fork: the child of a threaded process must not
        // allocate.
        let prog = program(allowed);
        // SAFETY: the child only makes raw syscalls and exits; it touches
        // no lock the parent's other threads may hold.
        match unsafe { libc::fork() } {
            0 => {
                let code = match load(&prog) {
                    Ok(_) => probe(),
                    Err(_) => 255,
                };
                // SAFETY: plain exit of the forked child, no unwinding.
                unsafe { libc::_exit(code) }
            }
            pid => {
                let mut status = 0;
                // SAFETY: waits for the child just forked.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                std::process::ExitStatus::from_raw(status)
                    .code()
                    .expect("child exited")
            }
        }
    }

    fn errno() -> i32 {
        nix::errno::Errno::last() as i32
    }

    #[test]
    fn the_filter_refuses_gated_calls_and_passes_the_rest() {
        // io_uring_setup(0, NULL) fails EINVAL unfiltered, EPERM filtered.
        let probe = || {
            // SAFETY: raw syscalls with harmless arguments.
            unsafe {
                if libc::syscall(libc::SYS_io_uring_setup, 0, 0) != -1 || errno() != libc::EPERM {
                    return 1;
                }
                if libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) != -1
                    || errno() != libc::EPERM
                {
                    return 2;
                }
                if libc::syscall(libc::SYS_clone3, 0, 0) != -1 || errno() != libc::ENOSYS {
                    return 3;
                }
                let name = c"x".as_ptr();
                if libc::syscall(libc::SYS_memfd_create, name, 0) != -1 || errno() != libc::EPERM {
                    return 4;
                }
                let fd = libc::syscall(libc::SYS_memfd_create, name, MFD_NOEXEC_SEAL);
                if fd < 0 {
                    return 5;
                }
                if libc::getpid() <= 0 {
                    return 6;
                }
                // unshare without namespace flags is not a namespace.
                if libc::syscall(libc::SYS_unshare, libc::CLONE_FILES) != 0 {
                    return 7;
                }
            }
            0
        };
        assert_eq!(in_filtered_child(&[], probe), 0);
    }

    #[test]
    fn an_allowed_feature_reaches_the_kernel() {
        let probe = || {
            // SAFETY: io_uring_setup with a NULL params pointer fails in the kernel's
            // own argument check (EFAULT), proving the filter passed it.
            let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 0, 0) };
            if r == -1 && errno() != libc::EPERM {
                0
            } else {
                1
            }
        };
        assert_eq!(in_filtered_child(&[KernelFeature::IoUring], probe), 0);
    }
}
