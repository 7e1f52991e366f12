//! Escape class 6 (TOCTOU): `tests/escape/toctou.c` races a second thread
//! that rewrites a syscall's argument (an open path, a connect sockaddr, an
//! execve filename) while the call runs, as the test user under a realistic
//! policy, for 2 s or 20,000 attempts per race.
//!
//! Blocked: the secret is never read, the denied port's listener (run here,
//! outside the server) never accepts, the denied binary never runs; and the
//! race really ran (both outcomes were seen). Recorded: every refusal the
//! program counted has its audit record (the verdict is the syscall's
//! result or the hook's decision on the kernel's copy, so the counts must
//! match), and every record whose path came from user memory says so
//! (`path_source: "user"`), since the race can make that path a lie.

use std::{
    collections::HashMap,
    net::TcpListener,
    os::unix::fs::{chown, PermissionsExt},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{
    files::{guarded_policy, s, secrets, user_dir, Fs},
    hostile, hostile_dir, report, Class, Row,
};
use crate::harness::*;

const SECS: &str = "2";
const MAX: &str = "20000";

/// The summary line of a race: `attempts`, `ok`, `denied`, `other`,
/// `leaked`, `flips`.
fn summary(out: &str, race: &str) -> HashMap<String, u64> {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{race} ")))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn get(m: &HashMap<String, u64>, key: &str) -> u64 {
    m.get(key).copied().unwrap_or(0)
}

/// The records of `server` once at least `want` of them match `pred` (or
/// 15 s passed: then what there is).
fn settled(d: &Daemon, server: &str, want: u64, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let recs: Vec<Value> = d
            .records()
            .into_iter()
            .filter(|r| r["server"] == server)
            .collect();
        let n = recs.iter().filter(|r| pred(r)).count() as u64 + lost_denials(&recs);
        if n >= want || Instant::now() > deadline {
            return recs;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether every refusal the program counted has its record, or was
/// counted in a `loss` record (never more records than refusals).
fn accounted(records: u64, recs: &[Value], counted: u64) -> bool {
    records <= counted && records + lost_denials(recs) >= counted
}

/// Denials the daemon could not write for this server and counted in its
/// `loss` records instead (a server flooding past its share of the ring
/// buffer, as these races do on a loaded machine): accounted for, so they
/// count as recorded (README: nothing is dropped without a record).
fn lost_denials(recs: &[Value]) -> u64 {
    recs.iter()
        .filter(|r| is_kind(r, "loss"))
        .filter_map(|r| r["denials"].as_u64())
        .sum()
}

fn count(recs: &[Value], pred: impl Fn(&Value) -> bool) -> u64 {
    recs.iter().filter(|r| pred(r)).count() as u64
}

/// A loopback listener that accepts (and counts) until dropped.
struct Listener {
    port: u16,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn start() -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok(_) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
            // Whatever is still queued reached the port too.
            while l.accept().is_ok() {
                a.fetch_add(1, Ordering::Relaxed);
            }
        });
        Listener {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Stop accepting; how many connections arrived in all.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.accepted.load(Ordering::Relaxed)
    }
}

fn is_user_sourced(r: &Value) -> bool {
    r["path_source"] == "user"
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "the class's attack rows, one block each, in report order"
)]
fn toctou_races_never_reach_the_denied_object_and_records_say_where_paths_came_from() {
    let d = Daemon::start();
    let sec = secrets();
    let dir = tempdir("esc-toctou");
    let project = user_dir("esc-toctou-project");
    let toctou = hostile("toctou");
    let bin = s(&toctou);
    let mut rows = Vec::new();

    // open(2): an allowed project file against the SSH key.
    let allowed = project.join("allowed.txt");
    std::fs::write(&allowed, "allowed\n").unwrap();
    std::fs::set_permissions(&allowed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let key = s(&sec.ssh_key);
    let pol = guarded_policy(&dir, "esc-toctou-open", &Fs::project(&project), "");
    let out = d.run(&pol, &[&bin, "open", &s(&allowed), &key, SECS, MAX]);
    let text = stdout_of(&out);
    let m = summary(&text, "open");
    let is_race_deny =
        |r: &Value| is_kind(r, "open") && r["comm"] == "toctou" && r["errno"] == "EACCES";
    let recs = settled(&d, "esc-toctou-open", get(&m, "denied"), is_race_deny);
    let opens: Vec<&Value> = recs
        .iter()
        .filter(|r| is_kind(r, "open") && r["comm"] == "toctou")
        .collect();
    let denied_recs = count(&recs, is_race_deny);
    let lying = count(&recs, |r| is_race_deny(r) && r["path"] == s(&allowed))
        + count(&recs, |r| {
            is_kind(r, "open") && r["path"] == key && r["result"].as_i64().is_some_and(|v| v >= 0)
        });
    let unmarked = opens.iter().filter(|r| !is_user_sourced(r)).count();
    rows.push(Row::new(
        "open(2) while a second thread flips the path between a project file and ~/.ssh key",
        out.status.success()
            && get(&m, "leaked") == 0
            && get(&m, "denied") > 0
            && get(&m, "ok") > 0
            && !text.contains(super::files::MARKER),
        accounted(denied_recs, &recs, get(&m, "denied"))
            && count(&recs, |r| is_race_deny(r) && r["path"] == key) > 0
            && unmarked == 0,
        format!(
            "{} (status {}); audit: {denied_recs} open records with EACCES \
             (the program counted {}; {} more denials in loss records), {lying} of \
             them name the path the kernel did not resolve, all {} carry \
             path_source=user (unmarked: {unmarked})",
            text.trim(),
            out.status,
            get(&m, "denied"),
            lost_denials(&recs),
            opens.len(),
        ),
    ));

    // connect(2): the allowed port against a denied one, both listening
    // here, outside the server.
    let ok_l = Listener::start();
    let deny_l = Listener::start();
    let (ok_port, deny_port) = (ok_l.port, deny_l.port);
    let pol = guarded_policy(
        &dir,
        "esc-toctou-connect",
        &Fs::project(&project),
        &format!("[network]\nallow = [\"127.0.0.1:{ok_port}\"]"),
    );
    let out = d.run(
        &pol,
        &[
            &bin,
            "connect",
            &ok_port.to_string(),
            &deny_port.to_string(),
            SECS,
            MAX,
        ],
    );
    let text = stdout_of(&out);
    let m = summary(&text, "connect");
    let reached_ok = ok_l.finish();
    let reached_denied = deny_l.finish();
    let deny_rec = |r: &Value| {
        is_kind(r, "connect")
            && r["op"] == "connect4"
            && r["port"] == deny_port
            && r["verdict"] == "deny"
    };
    let recs = settled(&d, "esc-toctou-connect", get(&m, "denied"), deny_rec);
    let denied_recs = count(&recs, deny_rec);
    let allowed_to_denied = count(&recs, |r| {
        is_kind(r, "connect") && r["port"] == deny_port && r["verdict"] != "deny"
    });
    rows.push(Row::new(
        "connect(2) while a second thread flips the sockaddr between an allowed and a denied loopback port",
        out.status.success()
            && reached_denied == 0
            && get(&m, "denied") > 0
            && get(&m, "ok") > 0
            && reached_ok == get(&m, "ok"),
        accounted(denied_recs, &recs, get(&m, "denied")) && allowed_to_denied == 0,
        format!(
            "{} (status {}); the denied port's listener accepted {reached_denied}, \
             the allowed one {reached_ok}; audit: {denied_recs} connect records \
             verdict=deny port={deny_port} (the program counted {}; {} more \
             denials in loss records), \
             {allowed_to_denied} allow records for the denied port; the cgroup \
             hook decides on, and records, the kernel's copy of the address",
            text.trim(),
            out.status,
            get(&m, "denied"),
            lost_denials(&recs),
        ),
    ));

    // execve(2): a non-program in an exec-allowed dir (ENOEXEC) against a
    // binary in the project, which the policy does not let run.
    let noexec = hostile_dir().join("toctou-not-a-program");
    std::fs::write(&noexec, "not a program\n").unwrap();
    std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o755)).unwrap();
    let denied_bin = project.join("denied-bin");
    std::fs::copy(&toctou, &denied_bin).unwrap();
    std::fs::set_permissions(&denied_bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    chown(&denied_bin, Some(user().uid), Some(user().gid)).unwrap();
    let marker = project.join("PWNED");
    let pol = guarded_policy(&dir, "esc-toctou-exec", &Fs::project(&project), "");
    let out = d.run(
        &pol,
        &[
            &bin,
            "exec",
            &s(&noexec),
            &s(&denied_bin),
            &s(&marker),
            SECS,
            MAX,
        ],
    );
    let text = stdout_of(&out);
    let m = summary(&text, "exec");
    let exec_deny = |r: &Value| is_kind(r, "exec") && r["errno"] == "EACCES";
    let recs = settled(&d, "esc-toctou-exec", get(&m, "denied"), exec_deny);
    let denied_recs = count(&recs, exec_deny);
    let failed = count(&recs, |r| {
        is_kind(r, "exec") && r["result"].as_i64().is_some_and(|v| v < 0)
    });
    let failed_marked = count(&recs, |r| {
        is_kind(r, "exec") && r["result"].as_i64().is_some_and(|v| v < 0) && is_user_sourced(r)
    });
    let lying = count(&recs, |r| exec_deny(r) && r["filename"] == s(&noexec));
    let started: Vec<&Value> = recs
        .iter()
        .filter(|r| is_kind(r, "exec") && r["result"] == 0)
        .collect();
    // The one exec that may succeed is the launch of toctou itself, and its
    // record names the kernel's copy of the filename.
    let launch_ok = started.len() == 1
        && started[0]["filename"] == bin.as_str()
        && started[0]["path_source"] == "kernel";
    rows.push(Row::new(
        "execve(2) while a second thread flips the filename between an exec-allowed file and a denied binary",
        out.status.success()
            && !marker.exists()
            && !text.contains("PWNED")
            && get(&m, "denied") > 0
            && get(&m, "ok") > 0,
        accounted(denied_recs, &recs, get(&m, "denied"))
            && count(&recs, |r| exec_deny(r) && r["filename"] == s(&denied_bin)) > 0
            && failed_marked == failed
            && launch_ok,
        format!(
            "{} (status {}, marker {}); audit: {denied_recs} exec records with \
             EACCES (the program counted {}; {} more denials in loss records), \
             {lying} of them name the file the \
             kernel did not resolve, {failed_marked} of {failed} failed execs \
             carry path_source=user; successful execs: {}",
            text.trim(),
            out.status,
            if marker.exists() { "written" } else { "absent" },
            get(&m, "denied"),
            lost_denials(&recs),
            started
                .iter()
                .map(|r| format!("{} (path_source={})", r["filename"], r["path_source"]))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ));
    report(Class::Toctou, &rows);
}
