//! Landlock sandbox for a server, built from the policy's allow-lists.
//!
//! The helper builds the ruleset in two steps: [`prepare`] runs while the
//! helper is still root, but opens every rule path with `O_PATH` *as the
//! user* ([`super::reach`]), so a path the user cannot reach gets no rule
//! (it is skipped and reported like a missing one), and
//! [`PreparedSandbox::restrict_self`] runs after the privilege drop, right
//! before `execve`, so the server's very first instruction is confined.
//!
//! What is handled (denied unless a rule allows it):
//! - filesystem: every access right of [`TARGET_ABI`]; `read` paths get
//!   ReadFile/ReadDir, `exec` paths add Execute, `write` paths get read plus
//!   all write rights except creating device nodes;
//! - network (ABI 4+): TCP bind, and TCP connect unless the spec leaves it
//!   to the eBPF layer (`connect_tcp: None`), allowed per port;
//! - scopes (ABI 6+): abstract Unix sockets and signals outside the sandbox.
//!
//! Compatibility is best effort: on an older kernel the missing features are
//! listed in [`LandlockReport::unenforced`] (the eBPF layer still enforces
//! egress by address). The one hard requirement is filesystem confinement
//! when the policy has a `[filesystem]` section: no Landlock at all, or a
//! ruleset the kernel did not enforce, refuses the launch.

use std::{os::fd::OwnedFd, path::PathBuf};

