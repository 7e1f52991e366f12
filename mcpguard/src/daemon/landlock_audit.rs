//! Landlock's own denial records (ABI 7+), read from the kernel's audit
//! read-log and written as `landlock` audit records of the launch whose
//! Landlock domain denied.
//!
//! The kernel logs Landlock denials only while audit is enabled. At start
//! ([`setup`]) the daemon joins the read-log multicast group, which leaves
//! any audit daemon and journald's reader as they are. With an audit daemon
//! registered it changes nothing. Without one it loads `-a never,task`
//! first (so tasks forked while audit is on get no per-syscall audit work),
//! then enables audit and raises `backlog_limit` to [`BACKLOG_LIMIT`] (the
//! default 64 drops bursts). It never removes the rule: `audit_ever_enabled`
//! stays set until reboot, and without the rule every task forked later
//! would take the audit syscall path. It leaves audit enabled at exit too:
//! another daemon (or a second instance) may be reading, and turning audit
//! off under it would silently stop its records.
//!
//! Access records carry only a domain id. A domain's `allocated` record
//! (after its first logged denial) names the pid that called
//! `landlock_restrict_self`, which for a guarded server is the launcher,
//! i.e. the server's main pid ([`LandlockAudit::launched`]). Records of a
//! domain not yet placed are held (bounded in count and time); a domain
//! whose pid is none of this daemon's launches is another Landlock user's
//! and its records are dropped. A domain's `deallocated` record gives its
//! exact denial count: what did not arrive becomes a `loss` record
//! (`"source": "landlock"`), and so do records that could not be placed or
//! held, and growth of the kernel's own `lost` counter (`"kernel_audit"`).

use std::{
    collections::HashMap,
    sync::{
        mpsc::{Receiver, Sender, SyncSender, TryRecvError},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use thiserror::Error;
use tracing::{debug, info, warn};

use super::{
    auditor::Msg,
    budget::{Budgets, Source},
};
use crate::{
    audit::{
        decode::boot_ns,
        landlock::{self, Denial, Event, Stamp},
        AuditRecord, Body, Origin,
    },
    kernel::audit_netlink::{AuditNetlinkError, Control, ReadLog, Received},
    mcp::{redact::Redactor, CallTracker},
};

/// The kernel's audit queue length the daemon asks for: with 8192 and an
/// 8 MB receive buffer a 60,000-denial burst arrived whole; the default 64
/// lost two thirds of it.
pub const BACKLOG_LIMIT: u32 = 8192;
const RCVBUF: usize = 8 << 20;
/// How long one wait for records lasts before timers get a turn.
const TICK: Duration = Duration::from_millis(100);
/// A domain whose `allocated` pid is no launch (yet): the session may not
/// have registered its server's pid when the first denial is logged.
const PENDING_WAIT: Duration = Duration::from_secs(2);
/// A domain seen without its `allocated` record (lost) is given up on.
const UNALLOCATED_WAIT: Duration = Duration::from_secs(10);
/// An ended launch is kept this long for its domain's `deallocated` record.
const LAUNCH_GRACE: Duration = Duration::from_secs(30);
/// Records held per domain not yet placed, and such domains at once.
const MAX_HELD: usize = 256;
const MAX_DOMAINS: usize = 1024;
/// How long a finishing session waits for the reader to catch up.
const FINISH_WAIT: Duration = Duration::from_millis(500);
/// How long the reader waits at shutdown for its domains' last records.
const STOP_WAIT: Duration = Duration::from_secs(1);
/// How far after its audit stamp a denial may have happened: the stamp
/// comes from the coarse realtime clock (one tick behind at most, 10 ms at
/// HZ=100) and is cut to milliseconds.
const STAMP_SLACK: Duration = Duration::from_millis(11);
/// How often the kernel's `lost` counter is read.
const STATUS_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum LandlockAuditError {
    #[error("the kernel was booted with audit=0")]
    BootedOff,
    #[error(transparent)]
    Netlink(#[from] AuditNetlinkError),
    #[error(
        "audit is disabled and {0} audit rule(s) not made by mcpguard are loaded: enabling audit \
         would start them; enable audit yourself (auditctl -e 1) to let mcpguard read Landlock's records"
    )]
    ForeignRules(usize),
}

/// The read-log joined and audit set up; what was changed on the machine.
pub struct Setup {
    readlog: ReadLog,
    control: Control,
    lost: u32,
    /// What setup changed, for the daemon's log.
    pub changes: Vec<String>,
    /// The registered audit daemon's pid, if one is: nothing was changed.
    pub beside_auditd: Option<u32>,
}

/// Joins the read-log and makes sure the kernel logs Landlock's denials
/// (see the module doc for what it changes and why).
pub fn setup() -> Result<Setup, LandlockAuditError> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline.split_whitespace().any(|w| w == "audit=0") {
        return Err(LandlockAuditError::BootedOff);
    }
    // Joined first: without CAP_AUDIT_READ nothing is changed.
    let readlog = ReadLog::join(RCVBUF)?;
    let mut control = Control::open()?;
    let status = control.status()?;
    let mut changes = Vec::new();
    if status.pid != 0 {
        return Ok(Setup {
            readlog,
            control,
            lost: status.lost,
            changes,
            beside_auditd: Some(status.pid),
        });
    }
    let rules = control.rules()?;
    let foreign = rules.iter().filter(|r| !r.is_never_task()).count();
    // Their rules, their cost: enabling audit would start them, and a
    // never,task rule would stop their syscall rules.
    if foreign > 0 && status.enabled == 0 {
        return Err(LandlockAuditError::ForeignRules(foreign));
    }
    if foreign == 0 && !rules.iter().any(|r| r.is_never_task()) {
        control.add_never_task()?;
        changes.push("loaded the audit rule -a never,task".to_owned());
    }
    if status.enabled == 0 {
        control.set_enabled(true)?;
        changes.push("enabled audit".to_owned());
    }
    // 0 is no limit; enabled=2 is locked until reboot.
    if status.enabled != 2 && status.backlog_limit != 0 && status.backlog_limit < BACKLOG_LIMIT {
        control.set_backlog_limit(BACKLOG_LIMIT)?;
        changes.push(format!(
            "raised the audit backlog_limit from {} to {BACKLOG_LIMIT}",
            status.backlog_limit
        ));
    }
    Ok(Setup {
        readlog,
        control,
        lost: status.lost,
        changes,
        beside_auditd: None,
    })
}

