//! Tests of `mcpguard audit`'s reading, filtering and human lines.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::UNIX_EPOCH,
};

use serde_json::json;

use super::{
    super::{format_ts, AuditRecord, Body, Origin},
    filter::*,
    human::*,
    *,
};

const T0: u64 = 1_700_000_000; // 2023-11-14T22:13:20Z

fn rec(body: Body, secs: u64) -> AuditRecord {
    let origin = Origin {
        server: "time".into(),
        policy: "time".into(),
        launch: "time-3".into(),
        uid: 1000,
    };
    let mut r = AuditRecord::new(
        body,
        Some(&origin),
        UNIX_EPOCH + Duration::new(secs, 123_456_000),
    );
    r.pid = Some(4242);
    r.tid = Some(4242);
    r.comm = Some("python3".into());
    r
}

fn open_denied() -> Body {
    Body::Open {
        call: "openat".into(),
        path: "/root/.ssh/id_rsa".into(),
        path_truncated: false,
        flags: vec!["O_RDONLY".into()],
        mode: None,
        dirfd: None,
        result: -13,
        errno: Some("EACCES".into()),
    }
}

fn connect(verdict: &str, addr: &str) -> Body {
    Body::Connect {
        op: "connect4".into(),
        protocol: "tcp".into(),
        addr: addr.into(),
        port: 8080,
        verdict: verdict.into(),
    }
}

fn value(r: &AuditRecord) -> Value {
    serde_json::from_str(&r.to_json_line()).unwrap()
}

fn human(r: &AuditRecord) -> String {
    HumanFormat::new(false).line(&value(r))
}

#[test]
fn human_lines_for_open_and_connect() {
    assert_eq!(
        human(&rec(open_denied(), T0)),
        "22:13:20.123456 time[time-3] pid 4242    python3         DENY  open /root/.ssh/id_rsa (O_RDONLY) = -EACCES"
    );
    assert_eq!(
        human(&rec(connect("allow", "127.0.0.1"), T0)),
        "22:13:20.123456 time[time-3] pid 4242    python3         allow connect4 tcp 127.0.0.1:8080"
    );
    assert_eq!(
        human(&rec(connect("deny", "2001:db8::1"), T0)),
        "22:13:20.123456 time[time-3] pid 4242    python3         DENY  connect4 tcp [2001:db8::1]:8080"
    );
}

