//! Tests of reviewing the trail: `--launch`/`--call`, time order, `-n`,
//! `--follow` starting at the end, local and UTC times, unknown values,
//! a caller's scope and the per-call summaries.

use std::{
    path::Path,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use jiff::tz::TimeZone;
use serde_json::{json, Value};

use super::{
    tests::{append, follower},
    *,
};

/// A record of launch `git-1` at `micros` past 2023-11-14T22:13:20Z.
fn at(micros: u32, kind: &str, extra: Value) -> Value {
    let mut r = json!({"v": 1, "ts": format!("2023-11-14T22:13:20.{micros:06}Z"),
        "kind": kind, "server": "git", "policy": "git", "launch": "git-1", "uid": 1000,
        "denied": false});
    r.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    r
}

fn lines(recs: &[Value]) -> String {
    recs.iter().map(|r| format!("{r}\n")).collect()
}

fn utc_view(json: bool, calls: bool) -> View {
    View {
        json,
        color: false,
        clock: Clock::utc(),
        calls,
    }
}

struct Log(std::path::PathBuf);
impl Drop for Log {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

fn log(name: &str, text: &str) -> Log {
    let dir = std::env::temp_dir().join(format!("mcpguard-review-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    std::fs::write(&path, text).unwrap();
    Log(path)
}

fn read(path: &Path, filter: &Filter, view: &View) -> Result<String, QueryError> {
    let mut out = Vec::new();
    run(path, filter, view, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

/// The `n` values of JSON output lines.
fn ns(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn launch_and_call_filters_match_call_ids_numbers_strings_and_shared_records() {
    let own = at(1, "open", json!({"call_id": 3, "tool": "status"}));
    let named = at(2, "open", json!({"call_id": "abc", "tool": "log"}));
    let shared = at(
        3,
        "open",
        json!({"calls": [{"call_id": 3, "tool": "status"},
        {"call_id": 4, "tool": "diff"}]}),
    );
    let other_launch = json!({"kind": "open", "launch": "git-2", "call_id": 3});
    let untied = at(4, "open", json!({}));
    let m = |f: Filter, r: &Value| f.matcher().unwrap().matches(r);
    let call = |id: &str| Filter {
        call: Some(id.into()),
        ..Filter::default()
    };
    assert!(m(call("3"), &own) && m(call("3"), &shared) && m(call("3"), &other_launch));
    assert!(m(call("4"), &shared) && !m(call("4"), &own));
    assert!(m(call("abc"), &named) && !m(call("\"abc\""), &named));
    assert!(!m(call("3"), &untied));
    let launch = Filter {
        launch: Some("git-1".into()),
        call: Some("3".into()),
        ..Filter::default()
    };
    assert!(m(launch.clone(), &own) && !m(launch, &other_launch));
    let in_call = Filter {
        in_call: true,
        ..Filter::default()
    };
    assert!(m(in_call.clone(), &own) && m(in_call.clone(), &shared));
    assert!(!m(in_call, &untied));
}

#[test]
fn the_filter_is_the_wire_form_and_fields_it_lacks_default() {
    let f = Filter {
        launch: Some("git-1".into()),
        call: Some("3".into()),
        lines: Some(5),
        in_call: true,
        follow: true,
        ..Filter::default()
    };
    let wire = serde_json::to_value(&f).unwrap();
    assert_eq!(wire["launch"], "git-1");
    assert_eq!(wire["call"], "3");
    assert_eq!(wire["lines"], 5);
    assert_eq!(serde_json::from_value::<Filter>(wire).unwrap(), f);
    // An older client's query: the new fields are unset.
    let old: Filter = serde_json::from_value(json!({"server": "git", "denied": true})).unwrap();
    assert_eq!(old.launch, None);
    assert_eq!(old.lines, None);
    assert!(!old.follow && !old.in_call);
}

#[test]
fn records_come_out_in_time_order_stably_and_n_keeps_the_last() {
    // Written out of order: a tools_call record carries its start.
    let recs = [
        at(5, "open", json!({"n": 2})),
        at(9, "open", json!({"n": 4})),
        at(1, "mcp", json!({"n": 1})),
        at(5, "open", json!({"n": 3})),
        json!({"v": 1, "kind": "open", "n": 5}),
        at(7, "exit", json!({"n": 6})),
    ];
    let l = log("order", &lines(&recs));
    let all = read(&l.0, &Filter::default(), &utc_view(true, false)).unwrap();
    // Equal times keep their order; a record without a time stays after
    // the record read before it.
    assert_eq!(ns(&all), [1, 2, 3, 5, 6, 4]);
    let last = Filter {
        lines: Some(2),
        ..Filter::default()
    };
    assert_eq!(
        ns(&read(&l.0, &last, &utc_view(true, false)).unwrap()),
        [6, 4]
    );
    let opens = Filter {
        kind: Some("open".into()),
        lines: Some(3),
        ..Filter::default()
    };
    assert_eq!(
        ns(&read(&l.0, &opens, &utc_view(true, false)).unwrap()),
        [3, 5, 4]
    );
    let none = Filter {
        lines: Some(0),
        ..Filter::default()
    };
    assert_eq!(read(&l.0, &none, &utc_view(true, false)).unwrap(), "");
}

#[test]
fn reorder_releases_the_earliest_and_keeps_the_latest() {
    let mut r = Reorder::new(Some(2));
    for (us, n) in [(3, 1u8), (1, 2), (2, 3)] {
        assert!(r.push(&at(us, "exit", json!({})), vec![n]).is_empty());
    }
    let kept: Vec<Vec<u8>> = r.drain().into_iter().map(|h| h.raw).collect();
    assert_eq!(kept, [vec![3], vec![1]]);
    assert!(r.drain().is_empty());
}

#[test]
fn human_times_are_local_by_default_and_utc_when_asked() {
    let rec = at(123_456, "exit", json!({"pid": 7}));
    // Central European time without the system's zone files: winter is +01:00.
    let cet = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
    let mut local = HumanFormat::new(false).with_clock(Clock::zone(cet.clone()));
    let mut out = Vec::new();
    local.write(&rec, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("--- 2023-11-14 (CET, +01:00) ---\n23:13:20.123456 git[git-1]"),
        "{text}"
    );
    // Past local midnight the date line is the local date.
    let late = json!({"ts": "2023-11-14T23:30:00.000000Z", "kind": "exit"});
    let mut out = Vec::new();
    local.write(&late, &mut out).unwrap();
    assert!(
        String::from_utf8(out)
            .unwrap()
            .starts_with("--- 2023-11-15 (CET, +01:00) ---\n00:30:00.000000 "),
        "local date line"
    );
    // Summer time shows its own offset.
    let summer = json!({"ts": "2023-07-01T10:00:00.000000Z", "kind": "exit"});
    let mut out = Vec::new();
    local.write(&summer, &mut out).unwrap();
    assert!(String::from_utf8(out)
        .unwrap()
        .starts_with("--- 2023-07-01 (CEST, +02:00) ---\n12:00:00.000000 "));

    let mut utc = HumanFormat::new(false);
    let mut out = Vec::new();
    utc.write(&rec, &mut out).unwrap();
    assert!(String::from_utf8(out)
        .unwrap()
        .starts_with("--- 2023-11-14 (UTC) ---\n22:13:20.123456 git[git-1]"));
    assert_eq!(
        Clock::zone(cet).date_time("2023-11-14T22:13:20.123456Z"),
        "2023-11-14 23:13:20.123456 +01:00"
    );
    assert_eq!(
        Clock::utc().date_time("2023-11-14T22:13:20.123456Z"),
        "2023-11-14 22:13:20.123456 UTC"
    );
    // JSON keeps the log's RFC 3339 UTC bytes whatever the clock.
    let l = log("json-utc", &lines(std::slice::from_ref(&rec)));
    let mut view = utc_view(true, false);
    view.clock = Clock::zone(TimeZone::fixed(jiff::tz::offset(5)));
    let out = read(&l.0, &Filter::default(), &view).unwrap();
    assert_eq!(out, format!("{rec}\n"));
}

#[test]
fn unknown_kinds_servers_tools_and_launches_are_errors_listing_the_known() {
    let recs = [
        at(1, "launch", json!({})),
        at(2, "mcp", json!({"tool": "status", "call_id": 1})),
        at(
            3,
            "open",
            json!({"calls": [{"call_id": 1, "tool": "diff"}]}),
        ),
    ];
    let l = log("unknown", &lines(&recs));
    let v = utc_view(false, false);
    let err = |f: Filter| read(&l.0, &f, &v).unwrap_err();
    let kind = Filter {
        kind: Some("opne".into()),
        ..Filter::default()
    };
    let e = err(kind).to_string();
    assert!(
        e.contains("--kind \"opne\"") && e.contains("open, connect") && e.contains("landlock"),
        "{e}"
    );
    let server = Filter {
        server: Some("gti".into()),
        ..Filter::default()
    };
    assert!(
        matches!(err(server.clone()), QueryError::Unknown { what: "server", known, .. } if known == "git")
    );
    let tool = Filter {
        tool: Some("log".into()),
        ..Filter::default()
    };
    assert!(
        matches!(err(tool), QueryError::Unknown { what: "tool", known, .. } if known == "diff, status")
    );
    let launch = Filter {
        launch: Some("git-9".into()),
        ..Filter::default()
    };
    assert!(
        matches!(err(launch), QueryError::Unknown { what: "launch", known, .. } if known == "git-1")
    );
    // Known values that match nothing else are no error, nor is a launch
    // id given to --server.
    for ok in [
        Filter {
            tool: Some("diff".into()),
            kind: Some("exec".into()),
            ..Filter::default()
        },
        Filter {
            server: Some("git-1".into()),
            ..Filter::default()
        },
    ] {
        assert!(read(&l.0, &ok, &v).is_ok());
    }
    // What the daemon sends to check with: the value alone when known,
    // the names when not, nothing unasked.
    let known = Known {
        servers: (0..2000).map(|i| format!("s{i}")).collect(),
        launches: ["git-1".to_string()].into(),
        tools: ["status".to_string()].into(),
    };
    let f = Filter {
        server: Some("s7".into()),
        tool: Some("nope".into()),
        ..Filter::default()
    };
    let narrow = known.clone().narrow(&f);
    assert_eq!(narrow.servers, ["s7".to_string()].into());
    assert!(narrow.launches.is_empty());
    assert_eq!(narrow.tools, ["status".to_string()].into());
    assert!(matches!(
        f.check_known(&narrow),
        Err(QueryError::Unknown { what: "tool", .. })
    ));
    let by_launch = Filter {
        server: Some("git-1".into()),
        ..Filter::default()
    };
    assert!(by_launch
        .check_known(&known.clone().narrow(&by_launch))
        .is_ok());
    let unknown = Filter {
        server: Some("x".into()),
        ..Filter::default()
    };
    assert_eq!(known.narrow(&unknown).servers.len(), 1000);
    // Following, a server may start later.
    let follow = Filter {
        follow: true,
        ..server
    };
    assert!(follow.check_known(&Known::default()).is_ok());
}

#[test]
fn a_scoped_stream_sees_and_names_only_its_uids_records() {
    let mine = at(1, "open", json!({"n": 1}));
    let mut theirs = at(2, "open", json!({"n": 2, "server": "secret-srv"}));
    theirs["uid"] = 1001.into();
    let daemon = json!({"v": 1, "ts": "2023-11-14T22:13:20.000003Z", "kind": "daemon", "n": 3});
    let l = log("scope", &lines(&[mine, theirs, daemon]));
    let (mut out, mut diag) = (Vec::new(), Vec::new());
    let last = Filter {
        lines: Some(1),
        ..Filter::default()
    };
    let summary = stream(&l.0, &last, Some(1000), &mut out, &mut diag, &|| false).unwrap();
    assert_eq!(
        ns(&String::from_utf8(out).unwrap()),
        [1],
        "-n counts the caller's records"
    );
    assert!(!summary.known.servers.contains("secret-srv"));
    let mut out = Vec::new();
    stream(&l.0, &Filter::default(), None, &mut out, &mut diag, &|| {
        false
    })
    .unwrap();
    assert_eq!(
        ns(&String::from_utf8(out).unwrap()),
        [1, 2, 3],
        "root sees all"
    );
}

/// Output lines once `want` lines are there (5 s at most).
fn settle(out: &Arc<Mutex<Vec<u8>>>, want: usize) -> Vec<u64> {
    for _ in 0..100 {
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        if text.lines().count() >= want {
            return ns(&text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ns(&String::from_utf8(out.lock().unwrap().clone()).unwrap())
}

#[test]
fn follow_starts_at_the_end_or_after_the_last_n() {
    let old = lines(&[
        at(1, "exit", json!({"n": 1})),
        at(2, "exit", json!({"n": 2})),
    ]);
    // The log ends mid-line: the rest of that line is not a record to show.
    let half = at(3, "exit", json!({"n": 3})).to_string();
    let l = log("follow-end", &format!("{old}{}", &half[..20]));
    let (out, stop, handle) = follower(&l.0, None);
    std::thread::sleep(Duration::from_millis(400));
    append(&l.0, &format!("{}\n", &half[20..]));
    append(
        &l.0,
        &lines(&[
            at(5, "exit", json!({"n": 5})),
            at(4, "exit", json!({"n": 4})),
        ]),
    );
    let got = settle(&out, 2);
    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap();
    assert_eq!(got, [4, 5], "no old record; a batch in time order");

    let l = log("follow-last", &old);
    let (out, stop, handle) = follower(&l.0, Some(1));
    assert_eq!(settle(&out, 1), [2]);
    append(&l.0, &lines(&[at(6, "exit", json!({"n": 6}))]));
    let got = settle(&out, 2);
    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap();
    assert_eq!(got, [2, 6]);
}

fn call_records() -> Vec<Value> {
    let c = |us, kind, extra: Value| {
        let mut r = at(us, kind, extra);
        r["tool"] = "commit".into();
        r["call_id"] = 7.into();
        r
    };
    vec![
        c(
            2,
            "open",
            json!({"path": "/r/.git/HEAD", "flags": ["O_RDONLY"], "result": 3}),
        ),
        c(
            3,
            "open",
            json!({"path": "/r/.git/index.lock", "flags": ["O_RDWR", "O_CREAT", "O_EXCL"], "result": 4}),
        ),
        c(
            4,
            "open",
            json!({"path": "/r/.git/COMMIT_EDITMSG", "flags": ["O_WRONLY", "O_CREAT", "O_TRUNC"], "result": 5}),
        ),
        c(
            5,
            "rename",
            json!({"call": "rename", "old_path": "/r/.git/index.lock", "new_path": "/r/.git/index", "result": 0}),
        ),
        c(
            6,
            "unlink",
            json!({"call": "unlink", "path": "/r/.git/tmp", "result": 0}),
        ),
        c(
            7,
            "exec",
            json!({"filename": "/usr/bin/git", "argv": ["git", "gc", "--auto"], "argc_truncated": false, "result": 0}),
        ),
        c(
            8,
            "connect",
            json!({"op": "connect4", "protocol": "tcp", "addr": "140.82.112.3", "port": 443, "verdict": "allow"}),
        ),
        c(
            9,
            "connect",
            json!({"op": "connect6", "protocol": "tcp", "addr": "2001:db8::1", "port": 22, "verdict": "deny", "denied": true}),
        ),
        c(
            10,
            "dns",
            json!({"qname": "github.com", "qtype": "A", "transport": "udp", "verdict": "allow"}),
        ),
        c(
            10,
            "unix_connect",
            json!({"path": "/run/docker.sock", "result": -13, "errno": "EACCES", "denied": true}),
        ),
        c(
            11,
            "open",
            json!({"path": "/home/u/.ssh/id_ed25519", "flags": ["O_RDONLY"], "result": -13, "errno": "EACCES", "denied": true}),
        ),
        // Shared with a concurrent call of another tool.
        at(
            12,
            "open",
            json!({"path": "/etc/gitconfig", "flags": ["O_RDONLY"], "result": 6,
            "calls": [{"call_id": 7, "tool": "commit"}, {"call_id": 8, "tool": "status"}]}),
        ),
        // Written at the call's end, with its start time.
        c(
            1,
            "mcp",
            json!({"event": "tools_call", "detail": {"arguments": {}, "duration_ms": 12.5, "result_bytes": 10, "is_error": true}}),
        ),
        at(
            20,
            "mcp",
            json!({"tool": "status", "call_id": 8, "event": "tools_call",
            "detail": {"arguments": {}, "duration_ms": 1.0, "error": {"code": -32000, "message": "boom"}}}),
        ),
        at(
            30,
            "mcp",
            json!({"tool": "push", "call_id": 9, "event": "tool_denied", "denied": true,
            "detail": {"reason": "policy"}}),
        ),
        at(
            40,
            "open",
            json!({"path": "/startup", "flags": ["O_RDONLY"], "result": 3}),
        ),
    ]
}

#[test]
fn call_summaries_say_what_each_call_did() {
    let l = log("calls", &lines(&call_records()));
    let f = Filter {
        in_call: true,
        ..Filter::default()
    };
    let json = read(&l.0, &f, &utc_view(true, true)).unwrap();
    let calls: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(calls.len(), 3, "{json}");
    let commit = &calls[0];
    assert_eq!(commit["tool"], "commit");
    assert_eq!(commit["call_id"], 7);
    assert_eq!(commit["server"], "git");
    assert_eq!(commit["launch"], "git-1");
    assert_eq!(commit["start"], "2023-11-14T22:13:20.000001Z");
    assert_eq!(commit["duration_ms"], 12.5);
    assert_eq!(commit["result"], "is_error");
    assert_eq!(
        commit["files"]["read"],
        json!(["/etc/gitconfig", "/r/.git/HEAD"])
    );
    assert_eq!(
        commit["files"]["written"],
        json!(["/r/.git/COMMIT_EDITMSG"])
    );
    assert_eq!(
        commit["files"]["created"],
        json!(["/r/.git/index", "/r/.git/index.lock"])
    );
    assert_eq!(
        commit["files"]["removed"],
        json!(["/r/.git/index.lock", "/r/.git/tmp"])
    );
    assert_eq!(commit["execs"], json!(["/usr/bin/git gc --auto"]));
    assert_eq!(commit["hosts"]["allowed"], json!(["140.82.112.3:443/tcp"]));
    assert_eq!(
        commit["hosts"]["denied"],
        json!(["[2001:db8::1]:22/tcp", "unix:/run/docker.sock"])
    );
    assert_eq!(commit["dns"]["allowed"], json!(["github.com"]));
    assert_eq!(commit["records"], 13);
    let denials = commit["denials"].as_array().unwrap();
    assert_eq!(denials.len(), 3, "{commit}");
    assert!(denials[2]
        .as_str()
        .unwrap()
        .contains("/home/u/.ssh/id_ed25519"));
    let status = &calls[1];
    assert_eq!(status["tool"], "status");
    assert_eq!(status["result"], "error");
    assert_eq!(status["error"], "boom");
    assert_eq!(status["files"]["read"], json!(["/etc/gitconfig"]));
    assert_eq!(calls[2]["result"], "refused");
    assert_eq!(calls[2]["tool"], "push");

    // The last call only, as a person reads it.
    let last = Filter {
        lines: Some(1),
        server: Some("git".into()),
        ..f.clone()
    };
    let text = read(&l.0, &last, &utc_view(false, true)).unwrap();
    assert_eq!(
        text,
        "call push#9 git[git-1] 2023-11-14 22:13:20.000030 UTC refused\n  \
         DENIED       mcp tool_denied push#9 (policy)\n"
    );
    let first = Filter {
        call: Some("7".into()),
        ..f
    };
    let text = read(&l.0, &first, &utc_view(false, true)).unwrap();
    let expect = [
        "call commit#7 git[git-1] 2023-11-14 22:13:20.000001 UTC 12.5ms is_error",
        "  read         /etc/gitconfig",
        "  read         /r/.git/HEAD",
        "  wrote        /r/.git/COMMIT_EDITMSG",
        "  created      /r/.git/index",
        "  created      /r/.git/index.lock",
        "  removed      /r/.git/index.lock",
        "  removed      /r/.git/tmp",
        "  exec         /usr/bin/git gc --auto",
        "  connect      140.82.112.3:443/tcp",
        "  connect DENY [2001:db8::1]:22/tcp",
        "  connect DENY unix:/run/docker.sock",
        "  dns          github.com",
    ];
    for (got, want) in text.lines().zip(expect) {
        assert_eq!(got, want, "{text}");
    }
    assert!(
        text.contains("DENIED       open /home/u/.ssh/id_ed25519"),
        "{text}"
    );
}
