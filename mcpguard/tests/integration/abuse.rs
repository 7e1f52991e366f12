//! Hostile clients on the daemon's socket: garbage, truncated and
//! oversized frames, silent and trickling connections, a flood from one
//! user, and a user asking after another user's servers and records. Each
//! gets a clear refusal (or is dropped with a logged reason) while a normal
//! `mcpguard run` beside it, and after it, still works.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::{
        fd::AsRawFd,
        unix::{net::UnixStream, process::CommandExt},
    },
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mcpguard::daemon::proto::{self, Request, Response, MAX_FRAME};
use serde_json::{json, Value};

use crate::harness::*;

/// A uid other than root and the test user (no passwd entry needed).
const NOBODY: u32 = 65534;

/// The daemon's one answer on a connection: the message of its error frame.
fn refusal(stream: &mut UnixStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    match proto::read_frame::<Response>(stream) {
        Ok(Some(Response::Error { message })) => message,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// A connection that has sent the three stdio descriptors of a launch.
fn launch_conn(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(&d.socket).unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let fd = null.as_raw_fd();
    proto::send_fds(&s, &[fd, fd, fd]).unwrap();
    s
}

/// A normal run as the test user succeeds, and quickly.
fn run_works(d: &Daemon, pol: &Path, tag: &str) {
    let t = Instant::now();
    let out = d.run(pol, &["/bin/echo", tag]);
    assert!(out.status.success(), "run {tag}: {}", describe(&out));
    assert_eq!(stdout_of(&out), format!("{tag}\n"));
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "run {tag} took {:?}",
        t.elapsed()
    );
}

/// Opens a connection and sends one kind of bad input.
type Opener<'a> = Box<dyn Fn() -> UnixStream + 'a>;

#[test]
fn garbage_truncated_and_oversized_frames_get_a_clear_refusal() {
    let d = Daemon::start();
    let pol = simple_policy("abuse-frames", &[]);
    let cases: Vec<(&str, Opener, &str)> = vec![
        (
            "text instead of a protocol",
            Box::new(|| {
                let mut s = UnixStream::connect(&d.socket).unwrap();
                // `h` opens a query; `ello` is a 1.8 GB length.
                s.write_all(b"hello daemon\n").unwrap();
                s
            }),
            "exceeds the size limit",
        ),
        (
            "a frame that is not JSON",
            Box::new(|| {
                let mut s = UnixStream::connect(&d.socket).unwrap();
                s.write_all(&[proto::QUERY_HELLO]).unwrap();
                s.write_all(&frame(b"{not json")).unwrap();
                s
            }),
            "malformed frame",
        ),
        (
            "a truncated query frame",
            Box::new(|| {
                let mut s = UnixStream::connect(&d.socket).unwrap();
                s.write_all(&[proto::QUERY_HELLO]).unwrap();
                s.write_all(&100u32.to_le_bytes()).unwrap();
                s.write_all(b"{\"type\":").unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                s
            }),
            "frame cut short: 8 of 100 bytes",
        ),
        (
            "a huge length prefix after the descriptors",
            Box::new(|| {
                let mut s = launch_conn(&d);
                s.write_all(&u32::MAX.to_le_bytes()).unwrap();
                s
            }),
            "exceeds the size limit",
        ),
        (
            "a truncated launch frame",
            Box::new(|| {
                let mut s = launch_conn(&d);
                s.write_all(&MAX_FRAME.to_le_bytes()).unwrap();
                s.write_all(&[b' '; 1000]).unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                s
            }),
            "frame cut short: 1000 of 4194304 bytes",
        ),
        (
            "a signal instead of a launch",
            Box::new(|| {
                let mut s = launch_conn(&d);
                proto::write_frame(&mut s, &Request::Signal { signal: 15 }).unwrap();
                s
            }),
            "must be a launch request",
        ),
        (
            "one descriptor",
            Box::new(|| {
                let s = UnixStream::connect(&d.socket).unwrap();
                proto::send_fds(&s, &[std::io::stdin().as_raw_fd()]).unwrap();
                s
            }),
            "got 1 descriptors",
        ),
        (
            "a launch request from root",
            Box::new(|| {
                let mut s = launch_conn(&d);
                let req = json!({"type": "launch", "version": proto::VERSION,
                    "policy_path": "x.toml", "policy_text": "name = \"x\"", "argv": ["/bin/true"],
                    "cwd": "/", "env": []});
                s.write_all(&frame(req.to_string().as_bytes())).unwrap();
                s
            }),
            "refusing to launch a server as root",
        ),
    ];
    for (what, open, want) in &cases {
        let mut s = open();
        let msg = refusal(&mut s);
        assert!(msg.contains(want), "{what}: {msg:?} lacks {want:?}");
        // The refusal is the last word: the daemon closes the connection
        // (a reset when it left bytes of ours unread).
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "{what}: more after the refusal"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{what}"),
        }
    }
    // A client that connects and leaves is dropped with a reason.
    drop(UnixStream::connect(&d.socket).unwrap());
    run_works(&d, &pol, "after-garbage");
    let said = poll(Duration::from_secs(5), || {
        (d.stderr())
            .contains("the connection closed before its first byte")
            .then_some(())
    });
    assert!(
        said.is_some(),
        "no logged reason for the dropped connection:\n{}",
        d.stderr()
    );
}