/// The reader thread's handle, shared by the sessions.
pub struct LandlockAudit {
    tx: Mutex<Sender<Ctl>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

enum Ctl {
    Launched {
        pid: u32,
        launch: Launch,
    },
    Finished {
        launch: String,
        done: SyncSender<()>,
    },
    Stop,
}

/// One launch as the reader knows it.
struct Launch {
    cgroup_id: u64,
    origin: Origin,
    secrets: Option<Arc<Redactor>>,
    ended: Option<Instant>,
}

impl LandlockAudit {
    pub fn spawn(
        setup: Setup,
        audit: Sender<Msg>,
        calls: Arc<CallTracker>,
        budgets: Arc<Budgets>,
    ) -> std::io::Result<LandlockAudit> {
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = Reader {
            readlog: setup.readlog,
            control: setup.control,
            lost_seen: setup.lost,
            audit,
            calls,
            budgets,
            launches: HashMap::new(),
            domains: HashMap::new(),
            buf: vec![0; 64 * 1024],
        };
        let thread = std::thread::Builder::new()
            .name("landlock-audit".into())
            .spawn(move || reader.run(&rx))?;
        Ok(LandlockAudit {
            tx: Mutex::new(tx),
            thread: Mutex::new(Some(thread)),
        })
    }

    fn send(&self, ctl: Ctl) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.send(ctl).is_err() {
            warn!("the Landlock audit reader is gone");
        }
    }

    /// The server of `origin` runs as `pid`, the process that called
    /// `landlock_restrict_self`: its domain's records are this launch's.
    pub fn launched(
        &self,
        pid: u32,
        cgroup_id: u64,
        origin: &Origin,
        secrets: Option<Arc<Redactor>>,
    ) {
        let launch = Launch {
            cgroup_id,
            origin: origin.clone(),
            secrets,
            ended: None,
        };
        self.send(Ctl::Launched { pid, launch });
    }

    /// The launch's tasks are gone: returns once the reader has passed on
    /// every record already queued to it (bounded), so they precede the
    /// server's last record.
    pub fn finished(&self, launch: &str) {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        self.send(Ctl::Finished {
            launch: launch.to_owned(),
            done,
        });
        let _ = wait.recv_timeout(FINISH_WAIT);
    }

