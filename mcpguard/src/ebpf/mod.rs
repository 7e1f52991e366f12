//! Loading and attaching the kernel programs, and the daemon's handles on
//! their maps.
//!
//! Each program family is a layer that loads or does not on a given kernel;
//! [`Loaded::layers`] says which are active so launches can fail closed when
//! a policy needs a missing one.

pub mod attrs;
pub mod demand;
pub mod in_call;
pub mod pins;
pub mod tracefs;

use std::{
    fs::File,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    maps::{lpm_trie::Key, HashMap, LpmTrie, MapData, PerCpuHashMap, RingBuf},
    programs::{
        links::FdLink, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock,
        CgroupSockAddr, TracePoint,
    },
    Ebpf, EbpfLoader,
};
use mcpguard_common::{
    flow::Flow,
    policy::{syscall_audit, NetKey, PortSet, ServerPolicy},
};
use serde::Serialize;
use thiserror::Error;
use tracing::{debug, info, warn};

use self::demand::{Target, Tracepoints};
use crate::{kernel::syscalls::Audit, policy::NetEntry};

/// The compiled programs, embedded at build time by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcpguard"));

#[derive(Debug, Error)]
pub enum EbpfError {
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("ring buffer size {0} must be a power of two of at least 4096 bytes")]
    RingSize(u32),
    #[error("cannot open cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which kernel layers this daemon has, for status lines and launch records.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Layers {
    /// cgroup connect4/6 + sendmsg4/6 verdicts.
    pub ebpf_egress: bool,
    /// cgroup bind4/6 and cgroup_skb ingress verdicts: inbound only on
    /// `[network] bind` ports.
    pub ebpf_inbound: bool,
    /// cgroup sock_create: raw and ICMP sockets only where named.
    pub socket_fence: bool,
    /// exec/fork/exit records.
    pub audit_proc: bool,
    /// open records.
    pub audit_open: bool,
    /// link and rename records.
    pub audit_link: bool,
    /// Unix-socket connect records.
    pub audit_unix: bool,
    /// Records of the watched syscalls (the seccomp fence's and ptrace,
    /// kill, ...).
    pub audit_syscalls: bool,
    /// Records of refused attribute changes (chmod, chown, utimes, xattrs,
    /// truncate, mknod).
    pub audit_attrs: bool,
    /// Records of requests submitted to io_uring (by servers allowed it).
    pub audit_io_uring: bool,
    /// Records of Landlock's own denials, read from the kernel's audit
    /// read-log (set by the daemon, not by the eBPF loader).
    pub audit_landlock: bool,
    /// The egress and socket-fence links are pinned in bpffs: they stay
    /// attached if the daemon dies.
    pub pinned_enforcement: bool,
    /// Why a layer is missing, keyed by layer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// Per-server maps the daemon writes when a server starts and stops.
pub struct PolicyMaps {
    servers: HashMap<MapData, u64, ServerPolicy>,
    net_allow: LpmTrie<MapData, NetKey, PortSet>,
    bind_ports: HashMap<MapData, u64, PortSet>,
}

impl PolicyMaps {
    /// Install a server's policy: allow-list and bind ports first, then the
    /// server entry that makes the programs honour it (until then its
    /// cgroup is denied everything).
    pub fn install(
        &mut self,
        cgroup_id: u64,
        policy: ServerPolicy,
        net: &[(u32, NetKey, PortSet)],
        bind: PortSet,
    ) -> Result<(), EbpfError> {
        self.bind_ports
            .insert(cgroup_id, bind, 0)
            .map_err(|source| EbpfError::Map {
                name: "BIND_PORTS",
                source,
            })?;
        for (prefix, key, ports) in net {
            self.net_allow
                .insert(&Key::new(*prefix, *key), *ports, 0)
                .map_err(|source| EbpfError::Map {
                    name: "NET_ALLOW",
                    source,
                })?;
        }
        self.servers
            .insert(cgroup_id, policy, 0)
            .map_err(|source| EbpfError::Map {
                name: "SERVERS",
                source,
            })
    }

    /// Add or replace one allow entry (an address a server's resolver
    /// handed out).
    pub fn allow(&mut self, entry: &NetEntry) -> Result<(), EbpfError> {
        self.net_allow
            .insert(&Key::new(entry.prefix_len, entry.key), entry.ports, 0)
            .map_err(|source| EbpfError::Map {
                name: "NET_ALLOW",
                source,
            })
    }

