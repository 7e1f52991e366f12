//! Running on a developer machine: the systemd unit, `mcpguard install` and
//! `uninstall`, readiness notification and journal logging, `mcpguard
//! status`, users reading their own audit records through the daemon, the
//! daemon's limits on query connections, and servers living below a
//! cgroup systemd delegated to the daemon.
//!
//! PID 1 is not necessarily systemd here: the unit is checked with
//! `systemd-analyze verify`, and the notification and journal sockets are
//! real sockets the test binds.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        net::{UnixDatagram, UnixStream},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use mcpguard::{
    audit::query::Filter,
    daemon::proto::{self, Request, Response},
};
use serde_json::Value;

use crate::harness::*;

const ALL_CAPS: &[&str] = &[
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_NET_ADMIN",
    "CAP_SYS_ADMIN",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_KILL",
    "CAP_DAC_READ_SEARCH",
    "CAP_CHOWN",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn mode_owner(path: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.mode() & 0o7777, m.uid(), m.gid())
}

fn install(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run mcpguard install")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of `install`'s report for a path ending in `suffix`.
fn report_line<'a>(report: &'a str, suffix: &str) -> &'a str {
    report
        .lines()
        .find(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|p| p.ends_with(suffix))
        })
        .unwrap_or_else(|| panic!("no report line for {suffix}:\n{report}"))
}