    /// Waits (bounded) for the last records of this daemon's domains, then
    /// ends the thread.
    pub fn stop(&self) {
        self.send(Ctl::Stop);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// Whose a domain is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// Not known yet; the pid once its `allocated` record came.
    Unknown { pid: Option<u32> },
    /// The launch whose server is this pid.
    Ours(u32),
    /// Another Landlock user's.
    Foreign,
}

struct Domain {
    owner: Owner,
    seen: Instant,
    allocated: Option<Instant>,
    held: Vec<(Stamp, Denial)>,
    /// Access records received (passed on, held or dropped).
    received: u64,
    /// Records not held because the domain's hold was full.
    overflow: u64,
}

struct Reader {
    readlog: ReadLog,
    control: Control,
    lost_seen: u32,
    audit: Sender<Msg>,
    calls: Arc<CallTracker>,
    budgets: Arc<Budgets>,
    /// By the server's pid.
    launches: HashMap<u32, Launch>,
    domains: HashMap<u64, Domain>,
    buf: Vec<u8>,
}

impl Reader {
    fn run(mut self, rx: &Receiver<Ctl>) {
        let mut status_at = Instant::now();
        loop {
            if self.receive(rx) {
                break;
            }
            self.read(TICK);
            self.expire();
            if status_at.elapsed() >= STATUS_EVERY {
                self.report_kernel_lost();
                status_at = Instant::now();
            }
        }
        let until = Instant::now() + STOP_WAIT;
        while Instant::now() < until && self.has_ours() {
            self.read(TICK);
        }
        self.report_kernel_lost();
        info!("Landlock audit reader stopped");
    }

    /// Handles the sessions' messages; true on stop.
    fn receive(&mut self, rx: &Receiver<Ctl>) -> bool {
        loop {
            match rx.try_recv() {
                Ok(Ctl::Launched { pid, launch }) => {
                    self.launches.insert(pid, launch);
                    self.place_pending(pid);
                }
                Ok(Ctl::Finished { launch, done }) => {
                    self.read(Duration::ZERO);
                    if let Some(l) = self
                        .launches
                        .values_mut()
                        .find(|l| l.origin.launch == launch)
                    {
                        l.ended = Some(Instant::now());
                    }
                    let _ = done.try_send(());
                }
                Ok(Ctl::Stop) | Err(TryRecvError::Disconnected) => return true,
                Err(TryRecvError::Empty) => return false,
            }
        }
    }

    /// Reads what the read-log has, waiting up to `timeout` for the first.
    fn read(&mut self, timeout: Duration) {
        let mut wait = timeout;
        loop {
            match self.readlog.recv(&mut self.buf, wait) {
                Ok(Received::Messages(msgs)) if msgs.is_empty() => return,
                Ok(Received::Messages(msgs)) => msgs
                    .into_iter()
                    .for_each(|m| self.handle(m.kind, &m.payload)),
                // Each domain's deallocated count tells what went missing.
                Ok(Received::Overrun) => warn!("audit read-log overrun: records were dropped"),
                Err(error) => {
                    warn!(%error, "reading the audit read-log");
                    std::thread::sleep(TICK);
                    return;
                }
            }
            wait = Duration::ZERO;
        }
    }

    fn handle(&mut self, kind: u16, payload: &[u8]) {
        if kind != landlock::ACCESS && kind != landlock::DOMAIN {
            return;
        }
        let text = String::from_utf8_lossy(payload);
        match landlock::parse(kind, text.trim_end_matches(['\0', '\n'])) {
            Ok((stamp, Event::Access { domain, denial })) => self.access(domain, stamp, *denial),
            Ok((_, Event::Allocated { domain, pid })) => self.allocated(domain, pid),
            Ok((_, Event::Deallocated { domain, denials })) => self.deallocated(domain, denials),
            Err(error) => {
                warn!(%error, "undecodable Landlock audit record");
                self.loss(1, None);
            }
        }
    }

    fn domain(&mut self, id: u64) -> &mut Domain {
        if !self.domains.contains_key(&id) && self.domains.len() >= MAX_DOMAINS {
            self.evict_oldest_unknown();
        }
        self.domains.entry(id).or_insert_with(|| Domain {
            owner: Owner::Unknown { pid: None },
            seen: Instant::now(),
            allocated: None,
            held: Vec::new(),
            received: 0,
            overflow: 0,
        })
    }

    fn access(&mut self, id: u64, stamp: Stamp, denial: Denial) {
        let domain = self.domain(id);
        domain.received += 1;
        match domain.owner {
            Owner::Ours(pid) => self.emit(pid, stamp, denial),
            Owner::Foreign => {}
            Owner::Unknown { .. } if domain.held.len() < MAX_HELD => {
                domain.held.push((stamp, denial));
            }
            Owner::Unknown { .. } => domain.overflow += 1,
        }
    }

