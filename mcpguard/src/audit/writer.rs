//! The JSON Lines sink: appends [`AuditRecord`]s to the audit log, and keeps
//! them in memory while the log cannot be written.
//!
//! The log is root's (file 0640, directory 0750): it names every file a
//! server touched, which is itself sensitive. Records are buffered and the
//! daemon calls [`AuditWriter::flush`] after each ring-buffer batch, so a
//! reader sees whole lines with at most one batch of delay. The file is
//! opened `O_APPEND`, so `logrotate`'s `copytruncate` works; after
//! move-and-recreate rotation the daemon calls [`AuditWriter::reopen`]
//! (SIGHUP), and [`AuditWriter::follow_path`] notices on its own when the
//! path no longer names the open file (moved, replaced or deleted).
//!
//! The log cannot grow without bound: once the file reaches
//! [`Rotation::max_bytes`] (`--audit-max-bytes`, [`DEFAULT_MAX_BYTES`]) the
//! writer itself rotates it before the next write, `audit.jsonl` becoming
//! `audit.jsonl.1`, `.1` becoming `.2` and so on, keeping
//! [`Rotation::keep`] old files (`--audit-keep`, [`DEFAULT_KEEP`]); the
//! oldest is removed. Records are only ever written after a rotation, to
//! the new file, so none is lost to it; `mcpguard audit` reads the old
//! files before the current one.
//!
//! A log that cannot be written (disk full, filesystem gone read-only, its
//! directory replaced) never stops enforcement, which does not depend on
//! this writer. Records wait in a bounded backlog (`--audit-backlog`,
//! [`DEFAULT_BACKLOG_BYTES`]) and writing is retried whenever records
//! arrive and every [`RETRY_EVERY`]. Records that do not fit are counted,
//! and once the log works again a `loss` record (`"source": "audit_sink"`,
//! with the times of the first and last one dropped) comes before any later
//! record. The file only ever ends in whole lines: a line a full disk cut
//! short is cut off again (and if even that fails, the next write starts
//! with a newline, so the fragment stands alone as one malformed line that
//! readers skip). The failure is logged once as an error, reminded every
//! [`REMIND_EVERY`], its end logged, and `mcpguard status` shows it
//! ([`SinkStatus`]).

use std::{
    fs::{DirBuilder, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

use super::{
    chain::{self, Link},
    format_ts, AuditRecord, Body,
};

const DIR_MODE: u32 = 0o750;
const FILE_MODE: u32 = 0o640;

/// Default bound of the in-memory backlog: about 50,000 records, enough
/// for minutes of a busy server while someone frees the disk, and small
/// next to the daemon's ring-buffer mapping.
pub const DEFAULT_BACKLOG_BYTES: usize = 16 << 20;
/// Default size at which the log is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 100 << 20;
/// Default number of rotated files kept.
pub const DEFAULT_KEEP: u32 = 9;
/// Smallest rotation size accepted: a few batches of records.
pub const MIN_MAX_BYTES: u64 = 1 << 20;
/// Smallest backlog accepted: room for a few records and the `loss` record.
pub const MIN_BACKLOG_BYTES: usize = 4 << 10;
/// While the log works, buffered records are written once this many bytes
/// are waiting (and after every ring-buffer batch).
const FLUSH_BYTES: usize = 64 << 10;
/// How often a failing log is retried when no records arrive.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How often a failure that persists is logged again.
pub const REMIND_EVERY: Duration = Duration::from_secs(60);
/// Longest `loss` line the backlog makes (every number at its widest, the
/// chain fields included); room for it is kept before a record is queued
/// after drops.
const LOSS_LINE_MAX: usize = 256 + chain::SEAL_MAX;
/// `source` of the `loss` records for records the backlog had no room for.
pub const LOSS_SOURCE: &str = "audit_sink";

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("cannot create audit log directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot open audit log {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot secure audit log {path} (owner root, mode 0640): {source}")]
    Secure { path: PathBuf, source: io::Error },
    #[error("cannot write to audit log {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The audit log's health, for `mcpguard status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SinkStatus {
    pub path: String,
    /// `ok`, or `failing` while records cannot be written.
    pub state: String,
    /// When the current failure began (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The latest error of the current failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Records waiting in memory to be written.
    pub backlog_records: u64,
    pub backlog_bytes: u64,
    /// The backlog's bound (`--audit-backlog`).
    pub backlog_cap_bytes: u64,
    /// Records dropped because the backlog was full, not yet reported by a
    /// `loss` record.
    pub dropped: u64,
    /// Records dropped that way since the daemon started.
    pub dropped_total: u64,
}

