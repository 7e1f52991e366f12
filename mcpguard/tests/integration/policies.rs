//! More real MCP servers under the policies shipped in `policies/`: PyPI
//! `mcp-server-git` and `mcp-server-fetch`, npm
//! `@modelcontextprotocol/server-memory`. Each runs as the test user through
//! `mcpguard run`, driven by the PyPI `mcp` SDK client, and each test also
//! shows the policy refusing what the server must not do.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use serde_json::{json, Value};

use crate::{
    harness::*,
    mcp::{client, session, shipped},
};

/// Run `program args` as the test user (see [`as_user`]) in `dir`;
/// panics with the output unless it succeeds.
pub(crate) fn as_user_ok(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = as_user(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} as the test user: {}",
        describe(&out)
    );
    stdout_of(&out)
}

/// Create `path` (and missing parents) owned by the test user.
pub(crate) fn user_dir(path: &Path) {
    let u = user();
    let mut missing = Vec::new();
    let mut p = path;
    while !p.exists() {
        missing.push(p.to_owned());
        p = p.parent().expect("a parent");
    }
    std::fs::create_dir_all(path).unwrap();
    for dir in missing {
        std::os::unix::fs::chown(&dir, Some(u.uid), Some(u.gid)).unwrap();
    }
}

/// A file owned by the test user, with `mode`.
pub(crate) fn user_file(path: &Path, body: &str, mode: u32) {
    let u = user();
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid)).unwrap();
}

fn tool_names(report: &Value) -> Vec<&str> {
    report["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tool list: {report}"))
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

/// A fresh git repository at `repo`, made by the test user, holding
/// `README.md` (`readme`) in one commit (`message`) on `main`; returns the
/// commit's id.
pub(crate) fn committed_repo(repo: &Path, readme: &str, message: &str) -> String {
    let _ = std::fs::remove_dir_all(repo);
    user_dir(repo);
    user_file(&repo.join("README.md"), readme, 0o644);
    let g = |args: &[&str]| as_user_ok(repo, "/usr/bin/git", args);
    g(&["init", "-q", "-b", "main"]);
    g(&["add", "README.md"]);
    g(&[
        "-c",
        "user.name=mcpguard test",
        "-c",
        "user.email=test@mcpguard.invalid",
        "commit",
        "-q",
        "-m",
        message,
    ]);
    g(&["rev-parse", "HEAD"]).trim().to_owned()
}

