//! The audit log's tamper evidence and tool-result summaries, end to end:
//! real tool calls through a real daemon (the fixture server, and PyPI
//! `mcp-server-time`), then `mcpguard audit verify` on the log it wrote and
//! on copies with one byte changed and one line removed.

use std::{os::unix::fs::PermissionsExt, path::Path, process::Output};

use serde_json::{json, Value};

use crate::{
    harness::*,
    mcp::{call, fixture_policy, session, shipped},
};

fn verify(d: &Daemon, log: &Path) -> Output {
    d.cli(&["audit", "verify", "--log", log.to_str().unwrap()])
        .output()
        .unwrap()
}

fn tools_call(d: &Daemon, tool: &str) -> Value {
    d.wait_record(&format!("{tool}'s tools_call record"), |r| {
        is_kind(r, "mcp") && r["event"] == "tools_call" && r["tool"] == tool
    })
}

/// A copy of `lines` (each without its newline) in a fresh root-only
/// directory, as the log would be.
fn copy_of(lines: &[String]) -> std::path::PathBuf {
    let dir = tempdir("chain-copy");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let log = dir.join("audit.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&log, text).unwrap();
    log
}

#[test]
fn tool_results_are_summarized_and_the_chain_verifies_until_a_record_is_changed() {
    let mut d = Daemon::start();
    let (pol, script) = fixture_policy("it-chain", "[tools]\nexcerpt = [\"echo\"]\n", &[]);
    let python = peers().join("venv/bin/python");
    session(
        &d,
        &pol,
        json!([["echo", {"text": "hi\u{1b}[31m there"}]]),
        &[python.to_str().unwrap(), script.to_str().unwrap()],
    );
    let echo = tools_call(&d, "echo");
    let result = &echo["detail"]["result"];
    assert_eq!(result["content"]["text"]["count"], 1, "{echo}");
    assert!(
        result["content"]["text"]["bytes"].as_u64() > Some(0),
        "{echo}"
    );
    assert_eq!(result["excerpt"], "hi\u{1b}[31m there", "{echo}");
    assert_eq!(echo["detail"]["is_error"], false, "{echo}");

    let server = peers().join("venv/bin/mcp-server-time");
    call(
        &d,
        &shipped("time"),
        "get_current_time",
        json!({"timezone": "Europe/Paris"}),
        &[server.to_str().unwrap()],
    );
    let time = tools_call(&d, "get_current_time");
    let result = &time["detail"]["result"];
    assert_eq!(result["content"]["text"]["count"], 1, "{time}");
    assert!(result.get("excerpt").is_none(), "not opted in: {time}");
    assert!(!time.to_string().contains("Europe/Paris\","), "{time}");

    // The human line shows the summary, the excerpt's escape escaped.
    let human = d
        .cli(&["audit", "--log", d.log.to_str().unwrap(), "--tool", "echo"])
        .output()
        .unwrap();
    let text = stdout_of(&human);
    assert!(text.contains(r#"B] "hi\u001b[31m there""#), "{text}");
    assert!(!text.contains('\u{1b}'), "{text}");

    d.stop_cleanly();
    assert!(d.stderr().contains("audit log closed"), "{}", d.stderr());
    let lines: Vec<String> = std::fs::read_to_string(&d.log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let out = verify(&d, &d.log);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout_of(&out).starts_with(&format!(
            "OK: audit chain intact: {} records in 1 file(s)",
            lines.len()
        )),
        "{}",
        describe(&out)
    );

    // One byte of a middle record: the year of its timestamp.
    let mid = lines.len() / 2;
    let mut edited = lines.clone();
    assert!(
        edited[mid].starts_with(r#"{"v":1,"ts":"2"#),
        "{}",
        edited[mid]
    );
    edited[mid].replace_range(13..14, "3");
    let out = verify(&d, &copy_of(&edited));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let said = stdout_of(&out);
    assert!(said.starts_with("BROKEN: "), "{said}");
    assert!(
        said.contains(&format!(
            "audit.jsonl line {}: record seq {} was edited",
            mid + 1,
            mid + 1
        )),
        "{said}"
    );

    let mut deleted = lines.clone();
    deleted.remove(mid);
    let out = verify(&d, &copy_of(&deleted));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let said = stdout_of(&out);
    assert!(
        said.contains(&format!(
            "audit.jsonl line {}: record seq {} before this line was deleted",
            mid + 1,
            mid + 1
        )),
        "{said}"
    );

    // The log is root's: a user is told so, with exit code 2.
    let u = user();
    let log = d.log.to_str().unwrap();
    let out = d.cli_as(u.uid, u.gid, &["audit", "verify", "--log", log]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        describe(&out)
    );
}
