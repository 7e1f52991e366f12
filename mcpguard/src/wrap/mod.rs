//! `mcpguard wrap` and `mcpguard unwrap`: rewrite MCP client config files
//! (Claude Desktop, Claude Code, Cursor, VS Code) so every stdio server is
//! started as `mcpguard run --policy <name> -- <command> <args>`, and back.
//!
//! [`rewrite`] does the text transformation, editing only the values it
//! must so the rest of the file stays byte for byte as it was. This module
//! adds the file handling: the format choice, a one-time backup of the
//! original, atomic replacement, and a starter policy ([`starter`]) for each
//! newly wrapped server that has none.

pub mod client;
pub mod diff;
mod file;
mod grants;
mod install;
pub mod json;
pub mod kernel;
pub mod rewrite;
pub mod runner;
pub mod starter;
pub mod update;

use std::{
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

pub use self::{
    client::{Client, CLIENT_NAMES},
    file::{backup_path, BACKUP_SUFFIX},
    install::{Guarded, Host, InstallError},
    kernel::KernelLacks,
    rewrite::{Action, Server},
};
use self::{
    grants::Destination,
    install::Installed,
    rewrite::WrapOptions,
    runner::RunnerCommand,
    starter::{Launch, StarterInput},
};
use crate::{
    atomic_file::{self, Ownership},
    kernel::coverage::Class,
    policy::{command::PinMismatch, Policy, PolicyError},
};

/// Where installed policies live, searched after the user's own (as
/// `mcpguard run` does).
const SYSTEM_POLICY_DIR: &str = "/etc/mcpguard/policies";

/// The user's policies, relative to their home.
const USER_POLICY_DIR: &str = ".config/mcpguard/policies";

#[derive(Debug, thiserror::Error)]
pub enum WrapError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("{}:{line}:{col}: invalid JSON: {message}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    #[error(
        "cannot tell which MCP client {} belongs to from its name; pass --client \
         with one of: {CLIENT_NAMES}",
        path.display()
    )]
    UnknownClient { path: PathBuf },
    #[error("{}: {at} is not an object ({what} must be a JSON object)", path.display())]
    NotAnObject {
        path: PathBuf,
        /// Dotted path of the value, e.g. `mcpServers."time"`.
        at: String,
        what: &'static str,
    },
    #[error("{}: {at}: `{field}` must be {expected}", path.display())]
    BadField {
        path: PathBuf,
        at: String,
        field: &'static str,
        expected: &'static str,
    },
    #[error("cannot back up {} to {}: {source}", path.display(), backup.display())]
    Backup {
        path: PathBuf,
        backup: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write starter policy {}: {source}", path.display())]
    WritePolicy {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The generated policy did not pass the policy parser: a bug here, or
    /// a command path the policy format cannot express.
    #[error("the starter policy for server {server:?} does not parse: {source}")]
    StarterPolicy {
        server: String,
        // Boxed: a policy error is large, and every wrap result carries
        // this type.
        #[source]
        source: Box<PolicyError>,
    },
    #[error("cannot find the home directory of uid {uid} for its policies; pass --policy-dir")]
    NoHome { uid: u32 },
    #[error("{what} {} is not valid UTF-8, so it cannot go into a JSON config", path.display())]
    NotUtf8Path { what: &'static str, path: PathBuf },
    #[error("cannot find the path of the running mcpguard binary (pass --mcpguard): {0}")]
    CurrentExe(#[source] io::Error),
    #[error(
        "server {server:?}: {source}; nothing was changed (`--no-install` wraps it unpinned, \
         with a policy that lets the runner fetch)"
    )]
    Install {
        server: String,
        #[source]
        source: install::InstallError,
    },
    #[error("cannot create {}, which a server's command line names: {source}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl WrapError {
    /// Whether the command line was at fault (exit status 2), rather than
    /// the file or the system.
    pub fn is_usage(&self) -> bool {
        matches!(self, WrapError::UnknownClient { .. })
    }
}

/// What `wrap` should do.
#[derive(Debug, Clone)]
pub struct WrapConfig {
    /// The format; `None` decides by file name.
    pub client: Option<Client>,
    /// The mcpguard binary the configs should start.
    pub mcpguard: String,
    /// Where to look for and write starter policies, instead of
    /// `~/.config/mcpguard/policies`. Should be absolute.
    pub policy_dir: Option<PathBuf>,
    /// Home of the user the servers run as, whose `~/.config/mcpguard/policies`
    /// is searched and written. `None`: the caller's, or, when root rewrites
    /// another user's config, that file owner's.
    pub home: Option<PathBuf>,
    /// Compute the diff, write nothing.
    pub dry_run: bool,
    /// Installs runner commands' packages, pinned (see `install`);
    /// `None` leaves runner commands as they are, with a policy that lets
    /// the runner fetch.
    pub installer: Option<std::rc::Rc<dyn Guarded>>,
    /// The guarantees this kernel lacks that the written policies accept
    /// (from [`kernel::gate`]).
    pub accept_weaker: Vec<Class>,
}

/// What happened to one file.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub path: PathBuf,
    pub client: Client,
    /// Every server entry, in document order.
    pub servers: Vec<Server>,
    /// Whether the file's text changes (or, with `--dry-run`, would).
    pub changed: bool,
    /// With `--dry-run`: the unified diff of the change (empty if none).
    pub diff: String,
    /// The backup written by this run, if one was.
    pub backup: Option<PathBuf>,
    /// Starter policies for the servers this run wrapped that had none.
    pub starters: Vec<StarterPolicy>,
    /// For each policy this run's wrapped servers use: which, and why.
    pub choices: Vec<Choice>,
}

