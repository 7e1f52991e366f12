//! What the daemon tells `mcpguard status` and `mcpguard audit` over its
//! socket: its version, uptime and kernel layers, the audit log's health,
//! each running server with per-kind record counts, and a user's own audit
//! records.
//!
//! The counts come from the audit thread, which sees every record as it is
//! written ([`Stats`]); a status request asks it for a snapshot. Callers
//! other than root see only servers and records whose uid is theirs (from
//! SO_PEERCRED), and so does anything running inside a guarded server.
//!
//! A query connection can make the daemon hold at most one thread, a
//! [`proto::MAX_QUERY_FRAME`] request and one batch of records; each uid may
//! have [`MAX_QUERIES_PER_UID`] queries open, and all users together
//! [`MAX_QUERIES`]. A client that sends nothing, or stops reading, is
//! dropped after a timeout.

use std::{
    collections::{BTreeMap, HashMap},
    io::{self, Write},
    os::{fd::AsRawFd, unix::net::UnixStream},
    path::PathBuf,
    sync::{mpsc::sync_channel, Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use nix::sys::socket::{recv, MsgFlags};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;
use tracing::{debug, warn};

use super::{
    auditor::Msg,
    proto::{self, ProtoError, Request, Response},
    session::Peer,
    Shared,
};
use crate::audit::{format_ts, query, writer::SinkStatus, AuditRecord, Origin};

/// Open queries per uid.
pub const MAX_QUERIES_PER_UID: usize = 8;
/// Open queries from all users together.
pub const MAX_QUERIES: usize = 64;
/// Connections per uid that have not yet sent their request; each holds a
/// thread until it does or its time runs out. A user flooding the socket
/// is refused beyond this, and can only delay its own launches.
pub const MAX_HANDSHAKES_PER_UID: usize = 16;
/// Connections from all users together that have not sent their request.
pub const MAX_HANDSHAKES: usize = 256;
/// Default for servers one user may run at once.
pub const DEFAULT_SERVERS_PER_USER: usize = 64;
/// Default for launches one user may have in flight (started, not yet
/// running) at once; a client starting all its servers at once waits for
/// a place rather than being refused ([`LAUNCH_WAIT`]).
pub const DEFAULT_LAUNCHES_PER_USER: usize = 16;
/// How long a launch waits for one of its user's launches in progress to
/// finish before it is refused.
pub const LAUNCH_WAIT: Duration = Duration::from_secs(30);

/// How many servers a user may run, and start, at once
/// (`--max-servers-per-user`, `--max-launches-per-user`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchLimits {
    pub servers_per_user: usize,
    pub launches_per_user: usize,
}

impl Default for LaunchLimits {
    fn default() -> Self {
        LaunchLimits {
            servers_per_user: DEFAULT_SERVERS_PER_USER,
            launches_per_user: DEFAULT_LAUNCHES_PER_USER,
        }
    }
}

/// The per-user limit a launch ran into.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum AtLimit {
    #[error(
        "this user already runs {0} servers, the daemon's limit (--max-servers-per-user); \
         stop one first"
    )]
    Servers(usize),
    #[error(
        "this user has had {0} launches in progress, the daemon's limit \
         (--max-launches-per-user), for {wait}s; try again when one has started",
        wait = LAUNCH_WAIT.as_secs()
    )]
    Launches(usize),
}

/// How long a query client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write to a query client may block before the daemon gives
/// up on it (a `--follow` reader that stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the audit thread has to answer a stats request.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);
/// Records are sent in batches of about this many bytes.
const BATCH_BYTES: usize = 256 << 10;
/// Longest record line sent; longer ones are counted as skipped (a frame
/// must stay under [`proto::MAX_FRAME`] even with every byte escaped).
const MAX_RECORD_LINE: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum QueryError {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("the connection closed before a request arrived")]
    NoRequest,
    #[error("a connection without descriptors may only ask for status or audit records")]
    NotAQuery,
    #[error(
        "too many open queries (at most {MAX_QUERIES_PER_UID} per user, {MAX_QUERIES} in all); \
         try again when one ends"
    )]
    TooMany,
    #[error(
        "refusing an audit query from inside a guarded server: its records describe other servers"
    )]
    FromGuarded,
    #[error("the audit thread did not answer")]
    AuditThread,
    #[error("{0}")]
    Audit(#[from] query::QueryError),
}

