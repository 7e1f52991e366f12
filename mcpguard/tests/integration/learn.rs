//! `mcpguard policy learn` standing in for a real server's command in an
//! MCP client: the proposal goes to a file (stdout stays JSON-RPC), and the
//! same session rerun under the proposal has no denials.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use serde_json::{json, Value};

use crate::{
    harness::*,
    mcp::{client, fixture_policy, session},
    policies::{as_user_ok, user_dir, user_file},
};

/// Credential stores a proposal must never name.
const SECRETS: &[&str] = &[
    ".ssh",
    ".aws",
    ".gnupg",
    "keyrings",
    ".config/gh",
    ".docker",
    ".kube",
    ".netrc",
];

/// Run `server` through `mcpguard policy learn --policy name --out out`
/// (in `env`), with the learner's stdout copied to a file on its way to
/// the client. Returns the client's report, its stderr, and the learner's
/// stdout.
fn learn(
    d: &Daemon,
    name: &str,
    out: &Path,
    calls: &Value,
    server: &[&str],
    env: &[(&str, &str)],
) -> (Value, String, String) {
    let dir = tempdir("learn-tap");
    let u = user();
    std::os::unix::fs::chown(&dir, Some(u.uid), Some(u.gid)).unwrap();
    let tap = dir.join("stdout");
    let mut argv: Vec<String> = vec![
        bin().display().to_string(),
        "policy".into(),
        "learn".into(),
        "--socket".into(),
        d.socket.display().to_string(),
        "--policy".into(),
        name.into(),
        "--out".into(),
        out.display().to_string(),
        "--".into(),
    ];
    argv.extend(server.iter().map(|s| s.to_string()));
    // `tee` copies exactly what the learner writes to the client.
    let script = format!("\"$@\" | tee {}", tap.display());
    let mut cmd: Vec<&str> = vec!["/bin/sh", "-c", &script, "sh"];
    cmd.extend(argv.iter().map(String::as_str));
    let (report, stderr) = client(d, None, calls, &cmd, env);
    let stdout = std::fs::read_to_string(&tap).unwrap();
    (report, stderr, stdout)
}

/// Every line the learner wrote to stdout is a JSON-RPC message.
fn assert_only_json_rpc(stdout: &str) {
    assert!(!stdout.trim().is_empty(), "the learner relayed nothing");
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON-RPC on stdout ({e}): {line:?}\n{stdout}"));
        assert_eq!(v["jsonrpc"], "2.0", "{line}");
    }
}

/// The proposal at `out`, parsed, and checked for credential stores and
/// paths of the learning launch (`launch`, its cgroup's name).
fn proposal(out: &Path, launch: &str, stderr: &str) -> (mcpguard::policy::Policy, String) {
    let text = std::fs::read_to_string(out)
        .unwrap_or_else(|e| panic!("no proposal at {}: {e}\n{stderr}", out.display()));
    let p = mcpguard::policy::Policy::parse(&text, out).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let fs = p
        .filesystem
        .read
        .iter()
        .chain(&p.filesystem.write)
        .chain(&p.filesystem.exec);
    for rule in fs {
        assert!(
            !SECRETS.iter().any(|s| rule.contains(s)),
            "credential store {rule}\n{text}"
        );
        assert!(!rule.contains(launch), "launch-specific {rule}\n{text}");
        for wide in [
            "/",
            "~",
            "~/.local",
            "~/.local/share",
            "~/.config",
            "~/.cache",
        ] {
            assert_ne!(rule, wide, "{text}");
        }
    }
    assert!(
        stderr.contains(&format!("wrote {}", out.display()))
            && stderr.contains("mcpguard policy check"),
        "no summary and adopt command on stderr:\n{stderr}"
    );
    (p, text)
}

/// The records of launch `launch` once its exit is in; panics on denials
/// other than those `expected` says are expected.
fn assert_no_denials_but(d: &Daemon, launch: &str, text: &str, expected: impl Fn(&Value) -> bool) {
    d.wait_record("the enforced run's exit", |r| {
        is_kind(r, "server_exit") && r["launch"] == launch
    });
    let records = d.records();
    let enforced: Vec<&Value> = records.iter().filter(|r| r["launch"] == launch).collect();
    assert!(
        enforced.iter().any(|r| is_kind(r, "launch")),
        "launch {launch} missing"
    );
    let denied: Vec<&&Value> = enforced
        .iter()
        .filter(|r| r["denied"] == true && !expected(r))
        .collect();
    assert!(
        denied.is_empty(),
        "denials under the learned policy:\n{denied:#?}\n{text}"
    );
}