#[test]
fn mcp_records_read_as_one_timeline_and_filter_by_tool() {
    let call = json!({"v": 1, "ts": "2023-11-14T22:13:20.000001Z", "kind": "mcp",
        "server": "fx", "tool": "read_file", "call_id": 3, "denied": false, "event": "tools_call",
        "detail": {"arguments": {"path": "/tmp/x", "token": {"type": "string", "len": 14}},
                   "duration_ms": 2.25, "result_bytes": 40, "is_error": false}});
    let open = json!({"v": 1, "ts": "2023-11-14T22:13:20.000002Z", "kind": "open",
        "server": "fx", "pid": 5, "comm": "python3", "tool": "read_file", "call_id": 3,
        "denied": false, "path": "/tmp/x", "flags": ["O_RDONLY"], "result": 3});
    let other = json!({"v": 1, "ts": "2023-11-14T22:13:20.000003Z", "kind": "open",
        "server": "fx", "pid": 5, "comm": "python3", "denied": false, "path": "/etc/x",
        "flags": ["O_RDONLY"], "result": 3});
    let denied = json!({"v": 1, "ts": "2023-11-14T22:13:20.000004Z", "kind": "mcp",
        "server": "fx", "tool": "delete_repo", "call_id": "a", "denied": true,
        "event": "tool_denied", "detail": {"reason": "policy"}});
    let h = HumanFormat::new(false);
    assert!(
        h.line(&call)
            .ends_with(r#"mcp tools_call read_file#3(path="/tmp/x", token=<string 14>) 2.2ms 40B"#),
        "{}",
        h.line(&call)
    );
    assert!(
        h.line(&open)
            .ends_with("open /tmp/x (O_RDONLY) = 3  <- read_file#3"),
        "{}",
        h.line(&open)
    );
    assert!(
        h.line(&denied)
            .contains("DENY  mcp tool_denied delete_repo#a (policy)"),
        "{}",
        h.line(&denied)
    );
    let f = Filter {
        tool: Some("read_file".into()),
        ..Filter::default()
    };
    let f = f.matcher().unwrap();
    assert!(f.matches(&call) && f.matches(&open));
    assert!(!f.matches(&other) && !f.matches(&denied));
    let several = json!({"kind": "open", "calls": [{"call_id": 1, "tool": "a"}, {"call_id": 2, "tool": "read_file"}]});
    assert!(f.matches(&several));
}

#[test]
fn human_lines_for_other_kinds() {
    let exec = rec(
        Body::Exec {
            filename: "/bin/sh".into(),
            path_truncated: false,
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            argc_truncated: true,
            result: 0,
            errno: None,
        },
        T0,
    );
    assert!(
        human(&exec).ends_with("      exec /bin/sh [sh -c \"echo hi\" …] = 0"),
        "{}",
        human(&exec)
    );

    let open = rec(
        Body::Open {
            call: "creat".into(),
            path: "/tmp/x".into(),
            path_truncated: true,
            flags: vec!["O_WRONLY".into(), "O_CREAT".into(), "O_TRUNC".into()],
            mode: Some(0o644),
            dirfd: None,
            result: 3,
            errno: None,
        },
        T0,
    );
    assert!(
        human(&open).ends_with("open /tmp/x… (O_WRONLY|O_CREAT|O_TRUNC) = 3 mode=0644 [creat]"),
        "{}",
        human(&open)
    );

    let minted = rec(
        Body::SecretMinted {
            env: "GITHUB_TOKEN".into(),
            helper: "github-app".into(),
            path: "/etc/mcpguard/minters/github-app".into(),
            ttl_secs: 900,
            expires_at: "2023-11-14T22:28:20.000001Z".into(),
        },
        T0,
    );
    assert!(
        human(&minted).ends_with(
            "secret_minted GITHUB_TOKEN by helper github-app \
             (/etc/mcpguard/minters/github-app) ttl=900s expires 2023-11-14T22:28:20.000001Z"
        ),
        "{}",
        human(&minted)
    );
}

#[test]
fn human_lines_for_path_calls() {
    let mkdir = rec(
        Body::Mkdir(crate::audit::PathCall {
            call: "mkdir".into(),
            path: "/home/u/.npm/_npx/1".into(),
            path_truncated: false,
            mode: Some(0o755),
            dirfd: None,
            fd: None,
            result: -13,
            errno: Some("EACCES".into()),
        }),
        T0,
    );
    assert!(
        human(&mkdir).ends_with("mkdir /home/u/.npm/_npx/1 = -EACCES mode=0755"),
        "{}",
        human(&mkdir)
    );

    let fchmod = rec(
        Body::Attr(crate::audit::PathCall {
            call: "fchmod".into(),
            path: String::new(),
            path_truncated: false,
            mode: Some(0o644),
            dirfd: None,
            fd: Some(3),
            result: -30,
            errno: Some("EROFS".into()),
        }),
        T0,
    );
    assert!(
        human(&fchmod).contains("DENY")
            && human(&fchmod).ends_with("fchmod fd 3 = -EROFS mode=0644"),
        "{}",
        human(&fchmod)
    );

    let link = rec(
        Body::Link(crate::audit::PathPair {
            call: "linkat".into(),
            old_path: "/home/u/.ssh/id_rsa".into(),
            old_path_truncated: false,
            new_path: "/srv/key".into(),
            new_path_truncated: true,
            flags: vec!["AT_EMPTY_PATH".into()],
            old_dirfd: None,
            new_dirfd: None,
            result: -18,
            errno: Some("EXDEV".into()),
        }),
        T0,
    );
    assert!(
        human(&link)
            .ends_with("DENY  linkat /home/u/.ssh/id_rsa -> /srv/key… (AT_EMPTY_PATH) = -EXDEV"),
        "{}",
        human(&link)
    );
}

#[test]
fn human_lines_for_launch_loss_and_server_exit() {
    let launch = rec(
        Body::Launch {
            argv: vec!["/usr/bin/python3".into(), "-m".into(), "srv".into()],
            cgroup: "/sys/fs/cgroup/mcpguard/t-1".into(),
            cwd: "/home/u".into(),
            layers: serde_json::json!({
                "ebpf_egress": true, "audit_proc": true, "audit_open": false,
                "landlock": {"status": "fully_enforced", "abi": 7},
            }),
        },
        T0,
    );
    assert!(
        human(&launch).ends_with(
            "launch /usr/bin/python3 -m srv cwd=/home/u cgroup=/sys/fs/cgroup/mcpguard/t-1 \
             landlock=fully_enforced(abi 7) egress=on audit=proc"
        ),
        "{}",
        human(&launch)
    );

    let mut loss = AuditRecord::new(
        Body::Loss {
            lost: 5,
            total: 9,
            source: "ringbuf".into(),
            first_ts: None,
            last_ts: None,
            denials: None,
        },
        None,
        UNIX_EPOCH + Duration::from_secs(T0),
    );
    assert_eq!(
        human(&loss),
        "22:13:20.000000 - LOSS  loss 5 events lost (ringbuf), 9 total"
    );
    loss.body = Body::ServerExit {
        exit_code: None,
        signal: Some(9),
    };
    assert_eq!(human(&loss), "22:13:20.000000 -       server_exit signal 9");
}

#[test]
fn color_only_when_asked() {
    let v = value(&rec(open_denied(), T0));
    let colored = HumanFormat::new(true).line(&v);
    assert!(
        colored.contains("\x1b[1;31mDENY\x1b[0m  open"),
        "{colored:?}"
    );
    assert!(!HumanFormat::new(false).line(&v).contains('\x1b'));
}

/// What a hostile server puts in the strings a record carries: cursor
/// up and erase line, an OSC title, a C1 CSI, a bidi override, an
/// isolate, a zero-width space and a line break.
const HOSTILE: &str = "x\x1b[1A\x1b[2K\x1b]0;t\x07\u{9b}2K\u{202e}\u{2066}\u{200b}\nDENY";

fn assert_clean(line: &str) {
    assert!(
        !line.chars().any(crate::term::is_unsafe),
        "raw control or format character in {line:?}"
    );
    // Visible as an escape: ours, or JSON's where a value is shown whole.
    assert!(
        line.contains(r"\x1b[1A\x1b[2K") || line.contains(r"\u001b[1A\u001b[2K"),
        "{line:?}"
    );
    assert!(line.contains(r"\u{202e}"), "{line:?}");
}

#[test]
fn hostile_strings_in_records_are_escaped() {
    let ts = "2023-11-14T22:13:20.000001Z";
    let records = [
        json!({"v": 1, "ts": ts, "kind": "open", "server": HOSTILE, "launch": HOSTILE, "pid": 7, "comm": HOSTILE, "path": HOSTILE, "flags": [HOSTILE], "errno": HOSTILE, "denied": true, "tool": HOSTILE, "call_id": HOSTILE}),
        json!({"v": 1, "ts": ts, "kind": "exec", "filename": HOSTILE, "argv": [HOSTILE, "ok"], "result": 0, "calls": [{"tool": HOSTILE, "call_id": 1}]}),
        json!({"v": 1, "ts": ts, "kind": "rename", "old_path": HOSTILE, "new_path": HOSTILE, "result": 0}),
        json!({"v": 1, "ts": ts, "kind": "unix_connect", "path": HOSTILE, "result": 0}),
        json!({"v": 1, "ts": ts, "kind": "landlock", "blockers": [HOSTILE], "domain": "1", "path": HOSTILE, "opid": 3, "ocomm": HOSTILE, "denied": true}),
        json!({"v": 1, "ts": ts, "kind": "launch_failed", "argv": [HOSTILE], "error": HOSTILE}),
        json!({"v": 1, "ts": ts, "kind": "secret_minted", "env": HOSTILE, "helper": HOSTILE, "path": HOSTILE, "ttl_secs": 60, "expires_at": HOSTILE}),
        json!({"v": 1, "ts": ts, "kind": "dns", "qname": HOSTILE, "qtype": "A", "transport": "udp", "detail": {"rcode": HOSTILE, "answers": [{"addr": HOSTILE}], "error": HOSTILE}}),
        json!({"v": 1, "ts": ts, "kind": "mcp", "event": "initialize", "detail": {"client": {"name": "c"}, "server": {"name": HOSTILE, "version": HOSTILE}, "protocol": "x"}}),
        json!({"v": 1, "ts": ts, "kind": "mcp", "event": "tools_call", "tool": HOSTILE, "call_id": HOSTILE, "detail": {"arguments": {HOSTILE: HOSTILE}, "error": {"message": HOSTILE}}}),
        json!({"v": 1, "ts": ts, "kind": "mcp", "event": "tools_list", "detail": {"count": 1, "shown": 0, "hidden": [HOSTILE]}}),
        json!({"v": 1, "ts": ts, "kind": "mcp", "event": "server_request", "detail": {"method": HOSTILE, "summary": HOSTILE}}),
        json!({"v": 1, "ts": ts, "kind": "tool_changed", "tool": HOSTILE, "change": "added", "action": "warn"}),
        json!({"v": 2, "ts": ts, "kind": HOSTILE, "other": HOSTILE}),
    ];
    for rec in &records {
        for color in [false, true] {
            let line = HumanFormat::new(color).line(rec);
            let plain = line.replace(RED, "").replace(RESET, "");
            assert_clean(&plain);
        }
        assert!(!describe(str_field(rec, "kind"), rec)
            .chars()
            .any(crate::term::is_unsafe));
    }
    // The verdict is still ours: one line, one DENY, in red.
    let line = HumanFormat::new(true).line(&records[0]);
    assert_eq!(line.matches("\x1b[1;31mDENY").count(), 1, "{line:?}");
    let mut out = Vec::new();
    HumanFormat::new(false)
        .write(&records[0], &mut out)
        .unwrap();
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 2);
}

