//! The escape suite: one test per attack class from the hardening issue.
//!
//! Each test runs hostile programs (C sources in `tests/escape/`, compiled
//! here with the system `cc`) as the unprivileged test user through
//! `mcpguard run`, and asserts both halves of every row: the kernel refused
//! the attack (blocked) and the audit log holds a record of it (recorded).
//! Every attack writes one report row to `target/escape/rows/` before the
//! test asserts, so a red row still reaches the report; `cargo xtask test`
//! assembles `target/escape-report.md` from the rows.

use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Mutex, OnceLock},
};

use serde_json::json;

use crate::harness::{scratch, Daemon};

mod attrs;
mod inbound;
mod kernel;
mod net;
mod resources;

/// The attack classes, numbered as in the issue and the report.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
pub enum Class {
    SensitiveReads = 1,
    PathTricks = 2,
    ExecTricks = 3,
    Egress = 4,
    KernelInterfaces = 5,
    Toctou = 6,
    Resources = 7,
    TerminalTricks = 8,
    ServerRequests = 9,
    AttributeChanges = 10,
    Inbound = 11,
    Persistence = 12,
    ResolverAccess = 13,
    DaemonBudgets = 14,
    SilentRefusals = 15,
}

/// One attack's outcome.
#[derive(Debug)]
pub struct Row {
    pub attack: String,
    pub blocked: bool,
    pub recorded: bool,
    /// What proves each half: the errno the attack saw, the audit record.
    pub evidence: String,
}

impl Row {
    pub fn new(attack: &str, blocked: bool, recorded: bool, evidence: impl Into<String>) -> Row {
        Row {
            attack: attack.to_owned(),
            blocked,
            recorded,
            evidence: evidence.into(),
        }
    }
}

fn rows_dir() -> PathBuf {
    std::env::var_os("MCPGUARD_ESCAPE_ROWS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/escape/rows"))
}

/// Writes every row of `class` for the report, then fails the test naming
/// each row that is not both blocked and recorded.
pub fn report(class: Class, rows: &[Row]) {
    let dir = rows_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (i, row) in rows.iter().enumerate() {
        let slug: String = row
            .attack
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let file = dir.join(format!("{}-{i:02}-{slug}.json", class as u8));
        let body = json!({
            "class": class as u8,
            "attack": row.attack,
            "blocked": row.blocked,
            "recorded": row.recorded,
            "evidence": row.evidence,
        });
        std::fs::write(&file, body.to_string()).unwrap();
    }
    let red: Vec<String> = rows
        .iter()
        .filter(|r| !(r.blocked && r.recorded))
        .map(|r| {
            format!(
                "{} (blocked: {}, recorded: {}): {}",
                r.attack, r.blocked, r.recorded, r.evidence
            )
        })
        .collect();
    assert!(
        red.is_empty(),
        "{class:?}: {} of {} attacks not both blocked and recorded:\n{}",
        red.len(),
        rows.len(),
        red.join("\n")
    );
}

/// Hostile program `program`'s path, then `args`: a command line for
/// [`Daemon::run`] and its kin.
pub fn hostile_argv(program: &str, args: &[impl AsRef<str>]) -> Vec<String> {
    let bin = hostile(program).display().to_string();
    std::iter::once(bin)
        .chain(args.iter().map(|a| a.as_ref().to_owned()))
        .collect()
}

/// Runs hostile program `program` with `args` under `pol` as the test
/// user; its output, whatever its exit status.
pub fn attack(d: &Daemon, pol: &Path, program: &str, args: &[impl AsRef<str>]) -> Output {
    d.run(pol, &hostile_argv(program, args))
}

/// Compiles `tests/escape/<name>.c` once per test run into a directory the
/// test user can execute from (policies name it in their `exec` list). The
/// sources include `common.h` beside them, which `cc` finds there.
pub fn hostile(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/escape/{name}.c"));
    let out = hostile_dir().join(name);
    let status = Command::new("cc")
        .args(["-O2", "-Wall", "-Werror", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("spawn cc (installed by `cargo xtask setup`)");
    assert!(status.success(), "cc failed on {}", src.display());
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    built.insert(name.to_owned(), out.clone());
    out
}

/// Where hostile binaries live; policies add it to their `exec` list.
/// The `[audit]` table of every escape policy. The rows run their attacks
/// outside any tool call and check the records of refused, failed and
/// allowed calls alike, so these servers record all file activity (the
/// default records allowed activity and failures that are no refusal only
/// during a call; `levels::` tests that).
pub const AUDIT_ALL: &str = "[audit]\nfiles = \"all\"\n";

pub fn hostile_dir() -> PathBuf {
    let dir = scratch().join("hostile");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}
mod budgets;
mod files;
mod persist;
mod reach;
mod requests;
mod terminal;
mod toctou;
