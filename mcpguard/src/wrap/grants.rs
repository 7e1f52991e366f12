//! The data a server's own command line names: absolute and `~` paths in
//! its arguments (`~/code`, `--repository=/home/me/app`) and in the values
//! of the variables its config entry sets (`MEMORY_FILE_PATH`). A starter
//! policy grants each of them, read and write, with a comment saying where
//! it came from; without them the server fails on the very directory it
//! was told to serve.
//!
//! Never granted this way, whatever the config says: `/`, the home
//! directory itself, the shared trees below it (`~/.config`, `~/.local`,
//! ...) and credential stores. Those become notes for the person instead.

use std::path::{Component, Path, PathBuf};

/// A path the server's command line names, to be granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPath {
    /// What the policy lists: the directory, as `~/...` below home.
    pub rule: String,
    /// The same, absolute.
    pub dir: PathBuf,
    /// Where it came from, for the policy comment (`argument 2`,
    /// `MEMORY_FILE_PATH`).
    pub from: String,
    /// Whether the directory does not exist yet (wrap creates it, so the
    /// kernel rule has something to bind to).
    pub missing: bool,
    /// Whether the name was a file's and the rule is its directory.
    pub file: bool,
}

/// Paths below home that hold credentials, or that are shared by many
/// programs, relative to home: never granted from a command line.
const NEVER_BELOW_HOME: &[&str] = &[
    ".ssh",
    ".aws",
    ".gnupg",
    ".kube",
    ".docker",
    ".azure",
    ".netrc",
    ".git-credentials",
    ".password-store",
    ".mozilla",
    ".config/gh",
    ".config/gcloud",
    ".config/google-chrome",
    ".config/chromium",
    ".config/BraveSoftware",
    ".config/mcpguard",
    ".local/share/keyrings",
    ".local/share/mcpguard",
    ".claude.json",
    ".claude",
    ".cursor",
];

/// Directories too wide to grant as a whole, relative to home (`""` is
/// home itself).
const TOO_WIDE_BELOW_HOME: &[&str] = &[
    "",
    ".config",
    ".local",
    ".local/share",
    ".cache",
    ".local/state",
];

/// System trees a server's data never lives in; paths there are the
/// runtime's, covered (or not) by the rest of the policy.
const SYSTEM: &[&str] = &[
    "/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys", "/dev", "/run", "/boot",
];

/// Variables whose values are search paths, not data.
const SEARCH_PATH_VARS: &[&str] = &[
    "PATH",
    "PYTHONPATH",
    "NODE_PATH",
    "LD_LIBRARY_PATH",
    "MANPATH",
];

/// The data paths in `args` and `env` values, and notes about the paths
/// left out.
pub fn data_paths(
    args: &[String],
    env: &[(String, String)],
    home: &Path,
) -> (Vec<DataPath>, Vec<String>) {
    let mut found = Vec::new();
    let mut notes = Vec::new();
    let words = args
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("argument {}", i + 1), arg_value(a)));
    let vars = env
        .iter()
        .filter(|(k, _)| !SEARCH_PATH_VARS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.as_str()));
    for (from, word) in words.chain(vars) {
        let Some(path) = as_path(word, home) else {
            continue;
        };
        if SYSTEM.iter().any(|s| path.starts_with(s)) {
            continue;
        }
        match grant_for(&path, home) {
            Ok((dir, file)) => {
                if found.iter().any(|d: &DataPath| d.dir == dir) {
                    continue;
                }
                found.push(DataPath {
                    rule: home_form(&dir, home),
                    missing: !dir.exists(),
                    dir,
                    from,
                    file,
                });
            }
            Err(why) => notes.push(format!(
                "{} (from {from}) is not granted: {why}; add it by hand if the server really needs it",
                home_form(&path, home)
            )),
        }
    }
    (found, notes)
}

/// The value of `--flag=VALUE`, or the word itself.
fn arg_value(arg: &str) -> &str {
    match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with('-') => value,
        _ => arg,
    }
}

/// An absolute path (with `~` expanded) that is clean: no `..`, no NUL,
/// not a template (`${workspaceFolder}`).
fn as_path(word: &str, home: &Path) -> Option<PathBuf> {
    if word.contains(['\0', '$', '\n']) {
        return None;
    }
    let path = if word == "~" {
        home.to_owned()
    } else if let Some(rest) = word.strip_prefix("~/") {
        home.join(rest.trim_start_matches('/'))
    } else if word.starts_with('/') {
        PathBuf::from(word)
    } else {
        return None;
    };
    let clean = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    clean.then(|| {
        let s = path.to_string_lossy();
        PathBuf::from(s.trim_end_matches('/').to_owned())
            .components()
            .collect()
    })
}

