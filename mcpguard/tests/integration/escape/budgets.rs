//! Class 14, daemon budgets: a server (or a user) trying to make the root
//! daemon grow without bound, in memory or on disk.
//!
//! Memory: a 16 MiB JSON-RPC line from one server, then from four at once.
//! Bound: the daemon's peak RSS (`VmHWM` in `/proc/<daemon>/status`) grows
//! by at most [`MIB_PER_SERVER`] per server; recorded: a line the tap
//! cannot inspect within its bound is withheld with an `mcp` `oversize`
//! record. Disk: floods of refused `socket()` calls and of denied DNS
//! names. Bound: the records written stay within the server's budget;
//! recorded: `loss` records (`budget:socket_fence`, `budget:dns`) count
//! the rest and their denials. A log past its size cap is rotated, and
//! `mcpguard audit` reads every kept file. A user at the daemon's server
//! cap is refused the next launch with a clear error and a
//! `launch_failed` record.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{hostile, hostile_dir, report, Class, Row, AUDIT_ALL};
use crate::harness::{base_fs, describe, policy, tempdir, Daemon};

/// Size of the attack lines, just under the relay's 16 MiB limit so the
/// tap has to look at them.
const LINE_MIB: u64 = 16;
/// Peak daemon RSS growth allowed per server for one such line (the relay
/// holds the line, the tap its strings and the copy it forwards).
const MIB_PER_SERVER: u64 = 64;
/// How long each flood runs.
const FLOOD_SECS: f64 = 3.0;
/// The DNS flood stops once the resolver has handled more than the budget
/// allows (whatever the machine's load), or after this long.
const DNS_FLOOD_MAX_SECS: f64 = 30.0;
/// The daemon's default record budget (`--record-burst`, `--record-rate`).
const BURST: u64 = 20_000;
const RATE: u64 = 2_000;

