//! `mcpguard policy learn`: turn what a server did in learning mode into a
//! proposed least-privilege policy.
//!
//! In learning mode nothing is enforced and everything is recorded; the
//! audit thread collects the records of that one server into
//! [`Observations`], and [`propose`] generalises them: files to sensible
//! directories (never all of `$HOME`, never credential stores), addresses
//! to the names the server's own lookups gave them, tools to the ones it
//! was asked to run. What it refuses to generalise is listed in the notes.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Component, Path, PathBuf},
};

use serde_json::Value;

use super::KernelFeature;
use crate::audit::{AuditRecord, Body};

/// Below `$HOME`, these are never proposed: credentials and keys.
const SECRET_DIRS: &[&str] = &[
    ".ssh",
    ".aws",
    ".gnupg",
    ".netrc",
    ".docker",
    ".kube",
    ".git-credentials",
    ".config/gh",
    ".config/gcloud",
    ".azure",
    ".password-store",
    ".mozilla",
    ".config/google-chrome",
    ".config/chromium",
];

/// Directories whose contents are collapsed to the directory itself.
/// (Not /tmp: a policy's "/tmp" is the server's own empty one, so files
/// found there are kept by their directory.)
const WHOLE_DIRS: &[&str] = &["/etc/ssl", "/usr/share/zoneinfo"];

/// What one server did, as far as the records show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observations {
    pub reads: BTreeSet<PathBuf>,
    pub writes: BTreeSet<PathBuf>,
    pub execs: BTreeSet<PathBuf>,
    /// (address as recorded, port).
    pub connects: BTreeSet<(String, u16)>,
    /// Address → the name a lookup returned it for.
    pub names: BTreeMap<String, String>,
    pub unix: BTreeSet<String>,
    pub tools: BTreeSet<String>,
    pub sockets: BTreeSet<String>,
    /// `[kernel] allow` features whose syscalls the server called (from the
    /// syscall names alone: a `memfd_create` is counted even if it sealed
    /// its memfd, so review these).
    pub kernel: BTreeSet<KernelFeature>,
}

impl Observations {
    /// Take what a record shows; `cwd` resolves relative paths.
    pub fn observe(&mut self, rec: &AuditRecord, cwd: &Path) {
        // The path as passed and, if it differs, where it leads: Landlock
        // checks the file a symlink resolves to (venv/bin/python is
        // /usr/bin/python3.11; /etc/localtime is a zoneinfo file).
        let abs = |p: &str| -> Vec<PathBuf> {
            let p = Path::new(p);
            let p = if p.is_absolute() {
                p.to_owned()
            } else {
                cwd.join(p)
            };
            match std::fs::canonicalize(&p) {
                Ok(real) if real != p => vec![p, real],
                _ => vec![p],
            }
        };
        match &rec.body {
            Body::Open {
                path,
                flags,
                result,
                dirfd: None,
                ..
            } if *result >= 0 => {
                let writes = flags
                    .iter()
                    .any(|f| matches!(f.as_str(), "O_WRONLY" | "O_RDWR" | "O_CREAT" | "O_TRUNC"));
                for p in abs(path) {
                    if writes {
                        self.writes.insert(p);
                        continue;
                    }
                    let lib = p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.contains(".so"));
                    if lib {
                        // Shared objects are mapped as code.
                        self.execs.insert(p.clone());
                    }
                    self.reads.insert(p);
                }
            }
            Body::Exec {
                filename, result, ..
            } if *result == 0 => {
                self.execs.extend(abs(filename));
            }
            Body::Connect {
                addr,
                port,
                verdict,
                ..
            } if verdict != "deny" => {
                self.connects.insert((addr.clone(), *port));
            }
            Body::Dns {
                qname,
                verdict,
                detail,
                ..
            } if verdict == "allow" => {
                for a in detail["answers"].as_array().into_iter().flatten() {
                    if let Some(addr) = a["addr"].as_str() {
                        self.names
                            .entry(addr.to_owned())
                            .or_insert_with(|| qname.clone());
                    }
                }
            }
            Body::UnixConnect {
                path,
                result,
                abstract_addr: false,
                ..
            } if *result == 0 => {
                self.unix.insert(path.clone());
            }
            Body::Socket {
                family,
                protocol,
                sock_type,
                verdict,
            } if verdict == "would_deny" => {
                if let Some(key) = super::sockets::key_for(family, sock_type, protocol) {
                    self.sockets.insert(key);
                }
            }
            Body::Syscall { name, result, .. } if *result >= 0 => {
                if let Some(f) = crate::launch::seccomp::feature_of(name) {
                    self.kernel.insert(f);
                }
            }
            Body::Mcp { event, .. } if event == "tools_call" => {
                if let Some(t) = &rec.tool {
                    self.tools.insert(t.clone());
                }
            }
            _ => {}
        }
    }
}

