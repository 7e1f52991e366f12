//! Egress verdicts: cgroup `sock_addr` hooks `connect4`, `connect6`,
//! `sendmsg4`, `sendmsg6` (kernel 4.17+/4.18+), and the cgroup
//! `sock_create` fence for raw and ICMP sockets (4.10+).
//!
//! Attached to the mcpguard cgroup subtree, so they see only guarded
//! servers. Verdict: 1 lets the call proceed, 0 fails it with EPERM. A cgroup
//! with no `SERVERS` entry is denied everything (fail closed). IPv4 and
//! IPv4-mapped IPv6 destinations are looked up the same way (`::ffff:a.b.c.d`),
//! so the mapped form cannot sidestep an IPv4 rule.
//!
//! DNS: any destination port 53 (TCP or UDP, any address) of a server with
//! a resolver is rewritten to that server's resolver in the daemon
//! (`127.0.0.1` or `::1`, port `dns_port`), which answers only the names
//! the policy allows and adds their addresses to `NET_ALLOW`.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_socket_cookie},
    macros::{cgroup_sock, cgroup_sock_addr},
    maps::lpm_trie::Key,
    programs::{SockAddrContext, SockContext},
};
use mcpguard_common::{
    event::{
        kind, net_op, ConnectEvent, SocketEvent, VERDICT_ALLOW, VERDICT_DENY, VERDICT_WOULD_DENY,
    },
    policy::{
        DnsOrigin, NetKey, CGROUP_BITS, FLAG_AUDIT_NET, FLAG_COMPLAIN, FLAG_SOCK_ICMP,
        FLAG_SOCK_RAW,
    },
};