#[test]
fn install_puts_every_path_in_place_root_owned_with_its_mode_and_is_idempotent() {
    require_root();
    let root = tempdir("install");
    let r = root.to_str().unwrap();
    let out = install(&["install", "--root", r]);
    assert!(out.status.success(), "{}", describe(&out));
    let report = text(&out);
    assert!(
        report.contains("systemctl daemon-reload && systemctl enable --now mcpguard"),
        "install must say what to do next:\n{report}"
    );

    let expect = [
        ("usr/local/bin/mcpguard", 0o755),
        ("etc/systemd/system/mcpguard.service", 0o644),
        ("etc/mcpguard", 0o755),
        ("etc/mcpguard/policies", 0o755),
        ("etc/mcpguard/policies/time.toml", 0o644),
        ("etc/mcpguard/policies/filesystem.toml", 0o644),
        ("etc/mcpguard/policies/everything.toml", 0o644),
        ("etc/mcpguard/secrets", 0o700),
        ("etc/mcpguard/minters", 0o700),
        ("var/lib/mcpguard", 0o700),
        ("var/log/mcpguard", 0o700),
    ];
    for (path, mode) in expect {
        assert_eq!(
            mode_owner(&root.join(path)),
            (mode, 0, 0),
            "{path}: expected {mode:04o} root:root"
        );
        assert!(
            report_line(&report, path).starts_with("created"),
            "{path} not reported as created:\n{report}"
        );
    }
    assert_eq!(
        std::fs::read(root.join("usr/local/bin/mcpguard")).unwrap(),
        std::fs::read(bin()).unwrap(),
        "the installed binary is a copy of the running one"
    );
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/mcpguard.service")).unwrap();
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/local/bin/mcpguard daemon"),
        "{unit}"
    );
    for name in ["time.toml", "filesystem.toml", "everything.toml"] {
        assert_eq!(
            std::fs::read_to_string(root.join("etc/mcpguard/policies").join(name)).unwrap(),
            std::fs::read_to_string(repo().join("policies").join(name)).unwrap(),
            "{name} is installed as shipped"
        );
    }

    // Again: nothing to do.
    let out = install(&["install", "--root", r]);
    assert!(out.status.success(), "{}", describe(&out));
    let again = text(&out);
    for (path, _) in expect {
        assert!(
            report_line(&again, path).starts_with("unchanged"),
            "{path} not unchanged on the second install:\n{again}"
        );
    }

    // An admin's policy is kept; a loosened secrets dir is tightened again.
    let mine = "# mine\nname = \"time\"\n";
    let time = root.join("etc/mcpguard/policies/time.toml");
    std::fs::write(&time, mine).unwrap();
    std::fs::set_permissions(
        root.join("etc/mcpguard/secrets"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = install(&["install", "--root", r]);
    assert!(out.status.success(), "{}", describe(&out));
    let third = text(&out);
    assert_eq!(std::fs::read_to_string(&time).unwrap(), mine);
    let kept = report_line(&third, "policies/time.toml");
    assert!(
        kept.starts_with("kept") && kept.contains("yours"),
        "{third}"
    );
    let fixed = report_line(&third, "etc/mcpguard/secrets");
    assert!(
        fixed.starts_with("fixed") && fixed.contains("mode 0755 -> 0700"),
        "{third}"
    );
    assert_eq!(
        mode_owner(&root.join("etc/mcpguard/secrets")),
        (0o700, 0, 0)
    );
}

#[test]
fn uninstall_removes_the_binary_and_unit_and_leaves_configuration_state_and_logs() {
    require_root();
    let root = tempdir("uninstall");
    let r = root.to_str().unwrap();
    let out = install(&["install", "--root", r, "--prefix", "/opt/mg"]);
    assert!(out.status.success(), "{}", describe(&out));
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/mcpguard.service")).unwrap();
    assert!(
        unit.contains("\nExecStart=/opt/mg/bin/mcpguard daemon\n"),
        "{unit}"
    );
    assert!(root.join("opt/mg/bin/mcpguard").exists());

    // Without --prefix, uninstall finds the binary the unit runs.
    let out = install(&["uninstall", "--root", r]);
    assert!(out.status.success(), "{}", describe(&out));
    let report = text(&out);
    assert!(!root.join("opt/mg/bin/mcpguard").exists(), "{report}");
    assert!(
        !root.join("etc/systemd/system/mcpguard.service").exists(),
        "{report}"
    );
    for kept in [
        "etc/mcpguard/policies/time.toml",
        "etc/mcpguard/secrets",
        "etc/mcpguard/minters",
        "var/lib/mcpguard",
        "var/log/mcpguard",
    ] {
        assert!(root.join(kept).exists(), "{kept} removed:\n{report}");
    }
    assert!(
        report_line(&report, "var/log/mcpguard").starts_with("left"),
        "{report}"
    );
    assert!(report.contains("left in place"), "{report}");
    // Twice is fine.
    let out = install(&["uninstall", "--root", r]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        report_line(&text(&out), "mcpguard.service").starts_with("absent"),
        "{}",
        describe(&out)
    );
}

#[test]
fn the_installed_unit_passes_systemd_analyze_verify() {
    require_root();
    let root = tempdir("verify");
    let out = install(&["install", "--root", root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    // verify checks that ExecStart= exists: point it at the copy below the
    // root. The file name must stay mcpguard.service.
    let installed = root.join("usr/local/bin/mcpguard");
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/mcpguard.service"))
        .unwrap()
        .replace(
            "ExecStart=/usr/local/bin/mcpguard",
            &format!("ExecStart={}", installed.display()),
        );
    let dir = tempdir("verify-unit");
    let path = dir.join("mcpguard.service");
    std::fs::write(&path, &unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (apt install systemd)");
    assert!(out.status.success(), "{}", describe(&out));
    // verify only warns about unknown keys and bad values: any output fails.
    assert_eq!(
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        "",
        "systemd-analyze verify complained"
    );

    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(value("Type"), ["notify"]);
    assert_eq!(value("Delegate"), ["yes"]);
    assert_eq!(value("KillMode"), ["control-group"]);
    assert_eq!(value("RuntimeDirectory"), ["mcpguard"]);
    assert_eq!(value("StateDirectory"), ["mcpguard"]);
    assert_eq!(value("LogsDirectory"), ["mcpguard"]);
    assert_eq!(value("ConfigurationDirectory"), ["mcpguard"]);
    assert_eq!(value("ProtectSystem"), ["full"]);
    for absent in ["ProtectHome", "PrivateTmp", "PrivateDevices"] {
        assert!(value(absent).is_empty(), "{absent} must not be set");
    }
    let caps = value("CapabilityBoundingSet").join(" ");
    let mut caps: Vec<&str> = caps.split_whitespace().collect();
    caps.sort_unstable();
    let mut want = ALL_CAPS.to_vec();
    want.sort_unstable();
    assert_eq!(caps, want);
    for cap in ALL_CAPS {
        assert!(
            unit.contains(&format!("#   {cap} ")),
            "{cap} has no comment saying why"
        );
    }
}

/// A daemon for the service tests: its own environment, optionally
/// through a wrapper command, plain `info` logs, and its own cgroup tree.
fn svc(env: &[(&str, &str)], wrapper: &[&str]) -> Daemon {
    Daemon::spawn(Opts {
        log_filter: Some("info"),
        env,
        wrapper,
        cgroup: Some(&svc_cgroup_name()),
        ..Opts::default()
    })
}

fn svc_cgroup_name() -> String {
    format!("mcpguard-it-svc-{}", std::process::id())
}

fn recv_text(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("no notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_daemon_tells_systemd_it_is_ready_once_listening_and_when_it_stops() {
    let dir = tempdir("notify");
    let path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut d = svc(&[("NOTIFY_SOCKET", path.to_str().unwrap())], &[]);
    let ready = recv_text(&notify);
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(
        ready.contains(&format!("STATUS=listening on {}", d.socket.display())),
        "{ready:?}"
    );
    // READY=1 means connectable.
    UnixStream::connect(&d.socket).expect("the socket accepts once READY=1 is sent");
    d.stop_cleanly();
    let stopping = recv_text(&notify);
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping:?}");

    // An abstract address, as systemd may pass.
    use std::os::linux::net::SocketAddrExt;
    let name = format!("mcpguard-it-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let notify = UnixDatagram::bind_addr(&addr).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut d = svc(&[("NOTIFY_SOCKET", &format!("@{name}"))], &[]);
    assert!(recv_text(&notify).starts_with("READY=1\n"));
    d.stop_cleanly();
    assert!(recv_text(&notify).starts_with("STOPPING=1\n"));
}

/// The daemon in a private mount namespace whose /run holds only a
/// journal socket bound from `socket` (or nothing, with `None`), with
/// $JOURNAL_STREAM naming its stderr.
fn daemon_with_journal(socket: Option<&Path>) -> Daemon {
    // JOURNAL_STREAM must name the stderr the harness opens for the
    // daemon, so the wrapper computes it from its own fd 2.
    let bind = socket.map_or_else(String::new, |s| {
        format!(
            "touch /run/systemd/journal/socket && mount --bind {} /run/systemd/journal/socket && ",
            s.display()
        )
    });
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && {bind}\
         export JOURNAL_STREAM=$(stat -L -c '%d:%i' /proc/self/fd/2) && exec \"$@\""
    );
    svc(&[], &["unshare", "-m", "sh", "-c", &script, "sh"])
}

#[test]
fn with_journal_stream_the_daemon_logs_structured_fields_to_the_journal() {
    let dir = tempdir("journal");
    let path = dir.join("journal.sock");
    let journal = UnixDatagram::bind(&path).unwrap();
    // Drained from the start, like journald: a datagram socket holds only
    // net.unix.max_dgram_qlen messages (10 by default) before the sender
    // blocks, and the daemon logs more than that before it listens.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = journal.recv(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut d = daemon_with_journal(Some(&path));
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let msg = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no ready message in the journal");
        let fields = journal_fields(&msg);
        if fields.get("MESSAGE").map(String::as_str) == Some("mcpguard daemon ready") {
            break fields;
        }
        assert!(Instant::now() < deadline, "no ready message in the journal");
    };
    assert_eq!(ready["SYSLOG_IDENTIFIER"], "mcpguard", "{ready:?}");
    // tracing-journald maps INFO to notice.
    assert_eq!(ready["PRIORITY"], "5", "{ready:?}");
    assert_eq!(
        ready["MCPGUARD_SOCKET"],
        d.socket.display().to_string(),
        "log fields become journal fields: {ready:?}"
    );
    assert_eq!(
        ready["MCPGUARD_AUDIT_LOG"],
        d.log.display().to_string(),
        "{ready:?}"
    );
    d.stop_cleanly();
    assert!(
        !d.stderr().contains("mcpguard daemon ready"),
        "logs went to stderr too:\n{}",
        d.stderr()
    );
}

/// The fields of one journal native-protocol datagram: `KEY=value\n`, or
/// `KEY\n`, a little-endian u64 length, the value and `\n`.
fn journal_fields(mut msg: &[u8]) -> std::collections::HashMap<String, String> {
    let mut fields = std::collections::HashMap::new();
    while let Some(nl) = msg.iter().position(|&b| b == b'\n') {
        let line = &msg[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            msg = &msg[nl + 1..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &msg[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            fields.insert(key, String::from_utf8_lossy(&rest[8..8 + len]).into_owned());
            msg = &rest[8 + len + 1..];
        }
    }
    fields
}

#[test]
fn without_a_journal_socket_the_daemon_falls_back_to_plain_stderr() {
    let mut d = daemon_with_journal(None);
    d.stop_cleanly();
    let err = d.stderr();
    assert!(
        err.contains("cannot reach the journal socket; logging to stderr"),
        "{err}"
    );
    assert!(err.contains("mcpguard daemon ready"), "{err}");
    assert!(!err.contains('\x1b'), "no colours for the journal: {err:?}");
}

/// A file every user may read but no policy lists: opening it from a
/// server is a Landlock denial.
fn forbidden_file() -> PathBuf {
    let dir = tempdir("forbidden");
    let file = dir.join("secret-plans.txt");
    std::fs::write(&file, "x").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    file
}

/// A server that opens `file` (denied), says `ready`, and sleeps.
fn start_denied_then_sleep(d: &Daemon, policy: &Path, file: &Path) -> (Child, u32) {
    let script = format!(
        "import os, time\n\
         try:\n    open({:?})\nexcept OSError as e:\n    print('open', e.errno, flush=True)\n\
         print('ready', os.getpid(), flush=True)\n\
         time.sleep(300)\n",
        file.display().to_string()
    );
    let mut child = d
        .run_cmd(policy, &["/usr/bin/python3", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "open 13");
    let ready = lines.next().unwrap().unwrap();
    let pid: u32 = ready
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{ready}"));
    (child, pid)
}

fn status_json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", describe(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(out)))
}

/// Poll `status --json` as `uid` until `pred` holds.
fn wait_status(uid: u32, gid: u32, d: &Daemon, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status_json(&d.cli_as(uid, gid, &["status", "--json"]));
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed {what}: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const NOBODY: u32 = 65534;

#[test]
fn status_shows_layers_and_only_the_callers_own_servers_with_counts_and_last_denial() {
    let d = Daemon::start();
    let u = user();
    let file = forbidden_file();
    let pol = simple_policy("status", &[]);
    // Allowed opens outside a tool call are counted at `all` only.
    record_all_files(&pol);
    let (mut child, pid) = start_denied_then_sleep(&d, &pol, &file);

    let mine = wait_status(u.uid, u.gid, &d, "the denied open", |s| {
        // The server may have been denied other files while starting;
        // wait for the record of the one it was told to open.
        s["servers"].as_array().is_some_and(|v| {
            v.iter().any(|s| {
                s["last_denial"]["summary"]
                    .as_str()
                    .is_some_and(|d| d.contains("secret-plans.txt"))
            })
        })
    });
    assert_eq!(mine["only_uid"], u.uid);
    assert_eq!(mine["version"], env!("CARGO_PKG_VERSION"));
    assert!(mine["uptime_s"].as_u64().is_some());
    let layer = |name: &str| {
        mine["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["layer"] == name)
            .unwrap_or_else(|| panic!("no layer {name}: {mine:#}"))
            .clone()
    };
    for name in [
        "cgroup2",
        "landlock",
        "ebpf_egress",
        "audit_proc",
        "audit_open",
    ] {
        assert_eq!(layer(name)["active"], true, "{name}: {mine:#}");
    }
    let servers = mine["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{mine:#}");
    let s = &servers[0];
    assert_eq!(s["server"], "it-status");
    assert_eq!(s["policy"], pol.display().to_string());
    assert!(s["launch"].as_str().unwrap().starts_with("it-status-"));
    assert_eq!(s["pid"], pid);
    assert_eq!(s["uid"], u.uid);
    assert!(s["counts"]["open"]["allowed"].as_u64() > Some(0), "{s:#}");
    assert_eq!(s["audit_files"], "all", "{s:#}");
    assert_eq!(s["counts"]["launch"]["allowed"], 1, "{s:#}");
    let denial = &s["last_denial"];
    // The open's own record, or Landlock's (which comes a moment later
    // where the kernel logs Landlock's denials).
    assert!(
        denial["kind"] == "open" || denial["kind"] == "landlock",
        "{denial:#}"
    );
    assert!(
        denial["summary"]
            .as_str()
            .unwrap()
            .contains("secret-plans.txt"),
        "{denial:#}"
    );

    // Another user sees no servers; root sees every one.
    let theirs = status_json(&d.cli_as(NOBODY, NOBODY, &["status", "--json"]));
    assert_eq!(theirs["only_uid"], NOBODY);
    assert_eq!(theirs["servers"], serde_json::json!([]), "{theirs:#}");
    let all = status_json(&d.cli_as(0, 0, &["status", "--json"]));
    assert_eq!(all["only_uid"], Value::Null);
    assert!(
        all["servers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["launch"] == s["launch"]),
        "{all:#}"
    );

    // The human report names the server and its last denial.
    let human = d.cli_as(u.uid, u.gid, &["status"]);
    assert!(human.status.success(), "{}", describe(&human));
    let h = stdout_of(&human);
    assert!(
        h.contains(&format!("it-status[{}]", s["launch"].as_str().unwrap())),
        "{h}"
    );
    assert!(h.contains(&format!("pid {pid}")), "{h}");
    assert!(
        h.contains("last denial:") && h.contains("secret-plans.txt"),
        "{h}"
    );
    assert!(h.contains("ebpf_egress") && h.contains("active"), "{h}");

    // A server that ended is no longer listed.
    child.kill().unwrap();
    child.wait().unwrap();
    wait_status(u.uid, u.gid, &d, "no servers", |s| {
        s["servers"] == serde_json::json!([])
    });
}

#[test]
fn a_user_reads_only_their_own_records_through_the_daemon() {
    let d = Daemon::start();
    let u = user();
    let file = forbidden_file();
    let pol = simple_policy("audit-user", &[]);
    let other = simple_policy("audit-other", &[]);
    let script = format!(
        "try:\n    open({:?})\nexcept OSError:\n    pass\n",
        file.display().to_string()
    );
    let out = d.run(&pol, &["/usr/bin/python3", "-c", &script]);
    assert!(out.status.success(), "{}", describe(&out));
    // Another user's server (nobody has no home; the policy needs none).
    let out = d.cli_as(
        NOBODY,
        NOBODY,
        &[
            "run",
            "--socket",
            d.socket.to_str().unwrap(),
            "--policy",
            other.to_str().unwrap(),
            "--",
            "/bin/true",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    d.wait_record("the other user's server exit", |r| {
        is_kind(r, "server_exit") && r["server"] == "it-audit-other"
    });
    d.wait_record("the user's server exit", |r| {
        is_kind(r, "server_exit") && r["server"] == "it-audit-user"
    });

    let log = d.log.to_str().unwrap();
    // The test user cannot read the log itself.
    assert!(
        Command::new("/bin/cat")
            .arg(log)
            .uid(u.uid)
            .gid(u.gid)
            .output()
            .unwrap()
            .status
            .code()
            != Some(0)
    );
    let out = d.cli_as(u.uid, u.gid, &["audit", "--json", "--log", log]);
    assert!(out.status.success(), "{}", describe(&out));
    let recs: Vec<Value> = stdout_of(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!recs.is_empty(), "{}", describe(&out));
    assert!(
        recs.iter().all(|r| r["uid"] == u.uid),
        "records of other uids (or none) leaked: {}",
        describe(&out)
    );
    assert!(recs
        .iter()
        .any(|r| is_kind(r, "launch") && r["server"] == "it-audit-user"));
    assert!(!recs.iter().any(|r| r["server"] == "it-audit-other"));
    assert!(
        !recs.iter().any(|r| is_kind(r, "daemon")),
        "uid-less records are root's"
    );
    // Byte for byte as the log has them.
    let log_text = std::fs::read_to_string(&d.log).unwrap();
    for line in stdout_of(&out).lines() {
        assert!(
            log_text.lines().any(|l| l == line),
            "{line} is not a log line"
        );
    }

    // The same filters as for root.
    let out = d.cli_as(
        u.uid,
        u.gid,
        &[
            "audit", "--json", "--log", log, "--kind", "open", "--denied", "--since", "1h",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let denied: Vec<Value> = stdout_of(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!denied.is_empty(), "{}", describe(&out));
    assert!(denied
        .iter()
        .all(|r| is_kind(r, "open") && r["denied"] == true && r["uid"] == u.uid));
    assert!(denied.iter().any(|r| r["path"]
        .as_str()
        .is_some_and(|p| p.ends_with("secret-plans.txt"))));
    // Human lines too.
    let out = d.cli_as(
        u.uid,
        u.gid,
        &["audit", "--log", log, "--server", "it-audit-user"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout_of(&out).contains("DENY"), "{}", describe(&out));

    // Root still reads the file itself, every record.
    let out = d.cli_as(
        0,
        0,
        &[
            "audit",
            "--json",
            "--log",
            log,
            "--server",
            "it-audit-other",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout_of(&out).contains("it-audit-other"),
        "{}",
        describe(&out)
    );
}

#[test]
fn audit_follow_through_the_daemon_streams_new_records() {
    let d = Daemon::start();
    let u = user();
    let pol = simple_policy("follow", &[]);
    let mut follower = d
        .cli(&[
            "audit",
            "--json",
            "--follow",
            "--server",
            "it-follow",
            "--log",
            d.log.to_str().unwrap(),
        ])
        .uid(u.uid)
        .gid(u.gid)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stdout_lines(&mut follower);
    std::thread::sleep(Duration::from_millis(500));
    let out = d.run(&pol, &["/bin/sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let rec: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(rec["uid"], u.uid);
                let done = is_kind(&rec, "server_exit");
                seen.push(rec);
                if done {
                    break;
                }
            }
            Err(_) => {
                let _ = follower.kill();
                let mut err = String::new();
                let _ = follower.stderr.take().unwrap().read_to_string(&mut err);
                panic!("no server_exit followed; saw {seen:#?}\nstderr: {err}");
            }
        }
    }
    assert!(seen.iter().any(|r| is_kind(r, "launch")), "{seen:#?}");
    assert!(
        follower.try_wait().unwrap().is_none(),
        "--follow keeps running"
    );
    follower.kill().unwrap();
    follower.wait().unwrap();
}

#[test]
fn inside_a_guarded_server_status_sees_its_own_uid_and_audit_and_approvals_are_refused() {
    let d = Daemon::start();
    let u = user();
    let dir = tempdir("guarded-q");
    let pol = policy(
        &dir,
        "guarded-q",
        &format!(
            "name = \"it-guarded-q\"\n{}\n[env]\npass = [\"PATH\"]\n",
            base_fs(&[scratch()]).replace(
                "exec = [",
                &format!("exec = [{:?}, ", scratch().display().to_string())
            )
        ),
    );
    let sock = d.socket.to_str().unwrap();
    let log = d.log.to_str().unwrap();
    let b = bin();
    let script = format!(
        // One line: the relay withholds lines that look like broken JSON,
        // and pretty-printed JSON is that, line by line.
        "j=$({b} status --json --socket {sock}); s=$?; echo \"$j\" | tr -d '\\n'; \
         echo; echo status=$s; \
         {b} audit --json --socket {sock} --log {log}; echo audit=$?; \
         {b} approvals --socket {sock}; echo approvals=$?; \
         {b} approve 1 --socket {sock}; echo approve=$?; \
         {b} clear it-guarded-q-0 --socket {sock}; echo clear=$?",
        b = b.display()
    );
    let out = d.run(&pol, &["/bin/sh", "-c", &script]);
    let text = stdout_of(&out);
    assert!(text.contains("status=0"), "{}", describe(&out));
    let json_end = text.find("status=0").unwrap();
    let status: Value = serde_json::from_str(&text[..json_end])
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {}", describe(&out)));
    assert_eq!(status["only_uid"], u.uid);
    assert!(text.contains("audit=1"), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("inside a guarded server"),
        "{}",
        describe(&out)
    );
    // A server runs as its user, but may not list, approve or clear its
    // own calls.
    for verb in ["approvals", "approve", "clear"] {
        assert!(text.contains(&format!("{verb}=1")), "{}", describe(&out));
    }
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .matches("a server may not decide its own calls")
            .count(),
        3,
        "{}",
        describe(&out)
    );
}

fn query_conn(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    proto::send_query_hello(&s).unwrap();
    s
}

#[test]
fn the_daemon_bounds_what_a_query_client_can_hold() {
    let d = Daemon::start();
    // An oversized request is refused before it is read.
    let s = query_conn(&d);
    (&s).write_all(&(proto::MAX_QUERY_FRAME + 1).to_le_bytes())
        .unwrap();
    match proto::read_frame::<Response>(&mut &s).unwrap() {
        Some(Response::Error { message }) => assert!(message.contains("exceeds"), "{message}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // A launch request without descriptors is not a query.
    let s = query_conn(&d);
    proto::write_frame(&mut &s, &Request::Signal { signal: 15 }).unwrap();
    assert!(matches!(
        proto::read_frame::<Response>(&mut &s).unwrap(),
        Some(Response::Error { .. })
    ));

    // Each uid may keep a bounded number of queries open.
    let follow = || {
        let s = query_conn(&d);
        // A refused connection may be closed by the daemon before the
        // request is written (EPIPE); its answer is read below either way.
        let _ = proto::write_frame(
            &mut &s,
            &Request::Audit {
                version: proto::VERSION,
                query: Filter {
                    follow: true,
                    lines: Some(10),
                    ..Default::default()
                },
            },
        );
        s
    };
    let open: Vec<UnixStream> = (0..8).map(|_| follow()).collect();
    // Each has its last records (the daemon start record, at least) flowing.
    for s in &open {
        assert!(matches!(
            proto::read_frame::<Response>(&mut &*s).unwrap(),
            Some(Response::Records { .. })
        ));
    }
    let ninth = follow();
    match proto::read_frame::<Response>(&mut &ninth).unwrap() {
        Some(Response::Error { message }) => {
            assert!(message.contains("too many open queries"), "{message}")
        }
        other => panic!("expected too many, got {other:?}"),
    }
    // Hanging up frees a slot (the daemon notices within a poll).
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = follow();
        match proto::read_frame::<Response>(&mut &s).unwrap() {
            Some(Response::Records { .. }) => break,
            other => assert!(Instant::now() < deadline, "slot never freed: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // A connection that sends nothing is dropped.
    let silent = UnixStream::connect(&d.socket).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = (&silent).read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a silent connection was held for {:?}",
        started.elapsed()
    );
}

#[test]
fn under_a_delegated_cgroup_servers_live_inside_the_daemons_cgroup() {
    require_root();
    let mount = mcpguard::launch::cgroup::cgroup2_mount().unwrap();
    let unit = mount.join(format!("mcpguard-it-unit-{}", std::process::id()));
    std::fs::create_dir_all(&unit).unwrap();
    // As systemd marks a unit's cgroup with Delegate=yes.
    xattr_set(&unit, "user.delegate", b"1");
    let procs = unit.join("cgroup.procs");
    let script = format!("echo $$ > {} && exec \"$@\"", procs.display());
    let mut d = svc(
        &[("INVOCATION_ID", "0123456789abcdef0123456789abcdef")],
        &["sh", "-c", &script, "sh"],
    );
    let pol = simple_policy("delegated", &[]);
    let out = d.run(&pol, &["/bin/cat", "/proc/self/cgroup"]);
    assert!(out.status.success(), "{}\n{}", describe(&out), d.stderr());
    let rel = format!("/{}/", unit.file_name().unwrap().to_string_lossy());
    assert!(
        stdout_of(&out)
            .lines()
            .any(|l| l.starts_with("0::") && l[3..].starts_with(&rel)),
        "the server's cgroup is not below the delegated one: {}",
        describe(&out)
    );
    // The audit thread writes the launch record a moment after the server
    // ran; wait for it rather than race it.
    let launch = d.wait_record("the launch record", |r| is_kind(r, "launch"));
    assert!(
        launch["cgroup"]
            .as_str()
            .unwrap()
            .starts_with(&unit.display().to_string()),
        "{launch}"
    );
    d.stop_cleanly();
    // The daemon left the cgroup empty; remove what it made, then the unit.
    let tree = unit.join(svc_cgroup_name());
    let _ = std::fs::remove_dir(&tree);
    let _ = std::fs::remove_dir(&unit);
}

fn xattr_set(path: &Path, name: &str, value: &[u8]) {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import os, sys; os.setxattr(sys.argv[1], sys.argv[2], sys.argv[3].encode())")
        .arg(path)
        .arg(name)
        .arg(std::str::from_utf8(value).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}
