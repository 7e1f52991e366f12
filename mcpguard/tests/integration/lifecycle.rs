//! Launch lifecycle: identity, environment, stdio and exit-status relay,
//! signal forwarding, teardown when either side dies, bad policies, floods.

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::Stdio,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

use crate::harness::*;

fn wait_dead(pids: &[u32], within: Duration) {
    let deadline = Instant::now() + within;
    while pids.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "processes still alive: {pids:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn server_runs_as_the_caller_with_no_new_privs_and_only_the_passed_env() {
    let d = Daemon::start();
    let pol = simple_policy("ident", &[]);
    let script = "import os\n\
        print('uid', os.getuid(), os.geteuid())\n\
        print('gid', os.getgid(), os.getegid())\n\
        print('nnp', [l.split()[1] for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0])\n\
        print('env', ','.join(sorted(os.environ)))\n";
    let out = d
        .run_cmd(&pol, &["/usr/bin/python3", "-c", script])
        .env("LEAKY_TOKEN", "hunter2")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = stdout_of(&out);
    let u = user();
    assert!(
        text.contains(&format!("uid {} {}", u.uid, u.uid)),
        "{}",
        describe(&out)
    );
    assert!(
        text.contains(&format!("gid {} {}", u.gid, u.gid)),
        "{}",
        describe(&out)
    );
    assert!(text.contains("nnp 1"), "{}", describe(&out));
    let env_line = text
        .lines()
        .find(|l| l.starts_with("env "))
        .expect("env line");
    assert!(
        !env_line.contains("LEAKY_TOKEN"),
        "unlisted env var reached the server: {env_line}"
    );
    assert!(
        !env_line.contains("LANG"),
        "unlisted env var reached the server: {env_line}"
    );
    assert!(
        env_line.contains("PATH") && env_line.contains("HOME"),
        "{env_line}"
    );
    // Launching as root is refused outright.
    let root = std::process::Command::new(bin())
        .args(["run", "--socket"])
        .arg(&d.socket)
        .arg("--policy")
        .arg(&pol)
        .args(["--", "/bin/true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(root.status.code(), Some(126), "{}", describe(&root));
    assert!(
        String::from_utf8_lossy(&root.stderr).contains("as root"),
        "{}",
        describe(&root)
    );
}

#[test]
fn stdio_is_relayed_byte_for_byte_and_the_exit_status_comes_back() {
    let d = Daemon::start();
    let pol = simple_policy("stdio", &[]);
    let mut child = d
        .run_cmd(&pol, &["/bin/cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // The MCP stdio transport is newline-delimited: a message written in
    // pieces goes through whole, byte for byte, once its newline arrives;
    // so do lines that are not JSON, and an unterminated last line at EOF.
    let msg = b"{\"jsonrpc\":\"2.0\", \"id\":1,\"method\":\"ping\"}\n";
    stdin.write_all(&msg[..17]).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    stdin.write_all(&msg[17..]).unwrap();
    let raw = b"not json \xff\n";
    stdin.write_all(raw).unwrap();
    stdin.write_all(b"tail").unwrap();
    stdin.flush().unwrap();
    let mut buf = vec![0u8; msg.len() + raw.len()];
    stdout.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..msg.len()], msg);
    assert_eq!(&buf[msg.len()..], raw);
    drop(stdin); // EOF ends cat
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"tail");
    let status = child.wait().unwrap();
    assert!(status.success(), "cat under guard exited {status}");

    let out = d.run(&pol, &["/bin/sh", "-c", "echo oops >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    d.wait_record("server_exit with code 7", |r| {
        is_kind(r, "server_exit") && r["server"] == "it-stdio" && r["exit_code"] == 7
    });
}

#[test]
fn sigterm_to_run_is_forwarded_to_the_server() {
    let d = Daemon::start();
    let pol = simple_policy("signal", &[]);
    // The handler writes with os.write: a SIGTERM landing while `print`
    // still holds stdout's buffer lock would make a second `print`
    // re-enter it ("reentrant call inside BufferedWriter").
    let script = "import os, signal, sys, time\n\
        def h(*a):\n    os.write(1, b'got TERM\\n'); sys.exit(3)\n\
        signal.signal(signal.SIGTERM, h)\n\
        print('ready', flush=True)\n\
        time.sleep(60)\n";
    let mut child = d
        .run_cmd(&pol, &["/usr/bin/python3", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "got TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
}

#[test]
fn killing_run_kills_the_server_and_all_its_children() {
    let d = Daemon::start();
    let pol = simple_policy("orphan", &[]);
    let mut child = d
        .run_cmd(
            &pol,
            &[
                "/bin/sh",
                "-c",
                "sleep 300 & echo $!; sh -c 'sleep 300' & echo $!; echo $$; wait",
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pids: Vec<u32> = (0..3)
        .map(|_| lines.next().unwrap().unwrap().trim().parse().unwrap())
        .collect();
    assert!(
        pids.iter().all(|p| alive(*p)),
        "server processes not running: {pids:?}"
    );
    child.kill().unwrap(); // SIGKILL: no chance to forward anything
    child.wait().unwrap();
    wait_dead(&pids, Duration::from_secs(5));
    d.wait_record("server_exit after the client died", |r| {
        is_kind(r, "server_exit") && r["server"] == "it-orphan"
    });
}

#[test]
fn a_malformed_policy_is_refused_with_its_location_and_launches_nothing() {
    let d = Daemon::start();
    let dir = tempdir("bad");
    let pol = policy(
        &dir,
        "bad",
        "name = \"it-bad\"\n[filesystem]\nreed = [\"/usr\"]\n",
    );
    let out = d.run(&pol, &["/bin/true"]);
    assert_eq!(out.status.code(), Some(126), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3:"),
        "error must name file:line: {err}"
    );
    assert!(err.contains("reed"), "error must name the bad key: {err}");
    let pol2 = policy(
        &dir,
        "badnet",
        "name = \"it-bad\"\n[network]\nallow = [\"300.1.2.3:80\"]\n",
    );
    let out = d.run(&pol2, &["/bin/true"]);
    assert_eq!(out.status.code(), Some(126), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("300.1.2.3"),
        "{}",
        describe(&out)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !d.records().iter().any(|r| r["server"] == "it-bad"),
        "a refused policy must launch nothing"
    );
}

#[test]
fn daemon_sigterm_stops_every_server_and_removes_their_cgroups() {
    let mut d = Daemon::start();
    let pol = simple_policy("shutdown", &[]);
    let mut child = d
        .run_cmd(&pol, &["/bin/sh", "-c", "echo $$; exec sleep 300"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid: u32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    let launch = d.wait_record("launch", |r| {
        is_kind(r, "launch") && r["server"] == "it-shutdown"
    });
    let cgroup = std::path::PathBuf::from(launch["cgroup"].as_str().unwrap());
    assert!(cgroup.exists());
    let status = d.stop();
    assert!(status.success(), "daemon exit {status}:\n{}", d.stderr());
    wait_dead(&[pid], Duration::from_secs(5));
    assert!(
        !cgroup.exists(),
        "server cgroup {} left behind",
        cgroup.display()
    );
    let _ = child.wait();
    assert!(
        d.records()
            .iter()
            .any(|r| is_kind(r, "daemon") && r["event"] == "stop"),
        "no daemon stop record"
    );
}

#[test]
fn an_event_flood_yields_loss_records_and_the_daemon_keeps_serving() {
    let mut d = Daemon::start_with(&["--ring-buffer-bytes", "65536"]);
    let pol = simple_policy("flood", &[]);
    // Failed opens outside a tool call reach the ring buffer at `all` only.
    record_all_files(&pol);
    let script = "import os\n\
        for i in range(300000):\n\
        \x20   try:\n\
        \x20       os.open('/nonexistent/flood', os.O_RDONLY)\n\
        \x20   except OSError:\n\
        \x20       pass\n\
        print('done')\n";
    let out = d.run(&pol, &["/usr/bin/python3", "-c", script]);
    assert!(stdout_of(&out).contains("done"), "{}", describe(&out));
    let loss = d.wait_record("loss record", |r| {
        is_kind(r, "loss") && r["server"] == "it-flood" && r["lost"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(loss["source"], "ringbuf");
    // Still serving.
    let out = d.run(&pol, &["/bin/sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert!(d.stop().success());
}

#[test]
fn a_guarded_server_cannot_launch_another_server_through_the_daemon() {
    let d = Daemon::start();
    let dir = tempdir("nested");
    // The server may run the mcpguard binary and read its policies, so the
    // only thing in the way is the daemon's own check.
    let pol = policy(
        &dir,
        "nested",
        &format!(
            "name = \"it-nested\"\n{}\n[env]\npass = [\"PATH\"]\n",
            base_fs(&[scratch()]).replace(
                "exec = [",
                &format!("exec = [{:?}, ", scratch().display().to_string())
            )
        ),
    );
    let out = d.run(
        &pol,
        &[
            bin().to_str().unwrap(),
            "run",
            "--socket",
            d.socket.to_str().unwrap(),
            "--policy",
            pol.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            "echo escaped",
        ],
    );
    assert_eq!(out.status.code(), Some(126), "{}", describe(&out));
    assert!(!stdout_of(&out).contains("escaped"), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("inside a guarded server"),
        "{}",
        describe(&out)
    );
    // Exactly one launch: the outer server.
    std::thread::sleep(Duration::from_millis(300));
    let launches = d.records().iter().filter(|r| is_kind(r, "launch")).count();
    assert_eq!(launches, 1, "the nested request must launch nothing");
}

/// A server whose child keeps trying a denied connect and logs each
/// outcome to `log`: (policy, script).
fn orphan_policy(tag: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir(tag);
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = dir.join("orphan.py");
    std::fs::write(
        &script,
        r#"import os, socket, sys, time
port, log = int(sys.argv[1]), sys.argv[2]
# Opened once, before the pids are printed and the daemon is killed: with
# the daemon gone, creating opens fail closed (the persistence fence has no
# one to answer), and this test is about connects.
f = open(log, "a", buffering=1)
child = os.fork()
if child == 0:
    os.setsid()
    while True:
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            r = "connected"
        except OSError as e:
            r = "errno%d" % e.errno
        s.close()
        f.write("%f %s\n" % (time.time(), r))
        time.sleep(0.05)
print(os.getpid(), child, flush=True)
os.execv("/usr/bin/sleep", ["sleep", "300"])
"#,
    )
    .unwrap();
    let fs = base_fs(&[&script]).replace(
        "write = [\"/dev/null\"]",
        &format!("write = [\"/dev/null\", {:?}]", out.display().to_string()),
    );
    let pol = policy(
        &dir,
        tag,
        &format!("name = \"it-{tag}\"\n{fs}\n[env]\npass = [\"PATH\", \"HOME\"]\n"),
    );
    (pol, script, out.join("log"))
}

#[test]
fn a_killed_daemon_leaves_no_server_unguarded_and_its_successor_cleans_up() {
    let mut d = Daemon::start();
    let (pol, script, log) = orphan_policy("orphaned");
    let denied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    denied.set_nonblocking(true).unwrap();
    let port = denied.local_addr().unwrap().port().to_string();
    let mut client = d
        .run_cmd(
            &pol,
            &[
                "/usr/bin/python3",
                script.to_str().unwrap(),
                &port,
                log.to_str().unwrap(),
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let (main, child) = line.trim().split_once(' ').unwrap();
    let (main, child): (u32, u32) = (main.parse().unwrap(), child.parse().unwrap());
    assert!(alive(main) && alive(child));
    let pins = std::path::Path::new("/sys/fs/bpf/mcpguard")
        .join(format!("mcpguard-it-{}", std::process::id()));
    assert!(
        pins.join("connect4").exists(),
        "egress links are not pinned in {}",
        pins.display()
    );

    // SIGKILL: no shutdown path runs; tracepoints and resolvers go with
    // the daemon, the pinned egress programs stay.
    let mut daemon = d.child.take().unwrap();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // The main process dies of its parent-death signal ...
    wait_dead(&[main], Duration::from_secs(5));
    let _ = client.wait();
    // ... and what it forked stays confined: its connects keep failing.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(alive(child), "the orphaned child should still be running");
    let text = std::fs::read_to_string(&log).unwrap();
    let after: Vec<&str> = text
        .lines()
        .filter(|l| l.split(' ').next().and_then(|t| t.parse::<f64>().ok()) > Some(killed_at))
        .collect();
    assert!(after.len() >= 5, "the child stopped trying: {text}");
    assert!(
        after.iter().all(|l| l.ends_with("errno1")),
        "a connect after the daemon died was not refused with EPERM: {after:?}"
    );
    assert!(
        denied.accept().is_err(),
        "the denied listener accepted a connection"
    );

    // The next daemon kills what is left and replaces the pins.
    let d2 = Daemon::start();
    wait_dead(&[child], Duration::from_secs(10));
    let stderr = d2.stderr();
    assert!(
        stderr.contains("removed cgroups left by a previous daemon"),
        "{stderr}"
    );
    assert!(
        stderr.contains("removed enforcement links pinned by a previous daemon"),
        "{stderr}"
    );
    assert!(pins.join("connect4").exists());
    drop(d2);
    assert!(!pins.exists(), "a clean stop leaves pins behind");
}
