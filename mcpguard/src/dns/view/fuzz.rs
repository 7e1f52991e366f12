//! Fuzzing the resolver's decisions: mutated and generated queries from a
//! server, answered by a loopback upstream with mutated and generated
//! answers (long and looping CNAME chains, stray records, huge TTLs).
//!
//! Properties, per query: no panic, no stall; a query that does not parse
//! gets nothing, one that is refused gets a parseable refusal with its id;
//! no address is opened for a refused name or for an address the answer
//! does not carry; an allowed query gets the upstream's answer unchanged;
//! the grant table stays within its limits however often a name is asked.

use std::{
    net::{Ipv4Addr, Ipv6Addr, UdpSocket},
    str::FromStr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{
        rdata::{A, AAAA, CNAME},
        Name, RData, Record, RecordType,
    },
};

use super::*;
use crate::{
    fuzz::{self, Corpus, Rng},
    policy::net::{parse_host_rule, parse_rule},
};

const NAMES: &[&str] = &[
    "api.example.com",
    "API.Example.COM",
    "x.example.org",
    "a.b.example.org",
    "example.org",
    "evil.test",
    "cdn.example.net",
];

const DICT: &[&[u8]] = &[
    b"\x07example\x03com\x00",
    b"\x03org\x00",
    b"\xc0\x0c",
    b"\xc0\x00",
    b"\x00\x05\x00\x01",
    b"\x00\x01\x00\x01",
    b"\x00\x1c\x00\x01",
    b"\xff\xff\xff\xff",
    b"\x00\x00",
    b"\x3f",
    b".",
];

/// What the sink saw: addresses installed, in order.
#[derive(Default)]
struct Installs(Mutex<Vec<Ipv6Addr>>);

impl MapSink for Arc<Installs> {
    fn install(&self, entry: &NetEntry) -> Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .push(Ipv6Addr::from(u128::from_be_bytes(entry.key.addr)));
        Ok(())
    }
    fn remove(&self, _: &NetEntry) {}
    fn audit(&self, _: SystemTime, _: Body) {}
    fn stranger(&self, _: SystemTime, _: Body, _: Option<u32>) {}
}

