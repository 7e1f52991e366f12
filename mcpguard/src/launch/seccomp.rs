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
//! servers ([`crate::kernel::syscalls::audited`]), so a refusal here is also an audit record.

use libc::{SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::kernel::{
    cbpf::{self, Op, Test},
    syscalls::{
        arch, off_arg, Check, KernelFeature, GATES, MFD_EXEC, MFD_NOEXEC_SEAL, OFF_ARCH, OFF_NR,
    },
};

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
    #[error("the seccomp filter has {0} instructions; a jump cannot span that far")]
    TooLong(usize),
}

/// Where the filter's jumps land.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Label {
    Native,
    NotX32,
    /// The end of gate `i`'s block.
    Next(usize),
    /// Gate `i`'s refusal.
    Refuse(usize),
    /// Gate `i`'s pass.
    Pass(usize),
}

/// The ops of the filter for a policy that allows `allowed`.
fn ops(allowed: &[KernelFeature]) -> Vec<Op<Label>> {
    use Label::*;
    use Op::*;
    let allow = Ret(SECCOMP_RET_ALLOW);
    let mut p = vec![
        Load(OFF_ARCH),
        If(Test::Eq, arch::NATIVE, Native),
        ret_errno(libc::ENOSYS),
        Here(Native),
        Load(OFF_NR),
    ];
    if let Some(bit) = arch::X32_BIT {
        p.extend([
            Unless(Test::Ge, bit, NotX32),
            ret_errno(libc::ENOSYS),
            Here(NotX32),
        ]);
    }
    for (i, g) in GATES.iter().enumerate() {
        if g.feature.is_some_and(|f| allowed.contains(&f)) {
            continue;
        }
        // Each block ends in a return, so the accumulator only has to hold
        // the syscall number when a block is skipped.
        p.push(Unless(Test::Eq, g.nr as u32, Next(i)));
        match g.check {
            Check::Always => p.push(ret_errno(g.errno)),
            Check::ArgHasAny { arg, bits } => p.extend([
                Load(off_arg(u32::from(arg))),
                Unless(Test::Set, bits, Pass(i)),
                ret_errno(g.errno),
                Here(Pass(i)),
                allow,
            ]),
            Check::MemfdNoExec => p.extend([
                Load(off_arg(1)),
                If(Test::Set, MFD_EXEC, Refuse(i)),
                Unless(Test::Set, MFD_NOEXEC_SEAL, Refuse(i)),
                allow,
                Here(Refuse(i)),
                ret_errno(g.errno),
            ]),
        }
        p.push(Here(Next(i)));
    }
    p.push(allow);
    p
}

fn ret_errno(errno: i32) -> Op<Label> {
    Op::Ret(SECCOMP_RET_ERRNO | (errno as u32 & 0xffff))
}

/// The filter program for a policy that allows `allowed`.
fn program(allowed: &[KernelFeature]) -> Result<Vec<libc::sock_filter>, SeccompError> {
    cbpf::assemble(&ops(allowed)).map_err(|e| match e {
        cbpf::CbpfError::TooLong(n) => SeccompError::TooLong(n),
    })
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
    load(&program(allowed)?)?;
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
        let prog = program(&[]).unwrap();
        assert!(prog.len() < 4096);
        assert_eq!(prog.last().unwrap().k, SECCOMP_RET_ALLOW);
    }

    /// The feature sets the interpreter test builds the filter for: none,
    /// each alone, all.
    fn feature_sets() -> Vec<Vec<KernelFeature>> {
        let mut all: Vec<_> = GATES.iter().filter_map(|g| g.feature).collect();
        all.dedup();
        let mut sets = vec![Vec::new(), all.clone()];
        sets.extend(all.into_iter().map(|f| vec![f]));
        sets
    }

    /// What the table says the filter answers for a native syscall.
    fn expected(allowed: &[KernelFeature], nr: u32, args: [u32; 3]) -> u32 {
        let refuse = |errno: i32| SECCOMP_RET_ERRNO | errno as u32;
        if arch::X32_BIT.is_some_and(|bit| nr >= bit) {
            return refuse(libc::ENOSYS);
        }
        let gate = GATES
            .iter()
            .find(|g| g.nr as u32 == nr && !g.feature.is_some_and(|f| allowed.contains(&f)));
        let Some(g) = gate else {
            return SECCOMP_RET_ALLOW;
        };
        let refused = match g.check {
            Check::Always => true,
            Check::ArgHasAny { arg, bits } => args[usize::from(arg)] & bits != 0,
            Check::MemfdNoExec => args[1] & MFD_EXEC != 0 || args[1] & MFD_NOEXEC_SEAL == 0,
        };
        if refused {
            refuse(g.errno)
        } else {
            SECCOMP_RET_ALLOW
        }
    }

    #[test]
    fn the_filter_answers_every_syscall_as_the_table_says() {
        let probes = [
            [0, 0, 0],
            [0x1000_0000, 0, 0],
            [libc::CLONE_FILES as u32, MFD_NOEXEC_SEAL, 0],
            [0x80, MFD_EXEC, 0],
            [u32::MAX, MFD_EXEC | MFD_NOEXEC_SEAL, u32::MAX],
        ];
        let enosys = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        for allowed in feature_sets() {
            let prog = program(&allowed).unwrap();
            for nr in 0..=470u32 {
                for nr in [nr, nr | arch::X32_BIT.unwrap_or(0)] {
                    for args in probes {
                        let want = expected(&allowed, nr, args);
                        let got = cbpf::run(&prog, arch::NATIVE, nr, args);
                        assert_eq!(got, want, "{allowed:?} nr {nr} {args:?}");
                        if let Some((compat, _, _)) = arch::COMPAT {
                            assert_eq!(cbpf::run(&prog, compat, nr, args), enosys);
                        }
                        assert_eq!(cbpf::run(&prog, 0x1234, nr, args), enosys);
                    }
                }
            }
        }
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

    /// Installs the filter in a forked child and reports what each probe
    /// returned, so the test process itself stays unfiltered.
    fn in_filtered_child(allowed: &[KernelFeature], probe: fn() -> i32) -> i32 {
        // Built before the fork: the child of a threaded process must not
        // allocate.
        let prog = program(allowed).unwrap();
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