/// When the log is rotated and how many old files stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The file is rotated once it holds this many bytes (0: never).
    pub max_bytes: u64,
    /// Rotated files kept: `<log>.1` (newest) to `<log>.<keep>`.
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: DEFAULT_MAX_BYTES,
            keep: DEFAULT_KEEP,
        }
    }
}

/// The path of the `n`th rotated file of `log` (`n` ≥ 1).
pub fn rotated_path(log: &Path, n: u32) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Appends records to one JSON Lines file.
#[derive(Debug)]
pub struct AuditWriter {
    path: PathBuf,
    rotation: Rotation,
    /// `None` after opening the path failed: the next attempt opens it.
    file: Option<File>,
    backlog: Backlog,
    /// The file ends in part of a line that could not be cut off: the next
    /// write starts with a newline.
    fragment: bool,
    failure: Option<Failure>,
    /// Records arrived since the last attempt to write.
    fresh: bool,
    written: u64,
}

#[derive(Debug)]
struct Failure {
    since: SystemTime,
    began: Instant,
    error: String,
    last_try: Instant,
    last_said: Instant,
    /// `dropped_total` when it began.
    dropped_before: u64,
}

impl Failure {
    /// Whether to log the failure again (and if so, the clock restarts).
    fn remind_due(&mut self, now: Instant) -> bool {
        let due = now.duration_since(self.last_said) >= REMIND_EVERY;
        if due {
            self.last_said = now;
        }
        due
    }

    /// Whether to try writing again: records arrived, or a while passed.
    fn retry_due(&self, now: Instant, fresh: bool) -> bool {
        fresh || now.duration_since(self.last_try) >= RETRY_EVERY
    }
}

impl AuditWriter {
    /// Open (creating if needed) the log and its parent directory; at most
    /// `backlog_cap` bytes of records wait in memory while it fails.
    pub fn open(path: impl AsRef<Path>, backlog_cap: usize) -> Result<Self, WriterError> {
        Self::open_rotating(path, backlog_cap, Rotation::default())
    }

    /// [`AuditWriter::open`], rotating the file as `rotation` says.
    pub fn open_rotating(
        path: impl AsRef<Path>,
        backlog_cap: usize,
        rotation: Rotation,
    ) -> Result<Self, WriterError> {
        let path = path.as_ref().to_path_buf();
        let file = open_log(&path)?;
        let (link, fragment) = chain_start(&path);
        let mut backlog = Backlog::new(backlog_cap);
        backlog.link = link;
        Ok(AuditWriter {
            path,
            rotation,
            file: Some(file),
            backlog,
            fragment,
            failure: None,
            fresh: false,
            written: 0,
        })
    }

    /// Queue one record as a line; while the log works, a full buffer is
    /// written out first. A record the backlog has no room for is counted
    /// for the next `loss` record.
    pub fn write(&mut self, rec: &AuditRecord) {
        let json = rec.to_json_line().into_bytes();
        let len = self.backlog.link.sealed_len(json.len());
        if self.failure.is_none()
            && self.backlog.buf.len() + len > FLUSH_BYTES.min(self.backlog.cap)
        {
            self.attempt(Instant::now());
        }
        self.backlog.push(&rec.ts, &json);
        self.fresh = true;
    }

    /// Hand everything queued to the kernel (not an fsync). While the log
    /// fails this retries, when records arrived or [`RETRY_EVERY`] passed,
    /// and reminds of the failure every [`REMIND_EVERY`].
    pub fn flush(&mut self) {
        let now = Instant::now();
        match &mut self.failure {
            None if self.backlog.is_empty() => return,
            None => {}
            Some(f) => {
                if f.remind_due(now) {
                    error!(
                        path = %self.path.display(),
                        error = %f.error,
                        failing_for_s = now.duration_since(f.began).as_secs(),
                        backlog_records = self.backlog.records,
                        backlog_bytes = self.backlog.buf.len(),
                        dropped = self.backlog.dropped_total - f.dropped_before,
                        "the audit log still cannot be written"
                    );
                }
                if !f.retry_due(now, self.fresh) {
                    return;
                }
            }
        }
        self.attempt(now);
    }

