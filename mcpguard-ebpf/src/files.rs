//! File audit: `syscalls/sys_enter_*` and `sys_exit_*` tracepoints for
//! `openat`, `openat2`, `open` and `creat` (open records), and for `link`, `linkat`, `symlink`, `symlinkat`, `rename`,
//! `renameat` and `renameat2` (link and rename records); any kernel with
//! syscall tracepoints. One-path calls (`mkdir`, `unlink`, `rmdir`, `chdir`)
//! reuse the open slot and live in `paths.rs`.
//!
//! Entry stashes the paths as passed and the flags; exit pairs them with the
//! result and emits one record. The paths are read from the caller's memory
//! at entry, before the kernel copies them, so a second thread can make
//! them differ from what the kernel resolved: records say so
//! (`path_source`), and only the result is authoritative. These programs
//! never decide anything: Landlock enforces, and its denials show up here
//! as `-EACCES` (or `-EXDEV` for links and renames) results. Unguarded
//! tasks return after one map lookup.
//!
//! Whether a record is written follows the server's audit level
//! ([`crate::emit::recorded`]), decided at exit: refusals and successful
//! `chdir`s always, the rest at `all` or while a tool call is in flight.
//! When, at entry, only a refusal could be recorded (level `denied`, or
//! `calls` with no call in flight), entry keeps the path's pointer and
//! the arguments only ([`LateOpen`]); exit reads the path from the
//! caller's memory if the record is written after all (a refusal, a
//! `chdir`, or a call that started meanwhile), so the path copy is saved
//! for the calls that are not recorded. Links and renames, rare, always
//! copy at entry.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use mcpguard_common::{
    event::{kind, open_call, pair_call, OpenEvent, PathPairEvent},
    policy::FLAG_AUDIT_OPEN,
};

use crate::{
    emit::{current_server, emit_pending, is_denial, recorded},
    maps::{LateOpen, PENDING_LATE, PENDING_OPEN, PENDING_PAIR, SCRATCH_OPEN, SCRATCH_PAIR},
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
            0,
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
        let (flags, mode, resolve) = match how {
            Ok(h) => (h.flags as u32, h.mode as u32, h.resolve as u32),
            Err(_) => (0, 0, 0),
        };
        stash(open_call::OPENAT2, dfd as i32, path, flags, mode, resolve);
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
        stash(
            open_call::OPEN,
            AT_FDCWD,
            path,
            flags as u32,
            mode as u32,
            0,
        );
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
        stash(open_call::CREAT, AT_FDCWD, path, 0o1101, mode as u32, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    finish(&ctx, |_| kind::OPEN)
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat2")]
pub fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    finish(&ctx, |_| kind::OPEN)
}

#[tracepoint(category = "syscalls", name = "sys_exit_open")]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    finish(&ctx, |_| kind::OPEN)
}

#[tracepoint(category = "syscalls", name = "sys_exit_creat")]
pub fn sys_exit_creat(ctx: TracePointContext) -> u32 {
    finish(&ctx, |_| kind::OPEN)
}

pub(crate) const AT_FDCWD: i32 = -100;
const EXDEV: i64 = 18;

#[inline(always)]
pub(crate) fn stash(call: u32, dirfd: i32, path: u64, flags: u32, mode: u32, resolve: u32) {
    let Some((cgroup, policy)) = current_server() else {
        return;
    };
    if policy.flags & FLAG_AUDIT_OPEN == 0 {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    if !recorded(cgroup, &policy, false) {
        let late = LateOpen {
            path,
            flags,
            mode,
            dirfd,
            call,
            resolve,
            _pad: 0,
        };
        // A leftover of a call whose exit never ran must not be taken
        // for this one's.
        let _ = PENDING_OPEN.remove(&id);
        let _ = PENDING_LATE.insert(&id, &late, 0);
        return;
    }
    let _ = PENDING_LATE.remove(&id);
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
        ev.resolve = resolve;
        ev._pad = 0;
        ev.path[0] = 0;
        if path != 0 {
            let _ = bpf_probe_read_user_str_bytes(path as *const u8, &mut ev.path);
        }
        let _ = PENDING_OPEN.insert(&id, ev, 0);
    }
}

/// Whether a one-path call's record is kept at every level: a refusal,
/// or a successful `chdir` (later relative paths are resolved by it).
#[inline(always)]
fn kept_always(kind: u32, ret: i64) -> bool {
    is_denial(ret) || (kind == kind::CHDIR && ret == 0)
}

/// Emit the stashed call with its result, as the record kind `kind_of`
/// picks from the stashed call.
#[inline(always)]
pub(crate) fn finish(ctx: &TracePointContext, kind_of: impl Fn(&OpenEvent) -> u32) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING_OPEN.get_ptr(&id) else {
        return finish_late(ctx, id, kind_of, |_, _| false);
    };
    // SAFETY: `pending` is a live value of this thread's own map entry.
    let kind = kind_of(unsafe { &*pending });
    // SAFETY: the offset comes from this kernel's tracefs format file.
    let ret = unsafe { ctx.read_at::<i64>(OFF_SYS_EXIT_RET()) }.unwrap_or(0);
    if let Some((cgroup, policy)) = current_server() {
        let deny = is_denial(ret);
        if recorded(cgroup, &policy, kept_always(kind, ret)) {
            emit_pending(kind, cgroup, deny, pending, |ev: &mut OpenEvent| {
                ev.ret = ret
            });
        }
    }
    let _ = PENDING_OPEN.remove(&id);
    0
}

