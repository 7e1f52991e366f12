//! Network rules: parsing `network.allow` / `network.bind` entries and
//! compiling the allow list into entries for the kernel's `NET_ALLOW` LPM trie.
//!
//! An LPM lookup returns only the longest matching prefix, so each compiled
//! entry carries the ports of its own rules *and* of every shorter rule
//! prefix that contains it. Without that fold, `10.0.0.0/8:443` plus
//! `10.1.0.0/16:80` would deny 10.1.2.3:443.
//!
//! Cloud metadata endpoints ([`METADATA`]) hand out the machine's cloud
//! credentials, so a rule that merely covers one (`0.0.0.0/0:80`) does not
//! open it: the compiled list gets a port-less /128 entry for it, which the
//! longest-prefix lookup finds first. Only a rule naming the address itself
//! (`169.254.169.254:80`) opens it.

use std::{
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
};

use mcpguard_common::{
    limits::PORT_RANGES,
    policy::{self as kernel, NetKey, PortSet, CGROUP_BITS},
};

use super::{PolicyError, Problem};

/// Cloud instance metadata endpoints: AWS, GCP, Azure and Oracle
/// (169.254.169.254, and fd00:ec2::254 on AWS IPv6), ECS task credentials
/// (169.254.170.2) and Alibaba Cloud (100.100.100.200).
pub const METADATA: [Ipv6Addr; 4] = [
    Ipv4Addr::new(169, 254, 169, 254).to_ipv6_mapped(),
    Ipv4Addr::new(169, 254, 170, 2).to_ipv6_mapped(),
    Ipv4Addr::new(100, 100, 100, 200).to_ipv6_mapped(),
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
];

/// Whether `addr` (IPv4 as IPv4-mapped) is a cloud metadata endpoint.
pub fn is_metadata(addr: Ipv6Addr) -> bool {
    METADATA.contains(&addr)
}

/// Whether a rule names `addr` itself (a /32 or /128), not just a network
/// containing it.
pub fn names_exactly(rules: &[NetRule], addr: Ipv6Addr) -> bool {
    rules.iter().any(|r| r.prefix >= 128 && r.addr == addr)
}

/// An inclusive range of TCP/UDP ports, 1..=65535 once validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    /// Whether `port` falls inside the range.
    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl From<PortRange> for kernel::PortRange {
    fn from(r: PortRange) -> Self {
        kernel::PortRange { lo: r.lo, hi: r.hi }
    }
}

/// One `network.allow` entry. IPv4 rules are held as IPv4-mapped IPv6
/// (`::ffff:a.b.c.d`, prefix 96+n) because the kernel programs look IPv4
/// destinations up in that form too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRule {
    /// Address as written; host bits below `prefix` are ignored when compiled.
    pub addr: Ipv6Addr,
    /// 0..=128; IPv4 rules are 96+n.
    pub prefix: u8,
    pub ports: PortRange,
    /// The entry as written in the policy file, for error messages and audit.
    pub text: String,
}

impl NetRule {
    /// Whether the address has bits set below its prefix (e.g. `10.1.2.3/8`).
    pub fn has_host_bits(&self) -> bool {
        let a = u128::from(self.addr);
        a != mask(a, self.prefix)
    }
}

/// One `network.allow` entry that names a host: `api.example.com:443`,
/// `*.example.com:443` (any name below example.com, not example.com
/// itself) or `*:443` (any name). Names are matched case-insensitively, without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRule {
    /// Lowercase name, or the suffix after `*.` for a wildcard.
    pub name: String,
    pub wildcard: bool,
    pub ports: PortRange,
    /// The entry as written in the policy file.
    pub text: String,
}

