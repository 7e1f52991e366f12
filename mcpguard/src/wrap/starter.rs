//! Starter policies for servers `wrap` routes through mcpguard: a policy
//! name derived from the server's key, and a deny-almost-everything policy
//! that lets the server's runtime (node, python or a plain binary) start,
//! for the user to widen.

use std::path::{Component, Path, PathBuf};

use super::{
    grants::{self, DataPath, Destination},
    install::{self, Installed},
    runner::RunnerCommand,
};
use crate::{
    kernel::coverage::Class,
    policy::{
        write::{self, comment_safe, quote, Item},
        MAX_NAME_LEN,
    },
};

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

/// Whether `command` is a package runner (`npx`, `uvx`, ...) even where
/// [`super::runner::parse`] could not make out its package.
pub fn is_runner(command: &str) -> bool {
    let base = Path::new(command)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(command);
    matches!(
        base,
        "npx" | "npm" | "pnpx" | "pnpm" | "yarn" | "bunx" | "uvx" | "uv" | "pipx"
    )
}

/// How the wrapped server will start.
#[derive(Debug, Clone, Copy)]
pub enum Launch<'a> {
    /// The command as written: a program, an interpreter and a script, a
    /// venv's entry point.
    Direct,
    /// A runner command replaced by a pinned install: the first
    /// `runner_words` words of the command line become `installed.run`.
    Pinned {
        runner_words: usize,
        installed: &'a Installed,
    },
    /// A runner command left as it is (`--no-install`, or options wrap
    /// does not understand): the policy lets the runner fetch and cache.
    Unpinned(Option<&'a RunnerCommand>),
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
    /// The variables the config's `env` sets for the server (name, value):
    /// passed on, and searched for data paths.
    pub env: &'a [(String, String)],
    /// Home of the user the server will run as, to write paths under it as
    /// `~/...`.
    pub home: &'a Path,
    pub launch: Launch<'a>,
    /// Data paths the command line names (see `grants`).
    pub data: &'a [DataPath],
    /// Paths the command line names that are not granted, and why.
    pub refused: &'a [String],
    /// URLs the command line names, as allow rules.
    pub destinations: &'a [Destination],
    /// The package (or program) name, for what well-known servers reach.
    pub package: Option<&'a str>,
    /// The guarantees this kernel lacks that the policy accepts.
    pub accept_weaker: &'a [Class],
}

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

/// The lists a starter policy grants, each path with the reason shown
/// above it.
#[derive(Default)]
struct Lists {
    read: Vec<(String, String)>,
    write: Vec<(String, String)>,
    exec: Vec<(String, String)>,
    hosts: Vec<(String, String)>,
}

fn add(list: &mut Vec<(String, String)>, paths: &[&str], why: &str) {
    for p in paths {
        if !list.iter().any(|(q, _)| q == p) {
            list.push(((*p).to_owned(), why.to_owned()));
        }
    }
}

impl Lists {
    fn read_exec(&mut self, paths: &[&str], why: &str) {
        add(&mut self.read, paths, why);
        add(&mut self.exec, paths, why);
    }

    fn all(&mut self, paths: &[&str], why: &str) {
        self.read_exec(paths, why);
        add(&mut self.write, paths, why);
    }
}

/// The runtime that will actually run: for a pinned install, its
/// interpreter.
fn runtime_of(input: &StarterInput<'_>) -> Runtime {
    match input.launch {
        Launch::Pinned { installed, .. } => {
            Runtime::detect(&installed.interpreter.to_string_lossy())
        }
        _ => Runtime::detect(input.command),
    }
}

fn runtime_lists(lists: &mut Lists, runtime: Runtime) {
    match runtime {
        Runtime::Node => {
            let why = "node and the libraries it links";
            lists.read_exec(SYSTEM_DIRS, why);
            lists.read_exec(&["/usr/share/nodejs"], why);
        }
        Runtime::Python => {
            lists.read_exec(
                SYSTEM_DIRS,
                "the interpreter, its standard library and the libraries it links",
            );
        }
        Runtime::Generic => {
            lists.read_exec(
                &["/usr", "/lib", "/lib64"],
                "system programs and shared libraries",
            );
        }
    }
}

