//! Socket ABI names: address families, socket types, netlink and inet
//! protocols by the names policies and audit records use.

/// Address families by the names policies and records use (Linux
/// `AF_*` numbers).
pub const FAMILIES: &[(u32, &str)] = &[
    (1, "unix"),
    (2, "inet"),
    (3, "ax25"),
    (4, "ipx"),
    (5, "appletalk"),
    (6, "netrom"),
    (7, "bridge"),
    (8, "atmpvc"),
    (9, "x25"),
    (10, "inet6"),
    (11, "rose"),
    (12, "decnet"),
    (13, "netbeui"),
    (14, "security"),
    (15, "key"),
    (16, "netlink"),
    (17, "packet"),
    (18, "ash"),
    (19, "econet"),
    (20, "atmsvc"),
    (21, "rds"),
    (22, "sna"),
    (23, "irda"),
    (24, "pppox"),
    (25, "wanpipe"),
    (26, "llc"),
    (27, "ib"),
    (28, "mpls"),
    (29, "can"),
    (30, "tipc"),
    (31, "bluetooth"),
    (32, "iucv"),
    (33, "rxrpc"),
    (34, "isdn"),
    (35, "phonet"),
    (36, "ieee802154"),
    (37, "caif"),
    (38, "alg"),
    (39, "nfc"),
    (40, "vsock"),
    (41, "kcm"),
    (42, "qipcrtr"),
    (43, "smc"),
    (44, "xdp"),
    (45, "mctp"),
];

/// Netlink protocols (Linux `NETLINK_*` numbers).
pub const NETLINK: &[(u32, &str)] = &[
    (0, "route"),
    (2, "usersock"),
    (3, "firewall"),
    (4, "sock_diag"),
    (5, "nflog"),
    (6, "xfrm"),
    (7, "selinux"),
    (8, "iscsi"),
    (9, "audit"),
    (10, "fib_lookup"),
    (11, "connector"),
    (12, "netfilter"),
    (13, "ip6_fw"),
    (14, "dnrtmsg"),
    (15, "kobject_uevent"),
    (16, "generic"),
    (18, "scsitransport"),
    (19, "ecryptfs"),
    (20, "rdma"),
    (21, "crypto"),
    (22, "smc"),
];

pub const AF_UNIX: u32 = 1;
pub const AF_INET: u32 = 2;
pub const AF_INET6: u32 = 10;
pub const AF_NETLINK: u32 = 16;
pub const NETLINK_ROUTE: u32 = 0;

/// The name of an address family, or its number.
pub fn family_name(family: u32) -> String {
    FAMILIES
        .iter()
        .find(|(n, _)| *n == family)
        .map_or_else(|| family.to_string(), |(_, name)| (*name).to_string())
}

/// The name of a netlink protocol, or its number.
pub fn netlink_name(protocol: u32) -> String {
    NETLINK
        .iter()
        .find(|(n, _)| *n == protocol)
        .map_or_else(|| protocol.to_string(), |(_, name)| (*name).to_string())
}

/// A socket type without its `SOCK_CLOEXEC`/`SOCK_NONBLOCK` flags.
pub fn sock_type_name(sock_type: u32) -> String {
    match sock_type & 0xf {
        1 => "stream".into(),
        2 => "dgram".into(),
        3 => "raw".into(),
        4 => "rdm".into(),
        5 => "seqpacket".into(),
        10 => "packet".into(),
        t => t.to_string(),
    }
}

/// A protocol as named within its family: netlink protocols by name, inet
/// ones as `tcp`, `udp`, `icmp`, ..., anything else as its number.
pub fn protocol_name(family: u32, protocol: u32) -> String {
    match family {
        AF_NETLINK => netlink_name(protocol),
        AF_INET | AF_INET6 => inet_protocol_name(protocol),
        _ => protocol.to_string(),
    }
}

/// `tcp`, `udp`, `icmp`, `icmpv6`, or the number.
pub fn inet_protocol_name(protocol: u32) -> String {
    match protocol as i32 {
        libc::IPPROTO_TCP => "tcp".to_string(),
        libc::IPPROTO_UDP => "udp".to_string(),
        libc::IPPROTO_ICMP => "icmp".to_string(),
        libc::IPPROTO_ICMPV6 => "icmpv6".to_string(),
        _ => protocol.to_string(),
    }
}
