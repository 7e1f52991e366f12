//! The audit thread: drains the kernel ring buffer, enriches each record
//! with the server it came from, and writes the JSON Lines log.
//!
//! Everything written to the log goes through this one thread, in order.
//! Records are submitted by the kernel without wakeups, so the thread polls
//! the ring buffer every `TICK` as well as on wakeups. Kernel drops
//! (ring buffer full, or a server over its share of it) and undecodable
//! samples become `loss` records within a second, also while a flood keeps
//! the ring buffer busy (draining yields every `DRAIN_SLICE`); nothing is
//! dropped silently. Servers' hits of their `[limits]` become `limit`
//! records on the same schedule, and so do the counts of records servers'
//! budgets held back ([`super::budget`]). When the log cannot be written, the
//! writer holds records in its bounded backlog and retries (see
//! [`crate::audit::writer`]); this thread, and enforcement, carry on.

use std::{
    borrow::Cow,
    collections::HashMap,
    os::fd::AsFd,
    sync::{
        mpsc::{Receiver, Sender, SyncSender, TryRecvError},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use mcpguard_common::limits::ARG_LEN;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{info, warn};

use super::budget::{Budgets, Held, Source};
use crate::{
    audit::{
        decode,
        writer::{AuditWriter, SinkStatus},
        AuditRecord, Body, BootClock, Origin,
    },
    ebpf::AuditMaps,
    launch::limits::{LimitCounters, LimitHit},
    mcp::{redact::Redactor, CallTracker},
    policy::learn::Observations,
};

/// How often the ring buffer is drained when no wakeup came.
const TICK: Duration = Duration::from_millis(20);
/// How often kernel loss and limit counters are read, and the log's path
/// checked.
const LOSS_EVERY: Duration = Duration::from_millis(500);
/// Longest stretch of draining before messages, losses and limits get a
/// turn: a server that refills the ring buffer as fast as it is drained
/// must not hold its own loss records back.
const DRAIN_SLICE: Duration = Duration::from_millis(100);
/// Slices drained at most before a finished server's last record is
/// written: the ring buffer holds well under a second of records.
const FINISH_SLICES: u32 = 20;

/// Messages from the rest of the daemon.
pub enum Msg {
    /// Write a record now.
    Record(AuditRecord),
    /// Write a Landlock denial now, redacted with `secrets` (its server's,
    /// which the reader keeps: the record can come after the server was
    /// unregistered here).
    Landlock {
        rec: AuditRecord,
        secrets: Option<Arc<Redactor>>,
    },
    /// Write a `loss` record (counted in the log's total).
    Loss {
        lost: u64,
        source: String,
        denials: Option<u64>,
        origin: Option<Origin>,
    },
    /// Attribute records of this cgroup to this server from now on, and
    /// redact its secrets from them.
    Register {
        cgroup_id: u64,
        origin: Origin,
        redactor: Option<Arc<Redactor>>,
    },
    /// The server's private mount namespace: Unix connects below `hidden`
    /// (and not below `kept`), and to the `masked` sockets, failed because
    /// of it.
    Fence {
        cgroup_id: u64,
        hidden: Vec<std::path::PathBuf>,
        kept: Vec<std::path::PathBuf>,
        masked: Vec<std::path::PathBuf>,
    },
    /// Write a `persist` record for each of this server's calls on a
    /// persistence path; `cwd` is where it starts, `allow` its policy's
    /// `[filesystem] allow_persistence`.
    Persist {
        cgroup_id: u64,
        cwd: std::path::PathBuf,
        allow: Vec<crate::policy::persist::PersistKind>,
    },
    /// The directories this server's repositories name in
    /// `core.hooksPath`, which the launcher bound read-only: writes below
    /// them are `git_hooks` too.
    PersistHooks {
        cgroup_id: u64,
        dirs: Vec<std::path::PathBuf>,
    },
    /// The pid of this server's persistence-fence executor.
    PersistExecutor { cgroup_id: u64, pid: u32 },
    /// Collect what this server does (`mcpguard policy learn`); `cwd` is
    /// where it starts (its relative paths follow its processes' chdirs).
    Learn {
        cgroup_id: u64,
        cwd: std::path::PathBuf,
    },
    /// Hand over what was collected for this server so far (after writing
    /// every record already in the ring buffer).
    Harvest {
        cgroup_id: u64,
        reply: Sender<Observations>,
    },
    /// The server's cgroup is empty: write its last kernel records, what
    /// its budget held back, then `last`, then forget it.
    Unregister {
        cgroup_id: u64,
        launch: String,
        last: Option<AuditRecord>,
    },
    /// Drop this hold on the syscall tracepoints once the ring buffer has
    /// been drained (sent after a server's `Unregister`: its last kernel
    /// records are written before the tracepoints may go).
    Release(crate::ebpf::demand::Hold),
    /// Per-launch record counts, for `mcpguard status`.
    Stats(SyncSender<Vec<super::status::ServerStatus>>),
    /// The audit log's health, for `mcpguard status`.
    Sink(SyncSender<SinkStatus>),
    /// Open the log's path afresh (SIGHUP, after rotation).
    Reopen,
    /// Poll this server's limit counters with the loss counters, until it
    /// is unregistered (its session polls them one last time).
    Limits {
        cgroup_id: u64,
        counters: Arc<Mutex<LimitCounters>>,
    },
    /// Drain everything, write the daemon's stop record after every
    /// record queued before it (servers' last records included), flush and
    /// stop.
    Stop(Box<AuditRecord>),
}

pub fn spawn(
    maps: AuditMaps,
    writer: AuditWriter,
    calls: Arc<CallTracker>,
    budgets: Arc<Budgets>,
) -> std::io::Result<(Sender<Msg>, JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("audit".into())
        .spawn(move || Auditor::new(maps, writer, calls, budgets).run(rx))?;
    Ok((tx, handle))
}

struct Auditor {
    maps: AuditMaps,
    writer: AuditWriter,
    clock: BootClock,
    /// What is kept for each server, by cgroup id.
    servers: HashMap<u64, Server>,
    calls: Arc<CallTracker>,
    /// Per-server record budgets; kernel records are checked here.
    budgets: Arc<Budgets>,
    decode_errors: u64,
    decode_reported: u64,
    /// Counts of every record written, per running launch.
    stats: super::stats::Stats,
}

/// What the audit thread keeps for one server (one cgroup), from its
/// first message or record until it is unregistered.
#[derive(Default)]
struct Server {
    /// Who the server is, once registered: its records are attributed to it.
    origin: Option<Origin>,
    /// The server's secrets, if it has some: every record of the server is
    /// redacted before it is written.
    redactor: Option<Arc<Redactor>>,
    /// What its mount namespace hides, once the helper has said.
    fence: Option<Fence>,
    /// Its persistence watch.
    persist: Option<super::persist::Watch>,
    /// What it did, while it learns.
    learner: Option<Observations>,
    /// Kernel loss count already reported.
    lost_seen: u64,
    /// Over-share (allow, deny) counts already reported.
    shed_seen: (u64, u64),
    /// Bytes read, and whether the kernel has seen the latest.
    consumed: (u64, bool),
    limits: Option<Arc<Mutex<LimitCounters>>>,
}

/// Work one turn of the loop leaves for after draining the ring buffer.
#[derive(Default)]
struct Turn {
    unregister: Vec<(u64, String, Option<AuditRecord>)>,
    harvest: Vec<(u64, Sender<Observations>)>,
    /// Tracepoint holds to drop after the drain.
    release: Vec<crate::ebpf::demand::Hold>,
    stopping: bool,
    /// The daemon's stop record, written last.
    stop_record: Option<Box<AuditRecord>>,
}

impl Auditor {
    fn new(
        maps: AuditMaps,
        writer: AuditWriter,
        calls: Arc<CallTracker>,
        budgets: Arc<Budgets>,
    ) -> Self {
        Self {
            budgets,
            maps,
            writer,
            clock: BootClock::new(),
            servers: HashMap::new(),
            calls,
            decode_errors: 0,
            decode_reported: 0,
            stats: Default::default(),
        }
    }

    fn run(mut self, rx: Receiver<Msg>) {
        let mut last_loss = Instant::now();
        loop {
            let turn = self.receive(&rx);
            // A finished server's trail (and a harvest) must hold every
            // record it left in the ring buffer before its last record;
            // other servers still running may keep the buffer busy, so this
            // is bounded too.
            let finishing =
                turn.stopping || !turn.unregister.is_empty() || !turn.harvest.is_empty();
            let mut more = self.drain();
            let mut slices = 1;
            while more && finishing && slices < FINISH_SLICES {
                more = self.drain();
                slices += 1;
            }
            if turn.stopping || !turn.unregister.is_empty() || last_loss.elapsed() >= LOSS_EVERY {
                self.report_losses();
                self.writer.follow_path();
                self.report_limits();
                last_loss = Instant::now();
            }
            for (cgroup_id, reply) in turn.harvest {
                let obs = self
                    .servers
                    .get_mut(&cgroup_id)
                    .and_then(|s| s.learner.take())
                    .unwrap_or_default();
                let _ = reply.send(obs);
            }
            for (cgroup_id, launch, last) in turn.unregister {
                self.unregister(cgroup_id, &launch, last);
            }
            if let Some(rec) = &turn.stop_record {
                self.write(rec);
            }
            drop(turn.release);
            self.writer.flush();
            if turn.stopping {
                break;
            }
            if !more {
                self.wait();
            }
        }
        info!(
            written = self.writer.written(),
            lost = self.writer.lost_total(),
            "audit thread stopped"
        );
    }

    /// Take every message waiting; those that must wait for the ring
    /// buffer to be drained go into the turn.
    fn receive(&mut self, rx: &Receiver<Msg>) -> Turn {
        let mut turn = Turn::default();
        loop {
            match rx.try_recv() {
                Ok(msg) => {
                    self.handle(msg, &mut turn);
                    if turn.stopping {
                        return turn;
                    }
                }
                Err(TryRecvError::Disconnected) => {
                    turn.stopping = true;
                    return turn;
                }
                Err(TryRecvError::Empty) => return turn,
            }
        }
    }

    fn handle(&mut self, msg: Msg, turn: &mut Turn) {
        match msg {
            Msg::Record(rec) => self.write(&rec),
            Msg::Landlock { rec, secrets } => self.write_redacted(&rec, secrets.as_deref()),
            Msg::Loss {
                lost,
                source,
                denials,
                origin,
            } => self.write_loss(lost, source, denials, origin),
            Msg::Register {
                cgroup_id,
                origin,
                redactor,
            } => {
                self.stats.register(&origin);
                let server = self.servers.entry(cgroup_id).or_default();
                server.origin = Some(origin);
                if redactor.is_some() {
                    server.redactor = redactor;
                }
            }
            Msg::Learn { cgroup_id, cwd } => {
                self.server(cgroup_id).learner = Some(Observations::new(cwd));
            }
            Msg::Persist {
                cgroup_id,
                cwd,
                allow,
            } => {
                self.server(cgroup_id).persist = Some(super::persist::Watch::new(cwd, allow));
            }
            Msg::PersistHooks { cgroup_id, dirs } => {
                if let Some(w) = self.persist_watch(cgroup_id) {
                    w.add_hooks(dirs);
                }
            }
            Msg::PersistExecutor { cgroup_id, pid } => {
                if let Some(w) = self.persist_watch(cgroup_id) {
                    w.set_executor(pid);
                }
            }
            Msg::Harvest { cgroup_id, reply } => turn.harvest.push((cgroup_id, reply)),
            Msg::Fence {
                cgroup_id,
                hidden,
                kept,
                masked,
            } => {
                self.server(cgroup_id).fence = Some(Fence {
                    hidden,
                    kept,
                    masked,
                });
            }
            Msg::Unregister {
                cgroup_id,
                launch,
                last,
            } => turn.unregister.push((cgroup_id, launch, last)),
            Msg::Release(hold) => turn.release.push(hold),
            Msg::Stats(reply) => {
                let _ = reply.try_send(self.stats.snapshot());
            }
            Msg::Sink(reply) => {
                let _ = reply.try_send(self.writer.status());
            }
            Msg::Reopen => self.writer.reopen(),
            Msg::Limits {
                cgroup_id,
                counters,
            } => {
                self.server(cgroup_id).limits = Some(counters);
            }
            Msg::Stop(rec) => {
                turn.stopping = true;
                turn.stop_record = Some(rec);
            }
        }
    }

    fn server(&mut self, cgroup_id: u64) -> &mut Server {
        self.servers.entry(cgroup_id).or_default()
    }

    fn persist_watch(&mut self, cgroup_id: u64) -> Option<&mut super::persist::Watch> {
        self.servers.get_mut(&cgroup_id)?.persist.as_mut()
    }

    /// The server's cgroup is empty: write what its budget held back and
    /// its last record, then forget everything kept for it.
    fn unregister(&mut self, cgroup_id: u64, launch: &str, last: Option<AuditRecord>) {
        let held = self.budgets.forget(launch);
        self.report_held(held);
        if let Some(last) = last {
            self.write(&last);
        }
        let origin = self.servers.remove(&cgroup_id).and_then(|s| s.origin);
        if let Some(origin) = &origin {
            self.stats.forget(&origin.launch);
        }
        if let Err(error) = self.calls.forget(cgroup_id) {
            warn!(cgroup_id, %error, "cannot clear a gone server's tool calls in flight");
            self.write(&AuditRecord::new(
                Body::Mcp {
                    event: "call_gate_error".into(),
                    detail: serde_json::json!({ "error": error.to_string(), "server_gone": true }),
                },
                origin.as_ref(),
                SystemTime::now(),
            ));
        }
        let _ = self.maps.lost.remove(&cgroup_id);
        let _ = self.maps.flow.remove(&cgroup_id);
        let _ = self.maps.consumed.remove(&cgroup_id);
    }

    /// Sleep until the ring buffer has data (wakeup) or a tick passes.
    fn wait(&self) {
        let mut fds = [PollFd::new(self.maps.events.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(TICK.as_millis() as u16));
    }

    /// Writes what the ring buffer holds, for at most [`DRAIN_SLICE`];
    /// true if it stopped for time with records left.
    fn drain(&mut self) -> bool {
        self.clock.refresh();
        let started = Instant::now();
        // Split the borrows: a ring-buffer item borrows the map until it is
        // dropped, and the writer is needed meanwhile.
        let Self {
            maps,
            writer,
            clock,
            servers,
            calls,
            decode_errors,
            stats,
            budgets,
            ..
        } = self;
        let mut n = 0u32;
        while let Some(item) = maps.events.next() {
            let header = decode::header_of(&item);
            if let Some((cgroup, _)) = header {
                let c = &mut servers.entry(cgroup).or_default().consumed;
                c.0 += item.len() as u64;
                c.1 = true;
            }
            let decoded = decode::decode(&item, clock, |cg| {
                servers.get(&cg).and_then(|s| s.origin.clone())
            });
            drop(item);
            match decoded {
                // The persistence fence's executor works for the server's
                // trapped calls; the fence records those calls itself.
                Ok(rec)
                    if header.is_some_and(|(cg, _)| {
                        servers
                            .get(&cg)
                            .and_then(|s| s.persist.as_ref())
                            .is_some_and(|w| w.is_executor(rec.pid))
                    }) => {}
                Ok(rec) => {
                    let (rec, persist) = match header {
                        Some((cgroup, ts_ns)) => servers
                            .entry(cgroup)
                            .or_default()
                            .enrich(rec, &calls.at(cgroup, ts_ns)),
                        None => (rec, None),
                    };
                    for rec in std::iter::once(rec).chain(persist) {
                        if !budgets.admit(Source::Kernel, &rec) {
                            continue;
                        }
                        stats.record(&rec);
                        writer.write(&rec)
                    }
                }
                Err(error) => {
                    *decode_errors += 1;
                    warn!(%error, "undecodable ring-buffer sample");
                }
            }
            // Checking the clock every record would cost more than it saves.
            n = n.wrapping_add(1);
            if n.is_multiple_of(1024) {
                publish_consumed(&mut maps.consumed, servers);
                if started.elapsed() >= DRAIN_SLICE {
                    return true;
                }
            }
        }
        publish_consumed(&mut maps.consumed, servers);
        false
    }

    /// `loss` records for what was lost since the last report: kernel
    /// drops, records held back for a server's share of the ring buffer or
    /// its budget, and undecodable samples.
    fn report_losses(&mut self) {
        self.report_ringbuf_losses();
        self.report_shed();
        let held = self.budgets.take_held();
        self.report_held(held);
        if self.decode_errors > self.decode_reported {
            let lost = self.decode_errors - self.decode_reported;
            self.decode_reported = self.decode_errors;
            self.write_loss(lost, "decode".into(), None, None);
        }
    }

    /// Records the kernel dropped with the ring buffer full, per server.
    fn report_ringbuf_losses(&mut self) {
        let mut reports = Vec::new();
        for entry in self.maps.lost.iter() {
            let (cgroup_id, per_cpu) = match entry {
                Ok(e) => e,
                Err(error) => {
                    warn!(%error, "reading LOST map");
                    break;
                }
            };
            let count: u64 = per_cpu.iter().sum();
            let seen = &mut self.servers.entry(cgroup_id).or_default().lost_seen;
            if count > *seen {
                reports.push((cgroup_id, count - *seen));
                *seen = count;
            }
        }
        for (cgroup_id, lost) in reports {
            let origin = self.origin(cgroup_id).cloned();
            self.write_loss(lost, "ringbuf".into(), None, origin);
        }
    }

    /// Records the kernel shed for servers over their share of the ring
    /// buffer.
    fn report_shed(&mut self) {
        let mut shed = Vec::new();
        for entry in self.maps.flow.iter() {
            let (cgroup_id, flow) = match entry {
                Ok(e) => e,
                Err(error) => {
                    warn!(%error, "reading FLOW map");
                    break;
                }
            };
            let (allow, deny) = (flow.shed_allow, flow.shed_deny);
            let seen = &mut self.servers.entry(cgroup_id).or_default().shed_seen;
            if allow + deny > seen.0 + seen.1 {
                shed.push((
                    cgroup_id,
                    allow.saturating_sub(seen.0),
                    deny.saturating_sub(seen.1),
                ));
                *seen = (allow, deny);
            }
        }
        for (cgroup_id, allow, deny) in shed {
            let origin = self.origin(cgroup_id).cloned();
            self.write_loss(allow + deny, "rate".into(), Some(deny), origin);
        }
    }

    /// `loss` records for what servers' budgets held back.
    fn report_held(&mut self, held: Vec<(Origin, Source, Held)>) {
        for (origin, source, held) in held {
            let source = format!("budget:{}", source.name());
            self.write_loss(held.lost, source, Some(held.denials), Some(origin));
        }
    }

    /// One `loss` record, counted in the writer's total.
    fn write_loss(
        &mut self,
        lost: u64,
        source: String,
        denials: Option<u64>,
        origin: Option<Origin>,
    ) {
        let total = self.writer.note_lost(lost);
        let rec = AuditRecord::new(
            Body::Loss {
                lost,
                total,
                source,
                first_ts: None,
                last_ts: None,
                denials,
            },
            origin.as_ref(),
            SystemTime::now(),
        );
        self.write(&rec);
    }

    /// `limit` records for every server's new limit hits.
    fn report_limits(&mut self) {
        let mut hits = Vec::new();
        for (cgroup_id, counters) in self
            .servers
            .iter()
            .filter_map(|(cg, s)| Some((cg, s.limits.as_ref()?)))
        {
            let polled = counters.lock().unwrap_or_else(|p| p.into_inner()).poll();
            hits.extend(polled.into_iter().map(|h| (*cgroup_id, h)));
        }
        for (cgroup_id, hit) in hits {
            let rec = limit_record(&hit, self.origin(cgroup_id));
            self.write(&rec);
        }
    }

    /// Daemon-made records (launches, MCP events) pass the same redaction
    /// as kernel records.
    fn write(&mut self, rec: &AuditRecord) {
        self.write_redacted(rec, None);
    }

    /// As [`Self::write`]; `secrets` stand in for the server's redactor
    /// once the server is no longer registered.
    fn write_redacted(&mut self, rec: &AuditRecord, fallback: Option<&Redactor>) {
        let Self {
            servers,
            stats,
            writer,
            ..
        } = self;
        let server = servers.values_mut().find(|s| {
            s.origin
                .as_ref()
                .is_some_and(|o| Some(&o.launch) == rec.launch.as_ref())
        });
        let mut secrets = fallback;
        if let Some(server) = server {
            if let Some(obs) = &mut server.learner {
                obs.observe(rec);
            }
            secrets = server.redactor.as_deref().or(secrets);
        }
        let rec = redact(Cow::Borrowed(rec), secrets);
        stats.record(&rec);
        writer.write(&rec)
    }

    fn origin(&self, cgroup_id: u64) -> Option<&Origin> {
        self.servers.get(&cgroup_id)?.origin.as_ref()
    }
}

impl Server {
    /// A kernel record of this server as it is written (marked if the
    /// mount fence stopped it, tied to the MCP `calls` in flight, learned
    /// from, redacted), and the `persist` record it makes, if any.
    fn enrich(
        &mut self,
        mut rec: AuditRecord,
        calls: &[(serde_json::Value, String)],
    ) -> (AuditRecord, Option<AuditRecord>) {
        // The helper reports the fence only once the server runs, and its
        // first records can be decoded before that report arrives: until
        // then, the directories every guarded server has hidden.
        let fence = self
            .fence
            .as_ref()
            .or_else(|| (self.origin.is_some() && self.learner.is_none()).then(Fence::standard));
        if let Some(fence) = fence {
            mark_fenced(&mut rec, fence);
        }
        tag_calls(&mut rec, calls);
        if let Some(obs) = &mut self.learner {
            obs.observe(&rec);
        }
        let rec = redact(Cow::Owned(rec), self.redactor.as_deref()).into_owned();
        // Built from the redacted record: it repeats its path.
        let persist = self.persist.as_mut().and_then(|w| w.observe(&rec));
        (rec, persist)
    }
}

/// Tell the kernel how much of each server's output has been read, so a
/// server is judged by what it holds in the ring buffer now.
fn publish_consumed(
    map: &mut aya::maps::HashMap<aya::maps::MapData, u64, u64>,
    servers: &mut HashMap<u64, Server>,
) {
    for (cgroup, server) in servers.iter_mut().filter(|(_, s)| s.consumed.1) {
        if let Err(error) = map.insert(cgroup, server.consumed.0, 0) {
            warn!(cgroup, %error, "updating CONSUMED");
        }
        server.consumed.1 = false;
    }
}

/// The record of one limit's new hits.
pub(crate) fn limit_record(hit: &LimitHit, origin: Option<&Origin>) -> AuditRecord {
    AuditRecord::new(
        Body::Limit {
            resource: hit.resource.into(),
            event: hit.event.into(),
            limit: hit.limit,
            count: hit.count,
            total: hit.total,
        },
        origin,
        SystemTime::now(),
    )
}

/// What a server's mount namespace hides (see [`Msg::Fence`]).
#[derive(Default)]
struct Fence {
    hidden: Vec<std::path::PathBuf>,
    kept: Vec<std::path::PathBuf>,
    masked: Vec<std::path::PathBuf>,
}

impl Fence {
    /// The runtime directories every guarded server's mount namespace
    /// hides, before the helper has said what it kept and covered.
    fn standard() -> &'static Fence {
        static STANDARD: std::sync::OnceLock<Fence> = std::sync::OnceLock::new();
        STANDARD.get_or_init(|| Fence {
            hidden: crate::launch::mounts::HIDDEN
                .iter()
                .map(|(dir, _)| std::path::PathBuf::from(dir))
                .collect(),
            ..Fence::default()
        })
    }
}

/// A failed Unix connect to a path the server's mount namespace hides is
/// the fence at work: say so, and count it as a denial. A path below a
/// hidden directory that does not exist on the host either (nscd's
/// `/var/run/nscd/socket` probe where nscd is not installed) was not
/// fenced off: there was nothing to reach.
fn mark_fenced(
    rec: &mut AuditRecord,
    Fence {
        hidden,
        kept,
        masked,
    }: &Fence,
) {
    if let Body::UnixConnect {
        path,
        abstract_addr: false,
        result,
        fenced,
        ..
    } = &mut rec.body
    {
        let p = std::path::Path::new(path.as_str());
        let below_hidden = hidden.iter().any(|h| p.starts_with(h))
            && !kept.iter().any(|k| p.starts_with(k))
            && exists_on_host(p);
        if *result < 0 && p.is_absolute() && (below_hidden || masked.iter().any(|m| m == p)) {
            *fenced = true;
            rec.denied = true;
        }
    }
}

/// Whether `path` names anything in the daemon's (the host's) mount
/// namespace, following symlinks as `connect()` would.
fn exists_on_host(path: &std::path::Path) -> bool {
    std::fs::metadata(path).is_ok()
}

/// Tie a record to the MCP call(s) in flight when it happened.
pub(crate) fn tag_calls(rec: &mut AuditRecord, calls: &[(serde_json::Value, String)]) {
    match calls {
        [] => {}
        [(id, tool)] => {
            rec.call_id = Some(id.clone());
            rec.tool = Some(tool.clone());
        }
        many => {
            rec.calls = Some(
                many.iter()
                    .map(|(id, tool)| serde_json::json!({ "call_id": id, "tool": tool }))
                    .collect(),
            )
        }
    }
}

/// The record as it may be written: every record of a server with secrets
/// (`secrets`, its redactor) is redacted whole, and for every server the
/// command line of `launch`, `launch_failed` and `exec` records is, since a
/// token passed as an argument is as much a credential as one the server
/// prints (credential shapes, when the server has no secrets).
fn redact<'a>(mut rec: Cow<'a, AuditRecord>, secrets: Option<&Redactor>) -> Cow<'a, AuditRecord> {
    if carries_command_line(&rec.body) {
        let r = secrets.unwrap_or(Redactor::shapes_only());
        if let Some(changed) = redacted_command_line(&rec.body, r) {
            rec.to_mut().body = changed;
        }
    }
    match secrets {
        Some(r) => Cow::Owned(redacted(rec.into_owned(), r)),
        None => rec,
    }
}

