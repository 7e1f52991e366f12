//! Process audit: exec (with argv head and result), fork and exit.
//!
//! Hooks: `syscalls/sys_enter_execve[at]` stash the path and argv as passed,
//! `sched/sched_process_exec` reports a successful exec with the kernel's
//! own copy of the filename (the caller's memory may have been rewritten by
//! another thread since entry), `sys_exit_execve[at]` a failed one
//! (Landlock's `-EACCES` included) with the path as the caller passed it;
//! `sched/sched_process_fork` and `sched/sched_process_exit` (thread-group
//! leaders only). Audit only; no verdicts. Execs are recorded at every
//! audit level; fork and exit follow the level ([`crate::emit::recorded`]).

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes,
    },
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext,
};
use mcpguard_common::{
    event::{kind, path_source, ExecEvent, ExitEvent, ForkEvent},
    limits::ARGV_SLOTS,
    policy::FLAG_AUDIT_PROC,
};

use crate::{
    emit::{current_server, emit_pending, is_denial, recorded, reserve},
    maps::{PENDING_EXEC, SCRATCH_EXEC},
    offsets::*,
};

#[tracepoint(category = "syscalls", name = "sys_enter_execve")]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    let args = unsafe {
        (
            ctx.read_at::<u64>(OFF_EXECVE_FILENAME()),
            ctx.read_at::<u64>(OFF_EXECVE_ARGV()),
        )
    };
    if let (Ok(path), Ok(argv)) = args {
        stash(path, argv);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_execveat")]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    let args = unsafe {
        (
            ctx.read_at::<u64>(OFF_EXECVEAT_FILENAME()),
            ctx.read_at::<u64>(OFF_EXECVEAT_ARGV()),
        )
    };
    if let (Ok(path), Ok(argv)) = args {
        stash(path, argv);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_execve")]
pub fn sys_exit_execve(ctx: TracePointContext) -> u32 {
    exec_failed(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_execveat")]
pub fn sys_exit_execveat(ctx: TracePointContext) -> u32 {
    exec_failed(&ctx)
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    // The exec'ing thread may have taken over the leader's tid (de_thread),
    // so the pending entry is found through the tid it had before.
    // SAFETY: offsets come from this kernel's tracefs format file.
    let (Ok(old_tid), Ok(loc)) = (unsafe {
        (
            ctx.read_at::<u32>(OFF_SCHED_EXEC_OLD_PID()),
            ctx.read_at::<u32>(OFF_SCHED_EXEC_FILENAME()),
        )
    }) else {
        return 0;
    };
    // A `__data_loc` field: the low 16 bits are the string's offset in
    // the record.
    let filename = (ctx.as_ptr() as *const u8).wrapping_add((loc & 0xffff) as usize);
    let tgid = bpf_get_current_pid_tgid() >> 32;
    emit_exec(((tgid) << 32) | old_tid as u64, 0, Some(filename));
    0
}

#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let Some((cgroup, policy)) = current_server() else {
        return 0;
    };
    if policy.flags & FLAG_AUDIT_PROC == 0 || !recorded(cgroup, &policy, false) {
        return 0;
    }
    // SAFETY: offsets come from this kernel's tracefs format file.
    let pids = unsafe {
        (
            ctx.read_at::<u32>(OFF_SCHED_FORK_PARENT_PID()),
            ctx.read_at::<u32>(OFF_SCHED_FORK_CHILD_PID()),
        )
    };
    if let (Ok(parent_pid), Ok(child_pid)) = pids {
        if let Some(mut entry) = reserve::<ForkEvent>(kind::FORK, cgroup, false) {
            // SAFETY: reserved ring-buffer memory for this record.
            unsafe {
                (*entry.as_mut_ptr()).payload = ForkEvent {
                    parent_pid,
                    child_pid,
                };
            }
            entry.submit();
        }
    }
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if (id >> 32) as u32 != id as u32 {
        return 0; // a thread, not the process
    }
    let Some((cgroup, policy)) = current_server() else {
        return 0;
    };
    if policy.flags & FLAG_AUDIT_PROC == 0 || !recorded(cgroup, &policy, false) {
        return 0;
    }
    if let Some(mut entry) = reserve::<ExitEvent>(kind::EXIT, cgroup, false) {
        // SAFETY: reserved ring-buffer memory for this record.
        unsafe {
            (*entry.as_mut_ptr()).payload = ExitEvent { _reserved: 0 };
        }
        entry.submit();
    }
    0
}

#[inline(always)]
fn stash(path: u64, argv: u64) {
    let Some((_, policy)) = current_server() else {
        return;
    };
    if policy.flags & FLAG_AUDIT_PROC == 0 {
        return;
    }
    let Some(scratch) = SCRATCH_EXEC.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `scratch` is this CPU's slot of a per-CPU array; user pointers
    // are read through the faulting helpers.
    unsafe {
        let ev = &mut *scratch;
        ev.ret = 0;
        ev.argc = 0;
        ev.filename_source = path_source::USER;
        ev._pad = 0;
        ev.filename[0] = 0;
        let _ = bpf_probe_read_user_str_bytes(path as *const u8, &mut ev.filename);
        let argv = argv as *const u64;
        let mut i = 0;
        while i < ARGV_SLOTS {
            let Ok(arg) = bpf_probe_read_user(argv.add(i)) else {
                break;
            };
            if arg == 0 {
                break;
            }
            let Some(slot) = ev.argv.get_mut(i) else {
                break;
            };
            slot[0] = 0;
            let _ = bpf_probe_read_user_str_bytes(arg as *const u8, slot);
            ev.argc = (i + 1) as u32;
            i += 1;
        }
        let _ = PENDING_EXEC.insert(&bpf_get_current_pid_tgid(), ev, 0);
    }
}

#[inline(always)]
fn exec_failed(ctx: &TracePointContext) -> u32 {
    // SAFETY: the offset comes from this kernel's tracefs format file.
    let ret = unsafe { ctx.read_at::<i64>(OFF_SYS_EXIT_RET()) }.unwrap_or(0);
    let id = bpf_get_current_pid_tgid();
    if ret < 0 {
        emit_exec(id, ret as i32, None);
    } else {
        let _ = PENDING_EXEC.remove(&id);
    }
    0
}

/// Emit the pending exec of `id`; `kernel_filename` (the tracepoint's copy)
/// replaces the path read from the caller's memory when there is one.
#[inline(always)]
fn emit_exec(id: u64, ret: i32, kernel_filename: Option<*const u8>) {
    let Some(pending) = PENDING_EXEC.get_ptr(&id) else {
        return;
    };
    if let Some((cgroup, _)) = current_server() {
        emit_pending(
            kind::EXEC,
            cgroup,
            is_denial(i64::from(ret)),
            pending,
            |ev: &mut ExecEvent| {
                ev.ret = ret;
                if let Some(src) = kernel_filename {
                    // SAFETY: `src` points into this tracepoint's record, which
                    // the faulting helper reads; on failure it zeroes the buffer
                    // and the record keeps no path rather than a wrong claim.
                    if unsafe { bpf_probe_read_kernel_str_bytes(src, &mut ev.filename) }.is_ok() {
                        ev.filename_source = path_source::KERNEL;
                    }
                }
            },
        );
    }
    let _ = PENDING_EXEC.remove(&id);
}
