//! Escape classes 1 (sensitive reads) and 2 (path tricks), run by
//! `tests/escape/files.c` as the test user under a realistic policy: a
//! project directory read/write, the system directories a C program needs,
//! the hostile binary's directory executable.
//!
//! Blocked means the program saw an errno and no secret reached its output;
//! recorded means the daemon's log holds the record of that very syscall
//! (an `open`, `link` or `rename` record with its failing result).

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    os::unix::{
        fs::{chown, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
};

use serde_json::Value;

use super::{attack, hostile, hostile_argv, hostile_dir, report, Class, Row, AUDIT_ALL};
use crate::harness::*;

/// Files planted in the test user's home, each holding its marker.
pub(super) struct Secrets {
    pub ssh_key: PathBuf,
    pub aws: PathBuf,
    pub firefox: PathBuf,
    pub chrome: PathBuf,
}

/// Every secret's content starts with this, so one check finds any leak.
pub(super) const MARKER: &str = "ESCAPE-SECRET";

/// Plant the secrets (idempotent): owned by the test user, mode 0600, in
/// directories owned by it, exactly as a real user's would be.
pub(super) fn secrets() -> Secrets {
    let home = &user().home;
    let plant = |rel: &str| {
        let path = home.join(rel);
        let mut dir = home.clone();
        for part in Path::new(rel).parent().unwrap().components() {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap();
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
                chown(&dir, Some(user().uid), Some(user().gid)).unwrap();
            }
        }
        std::fs::write(&path, format!("{MARKER} {rel}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        chown(&path, Some(user().uid), Some(user().gid)).unwrap();
        path
    };
    Secrets {
        ssh_key: plant(".ssh/id_ed25519_escape"),
        aws: plant(".aws/credentials"),
        firefox: plant(".mozilla/firefox/escape.default-release/cookies.sqlite"),
        chrome: plant(".config/google-chrome/Default/Cookies"),
    }
}

/// Filesystem rules for a C program and a project: `read`, `write` and
/// `exec` lists beyond what every hostile run needs.
#[derive(Default)]
pub(super) struct Fs {
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub exec: Vec<String>,
}

impl Fs {
    pub fn project(project: &Path) -> Fs {
        Fs {
            write: vec![s(project)],
            ..Fs::default()
        }
    }
}

pub(super) fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// A policy named `name` with `fs` on top of libc's needs (and the runtime
/// baseline, which every policy gets: /etc, the private /proc), the hostile
/// binaries' directory executable, and `extra` TOML appended.
pub(super) fn guarded_policy(dir: &Path, name: &str, fs: &Fs, extra: &str) -> PathBuf {
    let list = |base: &[&str], more: &[String]| {
        base.iter()
            .map(|p| p.to_string())
            .chain(more.iter().cloned())
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let hostile = s(&hostile_dir());
    let text = format!(
        "name = \"{name}\"\n[filesystem]\nread = [{}]\nwrite = [{}]\nexec = [{}]\n{extra}\n[env]\npass = [\"PATH\", \"HOME\"]\n{AUDIT_ALL}",
        list(
            &["/usr", "/lib", "/lib64"],
            &fs.read
        ),
        list(&["/dev/null"], &fs.write),
        list(
            &["/usr/bin", "/usr/lib", "/lib", "/lib64", &hostile],
            &fs.exec
        ),
    );
    policy(dir, name, &text)
}

/// A project directory the test user owns.
pub(super) fn user_dir(tag: &str) -> PathBuf {
    let dir = tempdir(tag);
    chown(&dir, Some(user().uid), Some(user().gid)).unwrap();
    dir
}

/// What each step of a `files` run printed: name → (result, detail).
pub(super) struct Steps {
    pub out: String,
    map: HashMap<String, (String, String)>,
}

impl Steps {
    /// Runs hostile program `program` with `steps` under `pol`.
    pub fn run(d: &Daemon, pol: &Path, program: &str, steps: &[String]) -> Steps {
        Steps::parse(&attack(d, pol, program, steps))
    }

    /// The steps of a run that must have exited 0.
    pub fn parse(out: &Output) -> Steps {
        assert!(out.status.success(), "{}", describe(out));
        let text = stdout_of(out);
        let map = text
            .lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, ' ');
                let name = it.next()?.to_owned();
                let result = it.next()?.to_owned();
                Some((name, (result, it.next().unwrap_or("").to_owned())))
            })
            .collect();
        Steps {
            out: format!("{}\n{}", text, String::from_utf8_lossy(&out.stderr)),
            map,
        }
    }

    /// The result word (`OK` or an errno name) of a step, or `MISSING`.
    pub fn result(&self, step: &str) -> &str {
        self.map.get(step).map_or("MISSING", |(r, _)| r.as_str())
    }

    pub fn detail(&self, step: &str) -> &str {
        self.map.get(step).map_or("", |(_, d)| d.as_str())
    }

    /// Refused (an errno, not OK) and no secret anywhere in the output.
    pub fn refused(&self, step: &str) -> bool {
        !matches!(self.result(step), "OK" | "MISSING") && !self.out.contains(MARKER)
    }

    /// `step: RESULT (detail)` for the evidence column.
    pub fn seen(&self, step: &str) -> String {
        format!("{step}: {} ({})", self.result(step), self.detail(step))
    }
}

