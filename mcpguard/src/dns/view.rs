//! What one server's resolver decides: which names it answers, which
//! addresses that opens in the server's egress map, and for how long.
//!
//! An allowed name does not open every address its upstream answer holds:
//! loopback, link-local and unspecified addresses (and their IPv4-mapped
//! forms) are the server's own host, reachable through a name only by DNS
//! rebinding, so they are refused unless the policy sets
//! `allow_local_answers`; cloud metadata endpoints are refused whatever it
//! says. An address a rule names itself (`169.254.169.254:80`) is never
//! refused. Refused addresses are removed from the answer the server gets,
//! and the `dns` record (verdict `deny`) says why.
//!
//! It also holds the per-call rules open now ([`DnsView::set_call_rules`],
//! switched by the daemon as calls start and end): their names are
//! answered only while they are open, the addresses those answers opened
//! close with them, and their address rules' entries are folded with the
//! startup ones, because both live in the same prefixes of the server's
//! map and one rule's ports must not hide another's.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{RData, RecordType},
};
use serde_json::json;
use thiserror::Error;
use tracing::warn;

use super::{forward, Transport};
use crate::{
    audit::Body,
    policy::{
        call_net::CallRules,
        compile_allow, host_entry, host_key,
        net::{is_metadata, names_exactly},
        HostRule, NetEntry, NetRule, PolicyError, PortRange,
    },
};

/// How long an address stays allowed after its TTL ran out: clients cache
/// a little past the TTL, and a connect racing the expiry should not fail.
pub const GRACE: Duration = Duration::from_secs(5);
/// Addresses one server's resolver may open at once; answers beyond that
/// are refused rather than growing the kernel map without bound.
const MAX_ADDRS: usize = 1024;
/// Longest TTL honoured: an answer cannot keep an address open for longer
/// than this without being asked again (an upstream may say 68 years).
const MAX_TTL: u32 = 86_400;
/// CNAME hops followed from the question, as resolvers bound them: a
/// hostile answer with thousands of chained aliases costs no more.
const MAX_CNAME_HOPS: usize = 16;

/// Installs and removes this server's entries in the kernel's allow map,
/// and writes its audit records.
pub trait MapSink: Send + Sync {
    fn install(&self, entry: &NetEntry) -> Result<(), String>;
    fn remove(&self, entry: &NetEntry);
    fn audit(&self, ts: SystemTime, body: Body);
    /// A record about a process that is not this server's (from `uid`,
    /// if known): it must not carry the server's name.
    fn stranger(&self, ts: SystemTime, body: Body, uid: Option<u32>);
}

/// Queries from outside the server, counted between records.
#[derive(Default)]
struct Strangers {
    last_record: Option<Instant>,
    pending: u64,
}

/// Least time between two `dns_stranger` records of one resolver.
const STRANGER_RECORD_EVERY: Duration = Duration::from_secs(1);

/// A query that names an allowed host, on its way upstream.
struct Question<'a> {
    msg: Message,
    /// Lowercase, without the trailing dot.
    name: String,
    qtype: String,
    /// The startup rules naming it.
    rules: Vec<&'a HostRule>,
    /// The per-call rules naming it, open when it was asked.
    call_rules: Vec<HostRule>,
}

/// One address opened by an answer: until when, for which ports, and for
/// which per-call rule (`None`: for startup rules).
struct Grant {
    until: Instant,
    ports: Vec<PortRange>,
    call: Option<HostRule>,
}

/// The per-call rules open now.
#[derive(Default)]
struct Calls {
    rules: CallRules,
    /// The entries of the startup address rules and these, folded, as
    /// last written; `None` until the first switch (the launch's own).
    entries: Option<Vec<NetEntry>>,
    /// The server is gone: nothing opens any more.
    closed: bool,
}

