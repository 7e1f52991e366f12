//! Class 7, resource attacks: a fork bomb and a memory balloon against the
//! server's `[limits]`, and an audit-event flood against the ring buffer
//! every server's records share.
//!
//! Blocked: the fork bomb's forks fail with EAGAIN at `pids.max` (the
//! cgroup never holds more, the host still forks); the balloon is
//! OOM-killed inside its memory limit; during the flood a denied read and a
//! denied connect still fail, and a quiet server running beside it gets
//! every one of its records and no loss. Recorded: `limit` records; for the
//! flood, its denials' records (or their count in `loss` records), and
//! every flood open either written or counted in the flooder's `loss`
//! records within about a second of the flood ending.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{hostile, hostile_dir, report, Class, Row, AUDIT_ALL};
use crate::harness::{base_fs, describe, policy, poll, tempdir, Daemon};

const PIDS: u64 = 64;
const MEMORY_MIB: u64 = 64;
/// How long the flood runs.
const FLOOD_SECS: f64 = 3.0;
/// How long after the flood its records must be accounted for.
const ACCOUNT_WITHIN: Duration = Duration::from_millis(1500);

/// A policy that runs the hostile binary, reads `extra_read`, and has the
/// limits this module attacks.
fn hostile_policy(name: &str, extra_read: &[&Path]) -> std::path::PathBuf {
    let hostile = hostile_dir();
    let mut read = vec![hostile.as_path()];
    read.extend_from_slice(extra_read);
    let fs = base_fs(&read).replacen(
        "exec = [",
        &format!("exec = [{:?}, ", hostile.display().to_string()),
        1,
    );
    policy(
        &tempdir(name),
        name,
        &format!("name = \"{name}\"\n{fs}\n[limits]\npids = {PIDS}\nmemory = \"{MEMORY_MIB}M\"\n{AUDIT_ALL}"),
    )
}

/// `key=value` from a line the hostile program printed.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

/// `pids.current` and `pids.max` of the cgroup that holds `pid`, wherever
/// the pids controller is (v2, or a v1 hierarchy on hybrid systems).
fn pids_of(pid: u32) -> (u64, String) {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = match mcpguard::mountinfo::find_cgroup_v1(&mountinfo, "pids") {
        Some(mount) => {
            let rel = own
                .lines()
                .find_map(|l| l.split_once(":pids:").map(|(_, p)| p))
                .unwrap();
            mount.join(rel.trim_start_matches('/'))
        }
        None => {
            let rel = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
            mcpguard::launch::cgroup::cgroup2_mount()
                .unwrap()
                .join(rel.trim_start_matches('/'))
        }
    };
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    (
        read("pids.current").trim().parse().unwrap(),
        read("pids.max").trim().to_owned(),
    )
}

fn limit_record(d: &Daemon, server: &str, resource: &str, events: &[&str]) -> Option<Value> {
    d.records().into_iter().find(|r| {
        r["kind"] == "limit"
            && r["server"] == server
            && r["resource"] == resource
            && events.iter().any(|e| r["event"] == *e)
    })
}

/// Waits (10 s) for a `limit` record, or returns `None`.
fn wait_limit(d: &Daemon, server: &str, resource: &str, events: &[&str]) -> Option<Value> {
    poll(Duration::from_secs(10), || {
        limit_record(d, server, resource, events)
    })
}

