//! `mcpguard daemon`: probe the kernel, load the programs, own the cgroup
//! subtree, and serve launch requests on a Unix socket until SIGTERM.
//! SIGHUP reopens the audit log (after rotation).

pub mod admit;
pub mod approvals;
pub mod auditor;
pub mod budget;
pub mod call_net;
pub mod in_call;
pub mod landlock_audit;
pub mod lock;
pub mod mint;
pub mod persist;
pub mod persist_fence;
pub mod plan;
pub mod proto;
pub mod query;
pub mod relay;
pub mod secrets;
pub mod service;
pub mod session;
pub mod shared;
pub mod sockets;
pub mod stats;
pub mod status;
pub mod stdio;

use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::Sender,
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;
use thiserror::Error;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use self::{secrets::SecretStore, shared::Shared};
use crate::{
    audit::{writer::AuditWriter, AuditRecord, Body},
    ebpf::{self, Layers},
    kernel,
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
    /// Where the helpers of `[secrets]` `mint` entries live.
    pub minters_dir: PathBuf,
    /// Where servers' allowed DNS queries go; default: the first
    /// nameserver of /etc/resolv.conf.
    pub upstream_dns: Option<std::net::SocketAddr>,
    /// When the audit log is rotated and how many old files are kept.
    pub rotation: crate::audit::writer::Rotation,
    /// Each server's record budget.
    pub budget: budget::BudgetConfig,
    /// How many servers a user may run and start at once.
    pub launch_limits: admit::LaunchLimits,
}

/// What the startup probe found, written in the daemon's start record.
#[derive(Debug, Serialize)]
struct Probe {
    cgroup2: String,
    landlock_abi: Option<u32>,
    #[serde(flatten)]
    layers: Layers,
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
    let (tree, limits) = own_cgroups(&mount, &cfg.cgroup_name)?;
    let landlock_abi = probe_landlock();
    // After reap_stale: the previous daemon's servers are gone, so its
    // pinned links can go too.
    let pins = prepare_pins(&cfg.cgroup_name);
    let mut loaded = ebpf::load(&tree.root, cfg.ring_bytes, pins.as_deref())?;
    let landlock_audit = landlock_audit_setup(&mut loaded.layers);
    log_layers(&loaded.layers);
    log_guarantees(plan::kernel_facts(&loaded.layers, landlock_abi));
    info!(
        layer = "syscall_tracepoints",
        tracepoints = loaded.tracepoints.state().programs,
        "loaded, not attached: attached only while a server runs (while attached, every syscall on the machine takes the slow path)"
    );
    let upstream_dns = upstream_dns(cfg.upstream_dns);

    let probe = Probe {
        cgroup2: mount.display().to_string(),
        landlock_abi,
        layers: loaded.layers.clone(),
    };
    let gate = Arc::new(in_call::InCallGate::new(loaded.in_call));
    let call_net = Arc::new(call_net::CallNetwork::default());
    let audit = Audit::start(&cfg, loaded.audit, gate, call_net.clone(), &probe)?;
    let landlock_audit = landlock_audit
        .map(|setup| {
            landlock_audit::LandlockAudit::spawn(
                setup,
                audit.tx.clone(),
                audit.calls.clone(),
                audit.budgets.clone(),
            )
        })
        .transpose()?;
    let shared = Arc::new(Shared {
        tree,
        limits,
        layers: loaded.layers,
        policy_maps: Mutex::new(loaded.policy),
        audit: Mutex::new(audit.tx.clone()),
        next_launch: AtomicU64::new(1),
        servers: Mutex::new(HashMap::new()),
        shutting_down: AtomicBool::new(false),
        sessions: AtomicUsize::new(0),
        calls: audit.calls.clone(),
        approvals: Arc::default(),
        call_net,
        secrets: SecretStore {
            dir: cfg.secrets_dir.clone(),
            credentials: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        },
        minters: mint::Minters {
            dir: cfg.minters_dir.clone(),
        },
        state_dir: cfg.state_dir.clone(),
        upstream_dns,
        info: shared::DaemonInfo::new(started, cfg.audit_log.clone()),
        admission: admit::Admission::new(cfg.launch_limits),
        budgets: audit.budgets.clone(),
        landlock_audit,
        tracepoints: loaded.tracepoints,
    });

    // Handlers before READY=1: a SIGTERM right after it must shut down
    // cleanly, not kill the daemon.
    let mut signals = Signals::install()?;
    let listener = bind(&cfg.socket)?;
    info!(socket = %cfg.socket.display(), audit_log = %cfg.audit_log.display(), "mcpguard daemon ready");
    service::ready(notifier.as_ref(), &cfg.socket, &shared.layers);
    serve(&shared, &listener, &mut signals, &cfg.audit_log).await;

