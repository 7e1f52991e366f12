//! Reviewing the trail as a person does: `mcpguard audit` without `--log`
//! as a user (the daemon answers from its own, non-default log), a tool
//! call's records and its summary (`--call`, `--calls`) after a real MCP
//! call, and `--follow` starting at the end.

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{
    harness::*,
    mcp::{fixture_policy, session},
};

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn a_user_without_log_asks_the_daemon_which_knows_its_non_default_log() {
    let d = Daemon::start();
    let u = user();
    let pol = simple_policy("review-user", &[]);
    let out = d.run(&pol, &["/bin/sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    d.wait_record("the server's exit", |r| {
        is_kind(r, "server_exit") && r["server"] == "it-review-user"
    });
    assert_ne!(d.log, Path::new(mcpguard::daemon::DEFAULT_AUDIT_LOG));

    // No --log: the daemon answers from the log it writes.
    let out = d.cli_as(
        u.uid,
        u.gid,
        &["audit", "--json", "--server", "it-review-user"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let recs = json_lines(&stdout_of(&out));
    assert!(
        recs.iter().any(|r| is_kind(r, "launch")),
        "{}",
        describe(&out)
    );
    assert!(recs.iter().all(|r| r["uid"] == u.uid));
    // In time order.
    let times: Vec<&str> = recs.iter().filter_map(|r| r["ts"].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // -n: the last record of those, from the daemon too.
    let out = d.cli_as(
        u.uid,
        u.gid,
        &["audit", "--json", "--server", "it-review-user", "-n", "1"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(json_lines(&stdout_of(&out)), [recs.last().unwrap().clone()]);

    // A server the user's records do not name: an error listing those
    // that are, exit 2; never another user's names.
    let out = d.cli_as(u.uid, u.gid, &["audit", "--server", "it-review-nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("it-review-nope") && err.contains("known: it-review-user"),
        "{err}"
    );
    let out = d.cli_as(u.uid, u.gid, &["audit", "--kind", "opne"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("open, connect"));

    // Root without --log reads the default path; when there is none there,
    // the error names it, suggests --log, and says where the daemon writes.
    let out = d.cli_as(0, 0, &["audit"]);
    if Path::new(mcpguard::daemon::DEFAULT_AUDIT_LOG).exists() {
        assert!(out.status.success(), "{}", describe(&out));
    } else {
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(mcpguard::daemon::DEFAULT_AUDIT_LOG)
                && err.contains(&format!("--log {}", d.log.display())),
            "{err}"
        );
    }
}

#[test]
fn a_real_tool_calls_records_and_summary_by_call_id() {
    let d = Daemon::start();
    let u = user();
    let data = tempdir("review-data").join("notes.txt");
    std::fs::write(&data, "review notes\n").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (pol, script) = fixture_policy("it-review-calls", "", &[data.parent().unwrap()]);
    let python = peers().join("venv/bin/python");
    let (report, _) = session(
        &d,
        &pol,
        json!([["echo", {"text": "first"}], ["read_file", {"path": data}]]),
        &[python.to_str().unwrap(), script.to_str().unwrap()],
    );
    assert_eq!(
        report["results"][1]["text"][0], "review notes\n",
        "{report}"
    );
    let call = d.wait_record("read_file's tools_call", |r| {
        is_kind(r, "mcp") && r["event"] == "tools_call" && r["tool"] == "read_file"
    });
    let (id, launch) = (
        call["call_id"].to_string(),
        call["launch"].as_str().unwrap(),
    );
    let path = data.to_str().unwrap();
    d.wait_record("the open read_file caused", |r| {
        is_kind(r, "open") && r["path"] == path && r["call_id"] == call["call_id"]
    });
    let log = d.log.to_str().unwrap();

    // --call: that call's records, and no other.
    let out = d.cli_as(
        0,
        0,
        &[
            "audit", "--log", log, "--json", "--launch", launch, "--call", &id,
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let recs = json_lines(&stdout_of(&out));
    assert!(recs.iter().any(|r| is_kind(r, "open") && r["path"] == path));
    assert!(recs
        .iter()
        .any(|r| is_kind(r, "mcp") && r["event"] == "tools_call"));
    assert!(recs.iter().all(|r| r["launch"] == launch
        && (r["call_id"] == call["call_id"]
            || r["calls"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["call_id"] == call["call_id"])))));

    // "What did the server's last call touch?" in one command, as root
    // and, without --log, as the user through the daemon.
    let last_call = [
        "audit",
        "--server",
        "it-review-calls",
        "--calls",
        "-n",
        "1",
        "--json",
    ];
    let with_log: Vec<&str> = last_call.iter().copied().chain(["--log", log]).collect();
    for (uid, gid, args) in [(0, 0, &with_log[..]), (u.uid, u.gid, &last_call[..])] {
        let out = d.cli_as(uid, gid, args);
        assert!(out.status.success(), "{}", describe(&out));
        let summaries = json_lines(&stdout_of(&out));
        assert_eq!(summaries.len(), 1, "{}", describe(&out));
        let s = &summaries[0];
        assert_eq!(s["tool"], "read_file", "{s}");
        assert_eq!(s["call_id"], call["call_id"], "{s}");
        assert_eq!(s["launch"], launch, "{s}");
        assert_eq!(s["result"], "ok", "{s}");
        assert_eq!(s["start"], call["ts"], "{s}");
        assert!(s["duration_ms"].as_f64().is_some(), "{s}");
        assert!(
            s["files"]["read"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == path),
            "{s}"
        );
    }
    // The human block.
    let out = d.cli_as(
        0,
        0,
        &[
            "audit",
            "--log",
            log,
            "--server",
            "it-review-calls",
            "--calls",
            "-n",
            "1",
            "--utc",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout_of(&out);
    assert!(
        text.starts_with(&format!("call read_file#{id} it-review-calls[{launch}] ")),
        "{text}"
    );
    assert!(text.contains(" UTC ") && text.contains(" ok\n"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("read") && l.ends_with(path)),
        "{text}"
    );
}

#[test]
fn follow_starts_at_the_end_and_prints_only_new_records() {
    let d = Daemon::start();
    let old = simple_policy("review-old", &[]);
    let out = d.run(&old, &["/bin/true"]);
    assert!(out.status.success(), "{}", describe(&out));
    d.wait_record("the old server's exit", |r| {
        is_kind(r, "server_exit") && r["server"] == "it-review-old"
    });

    let mut follower = d
        .cli(&[
            "audit",
            "--json",
            "--follow",
            "--log",
            d.log.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stdout_lines(&mut follower);
    // Let it reach the end before anything new is written.
    std::thread::sleep(Duration::from_millis(800));
    let new = simple_policy("review-new", &[]);
    let out = d.run(&new, &["/bin/sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|r: &Value| is_kind(r, "server_exit") && r["server"] == "it-review-new")
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(serde_json::from_str(&line).unwrap()),
            Err(_) => {
                let _ = follower.kill();
                panic!("the new server's exit never followed; saw {seen:#?}");
            }
        }
    }
    follower.kill().unwrap();
    follower.wait().unwrap();
    assert!(
        seen.iter()
            .any(|r| is_kind(r, "launch") && r["server"] == "it-review-new"),
        "{seen:#?}"
    );
    assert!(
        !seen
            .iter()
            .any(|r| r["server"] == "it-review-old" || is_kind(r, "daemon")),
        "old records were replayed: {seen:#?}"
    );
}