/// Records with an argv: `launch`, `launch_failed` and `exec`.
fn carries_command_line(body: &Body) -> bool {
    matches!(
        body,
        Body::Launch { .. } | Body::LaunchFailed { .. } | Body::Exec { .. }
    )
}

/// The body with its argv (and a failed launch's error, which may quote
/// argv[0]) redacted; `None` when nothing needed it. Only these fields are
/// scanned: exec records come by the thousand, and a whole-record pass
/// costs several times more. Exec arguments the kernel cut short also lose
/// the head of a credential left at their end.
fn redacted_command_line(body: &Body, r: &Redactor) -> Option<Body> {
    let mut body = body.clone();
    let counts = &mut Default::default();
    let (argv, error, cut) = match &mut body {
        Body::Launch { argv, .. } => (argv, None, false),
        Body::LaunchFailed { argv, error } => (argv, Some(error), false),
        Body::Exec { argv, .. } => (argv, None, true),
        _ => return None,
    };
    let mut changed = false;
    for text in argv.iter_mut().chain(error) {
        let mut new = r.text(text, counts);
        // The kernel keeps ARG_LEN - 1 bytes of an argument and a NUL.
        if cut && new.len() >= ARG_LEN - 1 {
            if let Cow::Owned(tail) = r.cut_tail(&new, counts) {
                new = Cow::Owned(tail);
            }
        }
        if let Cow::Owned(new) = new {
            *text = new;
            changed = true;
        }
    }
    changed.then_some(body)
}