#[test]
fn landlock_denials_read_as_one_line_each() {
    let ts = "2023-11-14T22:13:20.000001Z";
    let line = |extra: serde_json::Value| {
        let mut rec = json!({"v": 1, "ts": ts, "kind": "landlock", "server": "fx", "domain": "1a", "denied": true, "path_source": "landlock"});
        rec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        HumanFormat::new(false).line(&rec)
    };
    assert_eq!(
        line(
            json!({"blockers": ["fs.read_file"], "path": "/etc/hostname", "dev": "vda", "ino": 611, "tool": "read", "call_id": 4})
        ),
        "22:13:20.000001 fx DENY  landlock fs.read_file /etc/hostname  <- read#4"
    );
    assert_eq!(
        line(json!({"blockers": ["net.connect_tcp"], "daddr": "127.0.0.1", "dest": 9})),
        "22:13:20.000001 fx DENY  landlock net.connect_tcp 127.0.0.1:9"
    );
    assert_eq!(
        line(
            json!({"blockers": ["scope.abstract_unix_socket"], "path": "sock", "abstract_addr": true})
        ),
        "22:13:20.000001 fx DENY  landlock scope.abstract_unix_socket @sock"
    );
    assert_eq!(
        line(json!({"blockers": ["scope.signal"], "opid": 42, "ocomm": "sleep"})),
        "22:13:20.000001 fx DENY  landlock scope.signal pid 42 (sleep)"
    );
}

