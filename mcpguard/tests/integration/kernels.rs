//! The guarantees that depend on the running kernel's Landlock ABI: each
//! test probes the ABI and asserts what mcpguard does on *this* kernel.
//! On ABI 6+ (this machine's 6.18) the scopes are held by Landlock and no
//! launch is refused; on an older kernel (`cargo xtask vm --kernel 6.1`)
//! a launch is refused unless the policy's `[kernel] accept_weaker` names
//! the missing scopes, and with it the launch record says the guarantee
//! is weaker.

use std::{process::Child, time::Duration};

use crate::harness::*;

/// Tries to signal the outside process `argv[1]` and to connect to the
/// outside abstract socket `argv[2]`, printing what happened to each.
const SCOPE_PROBE: &str = r#"
import errno, os, signal, socket, sys
def name(e):
    return errno.errorcode.get(e.errno, str(e.errno))
try:
    os.kill(int(sys.argv[1]), signal.SIGUSR1)
    print("kill ok")
except OSError as e:
    print("kill", name(e))
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect("\0" + sys.argv[2])
    print("abstract ok")
except OSError as e:
    print("abstract", name(e))
"#;

fn landlock_abi() -> u32 {
    mcpguard::launch::probe_landlock_abi().expect("this kernel has Landlock")
}

/// A process of the test user outside any server, and an abstract socket
/// of the test user's, both for the server to reach for.
struct Outside {
    sleeper: Child,
    socket: Child,
    name: String,
}

impl Outside {
    fn start(tag: &str) -> Outside {
        let sleeper = as_user("/usr/bin/sleep").arg("300").spawn().unwrap();
        let name = format!("mcpguard-it-{tag}-{}", std::process::id());
        let listen = format!(
            "import socket, time\ns = socket.socket(socket.AF_UNIX)\ns.bind('\\0{name}')\n\
             s.listen(8)\nprint('up', flush=True)\ntime.sleep(300)\n"
        );
        let mut socket = as_user("/usr/bin/python3")
            .args(["-c", &listen])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = stdout_lines(&mut socket);
        assert_eq!(
            lines.recv_timeout(Duration::from_secs(10)).ok().as_deref(),
            Some("up"),
            "the outside abstract socket did not come up"
        );
        Outside {
            sleeper,
            socket,
            name,
        }
    }