    /// Open the path afresh (SIGHUP after rotation): what is queued goes to
    /// the old file if it still takes it, later records to the new one. If
    /// the path cannot be opened, records wait in the backlog and opening is
    /// retried.
    pub fn reopen(&mut self) {
        let now = Instant::now();
        if self.failure.is_none() {
            self.attempt(now);
        }
        match open_log(&self.path) {
            Ok(file) => {
                self.file = Some(file);
                self.fragment = false;
                info!(path = %self.path.display(), "audit log reopened");
                self.attempt(now);
            }
            Err(error) => {
                self.file = None;
                self.fail(error.to_string(), now);
            }
        }
    }

    /// Reopen if the path no longer names the open file: the log was moved
    /// away, replaced or deleted, and records written to the old file would
    /// be lost to readers.
    pub fn follow_path(&mut self) {
        let Some(file) = &self.file else {
            return;
        };
        let moved = match (std::fs::metadata(&self.path), file.metadata()) {
            (Ok(p), Ok(f)) => (p.dev(), p.ino()) != (f.dev(), f.ino()),
            (Err(e), _) => matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)),
            // Cannot tell: writing will say whether the file still works.
            (Ok(_), Err(_)) => false,
        };
        if moved {
            warn!(path = %self.path.display(), "the audit log was moved, replaced or removed; reopening it");
            self.reopen();
        }
    }

    /// Count `lost` records lost elsewhere (ring buffer, decoding); returns
    /// the total for their `loss` record.
    pub fn note_lost(&mut self, lost: u64) -> u64 {
        self.backlog.lost_total += lost;
        self.backlog.lost_total
    }

    /// Records lost from every source since [`AuditWriter::open`].
    pub fn lost_total(&self) -> u64 {
        self.backlog.lost_total + self.backlog.dropped.as_ref().map_or(0, |d| d.count)
    }

    /// Records written to the file since [`AuditWriter::open`].
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn status(&self) -> SinkStatus {
        SinkStatus {
            path: self.path.display().to_string(),
            state: if self.failure.is_some() {
                "failing"
            } else {
                "ok"
            }
            .into(),
            since: self.failure.as_ref().map(|f| format_ts(f.since)),
            error: self.failure.as_ref().map(|f| f.error.clone()),
            backlog_records: self.backlog.records,
            backlog_bytes: self.backlog.buf.len() as u64,
            backlog_cap_bytes: self.backlog.cap as u64,
            dropped: self.backlog.dropped.as_ref().map_or(0, |d| d.count),
            dropped_total: self.backlog.dropped_total,
        }
    }

    /// Try to write the backlog now: open the path if needed, then write
    /// until done or an error, which starts (or continues) a failure.
    fn attempt(&mut self, now: Instant) {
        self.fresh = false;
        if let Some(f) = &mut self.failure {
            f.last_try = now;
        }
        let file = match self.file.take() {
            Some(file) => file,
            None => match open_log(&self.path) {
                Ok(file) => file,
                Err(error) => return self.fail(error.to_string(), now),
            },
        };
        let file = self.rotate_if_full(file, now);
        let Some(file) = file else { return };
        let file = self.file.insert(file);
        if self.fragment {
            if let Err(source) = file.write_all(b"\n") {
                let error = self.write_error(source);
                return self.fail(error, now);
            }
            self.fragment = false;
        }
        match self.backlog.write_out(file) {
            Ok(lines) => {
                self.written += lines;
                self.recovered(now);
            }
            Err(cut) => {
                self.written += cut.lines;
                if cut.partial > 0 {
                    debug!(path = %self.path.display(), bytes = cut.partial, "cutting a half-written line off the audit log");
                    if let Err(error) = cut_back(file, cut.partial) {
                        warn!(path = %self.path.display(), %error, bytes = cut.partial, "cannot cut a half-written line off the audit log; it will stand alone");
                        self.fragment = true;
                    }
                }
                let error = self.write_error(cut.error);
                self.fail(error, now);
            }
        }
    }

    /// The file to write to: `file`, or once it has reached the rotation
    /// size, a new one after moving the old files up by one. `None` (and a
    /// failure) when the new file cannot be opened; records stay queued.
    fn rotate_if_full(&mut self, file: File, now: Instant) -> Option<File> {
        let full = self.rotation.max_bytes > 0
            && file
                .metadata()
                .is_ok_and(|m| m.len() >= self.rotation.max_bytes);
        if !full {
            return Some(file);
        }
        drop(file);
        if let Err(error) = rotate(&self.path, self.rotation.keep) {
            // Writing on past the cap beats losing records.
            warn!(path = %self.path.display(), %error, "cannot rotate the audit log; appending past its size cap");
        } else {
            info!(path = %self.path.display(), keep = self.rotation.keep, "audit log rotated");
        }
        self.fragment = false;
        match open_log(&self.path) {
            Ok(file) => Some(file),
            Err(error) => {
                self.fail(error.to_string(), now);
                None
            }
        }
    }

    fn fail(&mut self, error: String, now: Instant) {
        match &mut self.failure {
            Some(f) => f.error = error,
            None => {
                error!(
                    path = %self.path.display(),
                    %error,
                    backlog_records = self.backlog.records,
                    backlog_bytes = self.backlog.buf.len(),
                    backlog_cap_bytes = self.backlog.cap,
                    "the audit log cannot be written: enforcement goes on, records wait in \
                     memory (bounded; overflow is counted) and writing is retried"
                );
                self.failure = Some(Failure {
                    since: SystemTime::now(),
                    began: now,
                    error,
                    last_try: now,
                    last_said: now,
                    dropped_before: self.backlog.dropped_total,
                });
            }
        }
    }

    fn recovered(&mut self, now: Instant) {
        let Some(f) = self.failure.take() else {
            return;
        };
        let failed_for_s = now.duration_since(f.began).as_secs();
        let dropped = self.backlog.dropped_total - f.dropped_before;
        if dropped > 0 {
            warn!(path = %self.path.display(), failed_for_s, dropped, "the audit log works again; records that did not fit in memory are reported by a loss record");
        } else {
            info!(path = %self.path.display(), failed_for_s, "the audit log works again; no record was lost");
        }
    }

    fn write_error(&self, source: io::Error) -> String {
        WriterError::Write {
            path: self.path.clone(),
            source,
        }
        .to_string()
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        if !self.backlog.is_empty() || self.failure.is_some() {
            self.attempt(Instant::now());
        }
        if !self.backlog.is_empty() {
            error!(
                path = %self.path.display(),
                records = self.backlog.records,
                dropped = self.backlog.dropped.as_ref().map_or(0, |d| d.count),
                "audit records lost at close: the audit log still cannot be written"
            );
        } else if self.backlog.link.seq > 0 {
            // An anchor outside the file: the journal keeps the chain head.
            info!(
                path = %self.path.display(),
                seq = self.backlog.link.seq,
                chain = %self.backlog.link.head_hex(),
                "audit log closed"
            );
        }
    }
}