/// Record counts of one kind.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    pub allowed: u64,
    pub denied: u64,
}

/// A server's most recent denial.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LastDenial {
    pub kind: String,
    /// The record in a few words, as `mcpguard audit` prints it.
    pub summary: String,
    /// The record's time (RFC 3339).
    pub ts: String,
}

/// One running server.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServerStatus {
    pub server: String,
    pub policy: String,
    pub launch: String,
    /// The server's main process, once its launch record is written.
    pub pid: Option<u32>,
    pub uid: u32,
    /// When the launch began (RFC 3339).
    pub started: String,
    pub uptime_s: u64,
    /// Records written for this launch, by kind.
    pub counts: BTreeMap<String, Counts>,
    pub last_denial: Option<LastDenial>,
}

/// One kernel layer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerStatus {
    pub layer: String,
    pub active: bool,
    /// What it is, or why it is missing.
    pub detail: String,
}

/// The answer to `mcpguard status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    /// The daemon's version.
    pub version: String,
    pub pid: u32,
    /// When the daemon started (RFC 3339).
    pub started: String,
    pub uptime_s: u64,
    pub layers: Vec<LayerStatus>,
    /// Whether records reach the audit log, and what waits in memory if
    /// not (absent from daemons before it was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<SinkStatus>,
    /// `Some(uid)`: only that uid's servers are listed.
    pub only_uid: Option<u32>,
    pub servers: Vec<ServerStatus>,
}

/// Per-launch counters, kept by the audit thread.
#[derive(Debug, Default)]
pub struct Stats {
    launches: HashMap<String, LaunchStats>,
}

#[derive(Debug)]
struct LaunchStats {
    origin: Origin,
    started: SystemTime,
    pid: Option<u32>,
    counts: BTreeMap<&'static str, Counts>,
    last_denial: Option<AuditRecord>,
}

impl Stats {
    /// A launch began (its cgroup was registered with the audit thread).
    pub fn register(&mut self, origin: &Origin) {
        self.launches.insert(
            origin.launch.clone(),
            LaunchStats {
                origin: origin.clone(),
                started: SystemTime::now(),
                pid: None,
                counts: BTreeMap::new(),
                last_denial: None,
            },
        );
    }

    /// A launch ended.
    pub fn forget(&mut self, launch: &str) {
        self.launches.remove(launch);
    }

    /// Count a record as it is written (after redaction).
    pub fn record(&mut self, rec: &AuditRecord) {
        let Some(stats) = rec.launch.as_deref().and_then(|l| self.launches.get_mut(l)) else {
            return;
        };
        let kind = rec.body.kind();
        if kind == "launch" {
            stats.pid = rec.pid;
        }
        let counts = stats.counts.entry(kind).or_default();
        if rec.denied {
            counts.denied += 1;
            stats.last_denial = Some(rec.clone());
        } else {
            counts.allowed += 1;
        }
    }

    /// Every launch, oldest first.
    pub fn snapshot(&self) -> Vec<ServerStatus> {
        let now = SystemTime::now();
        let mut servers: Vec<ServerStatus> = self
            .launches
            .values()
            .map(|s| ServerStatus {
                server: s.origin.server.clone(),
                policy: s.origin.policy.clone(),
                launch: s.origin.launch.clone(),
                pid: s.pid,
                uid: s.origin.uid,
                started: format_ts(s.started),
                uptime_s: now.duration_since(s.started).unwrap_or_default().as_secs(),
                counts: s
                    .counts
                    .iter()
                    .map(|(k, c)| ((*k).to_string(), *c))
                    .collect(),
                last_denial: s.last_denial.as_ref().map(summarize),
            })
            .collect();
        servers.sort_by(|a, b| (&a.started, &a.launch).cmp(&(&b.started, &b.launch)));
        servers
    }
}

fn summarize(rec: &AuditRecord) -> LastDenial {
    let kind = rec.body.kind();
    let value = serde_json::to_value(rec).unwrap_or(Value::Null);
    LastDenial {
        kind: kind.to_string(),
        summary: query::describe(kind, &value),
        ts: rec.ts.clone(),
    }
}

