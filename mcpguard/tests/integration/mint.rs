//! Minted secrets: `[secrets] X = { mint = "helper" }` runs a root-owned
//! helper from the daemon's minters directory for each launch. The value
//! reaches the server and nothing else (redacted from what the server sends
//! back, absent from the audit log and the daemon's log); each launch gets
//! its own; a failing, hanging or unsafe helper refuses the launch.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{
    harness::*,
    mcp::{fixture_policy, session},
};

/// A minters directory (root's, 0755) and a root-only directory where the
/// test helpers note what they did.
fn minters() -> (PathBuf, PathBuf) {
    let dir = tempdir("minters");
    let notes = tempdir("mint-notes");
    std::fs::set_permissions(&notes, std::fs::Permissions::from_mode(0o700)).unwrap();
    (dir, notes)
}

/// Writes helper `name` (a POSIX sh script) with `mode`.
fn helper(dir: &Path, name: &str, script: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A helper that mints a random token, notes it and the contract's
/// variables in `notes/minted`, and says so on stderr (token included, as
/// a careless helper would).
fn random_helper(dir: &Path, notes: &Path) {
    let script = format!(
        r#"v="minted-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
echo "$v $MCPGUARD_USER $MCPGUARD_UID $MCPGUARD_SERVER $MCPGUARD_LAUNCH $MCPGUARD_ENV $MCPGUARD_TTL_SECS $(pwd) ${{HOME:-nohome}}" >> {}
echo "minting for $MCPGUARD_LAUNCH: $v" >&2
echo "$v""#,
        notes.join("minted").display()
    );
    helper(dir, "gen", &script, 0o755);
}

fn daemon(minters: &Path) -> Daemon {
    let state = tempdir("state");
    Daemon::start_with(&[
        "--minters-dir",
        minters.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ])
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .unwrap()
        .unwrap()
        .name
}

/// A policy `it-<tag>` with `MINTED_TOKEN` minted by `helper`.
fn mint_policy(tag: &str, helper: &str) -> PathBuf {
    let pol = simple_policy(tag, &[]);
    let mut text = std::fs::read_to_string(&pol).unwrap();
    text.push_str(&format!(
        "[secrets]\nMINTED_TOKEN = {{ mint = {helper:?} }}\n"
    ));
    std::fs::write(&pol, text).unwrap();
    pol
}

#[test]
fn a_minted_credential_reaches_the_server_only_and_each_launch_gets_its_own() {
    let (dir, notes) = minters();
    random_helper(&dir, &notes);
    let d = daemon(&dir);
    let (pol, script) = fixture_policy(
        "it-mint",
        "[secrets]\nMINTED_TOKEN = { mint = \"gen\", ttl = \"15m\" }\n",
        &[],
    );
    let python = peers().join("venv/bin/python");
    let server = [python.to_str().unwrap(), script.to_str().unwrap()];
    let mut client_stderr = String::new();
    for _ in 0..2 {
        let (report, stderr) = session(
            &d,
            &pol,
            json!([["leak_env", {"name": "MINTED_TOKEN"}]]),
            &server,
        );
        // The server had the value of this launch: it comes back redacted.
        assert_eq!(
            report["results"][0]["text"][0], "[REDACTED:MINTED_TOKEN]",
            "{report}"
        );
        assert!(
            stderr.contains("MINTED_TOKEN is [REDACTED:MINTED_TOKEN]"),
            "{stderr}"
        );
        client_stderr.push_str(&stderr);
    }

    // The helper ran once per launch, as root's code with the contract's
    // variables and nothing else, and minted two different values.
    let minted = std::fs::read_to_string(notes.join("minted")).unwrap();
    let lines: Vec<Vec<&str>> = minted.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 2, "{minted}");
    let u = user();
    for l in &lines {
        assert_eq!(
            l[1..],
            [
                user_name(u.uid).as_str(),
                u.uid.to_string().as_str(),
                "it-mint",
                l[4],
                "MINTED_TOKEN",
                "900",
                "/",
                "nohome"
            ],
            "{minted}"
        );
    }
    let (values, launches) = ([lines[0][0], lines[1][0]], [lines[0][4], lines[1][4]]);
    assert_ne!(values[0], values[1], "{minted}");
    assert_ne!(launches[0], launches[1], "{minted}");

    // Each launch's record names the helper, the lifetime and the expiry.
    for launch in launches {
        let rec = d.wait_record("secret_minted of the launch", |r| {
            is_kind(r, "secret_minted") && r["launch"] == launch
        });
        assert_eq!(rec["env"], "MINTED_TOKEN", "{rec}");
        assert_eq!(rec["helper"], "gen", "{rec}");
        assert_eq!(
            rec["path"],
            dir.canonicalize().unwrap().join("gen").to_str().unwrap(),
            "{rec}"
        );
        assert_eq!(rec["ttl_secs"], 900, "{rec}");
        assert_eq!(rec["server"], "it-mint", "{rec}");
        let ts = humantime::parse_rfc3339(rec["ts"].as_str().unwrap()).unwrap();
        let expires = humantime::parse_rfc3339(rec["expires_at"].as_str().unwrap()).unwrap();
        let ttl = expires.duration_since(ts).unwrap_or_default();
        assert!(
            ttl > Duration::from_secs(890) && ttl <= Duration::from_secs(900),
            "{rec}"
        );
        d.wait_record("the launch itself", |r| {
            is_kind(r, "launch") && r["launch"] == launch
        });
    }
    let human = d
        .cli(&[
            "audit",
            "--log",
            d.log.to_str().unwrap(),
            "--kind",
            "secret_minted",
        ])
        .output()
        .unwrap();
    let human = stdout_of(&human);
    assert!(
        human.contains("secret_minted MINTED_TOKEN by helper gen (")
            && human.contains("ttl=900s expires "),
        "{human}"
    );

    // The values are nowhere but in the server: not in the audit log, not
    // in the daemon's log (the helper's stderr went there redacted), not
    // on the client's side.
    d.wait_record("session totals", |r| {
        is_kind(r, "mcp") && r["event"] == "session" && r["launch"] == launches[1]
    });
    let log_dir = d.log.parent().unwrap();
    let daemon_log = d.stderr();
    assert!(
        daemon_log.contains("[REDACTED:MINTED_TOKEN]"),
        "the helper's stderr, redacted: {daemon_log}"
    );
    for value in values {
        for entry in std::fs::read_dir(log_dir).unwrap() {
            let body = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(
                !String::from_utf8_lossy(&body).contains(value),
                "minted value in the audit log"
            );
        }
        assert!(
            !daemon_log.contains(value),
            "minted value in the daemon's log"
        );
        assert!(!client_stderr.contains(value), "{client_stderr}");
        assert!(!human.contains(value), "{human}");
    }
}

