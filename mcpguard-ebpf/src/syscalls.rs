//! Watched-syscall audit: one program attached to `syscalls/sys_exit_*`
//! of every syscall in `SYSCALL_AUDIT` (any kernel with syscall
//! tracepoints).
//!
//! The daemon fills `SYSCALL_AUDIT` from the launcher's seccomp table: the
//! syscalls the fence gates (io_uring, namespaces, mounts, bpf, ...) and
//! cross-process ones whose refusal matters (ptrace, kill). The exit
//! tracepoint fires even when seccomp refused the call before it ran, so a
//! fence refusal is recorded with its errno. Records only; never decides.
//! Unguarded tasks return after one map lookup.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use mcpguard_common::{
    event::{kind, SyscallEvent},
    policy::syscall_audit,
};

use crate::{
    emit::{current_server, is_denial, reserve},
    maps::SYSCALL_AUDIT,
    offsets::{OFF_SYS_EXIT_NR, OFF_SYS_EXIT_RET},
};

#[tracepoint(category = "syscalls", name = "sys_exit_watched")]
pub fn sys_exit_watched(ctx: TracePointContext) -> u32 {
    let Some((cgroup, _)) = current_server() else {
        return 0;
    };
    // SAFETY: the offsets come from this kernel's tracefs format file.
    let Ok(nr) = (unsafe { ctx.read_at::<i32>(OFF_SYS_EXIT_NR()) }) else {
        return 0;
    };
    // SAFETY: as above.
    let ret = unsafe { ctx.read_at::<i64>(OFF_SYS_EXIT_RET()) }.unwrap_or(0);
    let nr = nr as u32;
    // SAFETY: the value is copied out at once.
    let Some(mode) = (unsafe { SYSCALL_AUDIT.get(&nr) }).copied() else {
        return 0;
    };
    if mode == syscall_audit::FAILURES && ret >= 0 {
        return 0;
    }
    let Some(mut entry) = reserve::<SyscallEvent>(kind::SYSCALL, cgroup, is_denial(ret)) else {
        return 0;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` is reserved ring-buffer memory for this record; the
    // header is filled, the payload is written here before submitting.
    unsafe {
        (*rec).payload = SyscallEvent { nr, _pad: 0, ret };
    }
    entry.submit();
    0
}
