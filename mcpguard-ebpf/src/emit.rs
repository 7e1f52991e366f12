//! Ring-buffer helpers: header filling, wakeup batching, each server's
//! share of the buffer and loss counting.
//!
//! Records are submitted without a wakeup unless the buffer is filling up;
//! the daemon polls on a short timer. A wakeup per record costs more than the
//! rest of the audit path together (see EBPF-NOTES). Once the buffer is
//! mostly full, a server holding more than its share of it is shed
//! (`mcpguard_common::flow`), so a flooding server cannot crowd out the
//! others' records.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel_buf,
    },
};
use mcpguard_common::{
    event::{EventHeader, Record},
    flow::{Flow, DENY_SHED_FROM, SHARE, SHED_FROM},
    limits::RING_BYTES,
    policy::{ServerPolicy, FLAG_FILES_ALL, FLAG_FILES_CALLS},
};

use crate::maps::{CONSUMED, EVENTS, FLOW, IN_CALL, LOST, SERVERS};

/// The policy of the current task's cgroup, if it is a guarded server's
/// task. Servers never run as root: a uid-0 task in a server's cgroup is
/// the launcher setting it up (opening rule paths, building the mount
/// fence), which the audit leaves out. Verdicts do not use this.
#[inline(always)]
pub fn current_server() -> Option<(u64, ServerPolicy)> {
    if bpf_get_current_uid_gid() as u32 == 0 {
        return None;
    }
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
fn wakeup_flags() -> u64 {
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

/// This server's `FLOW` counters, created on its first record; null if
/// the map is full (the ring buffer alone decides then, losses counted).
#[inline(always)]
fn flow_of(cgroup: u64) -> *mut Flow {
    if let Some(p) = FLOW.get_ptr_mut(&cgroup) {
        return p;
    }
    // BPF_NOEXIST: another CPU may have created it meanwhile; keep theirs.
    let _ = FLOW.insert(&cgroup, &Flow::default(), BPF_NOEXIST as u64);
    FLOW.get_ptr_mut(&cgroup).unwrap_or(core::ptr::null_mut())
}

/// Adds `n` (wrapping) to a counter every CPU updates.
#[inline(always)]
fn add(counter: *mut u64, n: u64) {
    // SAFETY: `counter` points into a live map value; the atomic add is the
    // only way the programs write it, so concurrent CPUs do not lose counts.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, n) };
}

/// Whether the server may add a record now: not while the buffer is under
/// pressure and the server holds its share of it (see
/// `mcpguard_common::flow`). A shed record is counted. `deny`: the record
/// is of a refused action.
#[inline(always)]
fn admit(cgroup: u64, flow: *mut Flow, deny: bool) -> bool {
    if flow.is_null() {
        return true;
    }
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if pending < SHED_FROM || (deny && pending < DENY_SHED_FROM) {
        return true;
    }
    // SAFETY: copied out at once; a stale value only shifts when shedding
    // starts by one drain.
    let consumed = unsafe { CONSUMED.get(&cgroup) }.copied().unwrap_or(0);
    // SAFETY: `flow` points to a live map value; a torn read is impossible
    // for an aligned u64.
    let held = unsafe { (*flow).produced }.wrapping_sub(consumed);
    if held < SHARE {
        return true;
    }
    // SAFETY: as above; the fields are plain u64s inside the value.
    unsafe {
        if deny {
            add(core::ptr::addr_of_mut!((*flow).shed_deny), 1);
        } else {
            add(core::ptr::addr_of_mut!((*flow).shed_allow), 1);
        }
    }
    false
}

/// A reserved record, with what is needed to account for it.
pub struct Reserved<T: 'static> {
    entry: aya_ebpf::maps::ring_buf::RingBufEntry<Record<T>>,
    flow: *mut Flow,
}

impl<T: 'static> Reserved<T> {
    pub fn as_mut_ptr(&mut self) -> *mut Record<T> {
        self.entry.as_mut_ptr()
    }

    /// Hand the record to the daemon, counting its bytes against the server.
    pub fn submit(self) {
        if !self.flow.is_null() {
            // SAFETY: `flow` points to a live map value.
            add(
                unsafe { core::ptr::addr_of_mut!((*self.flow).produced) },
                core::mem::size_of::<Record<T>>() as u64,
            );
        }
        self.entry.submit(wakeup_flags());
    }

    /// Give the space back unused.
    pub fn discard(self) {
        self.entry.discard(0);
    }
}