/// A loopback resolver that answers every query with `next`, its id set to
/// the query's.
struct Upstream {
    addr: SocketAddr,
    next: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    fn start() -> Upstream {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let next: Arc<Mutex<Vec<u8>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (next, stop) = (next.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let mut reply = next.lock().unwrap().clone();
                    if n >= 2 {
                        reply[..2].copy_from_slice(&buf[..2]);
                    }
                    let _ = sock.send_to(&reply, from);
                }
            })
        };
        Upstream {
            addr,
            next,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn name(text: &str) -> Name {
    Name::from_str(&format!("{text}.")).unwrap()
}

fn query(rng: &mut Rng) -> Vec<u8> {
    let mut m = Message::new(rng.next_u64() as u16, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    let qname = if rng.one_in(8) {
        // A label holding a dot: reads as `...example.org` when printed.
        Name::from_labels(vec![&b"leak"[..], b"x.example", b"org"]).unwrap()
    } else {
        name(NAMES[rng.below(NAMES.len())])
    };
    let qtype = *rng.pick(&[RecordType::A, RecordType::AAAA, RecordType::TXT]);
    m.add_query(Query::query(qname.clone(), qtype));
    if rng.one_in(16) {
        m.add_query(Query::query(qname, RecordType::A));
    }
    m.to_vec().unwrap()
}

fn answer(rng: &mut Rng, qname: &str) -> Vec<u8> {
    let mut m = Message::new(0, MessageType::Response, OpCode::Query);
    let ttl = *rng.pick(&[0, 30, 3600, u32::MAX]);
    let rec = |owner: &str, data: RData| Record::from_rdata(name(owner), ttl, data);
    let mut owner = qname.to_string();
    // A CNAME chain, sometimes long, sometimes back to its start.
    let hops = if rng.one_in(8) { 200 } else { rng.below(4) };
    let mut chain = Vec::new();
    for i in 0..hops {
        let target = if rng.one_in(50) {
            qname.to_string()
        } else {
            format!("c{i}.cdn.example.net")
        };
        chain.push(rec(&owner, RData::CNAME(CNAME(name(&target)))));
        owner = target;
    }
    if rng.one_in(2) {
        chain.reverse();
    }
    m.answers = chain;
    for _ in 0..rng.below(4) {
        // Few distinct addresses, so answers keep hitting the same grants.
        let data = if rng.one_in(2) {
            RData::A(A(Ipv4Addr::new(192, 0, 2, rng.below(8) as u8)))
        } else {
            RData::AAAA(AAAA(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                0,
                rng.below(8) as u16,
            )))
        };
        let at = if rng.one_in(4) {
            "evil.test"
        } else {
            owner.as_str()
        };
        m.answers.push(rec(at, data));
    }
    m.to_vec().unwrap()
}

/// Length-prefixed query, then the answer the upstream gives.
fn input(query: &[u8], answer: &[u8]) -> Vec<u8> {
    let mut v = (query.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(query);
    v.extend_from_slice(answer);
    v
}

fn split(input: &[u8]) -> (&[u8], Vec<u8>) {
    let len = input
        .get(..2)
        .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    let rest = input.get(2..).unwrap_or_default();
    let (q, a) = rest.split_at(len.min(rest.len()));
    // The upstream answers with at least an id, and no more than fits the
    // resolver's receive buffer (a larger datagram arrives truncated).
    let mut a = a[..a.len().min(4000)].to_vec();
    a.resize(a.len().max(2), 0);
    (q, a)
}

fn generate(corpus: &Corpus, rng: &mut Rng) -> Vec<u8> {
    if rng.one_in(2) {
        return corpus.mutant(rng);
    }
    let q = query(rng);
    let qname = Message::from_vec(&q).unwrap().queries[0]
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_string();
    let a = answer(rng, &qname);
    let one = input(&q, &a);
    if rng.one_in(3) {
        Corpus {
            seeds: vec![one],
            dict: corpus.dict.clone(),
        }
        .mutant(rng)
    } else {
        one
    }
}

struct Harness {
    view: DnsView,
    installs: Arc<Installs>,
    upstream: Upstream,
    rules: usize,
    n: std::cell::Cell<u64>,
}

impl Harness {
    fn new() -> Harness {
        let upstream = Upstream::start();
        let installs = Arc::new(Installs::default());
        let hosts = vec![
            parse_host_rule("api.example.com:443").unwrap(),
            parse_host_rule("*.example.org:80-81").unwrap(),
            parse_host_rule("*.example.org:443").unwrap(),
        ];
        let rules = hosts.len();
        let view = DnsView::new(
            5,
            hosts,
            vec![parse_rule("192.0.2.0/29:22").unwrap()],
            Some(upstream.addr),
            false,
            Box::new(installs.clone()),
        );
        Harness {
            view,
            installs,
            upstream,
            rules,
            n: std::cell::Cell::new(0),
        }
    }

    fn check(&self, input: &[u8]) {
        let (query, answer) = split(input);
        *self.upstream.next.lock().unwrap() = answer.clone();
        let before = self.installs.0.lock().unwrap().len();
        let reply = self.view.answer(query, Transport::Udp);
        let installed: Vec<Ipv6Addr> = self.installs.0.lock().unwrap()[before..].to_vec();
        match Message::from_vec(query) {
            Err(_) => {
                assert!(reply.is_none(), "an answer to a query that does not parse");
                assert!(installed.is_empty());
            }
            Ok(q) => {
                let reply = reply.expect("a parsed query gets an answer");
                let refused = || {
                    let r = Message::from_vec(&reply).expect("refusals parse");
                    assert_eq!(r.metadata.id, q.metadata.id, "a refusal with another id");
                    assert!(installed.is_empty(), "a refused query opened an address");
                };
                if q.metadata.message_type != MessageType::Query || q.queries.len() != 1 {
                    return refused();
                }
                let qname = q.queries[0]
                    .name()
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                if qname.contains('\\') || !self.view.hosts.iter().any(|h| h.matches(&qname)) {
                    return refused();
                }
                // Loopback, link-local and metadata addresses are cut from
                // an answer's chain (rebinding); an answer without them
                // passes unchanged.
                let addrs_of = |bytes: &[u8]| -> Vec<Ipv6Addr> {
                    Message::from_vec(bytes)
                        .map(|m| {
                            m.answers
                                .iter()
                                .filter_map(|r| match &r.data {
                                    RData::A(a) => Some(a.0.to_ipv6_mapped()),
                                    RData::AAAA(a) => Some(a.0),
                                    _ => None,
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                };
                if addrs_of(&answer)
                    .iter()
                    .any(|a| self.view.refusal(*a).is_some())
                {
                    // Cut from the name's chain, never opened.
                    assert!(
                        installed.iter().all(|a| self.view.refusal(*a).is_none()),
                        "a loopback, link-local or metadata address was opened"
                    );
                } else {
                    let mut expected = answer;
                    expected[..2].copy_from_slice(&query[..2]);
                    assert_eq!(reply, expected, "an allowed query's answer changed");
                }
                let carried = addrs_of(&reply);
                for addr in installed {
                    assert!(
                        carried.contains(&addr),
                        "{addr} opened but not in the answer"
                    );
                }
            }
        }
        let grants = self.view.grants();
        assert!(grants.len() <= MAX_ADDRS);
        for list in grants.values() {
            assert!(
                list.len() < 1 << self.rules,
                "{} grants for one address",
                list.len()
            );
        }
        drop(grants);
        self.n.set(self.n.get() + 1);
        if self.n.get().is_multiple_of(64) {
            self.view.expire();
        }
    }
}

#[test]
fn resolver_keeps_its_promises_on_mutated_queries_and_answers() {
    let mut rng = Rng::new(7);
    let seeds: Vec<Vec<u8>> = (0..32)
        .map(|_| {
            let q = query(&mut rng);
            input(&q, &answer(&mut rng, "api.example.com"))
        })
        .collect();
    let corpus = Corpus {
        seeds,
        dict: DICT.iter().map(|d| d.to_vec()).collect(),
    };
    let h = Harness::new();
    for seed in &corpus.seeds {
        h.check(seed);
    }
    let n = fuzz::run("dns", |rng| generate(&corpus, rng), |input| h.check(input));
    h.view.close_all();
    assert!(h.view.grants().is_empty());
    assert!(n > 0);
}