/// The record with every secret of its server replaced; records are
/// round-tripped through JSON so no field can be missed.
fn redacted(rec: AuditRecord, redactor: &Redactor) -> AuditRecord {
    let Ok(mut v) = serde_json::to_value(&rec) else {
        return rec;
    };
    if !redactor.json(&mut v, &mut Default::default()) {
        return rec;
    }
    serde_json::from_value(v).unwrap_or(rec)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const GITHUB: &str = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
    const AWS: &str = "AKIAIOSFODNN7EXAMPLE";
    const SLACK: &str = "xoxb-1234567890-abcdefghij";
    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7\n-----END PRIVATE KEY-----";
    const SECRET: &str = "s3cr3t-value-from-a-file";

    fn origin() -> Origin {
        Origin {
            server: "time".into(),
            policy: "/etc/mcpguard/time.toml".into(),
            launch: "time-1".into(),
            uid: 1000,
        }
    }

    fn record(body: Body) -> AuditRecord {
        AuditRecord::new(
            body,
            Some(&origin()),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    fn argv() -> Vec<String> {
        [
            "server",
            &format!("--token={GITHUB}"),
            AWS,
            SLACK,
            JWT,
            PEM,
            SECRET,
        ]
        .map(String::from)
        .to_vec()
    }

    /// The record as the writer would write it, after [`redact`].
    fn written(rec: AuditRecord, secrets: Option<&Arc<Redactor>>) -> String {
        let rec = redact(Cow::Owned(rec), secrets.map(|r| &**r));
        serde_json::to_string(&rec).unwrap()
    }

    fn assert_clean(line: &str, raw: &[&str]) {
        for value in raw {
            assert!(!line.contains(value), "{value:?} is in {line}");
        }
    }

    #[test]
    fn command_lines_are_redacted_of_credential_shapes_for_every_server() {
        let launch = record(Body::Launch {
            argv: argv(),
            cgroup: "/sys/fs/cgroup/mcpguard/time-1".into(),
            cwd: "/".into(),
            layers: serde_json::Value::Null,
        });
        let failed = record(Body::LaunchFailed {
            argv: argv(),
            error: format!("{GITHUB:?} not found in PATH=\"/usr/bin\""),
        });
        let exec = record(Body::Exec {
            filename: "/usr/bin/curl".into(),
            path_truncated: false,
            argv: argv(),
            argc_truncated: false,
            result: 0,
            errno: None,
        });
        for rec in [launch, failed, exec] {
            let kind = rec.body.kind();
            let line = written(rec, None);
            assert_clean(&line, &[GITHUB, AWS, SLACK, JWT, "MIIBVQIBADAN"]);
            for shape in [
                "github_token",
                "aws_access_key",
                "slack_token",
                "jwt",
                "private_key",
            ] {
                assert!(
                    line.contains(&format!("[REDACTED:{shape}]")),
                    "{kind}: {line}"
                );
            }
            // The server has no secrets: nothing else is touched.
            assert!(line.contains(SECRET), "{line}");
            let back: AuditRecord = serde_json::from_str(&line).unwrap();
            assert_eq!(back.body.kind(), kind);
        }
    }

    #[test]
    fn command_lines_of_a_server_with_secrets_lose_its_secrets_too() {
        let secrets = Arc::new(Redactor::new(&[(
            "API_TOKEN".into(),
            SECRET.as_bytes().to_vec(),
        )]));
        let exec = record(Body::Exec {
            filename: "/usr/bin/curl".into(),
            path_truncated: false,
            argv: argv(),
            argc_truncated: false,
            result: 0,
            errno: None,
        });
        let line = written(exec, Some(&secrets));
        assert_clean(&line, &[SECRET, GITHUB, AWS]);
        assert!(line.contains("[REDACTED:API_TOKEN]"), "{line}");
        assert!(line.contains("[REDACTED:github_token]"), "{line}");
    }

    #[test]
    fn exec_arguments_cut_by_the_kernel_lose_the_head_of_a_credential() {
        let secrets = Arc::new(Redactor::new(&[(
            "API_TOKEN".into(),
            SECRET.as_bytes().to_vec(),
        )]));
        let cut = |arg: &str| arg[..ARG_LEN - 1].to_owned();
        let token = cut(&format!("--header=Authorization: token {GITHUB}"));
        let key = cut(&format!(
            "--header=X-Amz-Credential-For-This-Long-Call: {AWS}"
        ));
        let secret = cut(&format!(
            "--header=X-Api-Token-For-This-Example-Call: {SECRET}"
        ));
        let exec = record(Body::Exec {
            filename: "/usr/bin/curl".into(),
            path_truncated: false,
            argv: vec!["curl".into(), token, key, secret],
            argc_truncated: false,
            result: 0,
            errno: None,
        });
        let line = written(exec.clone(), Some(&secrets));
        assert_clean(&line, &["ghp_abcdefghijkl", "AKIAIOSF", "s3cr3t-v"]);
        assert!(line.contains("token [REDACTED:github_token]"), "{line}");
        assert!(line.contains("Call: [REDACTED:aws_access_key]"), "{line}");
        assert!(line.contains("Call: [REDACTED:API_TOKEN]"), "{line}");
        // Shapes for a server without secrets too.
        let line = written(exec, None);
        assert_clean(&line, &["ghp_abcdefghijkl", "AKIAIOSF"]);
    }

    #[test]
    fn other_records_of_a_server_without_secrets_are_left_alone() {
        let open = record(Body::Open {
            call: "openat".into(),
            path: format!("/tmp/{GITHUB}"),
            path_truncated: false,
            flags: vec!["O_RDONLY".into()],
            mode: None,
            dirfd: None,
            result: 3,
            errno: None,
        });
        assert!(matches!(
            redact(Cow::Borrowed(&open), None),
            Cow::Borrowed(_)
        ));
    }

    fn unix_connect(path: &str) -> AuditRecord {
        AuditRecord::new(
            Body::UnixConnect {
                path: path.to_owned(),
                path_truncated: false,
                abstract_addr: false,
                result: -i64::from(libc::ENOENT),
                errno: Some("ENOENT".into()),
                fenced: false,
            },
            None,
            std::time::SystemTime::now(),
        )
    }

    #[test]
    fn only_paths_that_exist_on_the_host_are_fenced() {
        let dir = std::env::temp_dir().join(format!("mcpguard-fence-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("agent.sock");
        std::fs::write(&sock, "").unwrap();
        let fence = Fence {
            hidden: vec![dir.clone()],
            kept: Vec::new(),
            masked: Vec::new(),
        };
        let mut hidden = unix_connect(sock.to_str().unwrap());
        mark_fenced(&mut hidden, &fence);
        assert!(hidden.denied, "a hidden socket that exists is fenced");
        // nscd's probe where nscd is not installed: nothing to reach.
        let mut absent = unix_connect(dir.join("nscd/socket").to_str().unwrap());
        mark_fenced(&mut absent, &fence);
        assert!(!absent.denied);
        assert!(matches!(
            absent.body,
            Body::UnixConnect { fenced: false, .. }
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
