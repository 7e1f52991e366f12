//! Faults of the audit log's storage, on real filesystems: a tmpfs filled
//! to the last byte, an ext4 that the kernel turned read-only after an
//! error, a log directory rotated away with something else in its place.
//!
//! Each test asserts that enforcement does not depend on the log (the
//! denial happens while the log fails), that the daemon says so (stderr,
//! `mcpguard status --json`) and keeps running, and that once the log
//! works again the records kept in memory reach it whole, or, when they
//! overflowed the backlog, a `loss` record counts them before later records.

use std::{
    io::Write,
    os::unix::fs::{chown, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::harness::*;

/// A filesystem mounted for one test, lazily unmounted on drop (a daemon
/// may still hold the log open), and its image removed.
pub(crate) struct Mount {
    dir: PathBuf,
    image: Option<PathBuf>,
}

impl Mount {
    /// A tmpfs of `size` (`mount -o size=`) at a fresh directory.
    fn tmpfs(size: &str) -> Mount {
        let dir = tempdir("fault-tmpfs");
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size},mode=0755"))
                .arg("tmpfs")
                .arg(&dir),
        );
        Mount { dir, image: None }
    }

    /// An ext4 in a loop-mounted image of `mib` MiB at a fresh directory,
    /// remounted read-only by the kernel on its first error.
    pub(crate) fn ext4(mib: u64) -> Mount {
        let dir = tempdir("fault-ext4");
        let image = dir.with_extension("img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        run_ok(
            Command::new("mount")
                .args(["-o", "loop,errors=remount-ro"])
                .arg(&image)
                .arg(&dir),
        );
        Mount {
            dir,
            image: Some(image),
        }
    }

    /// Make the kernel see an ext4 error: the filesystem goes read-only
    /// with the log still open for writing (a plain `remount,ro` is refused
    /// while it is).
    pub(crate) fn fail_ext4(&self) {
        let out = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.dir)
            .output()
            .unwrap();
        let source = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let dev = Path::new(&source)
            .file_name()
            .unwrap_or_else(|| panic!("no block device mounted at {}", self.dir.display()));
        let trigger = Path::new("/sys/fs/ext4").join(dev).join("trigger_fs_error");
        std::fs::write(&trigger, "1")
            .unwrap_or_else(|e| panic!("{}: {e} (ext4 error injection)", trigger.display()));
        let probe = self.dir.join("probe");
        let err = std::fs::write(&probe, "x").expect_err("ext4 still writable after an error");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    }

    /// Detach the filesystem (lazily: the daemon holds the log open).
    fn detach(&self) {
        run_ok(Command::new("umount").arg("-l").arg(&self.dir));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == self.dir.to_str());
        if mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        if let Some(image) = &self.image {
            let _ = std::fs::remove_file(image);
        }
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", describe(&out));
}

/// Fill the filesystem holding `dir` to the last byte; returns the filler.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = [0u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    path
}

/// A secret in the test user's ~/.ssh, and a policy `it-<tag>` whose
/// server may not read it. It records all file activity (`[audit] files =
/// "all"`): these tests need the volume of records a whole run makes.
fn secret_and_policy(tag: &str) -> (PathBuf, PathBuf) {
    let u = user();
    let ssh = u.home.join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let secret = ssh.join(format!("id_mcpguard_{tag}"));
    std::fs::write(&secret, "PRIVATE KEY\n").unwrap();
    chown(&ssh, Some(u.uid), Some(u.gid)).unwrap();
    chown(&secret, Some(u.uid), Some(u.gid)).unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pol = simple_policy(tag, &[]);
    record_all_files(&pol);
    (secret, pol)
}

/// Run a server that tries to read `secret`; asserts the kernel refused it.
fn read_denied(d: &Daemon, pol: &Path, secret: &Path) {
    let script = format!(
        "import errno\ntry:\n    open('{}').read()\n    print('read')\nexcept OSError as e:\n    print('error', errno.errorcode[e.errno])\n",
        secret.display()
    );
    let out = d.run(pol, &["/usr/bin/python3", "-c", &script]);
    assert!(
        stdout_of(&out).contains("error EACCES"),
        "the read of {} was not denied while the audit log failed\n{}",
        secret.display(),
        describe(&out)
    );
}

