//! How a policy becomes one launch, decided without I/O: from the policy,
//! the caller, the request and what the session set up or found, the map
//! entries to write, the resolver's rules, the launcher's [`LaunchSpec`]
//! and the tap's rules; and, once the server runs, the launch record's
//! [`LaunchLayers`].
//!
//! Everything here is a pure function of plain data, so the translation
//! is tested as a table without root. Reading secrets and the host's
//! files, creating the cgroup, starting the resolver and writing the maps
//! are the session's ([`super::session`]); it feeds their results in.

use std::{collections::HashSet, path::PathBuf};

use mcpguard_common::policy::{
    NetKey, PortSet, ServerPolicy, FLAG_AUDIT_NET, FLAG_AUDIT_OPEN, FLAG_AUDIT_PROC, FLAG_COMPLAIN,
    FLAG_FILES_ALL, FLAG_FILES_CALLS, FLAG_SOCK_ICMP, FLAG_SOCK_RAW,
};
use serde::Serialize;
use thiserror::Error;

use crate::{
    ebpf::Layers,
    kernel::coverage::{self, Facts},
    launch::{
        mounts::{MountReport, MountSpec},
        persist::{PersistReport, PersistSpec},
        seccomp::FenceReport,
        LandlockReport, LaunchSpec, LaunchStatus, SandboxSpec,
    },
    policy::{
        self, audit::FilesLevel, mcp::Mcp, sockets::SocketRules, HostRule, Limits, NetRule,
        OnTaint, Policy, PolicyError, SocketKind, Tools,
    },
};

/// Why a launch cannot be planned: refused before anything exists, or a
/// policy the kernel maps cannot hold.
#[derive(Debug, Error)]
pub enum PlanError {
    #[error("refusing to launch a server as root: run `mcpguard run` as the user the server should run as")]
    Root,
    #[error("empty server command: pass it after `--`")]
    EmptyArgv,
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("refusing to launch: the eBPF egress layer is not active on this kernel ({0}); without it the server's network could not be confined")]
    NoEgress(String),
    #[error(
        "refusing to launch: {}; to run with the weaker guarantee, add `accept_weaker = [{}]` \
         to the policy's [kernel] section",
        .rows.iter().map(|r| format!("{}: {}", r.class, r.detail)).collect::<Vec<_>>().join("; "),
        .rows.iter().map(|r| format!("\"{}\"", r.class)).collect::<Vec<_>>().join(", ")
    )]
    Weaker { rows: Vec<coverage::Row> },
}

pub use super::proto::LaunchRequest;

/// The daemon's state a request is admitted against.
pub struct Daemon<'a> {
    pub layers: &'a Layers,
    pub shutting_down: bool,
}

/// Who asked: the kernel's word for the ids, the passwd and group
/// databases' for the rest.
#[derive(Clone, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// Home directory, for `~` in the policy.
    pub home: PathBuf,
    /// Supplementary groups, with their names where the group database
    /// has one.
    pub groups: Vec<(u32, Option<String>)>,
}

/// What the session made or read for this launch before planning it.
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    /// The server's (created) cgroup.
    pub cgroup_id: u64,
    pub cgroup_path: PathBuf,
    /// Its v1 limit cgroups (hybrid hosts).
    pub limit_cgroups: Vec<PathBuf>,
    /// The runtime baseline's read paths that exist on this host
    /// ([`policy::baseline::read_paths`]).
    pub baseline_read: Vec<PathBuf>,
    /// The baseline's cgroup probes for this server's cgroups
    /// ([`policy::baseline::cgroup_paths`]).
    pub baseline_cgroups: Vec<PathBuf>,
    /// Addresses `/etc/hosts` gives allowed names (none when learning:
    /// every name resolves then).
    pub hosts_file: Vec<NetRule>,
    /// The `[secrets]` values, in policy order.
    pub secrets: Vec<(String, Vec<u8>)>,
}

/// Everything a launch writes and hands on, decided.
#[derive(Debug)]
pub struct LaunchPlan {
    /// The eBPF layer's entries for the server.
    pub maps: MapPlan,
    /// The server's resolver.
    pub dns: DnsPlan,
    /// What the launcher gets: the filtered environment and groups, the
    /// resolved filesystem lists, the fences.
    pub spec: LaunchSpec,
    /// The tap's `[tools]` rules.
    pub tools: Tools,
    /// The tap's `[mcp]` rules (server-to-client requests).
    pub mcp: Mcp,
}

/// The server's entries in the eBPF maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapPlan {
    /// `SERVERS` flags (`FLAG_*`).
    pub flags: u32,
    /// `NET_ALLOW` entries: prefix length, key, ports.
    pub net: Vec<(u32, NetKey, PortSet)>,
    /// `BIND_PORTS` value.
    pub bind: PortSet,
}

