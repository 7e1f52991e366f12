//! One-path file audit: `syscalls/sys_enter_*` and `sys_exit_*` tracepoints
//! for `mkdir`, `mkdirat` (mkdir records), `unlink`, `unlinkat` (unlink, or
//! rmdir with `AT_REMOVEDIR`), `rmdir` (rmdir records) and `chdir` (chdir
//! records, so relative paths in later records can be resolved); any
//! kernel with syscall tracepoints.
//!
//! Same scheme as opens (`files.rs`), through the same per-thread slot:
//! entry stashes the path as passed, exit emits it with the result. The
//! path is the caller's memory at entry ([`path_source::USER`]); only the
//! result is authoritative. Landlock's refusals show as `-EACCES`; these
//! programs never decide anything.
//!
//! [`path_source::USER`]: mcpguard_common::event::path_source::USER

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use mcpguard_common::event::{kind, path_call, AT_REMOVEDIR};

use crate::{
    files::{finish, stash, AT_FDCWD},
    offsets::*,
};

#[tracepoint(category = "syscalls", name = "sys_enter_mkdir")]
pub fn sys_enter_mkdir(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    let args = unsafe {
        (
            ctx.read_at::<u64>(OFF_MKDIR_PATHNAME()),
            ctx.read_at::<u64>(OFF_MKDIR_MODE()),
        )
    };
    if let (Ok(path), Ok(mode)) = args {
        stash(path_call::MKDIR, AT_FDCWD, path, 0, mode as u32, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_mkdirat")]
pub fn sys_enter_mkdirat(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    let args = unsafe {
        (
            ctx.read_at::<i64>(OFF_MKDIRAT_DFD()),
            ctx.read_at::<u64>(OFF_MKDIRAT_PATHNAME()),
            ctx.read_at::<u64>(OFF_MKDIRAT_MODE()),
        )
    };
    if let (Ok(dfd), Ok(path), Ok(mode)) = args {
        stash(path_call::MKDIRAT, dfd as i32, path, 0, mode as u32, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_unlink")]
pub fn sys_enter_unlink(ctx: TracePointContext) -> u32 {
    // SAFETY: the offset comes from this kernel's tracefs format file.
    if let Ok(path) = unsafe { ctx.read_at::<u64>(OFF_UNLINK_PATHNAME()) } {
        stash(path_call::UNLINK, AT_FDCWD, path, 0, 0, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_unlinkat")]
pub fn sys_enter_unlinkat(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    let args = unsafe {
        (
            ctx.read_at::<i64>(OFF_UNLINKAT_DFD()),
            ctx.read_at::<u64>(OFF_UNLINKAT_PATHNAME()),
            ctx.read_at::<i64>(OFF_UNLINKAT_FLAG()),
        )
    };
    if let (Ok(dfd), Ok(path), Ok(flag)) = args {
        stash(path_call::UNLINKAT, dfd as i32, path, flag as u32, 0, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_rmdir")]
pub fn sys_enter_rmdir(ctx: TracePointContext) -> u32 {
    // SAFETY: the offset comes from this kernel's tracefs format file.
    if let Ok(path) = unsafe { ctx.read_at::<u64>(OFF_RMDIR_PATHNAME()) } {
        stash(path_call::RMDIR, AT_FDCWD, path, 0, 0, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_chdir")]
pub fn sys_enter_chdir(ctx: TracePointContext) -> u32 {
    // SAFETY: the offset comes from this kernel's tracefs format file.
    if let Ok(path) = unsafe { ctx.read_at::<u64>(OFF_CHDIR_FILENAME()) } {
        stash(path_call::CHDIR, AT_FDCWD, path, 0, 0, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_mkdir")]
pub fn sys_exit_mkdir(ctx: TracePointContext) -> u32 {
    finish(&ctx, |_| kind::MKDIR)
}

#[tracepoint(category = "syscalls", name = "sys_exit_mkdirat")]
pub fn sys_exit_mkdirat(ctx: TracePointContext) -> u32 {
    finish(&ctx, |_| kind::MKDIR)
}

#[tracepoint(category = "syscalls", name = "sys_exit_unlink")]
pub fn sys_exit_unlink(ctx: TracePointContext) -> u32 {
    finish(&ctx, |_| kind::UNLINK)
}

#[tracepoint(category = "syscalls", name = "sys_exit_unlinkat")]
pub fn sys_exit_unlinkat(ctx: TracePointContext) -> u32 {
    finish(&ctx, |ev| {
        if ev.flags & AT_REMOVEDIR != 0 {
            kind::RMDIR
        } else {
            kind::UNLINK
        }
    })
}

#[tracepoint(category = "syscalls", name = "sys_exit_rmdir")]
pub fn sys_exit_rmdir(ctx: TracePointContext) -> u32 {
    finish(&ctx, |_| kind::RMDIR)
}

#[tracepoint(category = "syscalls", name = "sys_exit_chdir")]
pub fn sys_exit_chdir(ctx: TracePointContext) -> u32 {
    finish(&ctx, |_| kind::CHDIR)
}
