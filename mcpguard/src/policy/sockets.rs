//! `[network] sockets`: the socket kinds a server may create beyond the
//! ones every program needs, and the names records and policies use for
//! address families and netlink protocols.
//!
//! Unix, TCP and UDP sockets, and route netlink (glibc's `getaddrinfo` with
//! `AI_ADDRCONFIG` and `getifaddrs` use it), are always allowed. Everything
//! else is refused unless named: raw and ICMP inet sockets (the cgroup
//! `sock_create` fence), other netlink protocols (`NETLINK_SOCK_DIAG` lists
//! every socket on the host, `NETLINK_KOBJECT_UEVENT` every device event)
//! and other address families such as `packet` or `vsock` (the launcher's
//! seccomp filter, [`crate::launch::notify`]).

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::kernel::sockets::{
    family_name, netlink_name, protocol_name, sock_type_name, AF_INET, AF_INET6, AF_NETLINK,
    AF_UNIX, NETLINK_ROUTE,
};
use crate::kernel::sockets::{FAMILIES, NETLINK};

/// One `[network] sockets` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SocketKind {
    /// `raw`: `SOCK_RAW` inet sockets (still need CAP_NET_RAW).
    Raw,
    /// `icmp`: ICMP "ping" sockets.
    Icmp,
    /// `netlink`: every netlink protocol.
    Netlink,
    /// `netlink_<protocol>`, e.g. `netlink_sock_diag`.
    NetlinkProtocol(u32),
    /// Another address family by name, e.g. `packet`, `vsock`.
    Family(u32),
}

impl TryFrom<String> for SocketKind {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        match text.as_str() {
            "raw" => return Ok(SocketKind::Raw),
            "icmp" => return Ok(SocketKind::Icmp),
            "netlink" => return Ok(SocketKind::Netlink),
            // Always allowed: naming them is harmless but misleading.
            "unix" | "inet" | "inet6" | "netlink_route" => {
                return Err(format!(
                    "`{text}` sockets are always allowed; remove the entry"
                ))
            }
            _ => {}
        }
        if let Some(proto) = text.strip_prefix("netlink_") {
            return NETLINK
                .iter()
                .find(|(_, name)| *name == proto)
                .map(|(n, _)| SocketKind::NetlinkProtocol(*n))
                .ok_or_else(|| {
                    format!("unknown netlink protocol `{proto}` (e.g. netlink_sock_diag, netlink_audit, netlink_kobject_uevent)")
                });
        }
        FAMILIES
            .iter()
            .find(|(_, name)| *name == text)
            .map(|(n, _)| SocketKind::Family(*n))
            .ok_or_else(|| {
                format!("unknown socket kind `{text}` (raw, icmp, netlink, netlink_<protocol>, or an address family such as packet or vsock)")
            })
    }
}

impl fmt::Display for SocketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketKind::Raw => f.write_str("raw"),
            SocketKind::Icmp => f.write_str("icmp"),
            SocketKind::Netlink => f.write_str("netlink"),
            SocketKind::NetlinkProtocol(p) => write!(f, "netlink_{}", netlink_name(*p)),
            SocketKind::Family(n) => f.write_str(&family_name(*n)),
        }
    }
}

/// The policy key that would allow a refused socket, from the names in its
/// `socket` record (for `policy learn`): `None` for kinds always allowed.
pub fn key_for(family: &str, sock_type: &str, protocol: &str) -> Option<String> {
    match family {
        "inet" | "inet6" if sock_type == "raw" => Some("raw".into()),
        // The sock_create fence notes only raw and ICMP inet sockets.
        "inet" | "inet6" => Some("icmp".into()),
        "unix" => None,
        "netlink" if protocol == "route" => None,
        "netlink" => Some(format!("netlink_{protocol}")),
        other => Some(other.into()),
    }
}

/// What the launcher's seccomp filter lets through beyond the defaults,
/// compiled from `[network] sockets`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketRules {
    /// Raw inet sockets (the kernel still wants CAP_NET_RAW for them).
    pub raw: bool,
    /// Every netlink protocol.
    pub netlink_all: bool,
    /// Netlink protocols besides route.
    pub netlink: Vec<u32>,
    /// Address families besides unix, inet, inet6 and netlink.
    pub families: Vec<u32>,
}

impl SocketRules {
    pub fn from_kinds(kinds: &[SocketKind]) -> SocketRules {
        let mut rules = SocketRules::default();
        for kind in kinds {
            match kind {
                SocketKind::Raw => rules.raw = true,
                // ICMP sockets are the sock_create fence's (flags).
                SocketKind::Icmp => {}
                SocketKind::Netlink => rules.netlink_all = true,
                SocketKind::NetlinkProtocol(p) => rules.netlink.push(*p),
                SocketKind::Family(f) => rules.families.push(*f),
            }
        }
        rules.netlink.sort_unstable();
        rules.netlink.dedup();
        rules.families.sort_unstable();
        rules.families.dedup();
        rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Result<SocketKind, String> {
        SocketKind::try_from(text.to_string())
    }

    #[test]
    fn keys_parse_and_print_back() {
        for text in [
            "raw",
            "icmp",
            "netlink",
            "netlink_sock_diag",
            "netlink_kobject_uevent",
            "packet",
            "vsock",
        ] {
            assert_eq!(kind(text).unwrap().to_string(), text);
        }
        assert_eq!(kind("netlink_audit"), Ok(SocketKind::NetlinkProtocol(9)));
        assert_eq!(kind("packet"), Ok(SocketKind::Family(17)));
    }

    #[test]
    fn unknown_and_always_allowed_keys_are_errors() {
        assert!(kind("netlink_bogus")
            .unwrap_err()
            .contains("unknown netlink protocol `bogus`"));
        assert!(kind("tcp").unwrap_err().contains("unknown socket kind"));
        assert!(kind("netlink_route")
            .unwrap_err()
            .contains("always allowed"));
        assert!(kind("unix").unwrap_err().contains("always allowed"));
    }

    #[test]
    fn rules_collect_what_the_filter_needs() {
        let rules = SocketRules::from_kinds(&[
            SocketKind::Icmp,
            SocketKind::NetlinkProtocol(4),
            SocketKind::NetlinkProtocol(4),
            SocketKind::Family(17),
        ]);
        assert_eq!(
            rules,
            SocketRules {
                raw: false,
                netlink_all: false,
                netlink: vec![4],
                families: vec![17],
            }
        );
    }

    #[test]
    fn learn_keys_name_what_was_refused() {
        assert_eq!(key_for("inet", "raw", "icmp").as_deref(), Some("raw"));
        assert_eq!(key_for("inet6", "dgram", "icmpv6").as_deref(), Some("icmp"));
        assert_eq!(
            key_for("netlink", "raw", "sock_diag").as_deref(),
            Some("netlink_sock_diag")
        );
        assert_eq!(key_for("netlink", "raw", "route"), None);
        assert_eq!(key_for("packet", "raw", "768").as_deref(), Some("packet"));
    }
}