#[test]
fn server_requests_read_as_one_line_each() {
    let ts = "2023-11-14T22:13:20.000001Z";
    let denied = json!({"v": 1, "ts": ts, "kind": "mcp", "server": "fx", "event": "server_request_denied", "denied": true, "tool": "ask", "call_id": 3,
        "detail": {"method": "elicitation/create", "id": 2, "bytes": 293, "params": {"fields": ["aws_secret_access_key"]}, "policy_key": "mcp.elicitation"}});
    assert_eq!(
        HumanFormat::new(false).line(&denied),
        r#"22:13:20.000001 fx DENY  mcp server_request_denied elicitation/create#2 293B {"fields":["aws_secret_access_key"]}  <- ask#3"#
    );
    let flagged = json!({"v": 1, "ts": ts, "kind": "mcp", "server": "fx", "event": "suspicious",
        "detail": {"where": "sampling/createMessage", "markers": ["ignore_instructions"], "invisible_chars": 0}});
    assert_eq!(
        HumanFormat::new(false).line(&flagged),
        r#"22:13:20.000001 fx       mcp suspicious sampling/createMessage: ["ignore_instructions"] invisible=0"#
    );
}

#[test]
fn approvals_and_taint_read_as_one_line_each() {
    let ts = "2023-11-14T22:13:20.000001Z";
    let line = |event: &str, denied: bool, detail: Value| {
        let rec = json!({"v": 1, "ts": ts, "kind": "mcp", "server": "gh", "event": event,
            "denied": denied, "tool": "delete_repo", "call_id": 4, "detail": detail});
        HumanFormat::new(false).line(&rec)
    };
    assert_eq!(
        line("approval_requested", false, json!({"approval": 7, "why": "ask", "timeout_secs": 60, "elicitation": true})),
        "22:13:20.000001 gh       mcp approval_requested delete_repo#4 approval 7 (ask, 60 s, asked in the client)"
    );
    assert_eq!(
        line("approval", false, json!({"approval": 7, "approved": true, "by": {"via": "cli", "uid": 1000, "pid": 42}, "waited_ms": 1500})),
        "22:13:20.000001 gh       mcp approval delete_repo#4 approval 7 approved by uid 1000 (pid 42) after 1500ms"
    );
    assert_eq!(
        line("approval", true, json!({"approval": 8, "approved": false, "by": {"via": "timeout", "after_secs": 60}, "waited_ms": 60000})),
        "22:13:20.000001 gh DENY  mcp approval delete_repo#4 approval 8 not approved by timeout (60 s) after 60000ms"
    );
    assert_eq!(
        line(
            "tainted",
            false,
            json!({"source": "tool_result", "on_taint": "ask"})
        ),
        "22:13:20.000001 gh       mcp tainted by tool_result of delete_repo (on_taint ask)"
    );
}

