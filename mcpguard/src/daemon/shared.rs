//! What every connection's thread shares with the daemon ([`Shared`]):
//! the cgroup tree, the kernel's policy maps, the audit thread's channel,
//! the running servers, and what the daemon knows about itself
//! ([`DaemonInfo`]).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::Sender,
        Arc, Mutex, MutexGuard,
    },
    time::{Instant, SystemTime},
};

use tracing::error;

use super::{
    admit::Admission,
    auditor::Msg,
    budget::{Budgets, Source},
    secrets::SecretStore,
};
use crate::{
    ebpf::{demand::Tracepoints, Layers, PolicyMaps},
    launch::{
        cgroup::{Cgroup, CgroupTree},
        limits::LimitTree,
    },
    mcp::CallTracker,
};

/// State every session shares.
pub struct Shared {
    pub tree: CgroupTree,
    /// Where servers' `[limits]` are written.
    pub limits: LimitTree,
    pub layers: Layers,
    pub(super) policy_maps: Mutex<PolicyMaps>,
    pub(super) audit: Mutex<Sender<Msg>>,
    pub(super) next_launch: AtomicU64,
    pub(super) servers: Mutex<HashMap<u64, Arc<Cgroup>>>,
    pub(super) shutting_down: AtomicBool,
    pub(super) sessions: AtomicUsize,
    /// In-flight MCP tool calls, for tying kernel records to them.
    pub calls: Arc<CallTracker>,
    /// Calls that wait for a person, and the sessions that can hold one.
    pub approvals: Arc<super::approvals::Approvals>,
    /// The servers with per-call network rules (told by `calls`).
    pub call_net: Arc<super::call_net::CallNetwork>,
    pub secrets: SecretStore,
    /// Where minted secrets' helpers come from.
    pub minters: super::mint::Minters,
    pub state_dir: PathBuf,
    /// Upstream resolver for allowed names (none: they get SERVFAIL).
    pub upstream_dns: Option<std::net::SocketAddr>,
    /// Uptime and log path for `mcpguard status`/`audit`.
    pub info: DaemonInfo,
    /// The places each uid may hold: connections, queries, launches.
    pub admission: Admission,
    /// Every server's record budget.
    pub budgets: Arc<Budgets>,
    /// The reader of Landlock's own denial records, when the kernel's
    /// audit read-log could be joined.
    pub landlock_audit: Option<super::landlock_audit::LandlockAudit>,
    /// The syscall tracepoints, attached while something holds them; also
    /// owns the loaded programs.
    pub tracepoints: Tracepoints,
}

impl Shared {
    pub fn policy_maps(&self) -> MutexGuard<'_, PolicyMaps> {
        self.policy_maps.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Hand a message to the audit thread; a record of a server over its
    /// budget is counted there instead (`budget`).
    pub fn audit(&self, msg: Msg) {
        if let Msg::Record(rec) = &msg {
            if !self.budgets.admit(Source::of(&rec.body), rec) {
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
    /// Whether the server in `cgroup` has a tool call in flight (as the
    /// tap saw the requests and answers). What `[audit] files = "calls"`
    /// records by; a hook for anything else that should run only then.
    pub fn in_call(&self, cgroup: u64) -> bool {
        self.calls.in_flight(cgroup) > 0
    }
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// What the daemon knows about itself for status, and where its log is.
#[derive(Debug)]
pub struct DaemonInfo {
    pub(super) started: Instant,
    pub(super) started_at: SystemTime,
    pub(super) audit_log: PathBuf,
}

impl DaemonInfo {
    /// `started`: when the daemon began starting up.
    pub fn new(started: Instant, audit_log: PathBuf) -> Self {
        DaemonInfo {
            started,
            started_at: SystemTime::now()
                .checked_sub(started.elapsed())
                .unwrap_or_else(SystemTime::now),
            audit_log,
        }
    }
}
