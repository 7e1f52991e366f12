//! Escape classes 3 (exec tricks) and 5 (kernel-interface tricks), and the
//! namespace, mount and chroot rows of class 2, all run by the hostile
//! program `tests/escape/kernel.c`.
//!
//! The layers under test: the launcher's seccomp fence (io_uring, bpf,
//! perf, userfaultfd, keyrings, namespaces, mounts, executable memfds), the
//! noexec runtime tmpfs mounts, Landlock's exec rules and its ptrace and
//! signal scoping, no_new_privs, and the daemon's fd hygiene. The records:
//! `syscall` (the watched-syscall tracepoints), `exec`, `open` and the
//! `launch` record's fd list.

use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Output, Stdio},
};

use serde_json::Value;

use super::{attack, hostile, hostile_dir, report, Class, Row, AUDIT_ALL};
use crate::harness::{describe, policy, stdout_of, tempdir, user, Daemon};

/// A policy for the hostile program: system dirs, /proc, the hostile dir
/// to exec from, and writable /tmp and /dev/shm (the server's own, empty).
fn hostile_policy(tag: &str, kernel_allow: &[&str]) -> PathBuf {
    let dir = tempdir(tag);
    let h = hostile_dir().display().to_string();
    let allow: Vec<String> = kernel_allow.iter().map(|f| format!("{f:?}")).collect();
    policy(
        &dir,
        tag,
        &format!(
            r#"name = "it-{tag}"
[filesystem]
read = ["/usr", "/lib", "/lib64", "/etc/ld.so.cache", "/proc", "{h}"]
write = ["/dev/null", "/tmp", "/dev/shm"]
exec = ["/usr/bin", "/usr/lib", "/lib", "/lib64", "/bin", "{h}"]
[env]
pass = ["PATH", "HOME"]
[kernel]
allow = [{}]
{AUDIT_ALL}"#,
            allow.join(", ")
        ),
    )
}

/// Runs `kernel <args>` under `policy`; returns attack → outcome.
fn run_kernel(d: &Daemon, policy: &Path, args: &[&str]) -> (HashMap<String, String>, Output) {
    let out = attack(d, policy, "kernel", args);
    assert!(
        out.status.success(),
        "hostile program failed: {}",
        describe(&out)
    );
    let results = stdout_of(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .filter_map(|l| l.split_once(' '))
        .map(|(a, r)| (a.to_owned(), r.to_owned()))
        .collect();
    (results, out)
}

fn outcome<'a>(results: &'a HashMap<String, String>, attack: &str) -> &'a str {
    results.get(attack).map_or("(no result)", String::as_str)
}

/// The first record of `server` matching `pred`, as evidence text.
fn find(records: &[Value], server: &str, pred: impl Fn(&Value) -> bool) -> Option<String> {
    records
        .iter()
        .filter(|r| r["server"] == format!("it-{server}"))
        .find(|r| pred(r))
        .map(|r| {
            let mut r = r.clone();
            if let Some(o) = r.as_object_mut() {
                for noisy in ["ts", "v", "policy", "launch", "tid", "uid"] {
                    o.remove(noisy);
                }
            }
            r.to_string()
        })
}