    fn sleeper_alive(&self) -> bool {
        alive(self.sleeper.id())
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        for child in [&mut self.sleeper, &mut self.socket] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A policy `it-<tag>` for python3 with `kernel` as its `[kernel]` body.
fn scope_policy(tag: &str, kernel: &str) -> std::path::PathBuf {
    let dir = tempdir(tag);
    policy_as_is(
        &dir,
        tag,
        &format!(
            "name = \"it-{tag}\"\n{}\n[env]\npass = [\"PATH\"]\n[kernel]\n{kernel}\n",
            base_fs(&[])
        ),
    )
}

/// `status` lists each class with the layer holding it on this kernel.
#[test]
fn status_shows_which_layer_holds_each_class_on_this_kernel() {
    let abi = landlock_abi();
    let d = Daemon::start();
    let report = daemon_status(&d);
    let rows = report["guarantees"].as_array().expect("guarantees listed");
    let row = |class: &str| {
        rows.iter()
            .find(|r| r["class"] == class)
            .unwrap_or_else(|| panic!("no {class} in {report:#}"))
            .clone()
    };
    let (scope_state, scope_by) = if abi >= 6 {
        ("held", serde_json::json!(["landlock"]))
    } else {
        ("missing", serde_json::json!([]))
    };
    for class in ["scope.signal", "scope.abstract_unix_socket"] {
        assert_eq!(row(class)["state"], scope_state, "ABI {abi}: {report:#}");
        assert_eq!(row(class)["held_by"], scope_by, "ABI {abi}: {report:#}");
    }
    assert_eq!(row("net.tcp")["held_by"], serde_json::json!(["ebpf"]));
    let truncate_by = if abi >= 3 {
        serde_json::json!(["landlock", "read_only_view"])
    } else {
        serde_json::json!(["read_only_view"])
    };
    assert_eq!(row("fs.truncate")["state"], "held");
    assert_eq!(row("fs.truncate")["held_by"], truncate_by);
    let ioctl = if abi >= 5 { "held" } else { "weaker" };
    assert_eq!(row("fs.ioctl_dev")["state"], ioctl);

    let human = d.cli(&["status"]).output().unwrap();
    let text = stdout_of(&human);
    let line = text
        .lines()
        .find(|l| l.starts_with("  scope.signal "))
        .unwrap_or_else(|| panic!("no scope.signal line\n{text}"));
    if abi >= 6 {
        assert!(
            line.contains(" held ") && line.contains("landlock"),
            "{line}"
        );
    } else {
        assert!(line.contains(" MISSING "), "{line}");
        assert!(text.contains("accept_weaker"), "{text}");
    }
}

/// Without `accept_weaker`, a launch is refused exactly where the kernel
/// cannot scope signals and abstract sockets; where it can, the server
/// reaches neither the outside process nor the outside socket.
#[test]
fn a_launch_needing_a_scope_the_kernel_lacks_is_refused_unless_accepted() {
    let abi = landlock_abi();
    let d = Daemon::start();
    let outside = Outside::start("scope");
    let pid = outside.sleeper.id().to_string();
    let strict = scope_policy("scope-strict", "");
    let out = d.run(
        &strict,
        &["/usr/bin/python3", "-c", SCOPE_PROBE, &pid, &outside.name],
    );
    if abi >= 6 {
        let text = stdout_of(&out);
        assert!(text.contains("kill EPERM"), "ABI {abi}\n{}", describe(&out));
        assert!(
            text.contains("abstract EPERM"),
            "ABI {abi}\n{}",
            describe(&out)
        );
        assert!(outside.sleeper_alive());
        let launch = d.wait_record("launch", |r| {
            is_kind(r, "launch") && r["server"] == "it-scope-strict"
        });
        assert_eq!(
            launch["layers"]["weaker"],
            serde_json::json!([]),
            "{launch}"
        );
        return;
    }
    assert!(
        !out.status.success(),
        "ABI {abi}: launched\n{}",
        describe(&out)
    );
    let failed = d.wait_record("launch_failed", |r| {
        is_kind(r, "launch_failed") && r["server"] == "it-scope-strict"
    });
    let error = failed["error"].as_str().unwrap_or_default();
    for part in [
        "scope.signal",
        "scope.abstract_unix_socket",
        &format!("Landlock ABI {abi}"),
        "accept_weaker",
    ] {
        assert!(error.contains(part), "want {part:?} in {error:?}");
    }
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("accept_weaker"),
        "the client is told the opt-in\n{}",
        describe(&out)
    );
    assert!(outside.sleeper_alive());
}

/// With `accept_weaker` the launch goes on everywhere; the launch record
/// names the guarantees it runs without on this kernel.
#[test]
fn accepting_the_weaker_guarantee_launches_and_the_record_says_so() {
    let abi = landlock_abi();
    let d = Daemon::start();
    let outside = Outside::start("weaker");
    let pid = outside.sleeper.id().to_string();
    let lax = scope_policy(
        "scope-lax",
        "accept_weaker = [\"scope.signal\", \"scope.abstract_unix_socket\"]",
    );
    let out = d.run(
        &lax,
        &["/usr/bin/python3", "-c", SCOPE_PROBE, &pid, &outside.name],
    );
    assert!(out.status.success(), "ABI {abi}\n{}", describe(&out));
    let launch = d.wait_record("launch", |r| {
        is_kind(r, "launch") && r["server"] == "it-scope-lax"
    });
    let weaker = &launch["layers"]["weaker"];
    let text = stdout_of(&out);
    if abi >= 6 {
        // Accepting changes nothing where Landlock holds the scopes.
        assert_eq!(*weaker, serde_json::json!([]), "{launch}");
        assert!(text.contains("kill EPERM"), "{}", describe(&out));
        assert!(outside.sleeper_alive());
    } else {
        for class in ["scope.signal", "scope.abstract_unix_socket"] {
            assert!(
                weaker.as_array().unwrap().iter().any(|c| c == class),
                "{class} not in {launch}"
            );
        }
        // The hole is open, as accepted: the outside process got the
        // signal (SIGUSR1 ends `sleep`).
        assert!(text.contains("kill ok"), "{}", describe(&out));
    }
}

/// `fs.truncate` is held on every kernel: `truncate(2)` of a file of the
/// user's outside the write grants fails, by the read-only view (`EROFS`,
/// before Landlock is asked) where Landlock cannot check it (ABI < 3).
#[test]
fn truncate_outside_the_write_grants_fails_on_every_kernel() {
    let abi = landlock_abi();
    let d = Daemon::start();
    let u = user();
    let file = u
        .home
        .join(format!("mcpguard-it-truncate-{}", std::process::id()));
    std::fs::write(&file, "keep me\n").unwrap();
    std::os::unix::fs::chown(&file, Some(u.uid), Some(u.gid)).unwrap();
    let pol = scope_policy(
        "truncate",
        "accept_weaker = [\"scope.signal\", \"scope.abstract_unix_socket\"]",
    );
    let script = "import errno, os, sys\ntry:\n    os.truncate(sys.argv[1], 0)\n    \
                  print('truncate ok')\nexcept OSError as e:\n    \
                  print('truncate', errno.errorcode[e.errno])\n";
    let out = d.run(
        &pol,
        &["/usr/bin/python3", "-c", script, file.to_str().unwrap()],
    );
    let left = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(
        stdout_of(&out).contains("truncate EROFS"),
        "ABI {abi}\n{}",
        describe(&out)
    );
    assert_eq!(left, "keep me\n");
    let launch = d.wait_record("launch", |r| {
        is_kind(r, "launch") && r["server"] == "it-truncate"
    });
    let row = launch["layers"]["guarantees"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["class"] == "fs.truncate"))
        .cloned()
        .unwrap_or_else(|| panic!("no fs.truncate in {launch}"));
    assert_eq!(row["state"], "held", "{launch}");
    assert!(
        row["held_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "read_only_view"),
        "{row}"
    );
}

/// `mcpguard wrap`, as the test user, on a Cursor config whose server is a
/// plain program (no runner, so nothing to install), starters in `dir`.
fn wrap_as_user(
    cfg: &std::path::Path,
    dir: &std::path::Path,
    accept: bool,
) -> std::process::Output {
    let mut cmd = as_user(bin());
    cmd.args(["wrap", "--no-install", "--policy-dir"]).arg(dir);
    if accept {
        cmd.arg("--accept-weaker");
    }
    cmd.arg(cfg).output().unwrap()
}

/// On a kernel that lacks the scopes, `wrap` changes nothing and names
/// `--accept-weaker`, and with it writes starters that accept exactly the
/// missing scopes (so the daemon will launch them); on a kernel that holds
/// them, `wrap` needs no flag and writes no `[kernel]` table.
#[test]
fn wrap_asks_for_accept_weaker_exactly_where_the_kernel_lacks_scopes() {
    let work = user()
        .home
        .join(format!("kernels-wrap-{}", std::process::id()));
    let cursor = work.join(".cursor");
    let status = as_user("/bin/mkdir")
        .arg("-p")
        .arg(&cursor)
        .status()
        .unwrap();
    assert!(status.success());
    let cfg = cursor.join("mcp.json");
    let text = r#"{"mcpServers": {"clock": {"command": "/usr/bin/date"}}}"#;
    let status = as_user("/bin/sh")
        .args(["-c", "printf '%s' \"$1\" > \"$2\"", "sh", text])
        .arg(&cfg)
        .status()
        .unwrap();
    assert!(status.success());
    let dir = work.join("policies");
    let starter = dir.join("clock.toml");

    if landlock_abi() >= 6 {
        let out = wrap_as_user(&cfg, &dir, false);
        assert!(out.status.success(), "{}", describe(&out));
        let policy = std::fs::read_to_string(&starter).unwrap();
        assert!(!policy.contains("[kernel]"), "{policy}");
    } else {
        let out = wrap_as_user(&cfg, &dir, false);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--accept-weaker"), "{stderr}");
        assert!(stderr.contains("scope.signal"), "{stderr}");
        assert_eq!(std::fs::read_to_string(&cfg).unwrap(), text);
        assert!(!starter.exists());

        let out = wrap_as_user(&cfg, &dir, true);
        assert!(out.status.success(), "{}", describe(&out));
        let policy = mcpguard::policy::Policy::load(&starter).unwrap();
        let mut names: Vec<&str> = policy
            .kernel
            .accept_weaker
            .iter()
            .map(|c| c.name())
            .collect();
        names.sort();
        assert_eq!(names, ["scope.abstract_unix_socket", "scope.signal"]);
    }
    let _ = std::fs::remove_dir_all(&work);
}
