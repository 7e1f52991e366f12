//! Policy files: the TOML a user writes for one MCP server, validated into a
//! [`Policy`] the launcher (Landlock, env) and the eBPF loader (egress maps,
//! via [`net::compile_allow`]) consume.
//!
//! Every error points at `file:line:col` of the offending key or value, so a
//! typo in a policy is found before anything is launched.

pub mod audit;
pub mod baseline;
pub mod call_net;
pub mod command;
#[cfg(test)]
mod fuzz;
pub mod learn;
pub mod limits;
pub mod mcp;
pub mod net;
pub mod persist;
pub mod sockets;
pub mod write;

use std::{
    fmt,
    io::{self, Read},
    ops::Range,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

pub use self::{
    limits::Limits,
    net::{compile_allow, host_entry, host_key, tcp_ports, HostRule, NetEntry, NetRule, PortRange},
    sockets::SocketKind,
};

/// Policy files larger than this are refused: real ones are a few hundred
/// bytes, and the daemon should not be made to buffer arbitrary files.
pub const MAX_POLICY_BYTES: u64 = 1 << 20;

/// Longest `[network] min_ttl`: an hour, as long as common DNS-aware
/// firewalls keep answers.
pub const MAX_MIN_TTL: u32 = 3600;

/// Longest server name; the name becomes part of a cgroup directory name.
pub const MAX_NAME_LEN: usize = 48;

/// Where installed policies live, searched after the user's own.
const SYSTEM_POLICY_DIR: &str = "/etc/mcpguard/policies";

/// A validated policy for one MCP server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Server name for audit records and the cgroup directory.
    pub name: String,
    /// The file the policy came from (as given, for messages).
    pub source: PathBuf,
    pub filesystem: Filesystem,
    pub network: Network,
    pub env: Env,
    pub tools: Tools,
    /// Which server-to-client requests reach the client (`[mcp]`).
    pub mcp: mcp::Mcp,
    pub identity: Identity,
    pub kernel: Kernel,
    /// Secrets injected into the server's environment (and redacted from
    /// everything it emits), in file order.
    pub secrets: Vec<Secret>,
    /// Task and memory bounds (`[limits]`, defaults when absent).
    pub limits: Limits,
    /// The commands the policy is written for, and a pinned install
    /// (`[command]`).
    pub command: command::Command,
    /// How much allowed activity is recorded (`[audit]`).
    pub audit: audit::Audit,
}

/// Filesystem allow-lists as written: absolute, or `~`-relative to the
/// caller's home (see [`Policy::fs_paths`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filesystem {
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub exec: Vec<String>,
    /// Whether the runtime baseline ([`baseline::READ`]) is added to `read`
    /// (`baseline = false` opts out).
    pub baseline: bool,
    /// Persistence paths ([`persist`]) the server may write inside its
    /// write grants; every other family is bound read-only where it exists.
    pub allow_persistence: Vec<persist::PersistKind>,
}

impl Default for Filesystem {
    fn default() -> Self {
        Filesystem {
            read: Vec::new(),
            write: Vec::new(),
            exec: Vec::new(),
            baseline: true,
            allow_persistence: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    /// Destinations the server may connect or send to, by address.
    pub allow: Vec<NetRule>,
    /// Destinations by name: reachable at the addresses the server's
    /// resolver (in the daemon) hands out for them.
    pub hosts: Vec<HostRule>,
    /// TCP ports the server may bind, as written.
    pub bind: Vec<PortRange>,
    /// Unix sockets below the runtime directories (/run, /tmp, /dev/shm)
    /// the server may reach, as written: absolute or `~/`, `%u` standing
    /// for the caller's uid. Everything else there is hidden from it.
    pub unix: Vec<String>,
    /// Socket kinds beyond Unix, TCP, UDP and route netlink the server may
    /// create (see [`sockets`]).
    pub sockets: Vec<SocketKind>,
    /// Let an allowed name's answer open loopback, link-local and
    /// unspecified addresses (off: such answers are refused as DNS
    /// rebinding).
    pub allow_local_answers: bool,
    /// An allowed name's answer keeps its addresses open at least this many
    /// seconds (0: its TTL), for clients that cache lookups longer.
    pub min_ttl: u32,
}

/// Kernel interfaces beyond files and sockets (`[kernel]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kernel {
    /// Interfaces the launcher's seccomp filter lets through; every other
    /// one in [`KernelFeature`] is refused.
    pub allow: Vec<KernelFeature>,
    /// Guarantees the policy lets a server run without where the kernel
    /// cannot hold them (`scope.signal`, `scope.abstract_unix_socket`);
    /// without it such a launch is refused ([`crate::kernel::coverage`]).
    pub accept_weaker: Vec<Class>,
}

pub use crate::kernel::{coverage::Class, syscalls::KernelFeature};

/// Who the server runs as, beyond the caller's uid and gid (`[identity]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// Supplementary groups (names) the server keeps if the caller has
    /// them; every other supplementary group is dropped.
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env {
    /// Environment variables passed through to the server; all others are
    /// dropped.
    pub pass: Vec<String>,
}

/// What the MCP tap lets through and records (`[tools]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tools {
    /// Globs (`*`, `?`) of tools the client may see and call; `None` (no
    /// `allow` key) allows every tool not denied.
    pub allow: Option<Vec<String>>,
    /// Globs of tools refused whatever `allow` says.
    pub deny: Vec<String>,
    /// Argument names whose values are logged in clear; all others are
    /// recorded as type and length only.
    pub log_args: Vec<String>,
    /// Globs of tools whose results' records carry a short excerpt of
    /// their text (redacted); others' carry types and sizes only.
    pub excerpt: Vec<String>,
    pub on_tool_change: ToolChange,
    /// Remove invisible Unicode from tool descriptions and results.
    pub strip_invisible: bool,
    /// `[tools.<name>] network`: what a server may reach only while a call
    /// to that tool is in flight.
    pub call_net: call_net::CallNet,
    /// Globs of tools whose calls wait for a person's decision (`"*"`:
    /// every call of the server).
    pub ask: Vec<String>,
    /// How long a call waits for that decision before it is refused.
    pub ask_timeout: Duration,
    /// What a tainted session does with calls to tools that can act
    /// outside.
    pub on_taint: OnTaint,
    /// Globs of the tools that can act outside; `None`: every tool the
    /// server does not mark `readOnlyHint` in `tools/list`.
    pub taint_tools: Option<Vec<String>>,
}

impl Default for Tools {
    /// A policy without `[tools]`.
    fn default() -> Tools {
        Tools {
            allow: None,
            deny: Vec::new(),
            log_args: Vec::new(),
            excerpt: Vec::new(),
            on_tool_change: ToolChange::default(),
            strip_invisible: false,
            ask: Vec::new(),
            ask_timeout: DEFAULT_ASK_TIMEOUT,
            on_taint: OnTaint::default(),
            taint_tools: None,
            call_net: call_net::CallNet::default(),
        }
    }
}

/// Default for `[tools] ask_timeout`.
pub const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest `[tools] ask_timeout`: a held call keeps a thread and the
/// client waiting.
pub const MAX_ASK_TIMEOUT_SECS: u64 = 3600;

/// What a session does after a tool result or a server request was
/// flagged (instructions aimed at the model, invisible Unicode), for calls
/// to the tools that can act outside, until a person clears it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTaint {
    /// Each such call waits for a person, as `ask` does.
    #[default]
    Ask,
    /// Each such call is refused.
    Deny,
    /// Record the taint only.
    Warn,
}

