//! The audit thread: drains the kernel ring buffer, enriches each record
//! with the server it came from, and writes the JSON Lines log.
//!
//! Everything written to the log goes through this one thread, in order.
//! Records are submitted by the kernel without wakeups, so the thread polls
//! the ring buffer every [`TICK`] as well as on wakeups. Kernel drops
//! (ring buffer full, or a server over its share of it) and undecodable
//! samples become `loss` records within a second, also while a flood keeps
//! the ring buffer busy (draining yields every [`DRAIN_SLICE`]); nothing is
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
    /// Drain everything, flush and stop.
    Stop,
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
    origins: HashMap<u64, Origin>,
    /// Secrets of servers that have some, by cgroup: every record of that
    /// server is redacted before it is written.
    redactors: HashMap<u64, Arc<Redactor>>,
    fences: HashMap<u64, Fence>,
    /// Persistence watches, by cgroup.
    persists: HashMap<u64, super::persist::Watch>,
    /// Learning servers: what they did.
    learners: HashMap<u64, Observations>,
    calls: Arc<CallTracker>,
    /// Per-server record budgets; kernel records are checked here.
    budgets: Arc<Budgets>,
    /// Kernel loss counts already reported, per cgroup.
    lost_seen: HashMap<u64, u64>,
    /// Over-share (allow, deny) counts already reported, per cgroup.
    shed_seen: HashMap<u64, (u64, u64)>,
    /// Bytes read per cgroup, and whether the kernel has seen the latest.
    consumed: HashMap<u64, (u64, bool)>,
    limits: HashMap<u64, Arc<Mutex<LimitCounters>>>,
    decode_errors: u64,
    decode_reported: u64,
    /// Counts of every record written, per running launch.
    stats: super::stats::Stats,
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
            origins: HashMap::new(),
            redactors: HashMap::new(),
            fences: HashMap::new(),
            persists: HashMap::new(),
            learners: HashMap::new(),
            calls,
            lost_seen: HashMap::new(),
            shed_seen: HashMap::new(),
            consumed: HashMap::new(),
            limits: HashMap::new(),
            decode_errors: 0,
            decode_reported: 0,
            stats: Default::default(),
        }
    }

    fn run(mut self, rx: Receiver<Msg>) {
        let mut last_loss = Instant::now();
        let mut stopping = false;
        while !stopping {
            let mut unregister = Vec::new();
            let mut harvest: Vec<(u64, Sender<Observations>)> = Vec::new();
            loop {
                match rx.try_recv() {
                    Ok(Msg::Record(rec)) => self.write(&rec),
                    Ok(Msg::Register {
                        cgroup_id,
                        origin,
                        redactor,
                    }) => {
                        self.stats.register(&origin);
                        self.origins.insert(cgroup_id, origin);
                        if let Some(r) = redactor {
                            self.redactors.insert(cgroup_id, r);
                        }
                    }
                    Ok(Msg::Learn { cgroup_id, cwd }) => {
                        self.learners.insert(cgroup_id, Observations::new(cwd));
                    }
                    Ok(Msg::Persist {
                        cgroup_id,
                        cwd,
                        allow,
                    }) => {
                        self.persists
                            .insert(cgroup_id, super::persist::Watch::new(cwd, allow));
                    }
                    Ok(Msg::PersistHooks { cgroup_id, dirs }) => {
                        if let Some(w) = self.persists.get_mut(&cgroup_id) {
                            w.add_hooks(dirs);
                        }
                    }
                    Ok(Msg::PersistExecutor { cgroup_id, pid }) => {
                        if let Some(w) = self.persists.get_mut(&cgroup_id) {
                            w.set_executor(pid);
                        }
                    }
                    Ok(Msg::Harvest { cgroup_id, reply }) => harvest.push((cgroup_id, reply)),
                    Ok(Msg::Fence {
                        cgroup_id,
                        hidden,
                        kept,
                        masked,
                    }) => {
                        self.fences.insert(
                            cgroup_id,
                            Fence {
                                hidden,
                                kept,
                                masked,
                            },
                        );
                    }
                    Ok(Msg::Unregister {
                        cgroup_id,
                        launch,
                        last,
                    }) => unregister.push((cgroup_id, launch, last)),
                    Ok(Msg::Stats(reply)) => {
                        let _ = reply.try_send(self.stats.snapshot());
                    }
                    Ok(Msg::Sink(reply)) => {
                        let _ = reply.try_send(self.writer.status());
                    }
                    Ok(Msg::Reopen) => self.writer.reopen(),
                    Ok(Msg::Limits {
                        cgroup_id,
                        counters,
                    }) => {
                        self.limits.insert(cgroup_id, counters);
                    }
                    Ok(Msg::Stop) | Err(TryRecvError::Disconnected) => {
                        stopping = true;
                        break;
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
            let mut more = self.drain();
            // A finished server's trail (and a harvest) must hold every
            // record it left in the ring buffer before its last record;
            // other servers still running may keep the buffer busy, so this
            // is bounded too.
            let finishing = stopping || !unregister.is_empty() || !harvest.is_empty();
            let mut slices = 1;
            while more && finishing && slices < FINISH_SLICES {
                more = self.drain();
                slices += 1;
            }
            if stopping || !unregister.is_empty() || last_loss.elapsed() >= LOSS_EVERY {
                self.report_losses();
                self.writer.follow_path();
                self.report_limits();
                last_loss = Instant::now();
            }
            for (cgroup_id, reply) in harvest {
                let obs = self.learners.remove(&cgroup_id).unwrap_or_default();
                let _ = reply.send(obs);
            }
            for (cgroup_id, launch, last) in unregister {
                let held = self.budgets.forget(&launch);
                self.report_held(held);
                if let Some(last) = last {
                    self.write(&last);
                }
                if let Some(origin) = self.origins.remove(&cgroup_id) {
                    self.stats.forget(&origin.launch);
                }
                self.redactors.remove(&cgroup_id);
                self.fences.remove(&cgroup_id);
                self.persists.remove(&cgroup_id);
                self.learners.remove(&cgroup_id);
                self.calls.forget(cgroup_id);
                self.lost_seen.remove(&cgroup_id);
                let _ = self.maps.lost.remove(&cgroup_id);
                self.shed_seen.remove(&cgroup_id);
                self.consumed.remove(&cgroup_id);
                let _ = self.maps.flow.remove(&cgroup_id);
                let _ = self.maps.consumed.remove(&cgroup_id);
                self.limits.remove(&cgroup_id);
            }
            self.writer.flush();
            if !stopping && !more {
                self.wait();
            }
        }
        info!(
            written = self.writer.written(),
            lost = self.writer.lost_total(),
            "audit thread stopped"
        );
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
            origins,
            redactors,
            fences,
            persists,
            learners,
            calls,
            decode_errors,
            stats,
            consumed,
            budgets,
            ..
        } = self;
        let mut n = 0u32;
        while let Some(item) = maps.events.next() {
            let header = decode::header_of(&item);
            if let Some((cgroup, _)) = header {
                let c = consumed.entry(cgroup).or_insert((0, false));
                c.0 += item.len() as u64;
                c.1 = true;
            }
            let decoded = decode::decode(&item, clock, |cg| origins.get(&cg).cloned());
            drop(item);
            match decoded {
                // The persistence fence's executor works for the server's
                // trapped calls; the fence records those calls itself.
                Ok(rec)
                    if header.is_some_and(|(cg, _)| {
                        persists.get(&cg).is_some_and(|w| w.is_executor(rec.pid))
                    }) => {}
                Ok(mut rec) => {
                    if let Some((cgroup, ts_ns)) = header {
                        // The helper reports the fence only once the server
                        // runs, and its first records can be decoded before
                        // that report arrives: until then, the directories
                        // every guarded server has hidden.
                        let fence = fences.get(&cgroup).or_else(|| {
                            (origins.contains_key(&cgroup) && !learners.contains_key(&cgroup))
                                .then(Fence::standard)
                        });
                        if let Some(fence) = fence {
                            mark_fenced(&mut rec, fence);
                        }
                        tag_calls(&mut rec, &calls.at(cgroup, ts_ns));
                        if let Some(obs) = learners.get_mut(&cgroup) {
                            obs.observe(&rec);
                        }
                        let secrets = redactors.get(&cgroup).map(|r| &**r);
                        rec = redact(Cow::Owned(rec), secrets).into_owned();
                    }
                    // Built from the redacted record: it repeats its path.
                    let persist = header
                        .and_then(|(cgroup, _)| persists.get_mut(&cgroup))
                        .and_then(|w| w.observe(&rec));
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
                publish_consumed(&mut maps.consumed, consumed);
                if started.elapsed() >= DRAIN_SLICE {
                    return true;
                }
            }
        }
        publish_consumed(&mut maps.consumed, consumed);
        false
    }

    fn report_losses(&mut self) {
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
            let seen = self.lost_seen.entry(cgroup_id).or_insert(0);
            if count > *seen {
                reports.push((cgroup_id, count - *seen));
                *seen = count;
            }
        }
        for (cgroup_id, lost) in reports {
            let total = self.writer.note_lost(lost);
            let origin = self.origins.get(&cgroup_id).cloned();
            let rec = AuditRecord::new(
                Body::Loss {
                    lost,
                    total,
                    source: "ringbuf".into(),
                    first_ts: None,
                    last_ts: None,
                    denials: None,
                },
                origin.as_ref(),
                SystemTime::now(),
            );
            self.write(&rec);
        }
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
            let seen = self.shed_seen.entry(cgroup_id).or_insert((0, 0));
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
            let total = self.writer.note_lost(allow + deny);
            let origin = self.origins.get(&cgroup_id).cloned();
            let rec = AuditRecord::new(
                Body::Loss {
                    lost: allow + deny,
                    total,
                    source: "rate".into(),
                    first_ts: None,
                    last_ts: None,
                    denials: Some(deny),
                },
                origin.as_ref(),
                SystemTime::now(),
            );
            self.write(&rec);
        }
        let held = self.budgets.take_held();
        self.report_held(held);
        if self.decode_errors > self.decode_reported {
            let lost = self.decode_errors - self.decode_reported;
            self.decode_reported = self.decode_errors;
            let total = self.writer.note_lost(lost);
            let rec = AuditRecord::new(
                Body::Loss {
                    lost,
                    total,
                    source: "decode".into(),
                    first_ts: None,
                    last_ts: None,
                    denials: None,
                },
                None,
                SystemTime::now(),
            );
            self.write(&rec);
        }
    }

    /// `loss` records for what servers' budgets held back.
    fn report_held(&mut self, held: Vec<(Origin, Source, Held)>) {
        for (origin, source, held) in held {
            let total = self.writer.note_lost(held.lost);
            let rec = AuditRecord::new(
                Body::Loss {
                    lost: held.lost,
                    total,
                    source: format!("budget:{}", source.name()),
                    first_ts: None,
                    last_ts: None,
                    denials: Some(held.denials),
                },
                Some(&origin),
                SystemTime::now(),
            );
            self.write(&rec);
        }
    }

    /// `limit` records for every server's new limit hits.
    fn report_limits(&mut self) {
        let mut hits = Vec::new();
        for (cgroup_id, counters) in &self.limits {
            let polled = counters.lock().unwrap_or_else(|p| p.into_inner()).poll();
            hits.extend(polled.into_iter().map(|h| (*cgroup_id, h)));
        }
        for (cgroup_id, hit) in hits {
            let rec = limit_record(&hit, self.origins.get(&cgroup_id));
            self.write(&rec);
        }
    }

    /// Daemon-made records (launches, MCP events) pass the same redaction
    /// as kernel records.
    fn write(&mut self, rec: &AuditRecord) {
        let cgroup = self
            .origins
            .iter()
            .find(|(_, o)| Some(&o.launch) == rec.launch.as_ref())
            .map(|(cg, _)| *cg);
        if let Some(obs) = cgroup.and_then(|cg| self.learners.get_mut(&cg)) {
            obs.observe(rec);
        }
        let secrets = cgroup.and_then(|cg| self.redactors.get(&cg)).map(|r| &**r);
        let rec = redact(Cow::Borrowed(rec), secrets);
        self.stats.record(&rec);
        self.writer.write(&rec)
    }
}

/// Tell the kernel how much of each server's output has been read, so a
/// server is judged by what it holds in the ring buffer now.
fn publish_consumed(
    map: &mut aya::maps::HashMap<aya::maps::MapData, u64, u64>,
    consumed: &mut HashMap<u64, (u64, bool)>,
) {
    for (cgroup, (bytes, fresh)) in consumed.iter_mut().filter(|(_, (_, f))| *f) {
        if let Err(error) = map.insert(cgroup, *bytes, 0) {
            warn!(cgroup, %error, "updating CONSUMED");
        }
        *fresh = false;
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