/// The record as evidence: kind, call, paths, errno.
pub(super) fn cite(r: &Option<Value>) -> String {
    match r {
        None => "no audit record".to_owned(),
        Some(r) => {
            let mut s = format!("audit {}", r["kind"].as_str().unwrap_or("?"));
            for key in [
                "call",
                "path",
                "old_path",
                "new_path",
                "filename",
                "flags",
                "dirfd",
                "addr",
                "port",
                "errno",
                "verdict",
                "path_source",
            ] {
                if let Some(v) = r.get(key) {
                    s.push_str(&format!(" {key}={v}"));
                }
            }
            s
        }
    }
}

/// A failed open of exactly `path` by `server`.
pub(super) fn failed_open<'a>(server: &'a str, path: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |r| {
        is_kind(r, "open")
            && r["server"] == server
            && r["path"] == path
            && r["result"].as_i64().is_some_and(|v| v < 0)
    }
}

/// A row for a step whose refusal shows up as a failed open of `path`.
fn open_row(d: &Daemon, steps: &Steps, server: &str, attack: &str, step: &str, path: &str) -> Row {
    open_row_where(d, steps, (server, attack, step), path, |_| true)
}

/// What tells one step's record from another's with the same path.
type RecordFilter = Box<dyn Fn(&Value) -> bool>;