/// What a runner needs to fetch and start a package at every start.
fn unpinned_lists(lists: &mut Lists, command: &str, home: &Path) {
    let base = Path::new(command)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(command);
    let runner_root = which(command).map(|p| install::runtime_root(&p, home));
    if let Some(root) = runner_root.as_deref().filter(|r| !r.starts_with("/usr")) {
        lists.read_exec(
            &[&grants::home_form(Path::new(root), home)],
            "where the runner is installed",
        );
    }
    match base {
        "npx" | "npm" | "pnpx" | "pnpm" | "yarn" | "bunx" => {
            add(
                &mut lists.read,
                &["/usr/etc/npmrc", "~/.npmrc"],
                "npm's configuration",
            );
            lists.all(
                &["~/.npm"],
                "npx fetches the package into its cache (~/.npm/_npx) and runs it from there",
            );
            add(
                &mut lists.hosts,
                &["registry.npmjs.org:443"],
                "npx asks the registry for the package at every start",
            );
        }
        "uvx" | "uv" => {
            lists.all(&["~/.cache/uv"], "uv's package cache");
            lists.all(
                &["~/.local/share/uv"],
                "the tool environments and interpreters uv manages",
            );
            add(
                &mut lists.hosts,
                &["pypi.org:443", "files.pythonhosted.org:443"],
                "uvx asks PyPI for the package at every start",
            );
        }
        "pipx" => {
            lists.all(
                &["~/.local/share/pipx", "~/.cache/pipx"],
                "pipx's environments and cache",
            );
            add(
                &mut lists.hosts,
                &["pypi.org:443", "files.pythonhosted.org:443"],
                "pipx asks PyPI for the package",
            );
        }
        _ => {}
    }
}

fn which(command: &str) -> Option<std::path::PathBuf> {
    if command.contains('/') {
        return Some(Path::new(command).to_owned());
    }
    install::which(command, &std::env::var("PATH").unwrap_or_default())
}

/// The text of a starter policy. The caller validates it with
/// [`crate::policy::Policy::parse`] before writing it.
pub fn render(input: &StarterInput<'_>) -> String {
    let runtime = runtime_of(input);
    let lists = starter_lists(input, runtime);
    let mut out = header(input, runtime);
    out.push_str(&format!("name = {}\n\n", quote(input.policy)));
    out.push_str(&filesystem_section(input, &lists));
    out.push_str(&network_section(input, &lists.hosts));
    out.push_str("\n[env]\n");
    out.push_str(&env_section(input.env));
    if let Launch::Pinned {
        runner_words,
        installed,
    } = input.launch
    {
        out.push_str(&command_section(input, runner_words, installed));
    }
    out.push_str(&super::kernel::section(input.accept_weaker));
    out
}

/// What the starter grants, each with its reason.
fn starter_lists(input: &StarterInput<'_>, runtime: Runtime) -> Lists {
    let mut lists = Lists::default();
    runtime_lists(&mut lists, runtime);
    match input.launch {
        Launch::Direct => {
            if let Some(install) = install_dir(input.command, input.home) {
                lists.read_exec(
                    &[install.as_str()],
                    "where the server's command is installed",
                );
            }
        }
        Launch::Pinned { installed, .. } => pinned_lists(&mut lists, installed, input.home),
        Launch::Unpinned(_) => unpinned_lists(&mut lists, input.command, input.home),
    }
    add(
        &mut lists.write,
        &["/dev/null"],
        "a stand-in for unused stdio",
    );
    data_lists(&mut lists, input.data);
    for d in input.destinations {
        add(
            &mut lists.hosts,
            &[d.rule.as_str()],
            &format!("named by {} of the server's command", d.from),
        );
    }
    if let Some((rules, why)) = input.package.and_then(grants::known_destinations) {
        add(&mut lists.hosts, rules, why);
    }
    lists
}

