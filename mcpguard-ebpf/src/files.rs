//! File-open audit: `syscalls/sys_enter_*` and `sys_exit_*` tracepoints for
//! `openat`, `openat2`, `open` and `creat` (any kernel with syscall
//! tracepoints).
//!
//! Entry stashes the path as passed and the flags; exit pairs them with the
//! result and emits one record. These programs never decide anything:
//! Landlock enforces, and its denials show up here as `-EACCES` results.
//! Unguarded tasks return after one map lookup.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use mcpguard_common::{
    event::{kind, open_call, OpenEvent},
    policy::FLAG_AUDIT_OPEN,
};

use crate::{
    emit::{current_server, emit_pending, is_denial},
    maps::{PENDING_OPEN, SCRATCH_OPEN},
    offsets::*,
};

/// `struct open_how` from openat2(2): flags, mode, resolve.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    let args = unsafe {
        (
            ctx.read_at::<i64>(OFF_OPENAT_DFD()),
            ctx.read_at::<u64>(OFF_OPENAT_FILENAME()),
            ctx.read_at::<u64>(OFF_OPENAT_FLAGS()),
            ctx.read_at::<u64>(OFF_OPENAT_MODE()),
        )
    };
    if let (Ok(dfd), Ok(path), Ok(flags), Ok(mode)) = args {
        stash(
            open_call::OPENAT,
            dfd as i32,
            path,
            flags as u32,
            mode as u32,
        );
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    let args = unsafe {
        (
            ctx.read_at::<i64>(OFF_OPENAT2_DFD()),
            ctx.read_at::<u64>(OFF_OPENAT2_FILENAME()),
            ctx.read_at::<u64>(OFF_OPENAT2_HOW()),
        )
    };
    if let (Ok(dfd), Ok(path), Ok(how)) = args {
        // SAFETY: `how` is a user pointer; the helper faults safely.
        let how = unsafe { bpf_probe_read_user(how as *const OpenHow) };
        let (flags, mode) = match how {
            Ok(h) => (h.flags as u32, h.mode as u32),
            Err(_) => (0, 0),
        };
        stash(open_call::OPENAT2, dfd as i32, path, flags, mode);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    let args = unsafe {
        (
            ctx.read_at::<u64>(OFF_OPEN_FILENAME()),
            ctx.read_at::<u64>(OFF_OPEN_FLAGS()),
            ctx.read_at::<u64>(OFF_OPEN_MODE()),
        )
    };
    if let (Ok(path), Ok(flags), Ok(mode)) = args {
        stash(open_call::OPEN, AT_FDCWD, path, flags as u32, mode as u32);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_creat")]
pub fn sys_enter_creat(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    let args = unsafe {
        (
            ctx.read_at::<u64>(OFF_CREAT_PATHNAME()),
            ctx.read_at::<u64>(OFF_CREAT_MODE()),
        )
    };
    if let (Ok(path), Ok(mode)) = args {
        // creat(2) is open(O_CREAT|O_WRONLY|O_TRUNC).
        stash(open_call::CREAT, AT_FDCWD, path, 0o1101, mode as u32);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat2")]
pub fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_open")]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_creat")]
pub fn sys_exit_creat(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}

const AT_FDCWD: i32 = -100;

#[inline(always)]
fn stash(call: u32, dirfd: i32, path: u64, flags: u32, mode: u32) {
    let Some((_, policy)) = current_server() else {
        return;
    };
    if policy.flags & FLAG_AUDIT_OPEN == 0 {
        return;
    }
    let Some(scratch) = SCRATCH_OPEN.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `scratch` is this CPU's slot of a per-CPU array; programs do
    // not nest on one CPU for these tracepoints. `path` is a user pointer
    // read through the faulting helper.
    unsafe {
        let ev = &mut *scratch;
        ev.ret = 0;
        ev.flags = flags;
        ev.mode = mode;
        ev.dirfd = dirfd;
        ev.call = call;
        ev.path[0] = 0;
        let _ = bpf_probe_read_user_str_bytes(path as *const u8, &mut ev.path);
        let _ = PENDING_OPEN.insert(&bpf_get_current_pid_tgid(), ev, 0);
    }
}

#[inline(always)]
fn finish(ctx: &TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING_OPEN.get_ptr(&id) else {
        return 0;
    };
    // SAFETY: the offset comes from this kernel's tracefs format file.
    let ret = unsafe { ctx.read_at::<i64>(OFF_SYS_EXIT_RET()) }.unwrap_or(0);
    let cgroup = match current_server() {
        Some((cgroup, _)) => cgroup,
        None => {
            let _ = PENDING_OPEN.remove(&id);
            return 0;
        }
    };
    emit_pending(
        kind::OPEN,
        cgroup,
        is_denial(ret),
        pending,
        |ev: &mut OpenEvent| ev.ret = ret,
    );
    let _ = PENDING_OPEN.remove(&id);
    0
}
