//! Class 4, egress tricks: `tests/escape/net.c` tries every way out past
//! a policy that allows one loopback listener (and one name), as the test
//! user through `mcpguard run`. Each attack aims at something the test
//! listens on, so "blocked" is both the errno the program saw and the
//! listener never hearing from it; "recorded" is the audit record that
//! names the attempt.

use std::{
    net::{IpAddr, TcpListener, UdpSocket},
    os::{
        linux::net::SocketAddrExt,
        unix::{
            fs::{chown, PermissionsExt},
            net::{SocketAddr as UnixAddr, UnixListener},
        },
    },
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use serde_json::Value;

use crate::{
    dns::Upstream,
    escape::{self, Class, Row},
    harness::*,
};

/// Counts what reaches one of the test's listeners, in the background.
struct Sink {
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// `poll` is called until stopped; it returns whether something came in.
    fn run(mut poll: impl FnMut() -> bool + Send + 'static) -> Sink {
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if poll() {
                    h.fetch_add(1, Ordering::SeqCst);
                } else {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        Sink {
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn tcp(l: TcpListener) -> Sink {
        l.set_nonblocking(true).unwrap();
        Sink::run(move || l.accept().is_ok())
    }

    fn udp(s: UdpSocket) -> Sink {
        s.set_nonblocking(true).unwrap();
        Sink::run(move || s.recv_from(&mut [0u8; 2048]).is_ok())
    }

    fn unix(l: UnixListener) -> Sink {
        l.set_nonblocking(true).unwrap();
        Sink::run(move || l.accept().is_ok())
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A pathname Unix socket any user may connect to.
fn unix_listener(path: &Path) -> UnixListener {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
    l
}

/// A rogue resolver on `addr:53` (UDP and TCP) that answers nothing and
/// counts every query that reaches it.
fn rogue_resolver(addr: &str) -> (Sink, Sink) {
    let udp = UdpSocket::bind((addr, 53)).unwrap();
    let tcp = TcpListener::bind((addr, 53)).unwrap();
    (Sink::udp(udp), Sink::tcp(tcp))
}

/// TCP listeners on every address in `addrs`, all on one free port.
fn listeners_on(addrs: &[&str]) -> (u16, Vec<Sink>) {
    for _ in 0..50 {
        let first = TcpListener::bind((addrs[0], 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        let rest: Result<Vec<TcpListener>, _> = addrs[1..]
            .iter()
            .map(|a| TcpListener::bind((a.parse::<IpAddr>().unwrap(), port)))
            .collect();
        if let Ok(rest) = rest {
            let mut all = vec![Sink::tcp(first)];
            all.extend(rest.into_iter().map(Sink::tcp));
            return (port, all);
        }
    }
    panic!("no common free port on {addrs:?}");
}

/// Filesystem rules for the hostile binary and name resolution.
fn fs_rules() -> String {
    let hostile = escape::hostile_dir();
    base_fs(&[
        &hostile,
        Path::new("/etc/hosts"),
        Path::new("/etc/resolv.conf"),
        Path::new("/etc/gai.conf"),
        Path::new("/etc/host.conf"),
    ])
    .replace(
        "exec = [",
        &format!("exec = [{:?}, ", hostile.display().to_string()),
    )
}

fn write_policy(dir: &Path, name: &str, network: &str) -> PathBuf {
    policy(
        dir,
        name,
        &format!(
            "name = {name:?}\n{}\n[network]\n{network}\n[env]\npass = [\"PATH\"]\n{}",
            fs_rules(),
            escape::AUDIT_ALL
        ),
    )
}

/// Runs one attack; returns its result line (without the attack name).
fn run_net(d: &Daemon, pol: &Path, args: &[&str]) -> String {
    let out = escape::attack(d, pol, "net", args);
    let text = stdout_of(&out);
    let prefix = format!("{} ", args[0]);
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect();
    assert!(
        !lines.is_empty(),
        "attack {args:?} printed no result\n{}",
        describe(&out)
    );
    lines.join("; ")
}

/// Whether a record matching `pred` shows up within a few seconds.
fn recorded(d: &Daemon, pred: impl Fn(&Value) -> bool) -> bool {
    d.find_record(pred).is_some()
}

/// Listeners get a moment to see a connection that did get through.
fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}

fn deny_connect(r: &Value, op: &str, addr: &str, port: u16) -> bool {
    is_kind(r, "connect")
        && r["server"] == "it-esc-net"
        && r["op"] == op
        && r["addr"] == addr
        && r["port"] == port
        && r["verdict"] == "deny"
}

fn deny_socket(r: &Value, family: &str, protocol: &str) -> bool {
    is_kind(r, "socket")
        && r["server"] == "it-esc-net"
        && r["family"] == family
        && r["protocol"] == protocol
        && r["verdict"] == "deny"
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "the class's attack rows, one block each, in report order"
)]
fn egress_tricks_are_blocked_and_recorded() {
    let upstream = Upstream::start();
    let d = Daemon::start_with(&["--upstream-dns", &upstream.addr.to_string()]);
    let tag = std::process::id();
    let u = user();

    // The one destination the policy allows, and others it does not.
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = allowed.local_addr().unwrap().port();
    let _allowed = Sink::tcp(allowed);
    let denied_l = TcpListener::bind("127.0.0.1:0").unwrap();
    let q = denied_l.local_addr().unwrap().port();
    let denied = Sink::tcp(denied_l);
    let udp_s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uport = udp_s.local_addr().unwrap().port();
    let udp = Sink::udp(udp_s);
    // Where rebind.test points (the policy allows that name on port r).
    let (r, rebind_targets) = listeners_on(&["127.0.0.5", "::1"]);
    let (rogue_udp, rogue_tcp) = rogue_resolver("127.0.0.77");
    // A docker.sock-like socket in /run and an ssh-agent-like one in ~/.ssh.
    let docker_path = PathBuf::from(format!("/run/mcpguard-esc-{tag}-docker.sock"));
    let docker = Sink::unix(unix_listener(&docker_path));
    let ssh = u.home.join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    chown(&ssh, Some(u.uid), Some(u.gid)).unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).unwrap();
    let agent_path = ssh.join(format!("mcpguard-esc-{tag}-agent.sock"));
    let agent_l = unix_listener(&agent_path);
    chown(&agent_path, Some(u.uid), Some(u.gid)).unwrap();
    let agent = Sink::unix(agent_l);
    let abstract_name = format!("mcpguard-esc-{tag}");
    let abstract_sink = Sink::unix(
        UnixListener::bind_addr(&UnixAddr::from_abstract_name(abstract_name.as_bytes()).unwrap())
            .unwrap(),
    );

    let dir = tempdir("esc-net");
    let pol = write_policy(
        &dir,
        "it-esc-net",
        &format!("allow = [\"127.0.0.1:{p}\", \"rebind.test:{r}\"]"),
    );
    let (ps, qs, us, rs) = (
        p.to_string(),
        q.to_string(),
        uport.to_string(),
        r.to_string(),
    );

    // The policy is not simply "deny everything": the allowed listener
    // answers, and NETLINK_ROUTE (glibc's getaddrinfo and getifaddrs)
    // still works by default.
    assert_eq!(run_net(&d, &pol, &["connect", "127.0.0.1", &ps]), "ok");
    assert_eq!(run_net(&d, &pol, &["netlink", "0"]), "ok");
    assert_eq!(run_net(&d, &pol, &["getifaddrs"]), "ok");

    let mut rows = Vec::new();

    // IPv4-mapped IPv6 reaches only the connect6 hook.
    let got = run_net(&d, &pol, &["mapped6", &qs]);
    settle();
    let blocked = got == "EPERM" && denied.hits() == 0;
    let rec = recorded(&d, |r| deny_connect(r, "connect6", "127.0.0.1", q));
    rows.push(Row::new(
        "IPv4-mapped IPv6 connect to a denied IPv4 address",
        blocked,
        rec,
        format!("connect(::ffff:127.0.0.1:{q}): {got}, listener accepted {}; `connect` connect6 127.0.0.1:{q} verdict deny", denied.hits()),
    ));

    for (name, what) in [
        ("udp_sendto", "UDP sendto() without connect()"),
        (
            "udp_sendmsg",
            "UDP sendmsg() with msg_name, without connect()",
        ),
    ] {
        let before = udp.hits();
        let got = run_net(&d, &pol, &[name, &us]);
        settle();
        let blocked = got == "EPERM" && udp.hits() == before;
        let rec = recorded(&d, |r| deny_connect(r, "sendmsg4", "127.0.0.1", uport));
        rows.push(Row::new(
            what,
            blocked,
            rec,
            format!("{name} to 127.0.0.1:{uport}: {got}, datagrams received {}; `connect` sendmsg4 127.0.0.1:{uport} verdict deny", udp.hits() - before),
        ));
    }

    let got = run_net(&d, &pol, &["tfo", &qs]);
    settle();
    let blocked = got == "EPERM" && denied.hits() == 0;
    let rec = recorded(&d, |r| deny_connect(r, "connect4", "127.0.0.1", q));
    rows.push(Row::new(
        "TCP Fast Open: sendto(MSG_FASTOPEN) to a denied address",
        blocked,
        rec,
        format!("sendto(MSG_FASTOPEN, 127.0.0.1:{q}): {got}, listener accepted {}; `connect` connect4 127.0.0.1:{q} verdict deny", denied.hits()),
    ));

    for (args, what, family, protocol) in [
        (
            &["raw"][..],
            "raw socket (AF_INET, SOCK_RAW)",
            "inet",
            "icmp",
        ),
        (
            &["packet"][..],
            "packet socket (AF_PACKET)",
            "packet",
            "768",
        ),
        (
            &["netlink", "4"][..],
            "netlink NETLINK_SOCK_DIAG (lists every socket on the host)",
            "netlink",
            "sock_diag",
        ),
        (
            &["netlink", "9"][..],
            "netlink NETLINK_AUDIT",
            "netlink",
            "audit",
        ),
        (
            &["netlink", "15"][..],
            "netlink NETLINK_KOBJECT_UEVENT",
            "netlink",
            "kobject_uevent",
        ),
    ] {
        let got = run_net(&d, &pol, args);
        let rec = recorded(&d, |r| deny_socket(r, family, protocol));
        rows.push(Row::new(
            what,
            got == "EPERM",
            rec,
            format!("socket(): {got}; `socket` {family} {protocol} verdict deny"),
        ));
    }

    for (path, sink, what) in [
        (
            &docker_path,
            &docker,
            "Unix connect to a docker.sock-like socket in /run",
        ),
        (
            &agent_path,
            &agent,
            "Unix connect to an ssh-agent-like socket in ~/.ssh",
        ),
    ] {
        let got = run_net(&d, &pol, &["unix", path.to_str().unwrap()]);
        settle();
        let blocked = got != "ok" && sink.hits() == 0;
        let rec = recorded(&d, |r| {
            is_kind(r, "unix_connect")
                && r["server"] == "it-esc-net"
                && r["path"] == path.to_str().unwrap()
                && r["fenced"] == true
                && r["denied"] == true
        });
        rows.push(Row::new(
            what,
            blocked,
            rec,
            format!(
                "connect({}): {got}, listener accepted {}; `unix_connect` fenced, denied",
                path.display(),
                sink.hits()
            ),
        ));
    }

    let got = run_net(&d, &pol, &["abstract", &abstract_name]);
    settle();
    let blocked = got == "EPERM" && abstract_sink.hits() == 0;
    let rec = recorded(&d, |r| {
        is_kind(r, "unix_connect")
            && r["server"] == "it-esc-net"
            && r["path"] == abstract_name.as_str()
            && r["abstract_addr"] == true
            && r["denied"] == true
    });
    rows.push(Row::new(
        "abstract Unix socket listening outside the server (Landlock scope)",
        blocked,
        rec,
        format!("connect(@{abstract_name}): {got}, listener accepted {}; `unix_connect` abstract, denied", abstract_sink.hits()),
    ));

    // DNS to any resolver is answered by mcpguard's resolver for this
    // server, which refuses names the policy does not allow.
    let exfil = format!("c2vjcmv0-{tag}.exfil.test");
    let rogue = run_net(&d, &pol, &["dns_udp", "127.0.0.77", &exfil]);
    let google = run_net(&d, &pol, &["dns_udp", "8.8.8.8", &exfil]);
    settle();
    let blocked = rogue == "NXDOMAIN from 127.0.0.77:53 answer -"
        && google == "NXDOMAIN from 8.8.8.8:53 answer -"
        && rogue_udp.hits() == 0
        && upstream.asked().iter().all(|n| !n.contains("exfil"));
    let rec = recorded(&d, |r| {
        is_kind(r, "dns")
            && r["server"] == "it-esc-net"
            && r["qname"] == exfil.as_str()
            && r["transport"] == "udp"
            && r["verdict"] == "deny"
    });
    rows.push(Row::new(
        "DNS over UDP to another resolver (127.0.0.77, 8.8.8.8)",
        blocked,
        rec,
        format!("127.0.0.77: {rogue}; 8.8.8.8: {google}; rogue resolver got {} queries; `dns` {exfil} udp verdict deny", rogue_udp.hits()),
    ));

    let got = run_net(&d, &pol, &["dns_tcp", "127.0.0.77", &exfil]);
    settle();
    let blocked = got == "NXDOMAIN answer -" && rogue_tcp.hits() == 0;
    let rec = recorded(&d, |r| {
        is_kind(r, "dns")
            && r["server"] == "it-esc-net"
            && r["qname"] == exfil.as_str()
            && r["transport"] == "tcp"
            && r["verdict"] == "deny"
    });
    rows.push(Row::new(
        "DNS over TCP to another resolver (127.0.0.77)",
        blocked,
        rec,
        format!(
            "{got}; rogue resolver accepted {} connections; `dns` {exfil} tcp verdict deny",
            rogue_tcp.hits()
        ),
    ));

    // An allowed name whose answer is the host itself.
    let lookup = run_net(&d, &pol, &["resolve", "rebind.test", &rs]);
    let v4 = run_net(&d, &pol, &["connect", "127.0.0.5", &rs]);
    let v6 = run_net(&d, &pol, &["connect", "::1", &rs]);
    settle();
    let reached: usize = rebind_targets.iter().map(Sink::hits).sum();
    let blocked = !lookup.contains("ok") && v4 == "EPERM" && v6 == "EPERM" && reached == 0;
    let rec = recorded(&d, |r| {
        is_kind(r, "dns")
            && r["server"] == "it-esc-net"
            && r["qname"] == "rebind.test"
            && r["verdict"] == "deny"
            && r["detail"]["reason"] == "rebinding"
    });
    rows.push(Row::new(
        "DNS rebinding: an allowed name answering 127.0.0.5, ::1, 169.254.1.1, fe80::1, 0.0.0.0, ::ffff:127.0.0.5",
        blocked,
        rec,
        format!("getaddrinfo: {lookup}; connect 127.0.0.5:{r}: {v4}; [::1]:{r}: {v6}; listeners accepted {reached}; `dns` rebind.test verdict deny, reason rebinding"),
    ));

    // Cloud metadata, under rules that cover every address on port 80.
    let meta_pol = write_policy(
        &dir,
        "it-esc-net",
        "allow = [\"*:80\", \"0.0.0.0/0:80\", \"[::/0]:80\"]",
    );
    let direct = run_net(&d, &meta_pol, &["connect", "169.254.169.254", "80"]);
    let direct6 = run_net(&d, &meta_pol, &["connect", "fd00:ec2::254", "80"]);
    let by_name = run_net(&d, &meta_pol, &["resolve", "metadata.test", "80"]);
    let blocked = direct == "EPERM" && direct6 == "EPERM" && !by_name.contains("ok");
    let rec = recorded(&d, |r| deny_connect(r, "connect4", "169.254.169.254", 80))
        && recorded(&d, |r| deny_connect(r, "connect6", "fd00:ec2::254", 80))
        && recorded(&d, |r| {
            is_kind(r, "dns") && r["qname"] == "metadata.test" && r["verdict"] == "deny"
        });
    rows.push(Row::new(
        "cloud metadata 169.254.169.254 / fd00:ec2::254 under *:80, 0.0.0.0/0:80, [::/0]:80",
        blocked,
        rec,
        format!("connect 169.254.169.254:80: {direct}; [fd00:ec2::254]:80: {direct6}; via metadata.test: {by_name}; `connect` deny for both, `dns` metadata.test verdict deny"),
    ));

    for path in [&docker_path, &agent_path] {
        let _ = std::fs::remove_file(path);
    }
    escape::report(Class::Egress, &rows);
}
