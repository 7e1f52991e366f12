//! Starter policies for servers `wrap` routes through mcpguard: a policy
//! name derived from the server's key, and a deny-almost-everything policy
//! that lets the server's runtime (node, python or a plain binary) start,
//! for the user to widen.

use std::path::{Component, Path, PathBuf};

use crate::policy::MAX_NAME_LEN;

/// The policy name for a server key: lowercased, every character outside
/// `[a-z0-9_-]` replaced by `-`, leading `-`/`_` dropped (a name must start
/// with a letter or digit), at most [`MAX_NAME_LEN`] characters.
pub fn policy_name(server: &str) -> String {
    let mapped: String = server
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name: String = mapped
        .trim_start_matches(['-', '_'])
        .chars()
        .take(MAX_NAME_LEN)
        .collect();
    if name.is_empty() {
        // A key of nothing but punctuation still needs a valid name.
        "server".to_owned()
    } else {
        name
    }
}

/// The runtime a server command starts, which decides what the starter
/// policy lets it read and execute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Node,
    Python,
    /// Anything else: a native binary, or a script whose interpreter lives
    /// in /usr.
    Generic,
}

impl Runtime {
    pub fn detect(command: &str) -> Runtime {
        let base = Path::new(command)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(command);
        match base {
            "node" | "nodejs" | "npx" | "npm" | "pnpm" | "pnpx" | "yarn" => Runtime::Node,
            "uv" | "uvx" | "pipx" => Runtime::Python,
            // python, python3, python3.12
            b if b.starts_with("python") => Runtime::Python,
            _ => Runtime::Generic,
        }
    }

    /// What the starter policy lets start, for its header comment.
    fn describe(self) -> &'static str {
        match self {
            Runtime::Node => "node",
            Runtime::Python => "python",
            Runtime::Generic => "a native program",
        }
    }
}

/// What a starter policy is written for.
#[derive(Debug, Clone)]
pub struct StarterInput<'a> {
    /// The server's key in the config file.
    pub server: &'a str,
    pub policy: &'a str,
    /// The config file, for the header comment.
    pub config: &'a Path,
    pub command: &'a str,
    pub args: &'a [String],
    /// Variables the config's `env` sets for the server: it is pointless to
    /// set them if the policy drops them.
    pub env: &'a [String],
    /// Home of the user the server will run as, to write paths under it as
    /// `~/...`.
    pub home: &'a Path,
}

/// Paths every runtime's loader needs.
const BASE_READ: &[&str] = &["/etc/ld.so.cache", "/dev/null"];

/// System directories holding interpreters, their libraries and the shared
/// libraries they link.
const SYSTEM_DIRS: &[&str] = &[
    "/usr/bin",
    "/usr/lib",
    "/usr/lib64",
    "/lib",
    "/lib64",
    "/usr/local/bin",
    "/usr/local/lib",
];

