//! Landlock's own denial records (ABI 7+): the daemon sets the kernel's
//! audit up, reads the read-log, and writes each denial of a guarded server
//! as a `landlock` record of its launch, with the kernel's resolved path or
//! target; another read-log reader (as journald's) keeps getting records.
//! Other daemons and Landlock users may log on this machine meanwhile:
//! records are matched by launch and by path, never counted globally.

use std::{
    os::{linux::net::SocketAddrExt, unix::fs::PermissionsExt},
    path::PathBuf,
    time::{Duration, Instant},
};

use mcpguard::kernel::audit_netlink::{Control, ReadLog, Received};
use serde_json::{json, Value};

use crate::{
    harness::*,
    mcp::{call, daemon_with_secrets, fixture_policy, SECRET},
};

/// A file in the test user's home: outside every grant, and not hidden by
/// the server's mount namespace (as /tmp is), so Landlock is what refuses.
struct HomeFile(PathBuf);

impl HomeFile {
    fn new(tag: &str, contents: &[u8], mode: u32) -> HomeFile {
        let path = user()
            .home
            .join(format!(".mcpguard-it-{tag}-{}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let u = user();
        std::os::unix::fs::chown(&path, Some(u.uid), Some(u.gid)).unwrap();
        HomeFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for HomeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The daemon left the kernel logging: audit on, the never,task rule
/// loaded (before it), a backlog that holds bursts. With an audit daemon
/// registered it changes nothing, so there is nothing of its to check.
fn assert_audit_set_up() {
    let mut control = Control::open().expect("audit control socket");
    let status = control.status().expect("AUDIT_GET");
    if status.pid != 0 {
        return;
    }
    assert_ne!(status.enabled, 0, "{status:?}");
    assert!(status.backlog_limit >= 8192, "{status:?}");
    let rules = control.rules().expect("AUDIT_LIST_RULES");
    assert!(rules.iter().any(|r| r.is_never_task()), "{rules:?}");
}

/// Whether a read-log member sees, within `within`, a Landlock access
/// record that names `needle`.
fn readlog_sees(log: &ReadLog, needle: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        if let Ok(Received::Messages(msgs)) = log.recv(&mut buf, Duration::from_millis(200)) {
            if msgs
                .iter()
                .any(|m| m.kind == 1423 && String::from_utf8_lossy(&m.payload).contains(needle))
            {
                return true;
            }
        }
    }
    false
}

fn landlock_of<'a>(records: &'a [Value], launch: &Value, blocker: &str) -> Option<&'a Value> {
    records.iter().find(|r| {
        is_kind(r, "landlock")
            && &r["launch"] == launch
            && r["blockers"]
                .as_array()
                .is_some_and(|b| b.iter().any(|x| x == blocker))
    })
}

#[test]
fn landlock_denials_come_from_the_kernels_own_records() {
    let mut d = Daemon::start();
    assert_audit_set_up();
    // Another reader of the read-log, as journald's: it still gets records.
    let journald = ReadLog::join(1 << 20).expect("join the audit read-log");

    let secret = HomeFile::new("ll-secret", b"secret\n", 0o644);
    let denied_bin = HomeFile::new("ll-true", &std::fs::read("/bin/true").unwrap(), 0o755);
    let mut outsider = as_user("/bin/sleep").arg("60").spawn().unwrap();
    let name = format!("mcpguard-it-ll-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();

    let pol = simple_policy("landlock-audit", &[]);
    let script = format!(
        "cat {secret}; {bin}; kill -TERM {pid}; \
         /usr/bin/python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect(\"\\0{name}\")'; \
         echo done",
        secret = secret.path(),
        bin = denied_bin.path(),
        pid = outsider.id(),
    );
    let out = d.run(&pol, &["/bin/sh", "-c", &script]);
    assert!(stdout_of(&out).contains("done"), "{}", describe(&out));
    assert!(
        alive(outsider.id()),
        "the signal outside the domain was delivered"
    );

    let launch = d.wait_record("the launch", |r| {
        is_kind(r, "launch") && r["server"] == "it-landlock-audit"
    })["launch"]
        .clone();
    let all = |records: &[Value]| {
        [
            "fs.read_file",
            "fs.execute",
            "scope.signal",
            "scope.abstract_unix_socket",
        ]
        .iter()
        .all(|b| landlock_of(records, &launch, b).is_some())
    };
    let records = poll(Duration::from_secs(10), || {
        let r = d.records();
        all(&r).then_some(r)
    })
    .unwrap_or_else(|| panic!("landlock records missing:\n{:#?}", d.records()));
    let read = landlock_of(&records, &launch, "fs.read_file").unwrap();
    assert_eq!(read["path"], secret.path(), "{read}");
    assert_eq!(read["path_source"], "landlock", "{read}");
    assert_eq!(read["denied"], true, "{read}");
    assert!(read["ino"].is_u64(), "{read}");
    let exec = landlock_of(&records, &launch, "fs.execute").unwrap();
    assert_eq!(exec["path"], denied_bin.path(), "{exec}");
    let signal = landlock_of(&records, &launch, "scope.signal").unwrap();
    assert_eq!(signal["opid"], outsider.id(), "{signal}");
    assert_eq!(signal["ocomm"], "sleep", "{signal}");
    let unix = landlock_of(&records, &launch, "scope.abstract_unix_socket").unwrap();
    assert_eq!(unix["path"], name.as_str(), "{unix}");
    assert_eq!(unix["abstract_addr"], true, "{unix}");

    assert!(
        readlog_sees(&journald, secret.path(), Duration::from_secs(5)),
        "a second read-log reader got no record while the daemon ran"
    );
    // The domain's deallocated count matched what arrived: no loss. The
    // record comes ~50 ms after the server's last task; give it time.
    std::thread::sleep(Duration::from_secs(2));
    let losses: Vec<Value> = d
        .records()
        .into_iter()
        .filter(|r| is_kind(r, "loss") && r["launch"] == launch && r["source"] == "landlock")
        .collect();
    assert!(losses.is_empty(), "{losses:#?}");

    let text = String::from_utf8_lossy(
        &d.cli(&[
            "audit",
            "--log",
            d.log.to_str().unwrap(),
            "--kind",
            "landlock",
        ])
        .output()
        .unwrap()
        .stdout,
    )
    .into_owned();
    assert!(
        text.contains(&format!("DENY  landlock fs.read_file {}", secret.path())),
        "{text}"
    );
    let _ = outsider.kill();
    let _ = outsider.wait();
    d.stop_cleanly();
    // The rule stays, whatever else happens at exit.
    assert_audit_set_up();
}

#[test]
fn a_landlock_denial_inside_a_tool_call_carries_the_call_id_and_is_redacted() {
    let (d, token) = daemon_with_secrets();
    // The denied path holds the server's secret: its record must not.
    let secret = HomeFile::new(&format!("ll-call-{SECRET}"), b"secret\n", 0o644);
    let (pol, script) = fixture_policy(
        "it-ll-call",
        &format!(
            "[secrets]\nFIXTURE_TOKEN = {{ file = {:?} }}\n",
            token.display().to_string()
        ),
        &[],
    );
    let python = peers().join("venv/bin/python");
    let got = call(
        &d,
        &pol,
        "read_file",
        json!({"path": secret.path()}),
        &[python.to_str().unwrap(), script.to_str().unwrap()],
    );
    assert_eq!(got["is_error"], true, "{got}");
    let call = d.wait_record("the read_file call", |r| {
        is_kind(r, "mcp") && r["event"] == "tools_call" && r["tool"] == "read_file"
    });
    let id = call["call_id"].clone();
    let redacted = secret.path().replace(SECRET, "[REDACTED:FIXTURE_TOKEN]");
    d.wait_record("the Landlock denial tied to the call, redacted", |r| {
        is_kind(r, "landlock")
            && r["launch"] == call["launch"]
            && r["path"] == redacted.as_str()
            && r["tool"] == "read_file"
            && r["call_id"] == id
    });
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(!log.contains(SECRET), "the secret reached the log");
}