impl MapPlan {
    /// The `SERVERS` value once the launch number and the resolver's port
    /// are known.
    pub fn server(&self, launch_id: u64, dns_port: u16) -> ServerPolicy {
        ServerPolicy {
            launch_id,
            flags: self.flags,
            dns_port,
            _pad: 0,
        }
    }
}

/// The rules of the server's resolver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsPlan {
    /// Names it answers.
    pub hosts: Vec<HostRule>,
    /// Address rules (answers inside them need no entry of their own).
    pub allow: Vec<NetRule>,
    /// The address rules the launch's entries are compiled from (`allow`
    /// and the hosts file's), which per-call rules are folded with.
    pub installed: Vec<NetRule>,
    /// Whether loopback and other local answers may open addresses.
    pub allow_local_answers: bool,
    pub min_ttl: u32,
}

/// Checks a request against the daemon before anything exists, and parses
/// its policy.
pub fn admit(request: &LaunchRequest, uid: u32, daemon: &Daemon<'_>) -> Result<Policy, PlanError> {
    if uid == 0 {
        return Err(PlanError::Root);
    }
    if request.argv.is_empty() {
        return Err(PlanError::EmptyArgv);
    }
    if daemon.shutting_down {
        return Err(PlanError::ShuttingDown);
    }
    let policy = Policy::parse(
        &request.policy_text,
        std::path::Path::new(&request.policy_path),
    )?;
    // Egress and inbound (binds, listening sockets) are the eBPF layer's
    // alone: without it a launch would run unconfined on the network.
    if !daemon.layers.ebpf_egress || !daemon.layers.ebpf_inbound {
        return Err(PlanError::NoEgress(daemon.layers.missing.join("; ")));
    }
    Ok(policy)
}

/// What the guarantee table ([`coverage`]) needs from the daemon's
/// layers and the kernel's Landlock ABI.
pub fn kernel_facts(layers: &Layers, landlock_abi: Option<u32>) -> Facts {
    Facts {
        landlock_abi,
        ebpf_network: layers.ebpf_egress && layers.ebpf_inbound,
    }
}

/// Refuses a launch that would run without a guarantee this kernel cannot
/// hold and the policy's `[kernel] accept_weaker` does not name. Learning
/// enforces nothing, so it is never refused here.
pub fn check_guarantees(policy: &Policy, learn: bool, facts: Facts) -> Result<(), PlanError> {
    if learn {
        return Ok(());
    }
    let table = coverage::table(facts);
    let missing = coverage::unaccepted(&table, &policy.kernel.accept_weaker);
    if missing.is_empty() {
        return Ok(());
    }
    Err(PlanError::Weaker {
        rows: table
            .into_iter()
            .filter(|r| missing.contains(&r.class))
            .collect(),
    })
}

/// The launch of `request` under `policy` for `caller`.
pub fn plan(
    policy: &Policy,
    caller: &Caller,
    request: &LaunchRequest,
    prepared: &Prepared,
) -> Result<LaunchPlan, PlanError> {
    let learn = request.learn;
    Ok(LaunchPlan {
        maps: maps(policy, learn, prepared)?,
        dns: dns(policy, learn, prepared),
        spec: spec(policy, caller, request, prepared),
        // Learning enforces nothing, the tap included: no call waits for
        // a person, a flagged result is only recorded.
        tools: if learn {
            Tools {
                on_taint: OnTaint::Warn,
                ..Tools::default()
            }
        } else {
            policy.tools.clone()
        },
        mcp: if learn { Mcp::allow_all() } else { policy.mcp },
    })
}

/// The address rules the launch installs: allowed names that /etc/hosts
/// answers never reach the resolver.
fn installed(policy: &Policy, prepared: &Prepared) -> Vec<NetRule> {
    let mut allow = policy.network.allow.clone();
    allow.extend(prepared.hosts_file.iter().cloned());
    allow
}

fn maps(policy: &Policy, learn: bool, prepared: &Prepared) -> Result<MapPlan, PolicyError> {
    let net = policy::net::compile_allow(&installed(policy, prepared), prepared.cgroup_id)?
        .into_iter()
        .map(|e| (e.prefix_len, e.key, e.ports))
        .collect();
    // Checked when the policy was parsed.
    let bind = policy::net::bind_ports(&policy.network.bind).map_err(|count| {
        PolicyError::TooManyPortRanges {
            rule: "network.bind".into(),
            prefix: "any address".into(),
            count,
            max: mcpguard_common::limits::PORT_RANGES,
        }
    })?;
    Ok(MapPlan {
        flags: flags(policy, learn),
        net,
        bind,
    })
}

