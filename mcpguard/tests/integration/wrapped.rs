//! Real client configs, wrapped and used as a new user would: the four
//! client formats with servers started the way their READMEs say (`npx -y`,
//! `uvx`), `mcpguard wrap` as the user (installs run guarded through the
//! daemon), then each wrapped entry driven by the MCP SDK's stdio client
//! exactly as the config says, tools called on the data its arguments name.
//! Every server must work with zero denials from start to exit, `~/.ssh`
//! must stay out of reach, and `unwrap` must give back the file byte for
//! byte.

use std::{
    os::unix::fs::chown,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::{json, Value};

use crate::harness::{as_user, bin, describe, peers, user, Daemon};

const DRIVER: &str = include_str!("../peers/mcp_client.py");

/// Server keys (and so policy names) unique to this test, so the test
/// user's other policies and installs are left alone.
const KEYS: [&str; 6] = [
    "e2e-filesystem",
    "e2e-memory",
    "e2e-everything",
    "e2e-git",
    "e2e-fetch",
    "e2e-time",
];

/// A command run as the test user as a login would (see
/// [`as_user`]), in its home, with the daemon's socket.
fn login(program: impl AsRef<std::ffi::OsStr>, d: &Daemon) -> Command {
    let mut cmd = as_user(program);
    cmd.env("MCPGUARD_SOCKET", &d.socket)
        .current_dir(&user().home)
        .stdin(Stdio::null());
    cmd
}

fn give_to_user(path: &Path) {
    let u = user();
    chown(path, Some(u.uid), Some(u.gid)).unwrap();
}

/// The server entries every config gets, as JSON members (command, args,
/// env), for data under `work`.
fn entries(work: &Path, stdio_type: bool) -> Value {
    let w = work.display();
    let typed = |mut v: Value| {
        if stdio_type {
            v["type"] = json!("stdio");
        }
        v
    };
    json!({
        "e2e-filesystem": typed(json!({
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-filesystem@2026.8.31", format!("{w}/code")]
        })),
        "e2e-memory": typed(json!({
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-memory@2026.8.31"],
            "env": {"MEMORY_FILE_PATH": format!("{w}/memory/memory.jsonl")}
        })),
        "e2e-everything": typed(json!({
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-everything@2026.8.31", "stdio"]
        })),
        "e2e-git": typed(json!({
            "command": "uvx",
            "args": ["mcp-server-git@2026.10.19", "--repository", format!("{w}/code/app")]
        })),
        "e2e-fetch": typed(json!({
            "command": "uvx",
            "args": ["mcp-server-fetch@2026.10.24"]
        })),
        "e2e-time": typed(json!({
            "command": "uvx",
            "args": ["mcp-server-time@2026.10.19", "--local-timezone", "UTC"]
        })),
    })
}

/// One client's config file: its path (named as the client names it), its
/// text, and the table the servers are in.
struct Config {
    path: PathBuf,
    text: String,
    table: String,
}

fn configs(work: &Path) -> Vec<Config> {
    let project = work.join("code/app");
    let desktop = json!({"mcpServers": entries(work, false)});
    let claude_json = json!({
        "numStartups": 3,
        "projects": {project.display().to_string(): {"mcpServers": entries(work, false), "allowedTools": []}}
    });
    let cursor = json!({"mcpServers": entries(work, false)});
    let vscode =
        serde_json::to_string_pretty(&json!({"servers": entries(work, true), "inputs": []}))
            .unwrap();
    vec![
        Config {
            path: work.join("Claude/claude_desktop_config.json"),
            text: serde_json::to_string_pretty(&desktop).unwrap(),
            table: "mcpServers".into(),
        },
        Config {
            path: work.join("claude-home/.claude.json"),
            text: serde_json::to_string(&claude_json).unwrap(),
            table: format!("projects.{}.mcpServers", project.display()),
        },
        Config {
            path: work.join(".cursor/mcp.json"),
            text: serde_json::to_string_pretty(&cursor).unwrap(),
            table: "mcpServers".into(),
        },
        Config {
            path: work.join("code/app/.vscode/mcp.json"),
            // VS Code's file is JSONC: a comment must survive wrap and unwrap.
            text: format!("// MCP servers for this workspace\n{vscode}\n"),
            table: "servers".into(),
        },
    ]
}

/// The tool calls for each server, on the data its arguments name, and
/// what each result must contain.
fn calls(key: &str, work: &Path) -> (Value, Vec<&'static str>) {
    let w = work.display();
    match key {
        "e2e-filesystem" => (
            json!([
                ["list_directory", {"path": format!("{w}/code/app")}],
                ["write_file", {"path": format!("{w}/code/notes.txt"), "content": "from mcp"}],
                ["read_text_file", {"path": format!("{w}/code/notes.txt")}]
            ]),
            vec!["README.md", "Successfully wrote", "from mcp"],
        ),
        "e2e-memory" => (
            json!([
                ["create_entities", {"entities": [{"name": "mcpguard", "entityType": "tool", "observations": ["guards"]}]}],
                ["read_graph", {}]
            ]),
            vec!["mcpguard", "guards"],
        ),
        "e2e-everything" => (
            json!([["echo", {"message": "hello e2e"}]]),
            vec!["hello e2e"],
        ),
        "e2e-git" => (
            json!([
                ["git_status", {"repo_path": format!("{w}/code/app")}],
                ["git_log", {"repo_path": format!("{w}/code/app")}]
            ]),
            vec!["On branch", "first commit"],
        ),
        // No network in its starter policy: it starts and lists its tools.
        "e2e-fetch" => (json!([]), vec![]),
        "e2e-time" => (
            json!([["get_current_time", {"timezone": "UTC"}]]),
            vec!["UTC"],
        ),
        other => panic!("no calls for {other}"),
    }
}

fn drive(d: &Daemon, driver: &Path, cfg: &Config, key: &str, work: &Path) -> Value {
    let (calls, wants) = calls(key, work);
    let out: Output = login(peers().join("venv/bin/python"), d)
        .arg(driver)
        .arg(calls.to_string())
        .arg("--config")
        .arg(&cfg.path)
        .arg(&cfg.table)
        .arg(key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{key} in {}: {}",
        cfg.path.display(),
        describe(&out)
    );
    let result: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{key}: driver output is not JSON ({e}): {}", describe(&out)));
    let text = result["results"].to_string();
    for want in wants {
        assert!(
            text.contains(want),
            "{key}: {want:?} missing from {result:#}"
        );
    }
    assert!(
        !result["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["is_error"] == true || r.get("refused").is_some()),
        "{key}: a call failed: {result:#}"
    );
    assert!(
        !result["tools"].as_array().unwrap().is_empty(),
        "{key}: no tools"
    );
    result
}

fn remove_test_state(home: &Path) {
    for key in KEYS {
        let _ = std::fs::remove_file(home.join(format!(".config/mcpguard/policies/{key}.toml")));
        let _ = std::fs::remove_dir_all(home.join(format!(".local/share/mcpguard/servers/{key}")));
    }
}

fn setup_work(d: &Daemon, work: &Path) {
    let _ = std::fs::remove_dir_all(work);
    let status = login("/bin/sh", d)
        .arg("-c")
        .arg(format!(
            "set -e; mkdir -p '{w}/code/app' '{w}/Claude' '{w}/claude-home' '{w}/.cursor' \
             '{w}/code/app/.vscode' && cd '{w}/code/app' && git init -q && \
             git -c user.email=t@example.com -c user.name=T commit -q --allow-empty -m 'first commit' && \
             echo hi > README.md",
            w = work.display()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "cannot prepare {}", work.display());
}

#[test]
fn wrapped_client_configs_keep_npx_and_uvx_servers_working_with_zero_denials() {
    let d = Daemon::start();
    let u = user();
    remove_test_state(&u.home);
    let work = u.home.join(format!("e2e-{}", std::process::id()));
    setup_work(&d, &work);
    let driver = crate::harness::tempdir("e2e-driver").join("mcp_client.py");
    std::fs::write(&driver, DRIVER).unwrap();

    for (i, cfg) in configs(&work).iter().enumerate() {
        std::fs::write(&cfg.path, &cfg.text).unwrap();
        give_to_user(&cfg.path);
        let out = login(bin(), &d)
            .arg("wrap")
            .arg(&cfg.path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "wrap {}: {}",
            cfg.path.display(),
            describe(&out)
        );
        let report = String::from_utf8_lossy(&out.stdout);
        for key in KEYS {
            // The first config installs and writes starters; the others
            // use the policies it wrote.
            let want = if i == 0 {
                "wrote starter policy"
            } else {
                "uses your policy"
            };
            let line = report
                .lines()
                .find(|l| l.trim_start().starts_with(key))
                .unwrap_or_else(|| panic!("no report line for {key}: {report}"));
            assert!(line.contains(want), "{key}: {line}\n{report}");
        }
        if i == 0 {
            for pinned in [
                "pinned npm:@modelcontextprotocol/server-filesystem@2026.8.31",
                "pinned pypi:mcp-server-git==2026.10.19",
                "grants ~/",
            ] {
                assert!(report.contains(pinned), "{pinned}: {report}");
            }
        }
        // The servers are independent, as a client starts them: drive them
        // side by side.
        std::thread::scope(|s| {
            for key in KEYS {
                let (d, driver, work) = (&d, &driver, &work);
                s.spawn(move || drive(d, driver, cfg, key, work));
            }
        });
        let out = login(bin(), &d)
            .arg("unwrap")
            .arg(&cfg.path)
            .output()
            .unwrap();
        assert!(out.status.success(), "unwrap: {}", describe(&out));
        assert_eq!(
            std::fs::read_to_string(&cfg.path).unwrap(),
            cfg.text,
            "unwrap of {} is not byte-identical",
            cfg.path.display()
        );
    }

    // The pins hold: nothing fetched at run time, nothing refused.
    let records = d.records();
    let ours = |r: &Value| {
        r["server"]
            .as_str()
            .is_some_and(|s| KEYS.iter().any(|k| s == *k || s == format!("{k}-install")))
    };
    let denied: Vec<&Value> = records
        .iter()
        .filter(|r| ours(r) && r["denied"] == true)
        .collect();
    assert!(
        denied.is_empty(),
        "{} denials:\n{}",
        denied.len(),
        denied
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let launches = records
        .iter()
        .filter(|r| ours(r) && r["kind"] == "launch")
        .count();
    assert!(launches >= KEYS.len() * 4, "{launches} launches");

    // ~/.ssh stays out of reach under a starter policy.
    let ssh = u.home.join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    std::fs::write(ssh.join("id_e2e"), "PRIVATE").unwrap();
    give_to_user(&ssh);
    give_to_user(&ssh.join("id_e2e"));
    let out = login(bin(), &d)
        .args(["run", "--policy", "e2e-filesystem", "--", "/usr/bin/cat"])
        .arg(ssh.join("id_e2e"))
        .output()
        .unwrap();
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "{}",
        describe(&out)
    );
    d.wait_record("denied open of ~/.ssh/id_e2e", |r| {
        r["server"] == "e2e-filesystem"
            && r["kind"] == "open"
            && r["denied"] == true
            && r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with(".ssh/id_e2e"))
    });

    let _ = std::fs::remove_dir_all(&work);
    remove_test_state(&u.home);
}