impl HostRule {
    /// Whether a query name (any case, trailing dot allowed) is covered.
    pub fn matches(&self, qname: &str) -> bool {
        let q = qname.trim_end_matches('.').to_ascii_lowercase();
        if self.wildcard && self.name.is_empty() {
            // `*`: any name at all (a fetch-anything server).
            return !q.is_empty();
        }
        if self.wildcard {
            q.strip_suffix(self.name.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        } else {
            q == self.name
        }
    }
}

/// `*:1-65535`: any name, any port (learning mode's resolver).
pub fn any_host() -> HostRule {
    HostRule {
        name: String::new(),
        wildcard: true,
        ports: PortRange { lo: 1, hi: 65535 },
        text: "*:1-65535".into(),
    }
}

/// Parses `NAME:PORTS`, `*.NAME:PORTS` or `*:PORTS` (any name).
pub(crate) fn parse_host_rule(text: &str) -> Result<HostRule, Problem> {
    let (host, ports) = text.rsplit_once(':').ok_or(Problem::MissingPort)?;
    let ports = parse_ports(ports)?;
    if host == "*" {
        return Ok(HostRule {
            name: String::new(),
            wildcard: true,
            ports,
            text: text.to_owned(),
        });
    }
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(Problem::BadHost {
            host: host.to_owned(),
        });
    }
    Ok(HostRule {
        name,
        wildcard,
        ports,
        text: text.to_owned(),
    })
}

/// The `NET_ALLOW` entry for one address a server resolved through an
/// allowed name: the name's ports folded with those of every static rule
/// containing the address (an LPM lookup sees only the longest match).
/// `None` when neither `ports` nor a static rule gives the address an entry
/// of its own.
pub fn host_entry(
    static_rules: &[NetRule],
    cgroup_id: u64,
    addr: Ipv6Addr,
    ports: &[PortRange],
) -> Result<Option<NetEntry>, PolicyError> {
    let mut rules = static_rules.to_vec();
    rules.extend(ports.iter().map(|p| NetRule {
        addr,
        prefix: 128,
        ports: *p,
        text: format!("[{addr}]:{p}"),
    }));
    let key = host_key(cgroup_id, addr);
    Ok(compile_allow(&rules, cgroup_id)?
        .into_iter()
        .find(|e| e.prefix_len == key.prefix_len && e.key == key.key))
}

/// The key (with no ports) of an address's own entry, for removal.
pub fn host_key(cgroup_id: u64, addr: Ipv6Addr) -> NetEntry {
    NetEntry {
        prefix_len: CGROUP_BITS + 128,
        key: NetKey {
            cgroup_be: cgroup_id.to_be_bytes(),
            addr: u128::from(addr).to_be_bytes(),
        },
        ports: PortSet::default(),
    }
}

/// One entry of the `NET_ALLOW` LPM trie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetEntry {
    /// LPM prefix length in bits: 64 bits of cgroup id plus the rule prefix.
    pub prefix_len: u32,
    pub key: NetKey,
    pub ports: PortSet,
}

/// Parses a port or inclusive port range: `N` or `N-M`, each 1..=65535.
pub(crate) fn parse_ports(text: &str) -> Result<PortRange, Problem> {
    let (lo, hi) = match text.split_once('-') {
        Some((lo, hi)) => (parse_port(lo)?, parse_port(hi)?),
        None => {
            let p = parse_port(text)?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(Problem::PortRangeReversed { lo, hi });
    }
    Ok(PortRange { lo, hi })
}

fn parse_port(text: &str) -> Result<u16, Problem> {
    // `u16::from_str` would accept "+80"; the policy format is digits only.
    let bad = || Problem::BadPort {
        port: text.to_owned(),
    };
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u32>() {
        Ok(0) => Err(Problem::PortZero),
        Ok(p) => u16::try_from(p).map_err(|_| bad()),
        Err(_) => Err(bad()),
    }
}

/// An allow entry: an address rule or a host-name rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowRule {
    Addr(NetRule),
    Host(HostRule),
}