/// What the daemon knows about itself for status, and the query limits.
#[derive(Debug)]
pub struct DaemonInfo {
    started: Instant,
    started_at: SystemTime,
    audit_log: PathBuf,
    /// Open queries per uid.
    open: Mutex<HashMap<u32, usize>>,
    /// Connections per uid still sending their request.
    handshakes: Mutex<HashMap<u32, usize>>,
    pub launch_limits: LaunchLimits,
    /// Servers per uid, from launch request to session end.
    servers: Mutex<HashMap<u32, usize>>,
    /// Launches per uid not yet running.
    launching: Mutex<HashMap<u32, usize>>,
}

impl DaemonInfo {
    /// `started`: when the daemon began starting up.
    pub fn new(started: Instant, audit_log: PathBuf, launch_limits: LaunchLimits) -> Self {
        DaemonInfo {
            started,
            started_at: SystemTime::now()
                .checked_sub(started.elapsed())
                .unwrap_or_else(SystemTime::now),
            audit_log,
            open: Mutex::new(HashMap::new()),
            handshakes: Mutex::new(HashMap::new()),
            launch_limits,
            servers: Mutex::new(HashMap::new()),
            launching: Mutex::new(HashMap::new()),
        }
    }

    /// [`DaemonInfo::launch`], waiting up to `wait` while the user is at
    /// the launch limit (not at the server limit: that one only moves when
    /// a server ends).
    pub fn launch_within(&self, uid: u32, wait: Duration) -> Result<(Slot<'_>, Slot<'_>), AtLimit> {
        let deadline = Instant::now() + wait;
        loop {
            match self.launch(uid) {
                Err(AtLimit::Launches(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// Places for one more server of `uid`, and for its launch: the first
    /// is held until the session ends, the second until the server runs.
    /// Refused with the limit the user is at.
    pub fn launch(&self, uid: u32) -> Result<(Slot<'_>, Slot<'_>), AtLimit> {
        let limits = self.launch_limits;
        let server = Slot::take(&self.servers, uid, limits.servers_per_user, usize::MAX)
            .ok_or(AtLimit::Servers(limits.servers_per_user))?;
        let launch = Slot::take(&self.launching, uid, limits.launches_per_user, usize::MAX)
            .ok_or(AtLimit::Launches(limits.launches_per_user))?;
        Ok((server, launch))
    }

    /// Take a query slot for `uid`, if the limits allow one.
    fn acquire(&self, uid: u32) -> Option<Slot<'_>> {
        Slot::take(&self.open, uid, MAX_QUERIES_PER_UID, MAX_QUERIES)
    }

    /// Take a slot for a connection of `uid` that has yet to send its
    /// request, if the limits allow one.
    pub fn handshake(&self, uid: u32) -> Option<Slot<'_>> {
        Slot::take(
            &self.handshakes,
            uid,
            MAX_HANDSHAKES_PER_UID,
            MAX_HANDSHAKES,
        )
    }
}

/// One counted connection of a uid; dropping it frees the place.
pub struct Slot<'a> {
    counts: &'a Mutex<HashMap<u32, usize>>,
    uid: u32,
}

impl<'a> Slot<'a> {
    fn take(
        counts: &'a Mutex<HashMap<u32, usize>>,
        uid: u32,
        per_uid: usize,
        total: usize,
    ) -> Option<Slot<'a>> {
        let mut open = counts.lock().unwrap_or_else(|p| p.into_inner());
        let all: usize = open.values().sum();
        let mine = open.entry(uid).or_insert(0);
        if *mine >= per_uid || all >= total {
            if *mine == 0 {
                open.remove(&uid);
            }
            return None;
        }
        *mine += 1;
        Some(Slot { counts, uid })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut open = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

/// Serve one query connection (its first byte carried no descriptors);
/// errors are reported to the client.
pub fn serve(shared: &Arc<Shared>, stream: &UnixStream, peer: &Peer, guarded: bool) {
    // Root sees everything; everyone else, and anything inside a guarded
    // server, only its own uid.
    let scope = (peer.uid != 0 || guarded).then_some(peer.uid);
    let result = match shared.info.acquire(peer.uid) {
        Some(_slot) => serve_query(shared, stream, scope, guarded),
        None => Err(QueryError::TooMany),
    };
    if let Err(error) = result {
        debug!(uid = peer.uid, pid = peer.pid, %error, "query refused");
        let _ = proto::write_frame(
            &mut &*stream,
            &Response::Error {
                message: error.to_string(),
            },
        );
    }
}

fn serve_query(
    shared: &Arc<Shared>,
    stream: &UnixStream,
    scope: Option<u32>,
    guarded: bool,
) -> Result<(), QueryError> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut late = proto::Deadline::new(stream, Instant::now() + REQUEST_TIMEOUT);
    let request = proto::read_frame_limited::<Request>(&mut late, proto::MAX_QUERY_FRAME)?
        .ok_or(QueryError::NoRequest)?;
    match request {
        Request::Status { version } => {
            check_version(version)?;
            let report = report(shared, scope)?;
            proto::write_frame(&mut &*stream, &Response::Status(Box::new(report)))?;
            Ok(())
        }
        Request::Audit { version, query } => {
            check_version(version)?;
            if guarded {
                return Err(QueryError::FromGuarded);
            }
            stream_audit(shared, stream, scope, &query)
        }
        Request::Launch { .. } | Request::Signal { .. } => Err(QueryError::NotAQuery),
    }
}

fn check_version(got: u32) -> Result<(), QueryError> {
    if got == proto::VERSION {
        Ok(())
    } else {
        Err(ProtoError::Version { got }.into())
    }
}

/// The status report for a caller who may see `scope` (`None`: all).
pub fn report(shared: &Shared, scope: Option<u32>) -> Result<StatusReport, QueryError> {
    let (tx, rx) = sync_channel(1);
    shared.audit(Msg::Stats(tx));
    let servers = rx
        .recv_timeout(STATS_TIMEOUT)
        .map_err(|_| QueryError::AuditThread)?
        .into_iter()
        .filter(|s| scope.is_none_or(|uid| s.uid == uid))
        .collect();
    let (tx, rx) = sync_channel(1);
    shared.audit(Msg::Sink(tx));
    let audit_log = rx
        .recv_timeout(STATS_TIMEOUT)
        .map_err(|_| QueryError::AuditThread)?;
    Ok(StatusReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        started: format_ts(shared.info.started_at),
        uptime_s: shared.info.started.elapsed().as_secs(),
        layers: layers(shared),
        audit_log: Some(audit_log),
        only_uid: scope,
        servers,
    })
}

/// Every layer the daemon probed: cgroup v2 and Landlock, then each flag of
/// [`crate::ebpf::Layers`] (read through serde, so layers added there show
/// up here), with the reason recorded for a missing one.
fn layers(shared: &Shared) -> Vec<LayerStatus> {
    let mut out = vec![LayerStatus {
        layer: "cgroup2".into(),
        active: true,
        detail: format!("servers under {}", shared.tree.root.display()),
    }];
    out.push(match crate::launch::probe_landlock_abi() {
        Some(abi) => LayerStatus {
            layer: "landlock".into(),
            active: true,
            detail: format!("ABI {abi}"),
        },
        None => LayerStatus {
            layer: "landlock".into(),
            active: false,
            detail: "not available (kernel before 5.13, or `landlock` not among the active \
                     LSMs); launches are refused"
                .into(),
        },
    });
    let value = serde_json::to_value(&shared.layers).unwrap_or(Value::Null);
    let missing: Vec<&str> = value
        .get("missing")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for (layer, active) in value.as_object().into_iter().flatten() {
        let Some(active) = active.as_bool() else {
            continue;
        };
        let detail = if active {
            String::new()
        } else {
            missing
                .iter()
                .find(|m| m.starts_with(layer.as_str()))
                .map_or_else(|| "missing (reason unknown)".to_string(), |m| m.to_string())
        };
        out.push(LayerStatus {
            layer: layer.clone(),
            active,
            detail,
        });
    }
    out
}

/// Stream the log's records that match `query` and that `scope` may see,
/// until the log ends (then [`Response::End`]) or, with `follow`, until the
/// client hangs up or the daemon shuts down.
fn stream_audit(
    shared: &Arc<Shared>,
    stream: &UnixStream,
    scope: Option<u32>,
    q: &query::Filter,
) -> Result<(), QueryError> {
    // A `since` the filter cannot read is the caller's error, not a failed query.
    q.since_time()?;
    let mut sink = RecordSink {
        stream,
        scope,
        pending: Vec::new(),
        batch: Vec::new(),
        batch_bytes: 0,
        shown: 0,
        skipped: 0,
    };
    let stop = || shared.is_shutting_down() || hung_up(stream);
    let result = query::stream(&shared.info.audit_log, q, &mut sink, &mut io::sink(), &stop);
    match result {
        Ok(_) => {
            sink.flush()?;
            if !q.follow {
                proto::write_frame(
                    &mut &*stream,
                    &Response::End {
                        shown: sink.shown,
                        skipped: sink.skipped,
                    },
                )?;
            }
            Ok(())
        }
        Err(error) => {
            warn!(%error, "audit query");
            Err(error.into())
        }
    }
}

/// Whether the client closed its end (checked between polls of `--follow`):
/// a peek that finds the end of the stream. Anything the client sent is
/// left unread.
fn hung_up(stream: &UnixStream) -> bool {
    let mut byte = [0u8; 1];
    match recv(
        stream.as_raw_fd(),
        &mut byte,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(0) => true,
        Ok(_) | Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => false,
        Err(_) => true,
    }
}

/// Takes the matching log lines [`query::stream`] writes, keeps those the
/// caller may see, and sends them in [`Response::Records`] batches.
struct RecordSink<'a> {
    stream: &'a UnixStream,
    scope: Option<u32>,
    /// Bytes after the last newline.
    pending: Vec<u8>,
    batch: Vec<String>,
    batch_bytes: usize,
    shown: u64,
    skipped: u64,
}

