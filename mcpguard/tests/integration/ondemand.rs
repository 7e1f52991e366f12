//! The syscall tracepoints are attached only while a server runs (they tax
//! every task on the machine while attached), read from the kernel: the
//! perf links in the daemon's descriptor table whose `fdinfo` names a
//! `sys_*` tracepoint. And a server's first acts are recorded although the
//! attach happened just before it started.

use std::{os::unix::fs::PermissionsExt, path::Path, process::Stdio, time::Duration};

use crate::harness::*;

/// The daemon's perf links on `syscalls/sys_*` tracepoints, as the kernel
/// lists them (`tp_name:` in `/proc/<pid>/fdinfo/<fd>`).
fn syscall_links(pid: u32) -> usize {
    let dir = format!("/proc/{pid}/fdinfo");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .filter(|entry| {
            std::fs::read_to_string(entry.path())
                .unwrap_or_default()
                .lines()
                .any(|l| {
                    l.strip_prefix("tp_name:")
                        .is_some_and(|t| t.trim().starts_with("sys_"))
                })
        })
        .count()
}

/// The `syscall_tracepoints` line of `mcpguard status --json`.
fn status_line(d: &Daemon) -> String {
    let out = d.cli(&["status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layer = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == "syscall_tracepoints")
        .unwrap_or_else(|| panic!("no syscall_tracepoints layer: {report:#}"))
        .clone();
    assert_eq!(layer["active"], true, "{layer}");
    layer["detail"].as_str().unwrap().to_owned()
}

fn daemon_pid(d: &Daemon) -> u32 {
    d.child.as_ref().expect("daemon running").id()
}

#[test]
fn syscall_tracepoints_are_attached_only_while_a_server_runs() {
    let d = Daemon::start();
    let pid = daemon_pid(&d);
    assert_eq!(
        syscall_links(pid),
        0,
        "an idle daemon must hold no syscall tracepoint"
    );
    assert!(
        status_line(&d).starts_with("detached"),
        "{}",
        status_line(&d)
    );

    let pol = simple_policy("ondemand", &[]);
    let mut server = d
        .run_cmd(&pol, &["/bin/sleep", "30"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    d.wait_record("launch of the sleeper", |r| {
        is_kind(r, "launch") && r["server"] == "it-ondemand"
    });
    let attached = syscall_links(pid);
    assert!(
        attached >= 40,
        "a running server needs the syscall tracepoints (the kernel lists {attached} links)"
    );
    let line = status_line(&d);
    assert!(line.starts_with("attached (1 holder;"), "{line}");

    server.kill().unwrap();
    server.wait().unwrap();
    // The server is gone: the links leave the table, and the detach ends.
    poll(Duration::from_secs(30), || {
        (syscall_links(pid) == 0).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{} syscall tracepoint links 30 s after the server ended\n{}",
            syscall_links(pid),
            d.stderr()
        )
    });
    poll(Duration::from_secs(60), || {
        status_line(&d).starts_with("detached").then_some(())
    })
    .unwrap_or_else(|| panic!("status still says {:?}\n{}", status_line(&d), d.stderr()));
}

/// A directory the test user may write into (so only the guard refuses),
/// and a file it may read (so only the guard refuses).
fn outside() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = tempdir("ondemand-outside");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let secret = dir.join("secret.txt");
    std::fs::write(&secret, "not for the server\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    (dir, secret)
}

fn denied_open(r: &serde_json::Value, launch: &str, path: &Path, errno: &str) -> bool {
    is_kind(r, "open")
        && r["launch"] == launch
        && r["path"] == path.to_str().unwrap()
        && r["errno"] == errno
        && r["denied"] == true
}

#[test]
fn a_servers_first_denials_are_recorded_though_the_tracepoints_attach_just_before_it() {
    let d = Daemon::start();
    let pol = simple_policy("ondemand-first", &[]);
    let (dir, secret) = outside();
    // Its very first acts: a write outside its grants, a read outside them.
    // The first run attaches from nothing; the second starts while the
    // first one's detach runs (and cancels it).
    for round in 0..2 {
        let written = dir.join(format!("written-{round}"));
        let script = format!("echo x > {}; cat {}", written.display(), secret.display());
        let out = d.run(&pol, &["/bin/sh", "-c", &script]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            err.contains("Read-only file system") && err.contains("Permission denied"),
            "the write must fail with EROFS and the read with EACCES\n{}",
            describe(&out)
        );
        assert!(!written.exists(), "{} was written", written.display());
        // A fresh daemon numbers its launches from 1.
        let launch = format!("it-ondemand-first-{}", round + 1);
        d.wait_record("launch", |r| {
            is_kind(r, "launch") && r["launch"] == launch.as_str()
        });
        d.wait_record("the shell's exec", |r| {
            is_kind(r, "exec") && r["launch"] == launch.as_str() && r["filename"] == "/bin/sh"
        });
        d.wait_record("the refused write (EROFS)", |r| {
            denied_open(r, &launch, &written, "EROFS")
        });
        d.wait_record("the refused read (EACCES)", |r| {
            denied_open(r, &launch, &secret, "EACCES")
        });
    }
}