/// Who a record is about: the current task, or (for packets, which
/// arrive in no task's context) only the socket owner's uid.
pub struct Task {
    pid_tgid: u64,
    uid_gid: u64,
    comm: [u8; 16],
}

impl Task {
    #[inline(always)]
    pub fn current() -> Task {
        Task {
            pid_tgid: bpf_get_current_pid_tgid(),
            uid_gid: bpf_get_current_uid_gid(),
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
        }
    }

    /// No task: pid, tid and comm are left empty.
    #[inline(always)]
    pub fn socket_owner(uid: u32) -> Task {
        Task {
            pid_tgid: 0,
            uid_gid: u64::from(uid),
            comm: [0; 16],
        }
    }
}

/// Reserve a record of type `T` and fill its header; `None` if the server
/// is over its share of the buffer (counted in `FLOW`) or the buffer is
/// full (counted in `LOST`). `deny`: the record is of a refused action.
#[inline(always)]
pub fn reserve<T: 'static>(kind: u32, cgroup: u64, deny: bool) -> Option<Reserved<T>> {
    reserve_for(kind, cgroup, deny, Task::current())
}

/// [`reserve`] for a record about `task`.
#[inline(always)]
pub fn reserve_for<T: 'static>(
    kind: u32,
    cgroup: u64,
    deny: bool,
    task: Task,
) -> Option<Reserved<T>> {
    let flow = flow_of(cgroup);
    if !admit(cgroup, flow, deny) {
        return None;
    }
    let Some(mut entry) = EVENTS.reserve::<Record<T>>(0) else {
        count_loss(cgroup);
        return None;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points to reserved ring-buffer memory large enough for
    // `Record<T>`; only the header is written here, the caller fills the
    // payload before submitting.
    unsafe {
        (*rec).header = EventHeader {
            kind,
            len: core::mem::size_of::<Record<T>>() as u32,
            ts_ns: bpf_ktime_get_boot_ns(),
            cgroup_id: cgroup,
            pid: (task.pid_tgid >> 32) as u32,
            tid: task.pid_tgid as u32,
            uid: task.uid_gid as u32,
            gid: (task.uid_gid >> 32) as u32,
            comm: task.comm,
        };
    }
    Some(Reserved { entry, flow })
}

/// Copy a payload stashed at syscall entry (a map value of type `T`) into
/// a new record of `kind`, let `fill` set what is only known now (the
/// result), and submit it; a failed copy discards the record.
#[inline(always)]
pub fn emit_pending<T: 'static>(
    kind: u32,
    cgroup: u64,
    deny: bool,
    pending: *const T,
    fill: impl FnOnce(&mut T),
) {
    let Some(mut entry) = reserve::<T>(kind, cgroup, deny) else {
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
            entry.submit();
        } else {
            entry.discard();
        }
    }
}

/// The audit level's rule, for every program that records allowed
/// activity (opens, links, renames, one-path calls, fork, exit): a record
/// that is kept at every level (`always`: a refusal, or a successful
/// `chdir`, which later relative paths are resolved by) is recorded;
/// anything else at `files = "all"`, or at `"calls"` while the daemon
/// counts a tool call in flight for `cgroup` (`IN_CALL`); at `"denied"`
/// never. Decided at syscall exit, where the result is known. Kinds that
/// are recorded at every level (exec, Unix-socket connects, watched
/// syscalls, attribute refusals, io_uring) do not ask.
#[inline(always)]
pub fn recorded(cgroup: u64, policy: &ServerPolicy, always: bool) -> bool {
    if always || policy.flags & FLAG_FILES_ALL != 0 {
        return true;
    }
    if policy.flags & FLAG_FILES_CALLS == 0 {
        return false;
    }
    // SAFETY: the count is copied out at once; the daemon writing it
    // concurrently only moves the edge of a call by one record.
    unsafe { IN_CALL.get(&cgroup) }.is_some_and(|n| *n > 0)
}

/// Whether a syscall result is a refusal: Landlock's `EACCES`, `EPERM`,
/// or `EROFS` from the read-only view outside the write grants.
#[inline(always)]
pub fn is_denial(ret: i64) -> bool {
    ret == -13 || ret == -1 || ret == -30
}