#[test]
fn per_call_network_switches_read_as_part_of_the_call() {
    let rec = |detail: Value| {
        json!({"v": 1, "ts": "2023-11-14T22:13:20.000001Z", "kind": "mcp", "server": "fx",
            "event": "call_network", "tool": "fetch", "call_id": 3, "detail": detail})
    };
    let line = |detail| HumanFormat::new(false).line(&rec(detail));
    assert_eq!(
        line(json!({"network": "open", "rules": ["10.0.0.0/8:443", "*:443"], "calls": 1})),
        "22:13:20.000001 fx       mcp call_network fetch#3 open 10.0.0.0/8:443, *:443 (1 call in flight)"
    );
    assert_eq!(
        line(json!({"network": "closed", "rules": ["*:443"], "calls": 0, "error": "map full"})),
        "22:13:20.000001 fx       mcp call_network fetch#3 closed *:443 (0 calls in flight) error: map full"
    );
}

#[test]
fn unknown_kind_and_version_printed_generically() {
    let v = json!({"v": 2, "ts": "2023-11-14T22:13:20.000001Z", "kind": "mcp_call", "server": "time", "thing": "now", "denied": false});
    assert_eq!(
        HumanFormat::new(false).line(&v),
        r#"22:13:20.000001 time       mcp_call (v2) {"thing":"now"}"#
    );
    // Known kind with missing fields: placeholders, no panic.
    let v = json!({"kind": "open"});
    assert_eq!(HumanFormat::new(false).line(&v), "? -       open ? () = ?");
}

