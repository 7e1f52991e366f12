//! Attribute-change audit: one program attached to `syscalls/sys_enter_*`
//! and one to `sys_exit_*` of every syscall in `ATTR_CALLS` (the `chmod`,
//! `chown`, `utimes`, `setxattr`/`removexattr`, `truncate` and `mknod`
//! families; any kernel with syscall tracepoints).
//!
//! Landlock has no right for most of these: the read-only view of the
//! server's mount namespace refuses them outside the write grants
//! (`EROFS`), Landlock the rest (`EACCES`). Entry stashes the path as
//! passed (the caller's memory, `path_source::USER`), the fd and the mode
//! in the per-thread open slot, at the offsets the daemon read from each
//! call's format file (or, when only a refusal could be recorded, keeps
//! the path's pointer for exit to read, as the opens do); exit emits the record only when the call was
//! refused (`EACCES`, `EPERM`, `EROFS`, or the call's own extra errno), or
//! for any result in learning mode, so `policy learn` sees what the server
//! changes. These calls are rare; refused ones rarer. Records only; never
//! decides. Unguarded tasks return after one map lookup.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use mcpguard_common::{event::kind, policy::FLAG_COMPLAIN};

use crate::{
    emit::{current_server, emit_pending, is_denial},
    files::{finish_late, stash, AT_FDCWD},
    maps::{ATTR_CALLS, PENDING_OPEN},
    offsets::{OFF_SYS_ENTER_NR, OFF_SYS_EXIT_RET},
};

#[tracepoint(category = "syscalls", name = "sys_enter_attr")]
pub fn sys_enter_attr(ctx: TracePointContext) -> u32 {
    // SAFETY: the offset comes from this kernel's tracefs format file.
    let Ok(nr) = (unsafe { ctx.read_at::<i32>(OFF_SYS_ENTER_NR()) }) else {
        return 0;
    };
    let nr = nr as u32;
    // SAFETY: the value is copied out at once.
    let Some(args) = (unsafe { ATTR_CALLS.get(&nr) }).copied() else {
        return 0;
    };
    let arg = |off: u16| -> Option<u64> {
        if off == 0 {
            return None;
        }
        // SAFETY: a nonzero offset comes from this call's format file.
        unsafe { ctx.read_at::<u64>(off as usize) }.ok()
    };
    let path = arg(args.path_off).unwrap_or(0);
    let fd = arg(args.fd_off).map_or(AT_FDCWD, |fd| fd as i32);
    let mode = arg(args.mode_off).unwrap_or(0) as u32;
    stash(nr, fd, path, 0, mode, 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_attr")]
pub fn sys_exit_attr(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING_OPEN.get_ptr(&id) else {
        // Stashed without its path (only a refusal can be recorded now):
        // written if refused, as the opens are.
        return finish_late(
            &ctx,
            id,
            |_| kind::ATTR,
            |call, ret| {
                // SAFETY: the value is copied out at once.
                let extra = unsafe { ATTR_CALLS.get(&call) }.map_or(0, |a| a.extra_errno);
                extra != 0 && ret == -i64::from(extra)
            },
        );
    };
    // SAFETY: the offset comes from this kernel's tracefs format file.
    let ret = unsafe { ctx.read_at::<i64>(OFF_SYS_EXIT_RET()) }.unwrap_or(0);
    if let Some((cgroup, policy)) = current_server() {
        // SAFETY: `pending` is a live value of this thread's own map entry.
        let nr = unsafe { (*pending).call };
        // SAFETY: the value is copied out at once.
        let extra = unsafe { ATTR_CALLS.get(&nr) }.map_or(0, |a| a.extra_errno);
        let refused = is_denial(ret) || (extra != 0 && ret == -i64::from(extra));
        if refused || policy.flags & FLAG_COMPLAIN != 0 {
            emit_pending(kind::ATTR, cgroup, refused, pending, |ev| ev.ret = ret);
        }
    }
    let _ = PENDING_OPEN.remove(&id);
    0
}