impl FileReport {
    /// The report before anything is written: no diff, backup or starters.
    fn untouched(path: &Path, client: Client, servers: Vec<Server>, changed: bool) -> Self {
        FileReport {
            path: path.to_owned(),
            client,
            servers,
            changed,
            diff: String::new(),
            backup: None,
            starters: Vec::new(),
            choices: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StarterPolicy {
    /// The server's key in the config.
    pub server: String,
    pub policy: String,
    pub path: PathBuf,
    /// False with `--dry-run`, or if the file appeared meanwhile.
    pub written: bool,
    /// The package pinned for it (`npm:NAME@VERSION`), if one was
    /// installed; with `--dry-run`, the package that would be.
    pub pinned: Option<String>,
    /// A runner command left unpinned: its policy lets it fetch.
    pub unpinned: bool,
    /// Data directories its command line names, granted (and created by
    /// wrap if missing: `true`).
    pub data: Vec<(String, bool)>,
    /// Network rules its command line or its package's job needs, each
    /// with the reason.
    pub network: Vec<(String, String)>,
    /// Paths named but not granted, and credentials found in `env`.
    pub notes: Vec<String>,
}

/// Which policy a wrapped server uses, and why; `wrap` prints one line
/// for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub server: String,
    pub policy: String,
    pub path: PathBuf,
    pub why: Why,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// The user's own policy of that name (or one in `--policy-dir`).
    Yours,
    /// An installed policy that says it fits this command.
    InstalledFits,
    /// A starter written from the command; `shadows` is an installed
    /// policy of the same name that does not fit this command.
    Starter { shadows: Option<PathBuf> },
    /// An existing policy pins another runner command: `mcpguard run`
    /// will refuse this server until the pin and the entry agree.
    PinMismatch { pinned: String, given: String },
    /// An existing policy that does not parse.
    Broken { message: String },
}

/// The client format of `path`: `given`, or judged from the file name.
pub fn client_for(path: &Path, given: Option<Client>) -> Result<Client, WrapError> {
    given
        .or_else(|| Client::detect(path))
        .ok_or_else(|| WrapError::UnknownClient {
            path: path.to_owned(),
        })
}

/// This binary's absolute path, the default `command` for wrapped servers.
pub fn current_mcpguard() -> Result<String, WrapError> {
    let exe = std::env::current_exe().map_err(WrapError::CurrentExe)?;
    utf8_path(&exe, "the mcpguard binary path")
}

fn utf8_path(path: &Path, what: &'static str) -> Result<String, WrapError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| WrapError::NotUtf8Path {
            what,
            path: path.to_owned(),
        })
}

/// Routes every stdio server in the config file at `path` through mcpguard.
pub fn wrap_file(path: &Path, cfg: &WrapConfig) -> Result<FileReport, WrapError> {
    let client = client_for(path, cfg.client)?;
    let (text, meta) = read(path)?;
    let place = PolicyPlace::new(cfg.policy_dir.as_deref(), cfg.home.as_deref(), &meta)?;
    let opts = WrapOptions {
        mcpguard: cfg.mcpguard.clone(),
        policy_dir_arg: place.dir_arg.clone(),
    };
    let rewritten = rewrite::wrap(&text, client, &opts, path)?;

    let (choices, mut starters) = choose_policies(path, &rewritten.servers, &place, cfg)?;

    let changed = rewritten.text != text;
    let mut report = FileReport::untouched(path, client, rewritten.servers, changed);
    report.choices = choices;
    if cfg.dry_run {
        report.diff = dry_run_diff(path, &text, &rewritten.text);
        report.starters = starters.into_iter().map(|(s, _)| s).collect();
        return Ok(report);
    }

    // Policies before the config: once the config names a policy, the
    // client's next start of that server needs it.
    write_starters(&mut starters, &place)?;
    report.starters = starters.into_iter().map(|(s, _)| s).collect();
    if changed {
        let own = Ownership::of(&meta);
        let backed_up =
            file::backup_once(path, text.as_bytes(), own).map_err(|source| WrapError::Backup {
                path: path.to_owned(),
                backup: backup_path(path),
                source,
            })?;
        report.backup = backed_up.then(|| backup_path(path));
        write(path, &rewritten.text, own)?;
    }
    Ok(report)
}

