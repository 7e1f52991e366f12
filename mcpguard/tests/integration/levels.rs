//! Audit levels (`[audit] files`) against the real kernel: the fixture MCP
//! server reads, writes, execs and connects inside tool calls, and tries a
//! read outside its grants and a write outside its write grants before it
//! serves. At the default level (`calls`) the calls' activity is recorded
//! and tied to their ids while the runtime loading itself is not; at `all`
//! it is; at `denied` only refusals (and execs, connects) are; the
//! refusals outside any call are recorded at every level.

use std::{
    os::unix::{fs::PermissionsExt, net::UnixListener},
    path::{Path, PathBuf},
};

use serde_json::{json, Value};

use crate::{harness::*, mcp::client};

const FIXTURE: &str = include_str!("../peers/fixture_server.py");

/// What one session works with.
struct Setup {
    policy: PathBuf,
    script: PathBuf,
    notes: PathBuf,
    written: PathBuf,
    secret: PathBuf,
    blocked: PathBuf,
    socket: PathBuf,
}

/// The fixture under a policy named `name` at `level` (`None`: no
/// `[audit]` table, the default): it may read its directory, write `out/`
/// and connect to `sock`.
fn setup(name: &str, level: Option<&str>) -> Setup {
    let dir = tempdir(name);
    let script = dir.join("fixture_server.py");
    std::fs::write(&script, FIXTURE).unwrap();
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, "level notes\n").unwrap();
    for f in [&script, &notes] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    // In the user's home, which the mount fence leaves visible (scratch
    // directories under /tmp it hides: ENOENT, no refusal).
    let secret = user().home.join(format!(".{name}-secret"));
    std::fs::write(&secret, "not yours\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let socket = dir.join("sock");
    let peers = peers();
    let quote = |p: &Path| format!("{:?}", p.display().to_string());
    let audit = level.map_or_else(String::new, |l| format!("[audit]\nfiles = {l:?}\n"));
    let text = format!(
        "name = {name:?}\n[filesystem]\nread = [\"/usr\", \"/lib\", \"/lib64\", {}, {}]\n\
         write = [{}]\nexec = [\"/usr/bin\", \"/usr/lib\", \"/lib\", \"/lib64\", \"/bin\"]\n\
         [network]\nunix = [{}]\n\
         [env]\npass = [\"PATH\", \"HOME\", \"FIXTURE_STARTUP_READ\", \"FIXTURE_STARTUP_WRITE\"]\n{audit}",
        quote(&dir),
        quote(&peers),
        quote(&out),
        quote(&socket),
    );
    Setup {
        policy: policy(&dir, name, &text),
        script,
        notes,
        written: out.join("new.txt"),
        secret,
        // Readable, not writable: the mount view is read-only there.
        blocked: dir.join("blocked.txt"),
        socket,
    }
}

/// One session of the fixture at `level`: startup probes, then a read, a
/// write, an exec, a Unix connect and a refused read, each in its call.
/// Returns the setup and the server's records once it has exited.
fn session(d: &Daemon, name: &str, level: Option<&str>) -> (Setup, Vec<Value>) {
    let s = setup(name, level);
    let listener = UnixListener::bind(&s.socket).unwrap();
    std::fs::set_permissions(&s.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let python = peers().join("venv/bin/python");
    let calls = json!([
        ["read_file", {"path": s.notes}],
        ["write_file", {"path": s.written, "text": "hi"}],
        ["run", {"argv": ["/usr/bin/true"]}],
        ["connect_unix", {"path": s.socket}],
        ["read_file", {"path": s.secret}],
    ]);
    let (report, stderr) = client(
        d,
        Some(&s.policy),
        &calls,
        &[python.to_str().unwrap(), s.script.to_str().unwrap()],
        &[
            ("FIXTURE_STARTUP_READ", s.secret.to_str().unwrap()),
            ("FIXTURE_STARTUP_WRITE", s.blocked.to_str().unwrap()),
        ],
    );
    drop(listener);
    let r = &report["results"];
    assert_eq!(r[0]["text"][0], "level notes\n", "{report}\n{stderr}");
    assert_eq!(r[3]["text"][0], "connected", "{report}\n{stderr}");
    assert_eq!(r[4]["is_error"], true, "{report}\n{stderr}");
    assert!(stderr.contains("fixture: startup r errno 13"), "{stderr}");
    assert!(stderr.contains("fixture: startup w errno 30"), "{stderr}");
    d.wait_record("the fixture's exit", |r| {
        is_kind(r, "server_exit") && r["server"] == name
    });
    let records: Vec<Value> = d
        .records()
        .into_iter()
        .filter(|r| r["server"] == name)
        .collect();
    (s, records)
}

/// The call id of `tool`'s n-th call (0-based) in the session.
fn call_id(records: &[Value], tool: &str, n: usize) -> Value {
    records
        .iter()
        .filter(|r| is_kind(r, "mcp") && r["event"] == "tools_call" && r["tool"] == tool)
        .nth(n)
        .unwrap_or_else(|| panic!("no tools_call record {n} of {tool}"))["call_id"]
        .clone()
}

fn find(records: &[Value], pred: impl Fn(&Value) -> bool) -> Option<&Value> {
    records.iter().find(|r| pred(r))
}

fn open_of<'a>(records: &'a [Value], path: &Path) -> Option<&'a Value> {
    find(records, |r| {
        is_kind(r, "open") && r["path"] == path.to_str().unwrap()
    })
}