/// What to do when a server's tools differ from the ones pinned on first
/// use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolChange {
    /// Record `tool_changed` and let the tools through.
    #[default]
    Warn,
    /// Record `tool_changed`, hide the changed tools and refuse calls to them.
    Block,
}

/// One `[secrets]` entry: an environment variable and where its value lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secret {
    pub env: String,
    pub source: SecretSource,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A root-owned file, not readable by group or others.
    File(PathBuf),
    /// A systemd credential of the daemon (`$CREDENTIALS_DIRECTORY/<name>`).
    Credential(String),
    /// Minted afresh for each launch by a root-installed helper: a file
    /// name in the daemon's minters directory, and the credential's
    /// lifetime in seconds.
    Mint { helper: String, ttl_secs: u64 },
}

/// A minted secret's lifetime when the policy names none.
pub const DEFAULT_MINT_TTL_SECS: u64 = 3600;
/// The shortest and longest lifetimes a policy may ask a helper for.
pub const MINT_TTL_SECS: std::ops::RangeInclusive<u64> = 60..=12 * 3600;

/// Filesystem allow-lists with `~` resolved against one caller's home.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedFs {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub exec: Vec<PathBuf>,
}

/// A position in a policy file; line and column are 1-based, the column
/// counts characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl Location {
    fn at(file: &Path, text: &str, offset: usize) -> Location {
        let offset = floor_char_boundary(text, offset.min(text.len()));
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            file: file.to_owned(),
            line: before.matches('\n').count() + 1,
            col: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("policy file {} is larger than {max} bytes", path.display())]
    TooLarge { path: PathBuf, max: u64 },
    #[error("policy file {} is not valid UTF-8", path.display())]
    NotUtf8 { path: PathBuf },
    /// TOML syntax, unknown keys, wrong types and missing keys, as reported
    /// by the TOML parser.
    #[error("{at}: {}", show_syntax(message, key.as_deref(), near.as_deref()))]
    Syntax {
        at: Location,
        message: String,
        /// Dotted path of the table or key the error is inside, if known.
        key: Option<String>,
        /// The offending text, when the parser's message does not quote it
        /// (e.g. the key of a `duplicate key` error).
        near: Option<String>,
    },
    /// A well-formed value that is not acceptable.
    #[error("{at}: {key} {value:?}: {problem}")]
    Invalid {
        at: Location,
        /// Dotted key, e.g. `filesystem.read`.
        key: &'static str,
        value: String,
        problem: Problem,
    },
    #[error(
        "network.allow rule {rule:?}: prefix {prefix} needs {count} port ranges once the \
         ports of the shorter prefixes containing it are folded in; one entry holds {max}"
    )]
    TooManyPortRanges {
        rule: String,
        prefix: String,
        count: usize,
        max: usize,
    },
    /// A key of `[tools]` that is neither one of its own nor a tool table.
    #[error(
        "{at}: unknown key `{key}` in [tools] (a tool's own rules go in a table, `[tools.NAME]`)"
    )]
    UnknownToolsKey { at: Location, key: String },
    /// A `[tools.<name>]` table, or one of its `network` rules, that is
    /// not acceptable.
    #[error("{at}: tools.{tool}.network {value:?}: {problem}")]
    ToolNetwork {
        at: Location,
        /// Boxed, so the error stays smaller than [`PolicyError::Invalid`].
        tool: Box<str>,
        value: Box<str>,
        problem: Problem,
    },
    #[error("policy name {name:?}: {problem}")]
    BadPolicyName { name: String, problem: Problem },
    #[error("no policy named {name:?}; looked for {}", show_paths(searched))]
    NotFound {
        name: String,
        searched: Vec<PathBuf>,
    },
}

fn show_syntax(message: &str, key: Option<&str>, near: Option<&str>) -> String {
    let mut out = message.to_owned();
    if let Some(near) = near {
        out.push_str(&format!(": `{near}`"));
    }
    if let Some(key) = key {
        out.push_str(&format!(" (in `{key}`)"));
    }
    out
}

fn show_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a value was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error(
        "not a valid server name: use 1-{MAX_NAME_LEN} characters of a-z, 0-9, '_' and '-', \
         starting with a letter or digit"
    )]
    BadName,
    #[error("relative path: use an absolute path, or `~/...` for the caller's home")]
    RelativePath,
    #[error("`~user` paths are not supported: use `~/...` for the caller's home")]
    OtherUsersHome,
    #[error("paths may not contain `..` components")]
    DotDot,
    #[error("contains a NUL byte")]
    Nul,
    #[error(
        "not a guarantee a server may run without: use \"scope.signal\" or \
         \"scope.abstract_unix_socket\" (every other class is held on every kernel a \
         launch goes on)"
    )]
    BadWeaker,
    #[error("not a valid environment variable name (empty, or contains `=` or NUL)")]
    BadEnvName,
    #[error("no port: write ADDRESS:PORT or ADDRESS:LO-HI, e.g. 127.0.0.1:8080 or [::1]:8080")]
    MissingPort,
    #[error("missing `]` after the IPv6 address")]
    UnclosedBracket,
    #[error("IPv6 addresses go in brackets: [ADDRESS]:PORT or [ADDRESS/PREFIX]:PORT")]
    UnbracketedV6,
    #[error("not an address")]
    Hostname,
    #[error(
        "`{host}` is neither an address nor a host name (labels of a-z, 0-9, '-', \
         optionally `*.` in front)"
    )]
    BadHost { host: String },
    #[error("not a group name: 1-32 characters of A-Z, a-z, 0-9, '_', '-' and '.'")]
    BadGroup,
    #[error("not a tool name pattern: 1-128 characters, no control characters")]
    BadGlob,
    #[error(
        "per-call rules name one tool exactly: 1-128 characters, no `*`, `?` or control \
         characters"
    )]
    ToolName,
    #[error("give exactly one of `file`, `credential` or `mint`")]
    SecretSource,
    #[error(
        "helper names are 1-64 characters of A-Z, a-z, 0-9, '_', '-' and '.': a file in the \
         daemon's minters directory, never a path"
    )]
    MinterName,
    #[error(
        "not a lifetime from 60s to 12h in whole seconds: write e.g. \"90s\", \"15m\" or \"1h\""
    )]
    BadTtl,
    #[error("`ttl` is the lifetime of a minted secret: it goes only with `mint`")]
    TtlWithoutMint,
    #[error("secret files are absolute paths without `..` (and never under `~`)")]
    SecretPath,
    #[error("credential names are 1-64 characters of A-Z, a-z, 0-9, '_', '-' and '.'")]
    CredentialName,
    #[error("`{addr}` is not an IPv4 address, an IPv6 address in brackets, or a host name")]
    BadAddress { addr: String },
    #[error("prefix `/{prefix}` is not a number from 0 to {max}")]
    BadPrefix { prefix: String, max: u8 },
    #[error("`{port}` is not a port number from 1 to 65535")]
    BadPort { port: String },
    #[error("port 0 is not a real port: use 1 to 65535")]
    PortZero,
    #[error("port range {lo}-{hi} is reversed")]
    PortRangeReversed { lo: u16, hi: u16 },
    #[error("not a task count: use a whole number from 1 to {max}")]
    BadPids { max: u64 },
    #[error(
        "not a size: write a whole number of bytes, or of K, M or G (1024-based), e.g. \"512M\""
    )]
    BadSize,
    #[error("too large")]
    SizeTooLarge,
    #[error("not a number of seconds from 0 to {max}")]
    MinTtl { max: u32 },
    #[error("not a number of seconds from 1 to {max}")]
    AskTimeout { max: u64 },
    #[error(
        "a pin needs both `runner` (the client's words) and `run` (an absolute program and \
         its leading arguments)"
    )]
    PinWithoutRun,
    #[error("below the minimum of {} (nothing starts in less)", limits::show_size(*min))]
    SizeTooSmall { min: u64 },
    #[error(
        "prefix {prefix} needs {count} port ranges once the ports of the shorter prefixes \
         containing it are folded in; one entry holds {max}"
    )]
    TooManyPortRanges {
        prefix: String,
        count: usize,
        max: usize,
    },
    #[error("the bind list needs {count} port ranges once merged; the kernel holds {max}")]
    TooManyBindRanges { count: usize, max: usize },
}