    /// Remove one allow entry.
    pub fn revoke(&mut self, entry: &NetEntry) {
        if let Err(error) = self
            .net_allow
            .remove(&Key::new(entry.prefix_len, entry.key))
        {
            warn!(%error, "removing a resolved NET_ALLOW entry");
        }
    }

    /// Remove a server's entries (after its cgroup is empty).
    pub fn remove(&mut self, cgroup_id: u64, net: &[(u32, NetKey, PortSet)]) {
        if let Err(error) = self.servers.remove(&cgroup_id) {
            warn!(cgroup_id, %error, "removing SERVERS entry");
        }
        if let Err(error) = self.bind_ports.remove(&cgroup_id) {
            warn!(cgroup_id, %error, "removing BIND_PORTS entry");
        }
        for (prefix, key, _) in net {
            if let Err(error) = self.net_allow.remove(&Key::new(*prefix, *key)) {
                warn!(cgroup_id, %error, "removing NET_ALLOW entry");
            }
        }
    }
}

/// Everything the audit reader owns.
pub struct AuditMaps {
    pub events: RingBuf<MapData>,
    pub lost: PerCpuHashMap<MapData, u64, u64>,
    /// Bytes each server put into the ring buffer, and what it shed.
    pub flow: HashMap<MapData, u64, Flow>,
    /// Bytes of each server's records read so far (written here only).
    pub consumed: HashMap<MapData, u64, u64>,
}

pub struct Loaded {
    /// Owns the programs (and every link not pinned: they detach when its
    /// last clone drops), and attaches the syscall tracepoints on demand.
    pub tracepoints: Tracepoints,
    pub policy: PolicyMaps,
    pub audit: AuditMaps,
    /// Tool calls in flight per server (see [`in_call`]).
    pub in_call: in_call::InCallMap,
    pub layers: Layers,
}

/// io_uring's submission tracepoint, by its names: `io_uring_submit_req`,
/// and `io_uring_submit_sqe` on older kernels (Debian's 6.1), with the
/// same `u8 opcode` field. The first this kernel has is used.
const IO_URING_SUBMIT: [&str; 2] = ["io_uring_submit_req", "io_uring_submit_sqe"];

/// Offsets the programs read, as (global, category, event, field).
/// Offsets of tracepoints a kernel may lack (io_uring can be compiled
/// out), as (global, category, event names, field): a missing one leaves
/// its global unset and its program detached, and the layer is reported
/// missing.
const OPTIONAL_OFFSETS: &[(&str, &str, &[&str], &str)] = &[(
    "OFF_IO_URING_OPCODE",
    "io_uring",
    &IO_URING_SUBMIT,
    "opcode",
)];