/// A path as a policy writes it: `~/...` below `home`.
fn show(path: &Path, home: &Path) -> String {
    match path.strip_prefix(home) {
        Ok(rest) if rest.as_os_str().is_empty() => "~".into(),
        Ok(rest) => format!("~/{}", rest.display()),
        Err(_) => path.display().to_string(),
    }
}

/// The first `n` normal components of `path` (after the root).
fn prefix(path: &Path, n: usize) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .take(n)
    {
        out.push(c);
    }
    out
}

/// How far an observed file is generalised, or why it is refused.
fn generalise(path: &Path, home: &Path) -> Result<PathBuf, String> {
    if let Ok(rest) = path.strip_prefix(home) {
        let rest_s = rest.to_string_lossy();
        if SECRET_DIRS
            .iter()
            .any(|d| rest_s == *d || rest_s.starts_with(&format!("{d}/")))
        {
            return Err(format!("{}: a credential store", show(path, home)));
        }
        let comps: Vec<Component> = rest.components().collect();
        return match comps.len() {
            0 => Err("~ itself: all of $HOME is never proposed".into()),
            // A file right in $HOME stays that one file.
            1 => Ok(path.to_owned()),
            // Otherwise the tree a program keeps its files in (e.g.
            // ~/.local/share/app), at most three levels down.
            n => Ok(comps[..(n - 1).min(3)]
                .iter()
                .fold(home.to_owned(), |acc, c| acc.join(c))),
        };
    }
    if let Some(w) = WHOLE_DIRS.iter().find(|w| path.starts_with(w)) {
        return Ok(PathBuf::from(w));
    }
    let s = path.to_string_lossy();
    if let Some(rest) = s.strip_prefix("/proc/") {
        let first = rest.split('/').next().unwrap_or("");
        let per_process = first.chars().all(|c| c.is_ascii_digit()) || first.ends_with("self");
        return Ok(if per_process && !first.is_empty() {
            PathBuf::from("/proc/self")
        } else {
            path.to_owned()
        });
    }
    for (root, depth) in [
        ("/usr", 2),
        ("/lib", 1),
        ("/lib64", 1),
        ("/bin", 1),
        ("/sbin", 1),
        ("/opt", 2),
        ("/snap", 2),
    ] {
        if path.starts_with(root) {
            return Ok(prefix(path, depth));
        }
    }
    if ["/etc/", "/dev/", "/sys/", "/run/"]
        .iter()
        .any(|d| s.starts_with(d))
    {
        return Ok(path.to_owned());
    }
    // Anything else: the directory the file is in.
    Ok(path
        .parent()
        .map_or_else(|| path.to_owned(), Path::to_owned))
}

/// Keep only paths no other listed path contains.
fn minimal(paths: BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let all: Vec<PathBuf> = paths.into_iter().collect();
    all.iter()
        .filter(|p| !all.iter().any(|q| q != *p && p.starts_with(q)))
        .cloned()
        .collect()
}

fn toml_list(items: &[String]) -> String {
    if items.is_empty() {
        return "[]".into();
    }
    let body: Vec<String> = items
        .iter()
        .map(|i| format!("    {}", Value::String(i.clone())))
        .collect();
    format!("[\n{},\n]", body.join(",\n"))
}

