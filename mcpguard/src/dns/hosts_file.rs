//! Names a policy allows that `/etc/hosts` answers.
//!
//! libc reads `/etc/hosts` before it asks DNS, so a name listed there never
//! reaches the server's resolver, and the resolver never opens its
//! address: a `registry.example:443` rule would fail for a registry the
//! machine maps in `/etc/hosts` (mirrors, split-horizon setups, test
//! hosts). At launch the daemon reads `/etc/hosts` itself and opens the
//! addresses it lists for allowed names, with the rule's ports, under the
//! same limits as DNS answers: loopback, link-local and unspecified
//! addresses only with `allow_local_answers`, metadata endpoints never.

use std::net::{IpAddr, Ipv6Addr};

use super::view::is_local;
use crate::policy::net::{is_metadata, HostRule, NetRule};

/// The system's hosts file.
pub const HOSTS_FILE: &str = "/etc/hosts";

/// `/etc/hosts` entries (its text) for names `hosts` allows, as static
/// allow rules.
pub fn rules(hosts: &[HostRule], text: &str, allow_local: bool) -> Vec<NetRule> {
    let mut out: Vec<NetRule> = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(addr) = words.next().and_then(|a| a.parse::<IpAddr>().ok()) else {
            continue;
        };
        let key = match addr {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        if is_metadata(key) || (is_local(key) && !allow_local) {
            continue;
        }
        for name in words {
            for rule in hosts.iter().filter(|r| r.matches(name)) {
                push_unique(&mut out, key, rule, name);
            }
        }
    }
    out
}

fn push_unique(out: &mut Vec<NetRule>, addr: Ipv6Addr, rule: &HostRule, name: &str) {
    if out.iter().any(|r| r.addr == addr && r.ports == rule.ports) {
        return;
    }
    out.push(NetRule {
        addr,
        prefix: 128,
        ports: rule.ports,
        text: format!("{} ({name} in {HOSTS_FILE})", rule.text),
    });
}

/// [`rules`] for the machine's own `/etc/hosts`; a missing or unreadable
/// file lists nothing.
pub fn system_rules(hosts: &[HostRule], allow_local: bool) -> Vec<NetRule> {
    if hosts.is_empty() {
        return Vec::new();
    }
    match std::fs::read_to_string(HOSTS_FILE) {
        Ok(text) => rules(hosts, &text, allow_local),
        Err(error) => {
            tracing::warn!(file = HOSTS_FILE, %error, "cannot read the hosts file; names in it open nothing");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::net::{parse_allow, AllowRule};

    fn host(rule: &str) -> HostRule {
        match parse_allow(rule).unwrap() {
            AllowRule::Host(h) => h,
            AllowRule::Addr(_) => panic!("{rule} is an address rule"),
        }
    }

    #[test]
    fn allowed_names_in_the_hosts_file_open_their_addresses() {
        let text = "127.0.0.1 localhost\n203.0.113.80 registry.npmjs.org pypi.org # mirror\n\
                    2001:db8::1 registry.npmjs.org\n169.254.169.254 metadata.example\n\
                    198.51.100.7 other.example\nnot-an-address x\n";
        let hosts = [
            host("registry.npmjs.org:443"),
            host("*.example:80"),
            host("localhost:8080"),
        ];
        let got: Vec<(String, String)> = rules(&hosts, text, false)
            .iter()
            .map(|r| (r.addr.to_canonical().to_string(), r.ports.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("203.0.113.80".to_owned(), "443".to_owned()),
                ("2001:db8::1".to_owned(), "443".to_owned()),
                ("198.51.100.7".to_owned(), "80".to_owned()),
            ]
        );
        // Loopback only when the policy lets answers be local.
        assert_eq!(rules(&hosts, text, true).len(), 4);
    }
}