const OFFSETS: &[(&str, &str, &str, &str)] = &[
    ("OFF_OPENAT_DFD", "syscalls", "sys_enter_openat", "dfd"),
    (
        "OFF_OPENAT_FILENAME",
        "syscalls",
        "sys_enter_openat",
        "filename",
    ),
    ("OFF_OPENAT_FLAGS", "syscalls", "sys_enter_openat", "flags"),
    ("OFF_OPENAT_MODE", "syscalls", "sys_enter_openat", "mode"),
    ("OFF_OPENAT2_DFD", "syscalls", "sys_enter_openat2", "dfd"),
    (
        "OFF_OPENAT2_FILENAME",
        "syscalls",
        "sys_enter_openat2",
        "filename",
    ),
    ("OFF_OPENAT2_HOW", "syscalls", "sys_enter_openat2", "how"),
    (
        "OFF_OPEN_FILENAME",
        "syscalls",
        "sys_enter_open",
        "filename",
    ),
    ("OFF_OPEN_FLAGS", "syscalls", "sys_enter_open", "flags"),
    ("OFF_OPEN_MODE", "syscalls", "sys_enter_open", "mode"),
    (
        "OFF_CREAT_PATHNAME",
        "syscalls",
        "sys_enter_creat",
        "pathname",
    ),
    ("OFF_CREAT_MODE", "syscalls", "sys_enter_creat", "mode"),
    ("OFF_SYS_EXIT_RET", "syscalls", "sys_exit_openat", "ret"),
    (
        "OFF_SYS_EXIT_NR",
        "syscalls",
        "sys_exit_openat",
        "__syscall_nr",
    ),
    (
        "OFF_SYS_ENTER_NR",
        "syscalls",
        "sys_enter_openat",
        "__syscall_nr",
    ),
    (
        "OFF_EXECVE_FILENAME",
        "syscalls",
        "sys_enter_execve",
        "filename",
    ),
    ("OFF_EXECVE_ARGV", "syscalls", "sys_enter_execve", "argv"),
    (
        "OFF_EXECVEAT_FILENAME",
        "syscalls",
        "sys_enter_execveat",
        "filename",
    ),
    (
        "OFF_EXECVEAT_ARGV",
        "syscalls",
        "sys_enter_execveat",
        "argv",
    ),
    (
        "OFF_SCHED_EXEC_OLD_PID",
        "sched",
        "sched_process_exec",
        "old_pid",
    ),
    (
        "OFF_SCHED_FORK_PARENT_PID",
        "sched",
        "sched_process_fork",
        "parent_pid",
    ),
    (
        "OFF_SCHED_FORK_CHILD_PID",
        "sched",
        "sched_process_fork",
        "child_pid",
    ),
    (
        "OFF_CONNECT_ADDR",
        "syscalls",
        "sys_enter_connect",
        "uservaddr",
    ),
    (
        "OFF_SCHED_EXEC_FILENAME",
        "sched",
        "sched_process_exec",
        "filename",
    ),
    ("OFF_LINK_OLDNAME", "syscalls", "sys_enter_link", "oldname"),
    ("OFF_LINK_NEWNAME", "syscalls", "sys_enter_link", "newname"),
    (
        "OFF_LINKAT_OLDDFD",
        "syscalls",
        "sys_enter_linkat",
        "olddfd",
    ),
    (
        "OFF_LINKAT_OLDNAME",
        "syscalls",
        "sys_enter_linkat",
        "oldname",
    ),
    (
        "OFF_LINKAT_NEWDFD",
        "syscalls",
        "sys_enter_linkat",
        "newdfd",
    ),
    (
        "OFF_LINKAT_NEWNAME",
        "syscalls",
        "sys_enter_linkat",
        "newname",
    ),
    ("OFF_LINKAT_FLAGS", "syscalls", "sys_enter_linkat", "flags"),
    (
        "OFF_SYMLINK_OLDNAME",
        "syscalls",
        "sys_enter_symlink",
        "oldname",
    ),
    (
        "OFF_SYMLINK_NEWNAME",
        "syscalls",
        "sys_enter_symlink",
        "newname",
    ),
    (
        "OFF_SYMLINKAT_OLDNAME",
        "syscalls",
        "sys_enter_symlinkat",
        "oldname",
    ),
    (
        "OFF_SYMLINKAT_NEWDFD",
        "syscalls",
        "sys_enter_symlinkat",
        "newdfd",
    ),
    (
        "OFF_SYMLINKAT_NEWNAME",
        "syscalls",
        "sys_enter_symlinkat",
        "newname",
    ),
    (
        "OFF_RENAME_OLDNAME",
        "syscalls",
        "sys_enter_rename",
        "oldname",
    ),
    (
        "OFF_RENAME_NEWNAME",
        "syscalls",
        "sys_enter_rename",
        "newname",
    ),
    (
        "OFF_RENAMEAT_OLDDFD",
        "syscalls",
        "sys_enter_renameat",
        "olddfd",
    ),
    (
        "OFF_RENAMEAT_OLDNAME",
        "syscalls",
        "sys_enter_renameat",
        "oldname",
    ),
    (
        "OFF_RENAMEAT_NEWDFD",
        "syscalls",
        "sys_enter_renameat",
        "newdfd",
    ),
    (
        "OFF_RENAMEAT_NEWNAME",
        "syscalls",
        "sys_enter_renameat",
        "newname",
    ),
    (
        "OFF_RENAMEAT2_OLDDFD",
        "syscalls",
        "sys_enter_renameat2",
        "olddfd",
    ),
    (
        "OFF_RENAMEAT2_OLDNAME",
        "syscalls",
        "sys_enter_renameat2",
        "oldname",
    ),
    (
        "OFF_RENAMEAT2_NEWDFD",
        "syscalls",
        "sys_enter_renameat2",
        "newdfd",
    ),
    (
        "OFF_RENAMEAT2_NEWNAME",
        "syscalls",
        "sys_enter_renameat2",
        "newname",
    ),
    (
        "OFF_RENAMEAT2_FLAGS",
        "syscalls",
        "sys_enter_renameat2",
        "flags",
    ),
    (
        "OFF_MKDIR_PATHNAME",
        "syscalls",
        "sys_enter_mkdir",
        "pathname",
    ),
    ("OFF_MKDIR_MODE", "syscalls", "sys_enter_mkdir", "mode"),
    ("OFF_MKDIRAT_DFD", "syscalls", "sys_enter_mkdirat", "dfd"),
    (
        "OFF_MKDIRAT_PATHNAME",
        "syscalls",
        "sys_enter_mkdirat",
        "pathname",
    ),
    ("OFF_MKDIRAT_MODE", "syscalls", "sys_enter_mkdirat", "mode"),
    (
        "OFF_UNLINK_PATHNAME",
        "syscalls",
        "sys_enter_unlink",
        "pathname",
    ),
    ("OFF_UNLINKAT_DFD", "syscalls", "sys_enter_unlinkat", "dfd"),
    (
        "OFF_UNLINKAT_PATHNAME",
        "syscalls",
        "sys_enter_unlinkat",
        "pathname",
    ),
    (
        "OFF_UNLINKAT_FLAG",
        "syscalls",
        "sys_enter_unlinkat",
        "flag",
    ),
    (
        "OFF_RMDIR_PATHNAME",
        "syscalls",
        "sys_enter_rmdir",
        "pathname",
    ),
    (
        "OFF_CHDIR_FILENAME",
        "syscalls",
        "sys_enter_chdir",
        "filename",
    ),
];