fn hostile_policy(name: &str) -> PathBuf {
    let dir = hostile_dir();
    let fs = base_fs(&[dir.as_path()]).replacen(
        "exec = [",
        &format!("exec = [{:?}, ", dir.display().to_string()),
        1,
    );
    policy(
        &tempdir(name),
        name,
        &format!("name = \"{name}\"\n{fs}{AUDIT_ALL}"),
    )
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

fn daemon_pid(d: &Daemon) -> u32 {
    d.child.as_ref().expect("daemon running").id()
}

/// `key=value` from a line the hostile program printed.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

fn spawn_bigline(d: &Daemon, pol: &Path, kind: &str) -> Child {
    let bin = hostile("budgets");
    d.run_cmd(
        pol,
        &[
            bin.to_str().unwrap(),
            "bigline",
            &LINE_MIB.to_string(),
            kind,
            "2",
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}

fn oversize_record(d: &Daemon, server: &str) -> Option<Value> {
    d.find_record(|r| {
        r["kind"] == "mcp"
            && r["server"] == server
            && r["event"] == "oversize"
            && r["detail"]["reason"] == "values"
            && r["detail"]["dropped"] == true
    })
}

/// Runs `servers` servers at once, each writing one line of many values
/// and one of a single long string; returns the row.
fn big_lines(d: &Daemon, servers: usize) -> Row {
    let pid = daemon_pid(d);
    let names: Vec<String> = (0..servers)
        .map(|i| format!("esc-bud-line{servers}-{i}"))
        .collect();
    let pols: Vec<PathBuf> = names.iter().map(|n| hostile_policy(n)).collect();
    let (rss0, hwm0) = memory(pid);
    let mut children = Vec::new();
    for pol in &pols {
        children.push(spawn_bigline(d, pol, "values"));
        children.push(spawn_bigline(d, pol, "string"));
    }
    let mut got = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        got.push(out.stdout.len());
    }
    let (rss1, hwm1) = memory(pid);
    let grew_mib = hwm1.saturating_sub(hwm0.max(rss0)) / 1024;
    let bound = MIB_PER_SERVER * servers as u64;
    // The line of values is withheld, the string line delivered whole.
    let withheld = got.iter().step_by(2).all(|&n| n == 0);
    let delivered = got
        .iter()
        .skip(1)
        .step_by(2)
        .all(|&n| n as u64 > (LINE_MIB - 1) << 20);
    let recs: Vec<Option<Value>> = names.iter().map(|n| oversize_record(d, n)).collect();
    Row::new(
        &format!("{LINE_MIB} MiB JSON lines from {servers} server(s) at once"),
        withheld && delivered && grew_mib <= bound,
        recs.iter().all(Option::is_some),
        format!(
            "daemon VmHWM {} → {} MiB (+{grew_mib} MiB, bound {bound}), VmRSS {} → {} MiB; \
             client got {:?} bytes (values line withheld, string line delivered); \
             `mcp oversize` reason values: {}",
            hwm0 / 1024,
            hwm1 / 1024,
            rss0 / 1024,
            rss1 / 1024,
            got,
            recs.iter().filter(|r| r.is_some()).count()
        ),
    )
}

/// What the log holds about a flooding server.
#[derive(Debug, Default)]
struct Tally {
    written: u64,
    lost: u64,
    denials: u64,
    loss_records: u64,
}

fn tally(log: &Path, server: &str, kind: &str, source: &str) -> Tally {
    let server = format!("\"server\":{server:?}");
    let kind = format!("\"kind\":{kind:?}");
    let mut t = Tally::default();
    for line in BufReader::new(File::open(log).unwrap()).lines() {
        let line = line.unwrap();
        if !line.contains(&server) {
            continue;
        }
        if line.contains(&kind) {
            t.written += 1;
        } else if line.contains("\"kind\":\"loss\"") {
            let r: Value = serde_json::from_str(&line).unwrap();
            if r["source"] == source {
                t.loss_records += 1;
                t.lost += r["lost"].as_u64().unwrap();
                t.denials += r["denials"].as_u64().unwrap_or(0);
            }
        }
    }
    t
}

/// Waits for the server's trail to end (its `server_exit` record) and a
/// loss report period to pass.
fn settle(d: &Daemon, server: &str) {
    d.wait_record("the flood's exit", |r| {
        r["kind"] == "server_exit" && r["server"] == server
    });
    std::thread::sleep(Duration::from_millis(700));
}

fn log_bytes(log: &Path) -> u64 {
    std::fs::metadata(log).map_or(0, |m| m.len())
}

fn socket_flood(d: &Daemon) -> Row {
    let name = "esc-bud-sockets";
    let pol = hostile_policy(name);
    let before = log_bytes(&d.log);
    let bin = hostile("budgets");
    let out = d.run(
        &pol,
        &[bin.to_str().unwrap(), "sockets", &FLOOD_SECS.to_string()],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let calls: u64 = field(&line, "calls").parse().unwrap();
    let errno = field(&line, "errno").to_owned();
    settle(d, name);
    let grew = log_bytes(&d.log) - before;
    let t = tally(&d.log, name, "socket", "budget:socket_fence");
    let bound = BURST + RATE * (FLOOD_SECS as u64 + 2);
    Row::new(
        "flood of refused socket() calls",
        errno == "EPERM" && t.written <= bound && t.written < calls,
        t.loss_records > 0 && t.written + t.lost == calls && t.denials == t.lost,
        format!(
            "{calls} socket() calls in {FLOOD_SECS} s, first refused with {errno}: {} `socket` \
             records written (bound {bound}), {} counted in {} `loss` records with source \
             budget:socket_fence ({} denials); the log grew {} KiB",
            t.written,
            t.lost,
            t.loss_records,
            t.denials,
            grew / 1024
        ),
    )
}

fn dns_flood(d: &Daemon) -> Row {
    let name = "esc-bud-dns";
    let pol = hostile_policy(name);
    let before = log_bytes(&d.log);
    let bin = hostile("budgets");
    let out = d.run(
        &pol,
        &[
            bin.to_str().unwrap(),
            "dns",
            &BURST.to_string(),
            &RATE.to_string(),
            &DNS_FLOOD_MAX_SECS.to_string(),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let sent: u64 = field(&line, "sent").parse().unwrap();
    let answered: u64 = field(&line, "answered").parse().unwrap();
    let secs: f64 = field(&line, "secs").parse().unwrap();
    settle(d, name);
    let grew = log_bytes(&d.log) - before;
    let t = tally(&d.log, name, "dns", "budget:dns");
    let bound = BURST + RATE * (secs.ceil() as u64 + 2);
    Row::new(
        "flood of denied DNS names",
        t.written <= bound && t.written < sent,
        t.loss_records > 0 && t.lost > 0 && t.denials > 0 && t.written + t.lost <= sent,
        format!(
            "{sent} queries for denied names in {secs} s ({answered} answered): {} `dns` \
             records written \
             (bound {bound}), {} counted in {} `loss` records with source budget:dns ({} \
             denials; queries the kernel dropped before the resolver read them are neither); \
             the log grew {} KiB",
            t.written,
            t.lost,
            t.loss_records,
            t.denials,
            grew / 1024
        ),
    )
}

fn rotated(log: &Path, n: u32) -> PathBuf {
    PathBuf::from(format!("{}.{n}", log.display()))
}

fn lines_in(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

fn rotation() -> Row {
    const CAP: u64 = 1 << 20;
    const KEEP: u32 = 2;
    let d = Daemon::start_with(&[
        "--audit-max-bytes",
        &CAP.to_string(),
        "--audit-keep",
        &KEEP.to_string(),
    ]);
    let name = "esc-bud-rotate";
    let pol = hostile_policy(name);
    let bin = hostile("budgets");
    let out = d.run(&pol, &[bin.to_str().unwrap(), "sockets", "2"]);
    assert!(out.status.success(), "{}", describe(&out));
    settle(&d, name);
    let files: Vec<PathBuf> = std::iter::once(d.log.clone())
        .chain((1..=KEEP + 1).map(|n| rotated(&d.log, n)))
        .collect();
    let sizes: Vec<u64> = files.iter().map(|f| log_bytes(f)).collect();
    let total_lines: usize = files.iter().map(|f| lines_in(f)).sum();
    let audit = Command::new(crate::harness::bin())
        .args(["audit", "--json", "--log"])
        .arg(&d.log)
        .output()
        .unwrap();
    let shown = audit.stdout.iter().filter(|&&c| c == b'\n').count();
    let exit = String::from_utf8_lossy(&audit.stdout).contains("\"kind\":\"server_exit\"");
    // A file may pass the cap by one batch of records.
    let capped = sizes.iter().all(|&s| s <= CAP + (256 << 10));
    let kept = sizes[KEEP as usize] > 0 && sizes[KEEP as usize + 1] == 0;
    Row::new(
        "audit log past its size cap",
        capped && kept,
        audit.status.success() && shown == total_lines && exit,
        format!(
            "--audit-max-bytes {CAP} --audit-keep {KEEP}: file sizes (log, .1, .2, .3) {sizes:?}; \
             `mcpguard audit --json` printed {shown} of the {total_lines} records in the kept \
             files, server_exit included: {exit}"
        ),
    )
}

fn server_cap() -> Row {
    const CAP: usize = 2;
    let d = Daemon::start_with(&["--max-servers-per-user", &CAP.to_string()]);
    let name = "esc-bud-cap";
    let pol = hostile_policy(name);
    let bin = hostile("budgets");
    let mut running = Vec::new();
    for _ in 0..CAP {
        running.push(
            d.run_cmd(&pol, &[bin.to_str().unwrap(), "hold", "4"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while d
        .records()
        .iter()
        .filter(|r| r["kind"] == "launch" && r["server"] == name)
        .count()
        < CAP
    {
        assert!(Instant::now() < deadline, "the first servers did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = d.run(&pol, &[bin.to_str().unwrap(), "hold", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let rec = d.find_record(|r| {
        r["kind"] == "launch_failed"
            && r["server"] == name
            && r["error"]
                .as_str()
                .is_some_and(|e| e.contains("--max-servers-per-user"))
    });
    for mut child in running {
        let _ = child.wait();
    }
    Row::new(
        "launching servers without limit",
        !out.status.success() && stderr.contains("--max-servers-per-user"),
        rec.is_some(),
        format!(
            "with --max-servers-per-user {CAP} and {CAP} running, launch {} was refused: {}; \
             record: {}",
            CAP + 1,
            stderr.trim(),
            rec.map_or("none".into(), |r| r.to_string())
        ),
    )
}

#[test]
fn daemon_budgets_hold() {
    // One daemon at a time: each run of the tests has one cgroup tree.
    let mut rows = {
        let d = Daemon::start();
        vec![
            big_lines(&d, 1),
            big_lines(&d, 4),
            socket_flood(&d),
            dns_flood(&d),
        ]
    };
    rows.push(rotation());
    rows.push(server_cap());
    report(Class::DaemonBudgets, &rows);
}