use landlock::{
    make_bitflags, Access, AccessFs, AccessNet, BitFlags, NetPort, PathBeneath, RestrictionStatus,
    Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetError, RulesetStatus, Scope,
    ABI,
};
use nix::{
    errno::Errno,
    fcntl::OFlag,
    sys::stat::{fstat, SFlag},
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{
    reach::{is_missing, unreachable_reason, ReachError, UserFs},
    SandboxSpec,
};

/// The Landlock ABI whose access rights we handle.
///
/// Pinned rather than "newest the crate knows": ABI 9 adds `ResolveUnix`
/// (connecting to pathname Unix sockets) and ABI 10 adds UDP rights, and the
/// policy format has no vocabulary for either yet. Handling them would make
/// the same policy deny syslog/DNS sockets only on newer kernels. Raise this
/// together with the policy format.
pub const TARGET_ABI: ABI = ABI::V6;

/// `LANDLOCK_CREATE_RULESET_VERSION` from `<linux/landlock.h>` (libc lacks it).
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

/// Most Landlock port rules one launch may add (connect + bind together).
pub const MAX_PORT_RULES: usize = 65536;

/// Rights granted beneath a `read` path.
const READ: BitFlags<AccessFs> = make_bitflags!(AccessFs::{ReadFile | ReadDir});

/// Rights granted beneath an `exec` path: shared libraries must be readable
/// (mmap) as well as executable, and directories listable for lookups.
const EXEC: BitFlags<AccessFs> = make_bitflags!(AccessFs::{Execute | ReadFile | ReadDir});

/// Rights granted beneath a `write` path, on top of [`READ`]. MakeChar and
/// MakeBlock are handled but never granted: servers do not create devices.
const WRITE: BitFlags<AccessFs> = make_bitflags!(AccessFs::{
    WriteFile | Truncate | MakeReg | MakeDir | MakeSym | MakeFifo | MakeSock
    | RemoveFile | RemoveDir | Refer | IoctlDev
});

/// Of the above, the rights that apply to a non-directory; the kernel
/// rejects directory rights on a file rule with EINVAL.
const FILE_RIGHTS: BitFlags<AccessFs> =
    make_bitflags!(AccessFs::{ReadFile | WriteFile | Execute | Truncate | IoctlDev});

/// Errors while building or applying the Landlock ruleset.
#[derive(Debug, Error)]
pub enum SandboxError {
    /// The policy needs filesystem confinement and the kernel has no Landlock.
    #[error("landlock: kernel lacks ABI v1 required by [filesystem] rules ({reason})")]
    Unavailable {
        /// Why Landlock is missing.
        reason: &'static str,
    },
    /// A rule path is relative; it would resolve against the daemon's cwd.
    #[error("landlock: {list} path {path} is not absolute")]
    RelativePath {
        /// Which allow-list.
        list: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A rule path exists but cannot be opened.
    #[error("landlock: cannot open {list} path {path}: {errno}")]
    OpenPath {
        /// Which allow-list.
        list: &'static str,
        /// The path.
        path: PathBuf,
        /// Error from open(2)/fstat(2).
        errno: Errno,
    },
    /// A port range has its bounds reversed.
    #[error("landlock: {list} port range {lo}-{hi} is empty (start above end)")]
    InvalidPortRange {
        /// Which allow-list.
        list: &'static str,
        /// Range start.
        lo: u16,
        /// Range end.
        hi: u16,
    },
    /// The port allow-lists expand to more rules than we are willing to add.
    #[error("landlock: TCP port allow-lists expand to {count} rules, more than the {MAX_PORT_RULES} allowed")]
    TooManyPortRules {
        /// Total connect + bind rules.
        count: usize,
    },
    /// The landlock crate refused the ruleset.
    #[error("landlock: cannot build ruleset: {source}")]
    Build {
        /// Underlying error.
        source: RulesetError,
    },
    /// The rule paths could not be opened as the user.
    #[error("landlock: {0}")]
    Reach(#[from] ReachError),
    /// `landlock_restrict_self` failed.
    #[error("landlock: cannot enforce ruleset: {source}")]
    Restrict {
        /// Underlying error.
        source: RulesetError,
    },
    /// The kernel accepted nothing although the policy requires it.
    #[error("landlock: the kernel did not enforce the ruleset, but [filesystem] rules require it")]
    NotEnforced,
}

impl From<RulesetError> for SandboxError {
    fn from(source: RulesetError) -> Self {
        Self::Build { source }
    }
}

/// How completely the kernel enforced the ruleset (mirrors
/// [`RulesetStatus`], which is not serializable).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Every handled right is enforced.
    FullyEnforced,
    /// Some handled rights are missing from the kernel.
    PartiallyEnforced,
    /// Nothing is enforced.
    NotEnforced,
}

impl From<&RulesetStatus> for Enforcement {
    fn from(status: &RulesetStatus) -> Self {
        match status {
            RulesetStatus::FullyEnforced => Self::FullyEnforced,
            RulesetStatus::PartiallyEnforced => Self::PartiallyEnforced,
            RulesetStatus::NotEnforced => Self::NotEnforced,
        }
    }
}

/// A policy path that got no rule because it does not exist or the user
/// cannot reach it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SkippedPath {
    /// Which allow-list (`read`, `write`, `exec`).
    pub list: String,
    /// The path as given in the spec.
    pub path: PathBuf,
    /// Why it was skipped (e.g. `ENOENT: No such file or directory`, or
    /// `EACCES: Permission denied (uid 1000 cannot reach it)`).
    pub reason: String,
}

/// How Landlock restricts one kind of TCP operation.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum PortRestriction {
    /// The spec leaves this operation to another layer (eBPF).
    NotHandled,
    /// The allow-list covers every port, so the right is not handled.
    AllPorts,
    /// Only `count` listed ports are allowed (0 = none).
    Ports {
        /// Number of port rules added.
        count: usize,
    },
}

/// What Landlock achieved for one launch; part of the launch status.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LandlockReport {
    /// Kernel's Landlock ABI, `None` without Landlock.
    pub abi: Option<u32>,
    /// The ABI whose rights were requested ([`TARGET_ABI`]).
    pub target_abi: u32,
    /// Enforcement the kernel reported from `landlock_restrict_self`.
    pub status: Enforcement,
    /// Whether `no_new_privs` is set.
    pub no_new_privs: bool,
    /// Policy paths that got no rule.
    pub skipped_paths: Vec<SkippedPath>,
    /// Requested features the kernel cannot enforce, e.g. `net.tcp (ABI 4)`.
    pub unenforced: Vec<String>,
    /// TCP connect restriction.
    pub connect_tcp: PortRestriction,
    /// TCP bind restriction.
    pub bind_tcp: PortRestriction,
    /// The kernel writes an audit record for each of the server's denials
    /// (ABI 7+: `LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON` took effect); the
    /// daemon reads them while audit is enabled.
    #[serde(default)]
    pub log_denials: bool,
}

