//! What `mcpguard audit` does: read the JSON Lines log (here: across
//! rotation, and following it), filter ([`Filter`]), put in time order
//! (`order.rs`), print ([`HumanFormat`], the lines as they are, or one
//! summary per tool call: [`calls`]).
//!
//! Lines are handled as `serde_json::Value`, not [`super::AuditRecord`], so a
//! log written by a newer daemon (new kinds, new fields, a higher `v`) still
//! reads: unknown kinds are printed generically and malformed lines are
//! reported and skipped, never fatal. `--json` passes matching lines through
//! byte for byte. Kept by hand rather than a general query crate: the
//! filters are the fixed set of `mcpguard audit` flags, and following a
//! rotating log is specific to this daemon's writer.

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;

use super::writer::rotated_path;
use crate::term;

pub mod calls;
mod filter;
mod human;
mod order;

pub use filter::{Filter, Known, Matcher};
pub use human::{describe, Clock, HumanFormat};
pub use order::Reorder;

/// Most rotated files (`<log>.1` ...) read before the log itself.
const MAX_ROTATED: u32 = 1000;
/// How often `--follow` looks for new lines and for rotation.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(
        "audit log {path} does not exist; is the daemon running and writing there? \
         Pass --log PATH to read a different file"
    )]
    NotFound { path: PathBuf },
    #[error(
        "cannot read audit log {path}: permission denied (the log belongs to root; \
         run as root or as a member of its group)"
    )]
    PermissionDenied { path: PathBuf },
    #[error("cannot open audit log {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read audit log {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write output: {source}")]
    Output { source: io::Error },
    #[error(
        "--since {value:?}: expected a duration ago like 10m, 2h or 1d, \
         or a time like 2024-05-01T10:00:00Z (RFC 3339; an offset such as +02:00 is allowed)"
    )]
    BadSince { value: String },
    #[error("--{what} {value:?} matches nothing {place}; known: {known}")]
    Unknown {
        what: &'static str,
        value: String,
        /// `in the schema`, `in the records read`.
        place: &'static str,
        known: String,
    },
}

/// What a run printed and skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records that matched and were printed (with `--calls`: read into
    /// the summaries).
    pub shown: u64,
    /// Lines that were not JSON objects (reported on stderr as they came).
    pub malformed: u64,
    /// The names the records read carry.
    pub known: Known,
}

/// How `mcpguard audit` shows what it reads.
#[derive(Clone, Debug)]
pub struct View {
    /// The log's lines as they are (`--json`); with `calls`, the summaries
    /// as JSON Lines.
    pub json: bool,
    /// ANSI colour on denials (pass whether the output is a terminal).
    pub color: bool,
    /// The zone human times are shown in.
    pub clock: Clock,
    /// One summary per tool call (`--calls`).
    pub calls: bool,
}

/// Print the records of the log at `path` that match `filter` to `out`,
/// in time order (the last `filter.lines` of them), as `view` says. With
/// `filter.follow`, start at the end (after those last lines) and keep
/// printing lines appended later, across rotation and truncation, until
/// the process is interrupted. Malformed lines go to stderr. A closed
/// output (`| head`) ends the run successfully. A `--server`, `--launch`
/// or `--tool` value no record names is [`QueryError::Unknown`].
pub fn run(
    path: &Path,
    filter: &Filter,
    view: &View,
    out: &mut impl Write,
) -> Result<Summary, QueryError> {
    let summary = run_with(path, filter, None, view, out, &mut io::stderr(), &|| false)?;
    filter.check_known(&summary.known)?;
    Ok(summary)
}

/// [`run`] for a program reading the output: matching lines byte for byte
/// (as `--json`), only those whose `uid` is `scope` when it is set (and
/// only their names in [`Summary::known`]), diagnostics to `diag`, and
/// with `filter.follow`, new lines until `stop` returns true (asked
/// between polls). The daemon uses it to stream a user's records over its
/// socket; the caller checks the names.
pub fn stream(
    path: &Path,
    filter: &Filter,
    scope: Option<u32>,
    out: &mut impl Write,
    diag: &mut impl Write,
    stop: &dyn Fn() -> bool,
) -> Result<Summary, QueryError> {
    let view = View {
        json: true,
        color: false,
        clock: Clock::utc(),
        calls: false,
    };
    run_with(path, filter, scope, &view, out, diag, stop)
}