fn fork_bomb(d: &Daemon) -> Row {
    let bin = hostile("resources");
    let pol = hostile_policy("esc-res-bomb", &[]);
    let mut child = d
        .run_cmd(&pol, &[bin.to_str().unwrap(), "forkbomb", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = first_line(&mut child);
    let launch = d.wait_record("the bomb's launch", |r| {
        r["kind"] == "launch" && r["server"] == "esc-res-bomb"
    });
    let (current, max) = pids_of(launch["pid"].as_u64().unwrap() as u32);
    let host_forks = std::process::Command::new("/bin/true")
        .status()
        .is_ok_and(|s| s.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let forked: u64 = field(&line, "forked").parse().unwrap();
    let errno = field(&line, "errno");
    let blocked = errno == "EAGAIN" && current <= PIDS && forked < PIDS && host_forks;
    let rec = wait_limit(d, "esc-res-bomb", "pids", &["max"]);
    Row::new(
        "fork bomb",
        blocked,
        rec.as_ref()
            .is_some_and(|r| r["limit"] == PIDS && r["denied"] == true),
        format!(
            "fork failed with {errno} after {forked} children; pids.current {current} (pids.max {max}); \
             the host still forks: {host_forks}; record: {}",
            rec.map_or("none".into(), |r| r.to_string())
        ),
    )
}

fn balloon(d: &Daemon) -> Row {
    let bin = hostile("resources");
    let pol = hostile_policy("esc-res-balloon", &[]);
    let out = d.run(&pol, &[bin.to_str().unwrap(), "balloon", "1024"]);
    assert!(out.status.success(), "{}", describe(&out));
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let touched: u64 = field(&line, "touched_mib").parse().unwrap();
    let end = field(&line, "end").to_owned();
    let blocked = (end == "signal9" || end.starts_with("enomem")) && touched <= MEMORY_MIB;
    let rec = wait_limit(d, "esc-res-balloon", "memory", &["oom_kill", "oom"]);
    Row::new(
        "memory balloon",
        blocked,
        rec.as_ref()
            .is_some_and(|r| r["limit"] == MEMORY_MIB << 20 && r["denied"] == true),
        format!(
            "the balloon touched {touched} MiB of 1024 and ended with {end} (limit {MEMORY_MIB} MiB, \
             no swap); record: {}",
            rec.map_or("none".into(), |r| r.to_string())
        ),
    )
}

/// What the log holds for the flood and the quiet server, counted without
/// parsing every line (a flood writes hundreds of thousands).
#[derive(Debug, Default)]
struct Tally {
    flood_opens: u64,
    flood_lost: u64,
    rate_records: u64,
    /// `loss` records of the flooder's record budget.
    budget_records: u64,
    secret_denied: bool,
    connect_denied: bool,
    /// Denials the flooder shed (their records are counted, not written).
    denials_lost: u64,
    quiet_opens: u64,
    quiet_loss_records: u64,
}

fn tally(log: &Path, paths: &[String; 4]) -> Tally {
    let [allowed, denied, secret, quiet] = paths.each_ref().map(|p| format!("\"path\":{p:?}"));
    let mut t = Tally::default();
    for line in BufReader::new(File::open(log).unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("\"kind\":\"open\"") {
            if line.contains(&allowed) || line.contains(&denied) {
                t.flood_opens += 1;
            } else if line.contains(&quiet) {
                t.quiet_opens += 1;
            } else if line.contains(&secret) && line.contains("\"result\":-13") {
                t.secret_denied = true;
            }
            continue;
        }
        if !(line.contains("\"kind\":\"loss\"") || line.contains("\"kind\":\"connect\"")) {
            continue;
        }
        let r: Value = serde_json::from_str(&line).unwrap();
        match (r["kind"].as_str(), r["server"].as_str()) {
            (Some("loss"), Some("esc-res-flood")) => {
                t.flood_lost += r["lost"].as_u64().unwrap();
                t.denials_lost += r["denials"].as_u64().unwrap_or(0);
                t.rate_records += u64::from(r["source"] == "rate");
                t.budget_records += u64::from(r["source"] == "budget:kernel");
            }
            (Some("loss"), Some("esc-res-quiet")) => t.quiet_loss_records += 1,
            (Some("connect"), Some("esc-res-flood")) => {
                t.connect_denied |= r["addr"] == "192.0.2.1" && r["verdict"] == "deny";
            }
            _ => {}
        }
    }
    t
}

fn flood(d: &Daemon) -> Vec<Row> {
    let bin = hostile("resources");
    let data = tempdir("flood-data");
    let allowed = data.join("allowed");
    std::fs::write(&allowed, "x").unwrap();
    let secret_dir = tempdir("flood-secret");
    let secret = secret_dir.join("id_flood");
    std::fs::write(&secret, "secret").unwrap();
    let denied = secret_dir.join("denied");
    std::fs::write(&denied, "x").unwrap();
    let quiet_file = data.join("quiet");
    std::fs::write(&quiet_file, "q").unwrap();
    let flood_pol = hostile_policy("esc-res-flood", &[&data]);
    let quiet_pol = hostile_policy("esc-res-quiet", &[&data]);
    let s = |p: &Path| p.to_str().unwrap().to_owned();

    let quiet = d
        .run_cmd(
            &quiet_pol,
            &[
                &s(&bin),
                "quiet",
                &format!("{}", FLOOD_SECS + 1.0),
                &s(&quiet_file),
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = d.run(
        &flood_pol,
        &[
            &s(&bin),
            "flood",
            &FLOOD_SECS.to_string(),
            &s(&allowed),
            &s(&denied),
            &s(&secret),
        ],
    );
    let flood_ended = Instant::now();
    assert!(out.status.success(), "{}", describe(&out));
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let opens: u64 = field(&line, "opens").parse().unwrap();
    let quiet_out = quiet.wait_with_output().unwrap();
    assert!(quiet_out.status.success(), "{}", describe(&quiet_out));
    let quiet_line = String::from_utf8_lossy(&quiet_out.stdout).into_owned();
    let quiet_opens: u64 = field(&quiet_line, "quiet_opens").parse().unwrap();

    let paths = [s(&allowed), s(&denied), s(&secret), s(&quiet_file)];
    // Counting takes a while on a big log: what counts is when the log was
    // read, not when the count finished. The quiet server's last records
    // may still be on their way when the flood's are all in: both are
    // waited for, within the same bound.
    let (t, accounted_after) = loop {
        let at = flood_ended.elapsed();
        let t = tally(&d.log, &paths);
        let quiet_in = t.quiet_opens >= quiet_opens || t.quiet_loss_records > 0;
        if (t.flood_opens + t.flood_lost >= opens && quiet_in) || at > ACCOUNT_WITHIN {
            break (t, at);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let accounted = t.flood_opens + t.flood_lost >= opens
        && t.flood_opens <= opens
        && accounted_after <= ACCOUNT_WITHIN;

    let secret_errno = field(&line, "secret");
    let connect_errno = field(&line, "connect");
    let summary = format!(
        "{opens} flood opens in {} s: {} written + {} counted lost (`loss` records: {} with \
         source rate, {} with budget:kernel; {} of the lost were denials), accounted {:.1} s \
         after the flood",
        field(&line, "secs"),
        t.flood_opens,
        t.flood_lost,
        t.rate_records,
        t.budget_records,
        t.denials_lost,
        accounted_after.as_secs_f64()
    );
    vec![
        Row::new(
            "event flood: denied read of a secret mid-flood",
            secret_errno == "EACCES",
            t.secret_denied || t.denials_lost > 0,
            format!(
                "open of the secret at {} s failed with {secret_errno}; its denied `open` record \
                 written: {}; {summary}",
                field(&line, "at"),
                t.secret_denied
            ),
        ),
        Row::new(
            "event flood: denied connect mid-flood",
            connect_errno == "EPERM",
            t.connect_denied || t.denials_lost > 0,
            format!(
                "connect to 192.0.2.1:9 failed with {connect_errno}; its denied `connect` record \
                 written: {}",
                t.connect_denied
            ),
        ),
        Row::new(
            "event flood: starving another server's audit trail",
            t.quiet_opens == quiet_opens && t.quiet_loss_records == 0,
            accounted,
            format!(
                "a quiet server beside the flood opened {quiet_opens} times: {} `open` records, \
                 {} `loss` records; {summary}",
                t.quiet_opens, t.quiet_loss_records
            ),
        ),
    ]
}

#[test]
fn resource_attacks() {
    let d = Daemon::start();
    let mut rows = vec![fork_bomb(&d), balloon(&d)];
    rows.extend(flood(&d));
    report(Class::Resources, &rows);
}
