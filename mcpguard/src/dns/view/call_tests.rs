//! Per-call rules in the resolver: what the allow map gets as they open
//! and close, next to the startup rules and the answers' addresses.

use std::{
    net::Ipv4Addr,
    str::FromStr,
    sync::{Arc, Mutex},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::Name,
};
use mcpguard_common::policy::CGROUP_BITS;

use super::*;
use crate::policy::net::{parse_host_rule, parse_rule};

/// A map that keeps its writes as `+ADDR/LEN PORTS` and `-ADDR/LEN`.
#[derive(Default)]
struct Map(Mutex<Vec<String>>);

fn show_entry(e: &NetEntry) -> String {
    let addr = Ipv6Addr::from(e.key.addr);
    let len = e.prefix_len - CGROUP_BITS;
    match addr.to_ipv4_mapped() {
        Some(v4) => format!("{v4}/{}", len - 96),
        None => format!("{addr}/{len}"),
    }
}

impl MapSink for Arc<Map> {
    fn install(&self, e: &NetEntry) -> Result<(), String> {
        let ports: Vec<String> = e.ports.ranges[..e.ports.count as usize]
            .iter()
            .map(|r| r.lo.to_string())
            .collect();
        let op = format!("+{} {}", show_entry(e), ports.join(","));
        self.0.lock().unwrap().push(op);
        Ok(())
    }
    fn remove(&self, e: &NetEntry) {
        self.0.lock().unwrap().push(format!("-{}", show_entry(e)));
    }
    fn audit(&self, _: SystemTime, _: Body) {}
    fn stranger(&self, _: SystemTime, _: Body, _: Option<u32>) {}
}

impl Map {
    fn take(&self) -> Vec<String> {
        let mut ops = std::mem::take(&mut *self.0.lock().unwrap());
        ops.sort();
        ops
    }
}

fn view(hosts: &[&str], statics: &[&str]) -> (DnsView, Arc<Map>) {
    let map = Arc::new(Map::default());
    let view = DnsView::new(
        9,
        hosts.iter().map(|h| parse_host_rule(h).unwrap()).collect(),
        statics.iter().map(|r| parse_rule(r).unwrap()).collect(),
        None,
        false,
        Box::new(map.clone()),
    );
    (view, map)
}

fn rules(texts: &[&str]) -> CallRules {
    let mut out = CallRules::default();
    for t in texts {
        match parse_rule(t) {
            Ok(r) => out.allow.push(r),
            Err(_) => out.hosts.push(parse_host_rule(t).unwrap()),
        }
    }
    out
}

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

#[test]
fn address_rules_open_folded_with_the_startup_ones_and_close_without_touching_them() {
    let (view, map) = view(&[], &["10.0.0.0/8:443"]);
    view.set_call_rules(rules(&["10.1.0.0/16:80", "192.0.2.1:8080"]))
        .unwrap();
    // The /16 carries the /8's port too; the /8 itself is not rewritten.
    assert_eq!(map.take(), ["+10.1.0.0/16 80,443", "+192.0.2.1/32 8080"]);
    // Same rules again (a second call of the tool): nothing to write.
    view.set_call_rules(rules(&["10.1.0.0/16:80", "192.0.2.1:8080"]))
        .unwrap();
    assert_eq!(map.take(), Vec::<String>::new());
    view.set_call_rules(CallRules::default()).unwrap();
    assert_eq!(map.take(), ["-10.1.0.0/16", "-192.0.2.1/32"]);
}

#[test]
fn a_call_rule_on_a_startup_prefix_widens_it_and_gives_it_back() {
    let (view, map) = view(&[], &["192.0.2.1:443"]);
    view.set_call_rules(rules(&["192.0.2.1:80"])).unwrap();
    assert_eq!(map.take(), ["+192.0.2.1/32 80,443"]);
    view.set_call_rules(CallRules::default()).unwrap();
    // Restored, never removed: the startup rule still holds it.
    assert_eq!(map.take(), ["+192.0.2.1/32 443"]);
}

#[test]
fn an_answered_address_in_a_call_rule_gets_both_and_keeps_its_own_after() {
    let (view, map) = view(&["api.test:443"], &[]);
    view.open(
        &[(v4([192, 0, 2, 9]), 300)],
        &[PortRange { lo: 443, hi: 443 }],
    );
    assert_eq!(map.take(), ["+192.0.2.9/32 443"]);
    view.set_call_rules(rules(&["192.0.2.0/24:80"])).unwrap();
    // The answer's /32 would hide the /24's port: it is folded in.
    assert_eq!(map.take(), ["+192.0.2.0/24 80", "+192.0.2.9/32 80,443"]);
    view.set_call_rules(CallRules::default()).unwrap();
    assert_eq!(map.take(), ["+192.0.2.9/32 443", "-192.0.2.0/24"]);
}

fn asks(view: &DnsView, name: &str) -> bool {
    let mut q = Message::new(1, MessageType::Query, OpCode::Query);
    q.add_query(Query::query(
        Name::from_str(&format!("{name}.")).unwrap(),
        RecordType::A,
    ));
    view.question(&q.to_vec().unwrap(), Transport::Udp).is_ok()
}

#[test]
fn names_are_answered_only_while_open_and_their_answers_close_with_them() {
    let (view, map) = view(&["pypi.org:443"], &[]);
    assert!(asks(&view, "pypi.org") && !asks(&view, "example.com"));
    let fetch = rules(&["*:443"]);
    view.set_call_rules(fetch.clone()).unwrap();
    assert!(asks(&view, "example.com"));
    // An answer during the call opens for the call; one for a startup
    // name stays open after it.
    let call = Some(fetch.hosts[0].clone());
    let p443 = vec![PortRange { lo: 443, hi: 443 }];
    view.open_for(
        &[(v4([192, 0, 2, 5]), 300)],
        &[(call.clone(), p443.clone())],
    );
    view.open_for(&[(v4([192, 0, 2, 6]), 300)], &[(None, p443.clone())]);
    assert_eq!(map.take(), ["+192.0.2.5/32 443", "+192.0.2.6/32 443"]);
    view.set_call_rules(CallRules::default()).unwrap();
    assert_eq!(map.take(), ["-192.0.2.5/32"]);
    assert!(!asks(&view, "example.com"));
    assert_eq!(view.grants().len(), 1);
    // An answer that comes back after its call ended opens nothing.
    view.open_for(&[(v4([192, 0, 2, 7]), 300)], &[(call, p443)]);
    assert_eq!(map.take(), Vec::<String>::new());
}

#[test]
fn teardown_closes_the_calls_rules_and_nothing_opens_after() {
    let (view, map) = view(&[], &["10.0.0.0/8:443"]);
    view.set_call_rules(rules(&["192.0.2.1:80", "*:443"]))
        .unwrap();
    map.take();
    view.close_all();
    assert_eq!(map.take(), ["-192.0.2.1/32"]);
    assert!(matches!(
        view.set_call_rules(rules(&["192.0.2.1:80"])),
        Err(SwitchError::Closed)
    ));
    view.set_call_rules(CallRules::default()).unwrap();
    assert_eq!(map.take(), Vec::<String>::new());
}