/// What every level records: the refusals outside any call (untagged),
/// the refused read in its call, the exec and the connect in theirs.
fn assert_always_recorded(s: &Setup, records: &[Value], level: &str) {
    let startup_read = find(records, |r| {
        is_kind(r, "open")
            && r["path"] == s.secret.to_str().unwrap()
            && r["errno"] == "EACCES"
            && r["call_id"].is_null()
    });
    assert!(
        startup_read.is_some_and(|r| r["denied"] == true),
        "{level}: the refused read at startup must be recorded: {startup_read:?}"
    );
    let startup_write = open_of(records, &s.blocked);
    assert!(
        startup_write.is_some_and(|r| r["denied"] == true
            && r["errno"] == "EROFS"
            && r["call_id"].is_null()),
        "{level}: the refused write at startup must be recorded: {startup_write:?}"
    );
    let refused_id = call_id(records, "read_file", 1);
    let refused = find(records, |r| {
        is_kind(r, "open") && r["path"] == s.secret.to_str().unwrap() && r["call_id"] == refused_id
    });
    assert!(
        refused.is_some_and(|r| r["denied"] == true),
        "{level}: the refused read in a call must be recorded with its id"
    );
    let run_id = call_id(records, "run", 0);
    assert!(
        find(records, |r| is_kind(r, "exec")
            && r["filename"] == "/usr/bin/true"
            && r["call_id"] == run_id)
        .is_some(),
        "{level}: the exec must be recorded with run's id"
    );
    let connect_id = call_id(records, "connect_unix", 0);
    assert!(
        find(records, |r| is_kind(r, "unix_connect")
            && r["path"] == s.socket.to_str().unwrap()
            && r["result"] == 0
            && r["call_id"] == connect_id)
        .is_some(),
        "{level}: the connect must be recorded with connect_unix's id"
    );
}

/// Allowed file records (opens, one-path calls, links, renames) written
/// outside any call.
fn allowed_outside_calls(records: &[Value]) -> Vec<&Value> {
    const FILE_KINDS: &[&str] = &["open", "mkdir", "unlink", "rmdir", "link", "rename"];
    records
        .iter()
        .filter(|r| {
            FILE_KINDS.iter().any(|k| is_kind(r, k))
                && r["denied"] == false
                && r["call_id"].is_null()
        })
        .collect()
}

#[test]
fn the_default_level_records_what_calls_touch_and_every_refusal_but_not_startup() {
    let d = Daemon::start();
    let (s, records) = session(&d, "it-lvl-calls", None);
    let launch = find(&records, |r| is_kind(r, "launch")).expect("launch record");
    assert_eq!(launch["layers"]["audit_files"], "calls", "{launch}");
    assert_always_recorded(&s, &records, "calls");
    let read = open_of(&records, &s.notes).expect("the call's read must be recorded");
    assert_eq!(read["call_id"], call_id(&records, "read_file", 0), "{read}");
    assert_eq!(read["denied"], false, "{read}");
    let write = open_of(&records, &s.written).expect("the call's write must be recorded");
    assert_eq!(
        write["call_id"],
        call_id(&records, "write_file", 0),
        "{write}"
    );
    // Python loading itself (the script, the SDK) is not recorded. (The
    // refused read's traceback opens the script again, inside its call.)
    assert!(
        find(&records, |r| is_kind(r, "open")
            && r["path"] == s.script.to_str().unwrap()
            && r["call_id"].is_null())
        .is_none(),
        "the startup open of the script was recorded"
    );
    let outside = allowed_outside_calls(&records);
    assert!(
        outside.is_empty(),
        "{} allowed file records outside any call, e.g. {}",
        outside.len(),
        outside[0]
    );
}

#[test]
fn at_all_the_startup_is_recorded_too() {
    let d = Daemon::start();
    let (s, records) = session(&d, "it-lvl-all", Some("all"));
    assert_always_recorded(&s, &records, "all");
    let script = open_of(&records, &s.script).expect("python's open of the script");
    assert!(
        script["call_id"].is_null(),
        "the first is at startup: {script}"
    );
    assert!(
        allowed_outside_calls(&records).len() > 100,
        "a python start opens hundreds of files"
    );
    let read = open_of(&records, &s.notes).expect("the call's read");
    assert_eq!(read["call_id"], call_id(&records, "read_file", 0), "{read}");
}

#[test]
fn at_denied_a_calls_reads_and_writes_are_not_recorded_but_its_refusals_are() {
    let d = Daemon::start();
    let (s, records) = session(&d, "it-lvl-denied", Some("denied"));
    assert_always_recorded(&s, &records, "denied");
    assert!(open_of(&records, &s.notes).is_none(), "an allowed read");
    assert!(open_of(&records, &s.written).is_none(), "an allowed write");
    assert!(
        allowed_outside_calls(&records).is_empty()
            && !records
                .iter()
                .any(|r| (is_kind(r, "open") || is_kind(r, "fork")) && r["denied"] == false),
        "allowed file or fork records at denied"
    );
}
