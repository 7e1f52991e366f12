//! The resolver's decisions without sockets: which answers count, and what
//! the allow map holds as grants come and go.

use std::{net::Ipv4Addr, str::FromStr, sync::Arc};

use hickory_proto::{
    op::{Message, MessageType, OpCode},
    rr::{
        rdata::{A, CNAME},
        Name, RData, Record,
    },
};

use super::*;
use crate::policy::net::{parse_host_rule, parse_rule};

fn rec(owner: &str, data: RData) -> Record {
    Record::from_rdata(Name::from_str(&format!("{owner}.")).unwrap(), 30, data)
}

#[test]
fn only_the_cname_chain_of_the_question_counts() {
    let mut m = Message::new(1, MessageType::Response, OpCode::Query);
    m.answers = vec![
        rec(
            "a.example",
            RData::CNAME(CNAME(Name::from_str("b.cdn.").unwrap())),
        ),
        rec(
            "b.cdn",
            RData::CNAME(CNAME(Name::from_str("c.cdn.").unwrap())),
        ),
        rec("c.cdn", RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))),
        // A hostile upstream's extra record for a name nobody asked about.
        rec("evil.example", RData::A(A(Ipv4Addr::new(203, 0, 113, 9)))),
    ];
    let got = chain_addrs(&m, "a.example");
    assert_eq!(got, vec![(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 30)]);
}

#[derive(Default)]
struct Sink {
    ops: Mutex<Vec<String>>,
}

impl MapSink for Arc<Sink> {
    fn install(&self, e: &NetEntry) -> Result<(), String> {
        let ports: Vec<String> = e.ports.ranges[..e.ports.count as usize]
            .iter()
            .map(|r| format!("{}-{}", r.lo, r.hi))
            .collect();
        self.ops
            .lock()
            .unwrap()
            .push(format!("install {}", ports.join(",")));
        Ok(())
    }
    fn remove(&self, _: &NetEntry) {
        self.ops.lock().unwrap().push("remove".into());
    }
    fn audit(&self, _: SystemTime, _: Body) {}
    fn stranger(&self, _: SystemTime, _: Body, _: Option<u32>) {}
}

#[test]
fn grants_fold_static_ports_and_expire_back_to_the_static_rules() {
    let sink = Arc::new(Sink::default());
    let host = parse_host_rule("api.test:443").unwrap();
    let statics = vec![
        parse_rule("192.0.2.0/24:80").unwrap(),
        parse_rule("192.0.2.7:22").unwrap(),
    ];
    let view = DnsView::new(
        9,
        vec![host.clone()],
        statics,
        None,
        false,
        Box::new(sink.clone()),
    );
    let ports = [host.ports];
    // An address inside the static /24: its entry carries 80 and 443.
    view.open(&[(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 0)], &ports);
    // An address with its own static /128 rule: 22, 80 and 443.
    view.open(&[(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 0)], &ports);
    assert_eq!(
        *sink.ops.lock().unwrap(),
        ["install 80-80,443-443", "install 22-22,80-80,443-443"]
    );
    sink.ops.lock().unwrap().clear();
    // TTL 0: gone after the grace period.
    std::thread::sleep(GRACE + Duration::from_millis(50));
    view.expire();
    let mut ops = sink.ops.lock().unwrap().clone();
    ops.sort();
    // .1 loses its own entry (the /24 covers it again); .7 gets its static
    // /128 entry back.
    assert_eq!(ops, ["install 22-22,80-80", "remove"]);
}

#[test]
fn local_answers_are_the_servers_own_host() {
    for a in [
        "::ffff:127.0.0.5",
        "::ffff:169.254.1.1",
        "::ffff:0.0.0.0",
        "::1",
        "::",
        "fe80::1",
        "febf::1",
    ] {
        assert!(is_local(a.parse().unwrap()), "{a}");
    }
    for a in [
        "::ffff:192.0.2.1",
        "::ffff:10.0.0.1",
        "2001:db8::1",
        "fec0::1",
    ] {
        assert!(!is_local(a.parse().unwrap()), "{a}");
    }
}