    service::stopping(notifier.as_ref());
    shutdown(&shared, &cfg.socket).await;
    // Servers are gone: detach the syscall tracepoints in parallel now, or
    // the exit would close them one at a time (ten seconds).
    let tracepoints = shared.tracepoints.clone();
    if let Err(error) = tokio::task::spawn_blocking(move || tracepoints.detach_now()).await {
        warn!(%error, "detaching the syscall tracepoints at shutdown failed");
    }
    // Its last records (and losses) go in before the stop record.
    if let Some(reader) = &shared.landlock_audit {
        reader.stop();
    }
    // Servers are gone: enforcement need not outlive this daemon.
    if let Some(dir) = &pins {
        if let Err(error) = ebpf::pins::remove_all(dir).and_then(|_| std::fs::remove_dir(dir)) {
            warn!(dir = %dir.display(), %error, "cannot remove pinned links");
        }
    }
    audit.stop().await;
    info!(
        uptime_s = started.elapsed().as_secs(),
        "mcpguard daemon stopped"
    );
    Ok(())
}

/// Create the daemon's cgroup subtree (below the one systemd delegated,
/// if it did), remove what a previous daemon left in it, and set up the
/// tree servers' `[limits]` are written to.
fn own_cgroups(mount: &Path, name: &str) -> Result<(CgroupTree, LimitTree), DaemonError> {
    let delegated = service::delegated_cgroup(mount);
    if let Some(parent) = &delegated {
        info!(
            layer = "cgroup2",
            parent, "systemd delegated this cgroup: servers live below it"
        );
    }
    let parent = delegated.as_deref().unwrap_or("");
    let tree = CgroupTree::create_in(mount, parent, name)?;
    let reaped = tree.reap_stale()?;
    if reaped > 0 {
        warn!(count = reaped, "removed cgroups left by a previous daemon");
    }
    let limits = LimitTree::setup(mount, &tree, name);
    Ok((tree, limits))
}

/// The Landlock ABI, logged with what it offers.
fn probe_landlock() -> Option<u32> {
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
    landlock_abi
}

/// Each guarantee class the kernel's Landlock ABI decides, with the layer
/// holding it here; a missing one is a warning, since launches that need
/// it are refused unless their policy accepts running without it.
fn log_guarantees(facts: kernel::coverage::Facts) {
    for row in kernel::coverage::table(facts) {
        let (class, held_by) = (row.class.name(), row.held_by_names());
        match row.state {
            kernel::coverage::State::Held => {
                info!(class, held_by, detail = %row.detail, "guarantee held");
            }
            kernel::coverage::State::Weaker => {
                warn!(class, held_by, detail = %row.detail, "WEAKER guarantee on this kernel");
            }
            kernel::coverage::State::Missing => warn!(
                class,
                detail = %row.detail,
                "MISSING guarantee: launches are refused unless the policy's [kernel] accept_weaker names it"
            ),
        }
    }
}

/// The bpffs directory enforcement links are pinned in, emptied of a
/// previous daemon's; `None` (logged) when there is none.
fn prepare_pins(cgroup_name: &str) -> Option<PathBuf> {
    match ebpf::pins::prepare(cgroup_name) {
        Ok(dir) => Some(dir),
        Err(error) => {
            warn!(layer = "bpffs", %error, "MISSING: pinned enforcement (egress stops if the daemon dies; servers are killed instead)");
            None
        }
    }
}

/// One eBPF layer the log reports at startup: its name, whether it is
/// active, and what it does.
type LayerLog = (&'static str, fn(&Layers) -> bool, &'static str);

/// Each eBPF layer the log reports at startup.
const LAYER_LOG: &[LayerLog] = &[
    (
        "ebpf_egress",
        |l| l.ebpf_egress,
        "cgroup connect4/6 + sendmsg4/6 verdicts",
    ),
    (
        "ebpf_inbound",
        |l| l.ebpf_inbound,
        "cgroup bind4/6 + cgroup_skb ingress: binds and inbound packets only on [network] bind ports",
    ),
    (
        "socket_fence",
        |l| l.socket_fence,
        "cgroup sock_create: raw and ICMP sockets only where named (other families: seccomp, per launch)",
    ),
    (
        "pinned_enforcement",
        |l| l.pinned_enforcement,
        "egress, inbound and socket-fence links pinned in bpffs: they outlive the daemon",
    ),
    ("audit_proc", |l| l.audit_proc, "exec/fork/exit records"),
    (
        "audit_open",
        |l| l.audit_open,
        "file open records (syscall tracepoints)",
    ),
    (
        "audit_link",
        |l| l.audit_link,
        "link, symlink and rename records (syscall tracepoints)",
    ),
    (
        "audit_unix",
        |l| l.audit_unix,
        "Unix-socket connect records (syscall tracepoints)",
    ),
    (
        "audit_io_uring",
        |l| l.audit_io_uring,
        "records of io_uring requests (for servers allowed io_uring)",
    ),
    (
        "audit_landlock",
        |l| l.audit_landlock,
        "Landlock's own denial records (kernel audit read-log, ABI 7+)",
    ),
    (
        "audit_syscalls",
        |l| l.audit_syscalls,
        "records of fenced and cross-process syscalls (syscall exit tracepoints)",
    ),
    (
        "audit_attrs",
        |l| l.audit_attrs,
        "records of refused chmod/chown/utimes/xattr/truncate/mknod calls (syscall tracepoints)",
    ),
];

