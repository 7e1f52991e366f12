//! `mcpguard daemon`: probe the kernel, load the programs, own the cgroup
//! subtree, and serve launch requests on a Unix socket until SIGTERM.
//! SIGHUP reopens the audit log (after rotation).

pub mod auditor;
pub mod budget;
pub mod lock;
pub mod persist;
pub mod persist_fence;
pub mod plan;
pub mod proto;
pub mod relay;
pub mod secrets;
pub mod service;
pub mod session;
pub mod sockets;
pub mod status;

use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::Sender,
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;
use thiserror::Error;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use self::secrets::SecretStore;
use crate::{
    audit::{writer::AuditWriter, AuditRecord, Body},
    ebpf::{self, Layers, PolicyMaps},
    launch::{
        self,
        cgroup::{Cgroup, CgroupTree},
        limits::LimitTree,
    },
    mcp::CallTracker,
};

pub const DEFAULT_SOCKET: &str = "/run/mcpguard/mcpguard.sock";
pub const DEFAULT_AUDIT_LOG: &str = "/var/log/mcpguard/audit.jsonl";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mcpguard";
pub const DEFAULT_SECRETS_DIR: &str = "/etc/mcpguard/secrets";

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("the daemon must run as root (it loads eBPF programs, manages cgroups and drops to each caller's uid)")]
    NotRoot,
    #[error("cgroup v2: {0}")]
    Cgroup(#[from] launch::cgroup::CgroupError),
    #[error("eBPF: {0}")]
    Ebpf(#[from] ebpf::EbpfError),
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit::writer::WriterError),
    #[error("another daemon is already serving {0}")]
    AlreadyRunning(PathBuf),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Config {
    pub socket: PathBuf,
    pub audit_log: PathBuf,
    /// Bytes of audit records kept in memory while the log cannot be
    /// written (default `writer::DEFAULT_BACKLOG_BYTES`).
    pub audit_backlog: usize,
    /// Name of the cgroup subtree under the cgroup v2 root.
    pub cgroup_name: String,
    /// Audit ring buffer size (default `limits::RING_BYTES`).
    pub ring_bytes: Option<u32>,
    /// Root-owned state: tool pins.
    pub state_dir: PathBuf,
    /// Where `[secrets]` files may live.
    pub secrets_dir: PathBuf,
    /// Where servers' allowed DNS queries go; default: the first
    /// nameserver of /etc/resolv.conf.
    pub upstream_dns: Option<std::net::SocketAddr>,
    /// When the audit log is rotated and how many old files are kept.
    pub rotation: crate::audit::writer::Rotation,
    /// Each server's record budget.
    pub budget: budget::BudgetConfig,
    /// How many servers a user may run and start at once.
    pub launch_limits: status::LaunchLimits,
}

/// What the startup probe found, written in the daemon's start record.
#[derive(Debug, Serialize)]
struct Probe {
    cgroup2: String,
    landlock_abi: Option<u32>,
    #[serde(flatten)]
    layers: Layers,
}

/// State every session shares.
pub struct Shared {
    pub tree: CgroupTree,
    /// Where servers' `[limits]` are written.
    pub limits: LimitTree,
    pub layers: Layers,
    policy_maps: Mutex<PolicyMaps>,
    audit: Mutex<Sender<auditor::Msg>>,
    next_launch: AtomicU64,
    servers: Mutex<HashMap<u64, Arc<Cgroup>>>,
    shutting_down: AtomicBool,
    sessions: AtomicUsize,
    /// In-flight MCP tool calls, for tying kernel records to them.
    pub calls: Arc<CallTracker>,
    pub secrets: SecretStore,
    pub state_dir: PathBuf,
    /// Upstream resolver for allowed names (none: they get SERVFAIL).
    pub upstream_dns: Option<std::net::SocketAddr>,
    /// Uptime, log path and query limits for `mcpguard status`/`audit`.
    pub info: status::DaemonInfo,
    /// Every server's record budget.
    pub budgets: Arc<budget::Budgets>,
}

impl Shared {
    pub fn policy_maps(&self) -> MutexGuard<'_, PolicyMaps> {
        self.policy_maps.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Hand a message to the audit thread; a record of a server over its
    /// budget is counted there instead ([`budget`]).
    pub fn audit(&self, msg: auditor::Msg) {
        if let auditor::Msg::Record(rec) = &msg {
            if !self.budgets.admit(budget::Source::of(&rec.body), rec) {
                return;
            }
        }
        let tx = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        if tx.send(msg).is_err() {
            error!("the audit thread is gone; a record was not written");
        }
    }
    pub fn next_launch(&self) -> u64 {
        self.next_launch.fetch_add(1, Ordering::Relaxed)
    }
    pub fn register_server(&self, launch: u64, cgroup: Arc<Cgroup>) {
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(launch, cgroup);
    }
    pub fn unregister_server(&self, launch: u64) {
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&launch);
    }
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

pub async fn run(cfg: Config) -> Result<(), DaemonError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DaemonError::NotRoot);
    }
    return_big_buffers();
    // Before anything is touched: another daemon's tree would be reaped
    // as leftovers, its pins replaced, its socket taken over.
    let _locks = lock::acquire(Path::new(lock::LOCK_DIR), &cfg.cgroup_name, &cfg.socket)?;
    let started = Instant::now();
    let mount = launch::cgroup::cgroup2_mount()?;
    info!(layer = "cgroup2", path = %mount.display(), "cgroup v2 hierarchy found");
    let notifier = service::notifier();
    let delegated = service::delegated_cgroup(&mount);
    if let Some(parent) = &delegated {
        info!(
            layer = "cgroup2",
            parent, "systemd delegated this cgroup: servers live below it"
        );
    }
    let parent = delegated.as_deref().unwrap_or("");
    let tree = CgroupTree::create_in(&mount, parent, &cfg.cgroup_name)?;
    let reaped = tree.reap_stale()?;
    if reaped > 0 {
        warn!(count = reaped, "removed cgroups left by a previous daemon");
    }
    let limits = LimitTree::setup(&mount, &tree, &cfg.cgroup_name);

    let landlock_abi = launch::probe_landlock_abi();
    match landlock_abi {
        Some(abi) => info!(
            layer = "landlock",
            abi,
            net = abi >= 4,
            scopes = abi >= 6,
            "Landlock available: filesystem rules{}{}",
            if abi >= 4 { ", TCP port rules" } else { "" },
            if abi >= 6 {
                ", signal and abstract-socket scoping"
            } else {
                ""
            }
        ),
        None => warn!(
            layer = "landlock",
            "Landlock unavailable: launches will be refused (policies need filesystem rules)"
        ),
    }
    // After reap_stale: the previous daemon's servers are gone, so its
    // pinned links can go too.
    let pins = match ebpf::pins::prepare(&cfg.cgroup_name) {
        Ok(dir) => Some(dir),
        Err(error) => {
            warn!(layer = "bpffs", %error, "MISSING: pinned enforcement (egress stops if the daemon dies; servers are killed instead)");
            None
        }
    };

    let loaded = ebpf::load(&tree.root, cfg.ring_bytes, pins.as_deref())?;
    let layers = loaded.layers.clone();
    info!(
        layer = "tracefs",
        "tracefs available, tracepoint formats read"
    );
    log_layer(
        "ebpf_egress",
        layers.ebpf_egress,
        "cgroup connect4/6 + sendmsg4/6 verdicts",
        &layers,
    );
    log_layer(
        "ebpf_inbound",
        layers.ebpf_inbound,
        "cgroup bind4/6 + cgroup_skb ingress: binds and inbound packets only on [network] bind ports",
        &layers,
    );
    log_layer(
        "socket_fence",
        layers.socket_fence,
        "cgroup sock_create: raw and ICMP sockets only where named (other families: seccomp, per launch)",
        &layers,
    );
    log_layer(
        "pinned_enforcement",
        layers.pinned_enforcement,
        "egress, inbound and socket-fence links pinned in bpffs: they outlive the daemon",
        &layers,
    );
    log_layer(
        "audit_proc",
        layers.audit_proc,
        "exec/fork/exit records",
        &layers,
    );
    log_layer(
        "audit_open",
        layers.audit_open,
        "file open records (syscall tracepoints)",
        &layers,
    );
    log_layer(
        "audit_link",
        layers.audit_link,
        "link, symlink and rename records (syscall tracepoints)",
        &layers,
    );
    log_layer(
        "audit_unix",
        layers.audit_unix,
        "Unix-socket connect records (syscall tracepoints)",
        &layers,
    );
    log_layer(
        "audit_io_uring",
        layers.audit_io_uring,
        "records of io_uring requests (for servers allowed io_uring)",
        &layers,
    );
    log_layer(
        "audit_syscalls",
        layers.audit_syscalls,
        "records of fenced and cross-process syscalls (syscall exit tracepoints)",
        &layers,
    );
    log_layer(
        "audit_attrs",
        layers.audit_attrs,
        "records of refused chmod/chown/utimes/xattr/truncate/mknod calls (syscall tracepoints)",
        &layers,
    );

    let upstream_dns = cfg.upstream_dns.or_else(|| {
        std::fs::read_to_string("/etc/resolv.conf")
            .ok()
            .and_then(|t| crate::dns::upstream_from_resolv_conf(&t))
    });
    match upstream_dns {
        Some(addr) => {
            info!(layer = "dns", upstream = %addr, "per-server resolvers forward allowed names upstream")
        }
        None => warn!(
            layer = "dns",
            "no upstream resolver (--upstream-dns, /etc/resolv.conf): allowed names get SERVFAIL"
        ),
    }

    let writer = AuditWriter::open_rotating(&cfg.audit_log, cfg.audit_backlog, cfg.rotation)?;
    let calls = Arc::new(CallTracker::default());
    let budgets = Arc::new(budget::Budgets::new(cfg.budget));
    let (audit_tx, audit_thread) =
        auditor::spawn(loaded.audit, writer, calls.clone(), budgets.clone())?;
    let probe = Probe {
        cgroup2: mount.display().to_string(),
        landlock_abi,
        layers: layers.clone(),
    };
    let probe_json = serde_json::to_value(&probe).unwrap_or_default();
    let _ = audit_tx.send(auditor::Msg::Record(AuditRecord::new(
        Body::Daemon {
            event: "start".into(),
            layers: probe_json.clone(),
        },
        None,
        SystemTime::now(),
    )));

    let shared = Arc::new(Shared {
        tree,
        limits,
        layers,
        policy_maps: Mutex::new(loaded.policy),
        audit: Mutex::new(audit_tx.clone()),
        next_launch: AtomicU64::new(1),
        servers: Mutex::new(HashMap::new()),
        shutting_down: AtomicBool::new(false),
        sessions: AtomicUsize::new(0),
        calls,
        secrets: SecretStore {
            dir: cfg.secrets_dir.clone(),
            credentials: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        },
        state_dir: cfg.state_dir.clone(),
        upstream_dns,
        info: status::DaemonInfo::new(started, cfg.audit_log.clone(), cfg.launch_limits),
        budgets,
    });
    // Programs and links live as long as this value.
    let _programs = loaded.ebpf;

    // Handlers before READY=1: a SIGTERM right after it must shut down
    // cleanly, not kill the daemon.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let listener = bind(&cfg.socket)?;
    info!(socket = %cfg.socket.display(), audit_log = %cfg.audit_log.display(), "mcpguard daemon ready");
    service::ready(notifier.as_ref(), &cfg.socket, &shared.layers);

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let stream = match stream.into_std().and_then(|s| { s.set_nonblocking(false)?; Ok(s) }) {
                        Ok(s) => s,
                        Err(error) => { warn!(%error, "accepting a connection"); continue; }
                    };
                    let session_shared = shared.clone();
                    shared.sessions.fetch_add(1, Ordering::SeqCst);
                    let spawned = std::thread::Builder::new().name("session".into()).spawn(move || {
                        session::serve(session_shared.clone(), stream);
                        session_shared.sessions.fetch_sub(1, Ordering::SeqCst);
                    });
                    if let Err(error) = spawned {
                        shared.sessions.fetch_sub(1, Ordering::SeqCst);
                        error!(%error, "cannot start a session thread");
                    }
                }
                Err(error) => warn!(%error, "accept failed"),
            },
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => {
                info!(audit_log = %cfg.audit_log.display(), "SIGHUP: reopening the audit log");
                shared.audit(auditor::Msg::Reopen);
            }
        }
    }

    service::stopping(notifier.as_ref());
    shutdown(&shared, &cfg.socket).await;
    // Servers are gone: enforcement need not outlive this daemon.
    if let Some(dir) = &pins {
        if let Err(error) = ebpf::pins::remove_all(dir).and_then(|_| std::fs::remove_dir(dir)) {
            warn!(dir = %dir.display(), %error, "cannot remove pinned links");
        }
    }
    let _ = audit_tx.send(auditor::Msg::Record(AuditRecord::new(
        Body::Daemon {
            event: "stop".into(),
            layers: probe_json,
        },
        None,
        SystemTime::now(),
    )));
    let _ = audit_tx.send(auditor::Msg::Stop);
    drop(audit_tx);
    let _ = tokio::task::spawn_blocking(move || audit_thread.join()).await;
    info!(
        uptime_s = started.elapsed().as_secs(),
        "mcpguard daemon stopped"
    );
    Ok(())
}