// The file as TOML sees it. List items are spanned so semantic errors can
// point at the exact string.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: Spanned<String>,
    #[serde(default)]
    filesystem: RawFilesystem,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    env: RawEnv,
    #[serde(default)]
    tools: RawTools,
    #[serde(default)]
    mcp: mcp::Mcp,
    #[serde(default)]
    identity: RawIdentity,
    #[serde(default)]
    kernel: RawKernel,
    #[serde(default)]
    secrets: std::collections::BTreeMap<String, Spanned<RawSecret>>,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    command: command::RawCommand,
    #[serde(default)]
    audit: audit::Audit,
}

// Not `deny_unknown_fields`: every other key lands in `per_tool`, which
// `call_net::check` reads as tool tables or refuses.
#[derive(Default, Deserialize)]
struct RawTools {
    allow: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    #[serde(default)]
    log_args: Vec<Spanned<String>>,
    #[serde(default)]
    excerpt: Vec<Spanned<String>>,
    #[serde(default)]
    on_tool_change: ToolChange,
    #[serde(default)]
    strip_invisible: bool,
    #[serde(default)]
    ask: Vec<Spanned<String>>,
    ask_timeout: Option<Spanned<u64>>,
    #[serde(default)]
    on_taint: OnTaint,
    taint_tools: Option<Vec<Spanned<String>>>,
    #[serde(flatten)]
    per_tool: call_net::Rest,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    #[serde(default)]
    groups: Vec<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKernel {
    #[serde(default)]
    allow: Vec<KernelFeature>,
    #[serde(default)]
    accept_weaker: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    file: Option<String>,
    credential: Option<String>,
    mint: Option<String>,
    ttl: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilesystem {
    #[serde(default)]
    read: Vec<Spanned<String>>,
    #[serde(default)]
    write: Vec<Spanned<String>>,
    #[serde(default)]
    exec: Vec<Spanned<String>>,
    baseline: Option<bool>,
    #[serde(default)]
    allow_persistence: Vec<persist::PersistKind>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    bind: Vec<Spanned<String>>,
    #[serde(default)]
    unix: Vec<Spanned<String>>,
    #[serde(default)]
    sockets: Vec<SocketKind>,
    #[serde(default)]
    allow_local_answers: bool,
    #[serde(default)]
    min_ttl: Option<Spanned<u32>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnv {
    #[serde(default)]
    pass: Vec<Spanned<String>>,
}

/// Turns per-value checks into located errors.
struct Checker<'a> {
    text: &'a str,
    source: &'a Path,
}

impl Checker<'_> {
    fn located(&self, key: &'static str, item: &Spanned<String>, problem: Problem) -> PolicyError {
        self.located_at(key, item.span().start, item.get_ref().clone(), problem)
    }

    fn located_at(
        &self,
        key: &'static str,
        start: usize,
        value: String,
        problem: Problem,
    ) -> PolicyError {
        PolicyError::Invalid {
            at: Location::at(self.source, self.text, start),
            key,
            value,
            problem,
        }
    }

    fn each<T>(
        &self,
        key: &'static str,
        items: &[Spanned<String>],
        check: impl Fn(&str) -> Result<T, Problem>,
    ) -> Result<Vec<T>, PolicyError> {
        items
            .iter()
            .map(|item| check(item.get_ref()).map_err(|p| self.located(key, item, p)))
            .collect()
    }

    fn paths(
        &self,
        key: &'static str,
        items: &[Spanned<String>],
    ) -> Result<Vec<String>, PolicyError> {
        self.each(key, items, |p| check_path(p).map(|()| p.to_owned()))
    }

    fn filesystem(&self, raw: RawFilesystem) -> Result<Filesystem, PolicyError> {
        Ok(Filesystem {
            read: self.paths("filesystem.read", &raw.read)?,
            write: self.paths("filesystem.write", &raw.write)?,
            exec: self.paths("filesystem.exec", &raw.exec)?,
            baseline: raw.baseline.unwrap_or(true),
            allow_persistence: {
                let mut kinds = raw.allow_persistence;
                kinds.sort();
                kinds.dedup();
                kinds
            },
        })
    }

    /// `network.allow`, split into address and host rules.
    fn net_allow(
        &self,
        items: &[Spanned<String>],
    ) -> Result<(Vec<NetRule>, Vec<HostRule>), PolicyError> {
        let rules = self.each("network.allow", items, net::parse_allow)?;
        let mut allow = Vec::new();
        let mut hosts = Vec::new();
        for rule in rules {
            match rule {
                net::AllowRule::Addr(r) => allow.push(r),
                net::AllowRule::Host(h) => hosts.push(h),
            }
        }
        Ok((allow, hosts))
    }

    /// `network.bind`, which must fit the kernel's port ranges once merged.
    fn net_bind(&self, items: &[Spanned<String>]) -> Result<Vec<PortRange>, PolicyError> {
        let bind = self.each("network.bind", items, net::parse_ports)?;
        if let (Err(count), Some(last)) = (net::bind_ports(&bind), items.last()) {
            return Err(self.located(
                "network.bind",
                last,
                Problem::TooManyBindRanges {
                    count,
                    max: mcpguard_common::limits::PORT_RANGES,
                },
            ));
        }
        Ok(bind)
    }

    fn tools(&self, raw: RawTools, allow: &[NetRule]) -> Result<Tools, PolicyError> {
        let globs = |key, items: &[Spanned<String>]| {
            self.each(key, items, |g| check_glob(g).map(|()| g.to_owned()))
        };
        Ok(Tools {
            allow: raw
                .allow
                .as_deref()
                .map(|a| globs("tools.allow", a))
                .transpose()?,
            deny: globs("tools.deny", &raw.deny)?,
            log_args: globs("tools.log_args", &raw.log_args)?,
            excerpt: globs("tools.excerpt", &raw.excerpt)?,
            on_tool_change: raw.on_tool_change,
            strip_invisible: raw.strip_invisible,
            ask: globs("tools.ask", &raw.ask)?,
            ask_timeout: match raw.ask_timeout {
                Some(t) if !(1..=MAX_ASK_TIMEOUT_SECS).contains(t.get_ref()) => {
                    return Err(self.located_at(
                        "tools.ask_timeout",
                        t.span().start,
                        t.get_ref().to_string(),
                        Problem::AskTimeout {
                            max: MAX_ASK_TIMEOUT_SECS,
                        },
                    ))
                }
                Some(t) => Duration::from_secs(t.into_inner()),
                None => DEFAULT_ASK_TIMEOUT,
            },
            on_taint: raw.on_taint,
            taint_tools: raw
                .taint_tools
                .as_deref()
                .map(|t| globs("tools.taint_tools", t))
                .transpose()?,
            call_net: call_net::check(self, &raw.per_tool, allow)?,
        })
    }

    /// Each secret: an env name and exactly one of `file`, `credential` or
    /// `mint` (with an optional `ttl`).
    fn secrets(
        &self,
        raw: &std::collections::BTreeMap<String, Spanned<RawSecret>>,
    ) -> Result<Vec<Secret>, PolicyError> {
        raw.iter()
            .map(|(env, spanned)| {
                let at = |problem| {
                    self.located_at("secrets", spanned.span().start, env.clone(), problem)
                };
                check_env_name(env).map_err(at)?;
                Ok(Secret {
                    env: env.clone(),
                    source: secret_source(spanned.get_ref()).map_err(at)?,
                })
            })
            .collect()
    }

    /// Warn about address rules with host bits below their prefix, and fold
    /// the rules now, with a dummy cgroup id, so an over-full prefix is a
    /// policy error at load time rather than a failure at launch.
    fn check_allow_folds(
        &self,
        allow: &[NetRule],
        items: &[Spanned<String>],
    ) -> Result<(), PolicyError> {
        for rule in allow.iter().filter(|r| r.has_host_bits()) {
            tracing::warn!(
                policy = %self.source.display(),
                rule = %rule.text,
                "network.allow rule has address bits set below its prefix; they are ignored"
            );
        }
        if let Err(PolicyError::TooManyPortRanges {
            rule,
            prefix,
            count,
            max,
        }) = net::compile_allow(allow, 0)
        {
            let item = items
                .iter()
                .find(|i| *i.get_ref() == rule)
                .expect("compile_allow names one of the rules it was given");
            return Err(self.located(
                "network.allow",
                item,
                Problem::TooManyPortRanges { prefix, count, max },
            ));
        }
        Ok(())
    }

    fn limits(&self, raw: &limits::RawLimits) -> Result<Limits, PolicyError> {
        let mut bounds = Limits::default();
        if let Some(pids) = &raw.pids {
            bounds.pids = limits::check_pids(*pids.get_ref()).map_err(|p| {
                self.located_at(
                    "limits.pids",
                    pids.span().start,
                    pids.get_ref().to_string(),
                    p,
                )
            })?;
        }
        if let Some(memory) = &raw.memory {
            bounds.memory = limits::parse_memory(memory.get_ref())
                .map_err(|p| self.located("limits.memory", memory, p))?;
        }
        Ok(bounds)
    }

    fn min_ttl(&self, raw: Option<Spanned<u32>>) -> Result<u32, PolicyError> {
        match raw {
            Some(t) if *t.get_ref() > MAX_MIN_TTL => Err(self.located_at(
                "network.min_ttl",
                t.span().start,
                t.get_ref().to_string(),
                Problem::MinTtl { max: MAX_MIN_TTL },
            )),
            Some(t) => Ok(t.into_inner()),
            None => Ok(0),
        }
    }
}

impl Policy {
    /// Parses and validates policy text; `source` names the file in errors.
    /// The checks run in the file's order of tables, so the first problem
    /// reported is the same whatever else is wrong.
    pub fn parse(text: &str, source: &Path) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| syntax_error(e, text, source))?;
        let c = Checker { text, source };

