//! Real MCP exchanges: the PyPI `mcp` SDK client launches real servers
//! (PyPI `mcp-server-time`, npm `@modelcontextprotocol/server-filesystem`)
//! through `mcpguard run` under the policies shipped in `policies/`.

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::Path,
    process::Command,
};

use serde_json::Value;

use crate::harness::*;

const CLIENT: &str = include_str!("../peers/mcp_client.py");

/// A shipped policy, copied where the test user can read it.
fn shipped(name: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!(
        "{}/../policies/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("shipped policies/{name}.toml: {e}"));
    policy(&tempdir("shipped"), name, &text)
}

/// Run the SDK client as the test user: it starts `server` through
/// `mcpguard run --policy policy`, lists tools and calls `tool`.
fn call(d: &Daemon, policy: &Path, tool: &str, args: Value, server: &[&str]) -> Value {
    let dir = tempdir("mcp");
    let client = dir.join("mcp_client.py");
    std::fs::write(&client, CLIENT).unwrap();
    std::fs::set_permissions(&client, std::fs::Permissions::from_mode(0o644)).unwrap();
    let u = user();
    let out = Command::new(peers().join("venv/bin/python"))
        .arg(&client)
        .arg(tool)
        .arg(args.to_string())
        .arg("--")
        .arg(bin())
        .args(["run", "--socket"])
        .arg(&d.socket)
        .arg("--policy")
        .arg(policy)
        .arg("--")
        .args(server)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &u.home)
        .current_dir(&dir)
        .uid(u.uid)
        .gid(u.gid)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n--- daemon ---\n{}",
        describe(&out),
        d.stderr()
    );
    serde_json::from_str(stdout_of(&out).trim())
        .unwrap_or_else(|e| panic!("client output is not JSON ({e}): {}", describe(&out)))
}

#[test]
fn the_mcp_sdk_client_talks_to_mcp_server_time_under_its_shipped_policy() {
    let d = Daemon::start();
    let server = peers().join("venv/bin/mcp-server-time");
    let got = call(
        &d,
        &shipped("time"),
        "get_current_time",
        serde_json::json!({"timezone": "Europe/Paris"}),
        &[server.to_str().unwrap()],
    );
    assert_eq!(got["server"], "mcp-time", "{got}");
    let tools: Vec<&str> = got["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(
        tools.contains(&"get_current_time") && tools.contains(&"convert_time"),
        "{got}"
    );
    assert_eq!(got["is_error"], false, "{got}");
    let text = got["text"][0].as_str().unwrap_or_default();
    assert!(
        text.contains("Europe/Paris"),
        "tool result should name the timezone: {got}"
    );

    d.wait_record("launch of the time server", |r| {
        is_kind(r, "launch") && r["server"] == "time"
    });
    d.wait_record("exec in the time server", |r| {
        is_kind(r, "exec") && r["server"] == "time"
    });
    d.wait_record("opens by the time server", |r| {
        is_kind(r, "open") && r["server"] == "time"
    });
    d.wait_record("clean exit of the time server", |r| {
        is_kind(r, "server_exit") && r["server"] == "time" && r["exit_code"] == 0
    });
}

#[test]
fn the_npm_filesystem_server_serves_its_share_and_nothing_else() {
    let d = Daemon::start();
    let u = user();
    let share = u.home.join("mcp-share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("notes.txt"), "shared notes\n").unwrap();
    for p in [&share, &share.join("notes.txt")] {
        std::os::unix::fs::chown(p, Some(u.uid), Some(u.gid)).unwrap();
    }
    let secret = u.home.join("outside-share.txt");
    std::fs::write(&secret, "not for the server\n").unwrap();
    std::os::unix::fs::chown(&secret, Some(u.uid), Some(u.gid)).unwrap();

    let entry =
        peers().join("npm/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    assert!(
        entry.exists(),
        "{} missing: run `cargo xtask setup`",
        entry.display()
    );
    let pol = shipped("filesystem");
    let server = [
        "/usr/bin/node",
        entry.to_str().unwrap(),
        share.to_str().unwrap(),
    ];
    let got = call(
        &d,
        &pol,
        "read_text_file",
        serde_json::json!({"path": share.join("notes.txt")}),
        &server,
    );
    assert_eq!(got["is_error"], false, "{got}");
    assert!(
        got["text"][0]
            .as_str()
            .unwrap_or_default()
            .contains("shared notes"),
        "{got}"
    );
    assert!(
        got["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "list_directory"),
        "{got}"
    );

    // The server's own check refuses paths outside its share; the kernel is
    // what stops a server that skips that check, so read the secret through
    // node directly under the same policy.
    let script = format!(
        "try {{ require('fs').readFileSync({:?}); console.log('read'); }} catch (e) {{ console.log(e.code); }}",
        secret.display().to_string()
    );
    let out = d.run(&pol, &["/usr/bin/node", "-e", &script]);
    assert_eq!(stdout_of(&out).trim(), "EACCES", "{}", describe(&out));
    d.wait_record("denied open of the file outside the share", |r| {
        is_kind(r, "open")
            && r["server"] == "filesystem"
            && r["path"] == secret.to_str().unwrap()
            && r["denied"] == true
    });
}