/// The directory to grant for a named path, and whether the name was a
/// file's; `Err` says why nothing is granted.
fn grant_for(path: &Path, home: &Path) -> Result<(PathBuf, bool), &'static str> {
    if path == Path::new("/") {
        return Err("it is the whole file system");
    }
    let rel = path.strip_prefix(home).ok();
    if rel.is_some_and(|r| NEVER_BELOW_HOME.iter().any(|n| r.starts_with(n))) {
        return Err("it holds credentials or mcpguard's own state");
    }
    if rel.is_some_and(|r| TOO_WIDE_BELOW_HOME.iter().any(|w| r == Path::new(w))) {
        return Err("it is a whole shared tree of your home");
    }
    let is_file = match path.metadata() {
        Ok(m) => !m.is_dir(),
        // Not there yet: a name with an extension is taken for a file the
        // server will create (a memory store, a database).
        Err(_) => path.extension().is_some(),
    };
    if !is_file {
        return Ok((path.to_owned(), false));
    }
    // A file is granted through its directory: programs replace files by
    // rename, and a kernel rule on the old file would stop matching.
    let parent = path.parent().unwrap_or(Path::new("/"));
    let parent_rel = parent.strip_prefix(home).ok();
    let wide = parent == Path::new("/")
        || parent_rel.is_some_and(|r| TOO_WIDE_BELOW_HOME.iter().any(|w| r == Path::new(w)));
    if wide {
        return Err("it is a file directly in a shared directory (its directory would grant too much, and a rule on the file alone breaks when the file is replaced): give the server a directory of its own");
    }
    Ok((parent.to_owned(), true))
}

/// `path` as `~/...` when it is below `home`.
pub fn home_form(path: &Path, home: &Path) -> String {
    match path.strip_prefix(home) {
        Ok(rest) if home != Path::new("/") && rest.as_os_str().is_empty() => "~".into(),
        Ok(rest) if home != Path::new("/") => format!("~/{}", rest.display()),
        _ => path.display().to_string(),
    }
}

/// Variables in a config entry's `env` that look like credentials: by
/// name (`*_TOKEN`, `*_KEY`, `*SECRET*`, `*PASSWORD*`) or by value (a
/// known token shape).
pub fn credential_vars(env: &[(String, String)]) -> Vec<String> {
    env.iter()
        .filter(|(k, v)| {
            let k = k.to_ascii_uppercase();
            let by_name = [
                "TOKEN",
                "SECRET",
                "PASSWORD",
                "PASSWD",
                "API_KEY",
                "APIKEY",
                "ACCESS_KEY",
                "PRIVATE_KEY",
                "CREDENTIAL",
            ]
            .iter()
            .any(|w| k.contains(w))
                || k.ends_with("_KEY");
            let by_value = [
                "ghp_",
                "gho_",
                "ghs_",
                "github_pat_",
                "AKIA",
                "xoxb-",
                "xoxp-",
                "sk-",
                "glpat-",
            ]
            .iter()
            .any(|p| v.starts_with(p));
            (by_name || by_value) && !v.is_empty() && !v.starts_with("${")
        })
        .map(|(k, _)| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_from_args_and_env() {
        let root = std::env::temp_dir().join(format!("mcpguard-grants-{}", std::process::id()));
        let home = root.join("home/me");
        std::fs::create_dir_all(home.join("code/app")).unwrap();
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::write(home.join("code/notes.md"), "x").unwrap();
        let h = home.display().to_string();
        let args: Vec<String> = [
            "-y".to_owned(),
            format!("{h}/code/app"),
            "--repository=~/code/app".to_owned(),
            format!("{h}/code/notes.md"),
            "~/.ssh".to_owned(),
            format!("{h}/../x"),
            "/usr/share/doc".to_owned(),
            "relative/dir".to_owned(),
            "~".to_owned(),
        ]
        .into();
        let env = vec![
            (
                "MEMORY_FILE_PATH".to_owned(),
                format!("{h}/.local/share/mcp-memory/memory.jsonl"),
            ),
            ("PATH".to_owned(), "/home/me/bin".to_owned()),
            ("WS".to_owned(), "${workspaceFolder}".to_owned()),
        ];
        let (found, notes) = data_paths(&args, &env, &home);
        let rules: Vec<(&str, &str, bool, bool)> = found
            .iter()
            .map(|d| (d.rule.as_str(), d.from.as_str(), d.missing, d.file))
            .collect();
        assert_eq!(
            rules,
            [
                ("~/code/app", "argument 2", false, false),
                ("~/code", "argument 4", false, true),
                ("~/.local/share/mcp-memory", "MEMORY_FILE_PATH", true, true),
            ]
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].starts_with("~/.ssh (from argument 5)"),
            "{notes:?}"
        );
        assert!(notes[1].starts_with("~ (from argument 9)"), "{notes:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn credentials_by_name_and_shape() {
        let env = vec![
            ("GITHUB_PERSONAL_ACCESS_TOKEN".to_owned(), "x".to_owned()),
            ("OPENAI_API_KEY".to_owned(), "sk-1".to_owned()),
            ("MISC".to_owned(), format!("ghp_{}", "a".repeat(36))),
            ("MEMORY_FILE_PATH".to_owned(), "/x".to_owned()),
            ("TOKEN".to_owned(), "${input:token}".to_owned()),
        ];
        assert_eq!(
            credential_vars(&env),
            ["GITHUB_PERSONAL_ACCESS_TOKEN", "OPENAI_API_KEY", "MISC"]
        );
    }
}