/// Whether an open record's `flags` list holds `flag`.
fn has_flag(r: &Value, flag: &str) -> bool {
    r["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == flag))
}

/// [`open_row`] for a record that also matches `extra` (the call, the
/// resolve flags, the dirfd), where several steps open the same path.
fn open_row_where(
    d: &Daemon,
    steps: &Steps,
    (server, attack, step): (&str, &str, &str),
    path: &str,
    extra: impl Fn(&Value) -> bool,
) -> Row {
    let rec = d.find_record(|r| failed_open(server, path)(r) && extra(r));
    Row::new(
        attack,
        steps.refused(step),
        rec.is_some(),
        format!("{}; {}", steps.seen(step), cite(&rec)),
    )
}

/// A row for a link or rename step, recorded as a failed `kind` record.
fn pair_row(
    d: &Daemon,
    steps: &Steps,
    server: &str,
    attack: &str,
    step: &str,
    (kind, new_path): (&str, &Path),
) -> Row {
    let rec = d.find_record(|r| {
        is_kind(r, kind)
            && r["server"] == server
            && r["new_path"] == s(new_path)
            && r["result"].as_i64().is_some_and(|v| v < 0)
    });
    Row::new(
        attack,
        steps.refused(step) && std::fs::symlink_metadata(new_path).is_err(),
        rec.is_some(),
        format!("{}; {}", steps.seen(step), cite(&rec)),
    )
}

/// A process of the test user outside mcpguard, with a secret in its
/// environment and the SSH key open on its stdin.
struct Outsider(Child);

impl Outsider {
    fn start(key: &Path) -> Outsider {
        let u = user();
        let child = Command::new("/usr/bin/sleep")
            .arg("120")
            .env_clear()
            .env("ESCAPE_TOKEN", format!("{MARKER}-environ"))
            .stdin(std::fs::File::open(key).unwrap())
            .uid(u.uid)
            .gid(u.gid)
            .spawn()
            .unwrap();
        Outsider(child)
    }
}

impl Drop for Outsider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Another guarded server, holding state in its own allowed directory
/// until its stdin closes.
struct OtherServer {
    child: Child,
    pid: u32,
    state: PathBuf,
}

impl OtherServer {
    fn start(d: &Daemon, dir: &Path) -> OtherServer {
        let own = user_dir("other-own");
        let state = own.join("state.txt");
        let pol = guarded_policy(dir, "esc-other", &Fs::project(&own), "");
        let bin = hostile("files");
        let mut child = d
            .run_cmd(
                &pol,
                &[bin.to_str().unwrap(), "hold", state.to_str().unwrap()],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid = line
            .strip_prefix("HOLD ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("other server did not start: {line:?}"));
        OtherServer { child, pid, state }
    }
}

impl Drop for OtherServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// What the escape suite tries to read of processes outside the server.
const PROC_TARGETS: [&str; 5] = [
    "environ",
    "mem",
    "fd/0",
    "root/usr/lib/os-release",
    "cmdline",
];

#[test]
fn sensitive_reads_are_refused_and_recorded() {
    let state_dir = tempdir("state");
    let d = Daemon::start_with(&["--state-dir", state_dir.to_str().unwrap()]);
    let sec = secrets();
    let dir = tempdir("esc-reads");
    let project = user_dir("esc-reads-project");
    // The daemon's own state: tool pins for another server of this user.
    let pins = mcpguard::mcp::tools::PinStore::new(&state_dir, user().uid, "esc-other");
    pins.save(&mcpguard::mcp::tools::Pins {
        tools: [("read_file".to_owned(), "deadbeef".to_owned())].into(),
    })
    .unwrap();
    let other = OtherServer::start(&d, &dir);
    let outsider = Outsider::start(&sec.ssh_key);
    let out_pid = outsider.0.id();

    // A realistic policy: the project, and the baseline every policy gets,
    // whose /proc shows the server its own processes only.
    let narrow = guarded_policy(&dir, "esc-reads", &Fs::project(&project), "");
    let reads: [(&str, &str, String); 10] = [
        ("ssh", "~/.ssh/id_* private key", s(&sec.ssh_key)),
        ("aws", "~/.aws/credentials", s(&sec.aws)),
        ("firefox", "Firefox cookies.sqlite", s(&sec.firefox)),
        ("chrome", "Chrome Default/Cookies", s(&sec.chrome)),
        (
            "other",
            "another guarded server's file in its allowed dir",
            s(&other.state),
        ),
        ("pins", "the daemon's --state-dir tool pins", s(pins.path())),
        (
            "environ",
            "/proc/<pid>/environ of a same-user process outside mcpguard (default: the baseline's private /proc)",
            format!("/proc/{out_pid}/environ"),
        ),
        (
            "mem",
            "/proc/<pid>/mem of a same-user process outside mcpguard (default: the baseline's private /proc)",
            format!("/proc/{out_pid}/mem"),
        ),
        (
            "fd",
            "/proc/<pid>/fd/0 of a same-user process holding the SSH key (default: the baseline's private /proc)",
            format!("/proc/{out_pid}/fd/0"),
        ),
        (
            "other_environ",
            "/proc/<pid>/environ of another guarded server (default: the baseline's private /proc)",
            format!("/proc/{}/environ", other.pid),
        ),
    ];
    let mut argv: Vec<String> = reads
        .iter()
        .map(|(step, _, path)| format!("{step}=read,{path}"))
        .collect();
    argv.push(format!("ls_ssh=readdir,{}", s(&user().home.join(".ssh"))));
    let steps = Steps::run(&d, &narrow, "files", &argv);
    let mut rows: Vec<Row> = reads
        .iter()
        .map(|(step, attack, path)| open_row(&d, &steps, "esc-reads", attack, step, path))
        .collect();
    rows.push(open_row(
        &d,
        &steps,
        "esc-reads",
        "list ~/.ssh",
        "ls_ssh",
        &s(&user().home.join(".ssh")),
    ));

    // The same user's processes with all of /proc named in the policy, as
    // the baseline also grants it: the private procfs (hidepid=ptraceable,
    // Landlock's ptrace scoping deciding what is ptraceable) shows none of
    // them, so not even their cmdline is readable.
    let procfs = guarded_policy(
        &dir,
        "esc-procfs",
        &Fs {
            read: vec!["/proc".into()],
            ..Fs::project(&project)
        },
        "",
    );
    let targets = [
        (
            "outside",
            "a same-user process outside mcpguard",
            out_pid.to_string(),
        ),
        ("other", "another guarded server", other.pid.to_string()),
        ("client", "the `mcpguard run` client", "{stdin}".to_owned()),
    ];
    // Control: the server's own /proc entries read fine under this policy,
    // so what refuses the others is the ptrace check, not a missing rule.
    let mut argv = vec!["self_environ=read,/proc/self/environ".to_owned()];
    for (who, _, pid) in &targets {
        for what in PROC_TARGETS {
            argv.push(format!("{who}_{what}=read,/proc/{pid}/{what}"));
        }
    }
    let mut client = d
        .run_cmd(&procfs, &hostile_argv("files", &argv))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client_pid = client.id();
    let mut stdin = client.stdin.take().unwrap();
    writeln!(stdin, "{client_pid}").unwrap();
    drop(stdin);
    let out = client.wait_with_output().unwrap();
    let steps = Steps::parse(&out);
    assert_eq!(steps.result("self_environ"), "OK", "{}", steps.out);
    for (who, desc, pid) in &targets {
        let pid = if who == &"client" {
            client_pid.to_string()
        } else {
            pid.clone()
        };
        for what in PROC_TARGETS {
            rows.push(open_row(
                &d,
                &steps,
                "esc-procfs",
                &format!("/proc/<pid>/{what} of {desc} (policy: all of /proc)"),
                &format!("{who}_{what}"),
                &format!("/proc/{pid}/{what}"),
            ));
        }
    }
    drop(other);
    drop(outsider);
    report(Class::SensitiveReads, &rows);
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "the class's attack rows, one block each, in report order"
)]
fn path_tricks_are_refused_and_recorded() {
    let d = Daemon::start();
    let sec = secrets();
    let key = s(&sec.ssh_key);
    let home = user().home.clone();
    let dir = tempdir("esc-paths");
    let project = user_dir("esc-paths-project");
    let bin_dir = project.join("bin");
    let shared = user_dir("esc-paths-shared");
    std::fs::create_dir(&bin_dir).unwrap();
    chown(&bin_dir, Some(user().uid), Some(user().gid)).unwrap();
    // The project is writable, its bin/ also executable (more rights: the
    // REFER check), `shared` readable only.
    let pol = guarded_policy(
        &dir,
        "esc-paths",
        &Fs {
            read: vec![s(&shared)],
            write: vec![s(&project)],
            exec: vec![s(&bin_dir)],
        },
        "",
    );
    let p = |rel: &str| project.join(rel);
    // From the project dir up to / and down to the key.
    let up = "../".repeat(project.components().count() - 1);
    let rel_key = format!("{up}{}", key.trim_start_matches('/'));
    let ssh_dir = s(&home.join(".ssh"));
    let key_name = sec.ssh_key.file_name().unwrap().to_str().unwrap();
    let key_text = std::fs::read_to_string(&sec.ssh_key).unwrap();
    let planted_sym = home.join(".ssh/authorized_keys_escape_sym");
    let planted_link = home.join(".ssh/authorized_keys_escape_link");
    let argv: Vec<String> = vec![
        format!("payload=write,{},payload", s(&p("payload"))),
        format!("sym_make=symlink,{key},{}", s(&p("key-link"))),
        format!("sym_read=read,{}", s(&p("key-link"))),
        format!("symdir_make=symlink,{ssh_dir},{}", s(&p("ssh-link"))),
        format!(
            "symdir_read=read,{}",
            s(&p(&format!("ssh-link/{key_name}")))
        ),
        format!("hardlink=link,{key},{}", s(&p("key-hardlink"))),
        format!("flink=flink,{key},{}", s(&p("key-flink"))),
        format!("rename_in=rename,{key},{}", s(&p("stolen-key"))),
        format!(
            "rename_ro=rename,{},{}",
            s(&p("payload")),
            s(&shared.join("payload"))
        ),
        format!(
            "refer_rename=rename,{},{}",
            s(&p("payload")),
            s(&bin_dir.join("payload"))
        ),
        format!(
            "refer_link=link,{},{}",
            s(&p("payload")),
            s(&bin_dir.join("payload-link"))
        ),
        format!("cd_project=chdir,{}", s(&project)),
        format!("dotdot=read,{rel_key}"),
        format!("proc_cwd=read,/proc/self/cwd/{rel_key}"),
        format!("proc_root=read,/proc/self/root{key}"),
        format!("beneath=openat2,{},{rel_key},beneath", s(&project)),
        format!("in_root=openat2,{},{key},in_root", s(&project)),
        format!("no_xdev=openat2,{},{key},no_xdev", s(&project)),
        format!("no_magic=openat2,{},key-link,no_magiclinks", s(&project)),
        format!("plain2=openat2,{},{key},none", s(&project)),
        format!("opath=opath,{key}"),
        format!("dirfd=dirfd,{ssh_dir},{key_name}"),
        format!("handle=handle,{key},{}", s(&project)),
        format!("plant_sym=symlink,{},{}", s(&p("payload")), s(&planted_sym)),
        format!("plant_link=link,{},{}", s(&p("payload")), s(&planted_link)),
        format!("rename_over=rename,{},{key}", s(&p("payload"))),
        format!("cd_ssh=chdir,{ssh_dir}"),
        format!("cd_read=read,{key_name}"),
    ];
    let steps = Steps::run(&d, &pol, "files", &argv);
    let srv = "esc-paths";
    for setup in ["payload", "sym_make", "symdir_make", "cd_project", "cd_ssh"] {
        assert_eq!(
            steps.result(setup),
            "OK",
            "setup step {setup}\n{}",
            steps.out
        );
    }
    let mut rows = vec![
        open_row(&d, &steps, srv, "symlink in the writable project to ~/.ssh key, then read it", "sym_read", &s(&p("key-link"))),
        open_row(&d, &steps, srv, "symlink in the project to ~/.ssh, then read the key through it", "symdir_read", &s(&p(&format!("ssh-link/{key_name}")))),
        pair_row(&d, &steps, srv, "hardlink of the ~/.ssh key into the project (fs.protected_hardlinks passes: same owner)", "hardlink", ("link", &p("key-hardlink"))),
        pair_row(&d, &steps, srv, "linkat(AT_EMPTY_PATH) of an O_PATH fd of the key into the project", "flink", ("link", &p("key-flink"))),
        pair_row(&d, &steps, srv, "rename the ~/.ssh key into the project", "rename_in", ("rename", &p("stolen-key"))),
        pair_row(&d, &steps, srv, "rename a project file into a read-only allowed tree", "rename_ro", ("rename", &shared.join("payload"))),
        pair_row(&d, &steps, srv, "REFER: rename a project file into a tree that also grants exec", "refer_rename", ("rename", &bin_dir.join("payload"))),
        pair_row(&d, &steps, srv, "REFER: hardlink a project file into a tree that also grants exec", "refer_link", ("link", &bin_dir.join("payload-link"))),
        pair_row(&d, &steps, srv, "plant a symlink to a project file in ~/.ssh", "plant_sym", ("link", &planted_sym)),
        pair_row(&d, &steps, srv, "plant a hardlink of a project file in ~/.ssh", "plant_link", ("link", &planted_link)),
    ];
    let rec = d.find_record(|r| {
        is_kind(r, "rename")
            && r["server"] == srv
            && r["new_path"] == key.as_str()
            && r["result"].as_i64().is_some_and(|v| v < 0)
    });
    rows.push(Row::new(
        "rename a project file over the ~/.ssh key",
        steps.refused("rename_over")
            && std::fs::read_to_string(&sec.ssh_key).ok().as_ref() == Some(&key_text),
        rec.is_some(),
        format!("{}; {}", steps.seen("rename_over"), cite(&rec)),
    ));
    let openat = |r: &Value| r["call"] == "openat" && r.get("dirfd").is_none();
    let openat2 = |resolve: &'static str| {
        move |r: &Value| {
            r["call"] == "openat2"
                && if resolve.is_empty() {
                    !r["flags"].to_string().contains("RESOLVE_")
                } else {
                    has_flag(r, resolve)
                }
        }
    };
    let opens: [(&str, &str, String, RecordFilter); 9] = [
        (
            "chdir into the project, then ../../ to the key",
            "dotdot",
            rel_key.clone(),
            Box::new(openat),
        ),
        (
            "/proc/self/cwd/../../ to the key",
            "proc_cwd",
            format!("/proc/self/cwd/{rel_key}"),
            Box::new(openat),
        ),
        (
            "/proc/self/root/<key>",
            "proc_root",
            format!("/proc/self/root{key}"),
            Box::new(openat),
        ),
        (
            "openat2 RESOLVE_BENEATH from the project with ../ to the key",
            "beneath",
            rel_key.clone(),
            Box::new(openat2("RESOLVE_BENEATH")),
        ),
        (
            "openat2 RESOLVE_IN_ROOT of the key's absolute path",
            "in_root",
            key.clone(),
            Box::new(openat2("RESOLVE_IN_ROOT")),
        ),
        (
            "openat2 RESOLVE_NO_XDEV of the key's absolute path",
            "no_xdev",
            key.clone(),
            Box::new(openat2("RESOLVE_NO_XDEV")),
        ),
        (
            "openat2 RESOLVE_NO_MAGICLINKS through the project's symlink to the key",
            "no_magic",
            "key-link".into(),
            Box::new(openat2("RESOLVE_NO_MAGICLINKS")),
        ),
        (
            "openat2 of the key, no resolve flags",
            "plain2",
            key.clone(),
            Box::new(openat2("")),
        ),
        (
            "chdir into ~/.ssh, then open the key by its bare name",
            "cd_read",
            key_name.into(),
            Box::new(openat),
        ),
    ];
    for (attack, step, path, extra) in &opens {
        rows.push(open_row_where(&d, &steps, (srv, attack, step), path, extra));
    }
    // O_PATH needs no right; the re-open through /proc/self/fd must fail.
    let reopen = steps
        .detail("opath")
        .strip_prefix("reopen ")
        .unwrap_or("/proc/self/fd/?")
        .to_owned();
    rows.push(open_row(
        &d,
        &steps,
        srv,
        "O_PATH fd of the key, re-opened through /proc/self/fd/N",
        "opath",
        &reopen,
    ));
    rows.push(open_row_where(
        &d,
        &steps,
        (srv, "O_PATH fd of ~/.ssh as dirfd, openat the key", "dirfd"),
        key_name,
        |r| r.get("dirfd").is_some(),
    ));
    // The syscall fence refuses open_by_handle_at outright.
    let handle = d.find_record(|r| {
        is_kind(r, "syscall")
            && r["server"] == srv
            && r["name"] == "open_by_handle_at"
            && r["result"].as_i64().is_some_and(|v| v < 0)
    });
    rows.push(Row::new(
        "name_to_handle_at on the key, open_by_handle_at with the project as mount fd",
        steps.refused("handle"),
        handle.is_some(),
        format!("{}; {}", steps.seen("handle"), cite(&handle)),
    ));
    assert!(
        sec.ssh_key.exists(),
        "the key was moved away\n{}",
        steps.out
    );
    report(Class::PathTricks, &rows);
}
