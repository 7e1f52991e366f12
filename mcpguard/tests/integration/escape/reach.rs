//! The root helper must not extend the user's reach: a policy (or the
//! client's cwd) naming a path the test user cannot reach gives the server
//! nothing it could not reach itself. The launch helper opens such paths
//! as root-then-user, so these rows aim at what root alone could open: a
//! world-readable file in a root-only directory below `/tmp` (which the
//! mount namespace would bind back behind fresh parents), the same outside
//! the runtime directories, root-only files below the baseline's `/etc`,
//! sockets in another user's `0700` directories, and a working directory
//! the user cannot enter.
//!
//! Blocked: the server saw an errno (or did not start) and nothing leaked.
//! Recorded: the audit log holds the failed syscall, and the launch record
//! (`layers.mounts.unreachable`, `layers.landlock.skipped_paths`) names the
//! path the user could not reach, or a `launch_failed` record says why the
//! launch was refused.

use std::{
    os::unix::{
        fs::{chown, PermissionsExt},
        net::UnixListener,
    },
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::{
    files::{cite, failed_open, guarded_policy, s, Fs, Steps, MARKER},
    hostile, hostile_argv, report, Class, Row,
};
use crate::harness::*;

/// A directory only root may enter, holding a world-readable secret file.
fn root_only_dir(parent: &Path, name: &str) -> (PathBuf, PathBuf) {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("open.txt");
    std::fs::write(&file, format!("{MARKER} {name}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    (dir, file)
}

/// A directory outside the scratch tree, removed even when the test fails.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A socket any user may connect to, in a `0700` directory of `owner`.
fn private_socket(dir: &Path, owner: &TestUser, name: &str) -> (PathBuf, UnixListener) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    chown(&path, Some(owner.uid), Some(owner.gid)).unwrap();
    chown(dir, Some(owner.uid), Some(owner.gid)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    (path, listener)
}

/// The launch record of `server`.
fn launch_record(d: &Daemon, server: &str) -> Option<Value> {
    d.find_record(|r| is_kind(r, "launch") && r["server"] == server)
}

/// Whether `entries` (a report list of `{list, path, reason}`) names
/// `path` as not reachable by the user.
fn lists_unreachable(entries: &Value, path: &Path, list: &str) -> bool {
    entries.as_array().is_some_and(|a| {
        a.iter().any(|e| {
            e["path"] == s(path)
                && e["list"] == list
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("EACCES") && r.contains("cannot reach it"))
        })
    })
}

/// Runs `argv` under `pol` from the test user's home: the usual cwd
/// (scratch, below /tmp) would be bound back whole and show the test's
/// root-only directories as they are, hiding what the binds do.
fn run_from_home(
    d: &Daemon,
    pol: &Path,
    argv: &[impl AsRef<std::ffi::OsStr>],
) -> std::process::Output {
    d.run_cmd_from(pol, argv, &user().home)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn run_files(d: &Daemon, pol: &Path, steps: &[String]) -> Steps {
    Steps::parse(&run_from_home(d, pol, &hostile_argv("files", steps)))
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "the class's attack rows, one block each, in report order"
)]
fn the_root_helper_does_not_extend_the_users_reach() {
    let d = Daemon::start();
    let tag = std::process::id();
    let dir = tempdir("esc-reach");
    let mut reads = Vec::new();
    let mut unix = Vec::new();

    // -- Class 1: files root can open and the user cannot. --------------
    // Below /tmp (tempdir is there): the mount namespace binds back what
    // the policy names below the runtime directories.
    let (tmp_dir, tmp_file) = root_only_dir(&dir, "root-only");
    // Outside the runtime directories: only Landlock's rule was at stake.
    let var_parent = PathBuf::from(format!("/var/lib/mcpguard-esc-reach-{tag}"));
    let _cleanup = Removed(var_parent.clone());
    let (_, var_file) = root_only_dir(&var_parent, "root-only");
    std::fs::set_permissions(&var_parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pol = guarded_policy(
        &dir,
        "esc-reach",
        &Fs {
            read: vec![s(&tmp_file), s(&var_file), "/etc/shadow".into()],
            ..Fs::default()
        },
        "",
    );
    let steps = run_files(
        &d,
        &pol,
        &[
            format!("tmp=read,{}", s(&tmp_file)),
            format!("var=read,{}", s(&var_file)),
            "shadow=read,/etc/shadow".to_owned(),
        ],
    );
    let launch = launch_record(&d, "esc-reach");
    let layers = launch.as_ref().map_or(Value::Null, |l| l["layers"].clone());
    let read_row = |attack: &str, step: &str, path: &Path, in_launch: bool| {
        let rec = d.find_record(failed_open("esc-reach", &s(path)));
        Row::new(
            attack,
            steps.refused(step),
            rec.is_some() && in_launch,
            format!(
                "{}; {}; launch record names it unreachable: {in_launch}",
                steps.seen(step),
                cite(&rec)
            ),
        )
    };
    reads.push(read_row(
        "policy names a world-readable file in a root-only (0700) directory below /tmp",
        "tmp",
        &tmp_file,
        lists_unreachable(&layers["mounts"]["unreachable"], &tmp_file, "filesystem"),
    ));
    reads.push(read_row(
        "policy names a world-readable file in a root-only (0700) directory outside the runtime dirs",
        "var",
        &var_file,
        lists_unreachable(&layers["landlock"]["skipped_paths"], &var_file, "read"),
    ));
    // /etc/shadow is reachable by path (/etc is world-traversable), so it
    // gets its rule, and DAC on the file itself refuses the read.
    let rec = d.find_record(failed_open("esc-reach", "/etc/shadow"));
    reads.push(Row::new(
        "policy (and the baseline's /etc) name /etc/shadow, a root-only file",
        steps.refused("shadow") && steps.result("shadow") == "EACCES",
        rec.is_some(),
        format!("{}; {}", steps.seen("shadow"), cite(&rec)),
    ));

    // The root-only directory itself named: bound back as it is, 0700
    // root, so its file stays out of reach.
    let pol_dir = guarded_policy(
        &dir,
        "esc-reach-dir",
        &Fs {
            read: vec![s(&tmp_dir)],
            ..Fs::default()
        },
        "",
    );
    let steps_dir = run_files(&d, &pol_dir, &[format!("in_dir=read,{}", s(&tmp_file))]);
    let rec = d.find_record(failed_open("esc-reach-dir", &s(&tmp_file)));
    reads.push(Row::new(
        "policy names a root-only (0700) directory below /tmp; read a world-readable file in it",
        steps_dir.refused("in_dir"),
        rec.is_some(),
        format!("{}; {}", steps_dir.seen("in_dir"), cite(&rec)),
    ));

    // -- Class 4: sockets in another user's private directories. --------
    let other = other_user();
    let (tmp_sock, tmp_l) = private_socket(&dir.join("other-private"), other, "agent.sock");
    let run_other = PathBuf::from(format!("/run/user/{}", other.uid));
    let made_run_other = !run_other.exists();
    let (run_sock, run_l) = private_socket(&run_other, other, &format!("esc-{tag}-bus"));
    let pol_unix = guarded_policy(
        &dir,
        "esc-reach-unix",
        &Fs::default(),
        &format!("[network]\nunix = [{:?}, {:?}]", s(&tmp_sock), s(&run_sock)),
    );
    for (path, listener, attack) in [
        (
            &tmp_sock,
            &tmp_l,
            "`[network] unix` names a socket in another user's 0700 directory below /tmp",
        ),
        (
            &run_sock,
            &run_l,
            "`[network] unix` names a socket in /run/user/<another user's uid>",
        ),
    ] {
        let out = run_from_home(&d, &pol_unix, &hostile_argv("net", &["unix", &s(path)]));
        let got = stdout_of(&out)
            .lines()
            .find_map(|l| l.strip_prefix("unix ").map(str::to_owned))
            .unwrap_or_else(|| format!("no result ({})", describe(&out)));
        let accepted = listener.accept().is_ok();
        let rec = d.find_record(|r| {
            is_kind(r, "unix_connect")
                && r["server"] == "esc-reach-unix"
                && r["path"] == s(path)
                && r["result"].as_i64().is_some_and(|v| v < 0)
                && r["denied"] == true
        });
        let launch = launch_record(&d, "esc-reach-unix");
        let in_launch = launch.as_ref().is_some_and(|l| {
            lists_unreachable(&l["layers"]["mounts"]["unreachable"], path, "unix")
        });
        unix.push(Row::new(
            attack,
            got != "ok" && !got.starts_with("no result") && !accepted,
            rec.is_some() && in_launch,
            format!(
                "connect({}): {got}, listener accepted: {accepted}; {}; launch record names it unreachable: {in_launch}",
                path.display(),
                cite(&rec)
            ),
        ));
    }
    drop((tmp_l, run_l));
    if made_run_other {
        let _ = std::fs::remove_dir_all(&run_other);
    } else {
        let _ = std::fs::remove_file(&run_sock);
    }

    // -- Class 2: a working directory the user cannot enter. ------------
    let work = tmp_dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let pol_cwd = guarded_policy(&dir, "esc-reach-cwd", &Fs::default(), "");
    let files = hostile("files");
    let out = d
        .run_cmd_from(
            &pol_cwd,
            &[files.to_str().unwrap(), "pwd=read,marker-not-needed"],
            &work,
        )
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        stdout_of(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = !out.status.success()
        && !stdout_of(&out).contains("pwd ")
        && text.contains("chdir")
        && text.contains("EACCES");
    let rec = d.find_record(|r| {
        is_kind(r, "launch_failed")
            && r["server"] == "esc-reach-cwd"
            && r["error"]
                .as_str()
                .is_some_and(|e| e.contains(&s(&work)) && e.contains("EACCES"))
    });
    let cwd_rows = [Row::new(
        "client's cwd is a directory its user cannot enter (root-only, below /tmp)",
        refused,
        rec.is_some(),
        format!(
            "mcpguard run: {}; {}",
            text.lines().last().unwrap_or("").trim(),
            rec.as_ref()
                .map_or("no launch_failed record".to_owned(), |r| format!(
                    "audit launch_failed error={}",
                    r["error"]
                ))
        ),
    )];

    // Every class's rows reach the report before any of them fails the test.
    let outcomes = [
        (Class::SensitiveReads, &reads[..]),
        (Class::PathTricks, &cwd_rows[..]),
        (Class::Egress, &unix[..]),
    ]
    .map(|(class, rows)| std::panic::catch_unwind(|| report(class, rows)));
    for outcome in outcomes {
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}