use crate::{
    emit::{reserve, reserve_for, Task},
    maps::{DNS_ORIGIN, NET_ALLOW, SERVERS},
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

/// The recorded verdict: learning mode turns a denial into "would deny".
#[inline(always)]
pub(crate) fn verdict(allowed: bool, complain: bool) -> u32 {
    if allowed {
        VERDICT_ALLOW
    } else if complain {
        VERDICT_WOULD_DENY
    } else {
        VERDICT_DENY
    }
}

/// The program's return value: 1 lets the call proceed, 0 fails it (EPERM).
#[inline(always)]
pub(crate) fn ret(proceed: bool) -> i32 {
    if proceed {
        ALLOW
    } else {
        DENY
    }
}

const SOCK_RAW: u32 = 3;
pub(crate) const IPPROTO_UDP: u32 = 17;
const IPPROTO_ICMP: u32 = 1;
const IPPROTO_ICMPV6: u32 = 58;

/// Socket creation fence (cgroup `sock_create`, kernel 4.10+; the kernel
/// runs it for AF_INET and AF_INET6 sockets only): raw and ICMP sockets
/// are refused unless the policy names them, and every refusal is
/// recorded.
#[cgroup_sock(sock_create)]
pub fn sock_create(ctx: SockContext) -> i32 {
    let sk = ctx.sock;
    // SAFETY: `sk` is the context pointer the kernel passed; family, type
    // and protocol are readable u32s in sock_create programs.
    let (family, sock_type, protocol) = unsafe { ((*sk).family, (*sk).type_, (*sk).protocol) };
    // SAFETY: no arguments; valid in cgroup sock programs.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: copied out at once (see emit::current_server).
    let policy = unsafe { SERVERS.get(&cgroup) }.copied();
    let flags = policy.map(|p| p.flags).unwrap_or(0);
    let allowed = match policy {
        None => false,
        Some(_) if sock_type == SOCK_RAW => flags & FLAG_SOCK_RAW != 0,
        Some(_) if protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6 => {
            flags & FLAG_SOCK_ICMP != 0
        }
        Some(_) => true,
    };
    let notable = sock_type == SOCK_RAW || protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6;
    let complain = policy.is_some() && flags & FLAG_COMPLAIN != 0;
    if !allowed || (notable && flags & FLAG_AUDIT_NET != 0) {
        if let Some(mut entry) = reserve::<SocketEvent>(kind::SOCKET, cgroup, !allowed) {
            // SAFETY: reserved ring-buffer memory for this record.
            unsafe {
                (*entry.as_mut_ptr()).payload = SocketEvent {
                    family,
                    sock_type,
                    protocol,
                    verdict: verdict(allowed, complain),
                };
            }
            entry.submit();
        }
    }
    ret(allowed || complain)
}

/// Replies from a server's resolver to a redirected UDP query come back
/// from the address the query was sent to (cgroup `recvmsg4/6`, 4.19+);
/// these programs never refuse anything.
#[cgroup_sock_addr(recvmsg4)]
pub fn recvmsg4(ctx: SockAddrContext) -> i32 {
    restore_source(&ctx, false);
    ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn recvmsg6(ctx: SockAddrContext) -> i32 {
    restore_source(&ctx, true);
    ALLOW
}

#[inline(always)]
fn restore_source(ctx: &SockAddrContext, v6: bool) {
    let sa = ctx.sock_addr;
    // SAFETY: copied out at once (see emit::current_server).
    let Some(policy) = (unsafe { SERVERS.get(&bpf_get_current_cgroup_id()) }).copied() else {
        return;
    };
    // SAFETY: `sa` is the context pointer; user_port is readable here.
    let port = u16::from_be(unsafe { (*sa).user_port } as u16);
    if policy.dns_port == 0 || port != policy.dns_port {
        return;
    }
    // SAFETY: the helper takes this program type's context pointer.
    let cookie = unsafe { bpf_get_socket_cookie(sa.cast()) };
    // SAFETY: copied out at once; a concurrent update only changes which
    // recent destination is reported.
    let Some(origin) = (unsafe { DNS_ORIGIN.get(&cookie) }).copied() else {
        return;
    };
    let a = origin.addr;
    let mapped = a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff;
    // SAFETY: user_ip4/user_ip6/user_port are writable in recvmsg programs
    // (the kernel's sock_addr_is_valid_access), as aligned u32s.
    unsafe {
        if v6 {
            (*sa).user_ip6[0] = u32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
            (*sa).user_ip6[1] = u32::from_ne_bytes([a[4], a[5], a[6], a[7]]);
            (*sa).user_ip6[2] = u32::from_ne_bytes([a[8], a[9], a[10], a[11]]);
            (*sa).user_ip6[3] = u32::from_ne_bytes([a[12], a[13], a[14], a[15]]);
        } else if mapped {
            (*sa).user_ip4 = u32::from_ne_bytes([a[12], a[13], a[14], a[15]]);
        } else {
            return;
        }
        (*sa).user_port = u32::from(origin.port.to_be());
    }
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, net_op::CONNECT4)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, net_op::CONNECT6)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, net_op::SENDMSG4)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, net_op::SENDMSG6)
}

/// Point a port-53 destination at the server's resolver on loopback,
/// remembering a UDP socket's real destination for its replies.
#[inline(always)]
fn redirect_dns(ctx: &SockAddrContext, op: u32, dns_port: u16, addr: [u8; 16], protocol: u32) {
    let sa = ctx.sock_addr;
    if protocol == IPPROTO_UDP {
        // SAFETY: the helper takes this program type's context pointer.
        let cookie = unsafe { bpf_get_socket_cookie(sa.cast()) };
        let origin = DnsOrigin {
            addr,
            port: 53,
            _pad: [0; 6],
        };
        let _ = DNS_ORIGIN.insert(&cookie, &origin, 0);
    }
    let port_be = u32::from(dns_port.to_be());
    // SAFETY: `sa` is the context pointer; user_ip4/user_ip6/user_port are
    // writable in connect and sendmsg programs (the kernel's
    // sock_addr_is_valid_access), as aligned u32s.
    unsafe {
        if op == net_op::CONNECT4 || op == net_op::SENDMSG4 {
            (*sa).user_ip4 = u32::from_ne_bytes([127, 0, 0, 1]);
        } else {
            (*sa).user_ip6[0] = 0;
            (*sa).user_ip6[1] = 0;
            (*sa).user_ip6[2] = 0;
            (*sa).user_ip6[3] = u32::from_ne_bytes([0, 0, 0, 1]);
        }
        (*sa).user_port = port_be;
    }
}