        check_name(raw.name.get_ref()).map_err(|p| c.located("name", &raw.name, p))?;
        let filesystem = c.filesystem(raw.filesystem)?;
        let (allow, hosts) = c.net_allow(&raw.network.allow)?;
        let bind = c.net_bind(&raw.network.bind)?;
        let pass = c.each("env.pass", &raw.env.pass, |v| {
            check_env_name(v).map(|()| v.to_owned())
        })?;
        let tools = c.tools(raw.tools, &allow)?;
        let secrets = c.secrets(&raw.secrets)?;
        c.check_allow_folds(&allow, &raw.network.allow)?;
        let limits = c.limits(&raw.limits)?;
        let command = raw
            .command
            .check()
            .map_err(|l| c.located_at(l.key, l.start, l.value, l.problem))?;

        Ok(Policy {
            command,
            name: raw.name.into_inner(),
            source: source.to_owned(),
            filesystem,
            network: Network {
                allow,
                hosts,
                bind,
                unix: c.paths("network.unix", &raw.network.unix)?,
                sockets: raw.network.sockets,
                allow_local_answers: raw.network.allow_local_answers,
                min_ttl: c.min_ttl(raw.network.min_ttl)?,
            },
            identity: Identity {
                groups: c.each("identity.groups", &raw.identity.groups, |g| {
                    check_group(g).map(|()| g.to_owned())
                })?,
            },
            kernel: Kernel {
                allow: raw.kernel.allow,
                accept_weaker: c.each("kernel.accept_weaker", &raw.kernel.accept_weaker, |n| {
                    Class::from_name(n)
                        .filter(|c| c.acceptable())
                        .ok_or(Problem::BadWeaker)
                })?,
            },
            env: Env { pass },
            tools,
            mcp: raw.mcp,
            secrets,
            limits,
            audit: raw.audit,
        })
    }

    /// Reads and parses a policy file of at most [`MAX_POLICY_BYTES`].
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let read_err = |source| PolicyError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        // Bounded read rather than trusting metadata: the path may name a
        // pipe or a file that grows.
        let mut bytes = Vec::new();
        file.take(MAX_POLICY_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                path: path.to_owned(),
                max: MAX_POLICY_BYTES,
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| PolicyError::NotUtf8 {
            path: path.to_owned(),
        })?;
        Policy::parse(&text, path)
    }

    /// `[network] unix` with `~` replaced by `home` and `%u` by `uid`.
    pub fn unix_paths(&self, home: &Path, uid: u32) -> Vec<PathBuf> {
        self.network
            .unix
            .iter()
            .map(|p| expand_home(&p.replace("%u", &uid.to_string()), home))
            .collect()
    }

    /// Filesystem lists with `~` replaced by `home`, the runtime baseline
    /// (its paths that exist, [`baseline::read_paths`]) added to `read`
    /// unless the policy opts out.
    pub fn fs_paths(&self, home: &Path, baseline: &[PathBuf]) -> ResolvedFs {
        let resolve = |list: &[String]| list.iter().map(|p| expand_home(p, home)).collect();
        let mut read: Vec<PathBuf> = resolve(&self.filesystem.read);
        if self.filesystem.baseline {
            read.extend(baseline.iter().cloned());
        }
        ResolvedFs {
            read,
            write: resolve(&self.filesystem.write),
            exec: resolve(&self.filesystem.exec),
        }
    }
}

fn expand_home(path: &str, home: &Path) -> PathBuf {
    if path == "~" {
        return home.to_owned();
    }
    match path.strip_prefix("~/") {
        // `Path::join` with an absolute path replaces the base, so "~//etc"
        // must not become "/etc".
        Some(rest) => home.join(rest.trim_start_matches('/')),
        None => PathBuf::from(path),
    }
}

/// Resolves a `--policy` argument to a file. An argument containing `/` or
/// ending in `.toml` is a path (relative to the current directory); anything
/// else is a policy name, looked up in `<home>/.config/mcpguard/policies/`,
/// then `/etc/mcpguard/policies/`, then `dev_dir` (the repository's
/// `policies/`, for development).
pub fn resolve(arg: &str, home: &Path, dev_dir: Option<&Path>) -> Result<PathBuf, PolicyError> {
    resolve_in(arg, home, Path::new(SYSTEM_POLICY_DIR), dev_dir)
}