#[test]
fn date_line_printed_when_date_changes() {
    let mut f = HumanFormat::new(false);
    let mut out = Vec::new();
    f.write(&value(&rec(Body::Exit {}, T0)), &mut out).unwrap();
    f.write(&value(&rec(Body::Exit {}, T0 + 1)), &mut out)
        .unwrap();
    f.write(&value(&rec(Body::Exit {}, T0 + 86_400)), &mut out)
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let dates: Vec<_> = text.lines().filter(|l| l.starts_with("---")).collect();
    assert_eq!(
        dates,
        ["--- 2023-11-14 (UTC) ---", "--- 2023-11-15 (UTC) ---"]
    );
    assert_eq!(text.lines().count(), 5);
}

#[test]
fn filter_matches_each_criterion() {
    let denied = value(&rec(open_denied(), T0));
    let allowed = value(&rec(connect("allow", "1.2.3.4"), T0 + 60));
    let all = Filter::default();
    assert!(all.matcher().unwrap().matches(&denied) && all.matcher().unwrap().matches(&allowed));

    let by_server = Filter {
        server: Some("time".into()),
        ..Filter::default()
    };
    assert!(by_server.matcher().unwrap().matches(&denied));
    let by_launch = Filter {
        server: Some("time-3".into()),
        ..Filter::default()
    };
    assert!(by_launch.matcher().unwrap().matches(&denied));
    let other = Filter {
        server: Some("fs".into()),
        ..Filter::default()
    };
    assert!(!other.matcher().unwrap().matches(&denied));

    let by_kind = Filter {
        kind: Some("connect".into()),
        ..Filter::default()
    };
    assert!(
        !by_kind.matcher().unwrap().matches(&denied)
            && by_kind.matcher().unwrap().matches(&allowed)
    );

    let only_denied = Filter {
        denied: true,
        ..Filter::default()
    };
    assert!(
        only_denied.matcher().unwrap().matches(&denied)
            && !only_denied.matcher().unwrap().matches(&allowed)
    );

    let since = Filter {
        since: Some(format_ts(UNIX_EPOCH + Duration::from_secs(T0 + 30))),
        ..Filter::default()
    };
    assert!(
        !since.matcher().unwrap().matches(&denied) && since.matcher().unwrap().matches(&allowed)
    );
    assert!(
        !since.matcher().unwrap().matches(&json!({"kind": "exit"})),
        "no ts, no match"
    );
}

#[test]
fn since_durations_and_times() {
    let now = UNIX_EPOCH + Duration::from_secs(T0);
    let at = |s| Filter::parse_since_at(s, now).unwrap();
    assert_eq!(at("10m"), now - Duration::from_secs(600));
    assert_eq!(at("2h"), now - Duration::from_secs(7200));
    assert_eq!(at("1h 30m ago"), now - Duration::from_secs(5400));
    let utc = UNIX_EPOCH + Duration::from_secs(T0);
    assert_eq!(at("2023-11-14T22:13:20Z"), utc);
    assert_eq!(at("2023-11-14 22:13:20"), utc);
    assert_eq!(at("2023-11-15T00:13:20+02:00"), utc);
    assert_eq!(at("2023-11-14T17:13:20.000-05:00"), utc);
    assert_eq!(
        at("2023-11-14"),
        UNIX_EPOCH + Duration::from_secs(T0 - 80_000)
    );
    for bad in [
        "",
        "yesterday",
        "10 parsecs",
        "2023-13-01T00:00:00Z",
        "2023-11-14T22:13:20+25:00",
    ] {
        let err = Filter::parse_since_at(bad, now).unwrap_err();
        assert!(matches!(err, QueryError::BadSince { .. }), "{bad}: {err:?}");
    }
}

/// A fresh directory holding `audit.jsonl` (not created), removed on drop.
struct Scratch {
    dir: PathBuf,
    path: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!(
        "mcpguard-audit-query-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch {
        path: dir.join("audit.jsonl"),
        dir,
    }
}

fn view(json: bool) -> View {
    View {
        json,
        color: false,
        clock: Clock::utc(),
        calls: false,
    }
}

fn run_once(path: &Path, filter: &Filter, json: bool) -> (String, String, Summary) {
    let (mut out, mut diag) = (Vec::new(), Vec::new());
    let v = view(json);
    let summary = run_with(path, filter, None, &v, &mut out, &mut diag, &|| false).unwrap();
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(diag).unwrap(),
        summary,
    )
}