/// Parses any `network.allow` entry.
pub(crate) fn parse_allow(text: &str) -> Result<AllowRule, Problem> {
    match parse_rule(text) {
        Ok(rule) => Ok(AllowRule::Addr(rule)),
        Err(Problem::Hostname) => parse_host_rule(text).map(AllowRule::Host),
        Err(e) => Err(e),
    }
}

/// Parses `IPv4[/prefix]:PORTS` or `[IPv6[/prefix]]:PORTS`.
pub(crate) fn parse_rule(text: &str) -> Result<NetRule, Problem> {
    let (host, ports) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(Problem::UnclosedBracket)?;
        let ports = after.strip_prefix(':').ok_or(Problem::MissingPort)?;
        (Host::V6(inside), ports)
    } else {
        let (host, ports) = text.rsplit_once(':').ok_or(Problem::MissingPort)?;
        if host.contains(':') {
            return Err(Problem::UnbracketedV6);
        }
        if host == "*" || host.starts_with("*.") {
            return Err(Problem::Hostname);
        }
        (Host::V4(host), ports)
    };
    let ports = parse_ports(ports)?;
    let (addr, prefix) = match host {
        Host::V4(h) => {
            let (a, p) = split_prefix(h, 32)?;
            let a: Ipv4Addr = a.parse().map_err(|_| bad_address(a))?;
            (a.to_ipv6_mapped(), 96 + p)
        }
        Host::V6(h) => {
            let (a, p) = split_prefix(h, 128)?;
            let a: Ipv6Addr = a.parse().map_err(|_| bad_address(a))?;
            (a, p)
        }
    };
    Ok(NetRule {
        addr,
        prefix,
        ports,
        text: text.to_owned(),
    })
}

enum Host<'a> {
    V4(&'a str),
    V6(&'a str),
}

/// Splits `addr/prefix`; a missing prefix means a single host (`max`).
fn split_prefix(host: &str, max: u8) -> Result<(&str, u8), Problem> {
    let Some((addr, prefix)) = host.split_once('/') else {
        return Ok((host, max));
    };
    let bad = || Problem::BadPrefix {
        prefix: prefix.to_owned(),
        max,
    };
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match prefix.parse::<u8>() {
        Ok(p) if p <= max => Ok((addr, p)),
        _ => Err(bad()),
    }
}

/// Names get their own message: they are a planned feature, not a typo.
fn bad_address(addr: &str) -> Problem {
    let hostname_like = addr.bytes().any(|b| b.is_ascii_alphabetic())
        && addr
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if hostname_like && !addr.contains("::") {
        Problem::Hostname
    } else {
        Problem::BadAddress {
            addr: addr.to_owned(),
        }
    }
}

/// Clears the bits of `addr` below `prefix` (prefix is clamped to 128).
fn mask(addr: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p if p >= 128 => addr,
        p => addr & (!0u128 << (128 - u32::from(p))),
    }
}

/// Human form of a compiled prefix: IPv4 notation for IPv4-mapped prefixes.
fn show_prefix(addr: u128, prefix: u8) -> String {
    let v6 = Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) if prefix >= 96 => format!("{v4}/{}", prefix - 96),
        _ => format!("[{v6}]/{prefix}"),
    }
}

/// Sorts and coalesces overlapping or adjacent ranges.
fn merge(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => {
                last.hi = last.hi.max(r.hi);
            }
            _ => out.push(r),
        }
    }
    out
}

/// The kernel's `BIND_PORTS` value for `[network] bind`: the merged
/// ranges, or how many there are when more than one entry holds.
pub fn bind_ports(ranges: &[PortRange]) -> Result<PortSet, usize> {
    let ranges = merge(ranges.to_vec());
    if ranges.len() > PORT_RANGES {
        return Err(ranges.len());
    }
    let mut ports = PortSet {
        count: ranges.len() as u32,
        ..PortSet::default()
    };
    for (slot, r) in ports.ranges.iter_mut().zip(&ranges) {
        *slot = (*r).into();
    }
    Ok(ports)
}