/// Blocks of at least this size get their own mapping, unmapped on free.
const MMAP_THRESHOLD: libc::c_int = 256 << 10;

/// Make memory for long lines go back to the system once a line is done.
/// glibc raises its mmap threshold after the first large free, and from
/// then on serves lines of a few MiB from per-thread heaps that keep the
/// memory: each relay thread would hold on to the largest lines it ever
/// saw. A fixed threshold keeps those buffers mapped per use.
fn return_big_buffers() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only changes allocator parameters; called before
        // the daemon starts its threads.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) } != 1 {
            warn!("cannot fix the allocator's mmap threshold; long lines may leave memory held");
        }
    }
}

fn log_layer(layer: &str, active: bool, what: &str, layers: &Layers) {
    if active {
        info!(layer, "active: {what}");
    } else {
        let why = layers
            .missing
            .iter()
            .find(|m| m.starts_with(layer))
            .map(String::as_str)
            .unwrap_or("unknown");
        warn!(layer, why, "MISSING: {what}");
    }
}

/// Bind the socket: refuse if a live daemon answers on it, replace a stale
/// one. Any local user may connect: identity comes from SO_PEERCRED and a
/// caller can only launch servers as itself.
fn bind(path: &Path) -> Result<tokio::net::UnixListener, DaemonError> {
    let sock_err = |source| DaemonError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(sock_err)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(sock_err)?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::AlreadyRunning(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(sock_err)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(sock_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(sock_err)?;
    Ok(listener)
}

/// Stop every server and wait (bounded) for their sessions to finish their
/// audit trails.
async fn shutdown(shared: &Arc<Shared>, socket: &Path) {
    shared.shutting_down.store(true, Ordering::SeqCst);
    let _ = std::fs::remove_file(socket);
    let servers: Vec<Arc<Cgroup>> = shared
        .servers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    for cgroup in &servers {
        if let Err(error) = cgroup.kill() {
            warn!(cgroup = %cgroup.path.display(), %error, "killing a server at shutdown");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.sessions.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = shared.sessions.load(Ordering::SeqCst);
    if left > 0 {
        warn!(sessions = left, "sessions still running at shutdown");
    }
    shared.limits.remove();
}
