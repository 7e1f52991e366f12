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
        if word.contains("${") && word.contains('/') && !word.contains("://") {
            notes.push(format!(
                "{word} (from {from}) is filled in by the client when it starts the server: \
                 grant that directory by hand"
            ));
            continue;
        }
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

/// A destination a server's command line names (`https://api.example.com`
/// in its arguments or env), as a `[network] allow` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub rule: String,
    pub from: String,
}

/// The `http(s)://` and `ws(s)://` URLs in `args` and `env` values, as
/// allow rules: names by name, loopback and literal addresses by address.
pub fn destinations(args: &[String], env: &[(String, String)]) -> Vec<Destination> {
    let words = args
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("argument {}", i + 1), arg_value(a)));
    let vars = env.iter().map(|(k, v)| (k.clone(), v.as_str()));
    let mut out: Vec<Destination> = Vec::new();
    for (from, word) in words.chain(vars) {
        let Some(rule) = url_rule(word) else {
            continue;
        };
        if !out.iter().any(|d| d.rule == rule) {
            out.push(Destination { rule, from });
        }
    }
    out
}

/// `scheme://[user@]host[:port]/...` as `host:port`, `[v6]:port`, or
/// `127.0.0.1:port` for `localhost`.
fn url_rule(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = match scheme {
        "https" | "wss" => 443,
        "http" | "ws" => 80,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .map_or(Some(default_port), |p| p.parse().ok())?;
        (format!("[{addr}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse::<u16>().ok()?),
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() || port == 0 || host.contains(['$', '{', ' ']) {
        return None;
    }
    let host = if host.eq_ignore_ascii_case("localhost") {
        "127.0.0.1".to_owned()
    } else {
        host.to_ascii_lowercase()
    };
    Some(format!("{host}:{port}"))
}

/// What well-known servers reach to do their job, by package name (npm or
/// PyPI): a starter lets them, with the reason. Everything else starts
/// with no network.
pub fn known_destinations(package: &str) -> Option<(&'static [&'static str], &'static str)> {
    Some(match package {
        "@modelcontextprotocol/server-github" | "github-mcp-server" => (
            &["api.github.com:443"],
            "the GitHub API, which every tool of this server calls",
        ),
        "@modelcontextprotocol/server-gitlab" => (
            &["gitlab.com:443"],
            "the GitLab API (a self-hosted GitLab: its host instead)",
        ),
        "@modelcontextprotocol/server-brave-search" => {
            (&["api.search.brave.com:443"], "the Brave Search API")
        }
        "@modelcontextprotocol/server-slack" => (&["slack.com:443"], "the Slack Web API"),
        "@modelcontextprotocol/server-google-maps" => {
            (&["maps.googleapis.com:443"], "the Google Maps APIs")
        }
        "@notionhq/notion-mcp-server" => (&["api.notion.com:443"], "the Notion API"),
        "mcp-server-sentry" => (&["sentry.io:443"], "the Sentry API"),
        "mcp-server-fetch" => (
            &["*:443", "*:80"],
            "fetching any web page the model asks for is this server's job; narrow these \
             to the sites you use (loopback, link-local and cloud metadata addresses stay \
             refused)",
        ),
        _ => return None,
    })
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
    fn urls_become_allow_rules() {
        let args: Vec<String> = [
            "https://mcp.example.com/sse",
            "--url=http://user@Host.Example:8080/x",
            "http://localhost:3000",
            "wss://[2001:db8::1]:9000/ws",
            "ftp://nope",
            "https://${input:host}/x",
            "https://mcp.example.com/other",
        ]
        .map(String::from)
        .into();
        let env = vec![("API_URL".to_owned(), "https://api.example.org".to_owned())];
        let got: Vec<(String, String)> = destinations(&args, &env)
            .into_iter()
            .map(|d| (d.rule, d.from))
            .collect();
        let want = [
            ("mcp.example.com:443", "argument 1"),
            ("host.example:8080", "argument 2"),
            ("127.0.0.1:3000", "argument 3"),
            ("[2001:db8::1]:9000", "argument 4"),
            ("api.example.org:443", "API_URL"),
        ];
        assert_eq!(got, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
        for (rule, _) in &got {
            crate::policy::net::parse_allow(rule).unwrap_or_else(|p| panic!("{rule}: {p}"));
        }
        let (fetch, _) = known_destinations("mcp-server-fetch").unwrap();
        for rule in fetch.iter().chain(
            known_destinations("@modelcontextprotocol/server-github")
                .unwrap()
                .0,
        ) {
            crate::policy::net::parse_allow(rule).unwrap_or_else(|p| panic!("{rule}: {p}"));
        }
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