/// Why per-call rules could not be opened (or not all of them).
#[derive(Debug, Error)]
pub enum SwitchError {
    #[error("the server's resolver is closed")]
    Closed,
    #[error("folding the per-call rules with the startup ones: {0}")]
    Fold(#[from] PolicyError),
    #[error("writing the server's allow map: {0}")]
    Map(String),
}

/// One server's DNS policy and the addresses its answers opened.
pub struct DnsView {
    cgroup: u64,
    hosts: Vec<HostRule>,
    static_rules: Vec<NetRule>,
    /// The address rules whose entries the launch installed (the startup
    /// ones and the hosts file's): what per-call entries fold with.
    installed: Vec<NetRule>,
    upstream: Option<SocketAddr>,
    /// `[network] allow_local_answers`.
    allow_local: bool,
    /// `[network] min_ttl`: answers keep their addresses open at least
    /// this many seconds.
    min_ttl: u32,
    sink: Box<dyn MapSink>,
    grants: Mutex<HashMap<Ipv6Addr, Vec<Grant>>>,
    /// Taken after `grants` when both are.
    calls: Mutex<Calls>,
    /// By transport: UDP, TCP.
    strangers: [Mutex<Strangers>; 2],
}

/// The server's own host: loopback, link-local (fe80::/10, 169.254/16)
/// and "this host" (`::`, 0.0.0.0/8), IPv4-mapped forms included.
pub(crate) fn is_local(addr: Ipv6Addr) -> bool {
    match addr.to_ipv4_mapped() {
        Some(v4) => v4.is_loopback() || v4.is_link_local() || v4.octets()[0] == 0,
        None => {
            addr.is_loopback() || addr.is_unspecified() || (addr.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// The v4-mapped form for IPv4, as the kernel programs look it up.
fn key_addr(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn show(addr: &Ipv6Addr) -> String {
    match addr.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => addr.to_string(),
    }
}

/// A response with no answers and `rcode`, echoing the query's question.
fn refusal(query: &Message, rcode: ResponseCode) -> Option<Vec<u8>> {
    let mut resp = Message::error_msg(query.metadata.id, query.metadata.op_code, rcode);
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.queries = query.queries.clone();
    resp.to_vec().ok()
}

/// SERVFAIL for raw query bytes, if they parse.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    refusal(&Message::from_vec(query).ok()?, ResponseCode::ServFail)
}

impl DnsView {
    pub fn new(
        cgroup: u64,
        hosts: Vec<HostRule>,
        static_rules: Vec<NetRule>,
        upstream: Option<SocketAddr>,
        allow_local: bool,
        sink: Box<dyn MapSink>,
    ) -> DnsView {
        DnsView {
            cgroup,
            hosts,
            installed: static_rules.clone(),
            static_rules,
            upstream,
            allow_local,
            min_ttl: 0,
            sink,
            grants: Mutex::new(HashMap::new()),
            calls: Mutex::default(),
            strangers: Default::default(),
        }
    }

    /// Keeps every answer's addresses open at least `secs` seconds, for
    /// clients that cache lookups longer than their TTL.
    pub fn with_min_ttl(mut self, secs: u32) -> DnsView {
        self.min_ttl = secs;
        self
    }

    /// The address rules whose entries the launch installed, when more
    /// than the resolver's own (the hosts file's).
    pub fn with_installed(mut self, rules: Vec<NetRule>) -> DnsView {
        self.installed = rules;
        self
    }

    /// The server's cgroup id: only its sockets are answered.
    pub fn cgroup(&self) -> u64 {
        self.cgroup
    }

    /// Count a query from outside the server (not answered), and record
    /// it unless this resolver recorded one over the same transport less
    /// than a second ago; the record's count covers the queries between.
    pub fn stranger(&self, transport: Transport, peer: SocketAddr, uid: Option<u32>) {
        let slot = &self.strangers[usize::from(transport == Transport::Tcp)];
        let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
        s.pending += 1;
        let now = Instant::now();
        if s.last_record
            .is_some_and(|t| now.duration_since(t) < STRANGER_RECORD_EVERY)
        {
            return;
        }
        let count = std::mem::take(&mut s.pending);
        s.last_record = Some(now);
        drop(s);
        self.sink.stranger(
            SystemTime::now(),
            Body::DnsStranger {
                transport: transport.name().into(),
                peer: peer.to_string(),
                count,
            },
            uid,
        );
    }

    fn grants(&self) -> MutexGuard<'_, HashMap<Ipv6Addr, Vec<Grant>>> {
        self.grants.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn calls(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The address rules in force: the startup ones and the open calls'.
    fn in_force(&self, calls: &Calls) -> Vec<NetRule> {
        let mut rules = self.static_rules.clone();
        rules.extend(calls.rules.allow.iter().cloned());
        rules
    }

    fn record(
        &self,
        qname: &str,
        qtype: &str,
        transport: Transport,
        verdict: &str,
        extra: serde_json::Value,
    ) {
        self.sink.audit(
            SystemTime::now(),
            Body::Dns {
                qname: qname.to_owned(),
                qtype: qtype.to_owned(),
                transport: transport.name().into(),
                verdict: verdict.into(),
                detail: extra,
            },
        );
    }

    /// Answer one query; `None` when nothing sensible can be sent back
    /// (a message too broken to echo).
    pub fn answer(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let q = match self.question(query, transport) {
            Ok(q) => q,
            Err(early) => return early,
        };
        let forwarded = match self.upstream {
            Some(up) => forward(up, query, transport),
            None => Err(std::io::Error::other("no upstream resolver configured")),
        };
        match forwarded {
            Ok(reply) => self.pass_on(&q, transport, reply),
            Err(error) => {
                warn!(%error, upstream = ?self.upstream, "upstream DNS");
                self.record(
                    &q.name,
                    &q.qtype,
                    transport,
                    "allow",
                    json!({ "rcode": "SERVFAIL", "error": error.to_string() }),
                );
                refusal(&q.msg, ResponseCode::ServFail)
            }
        }
    }

    /// The one question of `query` and the rules naming it; a query that
    /// goes no further is recorded, and `Err` holds its answer.
    fn question(
        &self,
        query: &[u8],
        transport: Transport,
    ) -> Result<Question<'_>, Option<Vec<u8>>> {
        let Ok(msg) = Message::from_vec(query) else {
            self.record(
                "",
                "",
                transport,
                "deny",
                json!({ "error": "malformed query", "bytes": query.len() }),
            );
            return Err(None);
        };
        if msg.metadata.message_type != MessageType::Query || msg.queries.len() != 1 {
            self.record(
                "",
                "",
                transport,
                "deny",
                json!({ "error": "not a single-question query" }),
            );
            return Err(refusal(&msg, ResponseCode::FormErr));
        }
        let q = &msg.queries[0];
        let name = q
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let qtype = q.query_type().to_string();
        // A label holding a dot (or any byte printed as an escape) makes
        // the text above end like an allowed name while the upstream walks
        // another zone (`x\.example.com` is label `x.example` under `com`).
        if name.contains('\\') {
            self.record(
                &name,
                &qtype,
                transport,
                "deny",
                json!({ "rcode": "REFUSED", "error": "name with escaped characters" }),
            );
            return Err(refusal(&msg, ResponseCode::Refused));
        }
        let rules: Vec<&HostRule> = self.hosts.iter().filter(|h| h.matches(&name)).collect();
        let call_rules: Vec<HostRule> = (self.calls().rules.hosts.iter())
            .filter(|h| h.matches(&name))
            .cloned()
            .collect();
        if rules.is_empty() && call_rules.is_empty() {
            self.record(
                &name,
                &qtype,
                transport,
                "deny",
                json!({ "rcode": "NXDOMAIN" }),
            );
            return Err(refusal(&msg, ResponseCode::NXDomain));
        }
        Ok(Question {
            msg,
            name,
            qtype,
            rules,
            call_rules,
        })
    }

    /// The upstream's `reply` to `q`, less the addresses that must not be
    /// opened (rebinding, metadata); the rest are opened on the rules'
    /// ports, and the answer is recorded.
    fn pass_on(&self, q: &Question<'_>, transport: Transport, reply: Vec<u8>) -> Option<Vec<u8>> {
        let mut ports: Vec<PortRange> = q.rules.iter().map(|r| r.ports).collect();
        ports.sort_unstable();
        ports.dedup();
        let (addrs, rcode, truncated) = match Message::from_vec(&reply) {
            Ok(resp) => (
                chain_addrs(&resp, &q.name),
                resp.metadata.response_code.to_string(),
                resp.metadata.truncation,
            ),
            Err(_) => (Vec::new(), "unparsable".into(), false),
        };
        let (addrs, refused): (Vec<_>, Vec<_>) = addrs
            .into_iter()
            .partition(|(a, _)| self.refusal(key_addr(*a)).is_none());
        let reply = if refused.is_empty() {
            reply
        } else {
            match strip(&reply, &refused) {
                Some(r) => r,
                None => return refusal(&q.msg, ResponseCode::ServFail),
            }
        };
        let mut opening = vec![(None, ports)];
        opening.extend(
            q.call_rules
                .iter()
                .map(|r| (Some(r.clone()), vec![r.ports])),
        );
        let opened = self.open_for(&addrs, &opening);
        let mut detail = json!({
            "rcode": rcode,
            "answers": addrs.iter().map(|(a, ttl)| json!({ "addr": show(&key_addr(*a)), "ttl": ttl })).collect::<Vec<_>>(),
            "opened": opened,
            "truncated": truncated,
            "rule": q.rules.iter().copied().chain(&q.call_rules).map(|r| r.text.as_str()).collect::<Vec<_>>(),
        });
        self.add_refused(&mut detail, &refused);
        let verdict = if refused.is_empty() { "allow" } else { "deny" };
        self.record(&q.name, &q.qtype, transport, verdict, detail);
        Some(reply)
    }

    /// Name the `refused` addresses in a record's `detail`, and the reason
    /// for the record.
    fn add_refused(&self, detail: &mut serde_json::Value, refused: &[(IpAddr, u32)]) {
        let reasons: Vec<&str> = refused
            .iter()
            .filter_map(|(a, _)| self.refusal(key_addr(*a)))
            .collect();
        // The metadata service is the sharper of the two.
        if let Some(reason) = reasons
            .iter()
            .find(|r| **r == "metadata")
            .or(reasons.first())
        {
            detail["reason"] = json!(reason);
            detail["refused"] = refused
                .iter()
                .zip(&reasons)
                .map(|((a, _), why)| json!({ "addr": show(&key_addr(*a)), "reason": why }))
                .collect();
        }
    }

    /// Why an answer's address must not be opened, if it must not. An
    /// address a rule names itself is reachable anyway and never refused.
    fn refusal(&self, addr: Ipv6Addr) -> Option<&'static str> {
        if names_exactly(&self.in_force(&self.calls()), addr) {
            None
        } else if is_metadata(addr) {
            Some("metadata")
        } else if !self.allow_local && is_local(addr) {
            Some("rebinding")
        } else {
            None
        }
    }

    /// Allow each address for its TTL plus grace; returns how many were
    /// opened.
    #[cfg(test)]
    fn open(&self, addrs: &[(IpAddr, u32)], ports: &[PortRange]) -> usize {
        self.open_for(addrs, &[(None, ports.to_vec())])
    }

    /// [`DnsView::open`] for each (per-call rule, ports) of `opening`; a
    /// per-call rule closed since the question was asked opens nothing.
    fn open_for(
        &self,
        addrs: &[(IpAddr, u32)],
        opening: &[(Option<HostRule>, Vec<PortRange>)],
    ) -> usize {
        let mut grants = self.grants();
        let calls = self.calls();
        let opening: Vec<_> = (opening.iter())
            .filter(|(call, ports)| {
                !ports.is_empty()
                    && !calls.closed
                    && call.as_ref().is_none_or(|r| calls.rules.hosts.contains(r))
            })
            .collect();
        if opening.is_empty() {
            return 0;
        }
        let rules = self.in_force(&calls);
        let mut opened = 0;
        for (ip, ttl) in addrs {
            let addr = key_addr(*ip);
            if !grants.contains_key(&addr) && grants.len() >= MAX_ADDRS {
                warn!(
                    cgroup = self.cgroup,
                    "resolver address table full; answer not opened"
                );
                continue;
            }
            let until = Instant::now()
                + Duration::from_secs(u64::from((*ttl).max(self.min_ttl).min(MAX_TTL)))
                + GRACE;
            let list = grants.entry(addr).or_default();
            // One grant per port set and rule, extended by each answer:
            // repeated queries must not grow the list.
            for (call, ports) in &opening {
                match list
                    .iter_mut()
                    .find(|g| g.ports == *ports && g.call == *call)
                {
                    Some(g) => g.until = g.until.max(until),
                    None => list.push(Grant {
                        until,
                        ports: ports.clone(),
                        call: call.clone(),
                    }),
                }
            }
            if self.sync(&rules, addr, list) {
                opened += 1;
            }
        }
        opened
    }

    /// Make the kernel entry for `addr` match its live grants (plus the
    /// address `rules` in force); returns whether a grant's entry is
    /// installed.
    fn sync(&self, rules: &[NetRule], addr: Ipv6Addr, live: &[Grant]) -> bool {
        let mut ports: Vec<PortRange> = live.iter().flat_map(|g| g.ports.iter().copied()).collect();
        ports.sort_unstable();
        ports.dedup();
        if ports.is_empty() {
            // Back to what the static rules say: their own /128 entry for
            // this address if they have one, else no entry (the address
            // falls to a shorter static prefix, or is denied).
            match host_entry(rules, self.cgroup, addr, &[]) {
                Ok(Some(e)) => {
                    if let Err(error) = self.sink.install(&e) {
                        warn!(%error, "restoring a static allow entry");
                    }
                }
                _ => self.sink.remove(&host_key(self.cgroup, addr)),
            }
            return false;
        }
        match host_entry(rules, self.cgroup, addr, &ports) {
            Ok(Some(e)) => match self.sink.install(&e) {
                Ok(()) => true,
                Err(error) => {
                    warn!(%error, "installing a resolved address");
                    false
                }
            },
            Ok(None) => false,
            Err(error) => {
                warn!(%error, "a resolved address needs more port ranges than an entry holds");
                false
            }
        }
    }

    /// Drop grants whose time is up and update the kernel map.
    pub fn expire(&self) {
        let now = Instant::now();
        let mut grants = self.grants();
        let rules = self.in_force(&self.calls());
        let mut empty = Vec::new();
        for (addr, list) in grants.iter_mut() {
            let before = list.len();
            list.retain(|g| g.until > now);
            if list.len() != before {
                self.sync(&rules, *addr, list);
                if list.is_empty() {
                    empty.push(*addr);
                }
            }
        }
        for addr in empty {
            grants.remove(&addr);
        }
    }

    /// Closes every address opened and every per-call rule, for good
    /// (teardown).
    pub fn close_all(&self) {
        let mut grants = self.grants();
        let mut calls = self.calls();
        if let Err(error) = self.switch(&mut grants, &mut calls, CallRules::default()) {
            warn!(cgroup = self.cgroup, %error, "closing the per-call rules");
        }
        calls.closed = true;
        let rules = self.in_force(&calls);
        for (addr, list) in grants.iter_mut() {
            list.clear();
            self.sync(&rules, *addr, list);
        }
        grants.clear();
    }

    /// Opens `rules`, the union of the per-call rules of the calls in
    /// flight, in place of those open before: their address rules'
    /// entries, folded with the startup ones, and their names in this
    /// resolver; what an answer opened for a per-call name no longer open
    /// is closed. On an error the rules are still in force (what was
    /// written stays until the next switch closes it), except that rules
    /// that cannot be folded are not opened at all.
    pub fn set_call_rules(&self, rules: CallRules) -> Result<(), SwitchError> {
        let mut grants = self.grants();
        let mut calls = self.calls();
        if calls.closed && !rules.is_empty() {
            return Err(SwitchError::Closed);
        }
        self.switch(&mut grants, &mut calls, rules)
    }

    fn switch(
        &self,
        grants: &mut HashMap<Ipv6Addr, Vec<Grant>>,
        calls: &mut Calls,
        rules: CallRules,
    ) -> Result<(), SwitchError> {
        let compile = |extra: &[NetRule]| {
            let mut all = self.installed.clone();
            all.extend(extra.iter().cloned());
            compile_allow(&all, self.cgroup)
        };
        let new = compile(&rules.allow)?;
        let old = match calls.entries.take() {
            Some(old) => old,
            None => compile(&[])?,
        };
        let readdress = calls.rules.allow != rules.allow;
        calls.rules = rules;
        calls.entries = Some(new.clone());
        let mut resync = Vec::new();
        for (addr, list) in grants.iter_mut() {
            let before = list.len();
            list.retain(|g| {
                g.call
                    .as_ref()
                    .is_none_or(|r| calls.rules.hosts.contains(r))
            });
            if readdress || list.len() != before {
                resync.push(*addr);
            }
        }
        // An address an answer opened has its entry written by `sync`.
        let answered = |e: &NetEntry| {
            e.prefix_len == host_key(self.cgroup, Ipv6Addr::UNSPECIFIED).prefix_len
                && grants.contains_key(&Ipv6Addr::from(e.key.addr))
        };
        let mut result = Ok(());
        for entry in new.iter().filter(|e| !old.contains(e) && !answered(e)) {
            if let Err(error) = self.sink.install(entry) {
                result = Err(SwitchError::Map(error));
            }
        }
        let gone = |e: &&NetEntry| {
            !new.iter()
                .any(|n| n.prefix_len == e.prefix_len && n.key == e.key)
        };
        for entry in old.iter().filter(gone).filter(|e| !answered(e)) {
            self.sink.remove(entry);
        }
        let in_force = self.in_force(calls);
        for addr in resync {
            let list = grants.get(&addr).map(Vec::as_slice).unwrap_or_default();
            self.sync(&in_force, addr, list);
        }
        grants.retain(|_, list| !list.is_empty());
        result
    }
}

/// `reply` without the A/AAAA records of `refused` addresses; `None` if it
/// cannot be re-encoded.
fn strip(reply: &[u8], refused: &[(IpAddr, u32)]) -> Option<Vec<u8>> {
    let mut resp = Message::from_vec(reply).ok()?;
    let gone = |ip: IpAddr| refused.iter().any(|(a, _)| *a == ip);
    resp.answers.retain(|r| match &r.data {
        RData::A(a) => !gone(IpAddr::V4(a.0)),
        RData::AAAA(a) => !gone(IpAddr::V6(a.0)),
        _ => true,
    });
    resp.to_vec().ok()
}

/// A/AAAA answers for `qname` or any name its CNAME chain leads to, with
/// their TTLs. Records for unrelated owners (a hostile upstream's extras)
/// are ignored.
fn chain_addrs(resp: &Message, qname: &str) -> Vec<(IpAddr, u32)> {
    let norm =
        |n: &hickory_proto::rr::Name| n.to_ascii().trim_end_matches('.').to_ascii_lowercase();
    let mut names = HashSet::from([qname.to_owned()]);
    // CNAMEs may come in any order; follow until nothing new is added, at
    // most MAX_CNAME_HOPS rounds (each adds every alias one hop further).
    for _ in 0..MAX_CNAME_HOPS {
        let before = names.len();
        for r in &resp.answers {
            if let RData::CNAME(target) = &r.data {
                if names.contains(&norm(&r.name)) {
                    names.insert(norm(&target.0));
                }
            }
        }
        if names.len() == before {
            break;
        }
    }
    resp.answers
        .iter()
        .filter(|r| names.contains(&norm(&r.name)))
        .filter_map(|r| match (&r.data, r.record_type()) {
            (RData::A(a), RecordType::A) => Some((IpAddr::V4(a.0), r.ttl)),
            (RData::AAAA(a), RecordType::AAAA) => Some((IpAddr::V6(a.0), r.ttl)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod call_tests;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