fn assert_no_denials(d: &Daemon, launch: &str, text: &str) {
    assert_no_denials_but(d, launch, text, |_| false);
}

/// A repository below the test user's home with one commit.
fn repo(tag: &str) -> PathBuf {
    let u = user();
    let repo = u
        .home
        .join(format!("learn-{tag}-{}/app", std::process::id()));
    let _ = std::fs::remove_dir_all(repo.parent().unwrap());
    user_dir(&repo);
    user_file(&repo.join("README.md"), "learned repository\n", 0o644);
    let g = |args: &[&str]| as_user_ok(&repo, "/usr/bin/git", args);
    g(&["init", "-q", "-b", "main"]);
    g(&["config", "user.name", "mcpguard test"]);
    g(&["config", "user.email", "test@mcpguard.invalid"]);
    g(&["add", "README.md"]);
    g(&["commit", "-q", "-m", "first"]);
    repo
}

#[test]
fn learning_mcp_server_git_proposes_a_policy_its_session_reruns_under_without_denials() {
    let d = Daemon::start();
    let git = installed_peer("venv/bin/mcp-server-git");
    let repo = repo("git");
    let repo_s = repo.to_str().unwrap();
    let out_dir = tempdir("learned-git");
    let u = user();
    std::os::unix::fs::chown(&out_dir, Some(u.uid), Some(u.gid)).unwrap();
    let out = out_dir.join("it-learn-git.toml");
    user_file(&repo.join("a.txt"), "one\n", 0o644);
    let calls = json!([
        ["git_status", {"repo_path": repo_s}],
        ["git_add", {"repo_path": repo_s, "files": ["a.txt"]}],
        ["git_commit", {"repo_path": repo_s, "message": "learned"}],
        ["git_log", {"repo_path": repo_s, "max_count": 3}],
    ]);
    let server = [git.to_str().unwrap(), "--repository", repo_s];
    let (report, stderr, stdout) = learn(&d, "it-learn-git", &out, &calls, &server, &[]);
    for i in 0..4 {
        assert_eq!(
            report["results"][i]["is_error"], false,
            "call {i}: {report}\n{stderr}"
        );
    }
    assert_only_json_rpc(&stdout);
    // git_commit made object directories: recorded as mkdir records, with
    // their path relative to the repository git ran in.
    let mkdir = d.wait_record("a mkdir by git", |r| {
        is_kind(r, "mkdir") && r["launch"] == "it-learn-git-1" && r["result"] == 0
    });
    assert_eq!(mkdir["denied"], false, "{mkdir}");
    let (p, text) = proposal(&out, "it-learn-git-1", &stderr);
    // Relative paths (git runs in the repository) resolve there.
    let repo_rule = format!("~/{}", repo.strip_prefix(&u.home).unwrap().display());
    assert!(
        p.filesystem
            .write
            .iter()
            .any(|w| repo_rule.starts_with(w.as_str()) || w.starts_with(&repo_rule)),
        "{repo_rule} not writable\n{text}"
    );
    assert!(!p.filesystem.read.iter().any(|r| r == "~/.git"), "{text}");
    // Every listed tool, not only the called ones.
    let allow = p.tools.allow.clone().unwrap_or_default();
    for t in ["git_status", "git_diff", "git_create_branch", "git_commit"] {
        assert!(allow.contains(&t.to_string()), "{t} missing\n{text}");
    }
    assert!(text.contains("\"git_status\", # called"), "{text}");

    // The same session under the proposal: no denials.
    user_file(&repo.join("a.txt"), "two\n", 0o644);
    let (report, stderr) = session(&d, &out, calls, &server);
    for i in 0..4 {
        assert_eq!(
            report["results"][i]["is_error"], false,
            "call {i}: {report}\n{stderr}\n{text}"
        );
    }
    assert_no_denials(&d, "it-learn-git-2", &text);
    let _ = std::fs::remove_dir_all(repo.parent().unwrap());
}