fn flags(policy: &Policy, learn: bool) -> u32 {
    let sockets = policy
        .network
        .sockets
        .iter()
        .map(|k| match k {
            SocketKind::Raw => FLAG_SOCK_RAW,
            SocketKind::Icmp => FLAG_SOCK_ICMP,
            // The launcher's seccomp filter decides these.
            _ => 0,
        })
        .fold(0, |a, b| a | b);
    let files = match files_level(policy, learn) {
        FilesLevel::Denied => 0,
        FilesLevel::Calls => FLAG_FILES_CALLS,
        FilesLevel::All => FLAG_FILES_ALL,
    };
    FLAG_AUDIT_OPEN
        | FLAG_AUDIT_PROC
        | FLAG_AUDIT_NET
        | if learn { FLAG_COMPLAIN } else { 0 }
        | files
        | sockets
}

/// The audit level a launch runs at: the policy's `[audit] files`, except
/// when learning, which needs every open.
pub fn files_level(policy: &Policy, learn: bool) -> FilesLevel {
    if learn {
        FilesLevel::All
    } else {
        policy.audit.files
    }
}

fn dns(policy: &Policy, learn: bool, prepared: &Prepared) -> DnsPlan {
    DnsPlan {
        hosts: if learn {
            // Learning: every name resolves, and is recorded.
            vec![policy::net::any_host()]
        } else {
            policy.network.hosts.clone()
        },
        allow: policy.network.allow.clone(),
        installed: installed(policy, prepared),
        // Learning: see what the server asks for, rebinding answers too.
        allow_local_answers: learn || policy.network.allow_local_answers,
        min_ttl: policy.network.min_ttl,
    }
}

fn spec(
    policy: &Policy,
    caller: &Caller,
    request: &LaunchRequest,
    prepared: &Prepared,
) -> LaunchSpec {
    let learn = request.learn;
    let mut fs = policy.fs_paths(&caller.home, &prepared.baseline_read);
    if policy.filesystem.baseline {
        // The runtime baseline's launch-specific part: the server's own
        // cgroup directories, whose limits runtimes size themselves by.
        fs.read.extend(prepared.baseline_cgroups.iter().cloned());
    }
    let cwd = PathBuf::from(&request.cwd);
    let sockets = policy.unix_paths(&caller.home, caller.uid);
    // What stays visible below the hidden runtime directories: the named
    // sockets, whatever the filesystem lists name there, the working dir.
    let mut keep = sockets.clone();
    keep.extend(fs.read.iter().chain(&fs.write).chain(&fs.exec).cloned());
    keep.push(cwd.clone());
    let persist_write = fs.write.clone();
    let write = fs.write.clone();
    LaunchSpec {
        argv: request.argv.clone(),
        env: env(policy, &request.env, &prepared.secrets),
        cwd,
        uid: caller.uid,
        gid: caller.gid,
        groups: groups(policy, caller),
        cgroup: prepared.cgroup_path.clone(),
        limit_cgroups: prepared.limit_cgroups.clone(),
        sandbox: SandboxSpec {
            read: fs.read,
            write: fs.write,
            exec: fs.exec,
            // Connect and bind are the eBPF layer's: it sees address,
            // port and protocol and records every decision. Landlock's
            // port-only TCP rules would fail calls first with EACCES and
            // leave no record.
            connect_tcp: None,
            bind_tcp: None,
            require_fs: !learn,
            learn,
        },
        mounts: (!learn).then_some(MountSpec {
            keep,
            sockets,
            write,
            uid: caller.uid,
            gid: caller.gid,
        }),
        persist: (!learn).then(|| PersistSpec {
            write: persist_write,
            allow: policy.filesystem.allow_persistence.clone(),
        }),
        kernel_allow: policy.kernel.allow.clone(),
        sockets: Some(SocketRules::from_kinds(&policy.network.sockets)),
    }
}

/// `[env] pass` of the client's environment, then the secrets (which win
/// over a passed variable of the same name).
fn env(
    policy: &Policy,
    env: &[(String, String)],
    secrets: &[(String, Vec<u8>)],
) -> Vec<(String, String)> {
    let pass: HashSet<&str> = policy.env.pass.iter().map(String::as_str).collect();
    let mut env: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| pass.contains(k.as_str()) && !secrets.iter().any(|(s, _)| s == k))
        .cloned()
        .collect();
    for (name, value) in secrets {
        env.push((name.clone(), String::from_utf8_lossy(value).into_owned()));
    }
    env
}

/// Supplementary groups: only those the policy names (no `docker`).
fn groups(policy: &Policy, caller: &Caller) -> Vec<u32> {
    caller
        .groups
        .iter()
        .filter(|(_, name)| {
            name.as_ref()
                .is_some_and(|name| policy.identity.groups.contains(name))
        })
        .map(|(gid, _)| *gid)
        .collect()
}