/// What a pinned install needs: its directory, and its interpreter's tree
/// when that is not the system's.
fn pinned_lists(lists: &mut Lists, installed: &Installed, home: &Path) {
    let dir = grants::home_form(&installed.dir, home);
    lists.read_exec(
        &[dir.as_str()],
        "the pinned install of the server (see [command] below)",
    );
    let root = install::runtime_root(&installed.interpreter, home);
    if !root.starts_with("/usr") {
        let root = grants::home_form(Path::new(&root), home);
        lists.read_exec(&[root.as_str()], "the interpreter the server runs on");
    }
}

/// The data paths the command line names: readable and writable.
fn data_lists(lists: &mut Lists, data: &[DataPath]) {
    for d in data {
        let why = format!(
            "{} named by {} of the server's command{}",
            if d.file {
                "the directory of a file"
            } else {
                "a directory"
            },
            d.from,
            if d.missing {
                " (created by `mcpguard wrap`)"
            } else {
                ""
            }
        );
        add(&mut lists.read, &[d.rule.as_str()], &why);
        add(
            &mut lists.write,
            &[d.rule.as_str()],
            &format!("{why}; remove it here to make it read-only"),
        );
    }
}

/// `[filesystem]`, and the paths the command names that it does not grant.
fn filesystem_section(input: &StarterInput<'_>, lists: &Lists) -> String {
    let mut out = String::from("[filesystem]\n");
    for (key, list) in [
        ("read", &lists.read),
        ("write", &lists.write),
        ("exec", &lists.exec),
    ] {
        out.push_str(&toml_list(key, list));
    }
    for note in input.refused {
        out.push_str(&format!("# Not granted: {}\n", comment_safe(note)));
    }
    out
}

/// `[network]`: the hosts the starter allows, and no listening.
fn network_section(input: &StarterInput<'_>, hosts: &[(String, String)]) -> String {
    let mut out = String::from("\n[network]\n");
    if hosts.is_empty() {
        out.push_str(
            "# No network at all. Add rules such as \"api.example.com:443\" or \"[::1]:8080\".\n",
        );
        out.push_str("allow = []\n");
    } else {
        out.push_str(&toml_list("allow", hosts));
    }
    if matches!(input.launch, Launch::Unpinned(_)) && !hosts.is_empty() {
        out.push_str(&format!(
            "# Package tools cache lookups past the registry's TTL.\nmin_ttl = {}\n",
            install::INSTALL_MIN_TTL
        ));
    }
    out.push_str("bind = []\n");
    out
}

/// `key = [...]`, one path a line, each run of paths under the reason they
/// share.
fn toml_list(key: &str, list: &[(String, String)]) -> String {
    let mut last_why = "";
    let items = list.iter().map(|(path, why)| {
        let above = (why != last_why).then_some(why.as_str());
        last_why = why;
        Item {
            above,
            ..Item::new(path)
        }
    });
    format!("{key} = {}\n", write::block_array(items))
}

fn header(input: &StarterInput<'_>, runtime: Runtime) -> String {
    let command_line = std::iter::once(input.command)
        .chain(input.args.iter().map(String::as_str))
        .map(shell_word)
        .collect::<Vec<_>>()
        .join(" ");
    let how = match input.launch {
        Launch::Direct => String::new(),
        Launch::Pinned { installed, .. } => format!(
            "#\n# `mcpguard wrap` installed {} for it, pinned, and `mcpguard run`\n\
             # starts that copy (see [command] at the end): no registry access and no\n\
             # package caches at run time. `mcpguard update {}` moves to a newer version.\n",
            comment_safe(&installed.package),
            input.policy
        ),
        Launch::Unpinned(_) => {
            "#\n# NOT PINNED: the runner fetches whatever the registry serves at every\n\
             # start, so this policy lets it reach the registry and write its cache.\n\
             # Run `mcpguard wrap` without --no-install to pin the package instead.\n"
                .to_owned()
        }
    };
    format!(
        "# Starter policy written by `mcpguard wrap` for the MCP server {} in\n\
         # {}, which runs:\n\
         #\n\
         #   {}\n\
         {how}\
         #\n\
         # It lets {} start and reach the data the command line names, and\n\
         # nothing else beyond mcpguard's read-only runtime baseline (/etc, time\n\
         # zones, its own /proc entries, CPU and memory probes). If the server is refused something it needs, see\n\
         # `mcpguard audit --denied --server {}` and widen the lists below (or\n\
         # learn the policy: `mcpguard policy learn`).\n\
         #\n\
         # Format: `name`; [filesystem] read/write/exec lists of absolute or `~/`\n\
         # paths; [network] allow (\"HOST:PORT\" or \"ADDRESS:PORT\" rules) and bind\n\
         # (ports); [env] pass. A missing list allows nothing. See README.md.\n\n",
        comment_safe(&format!("{:?}", input.server)),
        comment_safe(&input.config.display().to_string()),
        comment_safe(&command_line),
        runtime.describe(),
        input.policy,
    )
}