fn resolve_in(
    arg: &str,
    home: &Path,
    system_dir: &Path,
    dev_dir: Option<&Path>,
) -> Result<PathBuf, PolicyError> {
    if arg.contains('/') || arg.ends_with(".toml") {
        return Ok(PathBuf::from(arg));
    }
    check_name(arg).map_err(|problem| PolicyError::BadPolicyName {
        name: arg.to_owned(),
        problem,
    })?;
    let file = format!("{arg}.toml");
    let searched: Vec<PathBuf> = [
        Some(home.join(".config/mcpguard/policies")),
        Some(system_dir.to_owned()),
        dev_dir.map(Path::to_owned),
    ]
    .into_iter()
    .flatten()
    .map(|dir| dir.join(&file))
    .collect();
    match searched.iter().find(|p| p.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(PolicyError::NotFound {
            name: arg.to_owned(),
            searched,
        }),
    }
}

fn syntax_error(err: toml::de::Error, text: &str, source: &Path) -> PolicyError {
    let span: Range<usize> = err.span().unwrap_or(0..0);
    let message = err.message().to_owned();
    let near = text
        .get(span.clone())
        .filter(|s| !s.is_empty() && s.len() <= 64 && !s.contains('\n') && !message.contains(*s))
        .map(str::to_owned);
    PolicyError::Syntax {
        at: Location::at(source, text, span.start),
        key: error_key(&err),
        near,
        message,
    }
}

/// The dotted key path toml attaches to a deserialisation error. toml only
/// exposes it through `Display`, and only when the error carries no input
/// (with input it prints a source snippet instead).
fn error_key(err: &toml::de::Error) -> Option<String> {
    let mut bare = err.clone();
    bare.set_input(None);
    let shown = bare.to_string();
    let line = shown.lines().last()?;
    let key = line.strip_prefix("in `")?.strip_suffix('`')?;
    (!key.is_empty()).then(|| key.to_owned())
}

fn check_name(name: &str) -> Result<(), Problem> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    let starts_alnum = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if starts_alnum && name.len() <= MAX_NAME_LEN && name.chars().all(ok_char) {
        Ok(())
    } else {
        Err(Problem::BadName)
    }
}

fn check_path(path: &str) -> Result<(), Problem> {
    if path.contains('\0') {
        return Err(Problem::Nul);
    }
    let rest = if path == "~" {
        ""
    } else if let Some(rest) = path.strip_prefix("~/") {
        rest
    } else if path.starts_with('~') {
        return Err(Problem::OtherUsersHome);
    } else if path.starts_with('/') {
        path
    } else {
        return Err(Problem::RelativePath);
    };
    if Path::new(rest)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(Problem::DotDot);
    }
    Ok(())
}

fn check_group(name: &str) -> Result<(), Problem> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if (1..=32).contains(&name.len()) && name.chars().all(ok) {
        Ok(())
    } else {
        Err(Problem::BadGroup)
    }
}

fn check_glob(glob: &str) -> Result<(), Problem> {
    if glob.is_empty() || glob.chars().count() > 128 || glob.chars().any(char::is_control) {
        Err(Problem::BadGlob)
    } else {
        Ok(())
    }
}

fn check_secret_path(path: &str) -> Result<(), Problem> {
    if !path.starts_with('/') {
        return Err(Problem::SecretPath);
    }
    check_path(path).map_err(|_| Problem::SecretPath)
}

/// One `[secrets]` value's source, checked.
fn secret_source(raw: &RawSecret) -> Result<SecretSource, Problem> {
    if raw.ttl.is_some() && raw.mint.is_none() {
        return Err(Problem::TtlWithoutMint);
    }
    match (&raw.file, &raw.credential, &raw.mint) {
        (Some(file), None, None) => {
            check_secret_path(file)?;
            Ok(SecretSource::File(PathBuf::from(file)))
        }
        (None, Some(name), None) => {
            if !is_file_name(name) {
                return Err(Problem::CredentialName);
            }
            Ok(SecretSource::Credential(name.clone()))
        }
        (None, None, Some(helper)) => {
            if !is_file_name(helper) {
                return Err(Problem::MinterName);
            }
            Ok(SecretSource::Mint {
                helper: helper.clone(),
                ttl_secs: raw
                    .ttl
                    .as_deref()
                    .map_or(Ok(DEFAULT_MINT_TTL_SECS), parse_ttl)?,
            })
        }
        _ => Err(Problem::SecretSource),
    }
}

/// A minted secret's lifetime: whole seconds within [`MINT_TTL_SECS`].
fn parse_ttl(text: &str) -> Result<u64, Problem> {
    let ttl = humantime::parse_duration(text).map_err(|_| Problem::BadTtl)?;
    if ttl.subsec_nanos() != 0 || !MINT_TTL_SECS.contains(&ttl.as_secs()) {
        return Err(Problem::BadTtl);
    }
    Ok(ttl.as_secs())
}

/// A plain file name in one of the daemon's directories (credentials,
/// minters): no `/`, never `.` or `..`.
fn is_file_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    (1..=64).contains(&name.len()) && name.chars().all(ok) && name != "." && name != ".."
}