#[test]
fn silent_and_trickling_clients_are_dropped_in_time_while_runs_work() {
    let d = Daemon::start();
    let pol = simple_policy("abuse-slow", &[]);
    let t0 = Instant::now();
    // Silent: connected, nothing sent. Half-open: descriptors sent, then
    // nothing. Trickling: a 4 MiB frame announced and sent a byte at a
    // time, each well inside a per-read timeout.
    let silent: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    let half_open = launch_conn(&d);
    let trickler = {
        let mut s = launch_conn(&d);
        s.write_all(&MAX_FRAME.to_le_bytes()).unwrap();
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..60 {
                if w.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        s
    };
    // Meanwhile, the test user's runs go through.
    run_works(&d, &pol, "beside-slow-clients");
    for mut s in silent.into_iter().chain([half_open, trickler]) {
        let msg = refusal(&mut s);
        assert!(msg.contains("did not arrive in time"), "{msg:?}");
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(16),
        "slow clients were dropped after {took:?}, want about 10 s"
    );
    run_works(&d, &pol, "after-slow-clients");
}

/// Python, as `uid`, holding `n` silent connections to the daemon; it
/// prints how many were refused at once (and the first refusal) and keeps
/// the rest open until its stdin closes.
fn flood_as(uid: u32, socket: &Path, n: usize) -> std::process::Child {
    let script = r#"
import json, socket, struct, sys, time
path, n = sys.argv[1], int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    socks.append(s)
time.sleep(1.0)
refused = []
for s in socks:
    s.settimeout(0.1)
    try:
        hdr = s.recv(4)
    except socket.timeout:
        continue
    if len(hdr) == 4:
        want = struct.unpack('<I', hdr)[0]
        body = b''
        while len(body) < want:
            body += s.recv(want - len(body))
        refused.append(json.loads(body))
print(json.dumps({"refused": len(refused), "first": refused[:1]}), flush=True)
sys.stdin.read()
"#;
    Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(socket)
        .arg(n.to_string())
        .env_clear()
        .uid(uid)
        .gid(uid)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_flood_from_one_user_is_capped_and_other_users_still_launch() {
    let d = Daemon::start();
    let pol = simple_policy("abuse-flood", &[]);
    let limit = mcpguard::daemon::admit::MAX_HANDSHAKES_PER_UID;
    let n = limit + 24;
    let mut flood = flood_as(NOBODY, &d.socket, n);
    let mut line = String::new();
    BufReader::new(flood.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let got: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(got["refused"], n - limit, "{got}");
    let msg = got["first"][0]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("too many connections"), "{got}");
    // The flooding user holds its limit; the test user is not affected.
    run_works(&d, &pol, "during-flood");
    drop(flood.stdin.take());
    assert!(flood.wait().unwrap().success());
    run_works(&d, &pol, "after-flood");
}

/// One query frame as `uid`, through Python; the daemon's answer frames.
fn query_as(uid: u32, socket: &Path, request: &Value) -> Vec<Value> {
    let script = r#"
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
body = sys.argv[2].encode()
s.sendall(b'Q' + struct.pack('<I', len(body)) + body)
def exact(n):
    out = b''
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            return None
        out += chunk
    return out
while True:
    hdr = exact(4)
    if hdr is None:
        break
    print(exact(struct.unpack('<I', hdr)[0]).decode(), flush=True)
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(socket)
        .arg(request.to_string())
        .env_clear()
        .uid(uid)
        .gid(uid)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    stdout_of(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn another_user_gets_neither_the_sessions_nor_the_records_of_the_test_user() {
    let d = Daemon::start();
    let u = user();
    let pol = simple_policy("abuse-peer", &[]);
    let mut server = d
        .run_cmd(
            &pol,
            &["/usr/bin/python3", "-c", "import time; time.sleep(60)"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    d.wait_record("the test user's launch", |r| {
        is_kind(r, "launch") && r["server"] == "it-abuse-peer"
    });
    let status = json!({"type": "status", "version": proto::VERSION});
    // Root sees the server; nobody else does.
    let mut root = UnixStream::connect(&d.socket).unwrap();
    proto::send_query_hello(&root).unwrap();
    proto::write_frame(
        &mut root,
        &Request::Status {
            version: proto::VERSION,
        },
    )
    .unwrap();
    let Some(Response::Status(report)) = proto::read_frame::<Response>(&mut root).unwrap() else {
        panic!("no status for root");
    };
    assert!(report.servers.iter().any(|s| s.uid == u.uid));
    let theirs = query_as(NOBODY, &d.socket, &status);
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(theirs[0]["type"], "status");
    assert_eq!(theirs[0]["only_uid"], NOBODY);
    assert_eq!(theirs[0]["servers"], json!([]), "{:#}", theirs[0]);
    // Records: none of the test user's, none of root's.
    let audit = json!({"type": "audit", "version": proto::VERSION, "query": {
        "server": null, "kind": null, "denied": false, "tool": null, "since": null, "follow": false}});
    let frames = query_as(NOBODY, &d.socket, &audit);
    assert_eq!(frames.last().unwrap()["type"], "end", "{frames:?}");
    for f in &frames {
        for line in f["lines"].as_array().into_iter().flatten() {
            let rec: Value = serde_json::from_str(line.as_str().unwrap()).unwrap();
            assert_eq!(rec["uid"], NOBODY, "another user's record leaked: {rec}");
        }
    }
    // A query connection cannot carry a launch or a signal.
    let signal = json!({"type": "signal", "signal": 9});
    let frames = query_as(NOBODY, &d.socket, &signal);
    assert_eq!(frames[0]["type"], "error", "{frames:?}");
    assert!(frames[0]["message"]
        .as_str()
        .unwrap()
        .contains("may only ask for status, audit records or approvals"));
    // The test user's server ran on untouched.
    assert!(server.try_wait().unwrap().is_none(), "the server died");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    server.wait().unwrap();
    run_works(&d, &pol, "after-peers");
}
