//! The proposed policy's text, from [`Observations`], and the notes on
//! what was left out.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use super::{
    paths::{generalise, interpreters, minimal, refused, show},
    Observations,
};
use crate::policy::write::{self, Item};

/// A TOML array, one item a line.
fn toml_list(items: &[String]) -> String {
    write::block_array(items.iter().map(|i| Item::new(i)))
}

/// Add `why` to `notes` unless it is there already.
fn note(notes: &mut Vec<String>, why: String) {
    let n = format!("not proposed: {why}");
    if !notes.contains(&n) {
        notes.push(n);
    }
}

/// Generalise every path of `paths` (with whether it is known to be a
/// directory), noting refusals.
fn rules(
    paths: impl IntoIterator<Item = (PathBuf, bool)>,
    obs: &Observations,
    home: &Path,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let mut set = BTreeSet::new();
    for (p, dir) in paths {
        if obs.launch_specific(&p) {
            note(
                notes,
                format!(
                    "{}: this launch's cgroup, named anew on every launch",
                    p.display()
                ),
            );
            continue;
        }
        match generalise(&p, home, &obs.replaced, dir) {
            Ok(g) => {
                set.insert(g);
            }
            Err(why) => note(notes, why),
        }
    }
    minimal(set, home).iter().map(|p| show(p, home)).collect()
}

/// Exec rules: the programs exec records name, and the interpreters the
/// kernel opens to run them; the files themselves, not their directories
/// (unless many of one directory ran).
fn exec_rules(obs: &Observations, home: &Path, notes: &mut Vec<String>) -> Vec<String> {
    let mut files = BTreeSet::new();
    let mut todo: Vec<PathBuf> = obs.execs.iter().cloned().collect();
    while let Some(f) = todo.pop() {
        if f.starts_with("/proc") {
            note(notes, format!("exec {}: not a stable path", f.display()));
            continue;
        }
        if let Some(why) = refused(&f, home) {
            note(notes, why);
            continue;
        }
        if files.insert(f.clone()) {
            todo.extend(interpreters(&f));
        }
    }
    minimal(files, home).iter().map(|p| show(p, home)).collect()
}

/// Network rules: every name a lookup gave an address, else the address.
fn allow_rules(obs: &Observations) -> Vec<String> {
    let mut allow = BTreeSet::new();
    for (addr, port) in &obs.connects {
        match obs.names.get(addr) {
            Some(names) if !names.is_empty() => {
                allow.extend(names.iter().map(|n| format!("{n}:{port}")));
            }
            _ if addr.contains(':') => {
                allow.insert(format!("[{addr}]:{port}"));
            }
            _ => {
                allow.insert(format!("{addr}:{port}"));
            }
        }
    }
    allow.into_iter().collect()
}

/// The persistence families ([`crate::policy::persist`]) the server
/// wrote into: files it wrote, and directories it changed.
fn persistence_written(obs: &Observations) -> Vec<String> {
    let families: BTreeSet<_> = (obs.writes.iter())
        .chain(&obs.dir_writes)
        .filter_map(|p| crate::policy::persist::classify(p))
        .collect();
    families.iter().map(ToString::to_string).collect()
}

/// The `[tools]` table: every tool the server listed (so the ones nobody
/// called during learning stay available), marking those that were called.
fn tools_table(obs: &Observations, t: &mut String, notes: &mut Vec<String>) {
    let listed: Vec<String> = if obs.tools_listed.is_empty() {
        if obs.tools.is_empty() {
            notes.push(
                "the server listed no tools while learning: [tools] left out (every tool allowed)"
                    .into(),
            );
            return;
        }
        notes.push("no tools/list answer was seen: [tools] allow lists the called tools".into());
        obs.tools.iter().cloned().collect()
    } else {
        obs.tools_listed.union(&obs.tools).cloned().collect()
    };
    let _ = writeln!(t, "\n[tools]");
    let _ = writeln!(
        t,
        "# From the server's tools/list answer; \"called\" marks the tools called while learning."
    );
    let _ = writeln!(
        t,
        "allow = {}",
        write::block_array(listed.iter().map(|n| Item {
            after: obs.tools.contains(n).then_some("called"),
            ..Item::new(n)
        }))
    );
}

