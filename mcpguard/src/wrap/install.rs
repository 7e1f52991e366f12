//! Pinned installs for runner commands (`npx -y pkg`, `uvx pkg`, ...).
//!
//! `wrap` installs the package a runner command names once, into a
//! directory of its own under `~/.local/share/mcpguard/servers/<policy>/`,
//! at the exact version the registry serves now, and records that version
//! and the registry's integrity hash in the policy (`[command]`). The
//! server then starts from that copy: no registry access, no writes to
//! package caches, and no new code until `mcpguard update`.
//!
//! Installing a package runs code from it (npm lifecycle scripts, Python
//! build backends), so the install itself runs guarded, through the daemon,
//! under a policy of its own ([`install_policy`]): the registry's hosts,
//! writes to the install directory only. npm's lifecycle scripts are off.
//! Nothing here talks to the daemon itself: the caller hands in a
//! [`Guarded`] runner, so this module stays free of the client protocol.

use std::{
    collections::BTreeSet,
    io,
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::runner::{Registry, RunnerCommand};
use crate::kernel::coverage::Class;

/// Where pinned servers are installed, below the user's home.
pub const SERVERS_DIR: &str = ".local/share/mcpguard/servers";

/// How long a registry's addresses stay open after a lookup: npm caches
/// lookups for minutes, well past a registry's TTL, during long installs.
pub const INSTALL_MIN_TTL: u32 = 600;

/// Runs a command under a policy given as text, the way `mcpguard run`
/// does, with its output on the caller's stderr; returns its exit status.
pub trait Guarded: std::fmt::Debug {
    fn run(&self, policy_name: &str, policy_text: &str, argv: &[String]) -> Result<i32, String>;
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot find `{program}` on PATH, which installing {package} needs")]
    NoProgram { program: String, package: String },
    #[error("cannot prepare {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("installing {package} failed: {reason}")]
    Failed { package: String, reason: String },
    #[error("{package} was installed, but {what}")]
    Layout { package: String, what: String },
}

/// A package installed and pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The install directory (absolute).
    pub dir: PathBuf,
    /// What runs instead of the runner words: an absolute program and its
    /// leading arguments.
    pub run: Vec<String>,
    /// `npm:NAME@VERSION` or `pypi:NAME==VERSION`.
    pub package: String,
    pub integrity: Option<String>,
    /// The interpreter the server runs on (node or python), for the policy.
    pub interpreter: PathBuf,
}

/// What an install needs to know about the user's machine.
pub struct Host<'a> {
    pub home: &'a Path,
    /// The user's PATH, to find node, npm and python3 as their client would.
    pub path: &'a str,
    /// The user's environment, for the registry settings it names.
    pub env: &'a [(String, String)],
    /// The guarantees this kernel lacks that installs run without (see
    /// [`super::kernel::gate`]); empty on a kernel that holds them all.
    pub accept_weaker: &'a [Class],
}

/// The install directory for a policy's server.
pub fn server_dir(home: &Path, policy: &str) -> PathBuf {
    home.join(SERVERS_DIR).join(policy)
}

