//! Credentials on a server's command line stay out of the audit log and
//! the daemon's own log: `launch`, `launch_failed` and `exec` records carry
//! the redaction marker instead, for servers with and without `[secrets]`,
//! also where the kernel cut an exec argument inside a token.

use std::path::Path;

use serde_json::Value;

use crate::{
    harness::*,
    mcp::{daemon_with_secrets, SECRET},
};

const GITHUB: &str = "ghp_Zq8mWx3kPb7RtY2nLv5cHs9dJf4gAe6uKi0o";
const AWS: &str = "AKIAZQ8MWX3KPB7RTY2N";

fn sh_policy(tag: &str, extra: &str) -> std::path::PathBuf {
    let dir = tempdir(tag);
    policy(
        &dir,
        tag,
        &format!(
            "name = \"it-{tag}\"\n{}\n[env]\npass = [\"PATH\", \"HOME\"]\n{extra}",
            base_fs(&[])
        ),
    )
}

/// Every file below `dir`, as text.
fn all_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            text.push_str(&all_text(&path));
        } else {
            text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    text
}

fn line(r: &Value) -> String {
    r.to_string()
}

#[test]
fn tokens_and_secrets_on_a_command_line_are_redacted_from_launch_and_exec_records() {
    let (d, token) = daemon_with_secrets();
    let with_secret = sh_policy(
        "argv-secret",
        &format!(
            "[secrets]\nFIXTURE_TOKEN = {{ file = {:?} }}\n",
            token.display().to_string()
        ),
    );
    let plain = sh_policy("argv-plain", "");
    let script = "exec /usr/bin/true \"$@\"";
    let out = d.run(
        &with_secret,
        &["/usr/bin/sh", "-c", script, "sh", GITHUB, AWS, SECRET],
    );
    assert!(out.status.success(), "{}", describe(&out));
    // The kernel keeps 63 bytes of each exec argument: this one is cut
    // inside the token.
    let header = format!("--header=Authorization: token {GITHUB}");
    let out = d.run(
        &plain,
        &["/usr/bin/sh", "-c", script, "sh", GITHUB, AWS, &header],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let missing = format!("mcpguard-missing-{GITHUB}");
    let out = d.run(&plain, &[&missing, AWS]);
    assert!(!out.status.success(), "{}", describe(&out));

    let exec_of_true = |server: &str| {
        let server = format!("it-{server}");
        d.wait_record(&format!("{server}'s exec of /usr/bin/true"), move |r| {
            is_kind(r, "exec") && r["server"] == server && r["filename"] == "/usr/bin/true"
        })
    };
    let launch_of = |server: &str| {
        let server = format!("it-{server}");
        d.wait_record(&format!("{server}'s launch"), move |r| {
            is_kind(r, "launch") && r["server"] == server
        })
    };
    for rec in [
        launch_of("argv-secret"),
        exec_of_true("argv-secret"),
        launch_of("argv-plain"),
        exec_of_true("argv-plain"),
        d.wait_record("the failed launch", |r| is_kind(r, "launch_failed")),
    ] {
        let text = line(&rec);
        assert!(text.contains("[REDACTED:github_token]"), "{text}");
        assert!(text.contains("[REDACTED:aws_access_key]"), "{text}");
        if rec["server"] == "it-argv-secret" {
            assert!(text.contains("[REDACTED:FIXTURE_TOKEN]"), "{text}");
        }
    }

    // Nowhere in the audit log directory, nor in the daemon's own log.
    let logs = all_text(d.log.parent().unwrap());
    let stderr = d.stderr();
    assert!(
        stderr.contains("launch refused"),
        "the failed launch was not logged:\n{stderr}"
    );
    for raw in [GITHUB, &GITHUB[..20], AWS, SECRET] {
        assert!(!logs.contains(raw), "{raw} is in the audit log:\n{logs}");
        assert!(
            !stderr.contains(raw),
            "{raw} is in the daemon's log:\n{stderr}"
        );
    }
}