/// The log once `runs` runs of `server` have exited and the ring buffer
/// has had time to drain their kernel records.
fn settled_records(d: &Daemon, server: &str, runs: usize) -> Vec<Value> {
    let name = format!("it-{server}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while d
        .records()
        .iter()
        .filter(|r| r["kind"] == "server_exit" && r["server"] == name.as_str())
        .count()
        < runs
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{runs} server_exit records of {name} never came"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Kernel records travel through the ring buffer, polled every few ms.
    std::thread::sleep(std::time::Duration::from_millis(500));
    d.records()
}

/// A failed `syscall` record of `name`.
fn denied_syscall(records: &[Value], server: &str, name: &str) -> Option<String> {
    find(records, server, |r| {
        r["kind"] == "syscall" && r["name"] == name && r["result"].as_i64() < Some(0)
    })
}

/// One row: blocked when the hostile program saw `errno`, recorded when
/// `evidence` found a record.
fn row(
    results: &HashMap<String, String>,
    name: &str,
    attack: &str,
    errno: &str,
    evidence: Option<String>,
) -> Row {
    let got = outcome(results, attack);
    Row::new(
        name,
        got == errno,
        evidence.is_some(),
        format!(
            "{attack}: {got}; record: {}",
            evidence.as_deref().unwrap_or("none")
        ),
    )
}

#[test]
fn exec_tricks_are_blocked_and_recorded() {
    let mut d = Daemon::start();
    let p = hostile_policy("esc-exec", &[]);
    let (memfd, _) = run_kernel(&d, &p, &["memfd"]);
    let (tmp, _) = run_kernel(&d, &p, &["tmpexec", "/tmp"]);
    let (shm, _) = run_kernel(&d, &p, &["tmpexec", "/dev/shm"]);

    // A setuid-root copy of the hostile program reports its euid.
    let suid = hostile_dir().join("kernel-suid");
    std::fs::copy(hostile("kernel"), &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let (setuid, _) = run_kernel(&d, &p, &["setuid", suid.to_str().unwrap()]);

    // A sibling server and its `mcpguard run` client: outside this
    // server's Landlock domain, same uid.
    let sibling_policy = hostile_policy("esc-sibling", &[]);
    let mut sibling = d
        .run_cmd(&sibling_policy, &["/usr/bin/sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let launch = d.wait_record("sibling launch", |r| {
        r["kind"] == "launch" && r["server"] == "it-esc-sibling"
    });
    let client = sibling.id().to_string();
    let server = launch["pid"].as_u64().unwrap().to_string();
    let (outside, _) = run_kernel(&d, &p, &["outside", &client, &server]);
    let sibling_alive = sibling.try_wait().unwrap().is_none();
    let _ = sibling.kill();
    let _ = sibling.wait();

    let rec = settled_records(&d, "esc-exec", 5);
    let s = "esc-exec";
    let exec_denied = |path_pred: &dyn Fn(&str) -> bool| {
        find(&rec, s, |r| {
            r["kind"] == "exec"
                && r["result"].as_i64() < Some(0)
                && path_pred(r["filename"].as_str().unwrap_or(""))
        })
    };
    let uid = user().uid;
    let mut rows = vec![
        row(
            &memfd,
            "memfd_create without MFD_NOEXEC_SEAL",
            "memfd_create",
            "EPERM",
            denied_syscall(&rec, s, "memfd_create"),
        ),
        row(
            &memfd,
            "memfd_create with MFD_EXEC",
            "memfd_create_exec",
            "EPERM",
            denied_syscall(&rec, s, "memfd_create"),
        ),
        row(
            &memfd,
            "sealed memfd run with execveat(AT_EMPTY_PATH)",
            "memfd_sealed_execveat",
            "EACCES",
            exec_denied(&|f| f.is_empty()),
        ),
        row(
            &memfd,
            "sealed memfd run through /proc/self/fd/N",
            "memfd_sealed_proc_exec",
            "EACCES",
            exec_denied(&|f| f.starts_with("/proc/self/fd/")),
        ),
        row(
            &tmp,
            "exec of a binary the server wrote to /tmp",
            "exec/tmp",
            "EACCES",
            exec_denied(&|f| f == "/tmp/payload"),
        ),
        row(
            &shm,
            "exec of a binary the server wrote to /dev/shm",
            "exec/dev/shm",
            "EACCES",
            exec_denied(&|f| f == "/dev/shm/payload"),
        ),
    ];
    let euid = outcome(&setuid, "euid");
    let suid_path = suid.display().to_string();
    rows.push(Row::new(
        "setuid-root binary gains no privilege (no_new_privs)",
        euid == uid.to_string(),
        find(&rec, s, |r| {
            r["kind"] == "exec" && r["filename"] == suid_path.as_str() && r["result"] == 0
        })
        .is_some(),
        format!("euid after exec: {euid} (server uid {uid}); record: exec of {suid_path}"),
    ));
    for (who, pid) in [
        ("the mcpguard run client", &client),
        ("a sibling server", &server),
    ] {
        rows.push(row(
            &outside,
            &format!("ptrace of {who}"),
            &format!("ptrace_attach_{pid}"),
            "EPERM",
            denied_syscall(&rec, s, "ptrace"),
        ));
        rows.push(row(
            &outside,
            &format!("kill() to {who}"),
            &format!("kill_{pid}"),
            "EPERM",
            denied_syscall(&rec, s, "kill"),
        ));
        rows.push(row(
            &outside,
            &format!("process_vm_readv of {who}"),
            &format!("process_vm_readv_{pid}"),
            "EPERM",
            denied_syscall(&rec, s, "process_vm_readv"),
        ));
        rows.push(row(
            &outside,
            &format!("pidfd_send_signal to {who}"),
            &format!("pidfd_signal_{pid}"),
            "EPERM",
            denied_syscall(&rec, s, "pidfd_send_signal"),
        ));
    }
    report(Class::ExecTricks, &rows);
    assert!(sibling_alive, "the sibling server died during the attack");
    d.stop();
}

#[test]
fn kernel_interface_tricks_are_blocked_and_recorded() {
    let mut d = Daemon::start();
    let p = hostile_policy("esc-kernel", &[]);
    let (k, _) = run_kernel(&d, &p, &["kernel"]);
    let (fds, fds_out) = run_kernel(&d, &p, &["fds"]);
    // Where a policy allows io_uring, requests through the ring are still
    // decided by Landlock and the egress programs, and recorded.
    let secret = user().home.join("escape-uring-secret");
    std::fs::write(&secret, "secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let denied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    denied.set_nonblocking(true).unwrap();
    let port = denied.local_addr().unwrap().port();
    let pu = hostile_policy("esc-uring", &["io_uring"]);
    let (uring, _) = run_kernel(
        &d,
        &pu,
        &["uring", secret.to_str().unwrap(), &port.to_string()],
    );
    let connected = denied.accept().is_ok();
    settled_records(&d, "esc-uring", 1);
    let rec = settled_records(&d, "esc-kernel", 2);
    let s = "esc-kernel";
    let mut rows = Vec::new();
    for (name, attack, syscall) in [
        (
            "io_uring (io_uring_setup)",
            "io_uring_setup",
            "io_uring_setup",
        ),
        ("bpf()", "bpf", "bpf"),
        ("perf_event_open()", "perf_event_open", "perf_event_open"),
        ("userfaultfd()", "userfaultfd", "userfaultfd"),
        ("kernel keyrings (keyctl)", "keyctl", "keyctl"),
        (
            "prctl: raise an ambient capability",
            "prctl_cap_ambient_raise",
            "prctl",
        ),
        ("prctl: rewrite the memory map", "prctl_set_mm", "prctl"),
    ] {
        rows.push(row(
            &k,
            name,
            attack,
            "EPERM",
            denied_syscall(&rec, s, syscall),
        ));
    }
    for (name, attack) in [
        ("write the cgroup2 root's cgroup.procs", "cgroup_procs_root"),
        (
            "write the parent cgroup's cgroup.procs",
            "cgroup_procs_parent",
        ),
    ] {
        rows.push(row(
            &k,
            name,
            attack,
            "EACCES",
            find(&rec, s, |r| {
                r["kind"] == "open"
                    && r["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with("cgroup.procs"))
                    && r["result"] == -13
            }),
        ));
    }
    let u = "esc-uring";
    let submitted = |op: &str| find(&rec, u, |r| r["kind"] == "io_uring" && r["op"] == op);
    let mut open_row = row(
        &uring,
        "io_uring allowed by policy: IORING_OP_OPENAT of a file outside the policy",
        "uring_openat",
        "EACCES",
        submitted("openat"),
    );
    open_row.evidence += " (the io_uring record; the result is Landlock's)";
    rows.push(open_row);
    let mut connect_row = row(
        &uring,
        "io_uring allowed by policy: IORING_OP_CONNECT to a denied address",
        "uring_connect",
        "EPERM",
        find(&rec, u, |r| {
            r["kind"] == "connect" && r["port"] == port && r["verdict"] == "deny"
        })
        .filter(|_| submitted("connect").is_some()),
    );
    connect_row.blocked &= !connected;
    rows.push(connect_row);
    let launch = find(&rec, s, |r| {
        r["kind"] == "launch" && r["layers"]["fds"] == serde_json::json!([0, 1, 2])
    });
    rows.push(Row::new(
        "fd inheritance: nothing of the daemon's leaks into the server",
        outcome(&fds, "fds_beyond_stdio") == "0",
        launch.is_some(),
        format!(
            "fds beyond stdio: {} ({}); record: launch with layers.fds = [0, 1, 2]",
            outcome(&fds, "fds_beyond_stdio"),
            stdout_of(&fds_out).trim().replace('\n', "; ")
        ),
    ));
    report(Class::KernelInterfaces, &rows);
    d.stop();
}

#[test]
fn namespace_mount_and_chroot_tricks_are_blocked_and_recorded() {
    let mut d = Daemon::start();
    let p = hostile_policy("esc-ns", &[]);
    let (ns, _) = run_kernel(&d, &p, &["ns"]);
    let rec = settled_records(&d, "esc-ns", 1);
    let s = "esc-ns";
    let rows: Vec<Row> = [
        (
            "unprivileged user namespace (unshare)",
            "unshare_user",
            "unshare",
        ),
        (
            "private mount namespace (unshare)",
            "unshare_mount",
            "unshare",
        ),
        (
            "private network namespace (unshare)",
            "unshare_net",
            "unshare",
        ),
        (
            "user namespace through clone(CLONE_NEWUSER)",
            "clone_newuser",
            "clone",
        ),
        ("mount a tmpfs over /tmp", "mount_tmpfs", "mount"),
        ("bind-mount / somewhere readable", "mount_bind", "mount"),
        ("chroot", "chroot", "chroot"),
        ("setns into another mount namespace", "setns", "setns"),
    ]
    .into_iter()
    .map(|(name, attack, syscall)| {
        let errno = if attack == "setns" {
            // /proc/1/ns/mnt may already be refused at open: pid 1 is not
            // even visible in the server's private /proc (ENOENT), or the
            // open is refused (EACCES, ptrace scoping). Any refusal counts;
            // the record is setns's or the failed open's.
            match outcome(&ns, attack) {
                "EACCES" => "EACCES",
                "ENOENT" => "ENOENT",
                _ => "EPERM",
            }
        } else {
            "EPERM"
        };
        let evidence = denied_syscall(&rec, s, syscall).or_else(|| {
            (attack == "setns")
                .then(|| {
                    find(&rec, s, |r| {
                        r["kind"] == "open"
                            && r["path"] == "/proc/1/ns/mnt"
                            && r["result"].as_i64().is_some_and(|v| v < 0)
                    })
                })
                .flatten()
        });
        row(&ns, name, attack, errno, evidence)
    })
    .collect();
    report(Class::PathTricks, &rows);
    d.stop();
}