/// The text of call `i` in a session report, all parts joined.
pub(crate) fn text(report: &Value, i: usize) -> String {
    report["results"][i]["text"]
        .as_array()
        .unwrap_or_else(|| panic!("call {i} has no text result: {report}"))
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn mcp_server_git_serves_its_repository_and_cannot_read_ssh_keys() {
    let d = Daemon::start();
    let u = user();
    let git = installed_peer("venv/bin/mcp-server-git");

    // ~/mcp-repo, the repository the shipped policy serves: one commit, made
    // by the test user, and one untracked file for git_status to report.
    let repo = u.home.join("mcp-repo");
    let head = committed_repo(&repo, "guarded repository\n", "First commit under guard");
    user_file(&repo.join("notes.txt"), "not committed yet\n", 0o644);

    let pol = shipped("git");
    let repo_s = repo.to_str().unwrap();
    let (report, stderr) = session(
        &d,
        &pol,
        json!([
            ["git_status", {"repo_path": repo_s}],
            ["git_log", {"repo_path": repo_s, "max_count": 5}],
        ]),
        &[git.to_str().unwrap(), "--repository", repo_s],
    );
    assert_eq!(report["server"], "mcp-git", "{report}\n{stderr}");
    let tools = tool_names(&report);
    for t in ["git_status", "git_log", "git_commit", "git_diff"] {
        assert!(tools.contains(&t), "{t} not listed: {report}");
    }
    for i in 0..2 {
        assert_eq!(
            report["results"][i]["is_error"], false,
            "call {i} failed under the policy: {report}\n--- stderr ---\n{stderr}"
        );
    }
    let status = text(&report, 0);
    assert!(
        status.contains("On branch main") && status.contains("notes.txt"),
        "git_status should show the branch and the untracked file: {status}"
    );
    let log = text(&report, 1);
    assert!(
        log.contains(&head) && log.contains("First commit under guard"),
        "git_log should show commit {head}: {log}"
    );
    // git_status ran `git status` in a subprocess of the guarded server:
    // Debian's git (found as /bin/git, PATH being unset), tied to the call.
    d.wait_record("exec of git status for the git_status call", |r| {
        is_kind(r, "exec")
            && r["server"] == "git"
            && r["tool"] == "git_status"
            && r["filename"] == "/bin/git"
            && r["argv"][1] == "status"
            && r["result"] == 0
    });

    // A private key next to the repository, readable by the user when
    // unguarded. Python under the same policy reads the repository but not
    // the key: the kernel refuses it, whatever the server's code does.
    let ssh = u.home.join(".ssh");
    user_dir(&ssh);
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = ssh.join("id_rsa_mcpguard_test");
    user_file(
        &key,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n-----END OPENSSH PRIVATE KEY-----\n",
        0o600,
    );
    let script = format!(
        r#"
import errno
for p in ({readme:?}, {key:?}):
    try:
        open(p).read()
        print("read")
    except OSError as e:
        print(errno.errorcode[e.errno])
"#,
        readme = repo.join("README.md").display().to_string(),
        key = key.display().to_string(),
    );
    let out = d.run(&pol, &["/usr/bin/python3", "-c", &script]);
    assert_eq!(
        stdout_of(&out).split_whitespace().collect::<Vec<_>>(),
        ["read", "EACCES"],
        "the repository must be readable and the key not: {}",
        describe(&out)
    );
    d.wait_record("denied open of the ssh key", |r| {
        is_kind(r, "open")
            && r["server"] == "git"
            && r["path"] == key.to_str().unwrap()
            && r["denied"] == true
    });
}

/// A one-page web site on 127.0.0.1: `/robots.txt` allows everything and
/// every other path is the same HTML page. It records the paths asked.
pub(crate) struct Site {
    pub(crate) addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Guarded fetch</title></head>\
<body><article><h1>Guarded fetch</h1>\
<p>This page reached the fetch server through an mcpguard egress rule.</p>\
</article></body></html>\n";

impl Site {
    pub(crate) fn start() -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (asked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&req);
                let path = req.split_whitespace().nth(1).unwrap_or("").to_owned();
                a.lock().unwrap().push(path.clone());
                let (ctype, body) = if path == "/robots.txt" {
                    ("text/plain", "User-agent: *\nAllow: /\n")
                } else {
                    ("text/html; charset=utf-8", PAGE)
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Site {
            addr,
            asked,
            stop,
            thread: Some(thread),
        }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn mcp_server_fetch_fetches_allowed_pages_and_nothing_else() {
    let d = Daemon::start();
    let fetch = installed_peer("venv/bin/mcp-server-fetch");
    let site = Site::start();
    // Another loopback port with a listener, so a connection there would
    // succeed if the policy let it through.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let other_port = other.local_addr().unwrap().port();

    // The shipped policy allows names on ports 80 and 443 during fetch
    // calls, and the tests are offline: the one site they have is on
    // loopback, at an address no name rule covers. Allow exactly that
    // address to the fetch tool, as a user would add a site they trust;
    // everything else in the policy is as shipped.
    let shipped_text = std::fs::read_to_string(shipped("fetch")).unwrap();
    let mut table: toml::Table = shipped_text.parse().expect("policies/fetch.toml is TOML");
    table["tools"]["fetch"]["network"]
        .as_array_mut()
        .expect("[tools.fetch] network is a list")
        .push(toml::Value::String(site.addr.to_string()));
    let pol = policy(
        &tempdir("fetch"),
        "fetch",
        &toml::to_string(&table).unwrap(),
    );

    // PATH is the venv's bin, as the policy tells clients to set it (no
    // `node`, so HTML goes through readabilipy's pure-Python extractor).
    // --allow-private-ips turns off the server's own refusal of loopback
    // destinations, which would otherwise stop the fetch before the kernel
    // is asked; the kernel's egress rules are what this test is about.
    let venv_bin = peers().join("venv/bin");
    let (report, stderr) = client(
        &d,
        Some(&pol),
        &json!([
            ["fetch", {"url": format!("http://{}/", site.addr)}],
            ["fetch", {"url": format!("http://127.0.0.1:{other_port}/")}],
        ]),
        &[fetch.to_str().unwrap(), "--allow-private-ips"],
        &[("PATH", venv_bin.to_str().unwrap())],
    );
    assert_eq!(report["server"], "mcp-fetch", "{report}");
    assert_eq!(tool_names(&report), ["fetch"], "{report}");
    assert_eq!(
        report["results"][0]["is_error"], false,
        "the allowed fetch failed: {report}\n--- stderr ---\n{stderr}"
    );
    let page = text(&report, 0);
    assert!(
        page.contains("This page reached the fetch server through an mcpguard egress rule."),
        "the page's text should come back: {page}"
    );
    let asked = site.asked();
    assert!(
        asked.contains(&"/robots.txt".to_owned()) && asked.contains(&"/".to_owned()),
        "the server should have asked for robots.txt and the page: {asked:?}"
    );

    assert_eq!(
        report["results"][1]["is_error"], true,
        "the fetch from a port outside the policy must fail: {report}"
    );
    assert!(
        matches!(other.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing may reach the port outside the policy"
    );
    d.wait_record("denied connect to the port outside the policy", |r| {
        is_kind(r, "connect")
            && r["server"] == "fetch"
            && r["addr"] == "127.0.0.1"
            && r["port"] == other_port
            && r["denied"] == true
    });
    d.wait_record("allowed connect to the site, during the call", |r| {
        is_kind(r, "connect")
            && r["server"] == "fetch"
            && r["port"] == site.addr.port()
            && r["verdict"] == "allow"
            && r["tool"] == "fetch"
    });
    d.wait_record("the site closed again when the call was answered", |r| {
        is_kind(r, "mcp")
            && r["server"] == "fetch"
            && r["event"] == "call_network"
            && r["detail"]["network"] == "closed"
    });

    // With node on PATH (the client's usual PATH), readabilipy tries to run
    // it for HTML, the policy refuses, and the fetch fails: what the
    // policy's header warns about.
    let (report, _) = client(
        &d,
        Some(&pol),
        &json!([["fetch", {"url": format!("http://{}/", site.addr)}]]),
        &[fetch.to_str().unwrap(), "--allow-private-ips"],
        &[],
    );
    assert_eq!(report["results"][0]["is_error"], true, "{report}");
    d.wait_record("refused exec of node during the fetch", |r| {
        is_kind(r, "exec")
            && r["server"] == "fetch"
            && r["tool"] == "fetch"
            && r["argv"][0] == "node"
            && r["denied"] == true
    });
}

#[test]
fn server_memory_keeps_its_graph_where_the_policy_says_and_nowhere_else() {
    let d = Daemon::start();
    let u = user();
    let entry =
        installed_peer("npm/node_modules/@modelcontextprotocol/server-memory/dist/index.js");
    let dir = u.home.join(".local/share/mcp-memory");
    let _ = std::fs::remove_dir_all(&dir);
    user_dir(&dir);
    let file = dir.join("memory.jsonl");
    let pol = shipped("memory");
    let server = ["/usr/bin/node", entry.to_str().unwrap()];
    let calls = json!([
        ["create_entities", {"entities": [{
            "name": "mcpguard",
            "entityType": "project",
            "observations": ["runs MCP servers under kernel-enforced policies"],
        }]}],
        ["read_graph", {}],
    ]);

    let (report, stderr) = client(
        &d,
        Some(&pol),
        &calls,
        &server,
        &[("MEMORY_FILE_PATH", file.to_str().unwrap())],
    );
    let tools = tool_names(&report);
    for t in ["create_entities", "read_graph", "search_nodes"] {
        assert!(tools.contains(&t), "{t} not listed: {report}");
    }
    for i in 0..2 {
        assert_eq!(
            report["results"][i]["is_error"], false,
            "call {i} failed under the policy: {report}\n--- stderr ---\n{stderr}"
        );
    }
    let graph = text(&report, 1);
    assert!(
        graph.contains("\"mcpguard\"")
            && graph.contains("runs MCP servers under kernel-enforced policies"),
        "read_graph should return the new entity: {graph}"
    );
    let saved = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("the graph should be saved in {}: {e}", file.display()));
    assert!(
        saved.contains("\"name\":\"mcpguard\""),
        "{}: {saved}",
        file.display()
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "memory.jsonl")
        .collect();
    assert!(
        leftovers.is_empty(),
        "only the graph file should remain: {leftovers:?}"
    );

    // Without MEMORY_FILE_PATH the server saves next to its own code, in the
    // npm install: the policy does not let it write there, and the read-only
    // view refuses the create before Landlock is asked (EROFS).
    let default = entry.parent().unwrap().join("memory.jsonl");
    let (report, _) = client(&d, Some(&pol), &calls, &server, &[]);
    assert_eq!(
        report["results"][0]["is_error"], true,
        "saving into the npm install must fail: {report}"
    );
    assert!(
        text(&report, 0).contains("EROFS"),
        "the server should report EROFS: {report}"
    );
    assert!(
        !default.exists(),
        "{} must not have been written",
        default.display()
    );
    d.wait_record("denied write next to the package", |r| {
        is_kind(r, "open")
            && r["server"] == "memory"
            && r["path"]
                .as_str()
                .is_some_and(|p| p.starts_with(entry.parent().unwrap().to_str().unwrap()))
            && r["denied"] == true
    });
}