impl LandlockReport {
    /// The report of a learning launch: nothing restricted, by request.
    pub fn learning() -> LandlockReport {
        LandlockReport {
            abi: probe_landlock_abi(),
            target_abi: TARGET_ABI as u32,
            status: Enforcement::NotEnforced,
            no_new_privs: true,
            skipped_paths: Vec::new(),
            unenforced: vec!["learning mode: Landlock not applied".into()],
            connect_tcp: PortRestriction::NotHandled,
            bind_tcp: PortRestriction::NotHandled,
            log_denials: false,
        }
    }
}

/// A ruleset built (as root) and ready to be enforced (as the user).
#[derive(Debug)]
pub struct PreparedSandbox {
    ruleset: RulesetCreated,
    require_fs: bool,
    report: LandlockReport,
}

/// The kernel's Landlock ABI version, or `None` when Landlock is not built
/// in or not enabled. Used by the daemon's startup probe.
pub fn probe_landlock_abi() -> Option<u32> {
    probe().ok()
}

fn probe() -> Result<u32, Errno> {
    // SAFETY: with a NULL attr, size 0 and the VERSION flag the syscall only
    // returns the ABI version; it reads no memory and creates no fd.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        u32::try_from(ret).map_err(|_| Errno::EOVERFLOW)
    }
}

/// Requested features that a kernel with Landlock ABI `abi` cannot enforce.
fn unenforced_features(abi: Option<u32>, handles_net: bool) -> Vec<String> {
    let Some(abi) = abi else {
        return vec!["landlock (not available)".to_owned()];
    };
    let mut missing = Vec::new();
    let mut need = |min: u32, feature: &str| {
        if abi < min {
            missing.push(format!("{feature} (ABI {min})"));
        }
    };
    need(2, "fs.refer");
    need(3, "fs.truncate");
    if handles_net {
        need(4, "net.tcp");
    }
    need(5, "fs.ioctl_dev");
    need(6, "scope.abstract_unix_socket");
    need(6, "scope.signal");
    missing
}

/// Ports allowed by a list of inclusive ranges.
#[derive(Debug, PartialEq, Eq)]
enum PortSet {
    /// The spec leaves this operation to another layer.
    NotHandled,
    /// Every port 1–65535 is allowed.
    All,
    /// Exactly these ports, sorted and deduplicated.
    Some(Vec<u16>),
}

impl PortSet {
    fn restriction(&self) -> PortRestriction {
        match self {
            Self::NotHandled => PortRestriction::NotHandled,
            Self::All => PortRestriction::AllPorts,
            Self::Some(ports) => PortRestriction::Ports { count: ports.len() },
        }
    }
}

fn expand_ports(ranges: &[(u16, u16)], list: &'static str) -> Result<PortSet, SandboxError> {
    let mut allowed = vec![false; 1 << 16];
    for &(lo, hi) in ranges {
        if lo > hi {
            return Err(SandboxError::InvalidPortRange { list, hi, lo });
        }
        allowed[usize::from(lo)..=usize::from(hi)].fill(true);
    }
    // Port 0 is not a real destination; covering 1-65535 means "anything".
    if allowed[1..].iter().all(|&a| a) {
        return Ok(PortSet::All);
    }
    Ok(PortSet::Some(
        (0..=u16::MAX)
            .filter(|&p| allowed[usize::from(p)])
            .collect(),
    ))
}

/// One rule path as opened by the user: its list, the rights that list
/// grants, the path, and the fd with whether it is a directory (or why it
/// gets no rule).
type RulePath = (
    &'static str,
    BitFlags<AccessFs>,
    PathBuf,
    Result<(OwnedFd, bool), Errno>,
);

