//! Unit tests of the proposal: what records become which rules.

use std::path::Path;

use serde_json::json;

use super::*;
use crate::{
    audit::{AuditRecord, Body, PathCall, PathPair},
    policy::Policy,
};

const HOME: &str = "/home/u";

fn rec(pid: u32, body: Body) -> AuditRecord {
    let mut r = AuditRecord::new(body, None, std::time::SystemTime::now());
    r.pid = Some(pid);
    r
}

fn open(pid: u32, path: &str, write: bool) -> AuditRecord {
    let flags = if write { "O_WRONLY" } else { "O_RDONLY" };
    rec(
        pid,
        Body::Open {
            call: "openat".into(),
            path: path.into(),
            path_truncated: false,
            flags: vec![flags.into()],
            mode: None,
            dirfd: None,
            result: 3,
            errno: None,
        },
    )
}

fn path_call(call: &str, path: &str) -> PathCall {
    PathCall {
        call: call.into(),
        path: path.into(),
        path_truncated: false,
        mode: None,
        dirfd: None,
        fd: None,
        result: 0,
        errno: None,
    }
}

fn rename(pid: u32, old: &str, new: &str) -> AuditRecord {
    rec(
        pid,
        Body::Rename(PathPair {
            call: "rename".into(),
            old_path: old.into(),
            old_path_truncated: false,
            new_path: new.into(),
            new_path_truncated: false,
            flags: vec![],
            old_dirfd: None,
            new_dirfd: None,
            result: 0,
            errno: None,
        }),
    )
}