const NET_PROGRAMS: &[&str] = &[
    "connect4", "connect6", "sendmsg4", "sendmsg6", "recvmsg4", "recvmsg6",
];
const BIND_PROGRAMS: &[&str] = &["bind4", "bind6"];
/// Exec entry and exit: attached on demand, like every syscall tracepoint.
const EXEC_PROGRAMS: &[(&str, &str, &str)] = &[
    ("sys_enter_execve", "syscalls", "sys_enter_execve"),
    ("sys_enter_execveat", "syscalls", "sys_enter_execveat"),
    ("sys_exit_execve", "syscalls", "sys_exit_execve"),
    ("sys_exit_execveat", "syscalls", "sys_exit_execveat"),
];
/// Process events: no syscall-path cost, attached for the daemon's life.
const PROC_PROGRAMS: &[(&str, &str, &str)] = &[
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_fork", "sched", "sched_process_fork"),
    ("sched_process_exit", "sched", "sched_process_exit"),
];
/// io_uring submissions: no syscall-path cost, attached for the daemon's
/// life to the first of [`IO_URING_SUBMIT`] the kernel has.
const IO_URING_PROGRAM: &str = "io_uring_submit_req";
const UNIX_PROGRAMS: &[(&str, &str, &str)] = &[
    ("sys_enter_connect", "syscalls", "sys_enter_connect"),
    ("sys_exit_connect", "syscalls", "sys_exit_connect"),
];
const OPEN_PROGRAMS: &[(&str, &str, &str)] = &[
    ("sys_enter_openat", "syscalls", "sys_enter_openat"),
    ("sys_enter_openat2", "syscalls", "sys_enter_openat2"),
    ("sys_enter_open", "syscalls", "sys_enter_open"),
    ("sys_enter_creat", "syscalls", "sys_enter_creat"),
    ("sys_exit_openat", "syscalls", "sys_exit_openat"),
    ("sys_exit_openat2", "syscalls", "sys_exit_openat2"),
    ("sys_exit_open", "syscalls", "sys_exit_open"),
    ("sys_exit_creat", "syscalls", "sys_exit_creat"),
    // One-path calls share the open slot: mkdir, unlink, rmdir, chdir.
    ("sys_enter_mkdir", "syscalls", "sys_enter_mkdir"),
    ("sys_exit_mkdir", "syscalls", "sys_exit_mkdir"),
    ("sys_enter_mkdirat", "syscalls", "sys_enter_mkdirat"),
    ("sys_exit_mkdirat", "syscalls", "sys_exit_mkdirat"),
    ("sys_enter_unlink", "syscalls", "sys_enter_unlink"),
    ("sys_exit_unlink", "syscalls", "sys_exit_unlink"),
    ("sys_enter_unlinkat", "syscalls", "sys_enter_unlinkat"),
    ("sys_exit_unlinkat", "syscalls", "sys_exit_unlinkat"),
    ("sys_enter_rmdir", "syscalls", "sys_enter_rmdir"),
    ("sys_exit_rmdir", "syscalls", "sys_exit_rmdir"),
    ("sys_enter_chdir", "syscalls", "sys_enter_chdir"),
    ("sys_exit_chdir", "syscalls", "sys_exit_chdir"),
];
/// Links, symlinks and renames: what Landlock's REFER and create rights
/// refuse, recorded like opens.
const PAIR_PROGRAMS: &[(&str, &str, &str)] = &[
    ("sys_enter_link", "syscalls", "sys_enter_link"),
    ("sys_exit_link", "syscalls", "sys_exit_link"),
    ("sys_enter_linkat", "syscalls", "sys_enter_linkat"),
    ("sys_exit_linkat", "syscalls", "sys_exit_linkat"),
    ("sys_enter_symlink", "syscalls", "sys_enter_symlink"),
    ("sys_exit_symlink", "syscalls", "sys_exit_symlink"),
    ("sys_enter_symlinkat", "syscalls", "sys_enter_symlinkat"),
    ("sys_exit_symlinkat", "syscalls", "sys_exit_symlinkat"),
    ("sys_enter_rename", "syscalls", "sys_enter_rename"),
    ("sys_exit_rename", "syscalls", "sys_exit_rename"),
    ("sys_enter_renameat", "syscalls", "sys_enter_renameat"),
    ("sys_exit_renameat", "syscalls", "sys_exit_renameat"),
    ("sys_enter_renameat2", "syscalls", "sys_enter_renameat2"),
    ("sys_exit_renameat2", "syscalls", "sys_exit_renameat2"),
];

