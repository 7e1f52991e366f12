//! Queries on the daemon's socket: `mcpguard status` (its version, uptime
//! and kernel layers, the audit log's health, each running server with
//! per-kind record counts) and `mcpguard audit` (a user's own audit
//! records, streamed).
//!
//! Callers other than root see only servers and records whose uid is
//! theirs (from SO_PEERCRED), and so does anything running inside a
//! guarded server.
//!
//! A query connection can make the daemon hold at most one thread, a
//! [`proto::MAX_QUERY_FRAME`] request and one batch of records; how many
//! may be open at once is [`super::admit`]'s. A client that sends nothing,
//! or stops reading, is dropped after a timeout.

use std::{
    io::{self, Write},
    os::{fd::AsRawFd, unix::net::UnixStream},
    sync::{mpsc::sync_channel, Arc},
    time::{Duration, Instant},
};

use nix::sys::socket::{recv, MsgFlags};
use serde_json::Value;
use thiserror::Error;
use tracing::{debug, warn};

use super::{
    admit::{Peer, MAX_QUERIES, MAX_QUERIES_PER_UID},
    auditor::Msg,
    proto::{self, ProtoError, Request, Response},
    shared::Shared,
    status::{LayerStatus, StatusReport},
};
use crate::{
    audit::{format_ts, query},
    mcp::approve::{By, Decision},
};

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
    #[error(
        "a connection without descriptors may only ask for status, audit records or approvals"
    )]
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
    #[error(
        "refusing an approval request from inside a guarded server: a server may not decide \
         its own calls"
    )]
    ApprovalFromGuarded,
    #[error("{0}")]
    Approval(#[from] super::approvals::ApprovalError),
    #[error("the audit thread did not answer")]
    AuditThread,
    #[error("{0}")]
    Audit(#[from] query::QueryError),
}

/// Serve one query connection (its first byte carried no descriptors);
/// errors are reported to the client.
pub fn serve(shared: &Arc<Shared>, stream: &UnixStream, peer: &Peer, guarded: bool) {
    // Root sees everything; everyone else, and anything inside a guarded
    // server, only its own uid.
    let scope = (peer.uid != 0 || guarded).then_some(peer.uid);
    let result = match shared.admission.acquire(peer.uid) {
        Some(_slot) => serve_query(shared, stream, peer, scope, guarded),
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
    peer: &Peer,
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
        Request::Approvals { version } => {
            check_version(version)?;
            person_only(guarded)?;
            let (pending, tainted) = shared.approvals.list(scope);
            proto::write_frame(&mut &*stream, &Response::Approvals { pending, tainted })?;
            Ok(())
        }
        Request::Decide {
            version,
            approval,
            approve,
        } => {
            check_version(version)?;
            person_only(guarded)?;
            let by = By::Cli {
                uid: peer.uid,
                pid: peer.pid,
            };
            let decision = Decision {
                approved: approve,
                by,
            };
            shared.approvals.decide(approval, scope, decision)?;
            let verb = if approve { "approved" } else { "denied" };
            let message = format!("approval {approval}: {verb}");
            proto::write_frame(&mut &*stream, &Response::Done { message })?;
            Ok(())
        }
        Request::Clear { version, launch } => {
            check_version(version)?;
            person_only(guarded)?;
            let by = By::Cli {
                uid: peer.uid,
                pid: peer.pid,
            };
            shared.approvals.clear(&launch, scope, &by)?;
            let message = format!("{launch}: taint cleared");
            proto::write_frame(&mut &*stream, &Response::Done { message })?;
            Ok(())
        }
        Request::Launch { .. } | Request::Signal { .. } => Err(QueryError::NotAQuery),
    }
}

/// Approvals are a person's: a guarded server (running as that person)
/// must not list, approve or clear its own calls.
fn person_only(guarded: bool) -> Result<(), QueryError> {
    if guarded {
        Err(QueryError::ApprovalFromGuarded)
    } else {
        Ok(())
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
        guarantees: crate::kernel::coverage::table(super::plan::kernel_facts(
            &shared.layers,
            crate::launch::probe_landlock_abi(),
        )),
        audit_log: Some(audit_log),
        only_uid: scope,
        servers,
    })
}

/// Every layer the daemon probed: cgroup v2 and Landlock, then each flag of
/// [`crate::ebpf::Layers`] (read through serde, so layers added there show
/// up here), with the reason recorded for a missing one; last, whether the
/// syscall tracepoints are attached now, and for how many holders.
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
    let tracepoints = shared.tracepoints.state();
    out.push(LayerStatus {
        layer: "syscall_tracepoints".into(),
        active: tracepoints.programs > 0,
        detail: tracepoints.describe(),
    });
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
        pending: Vec::new(),
        batch: Vec::new(),
        batch_bytes: 0,
        shown: 0,
        skipped: 0,
    };
    let stop = || shared.is_shutting_down() || hung_up(stream);
    let result = query::stream(
        &shared.info.audit_log,
        q,
        scope,
        &mut sink,
        &mut io::sink(),
        &stop,
    );
    match result {
        Ok(summary) => {
            sink.flush()?;
            if !q.follow {
                proto::write_frame(
                    &mut &*stream,
                    &Response::End {
                        shown: sink.shown,
                        skipped: sink.skipped,
                        known: Some(summary.known.narrow(q)),
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

/// Takes the matching log lines [`query::stream`] writes (those the caller
/// may see) and sends them in [`Response::Records`] batches.
struct RecordSink<'a> {
    stream: &'a UnixStream,
    /// Bytes after the last newline.
    pending: Vec<u8>,
    batch: Vec<String>,
    batch_bytes: usize,
    shown: u64,
    skipped: u64,
}

impl RecordSink<'_> {
    fn line(&mut self, raw: &[u8]) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_without_names_reads_as_nothing_to_check() {
        let old: Response =
            serde_json::from_str(r#"{"type":"end","shown":3,"skipped":0}"#).unwrap();
        assert!(matches!(old, Response::End { known: None, .. }));
    }

    #[test]
    fn record_sink_batches_lines_into_frames() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut sink = RecordSink {
            stream: &a,
            pending: Vec::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            shown: 0,
            skipped: 0,
        };
        // Written as query::stream does: the line, then its newline.
        sink.write_all(br#"{"uid":1000,"n":1}"#).unwrap();
        sink.write_all(b"\n").unwrap();
        sink.write_all(b"{\"uid\":1000,\"n\":3}\n").unwrap();
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
}