/// Installs what `runner` names into `dir`. An earlier install there is
/// kept aside and put back if this one fails, so a failed `update` leaves
/// the server as it was.
pub fn install(
    runner: &RunnerCommand,
    policy: &str,
    dir: &Path,
    host: &Host<'_>,
    guard: &dyn Guarded,
) -> Result<Installed, InstallError> {
    let dir_err = |path: &Path| {
        let path = path.to_owned();
        move |source| InstallError::Dir { path, source }
    };
    let old = dir.with_extension("old");
    remove_dir(&old)?;
    let had_old = dir.exists();
    if had_old {
        std::fs::rename(dir, &old).map_err(dir_err(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(dir_err(dir))?;
    let result = match runner.registry {
        Registry::Npm => install_npm(runner, policy, dir, host, guard),
        Registry::Pypi => install_pypi(runner, policy, dir, host, guard),
    };
    match result {
        Ok(installed) => {
            remove_dir(&old)?;
            Ok(installed)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(dir);
            if had_old {
                let _ = std::fs::rename(&old, dir);
            }
            Err(e)
        }
    }
}

fn remove_dir(dir: &Path) -> Result<(), InstallError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(InstallError::Dir {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// The first executable `name` on `path` (a `PATH` value).
pub fn which(name: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn need(name: &str, host: &Host<'_>, runner: &RunnerCommand) -> Result<PathBuf, InstallError> {
    which(name, host.path).ok_or_else(|| InstallError::NoProgram {
        program: name.to_owned(),
        package: runner.package.clone(),
    })
}

/// The interpreter binary `name` on PATH really runs, asked of the
/// interpreter itself (`probe` prints its own path): version-manager shims
/// (pyenv, asdf, volta) and symlinks are seen through, so the policy grants
/// the real tree and the server does not depend on the shim at run time.
/// This runs the user's own interpreter, not the package.
fn interpreter(
    name: &str,
    probe: &[&str],
    host: &Host<'_>,
    runner: &RunnerCommand,
) -> Result<PathBuf, InstallError> {
    let found = need(name, host, runner)?;
    let out = std::process::Command::new(&found)
        .args(probe)
        .env_clear()
        .envs(host.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    let real = out
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_absolute() && p.is_file());
    Ok(real.unwrap_or(found))
}

fn npm_install(
    runner: &RunnerCommand,
    policy: &str,
    dir: &Path,
    host: &Host<'_>,
    guard: &dyn Guarded,
    node: &Path,
) -> Result<(), InstallError> {
    let npm = need("npm", host, runner)?;
    let global = npm_global_config(node, host);
    let d = dir.to_string_lossy();
    let mut argv: Vec<String> = vec![
        npm.to_string_lossy().into_owned(),
        "install".into(),
        // `--prefix` moves npm's global configuration along with it; the
        // user's (registry, CA file, proxy) must stay in force.
        "--globalconfig".into(),
        global.clone(),
        "--prefix".into(),
        d.to_string(),
        "--cache".into(),
        format!("{d}/.npm-cache"),
        // Lifecycle scripts run arbitrary code at install time; a server
        // that needs one (a native addon) fails at start, visibly.
        "--ignore-scripts".into(),
        "--save-exact".into(),
        "--no-audit".into(),
        "--no-fund".into(),
        "--no-update-notifier".into(),
        "--loglevel=error".into(),
    ];
    argv.push(runner.package.clone());
    let registry = npm_registry(host, &global);
    let text = install_policy(policy, dir, &[registry], host, &[npm.as_path(), node]);
    run_install(guard, policy, &text, &argv, &runner.package)
}

fn install_npm(
    runner: &RunnerCommand,
    policy: &str,
    dir: &Path,
    host: &Host<'_>,
    guard: &dyn Guarded,
) -> Result<Installed, InstallError> {
    let node = interpreter("node", &["-p", "process.execPath"], host, runner)?;
    npm_install(runner, policy, dir, host, guard, &node)?;
    let name = runner.name();
    let layout = |what: String| InstallError::Layout {
        package: runner.package.clone(),
        what,
    };
    let pkg_dir = dir.join("node_modules").join(name);
    let manifest: Value = read_json(&pkg_dir.join("package.json"))
        .map_err(|e| layout(format!("its package.json cannot be read: {e}")))?;
    let version = manifest["version"]
        .as_str()
        .ok_or_else(|| layout("its package.json has no version".into()))?;
    let script = npm_bin(&manifest, runner.program_name(), name)
        .ok_or_else(|| layout(format!("it has no program `{}`", runner.program_name())))?;
    let lock: Value = read_json(&dir.join("package-lock.json")).unwrap_or(Value::Null);
    let integrity = lock["packages"][format!("node_modules/{name}")]["integrity"]
        .as_str()
        .map(str::to_owned);
    let script = pkg_dir.join(script.trim_start_matches("./"));
    if !script.is_file() {
        return Err(layout(format!("{} is missing", script.display())));
    }
    Ok(Installed {
        dir: dir.to_owned(),
        run: vec![
            node.to_string_lossy().into_owned(),
            script.to_string_lossy().into_owned(),
        ],
        package: format!("npm:{name}@{version}"),
        integrity,
        interpreter: node,
    })
}

/// The script of `program` in a package.json's `bin` (a string when the
/// package has one program, named after the package).
fn npm_bin<'a>(manifest: &'a Value, program: &str, name: &str) -> Option<&'a str> {
    match &manifest["bin"] {
        Value::String(s) => Some(s),
        Value::Object(map) => map
            .get(program)
            .or_else(|| map.get(name))
            .or_else(|| (map.len() == 1).then(|| map.values().next()).flatten())
            .and_then(Value::as_str),
        _ => None,
    }
}

/// npm's global configuration file as npm itself finds it without
/// `--prefix`: `npm_config_globalconfig`, or `etc/npmrc` below the prefix
/// of the node that runs it (`<prefix>/bin/node`).
fn npm_global_config(node: &Path, host: &Host<'_>) -> String {
    host.env
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("npm_config_globalconfig"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| format!("{}/etc/npmrc", runtime_root(node, host.home)))
}

/// The npm registry's `host:port`, from the user's npm configuration as
/// npm reads it: the environment, ~/.npmrc, then the global npmrc.
fn npm_registry(host: &Host<'_>, global_config: &str) -> String {
    let from_env = host
        .env
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("npm_config_registry"))
        .map(|(_, v)| v.clone());
    let from_rc = |path: &Path| {
        let rc = std::fs::read_to_string(path).ok()?;
        rc.lines()
            .filter_map(|l| l.trim().strip_prefix("registry"))
            .filter_map(|l| l.trim_start().strip_prefix('='))
            .map(|v| v.trim().to_owned())
            .next()
    };
    let url = from_env
        .or_else(|| from_rc(&host.home.join(".npmrc")))
        .or_else(|| from_rc(Path::new(global_config)))
        .unwrap_or_else(|| "https://registry.npmjs.org/".into());
    url_host_port(&url).unwrap_or_else(|| "registry.npmjs.org:443".into())
}

/// `https://host[:port]/...` as `host:port`.
fn url_host_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    if authority.contains(':') {
        return Some(authority.to_owned());
    }
    let port = if scheme == "http" { 80 } else { 443 };
    Some(format!("{authority}:{port}"))
}

fn install_pypi(
    runner: &RunnerCommand,
    policy: &str,
    dir: &Path,
    host: &Host<'_>,
    guard: &dyn Guarded,
) -> Result<Installed, InstallError> {
    let python = interpreter(
        "python3",
        &["-c", "import sys; print(sys.executable)"],
        host,
        runner,
    )?;
    let fail = |reason: String| InstallError::Failed {
        package: runner.package.clone(),
        reason,
    };
    let mut hosts = vec![
        "pypi.org:443".to_owned(),
        "files.pythonhosted.org:443".to_owned(),
    ];
    hosts.extend(pip_index_hosts(host));
    let text = install_policy(policy, dir, &hosts, host, &[python.as_path()]);
    let d = dir.to_string_lossy().into_owned();
    let venv = format!("{d}/venv");
    let python_word = python.to_string_lossy().into_owned();
    run_install(
        guard,
        policy,
        &text,
        &[python_word, "-m".into(), "venv".into(), venv.clone()],
        &runner.package,
    )?;
    let report = format!("{d}/install-report.json");
    let mut argv: Vec<String> = vec![
        format!("{venv}/bin/python"),
        "-m".into(),
        "pip".into(),
        "install".into(),
        "--no-input".into(),
        "--disable-pip-version-check".into(),
        "--no-cache-dir".into(),
        "--quiet".into(),
        "--report".into(),
        report.clone(),
        pip_requirement(&runner.package),
    ];
    argv.extend(runner.with.iter().map(|w| pip_requirement(w)));
    run_install(guard, policy, &text, &argv, &runner.package)?;
    let report: Value = read_json(Path::new(&report))
        .map_err(|e| fail(format!("pip wrote no readable install report: {e}")))?;
    let (version, integrity) = pip_pinned(&report, runner.name())
        .ok_or_else(|| fail(format!("pip's report does not list {}", runner.name())))?;
    let program = Path::new(&venv).join("bin").join(runner.program_name());
    if !program.is_file() {
        return Err(InstallError::Layout {
            package: runner.package.clone(),
            what: format!("it has no program `{}`", runner.program_name()),
        });
    }
    Ok(Installed {
        dir: dir.to_owned(),
        run: vec![program.to_string_lossy().into_owned()],
        package: format!("pypi:{}=={version}", runner.name()),
        integrity,
        interpreter: python,
    })
}

/// `pkg@1.2` (uvx's spelling) as pip's `pkg==1.2`.
fn pip_requirement(spec: &str) -> String {
    match spec.split_once('@') {
        Some((name, version)) if version != "latest" => format!("{name}=={version}"),
        Some((name, _)) => name.to_owned(),
        None => spec.to_owned(),
    }
}

/// The version and archive hash pip's `--report` gives for `name`.
fn pip_pinned(report: &Value, name: &str) -> Option<(String, Option<String>)> {
    let norm = |s: &str| s.to_ascii_lowercase().replace(['_', '.'], "-");
    let entry = report["install"].as_array()?.iter().find(|e| {
        e["metadata"]["name"]
            .as_str()
            .is_some_and(|n| norm(n) == norm(name))
    })?;
    let version = entry["metadata"]["version"].as_str()?.to_owned();
    let info = &entry["download_info"]["archive_info"];
    let integrity = info["hashes"]["sha256"]
        .as_str()
        .map(|h| format!("sha256-{h}"))
        .or_else(|| info["hash"].as_str().map(|h| h.replacen('=', "-", 1)));
    Some((version, integrity))
}

/// Hosts of a pip index the user configured (`PIP_INDEX_URL`,
/// `PIP_EXTRA_INDEX_URL`).
fn pip_index_hosts(host: &Host<'_>) -> Vec<String> {
    host.env
        .iter()
        .filter(|(k, _)| k == "PIP_INDEX_URL" || k == "PIP_EXTRA_INDEX_URL")
        .flat_map(|(_, v)| {
            v.split_whitespace()
                .filter_map(url_host_port)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn run_install(
    guard: &dyn Guarded,
    policy: &str,
    text: &str,
    argv: &[String],
    package: &str,
) -> Result<(), InstallError> {
    let fail = |reason: String| InstallError::Failed {
        package: package.to_owned(),
        reason,
    };
    match guard.run(&format!("{policy}-install"), text, argv) {
        Ok(0) => Ok(()),
        Ok(code) => Err(fail(format!(
            "`{}` exited with status {code} (its output is above; \
             `mcpguard audit --denied --server {policy}-install` shows what the guard refused)",
            Path::new(&argv[0])
                .file_name()
                .map_or(argv[0].as_str(), |n| n.to_str().unwrap_or("?"))
        ))),
        Err(e) => Err(fail(e)),
    }
}

/// Environment variables the package tools read their registry, proxy
/// and certificate settings from.
fn install_env(host: &Host<'_>) -> Vec<String> {
    let mut pass: BTreeSet<String> = ["PATH", "HOME", "LANG", "LC_ALL", "TZ"]
        .map(String::from)
        .into();
    for (k, _) in host.env {
        let lower = k.to_ascii_lowercase();
        let wanted = lower.starts_with("npm_config_")
            || k.starts_with("PIP_")
            || matches!(
                lower.as_str(),
                "https_proxy" | "http_proxy" | "no_proxy" | "all_proxy"
            )
            || matches!(
                k.as_str(),
                "SSL_CERT_FILE" | "SSL_CERT_DIR" | "NODE_EXTRA_CA_CERTS" | "REQUESTS_CA_BUNDLE"
            );
        if wanted && !k.is_empty() && !k.contains(['=', '\0']) {
            pass.insert(k.clone());
        }
    }
    pass.into_iter().collect()
}

/// The policy an install runs under: the system's programs, libraries and
/// configuration read-only, the user's package-tool configuration files
/// and the files its settings name, the registry's hosts, and writes to
/// `dir` (and the server's private /tmp) only.
pub fn install_policy(
    policy: &str,
    dir: &Path,
    hosts: &[String],
    host: &Host<'_>,
    programs: &[&Path],
) -> String {
    let pass = install_env(host);
    let mut read: BTreeSet<String> = [
        "/usr",
        "/lib",
        "/lib64",
        "/bin",
        "/etc",
        "/opt",
        "/dev/null",
        "/dev/urandom",
        "/proc",
        "/sys/devices/system/cpu",
        "/sys/fs/cgroup",
        "~/.npmrc",
        "~/.config/pip",
        "~/.pip",
    ]
    .map(String::from)
    .into();
    // Files the passed settings point at (a CA bundle, a wheel directory).
    for (k, v) in host.env {
        if pass.contains(k) {
            read.extend(
                v.split([':', ' '])
                    .filter(|p| p.starts_with('/') && Path::new(p).exists())
                    .map(str::to_owned),
            );
        }
    }
    let mut exec: BTreeSet<String> = ["/usr", "/lib", "/lib64", "/bin"].map(String::from).into();
    for program in programs {
        // An interpreter outside /usr (nvm, pyenv, ...): its whole tree.
        let root = runtime_root(program, host.home);
        read.insert(root.clone());
        exec.insert(root);
    }
    let d = dir.to_string_lossy().into_owned();
    read.insert(d.clone());
    exec.insert(d.clone());
    let list = |set: &BTreeSet<String>| {
        set.iter()
            .map(|s| toml_str(s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let allow: Vec<String> = hosts.iter().map(|h| toml_str(h)).collect();
    format!(
        "name = {name}\n[filesystem]\nread = [{read}]\nwrite = [{dir}, \"/tmp\", \"/dev/null\"]\n\
         exec = [{exec}]\n[network]\nallow = [{allow}]\nmin_ttl = {INSTALL_MIN_TTL}\n\
         [env]\npass = [{pass}]\n",
        name = toml_str(&format!("{policy}-install")),
        read = list(&read),
        dir = toml_str(&d),
        exec = list(&exec),
        allow = allow.join(", "),
        pass = pass
            .iter()
            .map(|p| toml_str(p))
            .collect::<Vec<_>>()
            .join(", "),
    ) + &super::kernel::section(host.accept_weaker)
}

/// The directory tree an interpreter lives in: `/usr` for the system's,
/// `<prefix>` for `<prefix>/bin/node` elsewhere (symlinks resolved).
pub fn runtime_root(program: &Path, home: &Path) -> String {
    let real = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_owned());
    let bin = real.parent().unwrap_or(Path::new("/"));
    let root = if bin.file_name().is_some_and(|n| n == "bin") {
        bin.parent().unwrap_or(bin)
    } else {
        bin
    };
    if root == Path::new("/") || root == home {
        bin.to_string_lossy().into_owned()
    } else {
        root.to_string_lossy().into_owned()
    }
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

fn toml_str(s: &str) -> String {
    // serde_json's string syntax is valid TOML basic-string syntax for
    // everything it escapes (quotes, backslashes, control characters).
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    #[test]
    fn registry_hosts() {
        assert_eq!(
            url_host_port("https://registry.npmjs.org/").as_deref(),
            Some("registry.npmjs.org:443")
        );
        assert_eq!(
            url_host_port("http://u:p@mirror.local:8080/npm/").as_deref(),
            Some("mirror.local:8080")
        );
        assert_eq!(url_host_port("registry"), None);
    }

    #[test]
    fn pip_spellings() {
        assert_eq!(pip_requirement("mcp-server-git@1.0"), "mcp-server-git==1.0");
        assert_eq!(pip_requirement("mcp-server-git@latest"), "mcp-server-git");
        assert_eq!(pip_requirement("x[cli]>=2"), "x[cli]>=2");
        let report = serde_json::json!({"install": [
            {"metadata": {"name": "Mcp_Server.Git", "version": "2.1"},
             "download_info": {"archive_info": {"hashes": {"sha256": "ab"}}}}]});
        assert_eq!(
            pip_pinned(&report, "mcp-server-git"),
            Some(("2.1".into(), Some("sha256-ab".into())))
        );
    }

    #[test]
    fn npm_global_config_is_below_nodes_prefix() {
        let home = Path::new("/home/u");
        let mut host = Host {
            home,
            path: "/usr/bin",
            env: &[],
            accept_weaker: &[],
        };
        // npm's own files (/opt/node-v22/lib/node_modules/npm) do not count:
        // npm's global prefix is that of the node running it.
        let node = Path::new("/opt/node-v22/bin/node");
        assert_eq!(npm_global_config(node, &host), "/opt/node-v22/etc/npmrc");
        let env = [(
            "npm_config_globalconfig".to_owned(),
            "/etc/npmrc".to_owned(),
        )];
        host.env = &env;
        assert_eq!(npm_global_config(node, &host), "/etc/npmrc");
    }

    #[test]
    fn interpreters_are_asked_for_their_real_path() {
        let env = vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
        let host = Host {
            home: Path::new("/nonexistent"),
            path: "/usr/bin:/bin",
            env: &env,
            accept_weaker: &[],
        };
        let runner = super::super::runner::parse("uvx", &["x".to_owned()]).unwrap();
        let python = interpreter(
            "python3",
            &["-c", "import sys; print(sys.executable)"],
            &host,
            &runner,
        )
        .unwrap();
        assert!(
            python.is_absolute() && python.is_file(),
            "{}",
            python.display()
        );
        let e = interpreter("no-such-interpreter", &[], &host, &runner).unwrap_err();
        assert!(e.to_string().contains("no-such-interpreter"), "{e}");
    }

    #[test]
    fn npm_bins() {
        let one = serde_json::json!({"bin": "dist/index.js"});
        assert_eq!(npm_bin(&one, "x", "x"), Some("dist/index.js"));
        let many = serde_json::json!({"bin": {"a": "a.js", "srv": "s.js"}});
        assert_eq!(npm_bin(&many, "srv", "@s/srv"), Some("s.js"));
        assert_eq!(npm_bin(&many, "zzz", "@s/zzz"), None);
    }

    #[test]
    fn the_install_policy_parses_and_writes_only_its_directory() {
        let env = vec![
            (
                "PIP_CERT".to_owned(),
                "/etc/ssl/certs/ca-certificates.crt".to_owned(),
            ),
            ("GITHUB_TOKEN".to_owned(), "x".to_owned()),
        ];
        let host = Host {
            home: Path::new("/home/me"),
            path: "/usr/bin",
            env: &env,
            accept_weaker: &[],
        };
        let text = install_policy(
            "fs",
            Path::new("/home/me/.local/share/mcpguard/servers/fs.new"),
            &["registry.npmjs.org:443".into()],
            &host,
            &[Path::new("/usr/bin/npm")],
        );
        let p = Policy::parse(&text, Path::new("fs-install.toml")).unwrap();
        assert_eq!(p.name, "fs-install");
        assert_eq!(
            p.filesystem.write,
            [
                "/home/me/.local/share/mcpguard/servers/fs.new",
                "/tmp",
                "/dev/null"
            ]
        );
        assert!(p.env.pass.contains(&"PIP_CERT".to_owned()));
        assert!(!p.env.pass.contains(&"GITHUB_TOKEN".to_owned()));
        assert_eq!(p.network.hosts.len(), 1);
        assert!(p.kernel.accept_weaker.is_empty());

        // On an older kernel, with the user's --accept-weaker.
        let accepted = super::super::kernel::gate(Some(4), true).unwrap();
        let host = Host {
            accept_weaker: &accepted,
            ..host
        };
        let text = install_policy("fs", Path::new("/d"), &[], &host, &[]);
        let p = Policy::parse(&text, Path::new("fs-install.toml")).unwrap();
        assert_eq!(p.kernel.accept_weaker, accepted);
    }
}
