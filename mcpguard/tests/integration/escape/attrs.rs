//! Escape classes 10 (attribute changes) and 15 (refusals that left no
//! record: the filesystem part), run by `tests/escape/attrs.c` as the test
//! user.
//!
//! Class 10: `chmod`, `chown`, `utimensat`, `setxattr`, `removexattr` and
//! `fchmod` on files the user owns, under a tight policy (no write grant)
//! and a typical filesystem-server policy (home readable, a project
//! writable: inside it the same calls work). Blocked means the call failed
//! and the file kept its mode; recorded means an `attr` record of that very
//! call with its errno.
//!
//! Class 15: `mkfifo`, `mknod`, `truncate`, `ftruncate`, `unlink`, `mkdir`
//! and `rmdir` on a read-only grant; each refused and recorded (`attr`,
//! `unlink`, `mkdir`, `rmdir` records).

use std::{
    os::unix::fs::{chown, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::{
    files::{cite, failed_open, guarded_policy, s, user_dir, Fs, Steps},
    report, Class, Row,
};
use crate::harness::*;

/// A file of the test user's with `mode`, holding `text`.
fn user_file(path: &Path, mode: u32) -> PathBuf {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            chown(dir, Some(user().uid), Some(user().gid)).unwrap();
        }
    }
    std::fs::write(path, "attr escape target\n").unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    chown(path, Some(user().uid), Some(user().gid)).unwrap();
    path.to_owned()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).map_or(0, |m| m.mode() & 0o7777)
}

/// Whether `path` carries extended attribute `name`.
fn has_xattr(path: &Path, name: &std::ffi::CStr) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: both strings are NUL-terminated; size 0 asks for the length
    // only, so no buffer is written.
    unsafe { libc::getxattr(c.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) >= 0 }
}

/// A refused record of `kind` by `server` whose `call` is one of `calls`,
/// on `path` (or, for calls on an fd, with any fd).
fn refusal<'a>(
    server: &'a str,
    kind: &'a str,
    calls: &'a [&'a str],
    path: Option<&'a str>,
) -> impl Fn(&Value) -> bool + 'a {
    move |r| {
        is_kind(r, kind)
            && r["server"] == server
            && r["denied"] == true
            && r["call"].as_str().is_some_and(|c| calls.contains(&c))
            && match path {
                Some(p) => r["path"] == p,
                None => r["fd"].is_i64(),
            }
    }
}

/// One row: the step failed with `errno`, `unchanged` holds, and the
/// record is there.
fn row(
    d: &Daemon,
    steps: &Steps,
    (attack, step, errno): (&str, &str, &str),
    unchanged: bool,
    record: impl Fn(&Value) -> bool,
) -> Row {
    let rec = d.find_record(record);
    Row::new(
        attack,
        steps.result(step) == errno && unchanged,
        rec.is_some(),
        format!("{}; {}", steps.seen(step), cite(&rec)),
    )
}

/// The class 10 attacks on `key` (0600) and `rc` (0644) under one policy;
/// every one refused with EROFS by the read-only view.
fn attribute_rows(d: &Daemon, pol: &Path, server: &str, tag: &str) -> Vec<Row> {
    let home = &user().home;
    let key = user_file(&home.join(format!(".ssh/id_rsa_attr_{tag}")), 0o600);
    let rc = user_file(&home.join(format!(".bashrc_attr_{tag}")), 0o644);
    let (k, r) = (s(&key), s(&rc));
    let steps = Steps::run(
        d,
        pol,
        "attrs",
        &[
            format!("chmod-key=chmod,{k},644"),
            format!("chmod-rc=chmod,{r},666"),
            format!("chown=chown,{k}"),
            format!("utimens=utimens,{k}"),
            format!("setxattr=setxattr,{k}"),
            format!("removexattr=removexattr,{k}"),
            format!("fchmod=fchmod,{k},644"),
        ],
    );
    let key_kept = mode_of(&key) == 0o600;
    let path_rec = |calls: &'static [&'static str], p: &str| {
        let p = p.to_owned();
        move |v: &Value| refusal(server, "attr", calls, Some(&p))(v)
    };
    let label = |what: &str| format!("{what} ({tag} policy)");
    let rows = vec![
        row(
            d,
            &steps,
            (&label("chmod ~/.ssh/id_rsa 0644"), "chmod-key", "EROFS"),
            key_kept,
            path_rec(&["chmod", "fchmodat", "fchmodat2"], &k),
        ),
        row(
            d,
            &steps,
            (&label("chmod ~/.bashrc 0666"), "chmod-rc", "EROFS"),
            mode_of(&rc) == 0o644,
            path_rec(&["chmod", "fchmodat", "fchmodat2"], &r),
        ),
        row(
            d,
            &steps,
            (&label("chown ~/.ssh/id_rsa"), "chown", "EROFS"),
            true,
            path_rec(&["chown", "fchownat", "lchown"], &k),
        ),
        row(
            d,
            &steps,
            (&label("utimensat ~/.ssh/id_rsa"), "utimens", "EROFS"),
            true,
            path_rec(&["utimensat", "utimes", "utime"], &k),
        ),
        row(
            d,
            &steps,
            (&label("setxattr user.x ~/.ssh/id_rsa"), "setxattr", "EROFS"),
            !has_xattr(&key, c"user.x"),
            path_rec(&["setxattr"], &k),
        ),
        row(
            d,
            &steps,
            (
                &label("removexattr user.x ~/.ssh/id_rsa"),
                "removexattr",
                "EROFS",
            ),
            true,
            path_rec(&["removexattr"], &k),
        ),
        fchmod_row(
            d,
            &steps,
            server,
            (&label("fchmod on an fd opened read-only"), &k),
            key_kept,
        ),
    ];
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(&rc);
    rows
}