/// A starter policy to write: what the report says of it, and its text.
type PlannedStarter = (StarterPolicy, String);

/// Which policy each wrapped server of the config file at `path` runs
/// under: one found (and why it fits), or a starter planned for it.
fn choose_policies(
    path: &Path,
    servers: &[Server],
    place: &PolicyPlace,
    cfg: &WrapConfig,
) -> Result<(Vec<Choice>, Vec<PlannedStarter>), WrapError> {
    let mut starters: Vec<PlannedStarter> = Vec::new();
    let mut choices: Vec<Choice> = Vec::new();
    for server in servers {
        let Action::Wrapped {
            policy,
            command,
            args,
            env,
        } = &server.action
        else {
            continue;
        };
        if choices.iter().any(|c| c.policy == *policy) {
            continue;
        }
        let entry = EntryCommand { command, args, env };
        let shadows = match place.find(policy) {
            Some(found) => match judge(&found, &entry, policy, &place.home) {
                Some(why) => {
                    choices.push(Choice {
                        server: server.name.clone(),
                        policy: policy.clone(),
                        path: found.path,
                        why,
                    });
                    continue;
                }
                None => Some(found.path),
            },
            None => None,
        };
        let target = place.write_dir.join(format!("{policy}.toml"));
        let (report, body) = plan_starter(&server.name, policy, &target, path, &entry, place, cfg)?;
        choices.push(Choice {
            server: server.name.clone(),
            policy: policy.clone(),
            path: target,
            why: Why::Starter { shadows },
        });
        starters.push((report, body));
    }
    Ok((choices, starters))
}

/// Writes the planned starter policies that do not exist yet (and the
/// missing data directories they grant).
fn write_starters(starters: &mut [PlannedStarter], place: &PolicyPlace) -> Result<(), WrapError> {
    let policy_own = Ownership {
        mode: 0o644,
        owner: place.owner,
    };
    for (starter, body) in starters.iter_mut() {
        let fail = |source| WrapError::WritePolicy {
            path: starter.path.clone(),
            source,
        };
        for (dir, missing) in &starter.data {
            if *missing {
                let dir = expand_home(dir, &place.home);
                file::create_dirs(&dir, place.owner).map_err(|source| WrapError::DataDir {
                    path: dir.clone(),
                    source,
                })?;
            }
        }
        file::create_dirs(&place.write_dir, place.owner).map_err(fail)?;
        starter.written =
            atomic_file::write_new(&starter.path, body.as_bytes(), policy_own).map_err(fail)?;
    }
    Ok(())
}

/// Gives every server in the config file at `path` that runs through
/// mcpguard its own command back. `mcpguard` is this binary's path
/// (recognised besides any command named `mcpguard`).
pub fn unwrap_file(
    path: &Path,
    client: Option<Client>,
    mcpguard: &str,
    dry_run: bool,
) -> Result<FileReport, WrapError> {
    let client = client_for(path, client)?;
    let (text, meta) = read(path)?;
    let rewritten = rewrite::unwrap(&text, client, mcpguard, path)?;
    let changed = rewritten.text != text;
    let mut report = FileReport::untouched(path, client, rewritten.servers, changed);
    if dry_run {
        report.diff = dry_run_diff(path, &text, &rewritten.text);
    } else if changed {
        write(path, &rewritten.text, Ownership::of(&meta))?;
    }
    Ok(report)
}

fn dry_run_diff(path: &Path, old: &str, new: &str) -> String {
    let name = path.display().to_string();
    diff::unified(old, new, &name, &format!("{name} (rewritten)"))
}

fn read(path: &Path) -> Result<(String, std::fs::Metadata), WrapError> {
    let fail = |source| WrapError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(fail)?;
    let bytes = std::fs::read(path).map_err(fail)?;
    let text = String::from_utf8(bytes).map_err(|_| WrapError::NotUtf8 {
        path: path.to_owned(),
    })?;
    Ok((text, meta))
}

