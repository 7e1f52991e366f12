//! Golden tests for `wrap`/`unwrap` on one config per client format, in
//! `mcpguard/tests/wrap/`: `<stem>.json` is the input, `<stem>.wrapped.json`
//! what wrap must make of it. `MCPGUARD_BLESS=1` rewrites the expected
//! files from the current output (review the diff before committing it).

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use super::{
    json::{self, Node},
    rewrite::{self, WrapOptions},
    *,
};

const MCPGUARD: &str = "/usr/local/bin/mcpguard";

struct Case {
    /// File stem under `tests/wrap/`.
    stem: &'static str,
    /// Where the file sits in a home directory, which selects its format.
    file: &'static str,
    client: Client,
    /// Servers reached by URL, which must be left alone.
    remote: &'static [&'static str],
    /// Servers wrap must route through mcpguard, with their policy names.
    wrapped: &'static [(&'static str, &'static str)],
}

const CASES: &[Case] = &[
    Case {
        stem: "claude_desktop_config",
        file: ".config/Claude/claude_desktop_config.json",
        client: Client::ClaudeDesktop,
        remote: &["remote-docs"],
        wrapped: &[
            ("time", "time"),
            ("filesystem", "filesystem"),
            ("GitHub Tools", "github-tools"),
            ("weather", "weather"),
        ],
    },
    Case {
        stem: "claude-code.mcp",
        file: "src/app/.mcp.json",
        client: Client::ClaudeCode,
        remote: &["sentry"],
        wrapped: &[("postgres", "postgres"), ("local_tool", "local_tool")],
    },
    Case {
        stem: "claude-code.claude",
        file: ".claude.json",
        client: Client::ClaudeCode,
        remote: &["notion"],
        wrapped: &[("memory", "memory"), ("Playwright", "playwright")],
    },
    Case {
        stem: "cursor.mcp",
        file: ".cursor/mcp.json",
        client: Client::Cursor,
        remote: &["linear"],
        wrapped: &[("brave-search", "brave-search"), ("sqlite", "sqlite")],
    },
    Case {
        stem: "vscode.mcp",
        file: "src/app/.vscode/mcp.json",
        client: Client::VsCode,
        remote: &["github"],
        wrapped: &[
            ("Perplexity", "perplexity"),
            ("fetch", "fetch"),
            ("uv-tool", "uv-tool"),
        ],
    },
];

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/wrap")
        .join(name)
}