fn run_with(
    path: &Path,
    filter: &Filter,
    scope: Option<u32>,
    view: &View,
    out: &mut impl Write,
    diag: &mut impl Write,
    stop: &dyn Fn() -> bool,
) -> Result<Summary, QueryError> {
    let mut reader = LogReader {
        path,
        matcher: filter.matcher()?,
        filter,
        scope,
        view,
        human: HumanFormat::new(view.color).with_clock(view.clock.clone()),
        out,
        diag,
        summary: Summary::default(),
        line_no: 0,
        pending: Vec::new(),
        skip_partial: false,
        reorder: Reorder::new(filter.lines),
        calls: view.calls.then(calls::Calls::default),
    };
    match reader.read_all(stop) {
        Err(QueryError::Output { source }) if source.kind() == io::ErrorKind::BrokenPipe => {
            Ok(reader.summary)
        }
        Err(e) => Err(e),
        Ok(()) => {
            if reader.summary.malformed > 0 {
                // Diagnostics are best effort; the records were printed.
                let _ = writeln!(
                    reader.diag,
                    "{}: {} malformed line(s) skipped",
                    path.display(),
                    reader.summary.malformed
                );
            }
            Ok(reader.summary)
        }
    }
}

struct LogReader<'a, W, D> {
    path: &'a Path,
    matcher: Matcher<'a>,
    filter: &'a Filter,
    /// Only records of this uid (a user's query through the daemon).
    scope: Option<u32>,
    view: &'a View,
    human: HumanFormat,
    out: &'a mut W,
    diag: &'a mut D,
    summary: Summary,
    /// Lines seen in the current file, for diagnostics.
    line_no: u64,
    /// Bytes after the last newline: a line still being written.
    pending: Vec<u8>,
    /// Reading started mid-line (`--follow` from the end): the bytes up to
    /// the next newline are the rest of a line not shown.
    skip_partial: bool,
    /// Matching lines waiting to go out in time order.
    reorder: Reorder,
    /// With `--calls`: the summaries being built.
    calls: Option<calls::Calls>,
}