/// Load every program and attach what this kernel supports, except the
/// syscall tracepoints: those are loaded and checked here, and attached
/// while something holds them ([`demand`]). Egress programs attach to
/// `cgroup_root` (the mcpguard subtree) so only guarded servers pass
/// through them.
///
/// With `pins`, the egress and socket-fence links are pinned there so they
/// outlive the daemon (see [`pins`]).
pub fn load(
    cgroup_root: &Path,
    ring_bytes: Option<u32>,
    pins: Option<&Path>,
) -> Result<Loaded, EbpfError> {
    let (tracefs, mounted) = tracefs::ensure_mounted()?;
    if mounted {
        info!(path = %tracefs.display(), "mounted tracefs");
    }
    let (mut ebpf, optional_missing) = load_object(&tracefs, ring_bytes)?;
    let cgroup = File::open(cgroup_root).map_err(|source| EbpfError::Cgroup {
        path: cgroup_root.to_owned(),
        source,
    })?;
    let (layers, targets) = attach_all(&mut ebpf, &cgroup, pins, &tracefs, &optional_missing);
    Ok(Loaded {
        policy: PolicyMaps {
            servers: take(&mut ebpf, "SERVERS")?,
            net_allow: take(&mut ebpf, "NET_ALLOW")?,
            bind_ports: take(&mut ebpf, "BIND_PORTS")?,
        },
        audit: AuditMaps {
            events: take(&mut ebpf, "EVENTS")?,
            lost: take(&mut ebpf, "LOST")?,
            flow: take(&mut ebpf, "FLOW")?,
            consumed: take(&mut ebpf, "CONSUMED")?,
        },
        in_call: in_call::InCallMap::new(take(&mut ebpf, "IN_CALL")?),
        tracepoints: Tracepoints::new(ebpf, targets),
        layers,
    })
}