/// Compiles the allow list of the server in cgroup `cgroup_id` into LPM trie
/// entries, one per distinct (masked) prefix, sorted by prefix length then
/// address.
pub fn compile_allow(rules: &[NetRule], cgroup_id: u64) -> Result<Vec<NetEntry>, PolicyError> {
    // Keyed by (prefix, masked address): rules naming the same network merge.
    let mut own: BTreeMap<(u8, u128), (Vec<PortRange>, &str)> = BTreeMap::new();
    for rule in rules {
        // Rules from `parse_rule` never exceed 128; clamping keeps a
        // hand-built rule from overflowing the shift in `mask`.
        let prefix = rule.prefix.min(128);
        let addr = mask(u128::from(rule.addr), prefix);
        own.entry((prefix, addr))
            .or_insert_with(|| (Vec::new(), &rule.text))
            .0
            .push(rule.ports);
    }

    let mut entries = Vec::with_capacity(own.len());
    for (&(prefix, addr), &(_, text)) in &own {
        // At most one rule prefix per length can contain this one, so
        // probing each shorter length finds all of them (itself included).
        let mut ranges = Vec::new();
        for len in 0..=prefix {
            if let Some((r, _)) = own.get(&(len, mask(addr, len))) {
                ranges.extend_from_slice(r);
            }
        }
        let ranges = merge(ranges);
        if ranges.len() > PORT_RANGES {
            return Err(PolicyError::TooManyPortRanges {
                rule: text.to_owned(),
                prefix: show_prefix(addr, prefix),
                count: ranges.len(),
                max: PORT_RANGES,
            });
        }
        let mut ports = PortSet {
            count: ranges.len() as u32,
            ..PortSet::default()
        };
        for (slot, r) in ports.ranges.iter_mut().zip(&ranges) {
            *slot = (*r).into();
        }
        entries.push(NetEntry {
            prefix_len: CGROUP_BITS + u32::from(prefix),
            key: NetKey {
                cgroup_be: cgroup_id.to_be_bytes(),
                addr: addr.to_be_bytes(),
            },
            ports,
        });
    }
    // Metadata endpoints a wider rule covers get an entry of their own
    // with no ports: the longest match, so nothing reaches them.
    for m in METADATA {
        let m = u128::from(m);
        let covered = own.keys().any(|&(prefix, addr)| mask(m, prefix) == addr);
        if covered && !own.contains_key(&(128, m)) {
            entries.push(NetEntry {
                prefix_len: CGROUP_BITS + 128,
                key: NetKey {
                    cgroup_be: cgroup_id.to_be_bytes(),
                    addr: m.to_be_bytes(),
                },
                ports: PortSet::default(),
            });
        }
    }
    Ok(entries)
}

/// Every port any allow rule permits, merged. Landlock's TCP connect rules
/// are per port only, so this is the most it can express of the allow list.
pub fn tcp_ports(rules: &[NetRule]) -> Vec<PortRange> {
    merge(rules.iter().map(|r| r.ports).collect())
}

#[cfg(test)]
mod tests {
    use mcpguard_common::policy::V4_MAPPED_PREFIX_BITS;

    use super::*;