fn write(path: &Path, text: &str, own: Ownership) -> Result<(), WrapError> {
    file::replace(path, text.as_bytes(), own).map_err(|source| WrapError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Where the policies of one config file's servers are looked for and
/// written.
struct PolicyPlace {
    /// Directories whose `<name>.toml` counts as an existing policy.
    search: Vec<PathBuf>,
    write_dir: PathBuf,
    /// Owner for created policy files and directories.
    owner: Option<(u32, u32)>,
    /// Home of the user the servers will run as.
    home: PathBuf,
    /// Set when `write_dir` is not searched by `mcpguard run`, so configs
    /// must name policy files by path.
    dir_arg: Option<String>,
}

impl PolicyPlace {
    /// Policies belong to the user the servers run as: the caller, or, when
    /// root rewrites another user's config, that file's owner (root's own
    /// `~/.config` would never be searched for them).
    fn new(
        policy_dir: Option<&Path>,
        home: Option<&Path>,
        config: &std::fs::Metadata,
    ) -> Result<PolicyPlace, WrapError> {
        let for_other_user = atomic_file::running_as_root() && config.uid() != 0;
        let uid = if for_other_user {
            config.uid()
        } else {
            nix::unistd::getuid().as_raw()
        };
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten();
        let home = home
            .map(Path::to_owned)
            .or_else(|| user.as_ref().map(|u| u.dir.clone()))
            .or_else(|| {
                // $HOME describes the caller only.
                (!for_other_user)
                    .then(|| std::env::var_os("HOME").map(PathBuf::from))
                    .flatten()
            });
        let user_dir = home.as_ref().map(|h| h.join(USER_POLICY_DIR));
        let standard: Vec<PathBuf> = user_dir
            .iter()
            .cloned()
            .chain([PathBuf::from(SYSTEM_POLICY_DIR)])
            .collect();
        let (search, write_dir, owner, dir_arg) = match policy_dir {
            Some(dir) => {
                let searched_by_run = standard.iter().any(|s| same_dir(s, dir));
                let dir_arg = if searched_by_run {
                    None
                } else {
                    Some(utf8_path(dir, "the policy directory")?)
                };
                // A directory `mcpguard run` does not search is referenced
                // by path, so policies elsewhere would not be used.
                let search = if searched_by_run {
                    standard
                } else {
                    vec![dir.to_owned()]
                };
                (search, dir.to_owned(), None, dir_arg)
            }
            None => {
                let dir = user_dir.ok_or(WrapError::NoHome { uid })?;
                let owner = for_other_user
                    .then(|| user.as_ref().map(|u| (u.uid.as_raw(), u.gid.as_raw())))
                    .flatten();
                (standard, dir, owner, None)
            }
        };
        Ok(PolicyPlace {
            search,
            write_dir,
            owner,
            home: home.unwrap_or_else(|| PathBuf::from("/")),
            dir_arg,
        })
    }

    /// The policy `mcpguard run` would find by this name, if any.
    fn find(&self, policy: &str) -> Option<Found> {
        let file = format!("{policy}.toml");
        let path = self
            .search
            .iter()
            .map(|d| d.join(&file))
            .find(|p| p.is_file())?;
        let installed = path.starts_with(SYSTEM_POLICY_DIR);
        Some(Found { path, installed })
    }
}

/// An existing policy found for a server.
struct Found {
    path: PathBuf,
    /// In /etc/mcpguard/policies (shipped with mcpguard or put there by an
    /// administrator), not the user's own.
    installed: bool,
}

/// A wrapped entry's own command line.
struct EntryCommand<'a> {
    command: &'a str,
    args: &'a [String],
    env: &'a [(String, String)],
}

/// Whether an existing policy serves the entry: `Some(why)` to use it,
/// `None` to write a starter instead (an installed policy written for
/// another launch layout). The user's own policies are always theirs to
/// choose; wrap only points out a pin that no longer matches.
fn judge(found: &Found, entry: &EntryCommand<'_>, policy: &str, home: &Path) -> Option<Why> {
    let parsed = match Policy::load(&found.path) {
        Ok(p) => p,
        Err(e) if found.installed => {
            tracing::warn!(policy = %found.path.display(), error = %e, "installed policy does not parse");
            return None;
        }
        Err(e) => {
            return Some(Why::Broken {
                message: e.to_string(),
            })
        }
    };
    let argv: Vec<String> = std::iter::once(entry.command.to_owned())
        .chain(entry.args.iter().cloned())
        .collect();
    if found.installed && !parsed.command.fits(&argv, home) {
        return None;
    }
    if let Err(PinMismatch::OtherPackage { pinned, given, .. }) =
        parsed.command.resolve(policy, argv, home)
    {
        return Some(Why::PinMismatch { pinned, given });
    }
    Some(if found.installed {
        Why::InstalledFits
    } else {
        Why::Yours
    })
}

/// Installs the entry's package if it is a runner command (unless this is
/// a dry run or installs are off), and renders its starter policy.
fn plan_starter(
    server: &str,
    policy: &str,
    target: &Path,
    config: &Path,
    entry: &EntryCommand<'_>,
    place: &PolicyPlace,
    cfg: &WrapConfig,
) -> Result<(StarterPolicy, String), WrapError> {
    let runner = runner::parse(entry.command, entry.args);
    let (installed, pinned_name) = pin_runner(runner.as_ref(), server, policy, place, cfg)?;
    let launch = match (&runner, &installed) {
        (Some(r), Some(i)) => Launch::Pinned {
            runner_words: r.words,
            installed: i,
        },
        (Some(r), None) => Launch::Unpinned(Some(r)),
        (None, None) if starter::is_runner(entry.command) => Launch::Unpinned(None),
        _ => Launch::Direct,
    };
    let (data, mut notes) = grants::data_paths(entry.args, entry.env, &place.home);
    let destinations = grants::destinations(entry.args, entry.env);
    let program = Path::new(entry.command)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(entry.command);
    let package = runner.as_ref().map_or(program, |r| r.name());
    for var in grants::credential_vars(entry.env) {
        notes.push(format!(
            "{var} holds a credential in the config in clear: consider [secrets] (see the policy's comment)"
        ));
    }
    let body = starter::render(&StarterInput {
        server,
        policy,
        config,
        command: entry.command,
        args: entry.args,
        env: entry.env,
        home: &place.home,
        launch,
        data: &data,
        refused: &notes,
        destinations: &destinations,
        package: Some(package),
        accept_weaker: &cfg.accept_weaker,
    });
    Policy::parse(&body, target).map_err(|source| WrapError::StarterPolicy {
        server: server.to_owned(),
        source: Box::new(source),
    })?;
    let report = StarterPolicy {
        server: server.to_owned(),
        policy: policy.to_owned(),
        path: target.to_owned(),
        written: false,
        pinned: pinned_name,
        unpinned: matches!(launch, Launch::Unpinned(_)),
        data: data.iter().map(|d| (d.rule.clone(), d.missing)).collect(),
        network: starter_network(&destinations, package),
        notes,
    };
    Ok((report, body))
}

/// Installs the runner command's package, pinned (unless this is a dry run
/// or installs are off). Returns the install and the name of the package
/// pinned (or that would be).
fn pin_runner(
    runner: Option<&RunnerCommand>,
    server: &str,
    policy: &str,
    place: &PolicyPlace,
    cfg: &WrapConfig,
) -> Result<(Option<Installed>, Option<String>), WrapError> {
    let (Some(r), Some(installer)) = (runner, &cfg.installer) else {
        return Ok((None, None));
    };
    if cfg.dry_run {
        return Ok((None, Some(format!("{}:{}", r.registry.label(), r.package))));
    }
    let host_env: Vec<(String, String)> = std::env::vars().collect();
    let path_var = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let host = install::Host {
        home: &place.home,
        path: &path_var,
        env: &host_env,
        accept_weaker: &cfg.accept_weaker,
    };
    let dir = install::server_dir(&place.home, policy);
    let done = install::install(r, policy, &dir, &host, installer.as_ref()).map_err(|source| {
        WrapError::Install {
            server: server.to_owned(),
            source,
        }
    })?;
    let name = done.package.clone();
    Ok((Some(done), Some(name)))
}

/// The destinations a starter allows, with why: those its command line
/// names, and those its package is known to reach.
fn starter_network(destinations: &[Destination], package: &str) -> Vec<(String, String)> {
    destinations
        .iter()
        .map(|d| {
            (
                d.rule.clone(),
                format!("named in its command line ({})", d.from),
            )
        })
        .chain(
            grants::known_destinations(package)
                .into_iter()
                .flat_map(|(rules, why)| {
                    rules.iter().map(move |r| ((*r).to_owned(), why.to_owned()))
                }),
        )
        .collect()
}

/// `~/x` below `home`.
fn expand_home(path: &str, home: &Path) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if path == "~" => home.to_owned(),
        None => PathBuf::from(path),
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    a == b || canon(a) == canon(b)
}

#[cfg(test)]
mod tests;