/// Optional tracepoint offsets this kernel lacks: the global's name, and why.
type MissingOffsets = Vec<(&'static str, String)>;

/// The object loaded with this kernel's tracepoint field offsets (and the
/// ring buffer's size, if given), and the optional offsets it lacks.
fn load_object(
    tracefs: &Path,
    ring_bytes: Option<u32>,
) -> Result<(Ebpf, MissingOffsets), EbpfError> {
    let mut offsets = Vec::with_capacity(OFFSETS.len());
    for (global, category, event, field) in OFFSETS {
        offsets.push((
            *global,
            tracefs::field_offset(tracefs, category, event, field)?,
        ));
    }
    let mut optional_missing = Vec::new();
    for (global, category, events, field) in OPTIONAL_OFFSETS {
        let event = present_event(tracefs, category, events);
        match tracefs::field_offset(tracefs, category, event, field) {
            Ok(off) => offsets.push((*global, off)),
            Err(error) => optional_missing.push((*global, error.to_string())),
        }
    }
    let mut loader = EbpfLoader::new();
    for (global, off) in &offsets {
        loader.override_global(global, off, true);
    }
    if let Some(bytes) = ring_bytes {
        if !bytes.is_power_of_two() || bytes < 4096 {
            return Err(EbpfError::RingSize(bytes));
        }
        loader.map_max_entries("EVENTS", bytes);
    }
    let ebpf = loader.load(OBJECT).map_err(EbpfError::Load)?;
    Ok((ebpf, optional_missing))
}

/// Attach every program group, and prepare the syscall tracepoint groups
/// (the tracepoints to attach on demand); a group that fails is a missing
/// layer (with why), not an error.
fn attach_all(
    ebpf: &mut Ebpf,
    cgroup: &File,
    pins: Option<&Path>,
    tracefs: &Path,
    optional_missing: &[(&str, String)],
) -> (Layers, Vec<Target>) {
    let mut layers = Layers::default();
    let mut missing = Vec::new();
    let mut targets = Vec::new();
    let mut attached = |layer: &str, result: Result<(), String>| match result {
        Ok(()) => true,
        Err(why) => {
            missing.push(format!("{layer}: {why}"));
            false
        }
    };
    layers.ebpf_egress = attached("ebpf_egress", attach_net(ebpf, cgroup, pins));
    layers.ebpf_inbound = attached("ebpf_inbound", attach_inbound(ebpf, cgroup, pins));
    layers.socket_fence = attached("socket_fence", attach_sock(ebpf, cgroup, pins));
    layers.pinned_enforcement =
        pins.is_some() && layers.ebpf_egress && layers.ebpf_inbound && layers.socket_fence;
    let mut on_demand = |found: Result<Vec<Target>, String>| found.map(|t| targets.extend(t));
    let proc = attach_tracepoints(ebpf, PROC_PROGRAMS)
        .and_then(|()| on_demand(prepare_tracepoints(ebpf, tracefs, EXEC_PROGRAMS)));
    layers.audit_proc = attached("audit_proc", proc);
    let open = on_demand(prepare_tracepoints(ebpf, tracefs, OPEN_PROGRAMS));
    layers.audit_open = attached("audit_open", open);
    let link = on_demand(prepare_tracepoints(ebpf, tracefs, PAIR_PROGRAMS));
    layers.audit_link = attached("audit_link", link);
    let unix = on_demand(prepare_tracepoints(ebpf, tracefs, UNIX_PROGRAMS));
    layers.audit_unix = attached("audit_unix", unix);
    let watched = on_demand(prepare_watched(ebpf, tracefs));
    layers.audit_syscalls = attached("audit_syscalls", watched);
    let attrs = on_demand(prepare_attrs(ebpf, tracefs));
    layers.audit_attrs = attached("audit_attrs", attrs);
    let io_uring = match optional_missing
        .iter()
        .find(|(g, _)| *g == "OFF_IO_URING_OPCODE")
    {
        Some((_, why)) => Err(why.clone()),
        None => attach_tracepoints(
            ebpf,
            &[(
                IO_URING_PROGRAM,
                "io_uring",
                present_event(tracefs, "io_uring", &IO_URING_SUBMIT),
            )],
        ),
    };
    layers.audit_io_uring = attached("audit_io_uring", io_uring);
    layers.missing = missing;
    (layers, targets)
}

/// Take a map out of the object as its typed handle.
fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, EbpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(EbpfError::MissingMap(name))?;
    T::try_from(map).map_err(|source| EbpfError::Map { name, source })
}

fn attach_sock(ebpf: &mut Ebpf, cgroup: &File, pins: Option<&Path>) -> Result<(), String> {
    let prog: &mut CgroupSock = ebpf
        .program_mut("sock_create")
        .ok_or("program sock_create missing")?
        .try_into()
        .map_err(|e| format!("sock_create: {e}"))?;
    prog.load().map_err(|e| format!("sock_create: load: {e}"))?;
    let id = prog
        .attach(cgroup.as_fd(), CgroupAttachMode::Single)
        .map_err(|e| format!("sock_create: attach: {e}"))?;
    if let Some(dir) = pins {
        let link = prog
            .take_link(id)
            .map_err(|e| format!("sock_create: {e}"))?;
        pin(link, dir, "sock_create")?;
    }
    Ok(())
}