/// Opens every rule path of `spec` with `O_PATH` as `user`, in list order
/// (read, write, exec). Errors other than "missing" or "not reachable by
/// the user" refuse the launch.
fn open_rule_paths(spec: &SandboxSpec, user: &UserFs) -> Result<Vec<RulePath>, SandboxError> {
    let named: Vec<(&'static str, BitFlags<AccessFs>, &PathBuf)> = [
        ("read", READ, &spec.read),
        ("write", READ | WRITE, &spec.write),
        ("exec", EXEC, &spec.exec),
    ]
    .into_iter()
    .flat_map(|(list, access, paths)| paths.iter().map(move |p| (list, access, p)))
    .collect();
    if let Some((list, _, path)) = named.iter().find(|(_, _, p)| !p.is_absolute()) {
        return Err(SandboxError::RelativePath {
            list,
            path: (*path).clone(),
        });
    }
    let paths: Vec<PathBuf> = named.iter().map(|(_, _, p)| (*p).clone()).collect();
    let opened = user.open_paths(&paths, OFlag::empty())?;
    named
        .into_iter()
        .zip(opened)
        .map(|((list, access, path), fd)| {
            let rule = fd.and_then(|fd| {
                let stat = fstat(&fd)?;
                let kind = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
                Ok((fd, kind == SFlag::S_IFDIR))
            });
            match rule {
                Err(errno) if !is_missing(errno) && !matches!(errno, Errno::EACCES) => {
                    Err(SandboxError::OpenPath {
                        list,
                        path: path.clone(),
                        errno,
                    })
                }
                rule => Ok((list, access, path.clone(), rule)),
            }
        })
        .collect()
}

/// Builds the ruleset for `spec`, opening its paths as `user`. Runs as
/// root, before the privilege drop.
pub fn prepare(spec: &SandboxSpec, user: &UserFs) -> Result<PreparedSandbox, SandboxError> {
    let abi = match probe() {
        Ok(abi) => Some(abi),
        Err(errno) if spec.require_fs => {
            return Err(SandboxError::Unavailable {
                reason: match errno {
                    Errno::EOPNOTSUPP => {
                        "Landlock is built in but disabled at boot: add `landlock` to the `lsm=` kernel parameter"
                    }
                    Errno::ENOSYS => "the kernel is built without CONFIG_SECURITY_LANDLOCK",
                    _ => "landlock_create_ruleset failed unexpectedly",
                },
            });
        }
        Err(_) => None,
    };

    let connect = match &spec.connect_tcp {
        Some(ranges) => expand_ports(ranges, "connect_tcp")?,
        None => PortSet::NotHandled,
    };
    let bind = match &spec.bind_tcp {
        Some(ranges) => expand_ports(ranges, "bind_tcp")?,
        None => PortSet::NotHandled,
    };
    let rule_count = [&connect, &bind]
        .iter()
        .map(|set| match set {
            PortSet::NotHandled | PortSet::All => 0,
            PortSet::Some(ports) => ports.len(),
        })
        .sum::<usize>();
    if rule_count > MAX_PORT_RULES {
        return Err(SandboxError::TooManyPortRules { count: rule_count });
    }

    let mut net_access = BitFlags::<AccessNet>::EMPTY;
    if matches!(connect, PortSet::Some(_)) {
        net_access |= AccessNet::ConnectTcp;
    }
    if matches!(bind, PortSet::Some(_)) {
        net_access |= AccessNet::BindTcp;
    }
    // Never wider than what the target ABI defines.
    net_access &= AccessNet::from_all(TARGET_ABI);

    let mut ruleset = Ruleset::default().handle_access(AccessFs::from_all(TARGET_ABI))?;
    if !net_access.is_empty() {
        ruleset = ruleset.handle_access(net_access)?;
    }
    // The launcher restricts itself and then execs the server: without
    // LOG_NEW_EXEC_ON the kernel logs only the launcher's own denials
    // (before the exec) and none of the server's. The launcher's are kept
    // (no LOG_SAME_EXEC_OFF): after restrict_self it only changes
    // directory, looks the program up and execs it, so its one possible
    // denial is the server's own program not being executable under the
    // policy, which the log must show. Dropped on kernels before ABI 7.
    let mut ruleset = ruleset
        .scope(Scope::from_all(TARGET_ABI))?
        .create()?
        .log_new_exec(true)?;

    let mut skipped_paths = Vec::new();
    for (list, access, path, rule) in open_rule_paths(spec, user)? {
        match rule {
            Ok((fd, is_dir)) => {
                let access = if is_dir { access } else { access & FILE_RIGHTS };
                // Same inode in several lists: the kernel ORs the rights.
                ruleset = ruleset.add_rule(PathBeneath::new(fd, access))?;
            }
            Err(errno) => skipped_paths.push(SkippedPath {
                list: list.to_owned(),
                path,
                reason: unreachable_reason(errno, user.uid),
            }),
        }
    }

    for (set, access) in [
        (&connect, AccessNet::ConnectTcp),
        (&bind, AccessNet::BindTcp),
    ] {
        if let PortSet::Some(ports) = set {
            for &port in ports {
                ruleset = ruleset.add_rule(NetPort::new(port, access))?;
            }
        }
    }

    Ok(PreparedSandbox {
        ruleset,
        require_fs: spec.require_fs,
        report: LandlockReport {
            abi,
            target_abi: TARGET_ABI as u32,
            status: Enforcement::NotEnforced,
            no_new_privs: false,
            skipped_paths,
            unenforced: unenforced_features(abi, !net_access.is_empty()),
            connect_tcp: connect.restriction(),
            bind_tcp: bind.restriction(),
            log_denials: false,
        },
    })
}