fn parse(obs: &Observations) -> (Policy, String, Vec<String>) {
    let (text, notes) = propose("app", obs, Path::new(HOME), &["PATH".into()]);
    let p =
        Policy::parse(&text, Path::new("learned.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
    (p, text, notes)
}

#[test]
fn every_name_of_an_address_becomes_a_rule() {
    let mut o = Observations::new(HOME.into());
    for name in ["pypi.org", "files.pythonhosted.org"] {
        o.observe(&rec(
            1,
            Body::Dns {
                qname: name.into(),
                qtype: "A".into(),
                transport: "udp".into(),
                verdict: "allow".into(),
                detail: json!({"answers": [{"addr": "151.101.0.223"}]}),
            },
        ));
    }
    o.connects.insert(("151.101.0.223".into(), 443));
    let (p, text, _) = parse(&o);
    let hosts: Vec<&str> = p.network.hosts.iter().map(|h| h.text.as_str()).collect();
    assert_eq!(
        hosts,
        ["files.pythonhosted.org:443", "pypi.org:443"],
        "{text}"
    );
}

#[test]
fn binds_and_inbound_ports_become_bind_entries_not_destinations() {
    let mut o = Observations::new(HOME.into());
    let connect = |op: &str, port: u16| {
        rec(
            1,
            Body::Connect {
                op: op.into(),
                protocol: "tcp".into(),
                addr: "0.0.0.0".into(),
                port,
                verdict: "would_deny".into(),
            },
        )
    };
    o.observe(&connect("bind4", 8080));
    o.observe(&connect("bind6", 0));
    o.observe(&connect("inbound4", 9000));
    let (p, text, _) = parse(&o);
    assert!(p.network.allow.is_empty(), "{text}");
    let binds: Vec<String> = p.network.bind.iter().map(ToString::to_string).collect();
    assert_eq!(binds, ["8080", "9000"], "{text}");
}

#[test]
fn relative_paths_follow_the_acting_process_cwd() {
    let mut o = Observations::new(HOME.into());
    // The server (pid 10) forks a git (pid 11), which chdirs into the
    // repository and opens relative paths; the server's own stay in ~.
    o.observe(&rec(10, Body::Fork { child_pid: 11 }));
    o.observe(&rec(11, Body::Chdir(path_call("chdir", "code/app"))));
    o.observe(&open(11, ".git/HEAD", false));
    o.observe(&open(11, "./src/../src/main.rs", true));
    o.observe(&open(10, "notes.txt", false));
    // A grandchild inherits the repository as its cwd.
    o.observe(&rec(11, Body::Fork { child_pid: 12 }));
    o.observe(&open(12, ".git/config", false));
    assert!(
        o.reads.contains(Path::new("/home/u/code/app/.git/HEAD")),
        "{o:?}"
    );
    assert!(
        o.reads.contains(Path::new("/home/u/code/app/.git/config")),
        "{o:?}"
    );
    assert!(
        o.writes.contains(Path::new("/home/u/code/app/src/main.rs")),
        "{o:?}"
    );
    assert!(o.reads.contains(Path::new("/home/u/notes.txt")), "{o:?}");
    let (p, text, _) = parse(&o);
    assert!(
        p.filesystem.read.contains(&"~/code/app/.git".to_string()),
        "{text}"
    );
    assert!(
        !p.filesystem
            .read
            .iter()
            .any(|r| r == "~/.git" || r == "~/code"),
        "{text}"
    );
}

#[test]
fn mkdir_unlink_and_rename_grant_write_on_the_directory() {
    let mut o = Observations::new(HOME.into());
    o.observe(&rec(
        1,
        Body::Mkdir(path_call("mkdir", "/home/u/.npm/_npx/abc")),
    ));
    o.observe(&rec(
        1,
        Body::Unlink(path_call("unlink", "/home/u/.cache/app/old.json")),
    ));
    o.observe(&rename(
        1,
        "/home/u/.local/share/mem/db.json.tmp",
        "/home/u/.local/share/mem/db.json",
    ));
    let (p, text, _) = parse(&o);
    for want in ["~/.npm/_npx", "~/.cache/app", "~/.local/share/mem"] {
        assert!(
            p.filesystem.write.contains(&want.to_string()),
            "{want}\n{text}"
        );
    }
}

#[test]
fn attribute_changes_in_learning_mode_grant_write() {
    let mut o = Observations::new(HOME.into());
    o.observe(&open(1, "/home/u/.local/share/app/run.sh", false));
    o.observe(&rec(
        1,
        Body::Attr(path_call("fchmodat", "/home/u/.local/share/app/run.sh")),
    ));
    // On an fd: no path to grant; a refused call grants nothing.
    o.observe(&rec(
        1,
        Body::Attr(PathCall {
            fd: Some(3),
            ..path_call("fchmod", "")
        }),
    ));
    o.observe(&rec(
        1,
        Body::Attr(PathCall {
            result: -30,
            ..path_call("chmod", "/home/u/.ssh/id_rsa")
        }),
    ));
    let (p, text, _) = parse(&o);
    assert!(
        p.filesystem
            .write
            .iter()
            .any(|w| w.starts_with("~/.local/share/app")),
        "{text}"
    );
    assert!(!text.contains(".ssh"), "{text}");
}

#[test]
fn replaced_files_are_proposed_through_their_directory_or_not_at_all() {
    let mut o = Observations::new(HOME.into());
    o.observe(&open(1, "/home/u/.config/app/state.json", false));
    o.observe(&rename(
        1,
        "/home/u/.config/app/state.json.tmp",
        "/home/u/.config/app/state.json",
    ));
    o.observe(&open(1, "/home/u/.gitconfig", false));
    o.observe(&rename(1, "/home/u/.gitconfig.lock", "/home/u/.gitconfig"));
    let (p, text, notes) = parse(&o);
    assert!(
        p.filesystem.read.contains(&"~/.config/app".to_string()),
        "{text}"
    );
    assert!(!text.contains("\"~/.gitconfig\""), "{text}");
    assert!(!text.contains("\"~\""), "{text}");
    assert!(
        notes.iter().any(|n| n.contains("~/.gitconfig")),
        "{notes:?}"
    );
}

#[test]
fn narrowest_directories_never_credentials_containers_or_launch_paths() {
    let mut o = Observations::new(HOME.into());
    o.observe(&rec(
        1,
        Body::Launch {
            argv: vec![],
            cgroup: "/sys/fs/cgroup/mcpguard/app-3".into(),
            cwd: HOME.into(),
            layers: json!({}),
        },
    ));
    for p in [
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        "/sys/fs/cgroup/mcpguard/app-3/cpu.max",
        "/sys/fs/cgroup/memory/system/mcpguard/app-3/memory.limit_in_bytes",
        "/sys/fs/cgroup/memory/system/mcpguard/memory.limit_in_bytes",
        "/usr/lib/python3.11/os.py",
        "/etc/ld.so.cache",
        "/home/u/.local/share/app/venv/lib/site.py",
        "/home/u/.local/share/keyrings/login.keyring",
        "/home/u/.ssh/id_rsa",
        "/home/u/.config/gh/hosts.yml",
        "/home/u/.config/app.conf",
        "/home/u/notes.txt",
        "/proc/1234/status",
        "/tmp/x/y.json",
    ] {
        o.observe(&open(1, p, false));
    }
    o.observe(&open(1, "/home/u/.cache/app/db/state.json", true));
    // Right in the server's private /tmp: the directory, not the host file.
    o.observe(&open(1, "/tmp/app-cache.json", true));
    let (p, text, notes) = parse(&o);
    let read = &p.filesystem.read;
    for want in [
        "/usr/lib",
        "~/.local/share/app/venv/lib",
        "~/.config/app.conf",
        "~/notes.txt",
        "/tmp/x",
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
    ] {
        assert!(read.contains(&want.to_string()), "{want}\n{text}");
    }
    // The runtime baseline covers these for every policy.
    for covered in ["/etc/ld.so.cache", "/proc/self"] {
        assert!(!read.contains(&covered.to_string()), "{covered}\n{text}");
    }
    assert!(
        notes.iter().any(|n| n.contains("runtime baseline")),
        "{notes:?}"
    );
    for never in [
        "~",
        "~/.local",
        "~/.local/share",
        "~/.config",
        "~/.cache",
        "/",
    ] {
        assert!(!read.contains(&never.to_string()), "{never}\n{text}");
    }
    for secret in [".ssh", "keyrings", "gh", "app-3", "memory/system"] {
        assert!(!text.contains(secret), "{secret}\n{text}");
    }
    assert_eq!(p.filesystem.write, ["~/.cache/app/db", "/tmp"], "{text}");
    assert!(p.filesystem.exec.is_empty(), "no .so guessing: {text}");
    assert!(notes.iter().any(|n| n.contains(".ssh")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("cgroup")), "{notes:?}");
}

#[test]
fn exec_grants_come_from_exec_records_and_their_interpreters() {
    let mut o = Observations::new(HOME.into());
    o.observe(&rec(
        1,
        Body::Exec {
            filename: "/bin/sh".into(),
            path_truncated: false,
            argv: vec![],
            argc_truncated: false,
            result: 0,
            errno: None,
        },
    ));
    let (p, text, _) = parse(&o);
    let exec = &p.filesystem.exec;
    assert!(
        exec.iter()
            .any(|e| e.ends_with("sh") || e.ends_with("dash")),
        "{text}"
    );
    // /bin/sh is dynamically linked: the loader is opened for execution.
    assert!(exec.iter().any(|e| e.contains("ld-linux")), "{text}");
}

#[test]
fn tools_come_from_tools_list_with_called_ones_marked() {
    let mut o = Observations::new(HOME.into());
    o.observe(&rec(
        1,
        Body::Mcp {
            event: "tools_list".into(),
            detail: json!({"count": 3, "hashes": {"git_status": "a", "git_log": "b", "git_commit": "c"}}),
        },
    ));
    let mut call = rec(
        1,
        Body::Mcp {
            event: "tools_call".into(),
            detail: json!({}),
        },
    );
    call.tool = Some("git_status".into());
    o.observe(&call);
    let (p, text, _) = parse(&o);
    assert_eq!(
        p.tools.allow,
        Some(vec![
            "git_commit".to_string(),
            "git_log".into(),
            "git_status".into()
        ]),
        "{text}"
    );
    assert!(text.contains("\"git_status\", # called"), "{text}");
    assert!(!text.contains("\"git_log\", # called"), "{text}");
}

#[test]
fn check_warns_about_single_files_tools_replace() {
    let text = "name = \"x\"\n[filesystem]\nread = [\"~/.gitconfig\", \"/usr/lib\"]\nwrite = [\"~/.local/share/app/store.json\"]\n";
    let p = Policy::parse(text, Path::new("x.toml")).unwrap();
    let w = replaced_file_warnings(&p);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("~/.gitconfig") && w[0].contains("renaming"),
        "{w:?}"
    );
    assert!(
        w[1].contains("store.json") && w[1].contains("cannot replace it"),
        "{w:?}"
    );
}

#[test]
fn persistence_paths_written_while_learning_are_proposed_with_a_note() {
    let mut o = Observations::new(HOME.into());
    o.observe(&open(1, "/home/u/repo/src/lib.rs", true));
    let (p, _, notes) = parse(&o);
    assert!(p.filesystem.allow_persistence.is_empty());
    assert!(!notes.iter().any(|n| n.contains("allow_persistence")));
    o.observe(&open(1, "/home/u/repo/.git/config", true));
    o.observe(&rec(
        1,
        Body::Mkdir(path_call("mkdir", "/home/u/repo/.vscode/x")),
    ));
    let (p, text, notes) = parse(&o);
    use crate::policy::persist::PersistKind;
    assert_eq!(
        p.filesystem.allow_persistence,
        [PersistKind::GitConfig, PersistKind::Vscode],
        "{text}"
    );
    assert!(
        notes.iter().any(|n| n.contains("git_config, vscode")),
        "{notes:?}"
    );
}
