//! Inbound verdicts: what may reach a server from outside.
//!
//! - cgroup `bind4`/`bind6` (4.17+): an explicit `bind()` of a TCP or UDP
//!   socket succeeds only on a port `[network] bind` names, or on port 0
//!   (the kernel picks an ephemeral one: clients choosing a source address,
//!   and probes like urllib3's IPv6 check, which binds `[::1]:0`). What
//!   arrives at an ephemeral port is the ingress program's to judge. Every
//!   refusal is a record.
//! - cgroup_skb ingress (4.10+): packets arriving at a server's sockets. A
//!   TCP SYN is accepted only on a bind port, which covers `listen()` on a
//!   never-bound socket (the kernel binds an ephemeral port without a
//!   `bind()` the hooks see). A UDP datagram is accepted on a bind port, or
//!   from an address and port the server may send to (replies), or from
//!   its resolver. Drops are recorded at most once per second per server,
//!   local port and protocol.
//!
//! Both hooks key on the socket's cgroup; sockets of a cgroup with no
//! `SERVERS` entry are refused everything (fail closed).

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_boot_ns, bpf_skb_cgroup_id},
    macros::{cgroup_skb, cgroup_sock_addr},
    programs::{SkBuffContext, SockAddrContext},
};
use mcpguard_common::{
    event::net_op,
    policy::{FLAG_AUDIT_NET, FLAG_COMPLAIN},
};

use crate::{
    emit::Task,
    maps::{BIND_PORTS, INBOUND_NOTED, SERVERS},
    net::{may_reach, record_connect, ret, IPPROTO_UDP},
};

const IPPROTO_TCP: u32 = 6;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// Least time between two records of inbound drops for one key.
const NOTE_EVERY_NS: u64 = 1_000_000_000;

#[cgroup_sock_addr(bind4)]
pub fn bind4(ctx: SockAddrContext) -> i32 {
    decide_bind(&ctx, false)
}

#[cgroup_sock_addr(bind6)]
pub fn bind6(ctx: SockAddrContext) -> i32 {
    decide_bind(&ctx, true)
}

/// Whether `port` is one the server's policy lets it bind.
#[inline(always)]
fn bind_port(cgroup: u64, port: u16) -> bool {
    // SAFETY: copied out at once (see emit::current_server).
    match unsafe { BIND_PORTS.get(&cgroup) } {
        Some(ports) => ports.allows(port),
        None => false,
    }
}