#[test]
fn rebinding_and_metadata_answers_are_refused_and_stripped() {
    let view = |allow_local, statics: &[&str]| {
        DnsView::new(
            9,
            vec![parse_host_rule("*:80").unwrap()],
            statics.iter().map(|r| parse_rule(r).unwrap()).collect(),
            None,
            allow_local,
            Box::new(Arc::new(Sink::default())),
        )
    };
    let lo: Ipv6Addr = "::ffff:127.0.0.1".parse().unwrap();
    let meta: Ipv6Addr = "::ffff:169.254.169.254".parse().unwrap();
    let public: Ipv6Addr = "::ffff:192.0.2.1".parse().unwrap();
    let strict = view(false, &[]);
    assert_eq!(strict.refusal(lo), Some("rebinding"));
    assert_eq!(strict.refusal(meta), Some("metadata"));
    assert_eq!(strict.refusal(public), None);
    let local = view(true, &[]);
    assert_eq!(local.refusal(lo), None);
    assert_eq!(local.refusal(meta), Some("metadata"));
    // A rule naming the endpoint itself lets its name resolve.
    assert_eq!(view(false, &["169.254.169.254:80"]).refusal(meta), None);

    let mut m = Message::new(1, MessageType::Response, OpCode::Query);
    m.answers = vec![
        rec("a.example", RData::A(A(Ipv4Addr::new(127, 0, 0, 1)))),
        rec("a.example", RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))),
    ];
    let stripped = strip(
        &m.to_vec().unwrap(),
        &[(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 30)],
    )
    .unwrap();
    let left = chain_addrs(&Message::from_vec(&stripped).unwrap(), "a.example");
    assert_eq!(left, vec![(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 30)]);
}

#[test]
fn a_long_cname_chain_costs_little_and_is_followed_a_bounded_number_of_hops() {
    // What a 64 KiB TCP answer can carry, in the worst order.
    let n = 4000;
    let mut m = Message::new(1, MessageType::Response, OpCode::Query);
    m.answers = (0..n)
        .rev()
        .map(|i| {
            let owner = if i == 0 {
                "q.example".to_string()
            } else {
                format!("c{i}.cdn")
            };
            rec(
                &owner,
                RData::CNAME(CNAME(Name::from_str(&format!("c{}.cdn.", i + 1)).unwrap())),
            )
        })
        .collect();
    m.answers.push(rec(
        &format!("c{n}.cdn"),
        RData::A(A(Ipv4Addr::new(192, 0, 2, 9))),
    ));
    m.answers
        .push(rec("c3.cdn", RData::A(A(Ipv4Addr::new(192, 0, 2, 3)))));
    let t = Instant::now();
    let got = chain_addrs(&m, "q.example");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    // Three hops away is followed; four thousand is not.
    assert_eq!(got, vec![(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3)), 30)]);
}

#[derive(Default)]
struct Records(Mutex<Vec<Body>>);

impl MapSink for Arc<Records> {
    fn install(&self, _: &NetEntry) -> Result<(), String> {
        Ok(())
    }
    fn remove(&self, _: &NetEntry) {}
    fn audit(&self, _: SystemTime, body: Body) {
        self.0.lock().unwrap().push(body);
    }
    fn stranger(&self, _: SystemTime, _: Body, _: Option<u32>) {}
}

#[test]
fn a_name_with_a_dot_inside_a_label_is_refused() {
    let records = Arc::new(Records::default());
    let view = DnsView::new(
        9,
        vec![parse_host_rule("*.example.org:443").unwrap()],
        vec![],
        None,
        false,
        Box::new(records.clone()),
    );
    // Printed `leak.x\.example.org`: under `org`, not `example.org`.
    let qname = Name::from_labels(vec![&b"leak"[..], b"x.example", b"org"]).unwrap();
    let mut q = Message::new(77, MessageType::Query, OpCode::Query);
    q.add_query(hickory_proto::op::Query::query(qname, RecordType::A));
    let reply = view.answer(&q.to_vec().unwrap(), Transport::Udp).unwrap();
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, 77);
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    let recs = records.0.lock().unwrap();
    assert!(
        matches!(&recs[..], [Body::Dns { verdict, .. }] if verdict == "deny"),
        "{recs:?}"
    );
}

#[test]
fn repeated_answers_extend_one_grant_and_ttls_are_capped() {
    let sink = Arc::new(Sink::default());
    let host = parse_host_rule("api.test:443").unwrap();
    let view = DnsView::new(
        9,
        vec![host.clone()],
        vec![],
        None,
        false,
        Box::new(sink.clone()),
    );
    let addr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    for _ in 0..1000 {
        view.open(&[(addr, u32::MAX)], &[host.ports]);
    }
    let grants = view.grants();
    let list = &grants[&key_addr(addr)];
    assert_eq!(list.len(), 1);
    let cap = Instant::now() + Duration::from_secs(u64::from(MAX_TTL)) + GRACE;
    assert!(list[0].until <= cap);
}