    fn rule(text: &str) -> NetRule {
        parse_rule(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn rules(texts: &[&str]) -> Vec<NetRule> {
        texts.iter().map(|t| rule(t)).collect()
    }

    fn ranges(set: &PortSet) -> Vec<(u16, u16)> {
        set.ranges[..set.count as usize]
            .iter()
            .map(|r| (r.lo, r.hi))
            .collect()
    }

    fn v4_key(a: [u8; 4]) -> [u8; 16] {
        Ipv4Addr::from(a).to_ipv6_mapped().octets()
    }

    fn entry(entries: &[NetEntry], prefix_len: u32, addr: [u8; 16]) -> &NetEntry {
        entries
            .iter()
            .find(|e| e.prefix_len == prefix_len && e.key.addr == addr)
            .unwrap_or_else(|| panic!("no entry /{prefix_len} {addr:?} in {entries:#?}"))
    }

    #[test]
    fn parses_ipv4_host_as_mapped_128() {
        let r = rule("127.0.0.1:8080");
        assert_eq!(r.addr, "::ffff:127.0.0.1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(r.prefix, 128);
        assert_eq!(r.ports, PortRange { lo: 8080, hi: 8080 });
        assert_eq!(r.text, "127.0.0.1:8080");
    }

    #[test]
    fn parses_ipv4_cidr_and_port_range() {
        let r = rule("10.0.0.0/8:1000-2000");
        assert_eq!(r.prefix, 96 + 8);
        assert_eq!(r.ports, PortRange { lo: 1000, hi: 2000 });
        assert_eq!(rule("0.0.0.0/0:53").prefix, 96);
    }

    #[test]
    fn parses_bracketed_ipv6_with_and_without_prefix() {
        let r = rule("[::1]:8080");
        assert_eq!(r.addr, Ipv6Addr::LOCALHOST);
        assert_eq!(r.prefix, 128);
        let r = rule("[2001:db8::/32]:443");
        assert_eq!(r.addr, "2001:db8::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(r.prefix, 32);
        assert_eq!(rule("[::/0]:1-65535").prefix, 0);
    }

    #[test]
    fn rejects_malformed_rules_with_specific_problems() {
        let cases: &[(&str, Problem)] = &[
            ("10.0.0.1", Problem::MissingPort),
            ("[::1]", Problem::MissingPort),
            ("[::1]8080", Problem::MissingPort),
            ("[::1:80", Problem::UnclosedBracket),
            ("::1:80", Problem::UnbracketedV6),
            ("localhost:8080", Problem::Hostname),
            ("api.example.com:443", Problem::Hostname),
            ("[example.com]:443", Problem::Hostname),
            (
                "10.0.0.300:80",
                Problem::BadAddress {
                    addr: "10.0.0.300".into(),
                },
            ),
            (
                "[10.0.0.1]:80",
                Problem::BadAddress {
                    addr: "10.0.0.1".into(),
                },
            ),
            (
                "10.0.0.0/33:80",
                Problem::BadPrefix {
                    prefix: "33".into(),
                    max: 32,
                },
            ),
            (
                "[::/129]:80",
                Problem::BadPrefix {
                    prefix: "129".into(),
                    max: 128,
                },
            ),
            (
                "10.0.0.0/+8:80",
                Problem::BadPrefix {
                    prefix: "+8".into(),
                    max: 32,
                },
            ),
            ("10.0.0.1:0", Problem::PortZero),
            (
                "10.0.0.1:65536",
                Problem::BadPort {
                    port: "65536".into(),
                },
            ),
            ("10.0.0.1:+80", Problem::BadPort { port: "+80".into() }),
            ("10.0.0.1:80-", Problem::BadPort { port: "".into() }),
            (
                "10.0.0.1:2000-1000",
                Problem::PortRangeReversed { lo: 2000, hi: 1000 },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_rule(text).as_ref(), Err(want), "{text}");
        }
    }

    #[test]
    fn longer_prefix_inherits_ports_of_containing_prefix() {
        let entries = compile_allow(&rules(&["10.0.0.0/8:443", "10.1.0.0/16:80"]), 7).unwrap();
        assert_eq!(entries.len(), 2);
        let slash8 = entry(&entries, 64 + 96 + 8, v4_key([10, 0, 0, 0]));
        assert_eq!(ranges(&slash8.ports), [(443, 443)]);
        let slash16 = entry(&entries, 64 + 96 + 16, v4_key([10, 1, 0, 0]));
        assert_eq!(ranges(&slash16.ports), [(80, 80), (443, 443)]);
        assert!(slash16.ports.allows(443) && slash16.ports.allows(80));
        assert!(!slash16.ports.allows(8080));
    }

    #[test]
    fn sibling_prefixes_do_not_share_ports() {
        let entries = compile_allow(&rules(&["10.1.0.0/16:80", "10.2.0.0/16:443"]), 1).unwrap();
        let a = entry(&entries, 64 + 112, v4_key([10, 1, 0, 0]));
        let b = entry(&entries, 64 + 112, v4_key([10, 2, 0, 0]));
        assert_eq!(ranges(&a.ports), [(80, 80)]);
        assert_eq!(ranges(&b.ports), [(443, 443)]);
    }

    #[test]
    fn key_carries_big_endian_cgroup_id_and_prefix_len_counts_it() {
        let entries =
            compile_allow(&rules(&["192.0.2.7:1000-2000"]), 0x0102_0304_0506_0708).unwrap();
        assert_eq!(entries[0].key.cgroup_be, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            entries[0].prefix_len,
            CGROUP_BITS + V4_MAPPED_PREFIX_BITS + 32
        );
        assert_eq!(entries[0].key.addr, v4_key([192, 0, 2, 7]));
    }

    #[test]
    fn host_bits_are_masked_and_equal_prefixes_merge() {
        assert!(rule("10.1.2.3/8:443").has_host_bits());
        assert!(!rule("10.0.0.0/8:443").has_host_bits());
        let entries = compile_allow(&rules(&["10.1.2.3/8:443", "10.0.0.0/8:80"]), 1).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].key.addr, v4_key([10, 0, 0, 0]));
        assert_eq!(entries[0].prefix_len, 64 + 104);
        assert_eq!(ranges(&entries[0].ports), [(80, 80), (443, 443)]);

        let entries = compile_allow(&rules(&["[2001:db8:ffff::1/32]:443"]), 1).unwrap();
        let want: Ipv6Addr = "2001:db8::".parse().unwrap();
        assert_eq!(entries[0].key.addr, want.octets());
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        let entries = compile_allow(
            &rules(&[
                "10.0.0.1:80-90",
                "10.0.0.1:85-100",
                "10.0.0.1:101",
                "10.0.0.1:200",
                "10.0.0.1:65535",
                "10.0.0.1:65000-65534",
            ]),
            1,
        )
        .unwrap();
        assert_eq!(
            ranges(&entries[0].ports),
            [(80, 101), (200, 200), (65000, 65535)]
        );
    }

    #[test]
    fn ipv6_rules_fold_like_ipv4() {
        let entries =
            compile_allow(&rules(&["[2001:db8::/32]:443", "[2001:db8::1]:22"]), 3).unwrap();
        let host: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let host = entry(&entries, 64 + 128, host.octets());
        assert_eq!(ranges(&host.ports), [(22, 22), (443, 443)]);
    }

    #[test]
    fn ipv6_default_route_is_one_zero_entry_that_folds_into_everything() {
        let entries =
            compile_allow(&rules(&["[::/0]:53", "10.0.0.0/8:443", "[::1]:80"]), 9).unwrap();
        // Plus the port-less entries that keep the metadata endpoints shut.
        assert_eq!(entries.len(), 3 + METADATA.len());
        let any = entry(&entries, 64, [0; 16]);
        assert_eq!(ranges(&any.ports), [(53, 53)]);
        // IPv4 is looked up as ::ffff:a.b.c.d, which ::/0 contains.
        let v4 = entry(&entries, 64 + 104, v4_key([10, 0, 0, 0]));
        assert_eq!(ranges(&v4.ports), [(53, 53), (443, 443)]);
        let lo = entry(&entries, 64 + 128, Ipv6Addr::LOCALHOST.octets());
        assert_eq!(ranges(&lo.ports), [(53, 53), (80, 80)]);
    }

    #[test]
    fn ipv4_rules_do_not_fold_into_unrelated_ipv6() {
        let entries = compile_allow(&rules(&["0.0.0.0/0:443", "[2001:db8::1]:22"]), 1).unwrap();
        let host: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            ranges(&entry(&entries, 192, host.octets()).ports),
            [(22, 22)]
        );
    }

    #[test]
    fn too_many_ranges_after_folding_names_the_rule() {
        let mut texts: Vec<String> = (0..PORT_RANGES)
            .map(|i| format!("10.0.0.0/8:{}", 1000 + 2 * i))
            .collect();
        assert!(compile_allow(
            &rules(&texts.iter().map(String::as_str).collect::<Vec<_>>()),
            1
        )
        .is_ok());
        texts.push("10.1.1.1:9".into());
        let err = compile_allow(
            &rules(&texts.iter().map(String::as_str).collect::<Vec<_>>()),
            1,
        )
        .unwrap_err();
        match &err {
            PolicyError::TooManyPortRanges {
                rule,
                prefix,
                count,
                max,
            } => {
                assert_eq!(rule, "10.1.1.1:9");
                assert_eq!(prefix, "10.1.1.1/32");
                assert_eq!((*count, *max), (PORT_RANGES + 1, PORT_RANGES));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("10.1.1.1:9"), "{err}");
    }

    #[test]
    fn covering_rules_do_not_open_metadata_endpoints_but_naming_one_does() {
        let meta = Ipv4Addr::new(169, 254, 169, 254);
        let entries = compile_allow(&rules(&["0.0.0.0/0:80", "[::/0]:80"]), 1).unwrap();
        for m in METADATA {
            let e = entry(&entries, 64 + 128, m.octets());
            assert_eq!(e.ports.count, 0, "{m}");
            assert!(!e.ports.allows(80));
        }
        // A rule for the link-local /16 covers it too.
        let entries = compile_allow(&rules(&["169.254.0.0/16:80"]), 1).unwrap();
        assert!(!entry(&entries, 64 + 128, v4_key(meta.octets()))
            .ports
            .allows(80));
        // Only the metadata addresses a rule covers get an entry.
        let entries = compile_allow(&rules(&["10.0.0.0/8:80"]), 1).unwrap();
        assert_eq!(entries.len(), 1);
        // Naming the address opens it.
        let named = rules(&["0.0.0.0/0:80", "169.254.169.254:80"]);
        assert!(names_exactly(&named, meta.to_ipv6_mapped()));
        let entries = compile_allow(&named, 1).unwrap();
        assert!(entry(&entries, 64 + 128, v4_key(meta.octets()))
            .ports
            .allows(80));
        assert!(is_metadata(meta.to_ipv6_mapped()));
        assert!(!is_metadata(Ipv4Addr::new(169, 254, 1, 1).to_ipv6_mapped()));
    }

    #[test]
    fn tcp_ports_merges_across_rules() {
        let r = rules(&[
            "10.0.0.1:443",
            "[::1]:440-445",
            "10.0.0.2:80",
            "10.0.0.3:81",
        ]);
        assert_eq!(
            tcp_ports(&r),
            [PortRange { lo: 80, hi: 81 }, PortRange { lo: 440, hi: 445 }]
        );
        assert!(tcp_ports(&[]).is_empty());
    }

    #[test]
    fn parse_ports_accepts_single_and_range() {
        assert_eq!(parse_ports("8080"), Ok(PortRange { lo: 8080, hi: 8080 }));
        assert_eq!(
            parse_ports("9000-9010"),
            Ok(PortRange { lo: 9000, hi: 9010 })
        );
        assert_eq!(parse_ports("1-65535"), Ok(PortRange { lo: 1, hi: 65535 }));
        assert_eq!(parse_ports("7-7").unwrap().to_string(), "7");
        assert_eq!(parse_ports("7-8").unwrap().to_string(), "7-8");
    }
}