    fn allocated(&mut self, id: u64, pid: u32) {
        let domain = self.domain(id);
        domain.owner = Owner::Unknown { pid: Some(pid) };
        domain.allocated = Some(Instant::now());
        self.place_pending(pid);
    }

    /// Domains waiting for `pid` become the launch's, if it is one.
    fn place_pending(&mut self, pid: u32) {
        if !self.launches.contains_key(&pid) {
            return;
        }
        let waiting: Vec<u64> = self
            .domains
            .iter()
            .filter(|(_, d)| d.owner == Owner::Unknown { pid: Some(pid) })
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            let Some(domain) = self.domains.get_mut(&id) else {
                continue;
            };
            domain.owner = Owner::Ours(pid);
            let (held, overflow) = (std::mem::take(&mut domain.held), domain.overflow);
            for (stamp, denial) in held {
                self.emit(pid, stamp, denial);
            }
            if overflow > 0 {
                let origin = self.launches.get(&pid).map(|l| l.origin.clone());
                self.loss(overflow, origin);
            }
        }
    }

    /// The domain is gone: what it denied that did not arrive is lost.
    fn deallocated(&mut self, id: u64, denials: u64) {
        let Some(domain) = self.domains.remove(&id) else {
            // Not one record of it arrived: ours only if its pid says so,
            // and that came in the allocated record, which is missing too.
            return;
        };
        match domain.owner {
            Owner::Ours(pid) => {
                let missing = denials.saturating_sub(domain.received);
                if missing > 0 {
                    let origin = self.launches.get(&pid).map(|l| l.origin.clone());
                    self.loss(missing, origin);
                }
            }
            Owner::Foreign => {}
            Owner::Unknown { pid } => {
                let missing = denials.saturating_sub(domain.received);
                self.give_up(id, pid, domain, missing);
            }
        }
    }