/// Poll the daemon's audit-log status until `pred` holds (10 s).
fn wait_sink(d: &Daemon, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = daemon_status(d);
        let sink = s["audit_log"].clone();
        if pred(&sink) {
            return sink;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed {what}: {sink:#}\n--- daemon stderr ---\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait (10 s) until the daemon's stderr contains `text`.
fn wait_stderr(d: &Daemon, text: &str) {
    let said = poll(Duration::from_secs(10), || {
        d.stderr().contains(text).then_some(())
    });
    assert!(
        said.is_some(),
        "daemon stderr never said {text:?}:\n{}",
        d.stderr()
    );
}

fn assert_running(d: &mut Daemon) {
    let child = d.child.as_mut().expect("daemon started");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon exited:\n{}",
        d.stderr()
    );
}

/// A daemon with extra flags `args` logging to `audit.jsonl` on `fs`,
/// once its start record is in.
pub(crate) fn daemon_logging_on(fs: &Mount, args: &[&str]) -> Daemon {
    let d = Daemon::spawn(Opts {
        log: Some(&fs.dir.join("audit.jsonl")),
        args,
        ..Opts::default()
    });
    d.wait_record("daemon start", |r| is_kind(r, "daemon"));
    d
}

fn is_denial_of(r: &Value, server: &str, secret: &Path) -> bool {
    is_kind(r, "open")
        && r["server"] == server
        && r["path"] == secret.to_str().unwrap()
        && r["denied"] == true
}

#[test]
fn a_full_disk_keeps_enforcing_and_the_backlog_reaches_the_log_once_space_returns() {
    let fs = Mount::tmpfs("256k");
    let mut d = daemon_logging_on(&fs, &[]);
    let (secret, pol) = secret_and_policy("faults-full");
    let filler = fill(&fs.dir);

    read_denied(&d, &pol, &secret);
    let sink = wait_sink(&d, "a failing audit log", |s| s["state"] == "failing");
    let error = sink["error"].as_str().unwrap_or_default();
    assert!(error.contains("No space left on device"), "{sink:#}");
    assert!(error.contains(d.log.to_str().unwrap()), "{sink:#}");
    assert!(sink["since"].is_string(), "{sink:#}");
    assert!(sink["backlog_records"].as_u64().unwrap() > 0, "{sink:#}");
    assert_eq!(
        sink["dropped"], 0,
        "the default backlog holds a run: {sink:#}"
    );
    let human = Command::new(bin())
        .args(["status", "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    let text = stdout_of(&human);
    assert!(
        text.contains(&format!("audit log: {}  FAILING since", d.log.display()))
            && text.contains("waiting in memory"),
        "{}",
        describe(&human)
    );
    wait_stderr(&d, "the audit log cannot be written");
    assert!(
        d.stderr().contains("No space left on device"),
        "{}",
        d.stderr()
    );
    assert!(
        !d.records()
            .iter()
            .any(|r| is_denial_of(r, "it-faults-full", &secret)),
        "the denial reached a full disk?"
    );
    assert_running(&mut d);

    std::fs::remove_file(filler).unwrap();
    // Every line parses (records() panics otherwise): the line the full
    // disk cut short was cut off, not left to corrupt the log.
    d.wait_record("the denial, from the backlog", |r| {
        is_denial_of(r, "it-faults-full", &secret) && r["errno"] == "EACCES"
    });
    d.wait_record("the server's exit", |r| {
        is_kind(r, "server_exit") && r["server"] == "it-faults-full"
    });
    let sink = wait_sink(&d, "the audit log working again", |s| s["state"] == "ok");
    assert_eq!(sink["backlog_records"], 0, "{sink:#}");
    assert_eq!(sink["dropped_total"], 0, "{sink:#}");
    wait_stderr(&d, "the audit log works again");
    let records = d.records();
    assert!(
        !records.iter().any(|r| is_kind(r, "loss")),
        "nothing was lost, yet a loss record: {records:#?}"
    );
    let launches = records
        .iter()
        .filter(|r| is_kind(r, "launch") && r["server"] == "it-faults-full")
        .count();
    assert_eq!(launches, 1);
    assert_running(&mut d);
    // The hash chain went through the full disk unbroken.
    let verify = Command::new(bin())
        .args(["audit", "verify", "--log"])
        .arg(&d.log)
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", describe(&verify));
}

#[test]
fn an_overflowing_backlog_is_reported_by_a_loss_record_before_later_records() {
    let fs = Mount::tmpfs("256k");
    let mut d = daemon_logging_on(&fs, &["--audit-backlog", "4096"]);
    let (secret, pol) = secret_and_policy("faults-overflow");
    let filler = fill(&fs.dir);

    // Python's start alone makes far more than 4 KiB of records.
    read_denied(&d, &pol, &secret);
    wait_sink(&d, "records dropped", |s| {
        s["state"] == "failing" && s["dropped"].as_u64().unwrap_or(0) > 0
    });
    // Once the server's last records are in, the count stays put.
    let mut dropped = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = daemon_status(&d)["audit_log"]["dropped"].as_u64().unwrap();
        if now == dropped {
            break;
        }
        dropped = now;
        assert!(Instant::now() < deadline, "drops never settled");
    }
    let sink = daemon_status(&d)["audit_log"].clone();
    assert_eq!(sink["dropped_total"], dropped, "{sink:#}");
    assert!(sink["backlog_bytes"].as_u64().unwrap() <= 4096, "{sink:#}");
    assert_eq!(sink["backlog_cap_bytes"], 4096, "{sink:#}");
    assert_running(&mut d);

    std::fs::remove_file(filler).unwrap();
    let loss = d.wait_record("the audit sink's loss record", |r| {
        is_kind(r, "loss") && r["source"] == "audit_sink"
    });
    assert_eq!(loss["lost"], dropped, "{loss}");
    assert!(loss["total"].as_u64().unwrap() >= dropped, "{loss}");
    let (first, last) = (
        loss["first_ts"].as_str().unwrap(),
        loss["last_ts"].as_str().unwrap(),
    );
    assert!(first <= last, "{loss}");
    wait_sink(&d, "the audit log working again", |s| {
        s["state"] == "ok" && s["dropped"] == 0 && s["dropped_total"] == dropped
    });
    wait_stderr(
        &d,
        "records that did not fit in memory are reported by a loss record",
    );

    // A later server's records come after the loss record; what the backlog
    // held (the first server's launch) before it.
    let out = d.run(&pol, &["/usr/bin/true"]);
    assert!(out.status.success(), "{}", describe(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    let records = loop {
        let records = d.records();
        let exits = records
            .iter()
            .filter(|r| is_kind(r, "server_exit") && r["server"] == "it-faults-overflow")
            .count();
        // The first run's exit record may be among those dropped.
        if exits >= 1 && records.last().is_some_and(|r| is_kind(r, "server_exit")) {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "the second run left no exit record: {records:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let at = |pred: &dyn Fn(&Value) -> bool| records.iter().position(pred);
    let loss_at = at(&|r| is_kind(r, "loss") && r["source"] == "audit_sink").unwrap();
    let launches: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| is_kind(r, "launch") && r["server"] == "it-faults-overflow")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(launches.len(), 2, "{records:#?}");
    assert!(
        launches[0] < loss_at && loss_at < launches[1],
        "launch {} / loss {loss_at} / launch {}",
        launches[0],
        launches[1]
    );
    assert_eq!(
        records.iter().filter(|r| is_kind(r, "loss")).count(),
        1,
        "one loss record for one overflow"
    );
    assert_running(&mut d);
}

#[test]
fn a_filesystem_gone_read_only_keeps_enforcing_and_the_log_follows_its_path_back() {
    let fs = Mount::ext4(8);
    let mut d = daemon_logging_on(&fs, &[]);
    let (secret, pol) = secret_and_policy("faults-ro");
    fs.fail_ext4();

    read_denied(&d, &pol, &secret);
    let sink = wait_sink(&d, "a failing audit log", |s| s["state"] == "failing");
    assert!(
        sink["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Read-only file system"),
        "{sink:#}"
    );
    assert!(sink["backlog_records"].as_u64().unwrap() > 0, "{sink:#}");
    wait_stderr(&d, "the audit log cannot be written");
    assert_running(&mut d);

    // The admin takes the broken filesystem away; the path now names a
    // writable directory, and the daemon notices on its own.
    fs.detach();
    wait_stderr(&d, "the audit log was moved, replaced or removed");
    d.wait_record("the denial, from the backlog", |r| {
        is_denial_of(r, "it-faults-ro", &secret)
    });
    d.wait_record("the server's launch", |r| {
        is_kind(r, "launch") && r["server"] == "it-faults-ro"
    });
    let sink = wait_sink(&d, "the audit log working again", |s| s["state"] == "ok");
    assert_eq!(sink["dropped_total"], 0, "{sink:#}");
    assert_running(&mut d);
}

#[test]
fn a_failed_reopen_after_sighup_keeps_records_until_the_path_works() {
    let mut d = Daemon::start();
    d.wait_record("daemon start", |r| is_kind(r, "daemon"));
    let (secret, pol) = secret_and_policy("faults-hup");
    // Rotation moved the whole directory away, and something else now
    // sits where it was: the log cannot be created again.
    let dir = d.log.parent().unwrap().to_path_buf();
    let rotated = dir.with_extension("1");
    std::fs::rename(&dir, &rotated).unwrap();
    std::fs::write(&dir, "").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.child.as_ref().unwrap().id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_stderr(&d, "SIGHUP: reopening the audit log");
    let sink = wait_sink(&d, "a failing audit log", |s| s["state"] == "failing");
    assert!(
        sink["error"]
            .as_str()
            .unwrap_or_default()
            .contains(dir.to_str().unwrap()),
        "{sink:#}"
    );
    read_denied(&d, &pol, &secret);
    wait_sink(&d, "the run's records in the backlog", |s| {
        s["backlog_records"].as_u64().unwrap_or(0) > 0
    });
    assert_running(&mut d);

    std::fs::remove_file(&dir).unwrap();
    d.wait_record("the denial, in the new log", |r| {
        is_denial_of(r, "it-faults-hup", &secret)
    });
    wait_sink(&d, "the audit log working again", |s| s["state"] == "ok");
    let old = std::fs::read_to_string(rotated.join("audit.jsonl")).unwrap();
    assert!(old.contains(r#""event":"start""#), "{old}");
    assert!(!old.contains("it-faults-hup"), "{old}");
    assert_running(&mut d);
}

#[test]
fn a_daemon_stopped_while_the_log_fails_says_how_many_records_it_could_not_write() {
    let fs = Mount::tmpfs("256k");
    let mut d = daemon_logging_on(&fs, &[]);
    let (secret, pol) = secret_and_policy("faults-stop");
    fill(&fs.dir);
    read_denied(&d, &pol, &secret);
    wait_sink(&d, "records waiting", |s| {
        s["state"] == "failing" && s["backlog_records"].as_u64().unwrap_or(0) > 0
    });
    let status = d.stop();
    assert!(status.success(), "daemon exit {status}:\n{}", d.stderr());
    // Without the terminal colours the log carries.
    let stderr = regex::Regex::new("\x1b\\[[0-9;]*m")
        .unwrap()
        .replace_all(&d.stderr(), "")
        .into_owned();
    let said = stderr
        .lines()
        .find(|l| l.contains("audit records lost at close"))
        .unwrap_or_else(|| panic!("no word of the records lost at close:\n{stderr}"));
    assert!(
        said.contains("ERROR") && said.contains(" records="),
        "{said}"
    );
}
