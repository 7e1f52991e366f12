//! The runtime baseline: every shipped policy, and `wrap`'s starter for a
//! node and a python server, starts its real server with zero denials.
//! Each server is driven by the PyPI `mcp` SDK client (initialize,
//! tools/list, one tool call), exits, and the audit log must hold no denied
//! record for that launch. What the baseline does not cover (`~/.ssh`)
//! stays denied.

use std::{path::PathBuf, time::Duration};

use serde_json::{json, Value};

use crate::{
    harness::*,
    mcp::{client, shipped},
    policies::{committed_repo, user_dir, user_file, Site},
};

/// One server start: its policy, the client's calls, its command and env.
struct Start {
    server: &'static str,
    policy: PathBuf,
    call: Value,
    argv: Vec<String>,
    env: Vec<(&'static str, String)>,
}

/// Runs `s` to completion and returns the denied records of its launch,
/// after checking the call went through.
fn denials_of(d: &Daemon, s: &Start) -> Vec<Value> {
    let argv: Vec<&str> = s.argv.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = s.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (report, stderr) = client(d, Some(&s.policy), &json!([s.call]), &argv, &env);
    assert!(
        report["tools"].as_array().is_some_and(|t| !t.is_empty()),
        "{}: no tools listed: {report}\n{stderr}",
        s.server
    );
    assert_eq!(
        report["results"][0]["is_error"], false,
        "{}: the call failed: {report}\n--- stderr ---\n{stderr}",
        s.server
    );
    let exit = d.wait_record(&format!("exit of {}", s.server), |r| {
        is_kind(r, "server_exit") && r["server"] == s.server
    });
    let launch = exit["launch"].clone();
    // Kernel records of the last moments may trail the exit record.
    std::thread::sleep(Duration::from_millis(500));
    d.records()
        .into_iter()
        .filter(|r| r["launch"] == launch && r["denied"] == true)
        .collect()
}

fn home(rel: &str) -> String {
    user().home.join(rel).to_str().unwrap().to_owned()
}

fn peer(rel: &str) -> String {
    peers().join(rel).to_str().unwrap().to_owned()
}

/// The fixtures the shipped policies serve: ~/mcp-repo (one commit),
/// ~/mcp-share (one file), ~/.local/share/mcp-memory.
fn fixtures() {
    let u = user();
    committed_repo(&u.home.join("mcp-repo"), "baseline\n", "baseline");
    let share = u.home.join("mcp-share");
    user_dir(&share);
    user_file(&share.join("notes.txt"), "shared notes\n", 0o644);
    user_dir(&u.home.join(".local/share/mcp-memory"));
}

/// The shipped fetch policy, plus the loopback test site's address.
fn fetch_policy(site: &Site) -> PathBuf {
    let text = std::fs::read_to_string(shipped("fetch")).unwrap();
    let mut table: toml::Table = text.parse().unwrap();
    table["network"]["allow"]
        .as_array_mut()
        .unwrap()
        .push(toml::Value::String(site.addr.to_string()));
    policy(
        &tempdir("fetch"),
        "fetch",
        &toml::to_string(&table).unwrap(),
    )
}

fn npm_entry(package: &str) -> String {
    peer(&format!(
        "npm/node_modules/@modelcontextprotocol/{package}/dist/index.js"
    ))
}

#[test]
fn every_shipped_policy_starts_its_server_with_zero_denials() {
    let d = Daemon::start();
    fixtures();
    let site = Site::start();
    let venv = |bin: &str| peer(&format!("venv/bin/{bin}"));
    let starts = [
        Start {
            server: "time",
            policy: shipped("time"),
            call: json!(["get_current_time", {"timezone": "Europe/Paris"}]),
            argv: vec![venv("mcp-server-time")],
            env: vec![],
        },
        Start {
            server: "fetch",
            policy: fetch_policy(&site),
            call: json!(["fetch", {"url": format!("http://{}/", site.addr)}]),
            argv: vec![venv("mcp-server-fetch"), "--allow-private-ips".into()],
            env: vec![("PATH", peer("venv/bin"))],
        },
        Start {
            server: "git",
            policy: shipped("git"),
            call: json!(["git_status", {"repo_path": home("mcp-repo")}]),
            argv: vec![
                venv("mcp-server-git"),
                "--repository".into(),
                home("mcp-repo"),
            ],
            env: vec![],
        },
        Start {
            server: "filesystem",
            policy: shipped("filesystem"),
            call: json!(["read_text_file", {"path": home("mcp-share/notes.txt")}]),
            argv: vec![
                "/usr/bin/node".into(),
                npm_entry("server-filesystem"),
                home("mcp-share"),
            ],
            env: vec![],
        },
        Start {
            server: "memory",
            policy: shipped("memory"),
            call: json!(["read_graph", {}]),
            argv: vec!["/usr/bin/node".into(), npm_entry("server-memory")],
            env: vec![(
                "MEMORY_FILE_PATH",
                home(".local/share/mcp-memory/memory.jsonl"),
            )],
        },
        Start {
            server: "everything",
            policy: shipped("everything"),
            call: json!(["echo", {"message": "baseline"}]),
            argv: vec![
                "/usr/bin/node".into(),
                npm_entry("server-everything"),
                "stdio".into(),
            ],
            env: vec![],
        },
    ];
    let mut noisy = Vec::new();
    for s in &starts {
        let denied = denials_of(&d, s);
        if !denied.is_empty() {
            noisy.push(format!(
                "{} ({} denied):\n{}",
                s.server,
                denied.len(),
                denied
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    assert!(
        noisy.is_empty(),
        "shipped policies must start their servers without denials:\n{}",
        noisy.join("\n\n")
    );

    // The baseline does not reach into the home directory: a key in ~/.ssh
    // stays out of reach under the same policies.
    let ssh = user().home.join(".ssh");
    user_dir(&ssh);
    let key = ssh.join("id_baseline_test");
    user_file(&key, "not a real key\n", 0o600);
    let out = d.run(
        &shipped("time"),
        &[
            "/usr/bin/python3",
            "-c",
            &format!(
                "import errno\ntry:\n open({:?}).read(); print('read')\nexcept OSError as e:\n print(errno.errorcode[e.errno])",
                key.to_str().unwrap()
            ),
        ],
    );
    assert_eq!(stdout_of(&out).trim(), "EACCES", "{}", describe(&out));
    d.wait_record("denied open of the ssh key", |r| {
        is_kind(r, "open")
            && r["server"] == "time"
            && r["path"] == key.to_str().unwrap()
            && r["denied"] == true
    });
}

/// `wrap`'s starter policy for `command args`, with `extra_read` added
/// (where the server's script lives, which a user adds after the first
/// refusal; the starter only knows the runtime).
fn starter(name: &str, command: &str, args: &[String], extra_read: &[String]) -> PathBuf {
    let home = user().home.clone();
    let text = mcpguard::wrap::starter::render(&mcpguard::wrap::starter::StarterInput {
        server: name,
        policy: name,
        config: std::path::Path::new("/nonexistent/claude_desktop_config.json"),
        command,
        args,
        env: &[],
        home: &home,
        launch: mcpguard::wrap::starter::Launch::Direct,
        data: &[],
        refused: &[],
        destinations: &[],
        package: None,
        accept_weaker: &[],
    });
    let mut table: toml::Table = text.parse().expect("a starter policy is TOML");
    let read = table["filesystem"]["read"].as_array_mut().unwrap();
    read.extend(extra_read.iter().cloned().map(toml::Value::String));
    let text = toml::to_string(&table).unwrap();
    mcpguard::policy::Policy::parse(&text, std::path::Path::new("starter.toml"))
        .expect("the starter policy parses");
    policy(&tempdir("starter"), name, &text)
}

#[test]
fn wrap_starters_start_a_node_and_a_python_server_with_zero_denials() {
    let d = Daemon::start();
    let node_args = vec![npm_entry("server-memory")];
    let time = peer("venv/bin/mcp-server-time");
    let starts = [
        Start {
            server: "starter-node",
            policy: starter("starter-node", "/usr/bin/node", &node_args, &[peer("npm")]),
            call: json!(["read_graph", {}]),
            argv: vec!["/usr/bin/node".into(), npm_entry("server-memory")],
            env: vec![],
        },
        Start {
            server: "starter-python",
            policy: starter("starter-python", &time, &[], &[]),
            call: json!(["get_current_time", {"timezone": "Asia/Tokyo"}]),
            argv: vec![time.clone()],
            env: vec![],
        },
    ];
    for s in &starts {
        let denied = denials_of(&d, s);
        assert!(
            denied.is_empty(),
            "{}: {} denied records:\n{}",
            s.server,
            denied.len(),
            denied
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// The denied records of `server`'s launch, once it exited and its last
/// records had a moment to arrive.
fn denials_of_launch(d: &Daemon, server: &str) -> Vec<Value> {
    let exit = d.wait_record(&format!("exit of {server}"), |r| {
        is_kind(r, "server_exit") && r["server"] == server
    });
    std::thread::sleep(Duration::from_millis(300));
    d.records()
        .into_iter()
        .filter(|r| r["launch"] == exit["launch"] && r["denied"] == true)
        .collect()
}

#[test]
fn the_private_proc_shows_only_the_servers_own_processes_and_opting_out_drops_the_baseline() {
    let d = Daemon::start();
    // Under the default baseline: /proc lists the server's own process and
    // nothing else, its own entries and the system-wide files read fine,
    // and glibc's nscd probe of a socket the host does not have is neither
    // a denial nor `fenced`.
    let pol = simple_policy("proc-view", &[]);
    let script = r#"
import os, pwd
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
print(pids == [os.getpid()], pids)
for p in ('/proc/self/status', '/proc/stat', '/proc/sys/vm/overcommit_memory'):
    open(p).read()
print(pwd.getpwuid(os.getuid()).pw_name)
"#;
    let out = d.run(&pol, &["/usr/bin/python3", "-c", script]);
    let text = stdout_of(&out);
    assert!(
        out.status.success() && text.trim_start().starts_with("True "),
        "only the server's own pid should be listed: {}",
        describe(&out)
    );
    let nscd = "/var/run/nscd/socket";
    let nscd_on_host = std::path::Path::new(nscd).exists();
    let probe = d.wait_record("glibc's nscd probe", |r| {
        is_kind(r, "unix_connect") && r["server"] == "it-proc-view" && r["path"] == nscd
    });
    assert_eq!(
        probe["denied"] == true,
        nscd_on_host,
        "a hidden socket is a denial exactly when it exists on the host: {probe}"
    );
    // Listing /proc has the kernel check each of the user's processes for
    // visibility (the private /proc hides what the server may not trace):
    // Landlock refuses those outside the server's domain (the `mcpguard
    // run` client here) and logs each refusal as a `ptrace` one. Those are
    // the view at work; nothing else may be refused.
    let denied: Vec<Value> = denials_of_launch(&d, "it-proc-view")
        .into_iter()
        .filter(|r| !is_visibility_check(r))
        .collect();
    assert!(nscd_on_host || denied.is_empty(), "no denials: {denied:?}");

    // `baseline = false`: only the lists count. /proc is refused, and the
    // launcher's own look at /proc/self/fd leaves no denial behind.
    let dir = tempdir("no-baseline");
    let pol = policy(
        &dir,
        "no-baseline",
        "name = \"it-no-baseline\"\n[filesystem]\nbaseline = false\n\
         read = [\"/usr\", \"/lib\", \"/lib64\", \"/etc\"]\n\
         exec = [\"/usr/bin\", \"/usr/lib\", \"/lib\", \"/lib64\"]\n[env]\npass = [\"PATH\"]\n",
    );
    let out = d.run(
        &pol,
        &[
            "/usr/bin/python3",
            "-I",
            "-c",
            "import os\ntry:\n os.listdir('/proc'); print('listed')\nexcept PermissionError:\n print('EACCES')",
        ],
    );
    assert_eq!(stdout_of(&out).trim(), "EACCES", "{}", describe(&out));
    // Each refusal is recorded twice: by the tracepoint that saw the call
    // fail, and by Landlock itself (the kernel's path and the right).
    let denied = denials_of_launch(&d, "it-no-baseline");
    let paths = |landlock: bool| -> Vec<String> {
        denied
            .iter()
            .filter(|r| is_kind(r, "landlock") == landlock && !is_visibility_check(r))
            .map(|r| r["path"].as_str().unwrap_or("?").to_owned())
            .collect()
    };
    assert_eq!(
        paths(false),
        ["/proc"],
        "only the listing is refused: {denied:?}"
    );
    assert_eq!(
        paths(true),
        ["/proc"],
        "Landlock's own record of it: {denied:?}"
    );
}

/// A Landlock `ptrace` refusal: how the private /proc's visibility check
/// of a process outside the server's domain is logged.
fn is_visibility_check(r: &Value) -> bool {
    is_kind(r, "landlock") && r["blockers"] == serde_json::json!(["ptrace"])
}