impl PreparedSandbox {
    /// The report as it will be after enforcement, minus the status fields.
    pub fn report(&self) -> &LandlockReport {
        &self.report
    }

    /// Enforces the ruleset on the calling thread (and everything it
    /// executes). Runs after the privilege drop; sets `no_new_privs`.
    pub fn restrict_self(self) -> Result<LandlockReport, SandboxError> {
        let status: RestrictionStatus = self
            .ruleset
            .restrict_self()
            .map_err(|source| SandboxError::Restrict { source })?;
        let mut report = self.report;
        report.status = Enforcement::from(&status.ruleset);
        report.no_new_privs = status.no_new_privs;
        report.log_denials = status.log_new_exec;
        if self.require_fs && report.status == Enforcement::NotEnforced {
            return Err(SandboxError::NotEnforced);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        fs, io,
        net::{Ipv4Addr, TcpListener, TcpStream},
        os::{
            linux::net::SocketAddrExt,
            unix::{
                fs::PermissionsExt,
                net::{SocketAddr, UnixListener, UnixStream},
            },
        },
        path::Path,
        process::Command,
    };

    use super::*;

    /// Scratch directory tree, removed on drop:
    /// `ro/file.txt`, `rw/`, `denied/secret.txt`, `single.txt`, `sibling.txt`.
    struct TempTree(PathBuf);

    impl TempTree {
        fn new(tag: &str) -> Self {
            let root =
                std::env::temp_dir().join(format!("mcpguard-sandbox-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            for dir in ["ro", "rw", "denied"] {
                fs::create_dir_all(root.join(dir)).unwrap();
            }
            fs::write(root.join("ro/file.txt"), "readable").unwrap();
            fs::write(root.join("denied/secret.txt"), "secret").unwrap();
            fs::write(root.join("single.txt"), "single").unwrap();
            fs::write(root.join("sibling.txt"), "sibling").unwrap();
            Self(root)
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.0.join(rel)
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Runs `f` on a fresh thread confined by `spec`. Landlock (and
    /// no_new_privs) restrict only the calling thread, so the rest of the
    /// test process stays unconfined.
    fn confined<T: Send + 'static>(
        spec: SandboxSpec,
        f: impl FnOnce(&LandlockReport) -> T + Send + 'static,
    ) -> T {
        std::thread::spawn(move || {
            let report = prepare(&spec, &nobody())
                .expect("prepare sandbox")
                .restrict_self()
                .expect("restrict");
            f(&report)
        })
        .join()
        .expect("confined thread panicked")
    }

    /// Whom the tests open rule paths as: the trees are world-traversable.
    fn nobody() -> UserFs {
        UserFs {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        }
    }

    fn errno(result: io::Result<impl Sized>) -> Option<i32> {
        result.err().and_then(|e| e.raw_os_error())
    }

    fn kernel_abi() -> u32 {
        probe_landlock_abi().expect("this kernel has Landlock")
    }

    #[test]
    fn probe_reports_the_kernel_abi() {
        assert!(kernel_abi() >= 1);
    }

    #[test]
    fn filesystem_lists_allow_only_what_they_name() {
        let tree = TempTree::new("fs");
        let spec = SandboxSpec {
            read: vec![tree.path("ro")],
            write: vec![tree.path("rw")],
            require_fs: true,
            ..SandboxSpec::default()
        };
        let (ro, rw, denied) = (tree.path("ro"), tree.path("rw"), tree.path("denied"));
        let report = confined(spec, move |report| {
            assert_eq!(fs::read_to_string(ro.join("file.txt")).unwrap(), "readable");
            assert!(fs::read_dir(&ro).is_ok(), "read list allows listing");
            assert_eq!(
                errno(fs::read_to_string(denied.join("secret.txt"))),
                Some(libc::EACCES),
                "unlisted file is denied"
            );
            assert_eq!(errno(fs::read_dir(&denied)), Some(libc::EACCES));
            assert_eq!(
                errno(fs::write(ro.join("new.txt"), "x")),
                Some(libc::EACCES),
                "read list does not allow creating files"
            );
            fs::write(rw.join("new.txt"), "x").expect("write list allows creating files");
            fs::create_dir(rw.join("sub")).expect("write list allows mkdir");
            fs::remove_file(rw.join("new.txt")).expect("write list allows unlink");
            report.clone()
        });
        assert_eq!(report.abi, Some(kernel_abi()));
        assert!(report.no_new_privs);
        assert!(report.skipped_paths.is_empty());
        if kernel_abi() >= 6 {
            assert_eq!(report.status, Enforcement::FullyEnforced);
            assert!(report.unenforced.is_empty(), "{:?}", report.unenforced);
        }
    }

    #[test]
    fn a_file_rule_allows_that_file_only_and_stays_fully_enforced() {
        let tree = TempTree::new("file");
        let spec = SandboxSpec {
            read: vec![tree.path("single.txt")],
            write: vec![tree.path("ro/file.txt")],
            require_fs: true,
            ..SandboxSpec::default()
        };
        let (single, sibling) = (tree.path("single.txt"), tree.path("sibling.txt"));
        let report = confined(spec, move |report| {
            assert_eq!(fs::read_to_string(&single).unwrap(), "single");
            assert_eq!(errno(fs::read_to_string(&sibling)), Some(libc::EACCES));
            report.clone()
        });
        // Directory-only rights were stripped for the file rules instead of
        // being dropped by best-effort compatibility.
        if kernel_abi() >= 6 {
            assert_eq!(report.status, Enforcement::FullyEnforced);
        }
        // The server's denials after exec reach the kernel's audit log
        // wherever the kernel can log them.
        assert_eq!(report.log_denials, kernel_abi() >= 7);
    }

    #[test]
    fn exec_list_controls_execution() {
        let libs: Vec<PathBuf> = ["/usr", "/lib", "/lib64", "/bin"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let allowed = SandboxSpec {
            exec: libs.clone(),
            require_fs: true,
            ..SandboxSpec::default()
        };
        let status = confined(allowed, |_| Command::new("/usr/bin/true").status());
        assert!(status.expect("exec allowed").success());

        let read_only = SandboxSpec {
            read: libs,
            require_fs: true,
            ..SandboxSpec::default()
        };
        let result = confined(read_only, |_| Command::new("/usr/bin/true").status());
        assert_eq!(errno(result), Some(libc::EACCES));
    }

    #[test]
    fn missing_paths_are_skipped_and_reported() {
        let spec = SandboxSpec {
            read: vec![PathBuf::from("/nonexistent/mcpguard-test")],
            exec: vec![PathBuf::from("/etc/passwd/not-a-dir")],
            require_fs: true,
            ..SandboxSpec::default()
        };
        let report = confined(spec, |report| report.clone());
        let skipped: Vec<(&str, &Path)> = report
            .skipped_paths
            .iter()
            .map(|s| (s.list.as_str(), s.path.as_path()))
            .collect();
        assert_eq!(
            skipped,
            vec![
                ("read", Path::new("/nonexistent/mcpguard-test")),
                ("exec", Path::new("/etc/passwd/not-a-dir")),
            ]
        );
    }

    #[test]
    fn paths_the_user_cannot_reach_get_no_rule_and_are_reported() {
        let tree = TempTree::new("reach");
        let private = tree.path("private");
        fs::create_dir(&private).unwrap();
        fs::write(private.join("open.txt"), "world-readable").unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        let file = private.join("open.txt");
        let spec = SandboxSpec {
            read: vec![tree.path("ro"), file.clone()],
            require_fs: true,
            ..SandboxSpec::default()
        };
        let report = confined(spec, move |report| {
            // Root (this thread's real identity) still gets nothing there:
            // the rule was never added.
            assert_eq!(errno(fs::read_to_string(&file)), Some(libc::EACCES));
            report.clone()
        });
        assert_eq!(
            report.skipped_paths,
            vec![SkippedPath {
                list: "read".into(),
                path: private.join("open.txt"),
                reason: "EACCES: Permission denied (uid 65534 cannot reach it)".into(),
            }]
        );
    }

    #[test]
    fn relative_rule_paths_are_rejected() {
        let spec = SandboxSpec {
            write: vec![PathBuf::from("tmp")],
            ..SandboxSpec::default()
        };
        let err = prepare(&spec, &nobody()).unwrap_err();
        assert!(
            matches!(err, SandboxError::RelativePath { list: "write", .. }),
            "{err}"
        );
    }

    #[test]
    fn tcp_connect_is_limited_to_listed_ports() {
        let allowed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let other = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let (allowed_port, other_port) = (
            allowed.local_addr().unwrap().port(),
            other.local_addr().unwrap().port(),
        );
        if kernel_abi() < 4 {
            return;
        }
        let spec = SandboxSpec {
            connect_tcp: Some(vec![(allowed_port, allowed_port)]),
            ..SandboxSpec::default()
        };
        let report = confined(spec, move |report| {
            TcpStream::connect((Ipv4Addr::LOCALHOST, allowed_port)).expect("listed port");
            assert_eq!(
                errno(TcpStream::connect((Ipv4Addr::LOCALHOST, other_port))),
                Some(libc::EACCES)
            );
            report.clone()
        });
        assert_eq!(report.connect_tcp, PortRestriction::Ports { count: 1 });
        assert_eq!(report.bind_tcp, PortRestriction::NotHandled);
    }

    #[test]
    fn tcp_bind_is_limited_to_listed_ports() {
        if kernel_abi() < 4 {
            return;
        }
        let spec = SandboxSpec {
            bind_tcp: Some(vec![(0, 0)]),
            ..SandboxSpec::default()
        };
        confined(spec, |_| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("ephemeral bind allowed");
            assert_eq!(
                errno(TcpListener::bind((Ipv4Addr::LOCALHOST, 18_765))),
                Some(libc::EACCES)
            );
        });
    }

    #[test]
    fn connect_left_to_ebpf_is_not_handled() {
        let other = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = other.local_addr().unwrap().port();
        let spec = SandboxSpec {
            connect_tcp: None,
            bind_tcp: Some(vec![]),
            ..SandboxSpec::default()
        };
        let report = confined(spec, move |report| {
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect not handled");
            report.clone()
        });
        assert_eq!(report.connect_tcp, PortRestriction::NotHandled);
        if kernel_abi() >= 4 {
            assert_eq!(report.bind_tcp, PortRestriction::Ports { count: 0 });
        }
    }

    #[test]
    fn all_ports_leave_the_right_unhandled() {
        let spec = SandboxSpec {
            connect_tcp: Some(vec![(1, 30_000), (30_001, 65_535)]),
            ..SandboxSpec::default()
        };
        let report = prepare(&spec, &nobody()).unwrap().report().clone();
        assert_eq!(report.connect_tcp, PortRestriction::AllPorts);
    }

    #[test]
    fn signals_and_abstract_sockets_outside_the_sandbox_are_scoped() {
        if kernel_abi() < 6 {
            return;
        }
        let mut sleeper = Command::new("sleep").arg("300").spawn().unwrap();
        let pid = nix::unistd::Pid::from_raw(sleeper.id() as i32);
        let name = format!("mcpguard-scope-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let _listener = UnixListener::bind_addr(&addr).unwrap();
        let (kill_result, connect_result) = confined(SandboxSpec::default(), move |_| {
            let kill_result = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            (kill_result, errno(UnixStream::connect_addr(&addr)))
        });
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert_eq!(kill_result, Err(Errno::EPERM));
        assert_eq!(connect_result, Some(libc::EPERM));
    }

    #[test]
    fn port_ranges_expand_merge_and_validate() {
        assert_eq!(
            expand_ports(&[(443, 443), (8000, 8002), (8001, 8003)], "connect_tcp").unwrap(),
            PortSet::Some(vec![443, 8000, 8001, 8002, 8003])
        );
        assert_eq!(
            expand_ports(&[], "bind_tcp").unwrap(),
            PortSet::Some(vec![])
        );
        assert_eq!(
            expand_ports(&[(1, 65_535)], "connect_tcp").unwrap(),
            PortSet::All
        );
        assert!(matches!(
            expand_ports(&[(10, 9)], "bind_tcp"),
            Err(SandboxError::InvalidPortRange {
                list: "bind_tcp",
                lo: 10,
                hi: 9
            })
        ));
    }

    #[test]
    fn too_many_port_rules_are_refused() {
        let spec = SandboxSpec {
            connect_tcp: Some(vec![(1, 65_534)]),
            bind_tcp: Some(vec![(1, 65_534)]),
            ..SandboxSpec::default()
        };
        let err = prepare(&spec, &nobody()).unwrap_err();
        assert!(
            matches!(err, SandboxError::TooManyPortRules { count: 131_068 }),
            "{err}"
        );
    }

    #[test]
    fn unenforced_features_follow_the_kernel_abi() {
        assert_eq!(
            unenforced_features(None, true),
            vec!["landlock (not available)"]
        );
        assert_eq!(
            unenforced_features(Some(3), true),
            vec![
                "net.tcp (ABI 4)",
                "fs.ioctl_dev (ABI 5)",
                "scope.abstract_unix_socket (ABI 6)",
                "scope.signal (ABI 6)"
            ]
        );
        assert!(!unenforced_features(Some(3), false)
            .iter()
            .any(|f| f.starts_with("net.")));
        assert!(unenforced_features(Some(6), true).is_empty());
        assert!(unenforced_features(Some(7), true).is_empty());
    }

    #[test]
    fn report_serializes_with_snake_case_status() {
        let report = LandlockReport {
            abi: Some(7),
            target_abi: 6,
            status: Enforcement::FullyEnforced,
            no_new_privs: true,
            skipped_paths: vec![],
            unenforced: vec![],
            connect_tcp: PortRestriction::Ports { count: 2 },
            bind_tcp: PortRestriction::AllPorts,
            log_denials: true,
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["log_denials"], true);
        assert_eq!(json["status"], "fully_enforced");
        assert_eq!(
            json["connect_tcp"],
            serde_json::json!({"mode": "ports", "count": 2})
        );
        assert_eq!(json["bind_tcp"], serde_json::json!({"mode": "all_ports"}));
    }
}