#[inline(always)]
fn decide_bind(ctx: &SockAddrContext, v6: bool) -> i32 {
    let sa = ctx.sock_addr;
    let mut addr = [0u8; 16];
    // SAFETY: `sa` is the context pointer; user_ip4/user_ip6, user_port and
    // protocol are readable in bind programs, as aligned u32s.
    let (port_be, protocol) = unsafe {
        if v6 {
            let mut i = 0;
            while i < 4 {
                let w = (*sa).user_ip6[i].to_ne_bytes();
                addr[4 * i] = w[0];
                addr[4 * i + 1] = w[1];
                addr[4 * i + 2] = w[2];
                addr[4 * i + 3] = w[3];
                i += 1;
            }
        } else {
            addr[10] = 0xff;
            addr[11] = 0xff;
            let ip = (*sa).user_ip4.to_ne_bytes();
            addr[12] = ip[0];
            addr[13] = ip[1];
            addr[14] = ip[2];
            addr[15] = ip[3];
        }
        ((*sa).user_port, (*sa).protocol)
    };
    let port = u16::from_be(port_be as u16);
    // SAFETY: no arguments; valid in cgroup sock_addr programs.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: copied out at once (see emit::current_server).
    let (known, flags) = match unsafe { SERVERS.get(&cgroup) } {
        Some(p) => (true, p.flags),
        None => (false, 0),
    };
    let allowed = known
        && match protocol {
            IPPROTO_TCP | IPPROTO_UDP => port == 0 || bind_port(cgroup, port),
            // Raw and ICMP sockets exist only where the policy names them
            // (sock_create); their "port" is no listening port.
            _ => true,
        };
    let complain = known && flags & FLAG_COMPLAIN != 0;
    if !allowed || flags & FLAG_AUDIT_NET != 0 {
        let op = if v6 { net_op::BIND6 } else { net_op::BIND4 };
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

/// What the ingress program needs from a packet's headers.
struct Packet {
    v6: bool,
    protocol: u32,
    /// Sender, network order; IPv4 as `::ffff:a.b.c.d`.
    from: [u8; 16],
    from_port: u16,
    to_port: u16,
    tcp_flags: u8,
}

/// Reads the IP and TCP/UDP headers; `None` for other protocols and for
/// IPv6 packets with extension headers before the transport header.
#[inline(always)]
fn parse(ctx: &SkBuffContext) -> Option<Packet> {
    let first: u8 = ctx.load(0).ok()?;
    let mut from = [0u8; 16];
    let (v6, protocol, l4) = match first >> 4 {
        4 => {
            let proto: u8 = ctx.load(9).ok()?;
            let src: [u8; 4] = ctx.load(12).ok()?;
            from[10] = 0xff;
            from[11] = 0xff;
            from[12] = src[0];
            from[13] = src[1];
            from[14] = src[2];
            from[15] = src[3];
            (false, u32::from(proto), usize::from(first & 0x0f) * 4)
        }
        6 => {
            let next: u8 = ctx.load(6).ok()?;
            from = ctx.load(8).ok()?;
            (true, u32::from(next), 40)
        }
        _ => return None,
    };
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return None;
    }
    let ports: [u8; 4] = ctx.load(l4).ok()?;
    let tcp_flags = if protocol == IPPROTO_TCP {
        ctx.load(l4 + 13).ok()?
    } else {
        0
    };
    Some(Packet {
        v6,
        protocol,
        from,
        from_port: u16::from_be_bytes([ports[0], ports[1]]),
        to_port: u16::from_be_bytes([ports[2], ports[3]]),
        tcp_flags,
    })
}

/// Whether `addr` is 127.0.0.1 (as `::ffff:127.0.0.1`) or `::1`.
#[inline(always)]
fn is_loopback(a: &[u8; 16]) -> bool {
    let head_zero = a[..10].iter().all(|b| *b == 0);
    let v4 = head_zero && a[10] == 0xff && a[11] == 0xff && a[12..] == [127, 0, 0, 1];
    let v6 = head_zero && a[10..15].iter().all(|b| *b == 0) && a[15] == 1;
    v4 || v6
}

#[cgroup_skb(ingress)]
pub fn inbound(ctx: SkBuffContext) -> i32 {
    // SAFETY: the helper takes this program type's context pointer.
    let cgroup = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    // SAFETY: copied out at once (see emit::current_server).
    let Some(policy) = (unsafe { SERVERS.get(&cgroup) }).copied() else {
        return ret(false);
    };
    let Some(p) = parse(&ctx) else {
        // Not TCP or UDP (ICMP and raw sockets are the sock_create fence's
        // to allow), or an IPv6 header chain this program does not walk:
        // the latter is refused.
        return ret(other_ok(&ctx));
    };
    let allowed = if p.protocol == IPPROTO_TCP {
        // Only a connection request needs a bind port: every other segment
        // belongs to a connection that was already let through.
        p.tcp_flags & TCP_SYN == 0 || p.tcp_flags & TCP_ACK != 0 || bind_port(cgroup, p.to_port)
    } else {
        bind_port(cgroup, p.to_port)
            || may_reach(cgroup, p.from, p.from_port)
            || (policy.dns_port != 0 && p.from_port == policy.dns_port && is_loopback(&p.from))
    };
    let complain = policy.flags & FLAG_COMPLAIN != 0;
    if !allowed && note_due(cgroup, p.to_port, p.protocol) {
        let op = if p.v6 {
            net_op::INBOUND6
        } else {
            net_op::INBOUND4
        };
        let task = Task::socket_owner(ctx.get_socket_uid());
        record_connect(
            cgroup, task, op, false, complain, p.protocol, p.to_port, p.from,
        );
    }
    ret(allowed || complain)
}

/// A packet `parse` did not read: let it through only if it is neither
/// TCP nor UDP at the IP layer (ICMP errors, ...).
#[inline(always)]
fn other_ok(ctx: &SkBuffContext) -> bool {
    let Ok(first) = ctx.load::<u8>(0) else {
        return false;
    };
    let proto = match first >> 4 {
        4 => ctx.load::<u8>(9).ok(),
        6 => ctx.load::<u8>(6).ok(),
        _ => None,
    };
    match proto {
        Some(p) => {
            let p = u32::from(p);
            p != IPPROTO_TCP && p != IPPROTO_UDP && !is_v6_extension(p)
        }
        None => false,
    }
}

/// IPv6 extension headers that may precede a transport header.
#[inline(always)]
fn is_v6_extension(next: u32) -> bool {
    matches!(next, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140)
}

/// Whether a drop on (`cgroup`, `port`, `protocol`) should be recorded
/// now: at most once per [`NOTE_EVERY_NS`].
#[inline(always)]
fn note_due(cgroup: u64, port: u16, protocol: u32) -> bool {
    let key = (cgroup << 24) ^ (u64::from(port) << 8) ^ u64::from(protocol);
    // SAFETY: no arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: copied out at once; a concurrent update only shifts the
    // window by one packet.
    if let Some(last) = unsafe { INBOUND_NOTED.get(&key) } {
        if now.wrapping_sub(*last) < NOTE_EVERY_NS {
            return false;
        }
    }
    let _ = INBOUND_NOTED.insert(&key, &now, 0);
    true
}
