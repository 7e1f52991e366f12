//! One daemon per cgroup tree and per socket: a second daemon for either
//! refuses before it touches anything, and a killed daemon's locks do not
//! outlive it.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::harness::*;

/// `mcpguard daemon` on `socket` with cgroup tree `cgroup`, stderr to a
/// file in `dir`: (child, stderr path).
fn spawn_daemon(dir: &Path, socket: &Path, cgroup: &str) -> (Child, PathBuf) {
    let stderr = dir.join(format!("{cgroup}.stderr"));
    let child = Command::new(bin())
        .args(["daemon", "--socket"])
        .arg(socket)
        .arg("--audit-log")
        .arg(dir.join(format!("{cgroup}-audit/audit.jsonl")))
        .arg("--cgroup-name")
        .arg(cgroup)
        .env("MCPGUARD_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn daemon");
    (child, stderr)
}

/// Waits (up to 30 s) for a daemon that must refuse to start; returns its
/// stderr.
fn refused(mut child: Child, stderr: &Path) -> String {
    let status = wait_exit(
        &mut child,
        Duration::from_secs(30),
        "the second daemon did not exit",
        stderr,
    );
    let text = std::fs::read_to_string(stderr).unwrap_or_default();
    assert!(!status.success(), "the second daemon exited 0:\n{text}");
    text
}

fn cgroup_dir(name: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(name)
}

fn pin_dir(name: &str) -> PathBuf {
    Path::new("/sys/fs/bpf/mcpguard").join(name)
}

/// The test's own cgroup tree name (the harness daemons use
/// `mcpguard-it-<pid>`).
fn own_tree(tag: &str) -> String {
    format!("mcpguard-it-{}-{tag}", std::process::id())
}

#[test]
fn a_second_daemon_on_the_same_cgroup_tree_refuses_and_leaves_the_first_ones_servers_alone() {
    let d = Daemon::start();
    let pol = simple_policy("exclusive-tree", &[]);
    let mut client = d
        .run_cmd(&pol, &["/usr/bin/cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let mut stdout = BufReader::new(client.stdout.take().unwrap());
    let launch = d.wait_record("the cat server's launch", |r| {
        is_kind(r, "launch") && r["server"] == "it-exclusive-tree"
    });
    let pid = launch["pid"].as_u64().unwrap() as u32;

    let dir = tempdir("exclusive-tree");
    let tree = format!("mcpguard-it-{}", std::process::id());
    let (b, stderr) = spawn_daemon(&dir, &dir.join("b.sock"), &tree);
    let text = refused(b, &stderr);
    assert!(
        text.contains(&format!("holds cgroup tree \"{tree}\""))
            && text.contains(&format!("pid {}", d.child.as_ref().unwrap().id())),
        "the refusal does not name the tree and the holder:\n{text}"
    );
    assert!(
        !text.contains("removed cgroups left by a previous daemon"),
        "{text}"
    );
    assert!(
        !dir.join("b.sock").exists(),
        "the refused daemon bound its socket"
    );

    assert!(alive(pid), "the first daemon's server was killed");
    stdin.write_all(b"still here\n").unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "still here\n", "the server stopped answering");
    drop(stdin);
    assert!(client.wait().unwrap().success());
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_and_creates_no_cgroup_or_pins() {
    let d = Daemon::start();
    let dir = tempdir("exclusive-socket");
    let tree = own_tree("sock");
    assert!(!cgroup_dir(&tree).exists() && !pin_dir(&tree).exists());
    let (b, stderr) = spawn_daemon(&dir, &d.socket, &tree);
    let text = refused(b, &stderr);
    assert!(
        text.contains(&format!("holds socket {}", d.socket.display()))
            && text.contains(&format!("pid {}", d.child.as_ref().unwrap().id())),
        "the refusal does not name the socket and the holder:\n{text}"
    );
    assert!(
        !cgroup_dir(&tree).exists(),
        "the refused daemon made a cgroup tree"
    );
    assert!(
        !pin_dir(&tree).exists(),
        "the refused daemon made a pin directory"
    );
    // The first daemon still serves its socket.
    let out = d.run(&simple_policy("exclusive-socket", &[]), &["/usr/bin/true"]);
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn a_sigkilled_daemons_locks_go_with_it() {
    let dir = tempdir("exclusive-kill");
    let socket = dir.join("k.sock");
    let tree = own_tree("kill");
    let (mut a, a_err) = spawn_daemon(&dir, &socket, &tree);
    wait_listening(&mut a, &socket, &a_err);
    a.kill().unwrap();
    a.wait().unwrap();

    let b_dir = tempdir("exclusive-kill-b");
    let (mut b, b_err) = spawn_daemon(&b_dir, &socket, &tree);
    // The killed daemon left its socket file: wait for the new one.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&b_err)
        .unwrap_or_default()
        .contains("mcpguard daemon ready")
    {
        if let Some(status) = b.try_wait().unwrap() {
            panic!(
                "the successor exited with {status}:\n{}",
                std::fs::read_to_string(&b_err).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "the successor did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = stop_daemon(b, &b_err);
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&b_err).unwrap_or_default()
    );
    let _ = std::fs::remove_dir(cgroup_dir(&tree));
}