impl RecordSink<'_> {
    fn line(&mut self, raw: &[u8]) -> io::Result<()> {
        if !visible(raw, self.scope) {
            return Ok(());
        }
        if raw.len() > MAX_RECORD_LINE {
            self.skipped += 1;
            return Ok(());
        }
        // Lines that matched a filter parsed as JSON, so they are UTF-8.
        let line = String::from_utf8_lossy(raw).into_owned();
        self.batch_bytes += line.len();
        self.batch.push(line);
        self.shown += 1;
        if self.batch_bytes >= BATCH_BYTES {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let lines = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        proto::write_frame(&mut &*self.stream, &Response::Records { lines }).map_err(|e| match e {
            ProtoError::Io(e) => e,
            other => io::Error::other(other.to_string()),
        })
    }
}

impl Write for RecordSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + nl;
            let line = self.pending[start..end].to_vec();
            self.line(&line)?;
            start = end + 1;
        }
        self.pending.drain(..start);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Whether a caller limited to `scope` may see this log line: only records
/// whose `uid` is the caller's; records without a uid are root's.
fn visible(raw: &[u8], scope: Option<u32>) -> bool {
    let Some(uid) = scope else {
        return true;
    };
    serde_json::from_slice::<Value>(raw)
        .ok()
        .and_then(|v| v.get("uid").and_then(Value::as_u64))
        == Some(u64::from(uid))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::audit::Body;

    fn origin(launch: &str, uid: u32) -> Origin {
        Origin {
            server: "time".into(),
            policy: "/etc/mcpguard/policies/time.toml".into(),
            launch: launch.into(),
            uid,
        }
    }

    fn open(result: i64, o: &Origin) -> AuditRecord {
        AuditRecord::new(
            Body::Open {
                call: "openat".into(),
                path: "/home/u/.ssh/id_rsa".into(),
                path_truncated: false,
                flags: vec!["O_RDONLY".into()],
                mode: None,
                dirfd: None,
                result,
                errno: None,
            },
            Some(o),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    #[test]
    fn stats_count_by_kind_and_keep_the_last_denial_per_launch() {
        let mut stats = Stats::default();
        let a = origin("time-1", 1000);
        let b = origin("time-2", 1001);
        stats.register(&a);
        stats.register(&b);
        let mut launch = AuditRecord::new(
            Body::Launch {
                argv: vec!["x".into()],
                cgroup: "/sys/fs/cgroup/mcpguard/time-1".into(),
                cwd: "/".into(),
                layers: Value::Null,
            },
            Some(&a),
            SystemTime::now(),
        );
        launch.pid = Some(4242);
        stats.record(&launch);
        stats.record(&open(3, &a));
        stats.record(&open(3, &a));
        stats.record(&open(-13, &a));
        stats.record(&open(3, &b));
        // Records of unknown launches and without a launch are ignored.
        stats.record(&open(-13, &origin("gone-9", 1000)));
        stats.record(&AuditRecord::new(
            Body::Loss {
                lost: 1,
                total: 1,
                source: "ringbuf".into(),
                first_ts: None,
                last_ts: None,
                denials: None,
            },
            None,
            SystemTime::now(),
        ));

        let snap = stats.snapshot();
        assert_eq!(snap.len(), 2);
        let one = snap.iter().find(|s| s.launch == "time-1").unwrap();
        assert_eq!(one.pid, Some(4242));
        assert_eq!(one.uid, 1000);
        assert_eq!(
            one.counts["open"],
            Counts {
                allowed: 2,
                denied: 1
            }
        );
        assert_eq!(
            one.counts["launch"],
            Counts {
                allowed: 1,
                denied: 0
            }
        );
        let denial = one.last_denial.as_ref().unwrap();
        assert_eq!(denial.kind, "open");
        assert!(
            denial.summary.contains("/home/u/.ssh/id_rsa"),
            "{}",
            denial.summary
        );
        assert_eq!(denial.ts, "2023-11-14T22:13:20.000000Z");
        let two = snap.iter().find(|s| s.launch == "time-2").unwrap();
        assert_eq!(two.pid, None);
        assert!(two.last_denial.is_none());

        stats.forget("time-1");
        assert_eq!(stats.snapshot().len(), 1);
    }

    #[test]
    fn a_limited_caller_sees_only_records_with_its_uid() {
        let mine = br#"{"v":1,"uid":1000,"kind":"open"}"#;
        let theirs = br#"{"v":1,"uid":1001,"kind":"open"}"#;
        let daemon = br#"{"v":1,"kind":"daemon"}"#;
        assert!(visible(mine, Some(1000)));
        assert!(!visible(theirs, Some(1000)));
        assert!(!visible(daemon, Some(1000)), "uid-less records are root's");
        assert!(!visible(b"not json", Some(1000)));
        for line in [&mine[..], theirs, daemon] {
            assert!(visible(line, None), "root sees everything");
        }
    }

    #[test]
    fn record_sink_batches_only_visible_lines_into_frames() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut sink = RecordSink {
            stream: &a,
            scope: Some(1000),
            pending: Vec::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            shown: 0,
            skipped: 0,
        };
        // Written as query::stream does: the line, then its newline.
        sink.write_all(br#"{"uid":1000,"n":1}"#).unwrap();
        sink.write_all(b"\n").unwrap();
        sink.write_all(b"{\"uid\":1001,\"n\":2}\n{\"uid\":1000,\"n\":3}\n")
            .unwrap();
        sink.flush().unwrap();
        sink.flush().unwrap(); // nothing new: no empty frame
        assert_eq!(sink.shown, 2);
        drop(sink);
        drop(a);
        let got: Response = proto::read_frame(&mut &b).unwrap().unwrap();
        match got {
            Response::Records { lines } => assert_eq!(
                lines,
                vec![r#"{"uid":1000,"n":1}"#, r#"{"uid":1000,"n":3}"#]
            ),
            other => panic!("expected records, got {other:?}"),
        }
        assert!(proto::read_frame::<Response>(&mut &b).unwrap().is_none());
    }

    #[test]
    fn servers_and_launches_are_limited_per_uid_and_released() {
        let info = DaemonInfo::new(
            Instant::now(),
            PathBuf::from("/nonexistent"),
            LaunchLimits {
                servers_per_user: 3,
                launches_per_user: 2,
            },
        );
        let (s1, l1) = info.launch(1000).unwrap();
        let (_s2, _l2) = info.launch(1000).unwrap();
        assert_eq!(info.launch(1000).err(), Some(AtLimit::Launches(2)));
        // Another user has limits of their own.
        assert!(info.launch(1001).is_ok());
        drop(l1);
        let (_s3, l3) = info.launch(1000).unwrap();
        drop(l3);
        assert_eq!(info.launch(1000).err(), Some(AtLimit::Servers(3)));
        drop(s1);
        assert!(info.launch(1000).is_ok());
        // At the server limit nothing waits.
        let started = Instant::now();
        let _held = info.launch(1000).unwrap();
        assert_eq!(
            info.launch_within(1000, Duration::from_secs(5)).err(),
            Some(AtLimit::Servers(3))
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn query_slots_are_limited_per_uid_and_released() {
        let info = DaemonInfo::new(
            Instant::now(),
            PathBuf::from("/nonexistent"),
            LaunchLimits::default(),
        );
        let slots: Vec<_> = (0..MAX_QUERIES_PER_UID)
            .map(|_| info.acquire(1000).unwrap())
            .collect();
        assert!(info.acquire(1000).is_none());
        assert!(info.acquire(1001).is_some(), "another user is not blocked");
        drop(slots);
        assert!(info.acquire(1000).is_some());
    }
}