/// The launch record's `layers`: the daemon's layers, and what the helper
/// achieved for this server.
#[derive(Debug, Serialize)]
pub struct LaunchLayers<'a> {
    #[serde(flatten)]
    pub daemon: &'a Layers,
    pub landlock: &'a LandlockReport,
    pub mounts: &'a Option<MountReport>,
    pub persist: &'a Option<PersistReport>,
    pub seccomp: &'a Option<FenceReport>,
    pub fds: &'a [i32],
    pub limits: LimitsLayer,
    /// The seccomp side of the socket fence (the sock_create side is the
    /// daemon's `socket_fence` layer).
    pub seccomp_sockets: bool,
    /// Which allowed file activity the kernel programs record
    /// ([`files_level`]).
    pub audit_files: FilesLevel,
    /// Per guarantee class, which layers hold it on this kernel
    /// ([`coverage::table`]).
    pub guarantees: Vec<coverage::Row>,
    /// The classes this server runs with less than the full guarantee:
    /// weaker here, or missing and accepted by the policy.
    pub weaker: Vec<coverage::Class>,
}

/// `[limits]` as the launch record shows them.
#[derive(Debug, Serialize)]
pub struct LimitsLayer {
    pub pids: u64,
    pub memory: u64,
}

impl<'a> LaunchLayers<'a> {
    pub fn new(
        daemon: &'a Layers,
        status: &'a LaunchStatus,
        limits: &Limits,
        seccomp_sockets: bool,
        audit_files: FilesLevel,
    ) -> LaunchLayers<'a> {
        let guarantees = coverage::table(kernel_facts(daemon, status.landlock.abi));
        LaunchLayers {
            weaker: coverage::weaker(&guarantees),
            guarantees,
            daemon,
            landlock: &status.landlock,
            mounts: &status.mounts,
            persist: &status.persist,
            seccomp: &status.seccomp,
            fds: &status.fds,
            limits: LimitsLayer {
                pids: limits.pids,
                memory: limits.memory,
            },
            seccomp_sockets,
            audit_files,
        }
    }

    /// As the launch record holds it (keys sorted, like every JSON value
    /// in a record).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::launch::{seccomp::FenceReport, Enforcement, PortRestriction};

    const HOME: &str = "/home/ann";
    const CGROUP: &str = "/sys/fs/cgroup/mcpguard.slice/x-7";

    fn policy(body: &str) -> Policy {
        Policy::parse(&format!("name = \"x\"\n{body}"), Path::new("/p/x.toml")).unwrap()
    }

    fn paths(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    fn layers() -> Layers {
        Layers {
            ebpf_egress: true,
            ebpf_inbound: true,
            ..Layers::default()
        }
    }

    fn request() -> LaunchRequest {
        LaunchRequest {
            policy_path: "/p/x.toml".into(),
            policy_text: "name = \"x\"\n".into(),
            argv: vec!["/usr/bin/srv".into(), "--stdio".into()],
            cwd: "/home/ann/code".into(),
            env: [
                ("PATH", "/usr/bin"),
                ("HOME", HOME),
                ("AWS_KEY", "k"),
                ("TOKEN", "old"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
            learn: false,
        }
    }

    fn learning() -> LaunchRequest {
        LaunchRequest {
            learn: true,
            ..request()
        }
    }

    fn caller() -> Caller {
        Caller {
            uid: 1000,
            gid: 1000,
            home: HOME.into(),
            groups: vec![
                (27, Some("sudo".into())),
                (44, Some("video".into())),
                (998, Some("docker".into())),
                (5000, None),
            ],
        }
    }

    fn prepared() -> Prepared {
        Prepared {
            cgroup_id: 7,
            cgroup_path: CGROUP.into(),
            limit_cgroups: Vec::new(),
            baseline_read: paths(&["/proc", "/etc"]),
            baseline_cgroups: paths(&[&format!("{CGROUP}/memory.max")]),
            hosts_file: Vec::new(),
            secrets: Vec::new(),
        }
    }

    fn plan_for(body: &str, request: &LaunchRequest, prepared: &Prepared) -> LaunchPlan {
        plan(&policy(body), &caller(), request, prepared).unwrap()
    }

    #[test]
    fn admission_refuses_in_order_before_anything_exists() {
        let bad_policy = LaunchRequest {
            policy_text: "name = \"x\"\nbogus = 1\n".into(),
            ..request()
        };
        let no_argv = LaunchRequest {
            argv: Vec::new(),
            ..bad_policy.clone()
        };
        let no_inbound = Layers {
            ebpf_inbound: false,
            missing: vec!["inbound: no cgroup_skb".into(), "x: y".into()],
            ..layers()
        };
        let up = layers();
        let daemon = |layers, shutting_down| Daemon {
            layers,
            shutting_down,
        };
        // (request, uid, daemon, the refusal's message)
        let cases: [(&LaunchRequest, u32, Daemon<'_>, &str); 5] = [
            (
                &no_argv,
                0,
                daemon(&up, true),
                "refusing to launch a server as root",
            ),
            (&no_argv, 1000, daemon(&up, true), "empty server command"),
            (
                &bad_policy,
                1000,
                daemon(&up, true),
                "the daemon is shutting down",
            ),
            (
                &bad_policy,
                1000,
                daemon(&no_inbound, false),
                "/p/x.toml:2:1",
            ),
            (
                &request(),
                1000,
                daemon(&no_inbound, false),
                "the eBPF egress layer is not active on this kernel (inbound: no cgroup_skb; x: y)",
            ),
        ];
        for (request, uid, daemon, want) in cases {
            let error = admit(request, uid, &daemon).unwrap_err().to_string();
            assert!(error.contains(want), "{error:?} lacks {want:?}");
        }
        let admitted = admit(&request(), 1000, &daemon(&up, false)).unwrap();
        assert_eq!(admitted.name, "x");
    }

    #[test]
    fn filesystem_lists_resolve_home_and_add_the_baseline_unless_opted_out() {
        let body =
            "[filesystem]\nread = [\"~/data\"]\nwrite = [\"~/out\"]\nexec = [\"/usr/bin\"]\n";
        let spec = plan_for(body, &request(), &prepared()).spec;
        let memory_max = format!("{CGROUP}/memory.max");
        assert_eq!(
            spec.sandbox.read,
            paths(&["/home/ann/data", "/proc", "/etc", &memory_max])
        );
        assert_eq!(spec.sandbox.write, paths(&["/home/ann/out"]));
        assert_eq!(spec.sandbox.exec, paths(&["/usr/bin"]));
        assert!(spec.sandbox.require_fs && !spec.sandbox.learn);
        assert_eq!(
            (spec.sandbox.connect_tcp, spec.sandbox.bind_tcp),
            (None, None)
        );

        let off = format!("{body}baseline = false\n");
        let spec = plan_for(&off, &request(), &prepared()).spec;
        assert_eq!(spec.sandbox.read, paths(&["/home/ann/data"]));
    }

    #[test]
    fn write_grants_and_persistence_reach_the_mount_namespace() {
        let body = "[filesystem]\nbaseline = false\nread = [\"/srv\"]\nwrite = [\"~/out\"]\n\
                    exec = [\"/opt/bin\"]\nallow_persistence = [\"direnv\"]\n\
                    [network]\nunix = [\"/run/user/%u/bus\"]\n";
        let spec = plan_for(body, &request(), &prepared()).spec;
        let mounts = spec.mounts.unwrap();
        assert_eq!(mounts.sockets, paths(&["/run/user/1000/bus"]));
        // What stays visible below hidden runtime directories: the named
        // sockets, the lists, the working directory.
        assert_eq!(
            mounts.keep,
            paths(&[
                "/run/user/1000/bus",
                "/srv",
                "/home/ann/out",
                "/opt/bin",
                "/home/ann/code"
            ])
        );
        assert_eq!(mounts.write, paths(&["/home/ann/out"]));
        assert_eq!((mounts.uid, mounts.gid), (1000, 1000));
        let persist = spec.persist.unwrap();
        assert_eq!(persist.write, paths(&["/home/ann/out"]));
        assert_eq!(persist.allow, [crate::policy::persist::PersistKind::Direnv]);
    }

    #[test]
    fn network_allow_rules_and_the_hosts_file_become_entries_of_the_servers_cgroup() {
        let body = "[network]\nallow = [\"10.0.0.0/8:443\", \"192.0.2.7:1000-2000\", \
                    \"api.example.com:443\"]\n";
        let hosts = policy(body).network.hosts;
        let prepared = Prepared {
            hosts_file: crate::dns::hosts_file::rules(
                &hosts,
                "203.0.113.80 api.example.com\n",
                false,
            ),
            ..prepared()
        };
        assert_eq!(prepared.hosts_file.len(), 1);
        let maps = plan_for(body, &request(), &prepared).maps;
        assert_eq!(maps.net.len(), 3);
        for (_, key, _) in &maps.net {
            assert_eq!(key.cgroup_be, 7u64.to_be_bytes());
        }
        let mut rules = policy(body).network.allow;
        rules.extend(prepared.hosts_file.clone());
        let want: Vec<_> = policy::net::compile_allow(&rules, 7)
            .unwrap()
            .into_iter()
            .map(|e| (e.prefix_len, e.key, e.ports))
            .collect();
        assert_eq!(maps.net, want);
        // Nothing to bind.
        assert_eq!(maps.bind.count, 0);
    }

    #[test]
    fn network_bind_ports_merge_into_one_set() {
        let maps = plan_for(
            "[network]\nbind = [\"8080\", \"8000-8100\", \"9000\"]\n",
            &request(),
            &prepared(),
        )
        .maps;
        assert_eq!(maps.bind.count, 2);
        assert!(maps.bind.allows(8000) && maps.bind.allows(8100) && maps.bind.allows(9000));
        assert!(!maps.bind.allows(8101));
        assert!(maps.net.is_empty());
    }

    #[test]
    fn network_names_go_to_the_resolver() {
        let body = "[network]\nallow = [\"api.example.com:443\", \"10.0.0.0/8:53\"]\n\
                    allow_local_answers = true\nmin_ttl = 300\n";
        let p = policy(body);
        let dns = plan_for(body, &request(), &prepared()).dns;
        assert_eq!(
            dns,
            DnsPlan {
                hosts: p.network.hosts.clone(),
                allow: p.network.allow.clone(),
                installed: p.network.allow.clone(),
                allow_local_answers: true,
                min_ttl: 300,
            }
        );
        assert_eq!(dns.hosts.len(), 1);
        assert!(
            !plan_for("", &request(), &prepared())
                .dns
                .allow_local_answers
        );
    }

    #[test]
    fn socket_kinds_set_flags_and_the_seccomp_rules() {
        let audit = FLAG_AUDIT_OPEN | FLAG_AUDIT_PROC | FLAG_AUDIT_NET | FLAG_FILES_CALLS;
        for (sockets, flags) in [
            ("[]", audit),
            ("[\"raw\"]", audit | FLAG_SOCK_RAW),
            ("[\"icmp\", \"netlink\"]", audit | FLAG_SOCK_ICMP),
        ] {
            let body = format!("[network]\nsockets = {sockets}\n");
            let plan = plan_for(&body, &request(), &prepared());
            assert_eq!(plan.maps.flags, flags, "{sockets}");
            assert_eq!(
                plan.spec.sockets,
                Some(SocketRules::from_kinds(&policy(&body).network.sockets))
            );
        }
        let server = plan_for("", &request(), &prepared()).maps.server(9, 5353);
        assert_eq!(
            (server.launch_id, server.flags, server.dns_port),
            (9, audit, 5353)
        );
    }

    #[test]
    fn the_audit_level_sets_one_files_flag_and_learning_records_everything() {
        let both = FLAG_FILES_ALL | FLAG_FILES_CALLS;
        for (level, learn, want) in [
            ("denied", false, 0),
            ("calls", false, FLAG_FILES_CALLS),
            ("all", false, FLAG_FILES_ALL),
            ("denied", true, FLAG_FILES_ALL),
            ("calls", true, FLAG_FILES_ALL),
        ] {
            let body = format!("[audit]\nfiles = \"{level}\"\n");
            let request = if learn { learning() } else { request() };
            let flags = plan_for(&body, &request, &prepared()).maps.flags;
            assert_eq!(flags & both, want, "{level} learn={learn}");
            let expected = match want {
                0 => FilesLevel::Denied,
                FLAG_FILES_CALLS => FilesLevel::Calls,
                _ => FilesLevel::All,
            };
            assert_eq!(files_level(&policy(&body), learn), expected);
        }
    }

    #[test]
    fn env_passes_only_named_variables_and_secrets_win() {
        let body = "[env]\npass = [\"PATH\", \"HOME\", \"TOKEN\"]\n\
                    [secrets]\nTOKEN = { file = \"/etc/mcpguard/secrets/t\" }\n";
        let p = policy(body);
        assert_eq!(p.secrets.len(), 1);
        let prepared = Prepared {
            secrets: vec![("TOKEN".into(), b"s3cret".to_vec())],
            ..prepared()
        };
        let env = plan_for(body, &request(), &prepared).spec.env;
        let want = [("PATH", "/usr/bin"), ("HOME", HOME), ("TOKEN", "s3cret")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(env, want);
        // No [env]: nothing passes.
        assert!(plan_for("", &request(), &Prepared::default())
            .spec
            .env
            .is_empty());
    }

    #[test]
    fn identity_keeps_only_named_groups_the_caller_has() {
        let body = "[identity]\ngroups = [\"video\", \"audio\"]\n";
        let spec = plan_for(body, &request(), &prepared()).spec;
        assert_eq!(spec.groups, [44]);
        assert!(plan_for("", &request(), &prepared()).spec.groups.is_empty());
        assert_eq!((spec.uid, spec.gid), (1000, 1000));
    }

    #[test]
    fn the_spec_carries_the_request_and_the_cgroups() {
        let prepared = Prepared {
            limit_cgroups: paths(&["/sys/fs/cgroup/pids/x-7"]),
            ..prepared()
        };
        let spec = plan_for("[kernel]\nallow = [\"io_uring\"]\n", &request(), &prepared).spec;
        assert_eq!(spec.argv, request().argv);
        assert_eq!(spec.cwd, Path::new("/home/ann/code"));
        assert_eq!(spec.cgroup, Path::new(CGROUP));
        assert_eq!(spec.limit_cgroups, prepared.limit_cgroups);
        assert_eq!(spec.kernel_allow, [policy::KernelFeature::IoUring]);
    }

    #[test]
    fn a_command_pin_is_the_clients_business() {
        // `mcpguard run` resolved the pin before asking; the daemon starts
        // the argv it was sent.
        let body = "[command]\nrunner = [\"npx\", \"-y\", \"@s/srv\"]\n\
                    run = [\"/usr/bin/node\", \"~/srv/index.js\"]\n";
        let request = LaunchRequest {
            argv: vec!["npx".into(), "-y".into(), "@s/srv".into()],
            ..request()
        };
        assert!(policy(body).command.pin.is_some());
        assert_eq!(
            plan_for(body, &request, &prepared()).spec.argv,
            request.argv
        );
    }

    #[test]
    fn tools_and_mcp_rules_go_to_the_tap() {
        let body = "[tools]\nallow = [\"get_*\"]\ndeny = [\"get_secret\"]\n\
                    [mcp]\nsampling = \"allow\"\n";
        let p = policy(body);
        let plan = plan_for(body, &request(), &prepared());
        assert_eq!(plan.tools, p.tools);
        assert_eq!(plan.mcp, p.mcp);
        assert_ne!(plan.mcp, Mcp::allow_all());
    }

    #[test]
    fn learning_enforces_nothing_and_resolves_every_name() {
        let body = "[filesystem]\nwrite = [\"~/out\"]\n[tools]\ndeny = [\"*\"]\n\
                    [network]\nallow = [\"api.example.com:443\"]\n";
        let plan = plan_for(body, &learning(), &prepared());
        let audit = FLAG_AUDIT_OPEN | FLAG_AUDIT_PROC | FLAG_AUDIT_NET | FLAG_FILES_ALL;
        assert_eq!(plan.maps.flags, audit | FLAG_COMPLAIN);
        assert_eq!(plan.dns.hosts, [policy::net::any_host()]);
        assert!(plan.dns.allow_local_answers);
        assert!(plan.spec.mounts.is_none() && plan.spec.persist.is_none());
        assert!(plan.spec.sandbox.learn && !plan.spec.sandbox.require_fs);
        let nothing = Tools {
            on_taint: OnTaint::Warn,
            ..Tools::default()
        };
        assert_eq!(plan.tools, nothing);
        assert_eq!(plan.mcp, Mcp::allow_all());
    }

    fn status() -> LaunchStatus {
        LaunchStatus {
            exe: "/usr/bin/srv".into(),
            pid: 4242,
            uid: 1000,
            gid: 1000,
            groups: vec![44],
            cgroup: CGROUP.into(),
            landlock: LandlockReport {
                abi: Some(6),
                target_abi: 6,
                status: Enforcement::FullyEnforced,
                no_new_privs: true,
                skipped_paths: Vec::new(),
                unenforced: vec!["x (ABI 7)".into()],
                connect_tcp: PortRestriction::NotHandled,
                bind_tcp: PortRestriction::Ports { count: 0 },
                log_denials: false,
            },
            mounts: Some(MountReport {
                hidden: paths(&["/run", "/tmp"]),
                kept: paths(&["/run/user/1000/bus"]),
                private_proc: true,
                ..MountReport::default()
            }),
            persist: None,
            seccomp: Some(FenceReport {
                refused: vec!["bpf".into()],
                allowed: vec![policy::KernelFeature::IoUring],
            }),
            fds: vec![0, 1, 2],
        }
    }

    /// The launch record's `layers` as `serve_peer` assembled them by hand
    /// before they were typed.
    fn hand_assembled(
        daemon: &Layers,
        status: &LaunchStatus,
        limits: &Limits,
        fence: bool,
    ) -> serde_json::Value {
        let mut layers = serde_json::to_value(daemon).unwrap_or_default();
        if let Some(obj) = layers.as_object_mut() {
            let mut put = |k: &str, v| obj.insert(k.into(), v);
            put("landlock", serde_json::to_value(&status.landlock).unwrap());
            put("mounts", serde_json::to_value(&status.mounts).unwrap());
            put("persist", serde_json::to_value(&status.persist).unwrap());
            put("seccomp", serde_json::to_value(&status.seccomp).unwrap());
            put("fds", serde_json::json!(status.fds));
            put(
                "limits",
                serde_json::json!({ "pids": limits.pids, "memory": limits.memory }),
            );
            put("seccomp_sockets", fence.into());
            put("audit_files", "calls".into());
            let facts = kernel_facts(daemon, status.landlock.abi);
            let table = coverage::table(facts);
            put(
                "weaker",
                serde_json::to_value(coverage::weaker(&table)).unwrap(),
            );
            put("guarantees", serde_json::to_value(table).unwrap());
        }
        layers
    }

    #[test]
    fn a_guarantee_the_kernel_lacks_refuses_the_launch_unless_accepted() {
        let facts = |abi| kernel_facts(&layers(), Some(abi));
        let plain = policy("");
        let err = check_guarantees(&plain, false, facts(2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing to launch: scope.abstract_unix_socket: Landlock ABI 2 does not hold \
             connecting to abstract Unix sockets outside it (D-Bus, X11, debuggers) (ABI 6, \
             Linux 6.12), and no other layer holds it on this kernel; scope.signal: Landlock \
             ABI 2 does not hold signalling the user's other processes (ABI 6, Linux 6.12), \
             and no other layer holds it on this kernel; to run with the weaker guarantee, add \
             `accept_weaker = [\"scope.abstract_unix_socket\", \"scope.signal\"]` to the \
             policy's [kernel] section"
        );
        let one = policy("[kernel]\naccept_weaker = [\"scope.signal\"]\n");
        let Err(PlanError::Weaker { rows }) = check_guarantees(&one, false, facts(5)) else {
            panic!("the abstract-socket scope is still missing");
        };
        assert_eq!(
            rows.iter().map(|r| r.class).collect::<Vec<_>>(),
            vec![coverage::Class::ScopeAbstractUnixSocket]
        );
        let both = policy(
            "[kernel]\naccept_weaker = [\"scope.signal\", \"scope.abstract_unix_socket\"]\n",
        );
        check_guarantees(&both, false, facts(2)).expect("accepted");
        check_guarantees(&plain, false, facts(6)).expect("held by Landlock");
        check_guarantees(&plain, true, facts(2)).expect("learning enforces nothing");
    }

    #[test]
    fn launch_layers_are_byte_identical_to_the_hand_assembled_json() {
        let limits = policy("[limits]\npids = 64\nmemory = \"256M\"\n").limits;
        let missing = Layers {
            missing: vec!["audit_io_uring: no tracepoint".into()],
            ..layers()
        };
        for daemon in [layers(), missing] {
            for fence in [false, true] {
                let status = status();
                let typed = LaunchLayers::new(&daemon, &status, &limits, fence, FilesLevel::Calls)
                    .to_value();
                let hand = hand_assembled(&daemon, &status, &limits, fence);
                assert_eq!(typed.to_string(), hand.to_string());
            }
        }
    }

    #[test]
    fn launch_layers_golden() {
        let limits = policy("[limits]\npids = 64\nmemory = \"256M\"\n").limits;
        let status = LaunchStatus {
            mounts: None,
            seccomp: None,
            ..status()
        };
        let json = LaunchLayers::new(&layers(), &status, &limits, true, FilesLevel::All)
            .to_value()
            .to_string();
        assert_eq!(
            json,
            r#"{"audit_attrs":false,"audit_files":"all","audit_io_uring":false,"audit_landlock":false,"audit_link":false,"audit_open":false,"audit_proc":false,"audit_syscalls":false,"audit_unix":false,"ebpf_egress":true,"ebpf_inbound":true,"fds":[0,1,2],"guarantees":[{"class":"fs.truncate","detail":"Landlock's truncate right, and EROFS from the read-only view","held_by":["landlock","read_only_view"],"state":"held"},{"class":"fs.ioctl_dev","detail":"Landlock (ABI 5+)","held_by":["landlock"],"state":"held"},{"class":"net.tcp","detail":"the cgroup connect and bind programs decide by address and port on every supported kernel; Landlock's TCP port rules are not used (they refuse without a record)","held_by":["ebpf"],"state":"held"},{"class":"scope.abstract_unix_socket","detail":"Landlock (ABI 6+)","held_by":["landlock"],"state":"held"},{"class":"scope.signal","detail":"Landlock (ABI 6+)","held_by":["landlock"],"state":"held"}],"landlock":{"abi":6,"bind_tcp":{"count":0,"mode":"ports"},"connect_tcp":{"mode":"not_handled"},"log_denials":false,"no_new_privs":true,"skipped_paths":[],"status":"fully_enforced","target_abi":6,"unenforced":["x (ABI 7)"]},"limits":{"memory":268435456,"pids":64},"mounts":null,"persist":null,"pinned_enforcement":false,"seccomp":null,"seccomp_sockets":true,"socket_fence":false,"weaker":[]}"#
        );
    }
}
