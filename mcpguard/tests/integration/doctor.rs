//! `mcpguard doctor` as the unprivileged test user against a real daemon:
//! every class held and recorded on this kernel, the `--json` shape, the
//! exit status without a daemon, and a real "missing" (an audit log on a
//! filesystem gone read-only: every denial still held, none recorded).

use std::{os::unix::process::CommandExt, process::Output};

use serde_json::Value;

use crate::{
    faults::{daemon_logging_on, Mount},
    harness::*,
};

/// The classes doctor probes, in its order.
const CLASSES: &[&str] = &[
    "read",
    "connect",
    "name",
    "exec",
    "chmod",
    "signal",
    "abstract_unix",
];

fn doctor(d: &Daemon, args: &[&str]) -> Output {
    let u = user();
    let mut all = vec!["doctor"];
    all.extend_from_slice(args);
    d.cli_as(u.uid, u.gid, &all)
}

/// Doctor leaves no probe directory in the user's home and no server
/// running.
fn assert_nothing_left(d: &Daemon) {
    let left: Vec<_> = std::fs::read_dir(&user().home)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".mcpguard-doctor-")
        })
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "doctor left {left:?}");
    // The server has exited when doctor returns; the daemon drops it from
    // its table as it finishes the session.
    let u = user();
    let servers = || {
        let out = d.cli_as(u.uid, u.gid, &["status", "--json"]);
        let status: Value = serde_json::from_slice(&out.stdout).unwrap();
        status["servers"].clone()
    };
    let gone = poll(std::time::Duration::from_secs(5), || {
        (servers() == Value::Array(vec![])).then_some(())
    });
    assert!(
        gone.is_some(),
        "the probe's launch is still listed: {:#}",
        servers()
    );
}

#[test]
fn doctor_as_a_user_finds_every_class_held_and_recorded_in_the_table_and_in_json() {
    let d = Daemon::start();
    let started = std::time::Instant::now();
    let out = doctor(&d, &[]);
    let took = started.elapsed();
    let text = stdout_of(&out);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    for class in CLASSES {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(class))
            .unwrap_or_else(|| panic!("no line for {class}\n{}", describe(&out)));
        assert!(
            line.contains(" ok ") && line.contains("held (") && line.contains("recorded ("),
            "{class}: {line}\n{}",
            describe(&out)
        );
    }
    assert!(
        text.contains(&format!("all {} classes held and recorded", CLASSES.len())),
        "{}",
        describe(&out)
    );
    assert!(took.as_secs() < 10, "doctor took {took:?}");
    assert_nothing_left(&d);
    // The same daemon: each test's daemon costs about 10 s of CI.
    json_gives_each_class_what_it_saw_and_the_records_that_matched(&d);
}

fn json_gives_each_class_what_it_saw_and_the_records_that_matched(d: &Daemon) {
    let out = doctor(d, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}\n{}", describe(&out)));
    assert_eq!(v["ok"], true, "{v:#}");
    let launch = v["launch"].as_str().expect("launch id");
    assert!(launch.starts_with("mcpguard-doctor-"), "{v:#}");
    let classes = v["classes"].as_array().expect("classes");
    let names: Vec<&str> = classes.iter().filter_map(|c| c["class"].as_str()).collect();
    assert_eq!(names, CLASSES, "{v:#}");
    for c in classes {
        let expected: Vec<&str> = c["expected"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let seen = c["seen"].as_str().unwrap_or_default();
        assert!(expected.contains(&seen), "{c:#}");
        assert_eq!(
            (&c["held"], &c["recorded"]),
            (&Value::Bool(true), &Value::Bool(true)),
            "{c:#}"
        );
        assert!(!c["records"].as_array().unwrap().is_empty(), "{c:#}");
        assert!(c["missing"].is_null(), "{c:#}");
        assert!(c["attempt"].is_string(), "{c:#}");
    }
    // The records doctor matched are the launch's own, in the log.
    d.wait_record("the probe's denied read", |r| {
        is_kind(r, "open") && r["launch"] == launch && r["denied"] == true
    });
}

#[test]
fn doctor_without_a_daemon_exits_2_and_says_how_to_start_it() {
    let dir = tempdir("doctor-nodaemon");
    let u = user();
    let out = std::process::Command::new(bin())
        .args(["doctor", "--socket"])
        .arg(dir.join("nobody.sock"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir(scratch())
        .uid(u.uid)
        .gid(u.gid)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the mcpguard daemon")
            && err.contains("systemctl start mcpguard")
            && err.contains("mcpguard daemon"),
        "{}",
        describe(&out)
    );
}

#[test]
fn doctor_reports_classes_missing_when_the_audit_log_cannot_be_written() {
    // An ext4 the kernel turned read-only: no record reaches the log.
    let fs = Mount::ext4(8);
    let d = daemon_logging_on(&fs, &[]);
    fs.fail_ext4();
    let out = doctor(&d, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}\n{}", describe(&out)));
    assert_eq!(v["ok"], false, "{v:#}");
    for c in v["classes"].as_array().unwrap() {
        // Enforcement does not depend on the log; the trail does.
        assert_eq!(c["held"], true, "{c:#}");
        assert_eq!(c["recorded"], false, "{c:#}");
        let why = c["missing"].as_str().unwrap_or_default();
        assert!(
            why.contains("no record of it") && why.contains("the audit log is failing"),
            "{c:#}"
        );
    }
}
