//! Unix-socket connect audit: `syscalls/sys_enter_connect` and
//! `sys_exit_connect` (any kernel with syscall tracepoints).
//!
//! Landlock does not confine `connect()` to pathname sockets and aya has no
//! attach type for the cgroup `connect_unix` hook, so the fence is the
//! server's private mount namespace (set up by the launcher); these
//! programs record every Unix connect of a guarded server with its path and
//! result either way. They never decide anything. Unguarded tasks return
//! after one map lookup.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use mcpguard_common::{
    event::{kind, UnixConnectEvent},
    policy::FLAG_AUDIT_NET,
};

use crate::{
    emit::{current_server, emit_pending},
    maps::{PENDING_UNIX, SCRATCH_UNIX},
    offsets::{OFF_CONNECT_ADDR, OFF_SYS_EXIT_RET},
};

const AF_UNIX: u16 = 1;

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let Some((_, policy)) = current_server() else {
        return 0;
    };
    if policy.flags & FLAG_AUDIT_NET == 0 {
        return 0;
    }
    // SAFETY: the offset comes from this kernel's tracefs format file.
    let Ok(addr) = (unsafe { ctx.read_at::<u64>(OFF_CONNECT_ADDR()) }) else {
        return 0;
    };
    // SAFETY: user pointers are read through the faulting helpers.
    let family = unsafe { bpf_probe_read_user(addr as *const u16) }.unwrap_or(0);
    if family != AF_UNIX {
        return 0;
    }
    let Some(scratch) = SCRATCH_UNIX.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: `scratch` is this CPU's slot of a per-CPU array; programs do
    // not nest on one CPU for these tracepoints. `addr` is a user pointer
    // read through the faulting helpers.
    unsafe {
        let ev = &mut *scratch;
        ev.ret = 0;
        ev._pad = 0;
        ev.path[0] = 0;
        let first = bpf_probe_read_user((addr + 2) as *const u8).unwrap_or(0);
        ev.abstract_addr = u32::from(first == 0);
        let start = if first == 0 { addr + 3 } else { addr + 2 };
        let _ = bpf_probe_read_user_str_bytes(start as *const u8, &mut ev.path);
        let _ = PENDING_UNIX.insert(&bpf_get_current_pid_tgid(), ev, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING_UNIX.get_ptr(&id) else {
        return 0;
    };
    // SAFETY: the offset comes from this kernel's tracefs format file.
    let ret = unsafe { ctx.read_at::<i64>(OFF_SYS_EXIT_RET()) }.unwrap_or(0);
    if let Some((cgroup, _)) = current_server() {
        // Any failure may be the mount fence (ENOENT for a hidden socket).
        emit_pending(
            kind::UNIX_CONNECT,
            cgroup,
            ret < 0,
            pending,
            |ev: &mut UnixConnectEvent| ev.ret = ret,
        );
    }
    let _ = PENDING_UNIX.remove(&id);
    0
}