/// Pins `link` as `dir/name`. A failed pin drops (detaches) the link, and
/// the caller reports the layer missing: launches that need it fail closed.
fn pin<L>(link: L, dir: &Path, name: &str) -> Result<(), String>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    let fd = FdLink::try_from(link).map_err(|e| format!("{name}: not a bpf_link: {e}"))?;
    fd.pin(dir.join(name))
        .map_err(|e| format!("{name}: pin in {}: {e}", dir.display()))?;
    Ok(())
}

fn attach_net(ebpf: &mut Ebpf, cgroup: &File, pins: Option<&Path>) -> Result<(), String> {
    attach_sock_addr(ebpf, cgroup, pins, NET_PROGRAMS)
}

/// The bind hooks and the ingress filter (see `mcpguard-ebpf/src/inbound.rs`).
fn attach_inbound(ebpf: &mut Ebpf, cgroup: &File, pins: Option<&Path>) -> Result<(), String> {
    attach_sock_addr(ebpf, cgroup, pins, BIND_PROGRAMS)?;
    let name = "inbound";
    let prog: &mut CgroupSkb = ebpf
        .program_mut(name)
        .ok_or("program inbound missing")?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))?;
    prog.load().map_err(|e| format!("{name}: load: {e}"))?;
    let id = prog
        .attach(
            cgroup.as_fd(),
            CgroupSkbAttachType::Ingress,
            CgroupAttachMode::Single,
        )
        .map_err(|e| format!("{name}: attach: {e}"))?;
    if let Some(dir) = pins {
        let link = prog.take_link(id).map_err(|e| format!("{name}: {e}"))?;
        pin(link, dir, name)?;
    }
    Ok(())
}

fn attach_sock_addr(
    ebpf: &mut Ebpf,
    cgroup: &File,
    pins: Option<&Path>,
    names: &[&str],
) -> Result<(), String> {
    for name in names {
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("program {name} missing"))?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        prog.load().map_err(|e| format!("{name}: load: {e}"))?;
        let id = prog
            .attach(cgroup.as_fd(), CgroupAttachMode::Single)
            .map_err(|e| format!("{name}: attach: {e}"))?;
        if let Some(dir) = pins {
            let link = prog.take_link(id).map_err(|e| format!("{name}: {e}"))?;
            pin(link, dir, name)?;
        }
    }
    Ok(())
}

/// Fills `SYSCALL_AUDIT` from the seccomp fence's table, loads the one
/// watcher program and returns each syscall's exit tracepoint as a target.
/// A syscall this kernel lacks (no tracepoint: e.g. `init_module` without
/// module support) has nothing to record and is skipped.
fn prepare_watched(ebpf: &mut Ebpf, tracefs: &Path) -> Result<Vec<Target>, String> {
    let mut modes: HashMap<&mut MapData, u32, u32> = ebpf
        .map_mut("SYSCALL_AUDIT")
        .ok_or("map SYSCALL_AUDIT missing")?
        .try_into()
        .map_err(|e| format!("SYSCALL_AUDIT: {e}"))?;
    let watched: Vec<_> = crate::kernel::syscalls::audited().collect();
    for (name, nr, audit) in &watched {
        let mode = match audit {
            Audit::Failures => syscall_audit::FAILURES,
            _ => syscall_audit::ALWAYS,
        };
        modes
            .insert(nr, mode, 0)
            .map_err(|e| format!("SYSCALL_AUDIT[{name}]: {e}"))?;
    }
    load_tracepoint(ebpf, "sys_exit_watched")?;
    let mut targets = Vec::new();
    for (name, _, _) in &watched {
        // Tracepoints are named after SYSCALL_DEFINE, not the libc name.
        let event = match *name {
            "umount2" => "sys_exit_umount".to_owned(),
            _ => format!("sys_exit_{name}"),
        };
        if !tracefs.join("events/syscalls").join(&event).exists() {
            debug!(
                syscall = name,
                "no exit tracepoint: syscall not in this kernel"
            );
            continue;
        }
        targets.push(target(tracefs, "sys_exit_watched", "syscalls", event)?);
    }
    Ok(targets)
}