#[inline(always)]
fn decide(ctx: &SockAddrContext, op: u32) -> i32 {
    let sa = ctx.sock_addr;
    let mut addr = [0u8; 16];
    // SAFETY: `sa` is the context pointer the kernel passed; these fields are
    // readable in every sock_addr attach type used here, as aligned u32s.
    let (port_be, protocol) = unsafe {
        if op == net_op::CONNECT4 || op == net_op::SENDMSG4 {
            addr[10] = 0xff;
            addr[11] = 0xff;
            let ip = (*sa).user_ip4.to_ne_bytes();
            addr[12] = ip[0];
            addr[13] = ip[1];
            addr[14] = ip[2];
            addr[15] = ip[3];
        } else {
            let w0 = (*sa).user_ip6[0].to_ne_bytes();
            let w1 = (*sa).user_ip6[1].to_ne_bytes();
            let w2 = (*sa).user_ip6[2].to_ne_bytes();
            let w3 = (*sa).user_ip6[3].to_ne_bytes();
            let mut i = 0;
            while i < 4 {
                addr[i] = w0[i];
                addr[4 + i] = w1[i];
                addr[8 + i] = w2[i];
                addr[12 + i] = w3[i];
                i += 1;
            }
        }
        ((*sa).user_port, (*sa).protocol)
    };
    // user_port holds the port in network order in its low 16 bits.
    let port = u16::from_be(port_be as u16);

    // SAFETY: no arguments; valid in cgroup sock_addr programs.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // Plain integers from here on: Option juggling across the branches
    // below let LLVM leave a register unset on one path, which the verifier
    // rejects. A cgroup with no entry has `known == false` and is denied.
    // SAFETY: copied out at once (see emit::current_server).
    let (known, flags, dns_port) = match unsafe { SERVERS.get(&cgroup) } {
        Some(p) => (true, p.flags, p.dns_port),
        None => (false, 0, 0),
    };
    if port == 53 && known && dns_port != 0 {
        redirect_dns(ctx, op, dns_port, addr, protocol);
        return ALLOW;
    }
    let allowed = known && may_reach(cgroup, addr, port);
    let audit_all = flags & FLAG_AUDIT_NET != 0;
    let complain = known && flags & FLAG_COMPLAIN != 0;
    if !allowed || audit_all {
        record_connect(
            cgroup,
            Task::current(),
            op,
            allowed,
            complain,
            protocol,
            port,
            addr,
        );
    }
    ret(allowed || complain)
}

/// A `connect` record about `task` (`op` names the hook: connect,
/// sendmsg, bind, inbound), within the server's record budget.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn record_connect(
    cgroup: u64,
    task: Task,
    op: u32,
    allowed: bool,
    complain: bool,
    protocol: u32,
    port: u16,
    addr: [u8; 16],
) {
    if let Some(mut entry) = reserve_for::<ConnectEvent>(kind::CONNECT, cgroup, !allowed, task) {
        // SAFETY: reserved ring-buffer memory for this record.
        unsafe {
            (*entry.as_mut_ptr()).payload = ConnectEvent {
                op,
                verdict: verdict(allowed, complain),
                protocol,
                port,
                _pad: 0,
                addr,
            };
        }
        entry.submit();
    }
}

/// Whether the policy lets the server send to `addr`:`port` (inbound:
/// so it may hear back).
#[inline(always)]
pub fn may_reach(cgroup: u64, addr: [u8; 16], port: u16) -> bool {
    let key = Key::new(
        CGROUP_BITS + 128,
        NetKey {
            cgroup_be: cgroup.to_be_bytes(),
            addr,
        },
    );
    match NET_ALLOW.get(&key) {
        Some(ports) => ports.allows(port),
        None => false,
    }
}
