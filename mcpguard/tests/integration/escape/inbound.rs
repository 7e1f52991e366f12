//! Class 11, inbound channels; class 13, access to a server's resolver;
//! and the network rows of class 15, silent refusals.
//!
//! `tests/escape/inbound.c` runs through `mcpguard run` as the test user
//! under a policy whose `[network] bind` names one port. The test plays
//! the outside peer: it connects or sends to whatever port the attack
//! reports, and "blocked" is the attack never hearing from it; "recorded"
//! is the `connect` record (op `bind4`/`bind6`/`inbound4`/`inbound6`) or
//! `socket` record naming it. For the resolver, the stranger is the second
//! test user, running the same program directly.

use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{channel, Receiver},
    time::Duration,
};

use serde_json::Value;

use crate::{
    dns::Upstream,
    escape::{self, Class, Row},
    harness::*,
};

const SERVER: &str = "it-esc-inbound";

/// One attack running through `mcpguard run`, its output read line by line.
struct Attack {
    name: String,
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Attack {
    fn start(d: &Daemon, pol: &Path, args: &[&str]) -> Attack {
        let bin = escape::hostile("inbound");
        let mut argv = vec![bin.to_str().unwrap()];
        argv.extend_from_slice(args);
        let cmd = d.run_cmd(pol, &argv);
        Attack::spawn(cmd, args[0])
    }

    fn spawn(mut cmd: Command, name: &str) -> Attack {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the attack");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Attack {
            name: name.to_owned(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The rest of the next line starting with the attack's name and
    /// `what` (waits up to 15 s), passing over `bound` and `from` lines;
    /// `None` if the program said something else first (an errno) or
    /// ended.
    fn next(&mut self, what: &str) -> Option<String> {
        let prefix = format!("{} {what}", self.name);
        let passing = [
            format!("{} from ", self.name),
            format!("{} bound", self.name),
        ];
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(15)) {
            self.seen.push(line.clone());
            if let Some(rest) = line.strip_prefix(&prefix) {
                return Some(rest.trim().to_owned());
            }
            if !passing.iter().any(|p| line.starts_with(p.as_str())) {
                return None;
            }
        }
        None
    }

    /// Every line until the program ends.
    fn finish(mut self) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(15)) {
            self.seen.push(line);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.seen
    }

    /// The port the attack reported.
    fn port(&mut self) -> Option<u16> {
        self.next("port").and_then(|p| p.parse().ok())
    }
}

fn write_policy(dir: &Path, network: &str) -> PathBuf {
    let hostile = escape::hostile_dir();
    let fs = base_fs(&[&hostile]).replace(
        "exec = [",
        &format!("exec = [{:?}, ", hostile.display().to_string()),
    );
    policy(
        dir,
        SERVER,
        &format!(
            "name = {SERVER:?}\n{fs}\n[network]\n{network}\n[env]\npass = [\"PATH\"]\n{}",
            escape::AUDIT_ALL
        ),
    )
}

fn connect_record(r: &Value, op: &str, protocol: &str, port: u16, verdict: &str) -> bool {
    is_kind(r, "connect")
        && r["server"] == SERVER
        && r["op"] == op
        && r["protocol"] == protocol
        && r["port"] == port
        && r["verdict"] == verdict
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An outside peer's TCP connect to `addr`; whether it got through.
fn outside_connect(addr: &str, port: u16) -> bool {
    let sa = SocketAddr::new(addr.parse::<IpAddr>().unwrap(), port);
    TcpStream::connect_timeout(&sa, Duration::from_millis(1500)).is_ok()
}

/// `listen()` on a never-bound socket, reached from outside.
fn autobind_listen(d: &Daemon, pol: &Path, attack: &str, peer: &str, op: &str) -> Row {
    let mut a = Attack::start(d, pol, &[attack]);
    let Some(port) = a.port() else {
        let seen = a.finish();
        return Row::new(
            &format!("{attack}: listen() on an unbound socket"),
            true,
            false,
            format!("no port reported: {seen:?}"),
        );
    };
    let through = outside_connect(peer, port);
    let accepted = a.next("").unwrap_or_default();
    let seen = a.finish();
    let rec = d.find_record(|r| connect_record(r, op, "tcp", port, "deny"));
    Row::new(
        &format!(
            "{attack}: listen() on an unbound socket (ephemeral port), peer connects from {peer}"
        ),
        !through && accepted == "none",
        rec.is_some(),
        format!(
            "peer connect {}, server saw {seen:?}; record: {}",
            if through { "succeeded" } else { "timed out" },
            rec.map_or("none".into(), |r| r.to_string())
        ),
    )
}

/// An explicit TCP bind on a port the policy does not name.
fn tcp_bind(d: &Daemon, pol: &Path, addr: &str, op: &str, class15: bool) -> Row {
    let port = free_port();
    let mut a = Attack::start(d, pol, &["tcp_bind", addr, &port.to_string()]);
    let said = a.next("").unwrap_or_default();
    let seen = a.finish();
    let rec = d.find_record(|r| connect_record(r, op, "tcp", port, "deny"));
    let attack = if class15 {
        format!(
            "bind() to {addr}:{port} refused: the refusal has a record (was EACCES, unrecorded)"
        )
    } else {
        format!("explicit TCP bind to {addr}:{port}, a port [network] bind does not name")
    };
    Row::new(
        &attack,
        said == "EPERM",
        rec.is_some(),
        format!(
            "bind: {said} ({seen:?}); record: {}",
            rec.map_or("none".into(), |r| r.to_string())
        ),
    )
}

#[test]
fn inbound_channels_are_blocked_and_recorded() {
    let d = Daemon::start();
    let dir = tempdir("esc-inbound");
    let named = free_port();
    // The allowed UDP peer of the autobind attack, and a third party.
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_port = peer.local_addr().unwrap().port();
    let third = UdpSocket::bind("127.0.0.1:0").unwrap();
    let pol = write_policy(
        &dir,
        &format!("allow = [\"127.0.0.1:{peer_port}\"]\nbind = [\"{named}\"]"),
    );

    let mut rows = vec![
        autobind_listen(&d, &pol, "listen4", "127.0.0.1", "inbound4"),
        autobind_listen(&d, &pol, "listen6", "::1", "inbound6"),
        tcp_bind(&d, &pol, "0.0.0.0", "bind4", false),
        tcp_bind(&d, &pol, "::", "bind6", false),
    ];

    // UDP bound on 0.0.0.0, by port (refused) and ephemeral (guarded).
    let port = free_port();
    let mut a = Attack::start(&d, &pol, &["udp_bind", "0.0.0.0", &port.to_string()]);
    let said = a.next("").unwrap_or_default();
    a.finish();
    let rec = d.find_record(|r| connect_record(r, "bind4", "udp", port, "deny"));
    rows.push(Row::new(
        &format!("explicit UDP bind to 0.0.0.0:{port}, a port [network] bind does not name"),
        said == "EPERM",
        rec.is_some(),
        format!(
            "bind: {said}; record: {}",
            rec.map_or("none".into(), |r| r.to_string())
        ),
    ));
    let mut a = Attack::start(&d, &pol, &["udp_bind", "0.0.0.0", "0"]);
    let port = a.port();
    if let Some(p) = port {
        third.send_to(b"command", ("127.0.0.1", p)).unwrap();
    }
    let seen = a.finish();
    let heard = seen.iter().any(|l| l.contains(" from "));
    let rec = port.and_then(|p| d.find_record(|r| connect_record(r, "inbound4", "udp", p, "deny")));
    rows.push(Row::new(
        "UDP socket bound to 0.0.0.0 (port 0) receiving from an outside peer",
        port.is_some() && !heard,
        rec.is_some(),
        format!(
            "server saw {seen:?}; record: {}",
            rec.map_or("none".into(), |r| r.to_string())
        ),
    ));

    // UDP autobind by sendto() to the allowed peer: its reply arrives, a
    // third party's datagram does not.
    let mut a = Attack::start(
        &d,
        &pol,
        &["udp_autobind", "127.0.0.1", &peer_port.to_string()],
    );
    let port = a.port();
    if let Some(p) = port {
        third.send_to(b"command", ("127.0.0.1", p)).unwrap();
        peer.send_to(b"reply", ("127.0.0.1", p)).unwrap();
    }
    let seen = a.finish();
    let from_peer = seen.iter().any(|l| l.ends_with(&format!(":{peer_port}")));
    let third_port = third.local_addr().unwrap().port();
    let from_third = seen.iter().any(|l| l.ends_with(&format!(":{third_port}")));
    let rec = port.and_then(|p| d.find_record(|r| connect_record(r, "inbound4", "udp", p, "deny")));
    rows.push(Row::new(
        "UDP socket auto-bound by sendto() to an allowed host, receiving from a third party",
        port.is_some() && from_peer && !from_third,
        rec.is_some(),
        format!(
            "server saw {seen:?} (allowed peer :{peer_port} must be heard, third party :{third_port} not); record: {}",
            rec.map_or("none".into(), |r| r.to_string())
        ),
    ));

    // The port the policy names still serves.
    let mut a = Attack::start(&d, &pol, &["serve", &named.to_string()]);
    let bound = a.next("").unwrap_or_default();
    let port = a.port();
    let through = port.is_some_and(|p| outside_connect("127.0.0.1", p));
    let accepted = a.next("").unwrap_or_default();
    let seen = a.finish();
    let rec = d.find_record(|r| connect_record(r, "bind4", "tcp", named, "allow"));
    rows.push(Row::new(
        &format!("a TCP bind on the port [network] bind names ({named}) still accepts connections"),
        bound == "bound" && through && accepted == "accepted",
        rec.is_some(),
        format!(
            "server saw {seen:?}; allow record: {}",
            rec.map_or("none".into(), |r| r.to_string())
        ),
    ));
    escape::report(Class::Inbound, &rows);
}

#[test]
fn silent_network_refusals_are_recorded() {
    let d = Daemon::start();
    let dir = tempdir("esc-inbound-silent");
    let pol = write_policy(&dir, "bind = []");
    let mut rows = vec![
        tcp_bind(&d, &pol, "127.0.0.1", "bind4", true),
        tcp_bind(&d, &pol, "::1", "bind6", true),
    ];
    let mut a = Attack::start(&d, &pol, &["sock_packet"]);
    let said = a.next("").unwrap_or_default();
    a.finish();
    let rec = d.find_record(|r| {
        is_kind(r, "socket")
            && r["server"] == SERVER
            && r["family"] == "inet"
            && r["sock_type"] == "packet"
            && r["verdict"] == "deny"
    });
    rows.push(Row::new(
        "socket(AF_INET, SOCK_PACKET): refused by the socket fence with a record (was a packet socket)",
        said == "EPERM",
        rec.is_some(),
        format!("socket: {said}; record: {}", rec.map_or("none".into(), |r| r.to_string())),
    ));
    escape::report(Class::SilentRefusals, &rows);
}

/// The hostile program run directly as the second test user.
fn as_stranger(args: &[&str]) -> Attack {
    let other = other_user();
    let mut cmd = Command::new(escape::hostile("inbound"));
    cmd.args(args)
        .uid(other.uid)
        .gid(other.gid)
        .current_dir("/")
        .env_clear();
    Attack::spawn(cmd, args[0])
}

#[test]
fn resolvers_answer_only_their_server() {
    let upstream = Upstream::start();
    let d = Daemon::start_with(&["--upstream-dns", &upstream.addr.to_string()]);
    let dir = tempdir("esc-resolver");
    // The test upstream answers with loopback addresses.
    let pol = write_policy(
        &dir,
        "allow = [\"allowed.test:443\"]\nallow_local_answers = true",
    );
    let blame = format!("blame-{}.exfil.test", std::process::id());

    let mut server = Attack::start(&d, &pol, &["dns_probe", "allowed.test"]);
    let Some(port) = server.port() else {
        panic!(
            "the server did not find its resolver: {:?}",
            server.finish()
        );
    };
    // Another user queries it (UDP, then TCP), then holds three idle TCP
    // connections open through the server's lookups (which start 2 s
    // after it reported the port).
    let mut stranger = as_stranger(&["stranger", &port.to_string(), &blame]);
    let udp = stranger.next("udp").unwrap_or_default();
    let tcp = stranger.next("tcp").unwrap_or_default();
    stranger.finish();
    let mut holder = as_stranger(&["hold", &port.to_string(), "3", "8"]);
    let held = holder.next("open").unwrap_or_default();
    let timing = server.next("answered").unwrap_or_default();
    server.finish();
    holder.finish();

    let other = other_user().uid;
    let stranger_rec = |transport: &'static str| {
        d.find_record(move |r| {
            is_kind(r, "dns_stranger")
                && r["transport"] == transport
                && r["uid"] == other
                && r.get("server").is_none()
                && r["denied"] == true
        })
    };
    let blamed = d
        .records()
        .into_iter()
        .find(|r| is_kind(r, "dns") && r["qname"].as_str().is_some_and(|q| q.contains("blame-")));
    let mut rows = Vec::new();
    for (transport, answer) in [("udp", &udp), ("tcp", &tcp)] {
        let rec = stranger_rec(transport);
        rows.push(Row::new(
            &format!("another local user's {transport} query to a server's resolver"),
            answer == "none" && blamed.is_none(),
            rec.is_some(),
            format!(
                "stranger got: {answer}; dns record blaming the server: {}; dns_stranger record: {}",
                blamed.as_ref().map_or("none".into(), |r| r.to_string()),
                rec.map_or("none".into(), |r| r.to_string())
            ),
        ));
    }
    // "6 udp_ms U tcp_ms T": every lookup answered, the slowest under 1 s.
    let words: Vec<&str> = timing.split_whitespace().collect();
    let ms = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let fast = words.first() == Some(&"6")
        && ms("udp_ms").is_some_and(|v| v < 1000.0)
        && ms("tcp_ms").is_some_and(|v| v < 1000.0);
    let allowed = d.find_record(|r| {
        is_kind(r, "dns")
            && r["server"] == SERVER
            && r["qname"] == "allowed.test"
            && r["transport"] == "tcp"
            && r["verdict"] == "allow"
    });
    rows.push(Row::new(
        "three idle TCP connections from another user (and three of the server's own) while the server looks names up",
        fast && held == "3",
        allowed.is_some(),
        format!(
            "stranger connections open: {held}; server lookups: answered {timing} (bound: all 6 answered, each under 1000 ms); allow record: {}",
            allowed.map_or("none".into(), |r| r.to_string())
        ),
    ));
    escape::report(Class::ResolverAccess, &rows);
}