/// The proposed policy text and notes on what was left out.
pub fn propose(
    name: &str,
    obs: &Observations,
    home: &Path,
    env_pass: &[String],
) -> (String, Vec<String>) {
    let mut notes = Vec::new();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Proposed by `mcpguard policy learn` from one run of the server."
    );
    let _ = writeln!(
        t,
        "# Review it: every entry is something the server did while learning."
    );
    let _ = writeln!(t, "name = {}\n", write::quote(name));
    filesystem_table(obs, home, &mut t, &mut notes);
    network_table(obs, &mut t);
    kernel_table(obs, &mut t, &mut notes);
    let _ = writeln!(t, "\n[env]");
    let _ = writeln!(t, "pass = {}", toml_list(env_pass));
    tools_table(obs, &mut t, &mut notes);
    if obs.unreadable > 0 {
        notes.push(format!(
            "{} file records had no readable path (not yet in the caller's memory); \
             if the server is refused a file under this policy, `mcpguard audit --denied` names it",
            obs.unreadable
        ));
    }
    notes.push(
        "environment variables are not observable: [env] pass is the starting policy's".into(),
    );
    (t, notes)
}

/// The `[filesystem]` table: what the server read, wrote and ran, and the
/// persistence families it wrote into.
fn filesystem_table(obs: &Observations, home: &Path, t: &mut String, notes: &mut Vec<String>) {
    let files = |set: &BTreeSet<PathBuf>, dir: bool| {
        set.iter()
            .map(move |p| (p.clone(), dir))
            .collect::<Vec<_>>()
    };
    let mut reads = rules(files(&obs.reads, false), obs, home, notes);
    // What every policy reads anyway (the proposal keeps the baseline on).
    let baseline = crate::policy::baseline::read_paths();
    let before = reads.len();
    reads.retain(|r| !baseline.iter().any(|b| Path::new(r).starts_with(b)));
    if reads.len() < before {
        notes.push(format!(
            "{} read rules left out: the runtime baseline every policy gets covers them",
            before - reads.len()
        ));
    }
    let mut written = files(&obs.writes, false);
    written.extend(files(&obs.dir_writes, true));
    let writes = rules(written, obs, home, notes);
    let execs = exec_rules(obs, home, notes);
    let _ = writeln!(t, "[filesystem]");
    let _ = writeln!(t, "read = {}", toml_list(&reads));
    let _ = writeln!(t, "write = {}", toml_list(&writes));
    let _ = writeln!(t, "exec = {}", toml_list(&execs));
    let persistence = persistence_written(obs);
    if !persistence.is_empty() {
        let _ = writeln!(t, "allow_persistence = {}", toml_list(&persistence));
        notes.push(format!(
            "the server wrote paths that run code outside the guard later ({}): \
             allow_persistence lets it; drop what it should not write",
            persistence.join(", ")
        ));
    }
}

/// The `[network]` table: where the server connected, the ports it bound,
/// the Unix sockets it reached in shared directories, the socket kinds it
/// opened.
fn network_table(obs: &Observations, t: &mut String) {
    let unix: Vec<String> = obs
        .unix
        .iter()
        .filter(|p| {
            ["/run/", "/var/run/", "/tmp/", "/var/tmp/", "/dev/shm/"]
                .iter()
                .any(|d| p.starts_with(d))
        })
        .cloned()
        .collect();
    let _ = writeln!(t);
    let _ = writeln!(t, "[network]");
    let _ = writeln!(t, "allow = {}", toml_list(&allow_rules(obs)));
    if !obs.binds.is_empty() {
        let ports: Vec<String> = obs.binds.iter().map(u16::to_string).collect();
        let _ = writeln!(t, "bind = {}", toml_list(&ports));
    }
    if !unix.is_empty() {
        let _ = writeln!(t, "unix = {}", toml_list(&unix));
    }
    if !obs.sockets.is_empty() {
        let kinds: Vec<String> = obs.sockets.iter().cloned().collect();
        let _ = writeln!(t, "sockets = {}", toml_list(&kinds));
    }
}

/// The `[kernel]` table, when the server used interfaces the syscall fence
/// refuses by default.
fn kernel_table(obs: &Observations, t: &mut String, notes: &mut Vec<String>) {
    if obs.kernel.is_empty() {
        return;
    }
    let kernel: Vec<String> = obs.kernel.iter().map(|f| f.to_string()).collect();
    let _ = writeln!(t, "\n[kernel]");
    let _ = writeln!(t, "allow = {}", toml_list(&kernel));
    notes.push(format!(
        "the server used kernel interfaces the syscall fence refuses by default: {}",
        kernel.join(", ")
    ));
}