/// Fills `ATTR_CALLS` from this kernel's format files, loads the attribute
/// programs and returns each watched call's enter and exit tracepoints as
/// targets ([`crate::kernel::attrs`], [`attrs`]). A call this kernel lacks
/// is skipped.
fn prepare_attrs(ebpf: &mut Ebpf, tracefs: &Path) -> Result<Vec<Target>, String> {
    let mut table: HashMap<&mut MapData, u32, mcpguard_common::policy::AttrArgs> = ebpf
        .map_mut("ATTR_CALLS")
        .ok_or("map ATTR_CALLS missing")?
        .try_into()
        .map_err(|e| format!("ATTR_CALLS: {e}"))?;
    let mut present = Vec::new();
    for c in crate::kernel::attrs::calls() {
        match attrs::args_of(tracefs, &c).map_err(|e| e.to_string())? {
            Some(args) => {
                table
                    .insert(c.nr, args, 0)
                    .map_err(|e| format!("ATTR_CALLS[{}]: {e}", c.name))?;
                present.push(c.name);
            }
            None => debug!(
                syscall = c.name,
                "no tracepoint: syscall not in this kernel"
            ),
        }
    }
    let mut targets = Vec::new();
    for (prog, phase) in [("sys_enter_attr", "enter"), ("sys_exit_attr", "exit")] {
        load_tracepoint(ebpf, prog)?;
        for name in &present {
            targets.push(target(
                tracefs,
                prog,
                "syscalls",
                format!("sys_{phase}_{name}"),
            )?);
        }
    }
    Ok(targets)
}

/// Loads each of `progs` and returns their tracepoints as targets.
fn prepare_tracepoints(
    ebpf: &mut Ebpf,
    tracefs: &Path,
    progs: &[(&'static str, &'static str, &str)],
) -> Result<Vec<Target>, String> {
    let mut targets = Vec::with_capacity(progs.len());
    for (name, category, event) in progs {
        load_tracepoint(ebpf, name)?;
        targets.push(target(tracefs, name, category, (*event).to_owned())?);
    }
    Ok(targets)
}

fn load_tracepoint(ebpf: &mut Ebpf, name: &str) -> Result<(), String> {
    let prog: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))?;
    prog.load().map_err(|e| format!("{name}: load: {e}"))
}

/// A tracepoint to attach on demand, once tracefs has shown it exists (its
/// id is what attaching opens): a kernel without it is a missing layer at
/// start, not a refused launch later.
fn target(
    tracefs: &Path,
    program: &'static str,
    category: &'static str,
    event: String,
) -> Result<Target, String> {
    let id = tracefs
        .join("events")
        .join(category)
        .join(&event)
        .join("id");
    std::fs::read_to_string(&id).map_err(|e| {
        format!(
            "{program}: tracepoint {category}/{event}: {}: {e}",
            id.display()
        )
    })?;
    Ok(Target {
        program,
        category,
        event,
    })
}

/// The first of `events` (one tracepoint's names across kernels) tracefs
/// has under `category`; the first if none (its error then says which).
fn present_event<'a>(tracefs: &Path, category: &str, events: &[&'a str]) -> &'a str {
    events
        .iter()
        .find(|e| tracefs.join("events").join(category).join(e).exists())
        .or(events.first())
        .copied()
        .unwrap_or_default()
}

/// Loads and attaches each of `progs` for the daemon's life (tracepoints
/// with no syscall-path cost only).
fn attach_tracepoints(ebpf: &mut Ebpf, progs: &[(&str, &str, &str)]) -> Result<(), String> {
    for (name, category, event) in progs {
        load_tracepoint(ebpf, name)?;
        let prog: &mut TracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("program {name} missing"))?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        prog.attach(category, event)
            .map_err(|e| format!("{name}: attach {category}/{event}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A global the programs read but the loader never sets stays 0, and
    /// the program then reads the wrong tracepoint field without a word:
    /// every offset the eBPF crate declares must be in [`OFFSETS`].
    #[test]
    fn every_offset_the_programs_read_is_set_at_load() {
        let declared = include_str!("../../../mcpguard-ebpf/src/offsets.rs");
        let names: Vec<&str> = declared
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("OFF_"))
            .map(|l| l.trim_end_matches(','))
            .collect();
        assert!(names.len() >= 20, "{names:?}");
        let known = || {
            let optional = OPTIONAL_OFFSETS.iter().map(|(g, ..)| *g);
            OFFSETS.iter().map(|(g, ..)| *g).chain(optional)
        };
        for name in &names {
            assert!(
                known().any(|g| g == *name),
                "{name} is declared in mcpguard-ebpf/src/offsets.rs but never set by the loader"
            );
        }
        assert_eq!(names.len(), known().count());
    }
}
