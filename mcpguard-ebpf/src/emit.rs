//! Ring-buffer helpers: header filling, wakeup batching and loss counting.
//!
//! Records are submitted without a wakeup unless the buffer is filling up;
//! the daemon polls on a short timer. A wakeup per record costs more than the
//! rest of the audit path together (see EBPF-NOTES).

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel_buf,
    },
};
use mcpguard_common::{
    event::{EventHeader, Record},
    limits::RING_BYTES,
    policy::ServerPolicy,
};

use crate::maps::{EVENTS, LOST, SERVERS};

/// The policy of the current task's cgroup, if it is a guarded server.
#[inline(always)]
pub fn current_server() -> Option<(u64, ServerPolicy)> {
    // SAFETY: no helper arguments; always valid in these program types.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is copied out at once; a concurrent delete can only
    // make us read a stale policy for one event.
    let policy = unsafe { SERVERS.get(&cgroup) }.copied()?;
    Some((cgroup, policy))
}

/// Flags for a submit: wake the reader only once an eighth of the buffer is
/// pending, so a busy server costs one wakeup per batch, not per record.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= (RING_BYTES / 8) as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Count a record that did not fit, against its cgroup.
#[inline(always)]
pub fn count_loss(cgroup: u64) {
    match LOST.get_ptr_mut(&cgroup) {
        Some(p) => {
            // SAFETY: `p` points to this CPU's u64 in a per-CPU map; no other
            // program writes it concurrently.
            unsafe { *p += 1 };
        }
        None => {
            // A lost insert (map full) is itself unreportable; the daemon
            // pre-creates the entry for every server so this is rare.
            let _ = LOST.insert(&cgroup, &1, 0);
        }
    }
}

/// Reserve a record of type `T` and fill its header, or count a loss.
#[inline(always)]
pub fn reserve<T: 'static>(
    kind: u32,
    cgroup: u64,
) -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<Record<T>>> {
    let Some(mut entry) = EVENTS.reserve::<Record<T>>(0) else {
        count_loss(cgroup);
        return None;
    };
    let rec = entry.as_mut_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    // SAFETY: `rec` points to reserved ring-buffer memory large enough for
    // `Record<T>`; only the header is written here, the caller fills the
    // payload before submitting.
    unsafe {
        (*rec).header = EventHeader {
            kind,
            len: core::mem::size_of::<Record<T>>() as u32,
            ts_ns: bpf_ktime_get_boot_ns(),
            cgroup_id: cgroup,
            pid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            uid: uid_gid as u32,
            gid: (uid_gid >> 32) as u32,
            comm,
        };
    }
    Some(entry)
}

/// Copy a payload stashed at syscall entry (a map value of type `T`) into
/// a new record of `kind`, let `fill` set what is only known now (the
/// result), and submit it; a failed copy discards the record.
#[inline(always)]
pub fn emit_pending<T: 'static>(
    kind: u32,
    cgroup: u64,
    pending: *const T,
    fill: impl FnOnce(&mut T),
) {
    let Some(mut entry) = reserve::<T>(kind, cgroup) else {
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` is reserved ring-buffer memory for a `Record<T>` and
    // `pending` a live map value of type `T`; the helper copies the bytes
    // without the compiler emitting a memcpy call.
    unsafe {
        let dst = core::slice::from_raw_parts_mut(
            core::ptr::addr_of_mut!((*rec).payload).cast::<u8>(),
            core::mem::size_of::<T>(),
        );
        if bpf_probe_read_kernel_buf(pending.cast::<u8>(), dst).is_ok() {
            fill(&mut (*rec).payload);
            entry.submit(wakeup_flags());
        } else {
            entry.discard(0);
        }
    }
}