/// Lines waiting to be written, bounded by `cap`, and the records that did
/// not fit.
#[derive(Debug)]
struct Backlog {
    /// Whole lines, each ending in `\n`.
    buf: Vec<u8>,
    records: u64,
    cap: usize,
    /// Dropped since the last `loss` record.
    dropped: Option<Dropped>,
    dropped_total: u64,
    /// Records lost from every source and already reported: the `total`
    /// of `loss` records.
    lost_total: u64,
    /// The chain after the last line queued: lines are sealed as they are
    /// queued, and the queue is written in order.
    link: Link,
}

#[derive(Debug)]
struct Dropped {
    count: u64,
    first_ts: String,
    last_ts: String,
}

/// How a write of the backlog ended early.
#[derive(Debug)]
struct Cut {
    error: io::Error,
    /// Whole lines written before it.
    lines: u64,
    /// Bytes of a line the file took only part of.
    partial: usize,
}

impl Backlog {
    fn new(cap: usize) -> Self {
        Backlog {
            buf: Vec::new(),
            records: 0,
            cap,
            dropped: None,
            dropped_total: 0,
            lost_total: 0,
            link: Link::START,
        }
    }

    /// Nothing waits to be written or reported.
    fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.dropped.is_none()
    }

    /// Queue a record (serialised `json`, stamped `ts`) as a sealed line,
    /// after the `loss` record owed for earlier drops; or drop it if they do
    /// not fit. An empty backlog takes any record, so an oversized one is
    /// never refused by a log that works.
    fn push(&mut self, ts: &str, json: &[u8]) {
        let len = self.link.sealed_len(json.len());
        let reserve = if self.dropped.is_some() {
            LOSS_LINE_MAX
        } else {
            0
        };
        if !self.buf.is_empty() && self.buf.len() + len + reserve > self.cap {
            self.dropped_total += 1;
            let d = self.dropped.get_or_insert_with(|| Dropped {
                count: 0,
                first_ts: ts.to_string(),
                last_ts: String::new(),
            });
            d.count += 1;
            d.last_ts = ts.to_string();
            return;
        }
        if let Some(d) = &self.dropped {
            let loss = self.loss_line(d);
            self.commit_loss(&loss);
        }
        self.link.seal(json, &mut self.buf);
        self.records += 1;
    }

    fn loss_line(&self, d: &Dropped) -> Vec<u8> {
        let rec = AuditRecord::new(
            Body::Loss {
                lost: d.count,
                total: self.lost_total + d.count,
                source: LOSS_SOURCE.into(),
                first_ts: Some(d.first_ts.clone()),
                last_ts: Some(d.last_ts.clone()),
                denials: None,
            },
            None,
            SystemTime::now(),
        );
        rec.to_json_line().into_bytes()
    }

    fn commit_loss(&mut self, json: &[u8]) {
        if let Some(d) = self.dropped.take() {
            self.lost_total += d.count;
        }
        self.link.seal(json, &mut self.buf);
        self.records += 1;
    }

    /// Write the queue to `out` and, once it is empty, the `loss` record
    /// owed; whole lines written leave the queue. Returns the lines written.
    fn write_out(&mut self, out: &mut impl Write) -> Result<u64, Cut> {
        let mut lines = 0;
        loop {
            let mut done = 0;
            let mut failed = None;
            while done < self.buf.len() {
                match out.write(&self.buf[done..]) {
                    Ok(0) => {
                        failed = Some(io::Error::from(io::ErrorKind::WriteZero));
                        break;
                    }
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(error) = failed {
                let whole = self.buf[..done]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let written = self.buf[..whole].iter().filter(|&&b| b == b'\n').count() as u64;
                self.buf.drain(..whole);
                self.records -= written;
                return Err(Cut {
                    error,
                    lines: lines + written,
                    partial: done - whole,
                });
            }
            lines += self.records;
            self.buf.clear();
            self.records = 0;
            match &self.dropped {
                Some(d) => {
                    let loss = self.loss_line(d);
                    self.commit_loss(&loss);
                }
                None => break,
            }
        }
        // A long failure grew the buffer: give the memory back.
        if self.buf.capacity() > 4 * FLUSH_BYTES {
            self.buf.shrink_to(FLUSH_BYTES);
        }
        Ok(lines)
    }
}

/// Where the chain goes on in the log at `path`, and whether the file ends
/// in part of a line (a crash cut it short): the next write then starts
/// with a newline, so the fragment stands alone as a malformed line that
/// readers skip, and the chain goes on from the last whole record. An
/// empty log goes on from `<log>.1`; a log whose last record predates the
/// chain, or that cannot be read, starts a new chain at seq 1.
fn chain_start(path: &Path) -> (Link, bool) {
    let read = |p: &Path| {
        chain::tail(p).unwrap_or_else(|error| {
            warn!(path = %p.display(), %error, "cannot read the end of the audit log; its records' chain starts anew");
            chain::Tail { link: None, records: true, partial: false }
        })
    };
    let mine = read(path);
    let link = match mine {
        chain::Tail {
            link: Some(link), ..
        } => Some(link),
        chain::Tail { records: false, .. } => read(&rotated_path(path, 1)).link,
        _ => None,
    };
    if mine.partial {
        warn!(path = %path.display(), "the audit log ends in part of a line (a write cut short); it stays as one malformed line");
    }
    (link.unwrap_or(Link::START), mine.partial)
}

/// Move `log` to `log.1`, `log.1` to `log.2`, ..., dropping `log.<keep>`;
/// with `keep` 0 the log is removed.
fn rotate(log: &Path, keep: u32) -> io::Result<()> {
    if keep == 0 {
        return std::fs::remove_file(log);
    }
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    match std::fs::remove_file(rotated_path(log, keep)) {
        Err(e) if !gone(&e) => return Err(e),
        _ => {}
    }
    for n in (1..keep).rev() {
        match std::fs::rename(rotated_path(log, n), rotated_path(log, n + 1)) {
            Err(e) if !gone(&e) => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(log, rotated_path(log, 1))
}

/// Cut the last `partial` bytes (half a line) off the file.
fn cut_back(file: &File, partial: usize) -> io::Result<()> {
    let len = file.metadata()?.len();
    let keep = len
        .checked_sub(partial as u64)
        .ok_or_else(|| io::Error::other("the file is shorter than the line to cut"))?;
    file.set_len(keep)
}

fn open_log(path: &Path) -> Result<File, WriterError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|source| WriterError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| WriterError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    secure(&file, path).map_err(|source| WriterError::Secure {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(file)
}

/// An existing log keeps its mode from creation, so a log left world-readable
/// or owned by someone else (e.g. created by hand) is fixed up here rather
/// than trusted. Group bits are left alone: an admin may grant a log group.
fn secure(file: &File, path: &Path) -> io::Result<()> {
    let meta = file.metadata()?;
    let root = nix::unistd::geteuid().is_root();
    if root && meta.uid() != 0 {
        tracing::warn!(path = %path.display(), uid = meta.uid(), "audit log not owned by root; taking it over");
        std::os::unix::fs::fchown(file, Some(0), Some(0))?;
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o007 != 0 || mode & 0o7000 != 0 {
        let fixed = mode & 0o770;
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), fixed = format!("{fixed:o}"), "audit log was accessible to others; tightening");
        file.set_permissions(std::fs::Permissions::from_mode(fixed))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::{super::Body, *};

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mcpguard-audit-writer-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn record(child: u32) -> AuditRecord {
        AuditRecord::new(
            Body::Fork { child_pid: child },
            None,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000 + u64::from(child)),
        )
    }

    fn json(rec: &AuditRecord) -> Vec<u8> {
        rec.to_json_line().into_bytes()
    }

    /// Bytes of a record's line, for records and seqs of one digit.
    fn one_line() -> usize {
        Link::START.sealed_len(json(&record(1)).len())
    }

    /// A line as the record serialised it, without the chain fields.
    fn unsealed(line: &str) -> String {
        let cut = line.rfind(",\"seq\":").unwrap();
        format!("{}}}", &line[..cut])
    }

    /// A file on a disk with `room` bytes left: it takes what fits, then
    /// fails with ENOSPC, as write(2) does.
    struct Disk {
        data: Vec<u8>,
        room: usize,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.room);
            self.data.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines_of(data: &[u8]) -> Vec<serde_json::Value> {
        std::str::from_utf8(data)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
            .collect()
    }

    #[test]
    fn a_full_disk_takes_whole_lines_and_the_half_line_stays_queued() {
        let mut b = Backlog::new(DEFAULT_BACKLOG_BYTES);
        for n in 1..=3 {
            b.push(&record(n).ts, &json(&record(n)));
        }
        let one = one_line();
        let mut disk = Disk {
            data: Vec::new(),
            room: one + 10,
        };
        let cut = b.write_out(&mut disk).unwrap_err();
        assert_eq!(cut.error.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!((cut.lines, cut.partial), (1, 10));
        // What cut_back does to the file.
        disk.data.truncate(disk.data.len() - cut.partial);
        assert_eq!(b.records, 2);
        let two = json(&record(2));
        assert!(b.buf.starts_with(&two[..two.len() - 1]));

        disk.room = usize::MAX;
        assert_eq!(b.write_out(&mut disk).unwrap(), 2);
        let got = lines_of(&disk.data);
        let children: Vec<_> = got.iter().map(|r| r["child_pid"].clone()).collect();
        assert_eq!(children, [1, 2, 3]);
        assert!(b.is_empty());
    }

    #[test]
    fn an_overflowing_backlog_counts_drops_and_owes_a_loss_record_before_later_records() {
        let one = one_line();
        let mut b = Backlog::new(3 * one + one / 2);
        b.lost_total = 5;
        for n in 1..=10 {
            b.push(&record(n).ts, &json(&record(n)));
        }
        assert_eq!(b.records, 3);
        let d = b.dropped.as_ref().unwrap();
        assert_eq!(d.count, 7);
        assert_eq!(d.first_ts, record(4).ts);
        assert_eq!(d.last_ts, record(10).ts);

        // The disk takes two lines: there is room for one more record, but
        // not for it and the loss line owed, so it is dropped too.
        let mut disk = Disk {
            data: Vec::new(),
            room: 2 * one,
        };
        let cut = b.write_out(&mut disk).unwrap_err();
        assert_eq!((cut.lines, cut.partial), (2, 0));
        b.push(&record(11).ts, &json(&record(11)));
        assert_eq!(b.dropped.as_ref().unwrap().count, 8);
        // Now the disk takes the rest, the loss record after it; record 12
        // follows the loss record.
        disk.room = usize::MAX;
        assert_eq!(b.write_out(&mut disk).unwrap(), 2);
        b.push(&record(12).ts, &json(&record(12)));
        b.write_out(&mut disk).unwrap();

        let got = lines_of(&disk.data);
        let kinds: Vec<_> = got
            .iter()
            .map(|r| match r["kind"].as_str().unwrap() {
                "fork" => r["child_pid"].to_string(),
                kind => kind.to_string(),
            })
            .collect();
        assert_eq!(kinds, ["1", "2", "3", "loss", "12"]);
        let seqs: Vec<_> = got.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            [1, 2, 3, 4, 5],
            "the loss record is sealed in its place"
        );
        let loss = &got[3];
        assert_eq!(loss["source"], LOSS_SOURCE);
        assert_eq!(loss["lost"], 8);
        assert_eq!(loss["total"], 13, "earlier losses count in the total");
        assert_eq!(loss["first_ts"], record(4).ts.as_str());
        assert_eq!(loss["last_ts"], record(11).ts.as_str());
        assert!(b.is_empty());
        assert_eq!(b.dropped_total, 8);
    }

    #[test]
    fn a_failure_is_retried_on_new_records_or_each_second_and_reminded_each_minute() {
        let t0 = Instant::now();
        let mut f = Failure {
            since: SystemTime::now(),
            began: t0,
            error: "disk full".into(),
            last_try: t0,
            last_said: t0,
            dropped_before: 0,
        };
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert!(f.retry_due(t0, true), "new records: retry now");
        assert!(!f.retry_due(t0, false));
        assert!(f.retry_due(t0 + RETRY_EVERY, false));
        assert!(!f.remind_due(at(59)));
        assert!(f.remind_due(at(60)));
        assert!(!f.remind_due(at(61)), "once per period");
        assert!(!f.remind_due(at(119)));
        assert!(f.remind_due(at(120)));
    }

    #[test]
    fn the_loss_line_fits_its_reserved_room() {
        let mut b = Backlog::new(MIN_BACKLOG_BYTES);
        b.lost_total = u64::MAX / 2;
        let d = Dropped {
            count: u64::MAX / 2,
            first_ts: record(1).ts,
            last_ts: record(2).ts,
        };
        let widest = Link {
            seq: u64::MAX - 1,
            head: [0; 32],
        };
        assert!(widest.sealed_len(b.loss_line(&d).len()) <= LOSS_LINE_MAX);
    }

    #[test]
    fn an_unopenable_path_fails_keeps_records_and_recovers_once_fixed() {
        let dir = scratch_dir("recover");
        let path = dir.join("logs/audit.jsonl");
        let mut w = AuditWriter::open(&path, DEFAULT_BACKLOG_BYTES).unwrap();
        w.write(&record(1));
        w.flush();
        // Rotation took the directory away and a file now blocks it.
        std::fs::rename(dir.join("logs"), dir.join("logs.1")).unwrap();
        std::fs::write(dir.join("logs"), "").unwrap();
        w.reopen();
        w.write(&record(2));
        w.flush();
        let s = w.status();
        assert_eq!(s.state, "failing");
        assert!(s.since.is_some());
        assert!(s.error.as_deref().unwrap().contains("logs"), "{s:?}");
        assert_eq!((s.backlog_records, s.dropped), (1, 0));

        std::fs::remove_file(dir.join("logs")).unwrap();
        w.write(&record(3));
        w.flush();
        let s = w.status();
        assert_eq!((s.state.as_str(), s.backlog_records), ("ok", 0), "{s:?}");
        assert_eq!(s.error, None);
        let new = std::fs::read(&path).unwrap();
        let children: Vec<_> = lines_of(&new)
            .iter()
            .map(|r| r["child_pid"].clone())
            .collect();
        assert_eq!(children, [2, 3]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_replaced_or_removed_log_is_followed_to_its_path() {
        let dir = scratch_dir("follow");
        let path = dir.join("audit.jsonl");
        let mut w = AuditWriter::open(&path, DEFAULT_BACKLOG_BYTES).unwrap();
        w.write(&record(1));
        w.flush();
        w.follow_path();
        std::fs::remove_file(&path).unwrap();
        w.follow_path();
        w.write(&record(2));
        w.flush();
        std::fs::rename(&path, dir.join("old")).unwrap();
        std::fs::write(&path, "").unwrap();
        w.follow_path();
        w.write(&record(3));
        w.flush();
        let children = |p: &Path| -> Vec<serde_json::Value> {
            lines_of(&std::fs::read(p).unwrap())
                .iter()
                .map(|r| r["child_pid"].clone())
                .collect()
        };
        assert_eq!(children(&dir.join("old")), [2]);
        assert_eq!(children(&path), [3]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_log_rotates_at_its_cap_keeps_n_files_and_loses_no_record() {
        let dir = scratch_dir("rotate");
        let path = dir.join("audit.jsonl");
        let one = one_line() as u64;
        let rotation = Rotation {
            max_bytes: 3 * one,
            keep: 2,
        };
        let mut w = AuditWriter::open_rotating(&path, DEFAULT_BACKLOG_BYTES, rotation).unwrap();
        for n in 1..=10 {
            w.write(&record(n));
            w.flush();
        }
        drop(w);
        let children = |p: &Path| -> Vec<u64> {
            lines_of(&std::fs::read(p).unwrap())
                .iter()
                .map(|r| r["child_pid"].as_u64().unwrap())
                .collect()
        };
        assert_eq!(children(&rotated_path(&path, 2)), [4, 5, 6]);
        assert_eq!(children(&rotated_path(&path, 1)), [7, 8, 9]);
        assert_eq!(children(&path), [10]);
        assert!(!rotated_path(&path, 3).exists(), "only `keep` old files");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cut_back_removes_a_half_written_line() {
        let dir = scratch_dir("cut");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, "{\"a\":1}\n{\"b\"").unwrap();
        let file = OpenOptions::new().append(true).open(&path).unwrap();
        cut_back(&file, 4).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        assert!(cut_back(&file, 100).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn creates_dir_and_file_with_modes_and_appends_lines() {
        let dir = scratch_dir("modes");
        let path = dir.join("sub/audit.jsonl");
        let mut w = AuditWriter::open(&path, DEFAULT_BACKLOG_BYTES).unwrap();
        w.write(&record(1));
        w.write(&record(2));
        w.flush();
        assert_eq!(w.written(), 2);

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        let lines: Vec<_> = lines.iter().map(|l| unsealed(l)).collect();
        assert_eq!(lines, [record(1).to_json_line(), record(2).to_json_line()]);
        assert!(text.ends_with('\n'));

        // umask can only remove bits, so check for nothing beyond the mode.
        let dmode = std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777;
        let fmode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(dmode & !DIR_MODE, 0, "dir mode {dmode:o}");
        assert_eq!(fmode & !FILE_MODE, 0, "file mode {fmode:o}");

        // A second writer appends instead of truncating.
        drop(w);
        let mut w = AuditWriter::open(&path, DEFAULT_BACKLOG_BYTES).unwrap();
        w.write(&record(3));
        drop(w); // Drop flushes.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tightens_world_readable_existing_log() {
        let dir = scratch_dir("tighten");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let _w = AuditWriter::open(&path, DEFAULT_BACKLOG_BYTES).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o660);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reopen_follows_rotation() {
        let dir = scratch_dir("reopen");
        let path = dir.join("audit.jsonl");
        let mut w = AuditWriter::open(&path, DEFAULT_BACKLOG_BYTES).unwrap();
        w.write(&record(1));
        w.flush();
        std::fs::rename(&path, dir.join("audit.jsonl.1")).unwrap();
        w.write(&record(2));
        w.reopen();
        w.write(&record(3));
        w.flush();
        let old = std::fs::read_to_string(dir.join("audit.jsonl.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            old.lines().count(),
            2,
            "buffered record goes to the old file"
        );
        let new: Vec<_> = new.lines().map(unsealed).collect();
        assert_eq!(new, [record(3).to_json_line()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn open_error_names_the_path() {
        let dir = scratch_dir("err");
        std::fs::create_dir_all(&dir).unwrap();
        // A regular file where the parent directory should be.
        let blocker = dir.join("file");
        std::fs::write(&blocker, "").unwrap();
        let err =
            AuditWriter::open(blocker.join("audit.jsonl"), DEFAULT_BACKLOG_BYTES).unwrap_err();
        assert!(matches!(err, WriterError::CreateDir { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&blocker.display().to_string()),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