/// The text of a starter policy. The caller validates it with
/// [`crate::policy::Policy::parse`] before writing it.
pub fn render(input: &StarterInput<'_>) -> String {
    let runtime = Runtime::detect(input.command);
    let base = Path::new(input.command)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(input.command);

    let mut read: Vec<(String, &str)> = Vec::new();
    let mut write: Vec<(String, &str)> = Vec::new();
    let mut exec: Vec<(String, &str)> = Vec::new();
    let add = |list: &mut Vec<(String, &'static str)>, paths: &[&str], why: &'static str| {
        for p in paths {
            if !list.iter().any(|(q, _)| q == p) {
                list.push(((*p).to_owned(), why));
            }
        }
    };
    match runtime {
        Runtime::Node => {
            let why = "node, npm/npx and the libraries they link";
            add(&mut read, SYSTEM_DIRS, why);
            add(&mut read, &["/usr/share/nodejs"], why);
            add(&mut exec, SYSTEM_DIRS, why);
            add(&mut exec, &["/usr/share/nodejs"], why);
            add(
                &mut read,
                &[
                    "/etc/localtime",
                    "/usr/share/zoneinfo",
                    "/etc/ssl",
                    "/proc/meminfo",
                ],
                "time zone, TLS configuration and memory probes node makes at start",
            );
            add(
                &mut read,
                &["/etc/npmrc", "/usr/etc/npmrc", "~/.npmrc", "~/.npm"],
                "npm's configuration and package cache",
            );
            if matches!(base, "npx" | "npm" | "pnpx" | "pnpm" | "yarn") {
                add(
                    &mut exec,
                    &["~/.npm"],
                    "packages npx runs from its cache (~/.npm/_npx)",
                );
                add(
                    &mut write,
                    &["~/.npm"],
                    "npm writes logs and its cache index even when nothing is fetched",
                );
            }
        }
        Runtime::Python => {
            let why = "the interpreter, its standard library and the libraries it links";
            add(&mut read, SYSTEM_DIRS, why);
            add(&mut exec, SYSTEM_DIRS, why);
            add(
                &mut read,
                &["/etc/localtime", "/usr/share/zoneinfo", "/etc/ssl"],
                "time zone and TLS configuration read at import time",
            );
            let why = "user installs, uv-managed interpreters and uv's package cache";
            add(&mut read, &["~/.local", "~/.cache/uv"], why);
            add(&mut exec, &["~/.local", "~/.cache/uv"], why);
            if matches!(base, "uv" | "uvx") {
                add(
                    &mut write,
                    &["~/.cache/uv"],
                    "uv locks and fills its cache when it starts a tool",
                );
            }
        }
        Runtime::Generic => {
            let why = "system programs and shared libraries";
            add(&mut read, &["/usr", "/lib", "/lib64"], why);
            add(&mut exec, &["/usr", "/lib", "/lib64"], why);
        }
    }
    add(
        &mut read,
        BASE_READ,
        "dynamic loader cache, and a stand-in for unused stdio",
    );
    add(&mut write, &["/dev/null"], "a stand-in for unused stdio");
    if let Some(install) = install_dir(input.command, input.home) {
        let why = "where the server's command is installed";
        add(&mut read, &[install.as_str()], why);
        add(&mut exec, &[install.as_str()], why);
    }

    let mut pass: Vec<String> = ["PATH", "HOME", "LANG"].map(String::from).to_vec();
    for name in input.env {
        // The same check the policy parser applies; a name it would reject
        // could not be passed anyway.
        if !name.is_empty() && !name.contains(['=', '\0']) && !pass.contains(name) {
            pass.push(name.clone());
        }
    }

    let mut out = String::new();
    let command_line = std::iter::once(input.command)
        .chain(input.args.iter().map(String::as_str))
        .map(shell_word)
        .collect::<Vec<_>>()
        .join(" ");
    out.push_str(&format!(
        "# Starter policy written by `mcpguard wrap` for the MCP server {} in\n\
         # {}, which runs:\n\
         #\n\
         #   {}\n\
         #\n\
         # It denies almost everything: the server may read and execute only what\n\
         # {} needs to start, has no network, and gets only the environment\n\
         # variables below. It will probably need more. Run it, see\n\
         # what it was refused with `mcpguard audit --denied --server {}`, and\n\
         # widen the lists below (or learn the policy later).\n\
         #\n\
         # Format: `name`; [filesystem] read/write/exec lists of absolute or `~/`\n\
         # paths; [network] allow (\"ADDRESS:PORT\" rules) and bind (ports);\n\
         # [env] pass. A missing list allows nothing. See README.md.\n\n",
        comment_safe(&format!("{:?}", input.server)),
        comment_safe(&input.config.display().to_string()),
        comment_safe(&command_line),
        runtime.describe(),
        input.policy,
    ));
    out.push_str(&format!(
        "name = {}\n\n[filesystem]\n",
        toml_string(input.policy)
    ));
    for (key, list) in [("read", &read), ("write", &write), ("exec", &exec)] {
        out.push_str(&format!("{key} = [\n"));
        let mut last_why = "";
        for (path, why) in list {
            if *why != last_why {
                out.push_str(&format!("    # {why}\n"));
                last_why = why;
            }
            out.push_str(&format!("    {},\n", toml_string(path)));
        }
        out.push_str("]\n");
    }
    out.push_str(
        "\n[network]\n\
         # No network at all. Add rules such as \"10.0.0.0/8:443\" or \"[::1]:8080\".\n\
         allow = []\n\
         bind = []\n\
         \n[env]\n",
    );
    let pass: Vec<String> = pass.iter().map(|p| toml_string(p)).collect();
    out.push_str(&format!("pass = [{}]\n", pass.join(", ")));
    out
}

/// The directory the command is installed in, when it is given by absolute
/// path outside the system directories: a virtualenv, a node version
/// manager's tree, `/opt/...`. For `<prefix>/bin/<cmd>` that is `<prefix>`,
/// unless the prefix is shared by unrelated software (`~`, `~/.local`, `/`),
/// where it is only the `bin` directory.
fn install_dir(command: &str, home: &Path) -> Option<String> {
    let path = Path::new(command);
    let clean = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !clean
        || ["/usr/", "/lib/", "/lib64/", "/bin/", "/sbin/"]
            .iter()
            .any(|p| command.starts_with(p))
    {
        return None;
    }
    let parent = path.parent()?;
    // ~/.local/share holds keyrings and other applications' data.
    let too_wide = |p: &Path| p == home || p == home.join(".local") || p == Path::new("/");
    let dir: PathBuf = match parent.parent() {
        Some(prefix) if parent.file_name().is_some_and(|n| n == "bin") && !too_wide(prefix) => {
            prefix.to_owned()
        }
        _ if too_wide(parent) => path.to_owned(),
        _ => parent.to_owned(),
    };
    let shown = match dir.strip_prefix(home) {
        Ok(rest) if home != Path::new("/") => format!("~/{}", rest.display()),
        _ => dir.display().to_string(),
    };
    Some(shown)
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A command word as a shell would need it quoted, for the header comment.
pub(crate) fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@+,%~".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Text that cannot end a TOML comment early or be refused in one.
fn comment_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    #[test]
    fn policy_names() {
        let cases = [
            ("time", "time"),
            ("My Server (beta)", "my-server--beta-"),
            ("@scope/pkg", "scope-pkg"),
            ("_private", "private"),
            ("GitHub_MCP", "github_mcp"),
            ("Zürich", "z-rich"),
            ("!!!", "server"),
            (&"a".repeat(60), &"a".repeat(48)),
        ];
        for (key, want) in cases {
            assert_eq!(policy_name(key), want, "{key:?}");
            Policy::parse(&format!("name = \"{want}\""), Path::new("x.toml"))
                .unwrap_or_else(|e| panic!("{key:?} -> {want:?}: {e}"));
        }
    }

    #[test]
    fn runtimes() {
        for (cmd, want) in [
            ("npx", Runtime::Node),
            ("/usr/bin/node", Runtime::Node),
            ("uvx", Runtime::Python),
            ("python3.12", Runtime::Python),
            ("/home/me/venv/bin/python", Runtime::Python),
            ("docker", Runtime::Generic),
            ("/opt/srv/bin/server", Runtime::Generic),
        ] {
            assert_eq!(Runtime::detect(cmd), want, "{cmd}");
        }
    }

    fn starter(command: &str, args: &[&str], env: &[&str]) -> Policy {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<String> = env.iter().map(|s| s.to_string()).collect();
        let input = StarterInput {
            server: "My \"odd\"\nserver",
            policy: "my-odd-server",
            config: Path::new("/home/me/.cursor/mcp.json"),
            command,
            args: &args,
            env: &env,
            home: Path::new("/home/me"),
        };
        let text = render(&input);
        Policy::parse(&text, Path::new("my-odd-server.toml"))
            .unwrap_or_else(|e| panic!("starter policy does not parse: {e}\n{text}"))
    }

    #[test]
    fn starter_policies_parse_and_deny_the_network() {
        let p = starter(
            "npx",
            &["-y", "@modelcontextprotocol/server-filesystem"],
            &[],
        );
        assert_eq!(p.name, "my-odd-server");
        assert!(p.network.allow.is_empty() && p.network.bind.is_empty());
        assert!(p.filesystem.exec.contains(&"~/.npm".to_owned()));
        assert!(p.filesystem.write.contains(&"~/.npm".to_owned()));
        assert_eq!(p.env.pass, ["PATH", "HOME", "LANG"]);

        let p = starter(
            "uvx",
            &["mcp-server-time", "it's"],
            &["TZ", "PATH", "BAD=NAME"],
        );
        assert!(p.filesystem.read.contains(&"~/.cache/uv".to_owned()));
        assert_eq!(p.env.pass, ["PATH", "HOME", "LANG", "TZ"]);

        let p = starter("/home/me/.local/venv/bin/server", &[], &[]);
        assert!(p.filesystem.read.contains(&"/usr".to_owned()));
        assert!(p.filesystem.exec.contains(&"~/.local/venv".to_owned()));
        assert!(p.filesystem.write == ["/dev/null"]);
    }

    #[test]
    fn install_dirs_never_widen_to_home_or_root() {
        let home = Path::new("/home/me");
        for (cmd, want) in [
            ("/home/me/venv/bin/python", Some("~/venv")),
            ("/home/me/bin/srv", Some("~/bin")),
            ("/home/me/.local/bin/srv", Some("~/.local/bin")),
            ("/home/me/.local/srv", Some("~/.local/srv")),
            ("/home/me/srv", Some("~/srv")),
            ("/opt/srv/server", Some("/opt/srv")),
            ("/bin/srv", None),
            ("/usr/bin/node", None),
            ("/srv", Some("/srv")),
            ("/home/me/../x/srv", None),
            ("srv", None),
        ] {
            assert_eq!(install_dir(cmd, home).as_deref(), want, "{cmd}");
        }
    }
}