    /// Domains waiting too long: a pid that is no launch of ours is another
    /// Landlock user's; a domain whose allocated record never came cannot
    /// be placed, and its records are counted as lost.
    fn expire(&mut self) {
        let stale: Vec<u64> = self
            .domains
            .iter()
            .filter(|(_, d)| match d.owner {
                Owner::Unknown { pid: Some(_) } => {
                    d.allocated.is_some_and(|t| t.elapsed() >= PENDING_WAIT)
                }
                Owner::Unknown { pid: None } => d.seen.elapsed() >= UNALLOCATED_WAIT,
                _ => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(domain) = self.domains.remove(&id) {
                let Owner::Unknown { pid } = domain.owner else {
                    continue;
                };
                if pid.is_some() {
                    // Its later records are dropped as they come.
                    self.domains.insert(
                        id,
                        Domain {
                            owner: Owner::Foreign,
                            held: Vec::new(),
                            ..domain
                        },
                    );
                } else {
                    self.give_up(id, pid, domain, 0);
                }
            }
        }
        self.launches
            .retain(|_, l| l.ended.is_none_or(|t| t.elapsed() < LAUNCH_GRACE));
        let launches = &self.launches;
        self.domains.retain(|_, d| match d.owner {
            Owner::Ours(pid) => launches.contains_key(&pid),
            _ => true,
        });
    }

    /// A domain that cannot be placed: with a pid it is foreign (dropped);
    /// without one, whatever it held, and `missing` records it had that
    /// never came, are lost, to whom unknown.
    fn give_up(&mut self, id: u64, pid: Option<u32>, domain: Domain, missing: u64) {
        if let Some(pid) = pid {
            debug!(domain = id, pid, "Landlock domain of another process");
            return;
        }
        let lost = domain.held.len() as u64 + domain.overflow + missing;
        if lost > 0 {
            warn!(
                domain = id,
                lost, "Landlock records of a domain never identified"
            );
            self.loss(lost, None);
        }
    }

    fn evict_oldest_unknown(&mut self) {
        let oldest = self
            .domains
            .iter()
            .filter(|(_, d)| matches!(d.owner, Owner::Unknown { .. }))
            .min_by_key(|(_, d)| d.seen)
            .map(|(id, _)| *id);
        if let Some(id) = oldest.and_then(|id| self.domains.remove_entry(&id)) {
            let (id, domain) = id;
            let lost = domain.held.len() as u64 + domain.overflow;
            if lost > 0 {
                self.loss(lost, None);
            }
            debug!(domain = id, "too many unplaced Landlock domains");
        }
    }

    fn has_ours(&self) -> bool {
        self.domains
            .values()
            .any(|d| matches!(d.owner, Owner::Ours(_)))
    }

    /// Writes one denial of the launch whose server is `pid`.
    fn emit(&self, pid: u32, stamp: Stamp, denial: Denial) {
        let Some(launch) = self.launches.get(&pid) else {
            return;
        };
        let has_path = denial.path.is_some();
        let mut rec = AuditRecord::new(Body::Landlock(denial), Some(&launch.origin), stamp.time);
        rec.uid = Some(launch.origin.uid);
        if has_path {
            rec.path_source = Some("landlock".into());
        }
        super::auditor::tag_calls(&mut rec, &self.calls_at(launch.cgroup_id, stamp.time));
        if !self.budgets.admit(Source::Landlock, &rec) {
            return;
        }
        let secrets = launch.secrets.clone();
        let _ = self.audit.send(Msg::Landlock { rec, secrets });
    }

    /// The calls in flight while the denial may have happened, in the
    /// kernel's boot clock the taps use: the audit stamp is the coarse
    /// realtime clock cut to milliseconds, so the denial lies up to
    /// [`STAMP_SLACK`] after it.
    fn calls_at(&self, cgroup_id: u64, time: SystemTime) -> Vec<(serde_json::Value, String)> {
        let ago = SystemTime::now()
            .duration_since(time)
            .unwrap_or_default()
            .as_nanos();
        let from = u64::try_from(u128::from(boot_ns()).saturating_sub(ago)).unwrap_or(0);
        let slack = u64::try_from(STAMP_SLACK.as_nanos()).unwrap_or(u64::MAX);
        self.calls
            .during(cgroup_id, from, from.saturating_add(slack))
    }

    fn loss(&self, lost: u64, origin: Option<Origin>) {
        let _ = self.audit.send(Msg::Loss {
            lost,
            source: "landlock".into(),
            denials: Some(lost),
            origin,
        });
    }

    /// Records the kernel's audit queue dropped (any source, machine-wide).
    fn report_kernel_lost(&mut self) {
        match self.control.status() {
            Ok(status) => {
                let lost = status.lost.wrapping_sub(self.lost_seen);
                self.lost_seen = status.lost;
                if lost > 0 {
                    let _ = self.audit.send(Msg::Loss {
                        lost: u64::from(lost),
                        source: "kernel_audit".into(),
                        denials: None,
                        origin: None,
                    });
                }
            }
            Err(error) => warn!(%error, "reading the audit status"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::budget::BudgetConfig;

    const OURS: u32 = 4242;

    /// A reader on real sockets (the tests run as root) that is only fed
    /// by hand.
    fn reader() -> (Reader, Receiver<Msg>) {
        let (audit, rx) = std::sync::mpsc::channel();
        let reader = Reader {
            readlog: ReadLog::join(64 * 1024).expect("join the read-log (as root)"),
            control: Control::open().expect("audit control socket"),
            lost_seen: 0,
            audit,
            calls: Arc::new(CallTracker::default()),
            budgets: Arc::new(Budgets::new(BudgetConfig::default())),
            launches: HashMap::new(),
            domains: HashMap::new(),
            buf: Vec::new(),
        };
        (reader, rx)
    }

    fn launch() -> Launch {
        Launch {
            cgroup_id: 77,
            origin: Origin {
                server: "srv".into(),
                policy: "srv.toml".into(),
                launch: "srv-1".into(),
                uid: 1000,
            },
            secrets: None,
            ended: None,
        }
    }

    fn feed(r: &mut Reader, kind: u16, text: &str) {
        r.handle(kind, text.as_bytes());
    }

    fn access(r: &mut Reader, domain: &str) {
        let text = format!(
            r#"audit(1796623362.171:3): domain={domain} blockers=fs.read_file path="/etc/hostname" dev="vda" ino=611"#
        );
        feed(r, landlock::ACCESS, &text);
    }

    fn allocated(r: &mut Reader, domain: &str, pid: u32) {
        let text = format!(
            r#"audit(1796623362.171:4): domain={domain} status=allocated mode=enforcing pid={pid} uid=0 exe="/x" comm="x""#
        );
        feed(r, landlock::DOMAIN, &text);
    }

    fn deallocated(r: &mut Reader, domain: &str, denials: u64) {
        let text = format!(
            "audit(1796623362.171:9): domain={domain} status=deallocated denials={denials}"
        );
        feed(r, landlock::DOMAIN, &text);
    }

    /// (lost, source, launch) of a loss sent.
    type Loss = (u64, String, Option<String>);

    /// The denials and the losses sent.
    fn sent(rx: &Receiver<Msg>) -> (Vec<AuditRecord>, Vec<Loss>) {
        let (mut denials, mut losses) = (Vec::new(), Vec::new());
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Landlock { rec, .. } => denials.push(rec),
                Msg::Loss {
                    lost,
                    source,
                    origin,
                    ..
                } => losses.push((lost, source, origin.map(|o| o.launch))),
                _ => panic!("unexpected message"),
            }
        }
        (denials, losses)
    }

    #[test]
    fn records_before_the_allocated_record_are_held_then_placed() {
        let (mut r, rx) = reader();
        r.launches.insert(OURS, launch());
        access(&mut r, "1a");
        assert!(sent(&rx).0.is_empty());
        allocated(&mut r, "1a", OURS);
        access(&mut r, "1a");
        let (denials, losses) = sent(&rx);
        assert_eq!(denials.len(), 2);
        let rec = &denials[0];
        assert_eq!(rec.launch.as_deref(), Some("srv-1"));
        assert_eq!(rec.path_source.as_deref(), Some("landlock"));
        assert!(rec.denied);
        assert!(
            matches!(&rec.body, Body::Landlock(d) if d.path.as_deref() == Some("/etc/hostname"))
        );
        assert!(losses.is_empty());
        // Every denial arrived: no loss.
        deallocated(&mut r, "1a", 2);
        assert_eq!(sent(&rx), (vec![], vec![]));
        assert!(r.domains.is_empty());
    }

    #[test]
    fn denials_that_did_not_arrive_are_a_loss_of_the_launch() {
        let (mut r, rx) = reader();
        r.launches.insert(OURS, launch());
        allocated(&mut r, "2b", OURS);
        access(&mut r, "2b");
        deallocated(&mut r, "2b", 5);
        let (denials, losses) = sent(&rx);
        assert_eq!(denials.len(), 1);
        assert_eq!(losses, [(4, "landlock".into(), Some("srv-1".into()))]);
    }

    #[test]
    fn a_pid_registered_after_its_allocated_record_still_places_the_domain() {
        let (mut r, rx) = reader();
        allocated(&mut r, "3c", OURS);
        access(&mut r, "3c");
        assert!(sent(&rx).0.is_empty());
        r.launches.insert(OURS, launch());
        r.place_pending(OURS);
        assert_eq!(sent(&rx).0.len(), 1);
    }

    #[test]
    fn domains_of_other_processes_are_dropped_without_a_trace() {
        let (mut r, rx) = reader();
        r.launches.insert(OURS, launch());
        allocated(&mut r, "4d", 1);
        access(&mut r, "4d");
        r.domains.get_mut(&0x4d).unwrap().allocated = Instant::now().checked_sub(PENDING_WAIT);
        r.expire();
        assert_eq!(r.domains[&0x4d].owner, Owner::Foreign);
        access(&mut r, "4d");
        deallocated(&mut r, "4d", 10);
        assert_eq!(sent(&rx), (vec![], vec![]));
    }

    #[test]
    fn records_beyond_the_hold_and_unplaceable_ones_are_counted() {
        let (mut r, rx) = reader();
        r.launches.insert(OURS, launch());
        for _ in 0..MAX_HELD + 3 {
            access(&mut r, "5e");
        }
        allocated(&mut r, "5e", OURS);
        let (denials, losses) = sent(&rx);
        assert_eq!(denials.len(), MAX_HELD);
        assert_eq!(losses, [(3, "landlock".into(), Some("srv-1".into()))]);
        // A domain whose allocated record never came: lost, owner unknown.
        access(&mut r, "6f");
        r.domains.get_mut(&0x6f).unwrap().seen = Instant::now() - UNALLOCATED_WAIT;
        r.expire();
        assert_eq!(sent(&rx).1, [(1, "landlock".into(), None)]);
        // Its allocated record lost, a domain's end still says how many
        // denials it had: all of them are lost, to whom unknown.
        access(&mut r, "7a");
        access(&mut r, "7a");
        deallocated(&mut r, "7a", 5);
        assert_eq!(sent(&rx).1, [(5, "landlock".into(), None)]);
        // An undecodable record is counted too.
        feed(&mut r, landlock::ACCESS, "garbage");
        assert_eq!(sent(&rx).1, [(1, "landlock".into(), None)]);
    }
}