fn check_env_name(name: &str) -> Result<(), Problem> {
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        Err(Problem::BadEnvName)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    const FILE: &str = "policies/x.toml";

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, Path::new(FILE))
    }

    fn err(text: &str) -> PolicyError {
        match parse(text) {
            Ok(p) => panic!("expected an error, parsed {p:?}"),
            Err(e) => e,
        }
    }

    /// Asserts the message starts at `line:col` and mentions each of `parts`.
    pub(super) fn assert_err(text: &str, line: usize, col: usize, parts: &[&str]) -> PolicyError {
        let e = err(text);
        let msg = e.to_string();
        let prefix = format!("{FILE}:{line}:{col}: ");
        assert!(
            msg.starts_with(&prefix),
            "want {prefix:?} at start of {msg:?}"
        );
        for part in parts {
            assert!(msg.contains(part), "want {part:?} in {msg:?}");
        }
        e
    }

    #[test]
    fn parses_tools_and_secrets() {
        let p = parse(
            r#"
name = "gh"
[tools]
allow = ["get_*", "list_*"]
deny = ["delete_*"]
log_args = ["path"]
excerpt = ["get_*"]
on_tool_change = "block"
strip_invisible = true
[secrets]
GITHUB_TOKEN = { file = "/etc/mcpguard/secrets/github" }
OTHER = { credential = "gh.token" }
MINTED = { mint = "github-app", ttl = "15m" }
MINTED_DEFAULT = { mint = "aws-sts" }
"#,
        )
        .unwrap();
        assert_eq!(
            p.tools.allow,
            Some(vec!["get_*".to_string(), "list_*".to_string()])
        );
        assert_eq!(p.tools.deny, ["delete_*"]);
        assert_eq!(p.tools.log_args, ["path"]);
        assert_eq!(p.tools.excerpt, ["get_*"]);
        assert_eq!(p.tools.on_tool_change, ToolChange::Block);
        assert!(p.tools.strip_invisible);
        assert_eq!(
            p.secrets,
            [
                Secret {
                    env: "GITHUB_TOKEN".into(),
                    source: SecretSource::File("/etc/mcpguard/secrets/github".into())
                },
                Secret {
                    env: "MINTED".into(),
                    source: SecretSource::Mint {
                        helper: "github-app".into(),
                        ttl_secs: 900
                    }
                },
                Secret {
                    env: "MINTED_DEFAULT".into(),
                    source: SecretSource::Mint {
                        helper: "aws-sts".into(),
                        ttl_secs: DEFAULT_MINT_TTL_SECS
                    }
                },
                Secret {
                    env: "OTHER".into(),
                    source: SecretSource::Credential("gh.token".into())
                },
            ]
        );
        // No [tools]: every tool allowed, changes only warned about.
        let bare = parse("name = \"x\"\n").unwrap();
        assert_eq!(bare.tools.allow, None);
        assert_eq!(bare.tools.on_tool_change, ToolChange::Warn);
        assert!(bare.secrets.is_empty());
        // Nothing waits for a person unless asked; a tainted session asks.
        assert!(bare.tools.ask.is_empty());
        assert_eq!(bare.tools.ask_timeout, DEFAULT_ASK_TIMEOUT);
        assert_eq!(bare.tools.on_taint, OnTaint::Ask);
        assert_eq!(bare.tools.taint_tools, None);
        let asking = parse(
            "name = \"x\"\n[tools]\nask = [\"send_*\"]\nask_timeout = 5\non_taint = \"deny\"\ntaint_tools = []\n",
        )
        .unwrap();
        assert_eq!(asking.tools.ask, ["send_*"]);
        assert_eq!(asking.tools.ask_timeout, Duration::from_secs(5));
        assert_eq!(asking.tools.on_taint, OnTaint::Deny);
        assert_eq!(asking.tools.taint_tools, Some(vec![]));
    }

    #[test]
    fn limits_default_and_parse_and_bad_ones_are_located() {
        assert_eq!(parse("name = \"x\"\n").unwrap().limits, Limits::default());
        let p = parse("name = \"x\"\n[limits]\npids = 64\nmemory = \"256M\"\n").unwrap();
        assert_eq!(
            p.limits,
            Limits {
                pids: 64,
                memory: 256 << 20
            }
        );
        assert_err(
            "name = \"x\"\n[limits]\npids = 0\n",
            3,
            8,
            &["limits.pids", "\"0\"", "whole number from 1"],
        );
        assert_err(
            "name = \"x\"\n[limits]\nmemory = \"1.5G\"\n",
            3,
            10,
            &["limits.memory", "K, M or G"],
        );
        assert_err(
            "name = \"x\"\n[limits]\nmemory = \"1K\"\n",
            3,
            10,
            &["minimum of 16M"],
        );
        assert_err(
            "name = \"x\"\n[limits]\ncpu = 1\n",
            3,
            1,
            &["unknown field `cpu`"],
        );
    }

    #[test]
    fn bad_tools_and_secrets_are_located() {
        for (text, needle) in [
            ("name = \"x\"\n[tools]\nallow = [\"\"]\n", "tools.allow"),
            ("name = \"x\"\n[tools]\nexcerpt = [\"\"]\n", "tools.excerpt"),
            (
                "name = \"x\"\n[tools]\non_tool_change = \"ask\"\n",
                "on_tool_change",
            ),
            ("name = \"x\"\n[tools]\nalow = []\n", "alow"),
            ("name = \"x\"\n[tools]\nask = [\"\"]\n", "tools.ask"),
            (
                "name = \"x\"\n[tools]\nask_timeout = 0\n",
                "tools.ask_timeout \"0\": not a number of seconds from 1 to 3600",
            ),
            ("name = \"x\"\n[tools]\non_taint = \"block\"\n", "on_taint"),
            (
                "name = \"x\"\n[tools]\ntaint_tools = [\"\"]\n",
                "tools.taint_tools",
            ),
            (
                "name = \"x\"\n[secrets]\nT = { file = \"~/token\" }\n",
                "secrets",
            ),
            (
                "name = \"x\"\n[secrets]\nT = { file = \"/a\", credential = \"b\" }\n",
                "exactly one",
            ),
            (
                "name = \"x\"\n[secrets]\nT = { credential = \"../x\" }\n",
                "credential names",
            ),
            (
                "name = \"x\"\n[secrets]\nT = { value = \"inline\" }\n",
                "value",
            ),
            (
                "name = \"x\"\n[secrets]\nT = { mint = \"../bin/sh\" }\n",
                "helper names",
            ),
            (
                "name = \"x\"\n[secrets]\nT = { mint = \"/usr/bin/env\" }\n",
                "never a path",
            ),
            (
                "name = \"x\"\n[secrets]\nT = { mint = \"..\" }\n",
                "helper names",
            ),
            (
                "name = \"x\"\n[secrets]\nT = { mint = \"gh\", ttl = \"10s\" }\n",
                "60s to 12h",
            ),
            (
                "name = \"x\"\n[secrets]\nT = { mint = \"gh\", ttl = \"13h\" }\n",
                "60s to 12h",
            ),
            (
                "name = \"x\"\n[secrets]\nT = { mint = \"gh\", ttl = \"90.5s\" }\n",
                "whole seconds",
            ),
            (
                "name = \"x\"\n[secrets]\nT = { mint = \"gh\", ttl = \"soon\" }\n",
                "60s to 12h",
            ),
            (
                "name = \"x\"\n[secrets]\nT = { mint = \"gh\", file = \"/a\" }\n",
                "exactly one of `file`, `credential` or `mint`",
            ),
            (
                "name = \"x\"\n[secrets]\nT = { mint = \"gh\", credential = \"b\" }\n",
                "exactly one",
            ),
            (
                "name = \"x\"\n[secrets]\nT = { file = \"/a\", ttl = \"1h\" }\n",
                "only with `mint`",
            ),
            (
                "name = \"x\"\n[secrets]\nT = { mint = \"gh\", ttl = 3600 }\n",
                "ttl",
            ),
        ] {
            let e = err(text).to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(e.contains(FILE), "{e}");
        }
    }

    #[test]
    fn parses_the_contract_example() {
        let p = parse(
            r#"
name = "time"
[filesystem]
read  = ["/usr", "/lib", "/etc/ssl/certs", "~/.cache/uv"]
write = ["/tmp"]
exec  = ["/usr/bin", "/usr/lib"]
[network]
allow = ["127.0.0.1:8080", "10.0.0.0/8:443", "[::1]:8080", "192.0.2.7:1000-2000", "[2001:db8::/32]:443"]
bind  = ["8080", "9000-9010"]
[env]
pass = ["PATH", "HOME", "LANG"]
"#,
        )
        .unwrap();
        assert_eq!(p.name, "time");
        assert_eq!(p.source, Path::new(FILE));
        assert_eq!(
            p.filesystem.read,
            ["/usr", "/lib", "/etc/ssl/certs", "~/.cache/uv"]
        );
        assert_eq!(p.filesystem.write, ["/tmp"]);
        assert_eq!(p.filesystem.exec, ["/usr/bin", "/usr/lib"]);
        assert_eq!(p.network.allow.len(), 5);
        assert_eq!(p.network.allow[2].addr, Ipv6Addr::LOCALHOST);
        assert_eq!(p.network.allow[4].prefix, 32);
        assert_eq!(
            p.network.bind,
            [
                PortRange { lo: 8080, hi: 8080 },
                PortRange { lo: 9000, hi: 9010 }
            ]
        );
        assert_eq!(p.env.pass, ["PATH", "HOME", "LANG"]);
    }

    #[test]
    fn missing_tables_are_empty() {
        let p = parse("name = \"bare\"\n").unwrap();
        assert_eq!(p.filesystem, Filesystem::default());
        assert_eq!(p.network, Network::default());
        assert_eq!(p.env, Env::default());
    }

    #[test]
    fn unknown_top_level_key_is_named_with_its_position() {
        assert_err(
            "name = \"x\"\n\nfilesytem = 1\n",
            3,
            1,
            &["unknown field `filesytem`", "`filesystem`"],
        );
    }

    #[test]
    fn unknown_nested_key_is_named_with_its_table() {
        let e = assert_err(
            "name = \"x\"\n[filesystem]\nread = []\nreed = [\"/usr\"]\n",
            4,
            1,
            &[
                "unknown field `reed`, expected one of `read`, `write`, `exec`, `baseline`, `allow_persistence`",
                "(in `filesystem`)",
            ],
        );
        assert!(matches!(&e, PolicyError::Syntax { key: Some(k), .. } if k == "filesystem"));
        assert_eq!(
            e.to_string(),
            "policies/x.toml:4:1: unknown field `reed`, expected one of `read`, `write`, `exec`, `baseline`, `allow_persistence` \
             (in `filesystem`)"
        );
    }

    #[test]
    fn wrong_type_names_the_key_and_points_at_the_value() {
        assert_err(
            "name = \"x\"\n[filesystem]\nread = \"/usr\"\n",
            3,
            8,
            &[
                "in `filesystem.read`",
                "invalid type: string \"/usr\"",
                "sequence",
            ],
        );
        assert_err(
            "name = \"x\"\n[network]\nbind = [\n  \"80\",\n  8080,\n]\n",
            5,
            3,
            &["in `network.bind`", "integer `8080`", "expected a string"],
        );
    }

    #[test]
    fn missing_name_and_syntax_errors_are_located() {
        assert_err("[env]\npass = []\n", 1, 1, &["missing field `name`"]);
        assert_err("name = \"x\"\n[env\n", 2, 5, &["unclosed table"]);
        assert_err(
            "name = \"x\"\nname = \"y\"\n",
            2,
            1,
            &["duplicate key: `name`"],
        );
    }

    #[test]
    fn bad_address_points_at_the_entry() {
        let e = assert_err(
            "name = \"x\"\n[network]\nallow = [\"127.0.0.1:80\", \"10.0.0.300:80\"]\n",
            3,
            26,
            &[
                "network.allow",
                "\"10.0.0.300:80\"",
                "`10.0.0.300` is not an IPv4 address",
            ],
        );
        assert!(matches!(
            e,
            PolicyError::Invalid {
                key: "network.allow",
                problem: Problem::BadAddress { .. },
                ..
            }
        ));
    }

    #[test]
    fn host_names_and_wildcards_are_rules_of_their_own() {
        let p = parse(
            "name = \"x\"\n[network]\nallow = [\"API.GitHub.com.:443\", \"*.githubusercontent.com:443-444\", \"10.0.0.0/8:80\"]\n",
        )
        .unwrap();
        assert_eq!(p.network.allow.len(), 1);
        assert_eq!(p.network.hosts.len(), 2);
        let (exact, wild) = (&p.network.hosts[0], &p.network.hosts[1]);
        assert_eq!(
            (exact.name.as_str(), exact.wildcard),
            ("api.github.com", false)
        );
        assert!(exact.matches("api.github.com") && exact.matches("API.github.COM."));
        assert!(!exact.matches("x.api.github.com") && !exact.matches("github.com"));
        assert_eq!(
            (wild.name.as_str(), wild.wildcard),
            ("githubusercontent.com", true)
        );
        assert!(
            wild.matches("raw.githubusercontent.com") && wild.matches("a.b.githubusercontent.com")
        );
        assert!(
            !wild.matches("githubusercontent.com") && !wild.matches("evilgithubusercontent.com")
        );
        assert_eq!(wild.ports, PortRange { lo: 443, hi: 444 });
        let any = parse("name = \"x\"\n[network]\nallow = [\"*:443\"]\n").unwrap();
        assert!(
            any.network.hosts[0].matches("anything.example") && any.network.hosts[0].matches("x")
        );
        assert_err(
            "name = \"x\"\n[network]\nallow = [\"bad_-.example..com:443\"]\n",
            3,
            10,
            &["network.allow", "bad_-.example..com", "host name"],
        );
    }

    #[test]
    fn bad_port_points_at_the_entry() {
        assert_err(
            "name = \"x\"\n[network]\nallow = [\"127.0.0.1:70000\"]\n",
            3,
            10,
            &[
                "network.allow",
                "\"127.0.0.1:70000\"",
                "`70000` is not a port number",
            ],
        );
        assert_err(
            "name = \"x\"\n[network]\nbind = [\"0\"]\n",
            3,
            9,
            &["network.bind", "\"0\"", "port 0"],
        );
        assert_err(
            "name = \"x\"\n[network]\nbind = [\"90-80\"]\n",
            3,
            9,
            &["network.bind", "reversed"],
        );
        // Seventeen separate ports: one more range than the kernel holds.
        let ports: Vec<String> = (0..17).map(|i| format!("\"{}\"", 1000 + 2 * i)).collect();
        let text = format!("name = \"x\"\n[network]\nbind = [{}]\n", ports.join(", "));
        assert_err(
            &text,
            3,
            137,
            &["network.bind", "17 port ranges", "holds 16"],
        );
    }

    #[test]
    fn relative_path_points_at_the_entry() {
        assert_err(
            "name = \"x\"\n[filesystem]\nread = [\"/usr\",\n        \"etc/ssl\"]\n",
            4,
            9,
            &["filesystem.read", "\"etc/ssl\"", "relative path"],
        );
    }

    #[test]
    fn other_path_problems_are_rejected() {
        let cases = [
            ("/usr/../etc/shadow", Problem::DotDot),
            ("~/../other", Problem::DotDot),
            ("~root/.ssh", Problem::OtherUsersHome),
            ("/usr\\u0000", Problem::Nul),
            ("", Problem::RelativePath),
            ("./x", Problem::RelativePath),
        ];
        for (path, want) in cases {
            let text = format!("name = \"x\"\n[filesystem]\nwrite = [\"{path}\"]\n");
            match err(&text) {
                PolicyError::Invalid {
                    key: "filesystem.write",
                    problem,
                    at,
                    ..
                } => {
                    assert_eq!(problem, want, "{path}");
                    assert_eq!((at.line, at.col), (3, 10), "{path}");
                }
                other => panic!("{path}: unexpected {other}"),
            }
        }
        let ok = parse("name = \"x\"\n[filesystem]\nread = [\"~\", \"~/\", \"/\", \"/a/./b/\"]\n");
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn names_are_validated() {
        for good in ["time", "a", "0fs", "my_server-2", &"a".repeat(48)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-x",
            "_x",
            "Time",
            "a b",
            "a.b",
            "../x",
            "a/b",
            &"a".repeat(49),
        ] {
            assert_eq!(check_name(bad), Err(Problem::BadName), "{bad:?}");
        }
        assert_err(
            "\n  name = \"My Server\"\n",
            2,
            10,
            &["name \"My Server\"", "not a valid server name"],
        );
    }

    #[test]
    fn env_names_are_validated() {
        assert_err(
            "name = \"x\"\n[env]\npass = [\"PATH\", \"A=B\"]\n",
            3,
            17,
            &["env.pass", "\"A=B\""],
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        assert_err(
            "name = \"x\"\n[filesystem]\nread = [\"/é\", \"rel\"]\n",
            3,
            15,
            &["relative path"],
        );
    }

    #[test]
    fn over_full_prefix_is_a_located_policy_error() {
        let mut allow: Vec<String> = (0..16)
            .map(|i| format!("\"10.0.0.0/8:{}\"", 1000 + 2 * i))
            .collect();
        allow.push("\"10.9.9.9:1\"".into());
        let text = format!(
            "name = \"x\"\n[network]\nallow = [\n{}\n]\n",
            allow.join(",\n")
        );
        assert_err(
            &text,
            20,
            1,
            &[
                "network.allow",
                "\"10.9.9.9:1\"",
                "10.9.9.9/32",
                "17 port ranges",
            ],
        );
    }

    #[test]
    fn fs_paths_expand_home_only_at_the_start() {
        let p = parse(
            "name = \"x\"\n[filesystem]\nbaseline = false\nread = [\"~\", \"~/.cache/uv\", \"~//etc\", \"/usr/~/x\"]\nwrite = [\"/tmp\"]\nexec = [\"~/.local/bin\"]\n",
        )
        .unwrap();
        assert!(!p.filesystem.baseline);
        let fs = p.fs_paths(Path::new("/home/ann"), &baseline::read_paths());
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            fs.read,
            paths(&[
                "/home/ann",
                "/home/ann/.cache/uv",
                "/home/ann/etc",
                "/usr/~/x"
            ])
        );
        assert_eq!(fs.write, paths(&["/tmp"]));
        assert_eq!(fs.exec, paths(&["/home/ann/.local/bin"]));
    }

    #[test]
    fn allow_persistence_names_families_and_points_at_unknown_ones() {
        use persist::PersistKind;
        assert!(parse("name = \"x\"\n")
            .unwrap()
            .filesystem
            .allow_persistence
            .is_empty());
        let p = parse(
            "name = \"x\"\n[filesystem]\nallow_persistence = [\"git_hooks\", \"direnv\", \"git_hooks\"]\n",
        )
        .unwrap();
        assert_eq!(
            p.filesystem.allow_persistence,
            [PersistKind::GitHooks, PersistKind::Direnv]
        );
        assert_err(
            "name = \"x\"\n[filesystem]\nallow_persistence = [\"git_hook\"]\n",
            3,
            22,
            &["unknown variant `git_hook`", "`git_hooks`", "`mcp_config`"],
        );
    }

    #[test]
    fn the_baseline_is_on_unless_the_policy_opts_out() {
        let home = Path::new("/home/ann");
        let on = parse("name = \"x\"\n[filesystem]\nread = [\"/srv/data\"]\n").unwrap();
        assert!(on.filesystem.baseline);
        let read = on.fs_paths(home, &baseline::read_paths()).read;
        assert_eq!(read[0], Path::new("/srv/data"));
        assert_eq!(&read[1..], baseline::read_paths());
        assert!(read.contains(&PathBuf::from("/proc")), "{read:?}");
        assert!(parse("name = \"x\"\n").unwrap().filesystem.baseline);
        let off = parse("name = \"x\"\n[filesystem]\nbaseline = false\n").unwrap();
        assert!(off.fs_paths(home, &baseline::read_paths()).read.is_empty());
        assert_err(
            "name = \"x\"\n[filesystem]\nbaseline = \"no\"\n",
            3,
            12,
            &["in `filesystem.baseline`"],
        );
    }

    #[test]
    fn load_names_the_path_and_caps_the_size() {
        let dir = std::env::temp_dir().join(format!("mcpguard-policy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let missing = dir.join("missing.toml");
        let msg = Policy::load(&missing).unwrap_err().to_string();
        assert!(msg.contains(&missing.display().to_string()), "{msg}");

        let big = dir.join("big.toml");
        let mut text = String::from("name = \"x\"\n");
        text.push_str(&"#".repeat(MAX_POLICY_BYTES as usize));
        std::fs::write(&big, text).unwrap();
        assert!(matches!(
            Policy::load(&big),
            Err(PolicyError::TooLarge { .. })
        ));

        let good = dir.join("good.toml");
        std::fs::write(&good, "name = \"good\"\n[filesystem]\nread = [\"/usr\"]\n").unwrap();
        let p = Policy::load(&good).unwrap();
        assert_eq!(
            (p.name.as_str(), p.source.as_path()),
            ("good", good.as_path())
        );

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "name = \"bad\"\nextra = 1\n").unwrap();
        let msg = Policy::load(&bad).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("{}:2:1: ", bad.display())),
            "{msg}"
        );

        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resolve_searches_user_system_then_dev_dir() {
        let root =
            std::env::temp_dir().join(format!("mcpguard-resolve-test-{}", std::process::id()));
        let home = root.join("home");
        let user = home.join(".config/mcpguard/policies");
        let system = root.join("etc");
        let dev = root.join("dev");
        for d in [&user, &system, &dev] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(dev.join("time.toml"), "").unwrap();
        let got = resolve_in("time", &home, &system, Some(&dev)).unwrap();
        assert_eq!(got, dev.join("time.toml"));
        std::fs::write(system.join("time.toml"), "").unwrap();
        assert_eq!(
            resolve_in("time", &home, &system, Some(&dev)).unwrap(),
            system.join("time.toml")
        );
        std::fs::write(user.join("time.toml"), "").unwrap();
        assert_eq!(
            resolve_in("time", &home, &system, Some(&dev)).unwrap(),
            user.join("time.toml")
        );

        match resolve_in("nope", &home, &system, Some(&dev)) {
            Err(e @ PolicyError::NotFound { .. }) => {
                let msg = e.to_string();
                for dir in [&user, &system, &dev] {
                    let want = dir.join("nope.toml").display().to_string();
                    assert!(msg.contains(&want), "{want} not in {msg}");
                }
            }
            other => panic!("unexpected {other:?}"),
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn resolve_treats_slashes_and_toml_suffix_as_paths() {
        let home = Path::new("/nonexistent-home");
        assert_eq!(
            resolve("./p.toml", home, None).unwrap(),
            Path::new("./p.toml")
        );
        assert_eq!(resolve("p.toml", home, None).unwrap(), Path::new("p.toml"));
        assert_eq!(resolve("dir/p", home, None).unwrap(), Path::new("dir/p"));
        assert_eq!(resolve("/etc/p", home, None).unwrap(), Path::new("/etc/p"));
    }

    #[test]
    fn resolve_rejects_names_that_could_escape() {
        for bad in ["..", ".hidden", "Time", "a b", ""] {
            assert!(
                matches!(
                    resolve(bad, Path::new("/h"), None),
                    Err(PolicyError::BadPolicyName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn accept_weaker_takes_only_the_scopes_a_kernel_may_lack() {
        let p = parse(
            "name = \"x\"\n[kernel]\naccept_weaker = [\"scope.signal\", \"scope.abstract_unix_socket\"]\n",
        )
        .unwrap();
        assert_eq!(
            p.kernel.accept_weaker,
            vec![Class::ScopeSignal, Class::ScopeAbstractUnixSocket]
        );
        assert!(parse("name = \"x\"\n")
            .unwrap()
            .kernel
            .accept_weaker
            .is_empty());
        assert_err(
            "name = \"x\"\n[kernel]\naccept_weaker = [\"scope.signals\"]\n",
            3,
            18,
            &["kernel.accept_weaker", "scope.abstract_unix_socket"],
        );
        // Held on every kernel a launch goes on: nothing to accept.
        assert_err(
            "name = \"x\"\n[kernel]\naccept_weaker = [\"fs.truncate\"]\n",
            3,
            18,
            &["not a guarantee a server may run without"],
        );
    }

    #[test]
    fn shipped_policies_parse() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"));
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let p = Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    Some(p.name.as_str()),
                    path.file_stem().and_then(|s| s.to_str())
                );
                seen.push(p.name);
            }
        }
        // Every file is parsed; these must be among them (the integration
        // tests run the first six, the last two are reviewed templates).
        for name in [
            "time",
            "filesystem",
            "everything",
            "git",
            "fetch",
            "memory",
            "github",
            "postgres",
        ] {
            assert!(
                seen.iter().any(|s| s == name),
                "policies/{name}.toml missing from {} (found {seen:?})",
                dir.display()
            );
        }
    }
}