fn env_section(env: &[(String, String)]) -> String {
    let mut pass: Vec<String> = ["PATH", "HOME", "LANG"].map(String::from).to_vec();
    for (name, _) in env {
        // The same check the policy parser applies; a name it would reject
        // could not be passed anyway.
        if !name.is_empty() && !name.contains(['=', '\0']) && !pass.contains(name) {
            pass.push(name.clone());
        }
    }
    let mut out = String::new();
    for name in grants::credential_vars(env) {
        out.push_str(&format!(
            "# {} holds a credential in the client config, in clear. Better: a\n\
             # root-owned secret file under /etc/mcpguard/secrets, named in [secrets]\n\
             # here (`{} = {{ file = \"...\" }}`), and removed from the config.\n",
            comment_safe(&name),
            comment_safe(&name)
        ));
    }
    out.push_str(&format!(
        "pass = {}\n",
        write::inline_array(pass.iter().map(String::as_str))
    ));
    out
}

fn command_section(input: &StarterInput<'_>, runner_words: usize, installed: &Installed) -> String {
    let runner = std::iter::once(input.command)
        .chain(input.args.iter().map(String::as_str))
        .take(runner_words);
    let run: Vec<String> = installed
        .run
        .iter()
        .map(|w| grants::home_form(Path::new(w), input.home))
        .collect();
    let mut out = format!(
        "\n[command]\n\
         # The client config starts this server with the `runner` words below;\n\
         # `mcpguard run` starts the pinned install (`run`) in their place.\n\
         runner = {}\n\
         run = {}\n\
         package = {}\n",
        write::inline_array(runner),
        write::inline_array(run.iter().map(String::as_str)),
        quote(&installed.package)
    );
    if let Some(integrity) = &installed.integrity {
        out.push_str(&format!("integrity = {}\n", quote(integrity)));
    }
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

    fn render_with(
        command: &str,
        args: &[&str],
        env: &[&str],
        launch: Launch<'_>,
    ) -> (Policy, String) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|s| match s.split_once('=') {
                Some((k, v)) if k != "BAD" => (k.to_owned(), v.to_owned()),
                _ => (s.to_string(), String::new()),
            })
            .collect();
        let home = Path::new("/home/me");
        let (data, refused) = grants::data_paths(&args, &env, home);
        let input = StarterInput {
            server: "My \"odd\"\nserver",
            policy: "my-odd-server",
            config: Path::new("/home/me/.cursor/mcp.json"),
            command,
            args: &args,
            env: &env,
            home,
            launch,
            data: &data,
            refused: &refused,
            destinations: &[],
            package: None,
            accept_weaker: &[],
        };
        let text = render(&input);
        let policy = Policy::parse(&text, Path::new("my-odd-server.toml"))
            .unwrap_or_else(|e| panic!("starter policy does not parse: {e}\n{text}"));
        (policy, text)
    }

    fn starter(command: &str, args: &[&str], env: &[&str]) -> Policy {
        render_with(command, args, env, Launch::Direct).0
    }

    #[test]
    fn unpinned_runners_may_fetch_and_nothing_more() {
        let (p, text) = render_with(
            "npx",
            &["-y", "@modelcontextprotocol/server-filesystem"],
            &[],
            Launch::Unpinned(None),
        );
        assert_eq!(p.name, "my-odd-server");
        assert!(p.network.allow.is_empty() && p.network.bind.is_empty());
        let hosts: Vec<&str> = p.network.hosts.iter().map(|h| h.text.as_str()).collect();
        assert_eq!(hosts, ["registry.npmjs.org:443"]);
        assert!(p.filesystem.exec.contains(&"~/.npm".to_owned()));
        assert!(p.filesystem.write.contains(&"~/.npm".to_owned()));
        assert!(text.contains("NOT PINNED"), "{text}");

        let (p, _) = render_with(
            "uvx",
            &["mcp-server-time"],
            &["TZ=UTC"],
            Launch::Unpinned(None),
        );
        assert!(p.filesystem.write.contains(&"~/.local/share/uv".to_owned()));
        assert!(!p.filesystem.read.contains(&"~/.local".to_owned()));
        assert_eq!(p.env.pass, ["PATH", "HOME", "LANG", "TZ"]);
    }

    #[test]
    fn direct_commands_get_no_network() {
        let p = starter("python3", &["srv.py", "it's"], &["TZ", "PATH", "BAD=NAME"]);
        assert!(p.network.allow.is_empty() && p.network.hosts.is_empty());
        assert_eq!(p.env.pass, ["PATH", "HOME", "LANG", "TZ"]);
        assert!(!p
            .filesystem
            .read
            .iter()
            .any(|r| r == "~/.local" || r == "~/.cache/uv"));

        let p = starter("/home/me/.local/venv/bin/server", &[], &[]);
        assert!(p.filesystem.read.contains(&"/usr".to_owned()));
        assert!(p.filesystem.exec.contains(&"~/.local/venv".to_owned()));
        assert!(p.filesystem.write == ["/dev/null"]);
    }

    #[test]
    fn a_pinned_start_runs_the_install_and_grants_its_data() {
        let installed = Installed {
            dir: "/home/me/.local/share/mcpguard/servers/my-odd-server".into(),
            run: vec![
                "/usr/bin/node".into(),
                "/home/me/.local/share/mcpguard/servers/my-odd-server/node_modules/@s/fs/dist/index.js"
                    .into(),
            ],
            package: "npm:@s/fs@1.2.3".into(),
            integrity: Some("sha512-abc".into()),
            interpreter: "/usr/bin/node".into(),
        };
        let (p, text) = render_with(
            "npx",
            &["-y", "@s/fs", "/home/me/code", "/home/me/.ssh"],
            &[
                "GITHUB_TOKEN=ghp_x",
                "MEMORY_FILE_PATH=/home/me/.local/share/mem/m.jsonl",
            ],
            Launch::Pinned {
                runner_words: 3,
                installed: &installed,
            },
        );
        let pin = p.command.pin.as_ref().expect("pinned");
        assert_eq!(pin.runner, ["npx", "-y", "@s/fs"]);
        assert_eq!(pin.run[0], "/usr/bin/node");
        assert!(pin.run[1].starts_with("~/.local/share/mcpguard/servers/my-odd-server/"));
        assert_eq!(pin.package.as_deref(), Some("npm:@s/fs@1.2.3"));
        assert_eq!(pin.integrity.as_deref(), Some("sha512-abc"));
        assert!(p.network.hosts.is_empty() && p.network.allow.is_empty());
        assert!(!p.filesystem.write.iter().any(|w| w == "~/.npm"));
        for dir in ["~/code", "~/.local/share/mem"] {
            assert!(p.filesystem.read.iter().any(|r| r == dir), "{dir}\n{text}");
            assert!(p.filesystem.write.iter().any(|r| r == dir), "{dir}\n{text}");
        }
        assert!(!text.contains("\"~/.ssh\""), "{text}");
        assert!(text.contains("# Not granted: ~/.ssh"), "{text}");
        assert!(text.contains("GITHUB_TOKEN holds a credential"), "{text}");
        let argv: Vec<String> = ["npx", "-y", "@s/fs", "/x"].map(String::from).into();
        assert!(p.command.fits(&argv, Path::new("/home/me")));
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
