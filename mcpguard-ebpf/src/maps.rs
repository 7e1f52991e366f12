//! Every map the programs share with the daemon.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use mcpguard_common::{
    event::{ExecEvent, OpenEvent, PathPairEvent, UnixConnectEvent},
    flow::Flow,
    limits::{
        MAX_ATTR_CALLS, MAX_INFLIGHT, MAX_NET_RULES, MAX_SERVERS, MAX_WATCHED_SYSCALLS, RING_BYTES,
    },
    policy::{AttrArgs, DnsOrigin, NetKey, PortSet, ServerPolicy},
};

/// Guarded cgroups: cgroup id → policy flags. Written by the daemon before a
/// server's first process joins the cgroup.
#[map]
pub static SERVERS: HashMap<u64, ServerPolicy> = HashMap::with_max_entries(MAX_SERVERS, 0);

/// Tool calls in flight, by cgroup id (no entry: none). Written by the
/// daemon only, before it forwards a `tools/call` and after the answer;
/// read by the audit programs of servers at `[audit] files = "calls"`.
#[map]
pub static IN_CALL: HashMap<u64, u32> = HashMap::with_max_entries(MAX_SERVERS, 0);

/// Egress allow-list: (cgroup id, address prefix) → allowed ports.
#[map]
pub static NET_ALLOW: LpmTrie<NetKey, PortSet> = LpmTrie::with_max_entries(MAX_NET_RULES, 0);

/// Audit records for the daemon.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Records that did not fit in `EVENTS`, per cgroup id and CPU. The daemon
/// sums the CPUs and turns increments into `loss` records.
#[map]
pub static LOST: PerCpuHashMap<u64, u64> = PerCpuHashMap::with_max_entries(MAX_SERVERS, 0);

/// Each server's ring-buffer bytes and shed counts, by cgroup id (see
/// `mcpguard_common::flow`). Created by the programs on a server's first
/// record; the daemon deletes the entry when the server is gone.
#[map]
pub static FLOW: HashMap<u64, Flow> = HashMap::with_max_entries(MAX_SERVERS, 0);

/// Bytes of each server's records the daemon has read, by cgroup id.
/// Written by the daemon only.
#[map]
pub static CONSUMED: HashMap<u64, u64> = HashMap::with_max_entries(MAX_SERVERS, 0);

/// Opens between syscall entry and exit, keyed by pid_tgid.
#[map]
pub static PENDING_OPEN: HashMap<u64, OpenEvent> = HashMap::with_max_entries(MAX_INFLIGHT, 0);

/// Execs between syscall entry and the new image (or failure), keyed by
/// pid_tgid of the calling thread.
#[map]
pub static PENDING_EXEC: HashMap<u64, ExecEvent> = HashMap::with_max_entries(MAX_INFLIGHT, 0);

/// An open-like call stashed without its path: one whose record, when
/// it was made, could only be written if it were refused (the server's
/// audit level leaves its allowed activity out then). The path is read
/// at exit, and only if the record is written.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LateOpen {
    /// The path's user pointer.
    pub path: u64,
    pub flags: u32,
    pub mode: u32,
    pub dirfd: i32,
    pub call: u32,
    pub resolve: u32,
    pub _pad: u32,
}

/// Opens (and one-path calls) between syscall entry and exit whose path
/// is read only at exit ([`LateOpen`]), keyed by pid_tgid. An entry of a
/// thread is in this map or in `PENDING_OPEN`, never both.
#[map]
pub static PENDING_LATE: HashMap<u64, LateOpen> = HashMap::with_max_entries(MAX_INFLIGHT, 0);

/// Links and renames between syscall entry and exit, keyed by pid_tgid.
/// Smaller than the other in-flight maps: these calls are rare, and each
/// entry (two paths) is preallocated.
#[map]
pub static PENDING_PAIR: HashMap<u64, PathPairEvent> =
    HashMap::with_max_entries(MAX_INFLIGHT / 8, 0);

/// Per-CPU scratch space: these payloads do not fit on the 512-byte stack.
#[map]
pub static SCRATCH_OPEN: PerCpuArray<OpenEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static SCRATCH_EXEC: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static SCRATCH_PAIR: PerCpuArray<PathPairEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static SCRATCH_UNIX: PerCpuArray<UnixConnectEvent> = PerCpuArray::with_max_entries(1, 0);

/// Unix-socket connects between syscall entry and exit, keyed by pid_tgid.
#[map]
pub static PENDING_UNIX: HashMap<u64, UnixConnectEvent> =
    HashMap::with_max_entries(MAX_INFLIGHT, 0);

/// The real destination of redirected UDP DNS queries, by socket cookie
/// (LRU: a socket that goes away needs no cleanup).
#[map]
pub static DNS_ORIGIN: LruHashMap<u64, DnsOrigin> = LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

/// Watched syscalls: number → `syscall_audit` mode. Filled by the daemon
/// from the seccomp fence's table before the programs attach.
#[map]
pub static SYSCALL_AUDIT: HashMap<u32, u32> = HashMap::with_max_entries(MAX_WATCHED_SYSCALLS, 0);

/// Watched attribute syscalls: number → where their arguments are. Filled
/// by the daemon from tracefs format files before the programs attach.
#[map]
pub static ATTR_CALLS: HashMap<u32, AttrArgs> = HashMap::with_max_entries(MAX_ATTR_CALLS, 0);

/// The ports each server may bind and accept on (`[network] bind`), by
/// cgroup id. No entry: none.
#[map]
pub static BIND_PORTS: HashMap<u64, PortSet> = HashMap::with_max_entries(MAX_SERVERS, 0);

/// When an inbound drop was last recorded, by (cgroup id, local port,
/// protocol): at most one record per second each (LRU: no cleanup).
#[map]
pub static INBOUND_NOTED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(MAX_INFLIGHT, 0);