fn log_layers(layers: &Layers) {
    info!(
        layer = "tracefs",
        "tracefs available, tracepoint formats read"
    );
    for (layer, active, what) in LAYER_LOG {
        log_layer(layer, active(layers), what, layers);
    }
}

/// Joins the kernel audit read-log for Landlock's denial records; the
/// layer is missing, with the reason, when that cannot be done (see
/// [`landlock_audit`] for what it changes on the machine).
fn landlock_audit_setup(layers: &mut Layers) -> Option<landlock_audit::Setup> {
    if crate::launch::probe_landlock_abi().is_none_or(|abi| abi < 7) {
        layers
            .missing
            .push("audit_landlock: the kernel's Landlock has no audit records (ABI < 7)".into());
        return None;
    }
    match landlock_audit::setup() {
        Ok(setup) => {
            if let Some(pid) = setup.beside_auditd {
                info!(
                    layer = "audit_landlock",
                    auditd = pid,
                    "audit daemon registered: its configuration is left as it is"
                );
            }
            for change in &setup.changes {
                info!(layer = "audit_landlock", "{change}");
            }
            layers.audit_landlock = true;
            Some(setup)
        }
        Err(error) => {
            layers.missing.push(format!("audit_landlock: {error}"));
            None
        }
    }
}

/// Where servers' allowed DNS queries go: `configured`, or the first
/// nameserver of /etc/resolv.conf.
fn upstream_dns(configured: Option<std::net::SocketAddr>) -> Option<std::net::SocketAddr> {
    let upstream_dns = configured.or_else(|| {
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
    upstream_dns
}

/// The audit thread, from the daemon's start record to its stop record.
struct Audit {
    tx: Sender<auditor::Msg>,
    thread: std::thread::JoinHandle<()>,
    calls: Arc<CallTracker>,
    budgets: Arc<budget::Budgets>,
    /// What the startup probe found, repeated in the stop record.
    probe: serde_json::Value,
}

impl Audit {
    /// Open the log, start the thread and write the start record.
    fn start(
        cfg: &Config,
        maps: ebpf::AuditMaps,
        gate: Arc<in_call::InCallGate>,
        call_net: Arc<call_net::CallNetwork>,
        probe: &Probe,
    ) -> Result<Audit, DaemonError> {
        let writer = AuditWriter::open_rotating(&cfg.audit_log, cfg.audit_backlog, cfg.rotation)?;
        let calls = Arc::new(CallTracker::with_gate(gate).watched(call_net));
        let budgets = Arc::new(budget::Budgets::new(cfg.budget));
        let (tx, thread) = auditor::spawn(maps, writer, calls.clone(), budgets.clone())?;
        let audit = Audit {
            tx,
            thread,
            calls,
            budgets,
            probe: serde_json::to_value(probe).unwrap_or_default(),
        };
        let _ = audit
            .tx
            .send(auditor::Msg::Record(audit.daemon_record("start")));
        Ok(audit)
    }

    fn daemon_record(&self, event: &str) -> AuditRecord {
        AuditRecord::new(
            Body::Daemon {
                event: event.into(),
                layers: self.probe.clone(),
            },
            None,
            SystemTime::now(),
        )
    }

    /// Let the thread drain, write the stop record last, flush and end.
    async fn stop(self) {
        let record = Box::new(self.daemon_record("stop"));
        let _ = self.tx.send(auditor::Msg::Stop(record));
        drop(self.tx);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// The signals the daemon handles: SIGTERM and SIGINT stop it, SIGHUP
/// reopens the audit log.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Accept connections, each served on its own thread, until SIGTERM or
/// SIGINT.
async fn serve(
    shared: &Arc<Shared>,
    listener: &tokio::net::UnixListener,
    signals: &mut Signals,
    audit_log: &Path,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => spawn_session(shared, stream),
                Err(error) => warn!(%error, "accept failed"),
            },
            _ = signals.term.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = signals.int.recv() => { info!("SIGINT: shutting down"); break; }
            _ = signals.hup.recv() => {
                info!(audit_log = %audit_log.display(), "SIGHUP: reopening the audit log");
                shared.audit(auditor::Msg::Reopen);
            }
        }
    }
}

/// Serve one connection on a thread of its own, counted in `sessions`.
fn spawn_session(shared: &Arc<Shared>, stream: tokio::net::UnixStream) {
    let stream = match stream.into_std().and_then(|s| {
        s.set_nonblocking(false)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(error) => {
            warn!(%error, "accepting a connection");
            return;
        }
    };
    let session_shared = shared.clone();
    shared.sessions.fetch_add(1, Ordering::SeqCst);
    let spawned = std::thread::Builder::new()
        .name("session".into())
        .spawn(move || {
            session::serve(session_shared.clone(), stream);
            session_shared.sessions.fetch_sub(1, Ordering::SeqCst);
        });
    if let Err(error) = spawned {
        shared.sessions.fetch_sub(1, Ordering::SeqCst);
        error!(%error, "cannot start a session thread");
    }
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