impl<W: Write, D: Write> LogReader<'_, W, D> {
    fn open(&self) -> Result<File, QueryError> {
        File::open(self.path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => QueryError::NotFound {
                path: self.path.to_path_buf(),
            },
            io::ErrorKind::PermissionDenied => QueryError::PermissionDenied {
                path: self.path.to_path_buf(),
            },
            _ => QueryError::Open {
                path: self.path.to_path_buf(),
                source,
            },
        })
    }

    fn read_all(&mut self, stop: &dyn Fn() -> bool) -> Result<(), QueryError> {
        let mut file = self.open()?;
        let follow = self.filter.follow;
        let mut pos = if follow && self.filter.lines.unwrap_or(0) == 0 {
            // Like `tail -f`: nothing old unless asked for.
            self.skip_to_end(&mut file)?
        } else {
            self.read_rotated()?;
            self.drain(&mut file)?
        };
        if !follow {
            self.finish_pending()?;
            return self.finish();
        }
        self.reorder.keep_all();
        loop {
            self.flush_ordered()?;
            self.out
                .flush()
                .map_err(|source| QueryError::Output { source })?;
            if stop() {
                return Ok(());
            }
            std::thread::sleep(POLL);
            pos += self.drain(&mut file)?;
            // A missing path means the log was moved away and the daemon has
            // not recreated it yet; keep reading the old file meanwhile.
            let Ok(now) = std::fs::metadata(self.path) else {
                continue;
            };
            let current = file.metadata().map_err(|source| self.read_error(source))?;
            if (now.dev(), now.ino()) != (current.dev(), current.ino()) {
                // Rotated: finish the old file, then start the new one.
                pos += self.drain(&mut file)?;
                self.finish_pending()?;
                match self.open() {
                    Ok(new) => {
                        self.note("log rotated; reading the new file");
                        file = new;
                        self.line_no = 0;
                        pos = self.drain(&mut file)?;
                    }
                    // Gone again between stat and open: retry next poll.
                    Err(QueryError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            } else if now.len() < pos && now.len() >= pos - self.pending.len() as u64 {
                // The daemon cut off a line a full disk had cut short (no
                // further back than the line being read): forget its part
                // read so far; it is written again whole.
                self.pending
                    .truncate((now.len() - (pos - self.pending.len() as u64)) as usize);
                pos = file
                    .seek(SeekFrom::Start(now.len()))
                    .map_err(|source| self.read_error(source))?;
            } else if now.len() < pos {
                self.note("log truncated; reading from the start");
                file.seek(SeekFrom::Start(0))
                    .map_err(|source| self.read_error(source))?;
                self.pending.clear();
                self.skip_partial = false;
                self.line_no = 0;
                pos = self.drain(&mut file)?;
            }
        }
    }

    /// Start reading at the end of `file`; returns the position.
    fn skip_to_end(&mut self, file: &mut File) -> Result<u64, QueryError> {
        let end = file
            .seek(SeekFrom::End(0))
            .map_err(|source| self.read_error(source))?;
        if end > 0 {
            let mut last = [0u8; 1];
            let read = file
                .seek(SeekFrom::Start(end - 1))
                .and_then(|_| file.read_exact(&mut last));
            read.map_err(|source| self.read_error(source))?;
            self.skip_partial = last[0] != b'\n';
        }
        Ok(end)
    }

    /// The end of a read that does not follow: the held lines in order, or
    /// the call summaries.
    fn finish(&mut self) -> Result<(), QueryError> {
        let Some(calls) = self.calls.take() else {
            return self.flush_ordered();
        };
        let list = calls.finish(self.filter.lines);
        calls::write_all(&list, self.view, self.out).map_err(|source| QueryError::Output { source })
    }

    /// Write every held line, in time order.
    fn flush_ordered(&mut self) -> Result<(), QueryError> {
        for held in self.reorder.drain() {
            self.emit(&held.raw)?;
        }
        Ok(())
    }

    /// The files the daemon rotated the log into (`<log>.N` ... `<log>.1`),
    /// oldest first, so the records read in order.
    fn read_rotated(&mut self) -> Result<(), QueryError> {
        let mut old: Vec<(PathBuf, File)> = Vec::new();
        for n in 1..=MAX_ROTATED {
            let path = rotated_path(self.path, n);
            match File::open(&path) {
                Ok(file) => old.push((path, file)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(source) => return Err(QueryError::Open { path, source }),
            }
        }
        for (_, mut file) in old.into_iter().rev() {
            self.line_no = 0;
            self.drain(&mut file)?;
            self.finish_pending()?;
        }
        self.line_no = 0;
        Ok(())
    }

    /// Read to the current end of `file`, handling every complete line;
    /// returns the bytes read.
    fn drain(&mut self, file: &mut File) -> Result<u64, QueryError> {
        let mut chunk = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = match file.read(&mut chunk) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(self.read_error(source)),
            };
            total += n as u64;
            self.pending.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            while let Some(nl) = self.pending[start..].iter().position(|&b| b == b'\n') {
                let line = self.pending[start..start + nl].to_vec();
                start += nl + 1;
                if std::mem::take(&mut self.skip_partial) {
                    continue;
                }
                self.handle_line(line)?;
            }
            self.pending.drain(..start);
        }
    }

    /// A last line without a newline: complete for a finished read, or the
    /// remains of a rotated-away file.
    fn finish_pending(&mut self) -> Result<(), QueryError> {
        let line = std::mem::take(&mut self.pending);
        // The file ends here: a line begun before reading started ends too.
        let skip = std::mem::take(&mut self.skip_partial);
        if line.is_empty() || skip {
            Ok(())
        } else {
            self.handle_line(line)
        }
    }

    fn handle_line(&mut self, raw: Vec<u8>) -> Result<(), QueryError> {
        self.line_no += 1;
        if raw.trim_ascii().is_empty() {
            return Ok(());
        }
        let rec = match serde_json::from_slice::<Value>(&raw) {
            Ok(rec) if rec.is_object() => rec,
            Ok(_) => return self.malformed("not a JSON object"),
            Err(e) => return self.malformed(&e.to_string()),
        };
        let uid = rec.get("uid").and_then(Value::as_u64);
        if self.scope.is_some_and(|s| uid != Some(u64::from(s))) {
            return Ok(());
        }
        self.summary.known.add(&rec);
        if !self.matcher.matches(&rec) {
            return Ok(());
        }
        if let Some(calls) = &mut self.calls {
            calls.add(&rec);
            self.summary.shown += 1;
            return Ok(());
        }
        for held in self.reorder.push(&rec, raw) {
            self.emit(&held.raw)?;
        }
        Ok(())
    }

    /// Write one matching line: as it is (`--json`) or as a human line.
    fn emit(&mut self, raw: &[u8]) -> Result<(), QueryError> {
        let result = if self.view.json {
            // Parsed when read, so UTF-8: the same JSON, safe on a terminal.
            let text = std::str::from_utf8(raw).map(term::escape_json);
            self.out
                .write_all(text.as_deref().map_or(raw, str::as_bytes))
                .and_then(|()| self.out.write_all(b"\n"))
        } else {
            match serde_json::from_slice::<Value>(raw) {
                Ok(rec) => self.human.write(&rec, self.out),
                Err(e) => Err(io::Error::other(e)),
            }
        };
        result.map_err(|source| QueryError::Output { source })?;
        self.summary.shown += 1;
        Ok(())
    }

    fn malformed(&mut self, why: &str) -> Result<(), QueryError> {
        self.summary.malformed += 1;
        let msg = format!("line {}: skipping malformed line: {why}", self.line_no);
        self.note(&msg);
        Ok(())
    }

    fn note(&mut self, msg: &str) {
        // Best effort: a broken stderr must not stop the records.
        let _ = writeln!(self.diag, "{}: {msg}", self.path.display());
    }

    fn read_error(&self, source: io::Error) -> QueryError {
        QueryError::Read {
            path: self.path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod review_tests;
#[cfg(test)]
mod tests;