/// `mcpguard run` of `pol` must be refused: the client's error, and the
/// launch's `launch_failed` record, both naming the variable and helper.
fn refused(d: &Daemon, pol: &Path, helper: &str, why: &str) -> (String, Value) {
    let out = d.run(pol, &["/bin/true"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("MINTED_TOKEN") && stderr.contains(helper) && stderr.contains(why),
        "{stderr}"
    );
    let rec = d.wait_record("launch_failed of the refused launch", |r| {
        is_kind(r, "launch_failed")
            && r["error"]
                .as_str()
                .is_some_and(|e| e.contains(helper) && e.contains(why))
    });
    assert!(
        rec["error"].as_str().unwrap().contains("MINTED_TOKEN"),
        "{rec}"
    );
    let launch = rec["launch"].as_str().unwrap().to_owned();
    // Nothing of the launch was made: no server, no cgroup.
    assert!(
        !d.records()
            .iter()
            .any(|r| is_kind(r, "launch") && r["launch"] == launch.as_str()),
        "a refused launch ran"
    );
    let cgroup = mcpguard::launch::cgroup::cgroup2_mount()
        .unwrap()
        .join(format!("mcpguard-it-{}", std::process::id()))
        .join(&launch);
    assert!(!cgroup.exists(), "{} left behind", cgroup.display());
    (stderr, rec)
}

#[test]
fn a_failing_or_hanging_helper_refuses_the_launch_and_leaves_nothing() {
    let (dir, notes) = minters();
    helper(
        &dir,
        "fails",
        "echo failing-token-0123456789; echo failing-token-0123456789 >&2; exit 3",
        0o755,
    );
    let pidfile = notes.join("hang.pid");
    helper(
        &dir,
        "hangs",
        &format!("sleep 300 & echo $$ > {}; sleep 300", pidfile.display()),
        0o755,
    );
    helper(&dir, "short", "echo abc", 0o755);
    let d = daemon(&dir);

    let (stderr, rec) = refused(
        &d,
        &mint_policy("mint-fails", "fails"),
        "\"fails\"",
        "exit status: 3",
    );
    for text in [&stderr, &rec.to_string(), &d.stderr()] {
        assert!(!text.contains("failing-token-0123456789"), "{text}");
    }
    refused(
        &d,
        &mint_policy("mint-short", "short"),
        "\"short\"",
        "fewer than 8 bytes",
    );

    let started = Instant::now();
    refused(
        &d,
        &mint_policy("mint-hangs", "hangs"),
        "\"hangs\"",
        "did not finish within 10s",
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(20),
        "{took:?}"
    );
    // The helper and the child it left running are both gone.
    let pgid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let left = poll(Duration::from_secs(2), || (!in_group(pgid)).then_some(()));
    assert!(
        left.is_some(),
        "processes of the helper's group {pgid} outlived it"
    );
}

/// Whether any process is in process group `pgid`.
fn in_group(pgid: i32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read_to_string(e.path().join("stat")).is_ok_and(|stat| {
            // pid (comm) state ppid pgrp ...
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after.split_whitespace().nth(2) == Some(&pgid.to_string())
        })
    })
}

#[test]
fn an_unsafe_or_anothers_helper_is_refused() {
    let (dir, _) = minters();
    let ok = "echo would-be-token-0123456789";
    helper(&dir, "loose", ok, 0o775);
    let theirs = helper(&dir, "theirs", ok, 0o755);
    let u = user();
    std::os::unix::fs::chown(&theirs, Some(u.uid), Some(u.gid)).unwrap();
    let other = dir.join("users").join(user_name(other_user().uid));
    std::fs::create_dir_all(&other).unwrap();
    helper(&other, "private", ok, 0o700);
    let d = daemon(&dir);
    let unsafe_helper = "must be a regular executable file owned by root";
    refused(
        &d,
        &mint_policy("mint-loose", "loose"),
        "loose",
        unsafe_helper,
    );
    refused(
        &d,
        &mint_policy("mint-theirs", "theirs"),
        "theirs",
        unsafe_helper,
    );
    // Another user's helper is not even found for this one.
    refused(
        &d,
        &mint_policy("mint-private", "private"),
        "\"private\"",
        "no minting helper",
    );
}