#[test]
fn learning_the_fixture_server_keeps_stdout_json_rpc_and_reruns_without_denials() {
    let d = Daemon::start();
    let data = tempdir("learn-fixture").join("notes.txt");
    std::fs::write(&data, "learned notes\n").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, script) = fixture_policy("it-learn-fx-unused", "", &[]);
    let python = peers().join("venv/bin/python");
    let out_dir = tempdir("learned-fx");
    let u = user();
    std::os::unix::fs::chown(&out_dir, Some(u.uid), Some(u.gid)).unwrap();
    let out = out_dir.join("it-learn-fx.toml");
    let calls = json!([["read_file", {"path": data}]]);
    let server = [python.to_str().unwrap(), script.to_str().unwrap()];
    let (report, stderr, stdout) = learn(&d, "it-learn-fx", &out, &calls, &server, &[]);
    assert_eq!(
        report["results"][0]["text"][0], "learned notes\n",
        "{report}\n{stderr}"
    );
    assert_only_json_rpc(&stdout);
    let (p, text) = proposal(&out, "it-learn-fx-1", &stderr);
    let listed: Vec<String> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str().map(String::from))
        .collect();
    let mut allow = p.tools.allow.clone().unwrap_or_default();
    allow.sort();
    let mut want = listed.clone();
    want.sort();
    assert_eq!(
        allow, want,
        "[tools] allow must be the tools/list answer\n{text}"
    );

    let (report, stderr) = session(&d, &out, calls, &server);
    assert_eq!(
        report["results"][0]["text"][0], "learned notes\n",
        "{report}\n{stderr}"
    );
    assert_no_denials(&d, "it-learn-fx-2", &text);
}

#[test]
fn learning_server_memory_grants_its_store_directory_though_the_store_is_replaced_by_rename() {
    let d = Daemon::start();
    let u = user();
    let entry =
        installed_peer("npm/node_modules/@modelcontextprotocol/server-memory/dist/index.js");
    let dir = u
        .home
        .join(format!(".local/share/learn-mem-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    user_dir(&dir);
    let file = dir.join("memory.jsonl");
    let file_s = file.to_str().unwrap();
    // The starting policy passes the store's location; learn keeps [env].
    let start = policy(
        &tempdir("learn-mem-start"),
        "it-learn-mem",
        "name = \"it-learn-mem\"\n[env]\npass = [\"PATH\", \"HOME\", \"MEMORY_FILE_PATH\"]\n",
    );
    let out_dir = tempdir("learned-mem");
    std::os::unix::fs::chown(&out_dir, Some(u.uid), Some(u.gid)).unwrap();
    let out = out_dir.join("it-learn-mem.toml");
    let server = ["/usr/bin/node", entry.to_str().unwrap()];
    let calls = |n: &str| {
        json!([
            ["create_entities", {"entities": [{"name": n, "entityType": "t", "observations": ["o"]}]}],
            ["read_graph", {}],
        ])
    };
    let env = [("MEMORY_FILE_PATH", file_s)];
    let (report, stderr, stdout) = learn(
        &d,
        start.to_str().unwrap(),
        &out,
        &calls("first"),
        &server,
        &env,
    );
    for i in 0..2 {
        assert_eq!(
            report["results"][i]["is_error"], false,
            "call {i}: {report}\n{stderr}"
        );
    }
    assert_only_json_rpc(&stdout);
    let (p, text) = proposal(&out, "it-learn-mem-1", &stderr);
    let store = format!("~/{}", dir.strip_prefix(&u.home).unwrap().display());
    assert!(
        p.filesystem.write.contains(&store),
        "{store} not writable\n{text}"
    );
    // Not the store file itself: a rename replaces it on every save.
    assert!(!text.contains("memory.jsonl"), "{text}");

    let (report, stderr) = client(&d, Some(&out), &calls("second"), &server, &env);
    for i in 0..2 {
        assert_eq!(
            report["results"][i]["is_error"], false,
            "call {i}: {report}\n{stderr}\n{text}"
        );
    }
    // Node's memory-limit probe reads its own cgroup, which the runtime
    // baseline grants at launch: nothing is refused.
    assert_no_denials_but(&d, "it-learn-mem-2", &text, |_| false);
    let _ = std::fs::remove_dir_all(&dir);
}