/// The proposed policy text and notes on what was left out.
pub fn propose(
    name: &str,
    obs: &Observations,
    home: &Path,
    env_pass: &[String],
) -> (String, Vec<String>) {
    let mut notes = Vec::new();
    let mut sets: [BTreeSet<PathBuf>; 3] = Default::default();
    for (idx, paths) in [&obs.reads, &obs.writes, &obs.execs]
        .into_iter()
        .enumerate()
    {
        for p in paths {
            match generalise(p, home) {
                Ok(g) => {
                    sets[idx].insert(g);
                }
                Err(why) => {
                    if !notes.iter().any(|n: &String| n.contains(&why)) {
                        notes.push(format!("not proposed: {why}"));
                    }
                }
            }
        }
    }
    let [reads, writes, execs] =
        sets.map(|s| minimal(s).iter().map(|p| show(p, home)).collect::<Vec<_>>());

    let mut allow = BTreeSet::new();
    for (addr, port) in &obs.connects {
        match obs.names.get(addr) {
            Some(n) => allow.insert(format!("{n}:{port}")),
            None if addr.contains(':') => allow.insert(format!("[{addr}]:{port}")),
            None => allow.insert(format!("{addr}:{port}")),
        };
    }
    let allow: Vec<String> = allow.into_iter().collect();
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

    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Proposed by `mcpguard policy learn` from one run of the server."
    );
    let _ = writeln!(
        t,
        "# Review it: every entry is something the server did while learning."
    );
    let _ = writeln!(t, "name = {}\n", Value::String(name.into()));
    let _ = writeln!(t, "[filesystem]");
    let _ = writeln!(t, "read = {}", toml_list(&reads));
    let _ = writeln!(t, "write = {}", toml_list(&writes));
    let _ = writeln!(t, "exec = {}\n", toml_list(&execs));
    let _ = writeln!(t, "[network]");
    let _ = writeln!(t, "allow = {}", toml_list(&allow));
    if !unix.is_empty() {
        let _ = writeln!(t, "unix = {}", toml_list(&unix));
    }
    if !obs.sockets.is_empty() {
        let kinds: Vec<String> = obs.sockets.iter().cloned().collect();
        let _ = writeln!(t, "sockets = {}", toml_list(&kinds));
    }
    if !obs.kernel.is_empty() {
        let kernel: Vec<String> = obs.kernel.iter().map(|f| f.to_string()).collect();
        let _ = writeln!(t, "\n[kernel]");
        let _ = writeln!(t, "allow = {}", toml_list(&kernel));
        notes.push(format!(
            "the server used kernel interfaces the syscall fence refuses by default: {}",
            kernel.join(", ")
        ));
    }
    let _ = writeln!(t, "\n[env]");
    let _ = writeln!(t, "pass = {}", toml_list(env_pass));
    if !obs.tools.is_empty() {
        let tools: Vec<String> = obs.tools.iter().cloned().collect();
        let _ = writeln!(t, "\n[tools]");
        let _ = writeln!(t, "allow = {}", toml_list(&tools));
    } else {
        notes.push(
            "no tool was called while learning: [tools] left out (every tool allowed)".into(),
        );
    }
    notes.push(
        "environment variables are not observable: [env] pass is the starting policy's".into(),
    );
    (t, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs() -> Observations {
        let mut o = Observations::default();
        for p in [
            "/usr/lib/python3.11/os.py",
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "/etc/ld.so.cache",
            "/home/u/.local/share/app/venv/lib/site.py",
            "/home/u/.ssh/id_rsa",
            "/home/u/notes.txt",
            "/proc/1234/status",
            "/tmp/x/y.json",
        ] {
            o.reads.insert(p.into());
        }
        o.writes.insert("/home/u/.cache/app/db/state.json".into());
        o.execs.insert("/usr/bin/python3.11".into());
        o.execs
            .insert("/usr/lib/x86_64-linux-gnu/libssl.so.3".into());
        o.connects.insert(("140.82.112.5".into(), 443));
        o.connects.insert(("127.0.0.1".into(), 8080));
        o.names
            .insert("140.82.112.5".into(), "api.github.com".into());
        o.tools.insert("get_status".into());
        o
    }

    #[test]
    fn proposals_generalise_but_never_to_home_or_credentials() {
        let (text, notes) = propose("app", &obs(), Path::new("/home/u"), &["PATH".into()]);
        let p = crate::policy::Policy::parse(&text, Path::new("learned.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(
            p.filesystem.read.contains(&"/usr/lib".to_string()),
            "{text}"
        );
        assert!(
            p.filesystem.read.contains(&"/etc/ld.so.cache".to_string()),
            "{text}"
        );
        assert!(
            p.filesystem
                .read
                .contains(&"~/.local/share/app".to_string()),
            "{text}"
        );
        assert!(
            p.filesystem.read.contains(&"~/notes.txt".to_string()),
            "{text}"
        );
        assert!(
            p.filesystem.read.contains(&"/proc/self".to_string()),
            "{text}"
        );
        assert!(p.filesystem.read.contains(&"/tmp/x".to_string()), "{text}");
        assert!(
            !p.filesystem
                .read
                .iter()
                .any(|r| r == "~" || r.contains(".ssh")),
            "{text}"
        );
        assert!(
            p.filesystem.write.contains(&"~/.cache/app/db".to_string()),
            "{text}"
        );
        assert!(
            p.filesystem.exec.contains(&"/usr/bin".to_string()),
            "{text}"
        );
        assert!(
            p.filesystem.exec.contains(&"/usr/lib".to_string()),
            "{text}"
        );
        assert_eq!(p.network.hosts[0].text, "api.github.com:443");
        assert_eq!(p.network.allow[0].text, "127.0.0.1:8080");
        assert_eq!(p.tools.allow, Some(vec!["get_status".to_string()]));
        assert!(notes.iter().any(|n| n.contains(".ssh")), "{notes:?}");
    }
}