/// [`finish`] for a call stashed without its path ([`LateOpen`]): the
/// record is built in this CPU's scratch slot, its path read now from
/// the caller's memory, only if it is written. `also_refused(call, ret)`
/// names results beyond [`is_denial`] that count as refusals (an
/// attribute call's own extra errno).
#[inline(always)]
pub(crate) fn finish_late(
    ctx: &TracePointContext,
    id: u64,
    kind_of: impl Fn(&OpenEvent) -> u32,
    also_refused: impl Fn(u32, i64) -> bool,
) -> u32 {
    // SAFETY: copied out at once; only this thread writes its entry.
    let Some(late) = unsafe { PENDING_LATE.get(&id) }.copied() else {
        return 0;
    };
    let _ = PENDING_LATE.remove(&id);
    let Some((cgroup, policy)) = current_server() else {
        return 0;
    };
    let Some(scratch) = SCRATCH_OPEN.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the offset comes from this kernel's tracefs format file.
    let ret = unsafe { ctx.read_at::<i64>(OFF_SYS_EXIT_RET()) }.unwrap_or(0);
    // SAFETY: `scratch` is this CPU's slot of a per-CPU array; programs do
    // not nest on one CPU for these tracepoints. `late.path` is a user
    // pointer read through the faulting helper.
    unsafe {
        let ev = &mut *scratch;
        ev.ret = ret;
        ev.flags = late.flags;
        ev.mode = late.mode;
        ev.dirfd = late.dirfd;
        ev.call = late.call;
        ev.resolve = late.resolve;
        ev._pad = 0;
        ev.path[0] = 0;
        let kind = kind_of(ev);
        let refused = is_denial(ret) || also_refused(late.call, ret);
        if !recorded(cgroup, &policy, refused || kept_always(kind, ret)) {
            return 0;
        }
        if late.path != 0 {
            let _ = bpf_probe_read_user_str_bytes(late.path as *const u8, &mut ev.path);
        }
        emit_pending(kind, cgroup, refused, scratch, |_| {});
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_link")]
pub fn sys_enter_link(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    let args = unsafe {
        (
            ctx.read_at::<u64>(OFF_LINK_OLDNAME()),
            ctx.read_at::<u64>(OFF_LINK_NEWNAME()),
        )
    };
    if let (Ok(old), Ok(new)) = args {
        stash_pair(pair_call::LINK, AT_FDCWD, old, AT_FDCWD, new, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_linkat")]
pub fn sys_enter_linkat(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    let args = unsafe {
        (
            ctx.read_at::<i64>(OFF_LINKAT_OLDDFD()),
            ctx.read_at::<u64>(OFF_LINKAT_OLDNAME()),
            ctx.read_at::<i64>(OFF_LINKAT_NEWDFD()),
            ctx.read_at::<u64>(OFF_LINKAT_NEWNAME()),
            ctx.read_at::<u64>(OFF_LINKAT_FLAGS()),
        )
    };
    if let (Ok(odfd), Ok(old), Ok(ndfd), Ok(new), Ok(flags)) = args {
        stash_pair(
            pair_call::LINKAT,
            odfd as i32,
            old,
            ndfd as i32,
            new,
            flags as u32,
        );
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_symlink")]
pub fn sys_enter_symlink(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    let args = unsafe {
        (
            ctx.read_at::<u64>(OFF_SYMLINK_OLDNAME()),
            ctx.read_at::<u64>(OFF_SYMLINK_NEWNAME()),
        )
    };
    if let (Ok(old), Ok(new)) = args {
        stash_pair(pair_call::SYMLINK, AT_FDCWD, old, AT_FDCWD, new, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_symlinkat")]
pub fn sys_enter_symlinkat(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    let args = unsafe {
        (
            ctx.read_at::<u64>(OFF_SYMLINKAT_OLDNAME()),
            ctx.read_at::<i64>(OFF_SYMLINKAT_NEWDFD()),
            ctx.read_at::<u64>(OFF_SYMLINKAT_NEWNAME()),
        )
    };
    if let (Ok(old), Ok(ndfd), Ok(new)) = args {
        // The target is stored as given, never resolved: no dirfd.
        stash_pair(pair_call::SYMLINKAT, AT_FDCWD, old, ndfd as i32, new, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_rename")]
pub fn sys_enter_rename(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    let args = unsafe {
        (
            ctx.read_at::<u64>(OFF_RENAME_OLDNAME()),
            ctx.read_at::<u64>(OFF_RENAME_NEWNAME()),
        )
    };
    if let (Ok(old), Ok(new)) = args {
        stash_pair(pair_call::RENAME, AT_FDCWD, old, AT_FDCWD, new, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_renameat")]
pub fn sys_enter_renameat(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    let args = unsafe {
        (
            ctx.read_at::<i64>(OFF_RENAMEAT_OLDDFD()),
            ctx.read_at::<u64>(OFF_RENAMEAT_OLDNAME()),
            ctx.read_at::<i64>(OFF_RENAMEAT_NEWDFD()),
            ctx.read_at::<u64>(OFF_RENAMEAT_NEWNAME()),
        )
    };
    if let (Ok(odfd), Ok(old), Ok(ndfd), Ok(new)) = args {
        stash_pair(pair_call::RENAMEAT, odfd as i32, old, ndfd as i32, new, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_renameat2")]
pub fn sys_enter_renameat2(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    let args = unsafe {
        (
            ctx.read_at::<i64>(OFF_RENAMEAT2_OLDDFD()),
            ctx.read_at::<u64>(OFF_RENAMEAT2_OLDNAME()),
            ctx.read_at::<i64>(OFF_RENAMEAT2_NEWDFD()),
            ctx.read_at::<u64>(OFF_RENAMEAT2_NEWNAME()),
            ctx.read_at::<u64>(OFF_RENAMEAT2_FLAGS()),
        )
    };
    if let (Ok(odfd), Ok(old), Ok(ndfd), Ok(new), Ok(flags)) = args {
        stash_pair(
            pair_call::RENAMEAT2,
            odfd as i32,
            old,
            ndfd as i32,
            new,
            flags as u32,
        );
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_link")]
pub fn sys_exit_link(ctx: TracePointContext) -> u32 {
    finish_pair(&ctx, kind::LINK)
}

#[tracepoint(category = "syscalls", name = "sys_exit_linkat")]
pub fn sys_exit_linkat(ctx: TracePointContext) -> u32 {
    finish_pair(&ctx, kind::LINK)
}

#[tracepoint(category = "syscalls", name = "sys_exit_symlink")]
pub fn sys_exit_symlink(ctx: TracePointContext) -> u32 {
    finish_pair(&ctx, kind::LINK)
}

#[tracepoint(category = "syscalls", name = "sys_exit_symlinkat")]
pub fn sys_exit_symlinkat(ctx: TracePointContext) -> u32 {
    finish_pair(&ctx, kind::LINK)
}

#[tracepoint(category = "syscalls", name = "sys_exit_rename")]
pub fn sys_exit_rename(ctx: TracePointContext) -> u32 {
    finish_pair(&ctx, kind::RENAME)
}

#[tracepoint(category = "syscalls", name = "sys_exit_renameat")]
pub fn sys_exit_renameat(ctx: TracePointContext) -> u32 {
    finish_pair(&ctx, kind::RENAME)
}

#[tracepoint(category = "syscalls", name = "sys_exit_renameat2")]
pub fn sys_exit_renameat2(ctx: TracePointContext) -> u32 {
    finish_pair(&ctx, kind::RENAME)
}

#[inline(always)]
fn stash_pair(call: u32, old_dirfd: i32, old: u64, new_dirfd: i32, new: u64, flags: u32) {
    let Some((_, policy)) = current_server() else {
        return;
    };
    if policy.flags & FLAG_AUDIT_OPEN == 0 {
        return;
    }
    let Some(scratch) = SCRATCH_PAIR.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `scratch` is this CPU's slot of a per-CPU array; programs do
    // not nest on one CPU for these tracepoints. The paths are user
    // pointers read through the faulting helper.
    unsafe {
        let ev = &mut *scratch;
        ev.ret = 0;
        ev.call = call;
        ev.flags = flags;
        ev.old_dirfd = old_dirfd;
        ev.new_dirfd = new_dirfd;
        ev.old_path[0] = 0;
        ev.new_path[0] = 0;
        let _ = bpf_probe_read_user_str_bytes(old as *const u8, &mut ev.old_path);
        let _ = bpf_probe_read_user_str_bytes(new as *const u8, &mut ev.new_path);
        let _ = PENDING_PAIR.insert(&bpf_get_current_pid_tgid(), ev, 0);
    }
}

#[inline(always)]
fn finish_pair(ctx: &TracePointContext, kind: u32) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING_PAIR.get_ptr(&id) else {
        return 0;
    };
    // SAFETY: the offset comes from this kernel's tracefs format file.
    let ret = unsafe { ctx.read_at::<i64>(OFF_SYS_EXIT_RET()) }.unwrap_or(0);
    if let Some((cgroup, policy)) = current_server() {
        // Landlock's REFER refusal is EXDEV.
        let deny = is_denial(ret) || ret == -EXDEV;
        if recorded(cgroup, &policy, deny) {
            emit_pending(kind, cgroup, deny, pending, |ev: &mut PathPairEvent| {
                ev.ret = ret
            });
        }
    }
    let _ = PENDING_PAIR.remove(&id);
    0
}