fn golden(name: &str) -> String {
    let path = golden_path(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl Case {
    fn input(&self) -> String {
        golden(&format!("{}.json", self.stem))
    }

    fn expected(&self) -> String {
        golden(&format!("{}.wrapped.json", self.stem))
    }
}

fn opts() -> WrapOptions {
    WrapOptions {
        mcpguard: MCPGUARD.to_owned(),
        policy_dir_arg: None,
    }
}

fn wrap_text(case: &Case, text: &str) -> rewrite::Rewrite {
    rewrite::wrap(text, case.client, &opts(), Path::new(case.file))
        .unwrap_or_else(|e| panic!("{}: {e}", case.stem))
}

fn unwrap_text(case: &Case, text: &str) -> String {
    rewrite::unwrap(text, case.client, MCPGUARD, Path::new(case.file))
        .unwrap_or_else(|e| panic!("{}: {e}", case.stem))
        .text
}

/// A fresh directory under /tmp standing in for a home directory.
fn temp_home(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcpguard-wrap-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn parse(case: &Case, text: &str) -> Node {
    json::parse(text, case.client.syntax()).unwrap_or_else(|e| {
        let (line, col) = e.line_col(text);
        panic!("{}: {line}:{col}: {}", case.stem, e.message)
    })
}

/// The keys of every object in `node`, depth first, each with its path.
fn key_orders(node: &Node, at: &str, out: &mut Vec<(String, Vec<String>)>) {
    match &node.kind {
        json::Kind::Object(members) => {
            out.push((
                at.to_owned(),
                members.iter().map(|m| m.key.clone()).collect(),
            ));
            for m in members {
                key_orders(&m.value, &format!("{at}.{}", m.key), out);
            }
        }
        json::Kind::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                key_orders(item, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn golden_wrap_for_each_format() {
    let bless = std::env::var_os("MCPGUARD_BLESS").is_some();
    for case in CASES {
        assert_eq!(
            Client::detect(Path::new(case.file)),
            Some(case.client),
            "{}",
            case.file
        );
        let input = case.input();
        let out = wrap_text(case, &input);
        if bless {
            let path = golden_path(&format!("{}.wrapped.json", case.stem));
            fs::write(&path, &out.text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        assert_eq!(out.text, case.expected(), "{}: wrap output", case.stem);
        if case.client.syntax() == json::Syntax::Strict {
            serde_json::from_str::<serde_json::Value>(&out.text)
                .unwrap_or_else(|e| panic!("{}: output is not JSON: {e}", case.stem));
        }

        // Idempotent, and exactly undone by unwrap.
        let again = wrap_text(case, &out.text);
        assert_eq!(again.text, out.text, "{}: wrapping twice", case.stem);
        assert!(
            again
                .servers
                .iter()
                .all(|s| matches!(s.action, Action::AlreadyWrapped | Action::Remote)),
            "{}: {:?}",
            case.stem,
            again.servers
        );
        assert_eq!(unwrap_text(case, &out.text), input, "{}: unwrap", case.stem);
        assert_eq!(
            unwrap_text(case, &input),
            input,
            "{}: unwrap of unwrapped",
            case.stem
        );

        // Which servers were wrapped, under which policy; remote ones alone.
        let wrapped: Vec<(&str, &str)> = out
            .servers
            .iter()
            .filter_map(|s| match &s.action {
                Action::Wrapped { policy, .. } => Some((s.name.as_str(), policy.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(wrapped, case.wrapped, "{}", case.stem);
        let (before, after) = (parse(case, &input), parse(case, &out.text));
        for (table_at, table) in case.client.server_tables(&before) {
            for entry in table.as_object().unwrap_or_default() {
                let new_table = case
                    .client
                    .server_tables(&after)
                    .into_iter()
                    .find(|(at, _)| *at == table_at)
                    .map(|(_, t)| t)
                    .unwrap_or_else(|| panic!("{}: {table_at} is gone", case.stem));
                let new_entry = new_table
                    .get(&entry.key)
                    .unwrap_or_else(|| panic!("{}: {} is gone", case.stem, entry.key));
                if case.remote.contains(&entry.key.as_str()) {
                    assert_eq!(
                        &input[entry.value.span.clone()],
                        &out.text[new_entry.span.clone()],
                        "{}: remote server {} changed",
                        case.stem,
                        entry.key
                    );
                    continue;
                }
                // Every field but command and args is untouched.
                for m in entry.value.as_object().unwrap_or_default() {
                    if m.key == "command" || m.key == "args" {
                        continue;
                    }
                    let new = new_entry.get(&m.key).map(|n| &out.text[n.span.clone()]);
                    assert_eq!(
                        new,
                        Some(&input[m.value.span.clone()]),
                        "{}: {}.{}",
                        case.stem,
                        entry.key,
                        m.key
                    );
                }
                let args: Vec<&str> = new_entry
                    .get("args")
                    .and_then(Node::as_array)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(Node::as_str)
                    .collect();
                let old_args = entry
                    .value
                    .get("args")
                    .and_then(Node::as_array)
                    .unwrap_or_default();
                let command = entry.value.get("command").and_then(Node::as_str);
                assert_eq!(
                    new_entry.get("command").and_then(Node::as_str),
                    Some(MCPGUARD)
                );
                assert_eq!(args[..3], ["run", "--policy", &policy_name(&entry.key)]);
                assert_eq!(args[3], "--");
                assert_eq!(Some(args[4]), command);
                assert_eq!(args.len(), 5 + old_args.len());
            }
        }

        // Unknown fields and key order survive everywhere: the only new key
        // is an `args` right after a `command` that had none.
        let (mut old_keys, mut new_keys) = (Vec::new(), Vec::new());
        key_orders(&before, "", &mut old_keys);
        key_orders(&after, "", &mut new_keys);
        assert_eq!(old_keys.len(), new_keys.len(), "{}", case.stem);
        for ((at, old), (new_at, new)) in old_keys.iter().zip(&new_keys) {
            assert_eq!(at, new_at, "{}", case.stem);
            if old != new {
                let mut expected = old.clone();
                let i = old.iter().position(|k| k == "command").map_or(0, |i| i + 1);
                expected.insert(i, "args".to_owned());
                assert_eq!(new, &expected, "{}: keys of {at}", case.stem);
            }
        }
    }
}

fn policy_name(key: &str) -> String {
    starter::policy_name(key)
}

fn config(home: &Path, dry_run: bool) -> WrapConfig {
    WrapConfig {
        client: None,
        mcpguard: MCPGUARD.to_owned(),
        policy_dir: None,
        home: Some(home.to_owned()),
        dry_run,
        installer: None,
        accept_weaker: Vec::new(),
    }
}

/// Policies an unrelated install may already provide, which wrap rightly
/// does not shadow with a starter.
fn system_policy(name: &str) -> bool {
    Path::new("/etc/mcpguard/policies")
        .join(format!("{name}.toml"))
        .is_file()
}

#[test]
fn files_backups_dry_run_and_starter_policies() {
    for case in CASES {
        let home = temp_home(&case.stem.replace('.', "-"));
        let path = home.join(case.file);
        fs::create_dir_all(path.parent().unwrap_or(&home)).expect("config dir");
        let input = case.input();
        fs::write(&path, &input).expect("write config");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let policies = home.join(".config/mcpguard/policies");
        let backup = backup_path(&path);
        let expected_starters: Vec<&str> = case
            .wrapped
            .iter()
            .map(|(_, p)| *p)
            .filter(|p| !system_policy(p))
            .collect();

        // Dry run: a diff, the starters it would write, and no writes.
        let report = wrap_file(&path, &config(&home, true)).expect("dry run");
        assert!(report.changed);
        assert!(report
            .diff
            .starts_with(&format!("--- {}\n", path.display())));
        assert!(report.diff.contains("\n-") && report.diff.contains("\n+"));
        assert!(report.diff.contains(&format!(
            "+{}",
            case.expected()
                .lines()
                .find(|l| l.contains(MCPGUARD))
                .unwrap_or_default()
        )));
        let planned: Vec<&str> = report.starters.iter().map(|s| s.policy.as_str()).collect();
        assert_eq!(planned, expected_starters, "{}", case.stem);
        assert!(report.starters.iter().all(|s| !s.written));
        assert_eq!(fs::read_to_string(&path).expect("read"), input);
        assert!(
            !backup.exists() && !policies.exists(),
            "{}: dry run wrote",
            case.stem
        );

        // Wrap: golden output, backup of the original, mode kept, policies.
        let report = wrap_file(&path, &config(&home, false)).expect("wrap");
        assert_eq!(fs::read_to_string(&path).expect("read"), case.expected());
        assert_eq!(report.backup.as_deref(), Some(backup.as_path()));
        assert_eq!(fs::read_to_string(&backup).expect("backup"), input);
        assert_eq!(fs::metadata(&path).expect("stat").mode() & 0o7777, 0o640);
        assert_eq!(fs::metadata(&backup).expect("stat").mode() & 0o7777, 0o640);
        let written: Vec<&str> = report
            .starters
            .iter()
            .filter(|s| s.written)
            .map(|s| s.policy.as_str())
            .collect();
        assert_eq!(written, expected_starters, "{}", case.stem);
        for s in &report.starters {
            assert_eq!(s.path, policies.join(format!("{}.toml", s.policy)));
            let p = Policy::load(&s.path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.name, s.policy);
            assert!(
                p.network.allow.is_empty(),
                "{}: starter allows network",
                s.policy
            );
            for var in ["PATH", "HOME", "LANG"] {
                assert!(p.env.pass.iter().any(|v| v == var), "{}: {var}", s.policy);
            }
        }

        // Again: nothing changes, the backup is not rewritten, and the
        // policies (now present) are not written again.
        let before = fs::metadata(&backup).expect("stat").modified().ok();
        let report = wrap_file(&path, &config(&home, false)).expect("wrap again");
        assert!(!report.changed && report.backup.is_none() && report.starters.is_empty());
        assert_eq!(fs::read_to_string(&path).expect("read"), case.expected());
        assert_eq!(fs::metadata(&backup).expect("stat").modified().ok(), before);

        // Unwrap restores the original byte for byte and keeps the backup.
        let report = unwrap_file(&path, None, MCPGUARD, false).expect("unwrap");
        assert!(report.changed);
        assert_eq!(fs::read_to_string(&path).expect("read"), input);
        assert!(backup.exists());

        // The backup is the pre-mcpguard file: a later wrap of an edited
        // config leaves it alone.
        let edited = input.replacen('{', "{\"edited\": 1,", 1);
        fs::write(&path, &edited).expect("edit");
        let report = wrap_file(&path, &config(&home, false)).expect("wrap edited");
        assert!(report.changed && report.backup.is_none());
        assert_eq!(fs::read_to_string(&backup).expect("backup"), input);

        let _ = fs::remove_dir_all(&home);
    }
}

#[test]
fn root_keeps_the_owner_and_gives_policies_to_the_user() {
    if !crate::atomic_file::running_as_root() {
        eprintln!("skipped: needs root to give files away");
        return;
    }
    let home = temp_home("owner");
    let path = home.join(".cursor/mcp.json");
    fs::create_dir_all(path.parent().unwrap_or(&home)).expect("dir");
    fs::write(&path, CASES[3].input()).expect("write");
    let (uid, gid) = (65534, 65534);
    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
    let report = wrap_file(&path, &config(&home, false)).expect("wrap");
    let meta = fs::metadata(&path).expect("stat");
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    let backup = fs::metadata(backup_path(&path)).expect("stat");
    assert_eq!((backup.uid(), backup.gid()), (uid, gid));
    // Policies go to the owner, whose `mcpguard run` must read them.
    if let Some(user) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
    {
        for s in report.starters.iter().filter(|s| s.written) {
            let meta = fs::metadata(&s.path).expect("stat");
            assert_eq!(meta.uid(), user.uid.as_raw(), "{}", s.path.display());
        }
        let dir = fs::metadata(home.join(".config/mcpguard")).expect("stat");
        assert_eq!(dir.uid(), user.uid.as_raw());
    }
    let _ = fs::remove_dir_all(&home);
}

/// On a kernel that lacks scopes (`--accept-weaker` given), every starter
/// wrap writes accepts them, so the daemon launches it; the policy says
/// why.
#[test]
fn starters_accept_what_the_user_accepted_for_an_older_kernel() {
    let home = temp_home("accept-weaker");
    let path = home.join(".cursor/mcp.json");
    fs::create_dir_all(path.parent().unwrap_or(&home)).expect("dir");
    fs::write(&path, CASES[3].input()).expect("write");
    let dir = home.join("my-policies");
    let accepted = super::kernel::gate(Some(2), true).expect("accepted");
    let cfg = WrapConfig {
        policy_dir: Some(dir.clone()),
        accept_weaker: accepted.clone(),
        ..config(&home, false)
    };
    let report = wrap_file(&path, &cfg).expect("wrap");
    assert!(!report.starters.is_empty());
    for starter in &report.starters {
        let text = fs::read_to_string(&starter.path).expect("read");
        assert!(text.contains("--accept-weaker"), "{text}");
        let policy = Policy::load(&starter.path).expect("parses");
        assert_eq!(policy.kernel.accept_weaker, accepted, "{text}");
    }
    let _ = fs::remove_dir_all(&home);
}

#[test]
fn policy_dir_outside_the_search_path_is_named_by_path() {
    let home = temp_home("policy-dir");
    let path = home.join(".cursor/mcp.json");
    fs::create_dir_all(path.parent().unwrap_or(&home)).expect("dir");
    fs::write(&path, CASES[3].input()).expect("write");
    let dir = home.join("my-policies");
    let cfg = WrapConfig {
        policy_dir: Some(dir.clone()),
        ..config(&home, false)
    };
    let report = wrap_file(&path, &cfg).expect("wrap");
    let text = fs::read_to_string(&path).expect("read");
    let sqlite = dir.join("sqlite.toml");
    assert!(
        text.contains(&format!("{:?}", sqlite.display().to_string())),
        "{text}"
    );
    assert!(sqlite.is_file());
    assert!(report.starters.iter().all(|s| s.path.starts_with(&dir)));
    assert!(!home.join(".config").exists());

    // A policy that already exists there is kept, not replaced.
    fs::write(&path, CASES[3].input()).expect("write");
    fs::write(&sqlite, "name = \"sqlite\"\n").expect("write policy");
    let report = wrap_file(&path, &cfg).expect("wrap");
    assert!(report.starters.iter().all(|s| s.policy != "sqlite"));
    assert_eq!(
        fs::read_to_string(&sqlite).expect("read"),
        "name = \"sqlite\"\n"
    );
    let _ = fs::remove_dir_all(&home);
}

#[test]
fn errors() {
    let home = temp_home("errors");
    let cfg = config(&home, false);

    let missing = home.join(".cursor/mcp.json");
    let e = wrap_file(&missing, &cfg).expect_err("missing file");
    assert!(matches!(e, WrapError::Read { .. }) && !e.is_usage(), "{e}");

    let unknown = home.join("servers.json");
    fs::write(&unknown, "{}").expect("write");
    let e = wrap_file(&unknown, &cfg).expect_err("unknown client");
    assert!(e.is_usage(), "{e}");
    assert!(e.to_string().contains("--client"), "{e}");
    let ok = wrap_file(
        &unknown,
        &WrapConfig {
            client: Some(Client::Cursor),
            ..cfg.clone()
        },
    )
    .expect("with --client");
    assert!(!ok.changed && ok.servers.is_empty());

    let bad = home.join("claude_desktop_config.json");
    fs::write(
        &bad,
        "{\n  \"mcpServers\": {\n    \"a\": {\"command\": \"x\",}\n  }\n}\n",
    )
    .expect("write");
    let e = wrap_file(&bad, &cfg).expect_err("bad json");
    let want = format!("{}:3:26: invalid JSON", bad.display());
    assert!(e.to_string().starts_with(&want), "{e}");

    fs::write(&bad, "{\"mcpServers\": {\"a\": [\"npx\", \"x\"]}}").expect("write");
    let e = wrap_file(&bad, &cfg).expect_err("not an object");
    assert!(matches!(e, WrapError::NotAnObject { .. }), "{e}");
    assert!(e.to_string().contains("mcpServers.\"a\""), "{e}");
    assert!(
        !backup_path(&bad).exists(),
        "no backup for a file not changed"
    );

    let _ = fs::remove_dir_all(&home);
}
