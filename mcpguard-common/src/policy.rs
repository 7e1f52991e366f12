//! Map keys and values that carry compiled policy into the kernel.
//!
//! The daemon compiles a policy file into these entries; the kernel programs
//! only look them up. A cgroup with no [`ServerPolicy`] entry under the
//! mcpguard subtree is denied all egress (fail closed).

use crate::limits::PORT_RANGES;

/// `ServerPolicy::flags`: audit file opens of this server.
pub const FLAG_AUDIT_OPEN: u32 = 1 << 0;
/// `ServerPolicy::flags`: audit exec/fork/exit of this server.
pub const FLAG_AUDIT_PROC: u32 = 1 << 1;
/// `ServerPolicy::flags`: audit every egress decision (denials always are).
pub const FLAG_AUDIT_NET: u32 = 1 << 2;
/// `ServerPolicy::flags`: the server may create raw inet sockets.
pub const FLAG_SOCK_RAW: u32 = 1 << 3;
/// `ServerPolicy::flags`: the server may create ICMP (ping) sockets.
pub const FLAG_SOCK_ICMP: u32 = 1 << 4;
/// `ServerPolicy::flags`: learning (complain) mode: what would be denied
/// is allowed and recorded as `VERDICT_WOULD_DENY`.
pub const FLAG_COMPLAIN: u32 = 1 << 5;
/// `ServerPolicy::flags`: record allowed file activity (opens, links,
/// renames, mkdir, unlink, rmdir, chdir, failures that are not refusals)
/// and fork/exit at all times (`[audit] files = "all"`).
pub const FLAG_FILES_ALL: u32 = 1 << 6;
/// `ServerPolicy::flags`: record that activity only while the server's
/// `IN_CALL` count is above zero, i.e. a tool call is in flight
/// (`[audit] files = "calls"`). Neither this nor [`FLAG_FILES_ALL`]:
/// only refusals (`"denied"`). Refusals, execs, Unix-socket connects,
/// watched-syscall, attribute and io_uring records are kept at every level.
pub const FLAG_FILES_CALLS: u32 = 1 << 7;

/// `SYSCALL_AUDIT` values: which calls of a watched syscall are recorded.
pub mod syscall_audit {
    /// Every call.
    pub const ALWAYS: u32 = 1;
    /// Only calls that fail.
    pub const FAILURES: u32 = 2;
}

/// Where one watched attribute syscall keeps its arguments in its
/// `sys_enter` tracepoint record (byte offsets from the tracefs format
/// file; 0 = the call has no such argument), by syscall number in the
/// `ATTR_CALLS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttrArgs {
    /// The path (a user pointer).
    pub path_off: u16,
    /// The directory fd the path is relative to, or the fd acted on.
    pub fd_off: u16,
    /// The mode (`chmod`, `mknod`).
    pub mode_off: u16,
    /// A positive errno that, for this call, is a refusal too (besides
    /// `EACCES`, `EPERM` and `EROFS`): `EINVAL` for `ftruncate` on an fd
    /// not open for writing. 0: none.
    pub extra_errno: u16,
}

/// Per-server state, keyed by cgroup id in the `SERVERS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerPolicy {
    /// Daemon-assigned launch number, echoed in nothing the kernel writes
    /// but useful when dumping maps.
    pub launch_id: u64,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Loopback port of this server's resolver in the daemon (host order);
    /// every port-53 destination is redirected there. 0: no resolver, DNS
    /// is treated like any other destination.
    pub dns_port: u16,
    pub _pad: u16,
}

/// LPM-trie key data for `NET_ALLOW`: cgroup id first so a lookup can never
/// match another server's rule, then the IPv6 (or IPv4-mapped) address.
/// The trie's prefix length counts 64 bits of cgroup id plus address bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetKey {
    /// Big-endian cgroup id, so the trie compares it byte by byte.
    pub cgroup_be: [u8; 8],
    /// Address in network order; IPv4 as `::ffff:a.b.c.d`.
    pub addr: [u8; 16],
}

/// Prefix bits a full IPv4-mapped address adds above the cgroup id.
pub const V4_MAPPED_PREFIX_BITS: u32 = 96;
/// Bits of cgroup id at the start of every [`NetKey`].
pub const CGROUP_BITS: u32 = 64;

/// An inclusive range of destination ports (host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

/// The ports allowed for one prefix. User space folds the ports of every
/// shorter prefix that contains this one into it, because an LPM lookup
/// returns only the longest match.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSet {
    pub count: u32,
    pub ranges: [PortRange; PORT_RANGES],
}

impl PortSet {
    /// Whether `port` (host order) falls in one of the first `count` ranges.
    #[inline(always)]
    pub fn allows(&self, port: u16) -> bool {
        let mut i = 0;
        while i < PORT_RANGES {
            if i as u32 >= self.count {
                return false;
            }
            let r = self.ranges[i];
            if r.lo <= port && port <= r.hi {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// Where a redirected UDP DNS query was really sent, by socket cookie, so
/// the reply can come back from that address (clients that `sendto()` a
/// resolver check the reply's source).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsOrigin {
    /// Network order; IPv4 as `::ffff:a.b.c.d`.
    pub addr: [u8; 16],
    /// Host order.
    pub port: u16,
    pub _pad: [u8; 6],
}

const _: () = assert!(core::mem::size_of::<ServerPolicy>() == 16);
const _: () = assert!(core::mem::size_of::<AttrArgs>() == 8);
const _: () = assert!(core::mem::size_of::<DnsOrigin>() == 24);
const _: () = assert!(core::mem::size_of::<NetKey>() == 24);
const _: () = assert!(core::mem::size_of::<PortSet>() == 4 + 4 * PORT_RANGES);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is repr(C), has only integer fields and no padding
    // the kernel could leave uninitialised (sizes are asserted above).
    unsafe impl aya::Pod for super::ServerPolicy {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NetKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortSet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AttrArgs {}
}