/// `fchmod` on an fd opened read-only: refused by the read-only view where
/// the policy lets the server read the file, by Landlock at the open
/// (an `open` record) where it does not.
fn fchmod_row(
    d: &Daemon,
    steps: &Steps,
    server: &str,
    (attack, key): (&str, &str),
    kept: bool,
) -> Row {
    let opened = steps.detail("fchmod") != "open";
    row(
        d,
        steps,
        (attack, "fchmod", if opened { "EROFS" } else { "EACCES" }),
        kept,
        move |v: &Value| {
            if opened {
                refusal(server, "attr", &["fchmod"], None)(v)
            } else {
                failed_open(server, key)(v)
            }
        },
    )
}

/// Class 10: attribute changes outside the write grants are refused (the
/// read-only view) and recorded, under a tight and a typical policy;
/// inside the typical policy's project they still work.
#[test]
fn escape_attribute_changes_outside_write_grants_are_refused() {
    let d = Daemon::start();
    let dir = tempdir("esc-attrs");
    let tight = guarded_policy(&dir, "esc-attr-tight", &Fs::default(), "");
    let mut rows = attribute_rows(&d, &tight, "esc-attr-tight", "tight");

    let project = user_dir("attr-project");
    let inside = user_file(&project.join("notes.txt"), 0o600);
    let fs = Fs {
        read: vec![s(&user().home)],
        ..Fs::project(&project)
    };
    let typical = guarded_policy(&dir, "esc-attr-typical", &fs, "");
    let i = s(&inside);
    let steps = Steps::run(
        &d,
        &typical,
        "attrs",
        &[
            format!("in-chmod=chmod,{i},640"),
            format!("in-utimens=utimens,{i}"),
            format!("in-setxattr=setxattr,{i}"),
            format!("in-fchmod=fchmod,{i},600"),
        ],
    );
    for step in ["in-chmod", "in-utimens", "in-setxattr", "in-fchmod"] {
        assert_eq!(
            steps.result(step),
            "OK",
            "inside the write grant: {}",
            steps.out
        );
    }
    assert_eq!(mode_of(&inside), 0o600, "{}", steps.out);
    rows.extend(attribute_rows(&d, &typical, "esc-attr-typical", "typical"));
    report(Class::AttributeChanges, &rows);
}

/// Class 15 (filesystem part): every refused change to a read-only grant
/// leaves a record.
#[test]
fn escape_refusals_on_read_only_grants_are_recorded() {
    let d = Daemon::start();
    let dir = tempdir("esc-silent");
    let ro = user_dir("silent-ro");
    let file = user_file(&ro.join("data.txt"), 0o644);
    let sub = ro.join("sub");
    std::fs::create_dir(&sub).unwrap();
    chown(&sub, Some(user().uid), Some(user().gid)).unwrap();
    let fs = Fs {
        read: vec![s(&ro)],
        ..Fs::default()
    };
    let server = "esc-silent";
    let pol = guarded_policy(&dir, server, &fs, "");
    let (f, fifo, node, newdir) = (
        s(&file),
        s(&ro.join("fifo")),
        s(&ro.join("node")),
        s(&ro.join("newdir")),
    );
    let steps = Steps::run(
        &d,
        &pol,
        "attrs",
        &[
            format!("mkfifo=mkfifo,{fifo}"),
            format!("mknod=mknod,{node}"),
            format!("truncate=truncate,{f}"),
            format!("ftruncate=ftruncate,{f}"),
            format!("unlink=unlink,{f}"),
            format!("mkdir=mkdir,{newdir}"),
            format!("rmdir=rmdir,{}", s(&sub)),
        ],
    );
    let intact = std::fs::read_to_string(&file).unwrap_or_default() == "attr escape target\n";
    let absent = |p: &str| std::fs::symlink_metadata(p).is_err();
    let at = |kind: &'static str, calls: &'static [&'static str], p: String| {
        move |v: &Value| refusal(server, kind, calls, Some(&p))(v)
    };
    let rows = vec![
        row(
            &d,
            &steps,
            ("mkfifo in a read-only grant", "mkfifo", "EROFS"),
            absent(&fifo),
            at("attr", &["mknod", "mknodat"], fifo.clone()),
        ),
        row(
            &d,
            &steps,
            ("mknod in a read-only grant", "mknod", "EROFS"),
            absent(&node),
            at("attr", &["mknod", "mknodat"], node.clone()),
        ),
        row(
            &d,
            &steps,
            ("truncate a read-only grant's file", "truncate", "EROFS"),
            intact,
            at("attr", &["truncate"], f.clone()),
        ),
        row(
            &d,
            &steps,
            ("ftruncate an fd opened read-only", "ftruncate", "EINVAL"),
            intact,
            move |v: &Value| refusal(server, "attr", &["ftruncate"], None)(v),
        ),
        row(
            &d,
            &steps,
            ("unlink in a read-only grant", "unlink", "EROFS"),
            file.exists(),
            at("unlink", &["unlink", "unlinkat"], f.clone()),
        ),
        row(
            &d,
            &steps,
            ("mkdir in a read-only grant", "mkdir", "EROFS"),
            absent(&newdir),
            at("mkdir", &["mkdir", "mkdirat"], newdir.clone()),
        ),
        row(
            &d,
            &steps,
            ("rmdir in a read-only grant", "rmdir", "EROFS"),
            sub.exists(),
            at("rmdir", &["rmdir", "unlinkat"], s(&sub)),
        ),
    ];
    report(Class::SilentRefusals, &rows);
}