#[test]
fn malformed_lines_are_counted_and_reported_not_fatal() {
    let scratch = scratch("malformed");
    let path = scratch.path.clone();
    let good = rec(open_denied(), T0).to_json_line();
    let text = format!("{good}\nnot json\n\n[1,2]\n{{\"kind\":\"exit\",\"v\":1\n{good}");
    std::fs::write(&path, text).unwrap();
    let (out, diag, summary) = run_once(&path, &Filter::default(), true);
    assert_eq!(
        summary,
        Summary {
            shown: 2,
            malformed: 3,
            known: Known {
                servers: ["time".to_string()].into(),
                launches: ["time-3".to_string()].into(),
                tools: [].into(),
            },
        }
    );
    assert_eq!(
        out,
        format!("{good}\n{good}\n"),
        "--json passes lines unchanged"
    );
    assert!(diag.contains("line 2: skipping malformed line"), "{diag}");
    assert!(
        diag.contains("line 4: skipping malformed line: not a JSON object"),
        "{diag}"
    );
    assert!(diag.contains("3 malformed line(s) skipped"), "{diag}");
}

#[test]
fn rotated_files_are_read_oldest_first_before_the_log() {
    let scratch = scratch("rotated");
    let path = scratch.path.clone();
    for (file, secs) in [
        (rotated_path(&path, 2), 1),
        (rotated_path(&path, 1), 2),
        (path.clone(), 3),
    ] {
        let rec = rec(
            Body::Fork {
                child_pid: secs as u32,
            },
            T0 + secs,
        );
        std::fs::write(&file, format!("{}\n", rec.to_json_line())).unwrap();
    }
    let (out, _, summary) = run_once(&path, &Filter::default(), true);
    assert_eq!(summary.shown, 3);
    let pids: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["child_pid"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(pids, [1, 2, 3]);
}

#[test]
fn json_output_keeps_original_bytes_and_filters() {
    let scratch = scratch("json");
    let path = scratch.path.clone();
    // Unusual spacing and a future field must survive untouched.
    let odd = r#"{ "v":1, "ts":"2023-11-14T22:13:20.000000Z", "kind":"connect", "denied":true, "new":1 }"#;
    let other = rec(Body::Exit {}, T0).to_json_line();
    std::fs::write(&path, format!("{other}\n{odd}\n")).unwrap();
    let only_denied = Filter {
        denied: true,
        ..Filter::default()
    };
    let (out, _, summary) = run_once(&path, &only_denied, true);
    assert_eq!(out, format!("{odd}\n"));
    assert_eq!(summary.shown, 1);
    let (out, _, _) = run_once(&path, &only_denied, false);
    assert_eq!(
        out,
        "--- 2023-11-14 (UTC) ---\n22:13:20.000000 - DENY  connect ? ?:?\n"
    );
}

#[test]
fn missing_log_names_path_and_suggests_log_flag() {
    let scratch = scratch("missing");
    let path = scratch.path.with_file_name("absent.jsonl");
    let err = run(&path, &Filter::default(), &view(false), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, QueryError::NotFound { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("--log"),
        "{msg}"
    );
}

/// Writer that fails like a closed pipe.
struct ClosedPipe;
impl Write for ClosedPipe {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn closed_output_ends_quietly() {
    let scratch = scratch("pipe");
    let path = scratch.path.clone();
    std::fs::write(&path, rec(Body::Exit {}, T0).to_json_line() + "\n").unwrap();
    let summary = run(&path, &Filter::default(), &view(true), &mut ClosedPipe).unwrap();
    assert_eq!(summary.shown, 0);
}

pub(super) fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

fn wait_for(out: &Arc<std::sync::Mutex<Vec<u8>>>, lines: usize) {
    for _ in 0..100 {
        if out.lock().unwrap().iter().filter(|&&b| b == b'\n').count() >= lines {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("follow output never reached {lines} lines");
}

/// `Write` into a buffer the test thread can watch.
struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `--follow --lines N` of `path` on a thread: its output, the flag that
/// stops it, and the thread, which returns the diagnostics.
pub(super) fn follower(
    path: &Path,
    lines: Option<usize>,
) -> (
    Arc<std::sync::Mutex<Vec<u8>>>,
    Arc<AtomicBool>,
    std::thread::JoinHandle<String>,
) {
    let out = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (path, o, s) = (path.to_path_buf(), Arc::clone(&out), Arc::clone(&stop));
    let handle = std::thread::spawn(move || {
        let filter = Filter {
            follow: true,
            lines,
            ..Filter::default()
        };
        let mut diag = Vec::new();
        run_with(
            &path,
            &filter,
            None,
            &view(true),
            &mut Shared(o),
            &mut diag,
            &|| s.load(Ordering::SeqCst),
        )
        .unwrap();
        String::from_utf8(diag).unwrap()
    });
    (out, stop, handle)
}

#[test]
fn follow_sees_appends_partial_lines_truncation_and_rotation() {
    let scratch = scratch("follow");
    let path = scratch.path.clone();
    let line = |child: u32| rec(Body::Fork { child_pid: child }, T0).to_json_line();
    std::fs::write(&path, line(1) + "\n").unwrap();

    let (out, stop, handle) = follower(&path, Some(10));
    wait_for(&out, 1);

    // A line written in two parts is printed once, whole.
    let l2 = line(2);
    let (a, b) = l2.split_at(10);
    append(&path, a);
    std::thread::sleep(Duration::from_millis(300));
    append(&path, &format!("{b}\n"));
    wait_for(&out, 2);

    // copytruncate-style rotation.
    std::fs::write(&path, "").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    append(&path, &(line(3) + "\n"));
    wait_for(&out, 3);

    // Move-and-recreate rotation; the old file gets one last line.
    let old = path.with_extension("jsonl.1");
    std::fs::rename(&path, &old).unwrap();
    append(&old, &(line(4) + "\n"));
    append(&path, &(line(5) + "\n"));
    wait_for(&out, 5);

    stop.store(true, Ordering::SeqCst);
    let diag = handle.join().unwrap();
    let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got, [line(1), line(2), line(3), line(4), line(5)]);
    assert!(
        diag.contains("truncated") && diag.contains("rotated"),
        "{diag}"
    );
}

#[test]
fn follow_forgets_a_half_line_the_daemon_cut_off_and_reads_it_whole_later() {
    let scratch = scratch("follow-cut");
    let path = scratch.path.clone();
    let line = |child: u32| rec(Body::Fork { child_pid: child }, T0).to_json_line();
    std::fs::write(&path, line(1) + "\n").unwrap();
    let (out, stop, handle) = follower(&path, Some(10));
    wait_for(&out, 1);

    // A full disk took part of line 2; the writer cut it off again and,
    // once there was room, wrote it whole.
    let whole = std::fs::metadata(&path).unwrap().len();
    append(&path, &line(2)[..20]);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(whole)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    append(&path, &(line(2) + "\n"));
    wait_for(&out, 2);

    stop.store(true, Ordering::SeqCst);
    let diag = handle.join().unwrap();
    let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got, [line(1), line(2)], "{diag}");
    assert!(!diag.contains("truncated"), "{diag}");
}

#[test]
fn a_tool_result_summary_reads_on_the_call_line_with_its_excerpt_escaped() {
    let call = json!({"v": 1, "ts": "2023-11-14T22:13:20.000001Z", "kind": "mcp",
        "server": "fx", "tool": "read_file", "call_id": 3, "denied": false, "event": "tools_call",
        "detail": {"arguments": {}, "duration_ms": 2.25, "result_bytes": 400, "is_error": true,
                   "result": {"content": {"text": {"count": 2, "bytes": 300},
                                          "image": {"count": 1, "bytes": 90}},
                              "structured_bytes": 12, "excerpt": "a\nb\u{1b}[2J\"c"}}});
    let line = HumanFormat::new(false).line(&call);
    assert!(
        line.ends_with(
            r#"2.2ms 400B isError [image 90B, text×2 300B, structured 12B] "a\nb\u001b[2J\"c""#
        ),
        "{line}"
    );
}
