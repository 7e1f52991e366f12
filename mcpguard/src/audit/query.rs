//! What `mcpguard audit` does: read the JSON Lines log, filter, print.
//!
//! Lines are handled as `serde_json::Value`, not [`super::AuditRecord`], so a
//! log written by a newer daemon (new kinds, new fields, a higher `v`) still
//! reads: unknown kinds are printed generically and malformed lines are
//! reported and skipped, never fatal. `--json` passes matching lines through
//! byte for byte. Kept by hand rather than a general query crate: the
//! filters are the fixed set of `mcpguard audit` flags, and following a
//! rotating log is specific to this daemon's writer.

use std::{
    borrow::Cow,
    fmt::Write as _,
    fs::File,
    io::{self, Read, Seek, SeekFrom, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{writer::rotated_path, SCHEMA_VERSION};
use crate::term;

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
}

/// Which records to show (every set criterion must hold) and whether to
/// keep reading: `mcpguard audit`'s flags, and the query that command
/// sends the daemon for a caller who cannot read the log.
#[derive(Clone, Debug, Default, PartialEq, Args, Serialize, Deserialize)]
pub struct Filter {
    /// Only records of this server (policy `name`).
    // A launch id (`time-3`) picks one launch.
    #[arg(long)]
    pub server: Option<String>,
    /// Only records of this kind (exec, fork, exit, open, connect, launch, server_exit, loss, daemon, ...).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only denials.
    #[arg(long)]
    pub denied: bool,
    /// Only one MCP tool: its calls, and the exec/open/connect records that
    /// happened while a call of it was in flight.
    #[arg(long)]
    pub tool: Option<String>,
    /// Only records since a time: a duration ago ("10m", "2h") or RFC 3339.
    // Records without a readable `ts` are left out. The command sends the
    // daemon RFC 3339 ([`Filter::resolve_since`]).
    #[arg(long)]
    pub since: Option<String>,
    /// Keep printing records as they are written.
    #[arg(long, short)]
    pub follow: bool,
}

impl Filter {
    /// `10m`, `2h`, `1d 3h` (that long ago, optionally followed by `ago`),
    /// or a time: RFC 3339 in UTC or with an offset, `T` or a space between
    /// date and time, or a bare date (midnight UTC).
    pub fn parse_since(s: &str) -> Result<SystemTime, QueryError> {
        Self::parse_since_at(s, SystemTime::now())
    }

    fn parse_since_at(s: &str, now: SystemTime) -> Result<SystemTime, QueryError> {
        let bad = || QueryError::BadSince {
            value: s.to_string(),
        };
        let trimmed = s.trim();
        let duration_text = trimmed.strip_suffix("ago").unwrap_or(trimmed).trim_end();
        if let Ok(ago) = humantime::parse_duration(duration_text) {
            return now.checked_sub(ago).ok_or_else(bad);
        }
        parse_time(trimmed).ok_or_else(bad)
    }

    /// `since` as a time, if set.
    pub fn since_time(&self) -> Result<Option<SystemTime>, QueryError> {
        self.since.as_deref().map(Self::parse_since).transpose()
    }

    /// Read a duration in `since` against this clock, once, and keep it as
    /// RFC 3339: the log read here and the daemon's then see the same time.
    pub fn resolve_since(&mut self) -> Result<(), QueryError> {
        self.since = self.since_time()?.map(super::format_ts);
        Ok(())
    }

    /// The filter ready to test records, with `since` read once.
    pub fn matcher(&self) -> Result<Matcher<'_>, QueryError> {
        Ok(Matcher {
            filter: self,
            since: self.since_time()?,
        })
    }
}

/// A [`Filter`] whose `since` has been read as a time.
#[derive(Clone, Copy, Debug)]
pub struct Matcher<'a> {
    filter: &'a Filter,
    since: Option<SystemTime>,
}

impl Matcher<'_> {
    pub fn matches(&self, rec: &Value) -> bool {
        if let Some(server) = &self.filter.server {
            let is = |key| rec.get(key).and_then(Value::as_str) == Some(server.as_str());
            if !is("server") && !is("launch") {
                return false;
            }
        }
        if let Some(kind) = &self.filter.kind {
            if rec.get("kind").and_then(Value::as_str) != Some(kind.as_str()) {
                return false;
            }
        }
        if self.filter.denied && rec.get("denied").and_then(Value::as_bool) != Some(true) {
            return false;
        }
        if let Some(tool) = &self.filter.tool {
            let direct = rec.get("tool").and_then(Value::as_str) == Some(tool.as_str());
            let among = rec
                .get("calls")
                .and_then(Value::as_array)
                .is_some_and(|c| c.iter().any(|c| c["tool"] == tool.as_str()));
            if !direct && !among {
                return false;
            }
        }
        if let Some(since) = self.since {
            let ts = rec
                .get("ts")
                .and_then(Value::as_str)
                .and_then(|ts| humantime::parse_rfc3339_weak(ts).ok());
            if ts.is_none_or(|ts| ts < since) {
                return false;
            }
        }
        true
    }
}

/// A timestamp as a person types it; `humantime` alone only takes UTC.
fn parse_time(s: &str) -> Option<SystemTime> {
    if s.len() == "2024-05-01".len() {
        return humantime::parse_rfc3339_weak(&format!("{s}T00:00:00")).ok();
    }
    let (base, offset) = split_offset(s);
    let t = humantime::parse_rfc3339_weak(base).ok()?;
    match offset {
        // Local time = UTC + offset, so UTC = local − offset.
        Some(secs) if secs >= 0 => t.checked_sub(Duration::from_secs(secs.unsigned_abs())),
        Some(secs) => t.checked_add(Duration::from_secs(secs.unsigned_abs())),
        None => Some(t),
    }
}

/// Split a trailing `±HH:MM` off a timestamp, as seconds east of UTC.
fn split_offset(s: &str) -> (&str, Option<i64>) {
    let Some(split) = s.len().checked_sub(6) else {
        return (s, None);
    };
    let (base, off) = s.split_at_checked(split).unwrap_or((s, ""));
    let b = off.as_bytes();
    let two = |i: usize| -> Option<i64> {
        let d = |c: u8| c.is_ascii_digit().then(|| i64::from(c - b'0'));
        Some(d(b[i])? * 10 + d(b[i + 1])?)
    };
    // Needs at least a full date-time before the offset, so a date's own
    // `-05` is never mistaken for an offset.
    if b.len() != 6 || b[3] != b':' || base.len() < "2024-05-01T00:00:00".len() {
        return (s, None);
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return (s, None),
    };
    match (two(1), two(4)) {
        (Some(h), Some(m)) if h < 24 && m < 60 => (base, Some(sign * (h * 3600 + m * 60))),
        _ => (s, None),
    }
}

/// What a run printed and skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records that matched and were printed.
    pub shown: u64,
    /// Lines that were not JSON objects (reported on stderr as they came).
    pub malformed: u64,
}

/// Print the records of the log at `path` that match `filter` to `out`:
/// the original lines with `json`, else one human line each (`color` adds
/// ANSI colour to denials; pass whether `out` is a terminal). With
/// `filter.follow`, keep printing lines appended later, across rotation and truncation,
/// until the process is interrupted. Malformed lines go to stderr. A closed
/// output (`| head`) ends the run successfully.
pub fn run(
    path: &Path,
    filter: &Filter,
    json: bool,
    color: bool,
    out: &mut impl Write,
) -> Result<Summary, QueryError> {
    let opts = Options {
        follow: filter.follow,
        json,
        color,
    };
    run_with(path, filter, opts, out, &mut io::stderr(), &|| false)
}

/// [`run`] for a program reading the output: matching lines byte for byte
/// (as `--json`), diagnostics to `diag`, and with `filter.follow`, new lines until
/// `stop` returns true (asked between polls). The daemon uses it to stream
/// a user's records over its socket.
pub fn stream(
    path: &Path,
    filter: &Filter,
    out: &mut impl Write,
    diag: &mut impl Write,
    stop: &dyn Fn() -> bool,
) -> Result<Summary, QueryError> {
    let opts = Options {
        follow: filter.follow,
        json: true,
        color: false,
    };
    run_with(path, filter, opts, out, diag, stop)
}

#[derive(Clone, Copy, Debug)]
struct Options {
    follow: bool,
    json: bool,
    color: bool,
}

fn run_with(
    path: &Path,
    filter: &Filter,
    opts: Options,
    out: &mut impl Write,
    diag: &mut impl Write,
    stop: &dyn Fn() -> bool,
) -> Result<Summary, QueryError> {
    let mut reader = LogReader {
        path,
        matcher: filter.matcher()?,
        opts,
        human: HumanFormat::new(opts.color),
        out,
        diag,
        summary: Summary::default(),
        line_no: 0,
        pending: Vec::new(),
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
    opts: Options,
    human: HumanFormat,
    out: &'a mut W,
    diag: &'a mut D,
    summary: Summary,
    /// Lines seen in the current file, for diagnostics.
    line_no: u64,
    /// Bytes after the last newline: a line still being written.
    pending: Vec<u8>,
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
        self.read_rotated()?;
        let mut pos = self.drain(&mut file)?;
        if !self.opts.follow {
            return self.finish_pending();
        }
        loop {
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
                self.line_no = 0;
                pos = self.drain(&mut file)?;
            }
        }
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
                self.handle_line(&line)?;
                start += nl + 1;
            }
            self.pending.drain(..start);
        }
    }

    /// A last line without a newline: complete for a finished read, or the
    /// remains of a rotated-away file.
    fn finish_pending(&mut self) -> Result<(), QueryError> {
        let line = std::mem::take(&mut self.pending);
        if line.is_empty() {
            Ok(())
        } else {
            self.handle_line(&line)
        }
    }

    fn handle_line(&mut self, raw: &[u8]) -> Result<(), QueryError> {
        self.line_no += 1;
        if raw.trim_ascii().is_empty() {
            return Ok(());
        }
        let rec = match serde_json::from_slice::<Value>(raw) {
            Ok(rec) if rec.is_object() => rec,
            Ok(_) => return self.malformed("not a JSON object"),
            Err(e) => return self.malformed(&e.to_string()),
        };
        if !self.matcher.matches(&rec) {
            return Ok(());
        }
        let result = if self.opts.json {
            // Parsed above, so UTF-8: the same JSON, safe on a terminal.
            let text = std::str::from_utf8(raw).map(term::escape_json);
            self.out
                .write_all(text.as_deref().map_or(raw, str::as_bytes))
                .and_then(|()| self.out.write_all(b"\n"))
        } else {
            self.human.write(&rec, self.out)
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

/// The compact one-line-per-record format.
///
/// Times are UTC and shown as time of day; a `--- DATE (UTC) ---` line is
/// printed whenever the date changes, so a multi-day log stays readable.
pub struct HumanFormat {
    color: bool,
    last_date: Option<String>,
}

const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[1;33m";
const RESET: &str = "\x1b[0m";

/// Keys every record carries; anything else belongs to the kind.
const COMMON_KEYS: &[&str] = &[
    "v",
    "ts",
    "kind",
    "server",
    "policy",
    "launch",
    "pid",
    "tid",
    "uid",
    "comm",
    "denied",
    "tool",
    "call_id",
    "calls",
    "path_source",
];

impl HumanFormat {
    pub fn new(color: bool) -> Self {
        HumanFormat {
            color,
            last_date: None,
        }
    }

    /// Write the record's line (preceded by a date line when the date
    /// changed).
    pub fn write(&mut self, rec: &Value, out: &mut impl Write) -> io::Result<()> {
        let ts = str_field(rec, "ts");
        let (date, _) = split_ts(ts);
        if let Some(date) = date {
            if self.last_date.as_deref() != Some(date) {
                writeln!(out, "--- {} (UTC) ---", term::escape(date))?;
                self.last_date = Some(date.to_string());
            }
        }
        writeln!(out, "{}", self.line(rec))
    }

    /// One record as one line, without the date.
    pub fn line(&self, rec: &Value) -> String {
        let (_, time) = split_ts(str_field(rec, "ts"));
        let who = match (
            rec.get("server").and_then(Value::as_str),
            rec.get("launch").and_then(Value::as_str),
        ) {
            (Some(s), Some(l)) => format!("{s}[{l}]"),
            (Some(s), None) => s.to_string(),
            (None, Some(l)) => format!("[{l}]"),
            (None, None) => "-".to_string(),
        };
        let mut line = format!("{time} {who} ");
        if let Some(pid) = rec.get("pid").and_then(Value::as_u64) {
            let task = match rec.get("tid").and_then(Value::as_u64) {
                Some(tid) if tid != pid => format!("{pid}/{tid}"),
                _ => pid.to_string(),
            };
            let comm = rec.get("comm").and_then(Value::as_str).unwrap_or("?");
            // Padded so the verdict and the event line up in a busy log.
            let _ = write!(line, "pid {task:<7} {comm:<15} ");
        }
        // Everything but the verdict is the server's to choose.
        let mut line = term::escape(&line).into_owned();

        let kind = rec.get("kind").and_then(Value::as_str).unwrap_or("?");
        let denied = rec.get("denied").and_then(Value::as_bool) == Some(true);
        let (status, color) = if denied {
            ("DENY", RED)
        } else if kind == "loss" {
            ("LOSS", YELLOW)
        } else if kind == "connect" {
            ("allow", "")
        } else {
            ("", "")
        };
        if self.color && !color.is_empty() {
            let _ = write!(
                line,
                "{color}{status}{RESET}{} ",
                " ".repeat(5 - status.len())
            );
        } else {
            let _ = write!(line, "{status:<5} ");
        }
        line.push_str(&describe(kind, rec));
        line.push_str(&term::escape(&caused_by(kind, rec)));
        line
    }
}

/// Kernel records caused by an MCP call name it: `  <- tool#id`.
fn caused_by(kind: &str, rec: &Value) -> String {
    if matches!(kind, "mcp" | "tool_changed") {
        return String::new();
    }
    if let Some(tool) = rec.get("tool").and_then(Value::as_str) {
        match rec.get("call_id") {
            Some(Value::String(id)) => format!("  <- {tool}#{id}"),
            Some(id) => format!("  <- {tool}#{id}"),
            None => format!("  <- {tool}"),
        }
    } else if let Some(calls) = rec.get("calls").and_then(Value::as_array) {
        let names: Vec<String> = calls
            .iter()
            .map(|c| format!("{}#{}", field(c, "tool"), field(c, "call_id")))
            .collect();
        format!("  <- {}", names.join(" | "))
    } else {
        String::new()
    }
}

/// The kind-specific part of a human line (`open /x (O_RDONLY) = -EACCES`),
/// escaped for a terminal ([`term::escape`]): paths, names and error text
/// in a record are the server's to choose.
pub fn describe(kind: &str, rec: &Value) -> String {
    let raw = describe_raw(kind, rec);
    match term::escape(&raw) {
        Cow::Borrowed(_) => raw,
        Cow::Owned(escaped) => escaped,
    }
}

/// One arm per record kind; the longer ones have a function each.
fn describe_raw(kind: &str, rec: &Value) -> String {
    let f = |key| field(rec, key);
    match kind {
        "open" => open_line(rec),
        "exec" => exec_line(rec),
        "connect" => connect_line(rec),
        "mkdir" | "unlink" | "rmdir" | "chdir" | "attr" => path_call_line(kind, rec),
        "link" | "rename" => two_path_line(kind, rec),
        "persist" => format!(
            "persist {} {} {} = {}{}",
            f("family"),
            f("call"),
            f("path"),
            result(rec),
            if rec["allowed"] == true {
                " (allowed by policy)"
            } else {
                ""
            }
        ),
        "fork" => format!("fork child {}", f("child_pid")),
        "exit" => "exit".to_string(),
        "server_exit" => match (rec.get("exit_code"), rec.get("signal")) {
            (Some(code), _) if !code.is_null() => format!("server_exit code {code}"),
            (_, Some(sig)) if !sig.is_null() => format!("server_exit signal {sig}"),
            _ => "server_exit".to_string(),
        },
        "launch" => format!(
            "launch {} cwd={} cgroup={} {}",
            argv(rec),
            f("cwd"),
            f("cgroup"),
            layers(rec)
        ),
        "launch_failed" => format!("launch_failed {}: {}", argv(rec), f("error")),
        "mcp" => mcp_line(rec),
        "socket" => format!(
            "socket {} {} {}",
            f("family"),
            f("sock_type"),
            f("protocol")
        ),
        "syscall" => format!("syscall {} = {}", f("name"), result(rec)),
        "io_uring" => format!("io_uring {}", f("op")),
        "unix_connect" => unix_connect_line(rec),
        "dns" => dns_line(rec),
        "tool_changed" => format!(
            "tool_changed {} {} ({})",
            f("tool"),
            f("change"),
            f("action")
        ),
        "daemon" => format!("daemon {} layers={}", f("event"), f("layers")),
        "limit" => format!(
            "limit {} {} x{} (limit {}, {} total)",
            f("resource"),
            f("event"),
            f("count"),
            f("limit"),
            f("total")
        ),
        "loss" => loss_line(rec),
        _ => unknown_kind_line(kind, rec),
    }
}

/// `open /x (O_RDONLY) = -EACCES`, then the mode, dirfd and a call other
/// than `openat`.
fn open_line(rec: &Value) -> String {
    let mut s = format!(
        "open {}{} ({}) = {}",
        field(rec, "path"),
        truncation_mark(rec, "path_truncated"),
        flags(rec),
        result(rec)
    );
    write_mode_and_dirfd(&mut s, rec);
    match rec.get("call").and_then(Value::as_str) {
        Some("openat") | None => {}
        Some(call) => {
            let _ = write!(s, " [{call}]");
        }
    }
    s
}

/// ` mode=0644` and ` dirfd=3`, for the records that carry them.
fn write_mode_and_dirfd(s: &mut String, rec: &Value) {
    if let Some(mode) = rec.get("mode").and_then(Value::as_u64) {
        let _ = write!(s, " mode={mode:04o}");
    }
    if let Some(dirfd) = rec.get("dirfd").and_then(Value::as_i64) {
        let _ = write!(s, " dirfd={dirfd}");
    }
}

/// `exec /bin/sh [argv …] = 0` (`…`: argv was cut short).
fn exec_line(rec: &Value) -> String {
    let more = if rec.get("argc_truncated").and_then(Value::as_bool) == Some(true) {
        " …"
    } else {
        ""
    };
    format!(
        "exec {}{} [{}{more}] = {}",
        field(rec, "filename"),
        truncation_mark(rec, "path_truncated"),
        argv(rec),
        result(rec)
    )
}

/// `connect tcp 1.2.3.4:443`; an IPv6 address in brackets; `op` other than `connect` named.
fn connect_line(rec: &Value) -> String {
    let addr = field(rec, "addr");
    let host = if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr
    };
    let op = rec.get("op").and_then(Value::as_str).unwrap_or("connect");
    format!(
        "{op} {} {host}:{}",
        field(rec, "protocol"),
        field(rec, "port")
    )
}

/// A call on one path or fd: `mkdir /x = -EROFS mode=0755`, `fchmod fd 3 = ..`.
fn path_call_line(kind: &str, rec: &Value) -> String {
    let target = match rec.get("fd").and_then(Value::as_i64) {
        Some(fd) => format!("fd {fd}"),
        None => format!(
            "{}{}",
            field(rec, "path"),
            truncation_mark(rec, "path_truncated")
        ),
    };
    let mut s = format!(
        "{} {target} = {}",
        rec.get("call").and_then(Value::as_str).unwrap_or(kind),
        result(rec)
    );
    write_mode_and_dirfd(&mut s, rec);
    s
}

/// A call on two paths: `rename /a -> /b (<flags>) = 0`.
fn two_path_line(kind: &str, rec: &Value) -> String {
    let mut s = format!(
        "{} {}{} -> {}{}",
        rec.get("call").and_then(Value::as_str).unwrap_or(kind),
        field(rec, "old_path"),
        truncation_mark(rec, "old_path_truncated"),
        field(rec, "new_path"),
        truncation_mark(rec, "new_path_truncated"),
    );
    if let Some(flags) = rec.get("flags").and_then(Value::as_array) {
        let names: Vec<&str> = flags.iter().filter_map(Value::as_str).collect();
        let _ = write!(s, " ({})", names.join("|"));
    }
    let _ = write!(s, " = {}", result(rec));
    s
}

/// `unix_connect @name = -EACCES (fenced)`.
fn unix_connect_line(rec: &Value) -> String {
    format!(
        "unix_connect {}{}{} = {}{}",
        if rec["abstract_addr"] == true {
            "@"
        } else {
            ""
        },
        field(rec, "path"),
        truncation_mark(rec, "path_truncated"),
        result(rec),
        if rec["fenced"] == true {
            " (fenced)"
        } else {
            ""
        }
    )
}

/// `dns example.com A (udp) NOERROR -> 1.2.3.4, 5.6.7.8`.
fn dns_line(rec: &Value) -> String {
    let d = &rec["detail"];
    let answers: Vec<String> = d["answers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| field(a, "addr"))
        .collect();
    let mut s = format!(
        "dns {} {} ({})",
        field(rec, "qname"),
        field(rec, "qtype"),
        field(rec, "transport")
    );
    if let Some(rcode) = d.get("rcode").and_then(Value::as_str) {
        let _ = write!(s, " {rcode}");
    }
    if !answers.is_empty() {
        let _ = write!(s, " -> {}", answers.join(", "));
    }
    if let Some(e) = d.get("error").and_then(Value::as_str) {
        let _ = write!(s, " ({e})");
    }
    s
}

/// `loss 12 events lost (<source>) from .. to .., 3 of them denials, 40 total`.
fn loss_line(rec: &Value) -> String {
    let f = |key| field(rec, key);
    let span = match (rec.get("first_ts"), rec.get("last_ts")) {
        (Some(_), Some(_)) => format!(" from {} to {}", f("first_ts"), f("last_ts")),
        _ => String::new(),
    };
    let denials = match rec.get("denials").and_then(Value::as_u64) {
        Some(n) if n > 0 => format!(", {n} of them denials"),
        _ => String::new(),
    };
    format!(
        "loss {} events lost ({}){span}{denials}, {} total",
        f("lost"),
        f("source"),
        f("total")
    )
}

/// A kind from a newer daemon: show everything it carries.
fn unknown_kind_line(kind: &str, rec: &Value) -> String {
    let rest: serde_json::Map<String, Value> = rec
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !COMMON_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let version = match rec.get("v").and_then(Value::as_u64) {
        Some(v) if v == u64::from(SCHEMA_VERSION) => String::new(),
        Some(v) => format!(" (v{v})"),
        None => " (no v)".to_string(),
    };
    format!("{kind}{version} {}", Value::Object(rest))
}

/// An `mcp` record: the event and what matters about it.
fn mcp_line(rec: &Value) -> String {
    let d = &rec["detail"];
    let event = str_field(rec, "event");
    let tool = str_field(rec, "tool");
    let id = field(rec, "call_id");
    match event {
        "tools_call" => tools_call_line(d, tool, &id),
        "tool_denied" => format!("mcp tool_denied {tool}#{id} ({})", field(d, "reason")),
        "tools_list" => format!(
            "mcp tools_list {} tools, {} shown{}",
            d["count"],
            d["shown"],
            match d["hidden"].as_array() {
                Some(h) if !h.is_empty() => format!(
                    " (hidden: {})",
                    h.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => String::new(),
            }
        ),
        "initialize" => format!(
            "mcp initialize client={} {} server={} {} protocol={}",
            field(&d["client"], "name"),
            field(&d["client"], "version"),
            field(&d["server"], "name"),
            field(&d["server"], "version"),
            field(d, "protocol")
        ),
        "server_request" | "server_request_denied" => format!(
            "mcp {event} {}#{} {}B {}{}",
            field(d, "method"),
            field(d, "id"),
            d["bytes"],
            d["params"],
            if tool.is_empty() {
                String::new()
            } else {
                format!("  <- {tool}#{id}")
            }
        ),
        // A server request outside any call names no tool.
        "suspicious" => format!(
            "mcp suspicious {}{}: {} invisible={}",
            field(d, "where"),
            if tool.is_empty() {
                String::new()
            } else {
                format!(" in {tool}")
            },
            d["markers"],
            d["invisible_chars"]
        ),
        _ => format!("mcp {event} {d}"),
    }
}

/// `mcp tools_call read_file#3(path=<string 12>) 1.2ms 300B`.
fn tools_call_line(d: &Value, tool: &str, id: &str) -> String {
    let args: Vec<String> = d["arguments"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| match (v.get("type"), v.get("len")) {
            (Some(t), Some(l)) if v.as_object().is_some_and(|o| o.len() == 2) => {
                format!("{k}=<{} {l}>", t.as_str().unwrap_or("?"))
            }
            _ => format!("{k}={v}"),
        })
        .collect();
    let outcome = if d["unanswered"] == true {
        "unanswered".to_string()
    } else if !d["error"].is_null() {
        format!("error {}", d["error"]["message"])
    } else {
        format!(
            "{:.1}ms {}B{}",
            d["duration_ms"].as_f64().unwrap_or(0.0),
            d["result_bytes"],
            if d["is_error"] == true {
                " isError"
            } else {
                ""
            }
        )
    };
    format!("mcp tools_call {tool}#{id}({}) {outcome}", args.join(", "))
}

/// A launch record's enforcement layers in a few words, e.g.
/// `landlock=fully_enforced(abi 7) egress=on audit=proc,open`.
fn layers(rec: &Value) -> String {
    let l = &rec["layers"];
    let on = |key: &str| l.get(key).and_then(Value::as_bool) == Some(true);
    let landlock = match l.get("landlock") {
        Some(ll) if ll.is_object() => format!(
            "{}(abi {})",
            ll.get("status").and_then(Value::as_str).unwrap_or("?"),
            ll.get("abi")
                .map(Value::to_string)
                .unwrap_or_else(|| "?".into())
        ),
        _ => "?".into(),
    };
    let audit: Vec<&str> = [("audit_proc", "proc"), ("audit_open", "open")]
        .into_iter()
        .filter(|(key, _)| on(key))
        .map(|(_, name)| name)
        .collect();
    format!(
        "landlock={landlock} egress={} audit={}",
        if on("ebpf_egress") { "on" } else { "OFF" },
        if audit.is_empty() {
            "none".to_string()
        } else {
            audit.join(",")
        }
    )
}

fn str_field<'a>(rec: &'a Value, key: &str) -> &'a str {
    rec.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A field for display: strings bare, other values as JSON, `?` if absent.
fn field(rec: &Value, key: &str) -> String {
    match rec.get(key) {
        None | Some(Value::Null) => "?".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn truncation_mark(rec: &Value, key: &str) -> &'static str {
    if rec.get(key).and_then(Value::as_bool) == Some(true) {
        "…"
    } else {
        ""
    }
}

fn flags(rec: &Value) -> String {
    let names: Vec<&str> = rec
        .get("flags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    names.join("|")
}

/// argv joined by spaces, quoting only the words that need it to stay
/// readable as separate arguments.
fn argv(rec: &Value) -> String {
    let words: Vec<String> = rec
        .get("argv")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|a| match a.as_str() {
            Some(s) if !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '"') => {
                s.to_string()
            }
            Some(s) => format!("{s:?}"),
            None => a.to_string(),
        })
        .collect();
    words.join(" ")
}

/// `-ERRNO` for failures (as the log names them), the number otherwise.
fn result(rec: &Value) -> String {
    match rec.get("errno").and_then(Value::as_str) {
        Some(errno) => format!("-{errno}"),
        None => field(rec, "result"),
    }
}

/// `2024-05-01T11:02:03.123456Z` → (`2024-05-01`, `11:02:03.123456`); an
/// odd timestamp is shown whole.
fn split_ts(ts: &str) -> (Option<&str>, &str) {
    match (ts.get(..10), ts.get(10..11), ts.get(11..)) {
        (Some(date), Some("T"), Some(time)) => (Some(date), time.trim_end_matches('Z')),
        _ => (None, if ts.is_empty() { "?" } else { ts }),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
        time::UNIX_EPOCH,
    };

    use serde_json::json;

    use super::{
        super::{format_ts, AuditRecord, Body, Origin},
        *,
    };

    const T0: u64 = 1_700_000_000; // 2023-11-14T22:13:20Z

    fn rec(body: Body, secs: u64) -> AuditRecord {
        let origin = Origin {
            server: "time".into(),
            policy: "time".into(),
            launch: "time-3".into(),
            uid: 1000,
        };
        let mut r = AuditRecord::new(
            body,
            Some(&origin),
            UNIX_EPOCH + Duration::new(secs, 123_456_000),
        );
        r.pid = Some(4242);
        r.tid = Some(4242);
        r.comm = Some("python3".into());
        r
    }

    fn open_denied() -> Body {
        Body::Open {
            call: "openat".into(),
            path: "/root/.ssh/id_rsa".into(),
            path_truncated: false,
            flags: vec!["O_RDONLY".into()],
            mode: None,
            dirfd: None,
            result: -13,
            errno: Some("EACCES".into()),
        }
    }

    fn connect(verdict: &str, addr: &str) -> Body {
        Body::Connect {
            op: "connect4".into(),
            protocol: "tcp".into(),
            addr: addr.into(),
            port: 8080,
            verdict: verdict.into(),
        }
    }

    fn value(r: &AuditRecord) -> Value {
        serde_json::from_str(&r.to_json_line()).unwrap()
    }

    fn human(r: &AuditRecord) -> String {
        HumanFormat::new(false).line(&value(r))
    }

    #[test]
    fn human_lines_for_open_and_connect() {
        assert_eq!(
            human(&rec(open_denied(), T0)),
            "22:13:20.123456 time[time-3] pid 4242    python3         DENY  open /root/.ssh/id_rsa (O_RDONLY) = -EACCES"
        );
        assert_eq!(
            human(&rec(connect("allow", "127.0.0.1"), T0)),
            "22:13:20.123456 time[time-3] pid 4242    python3         allow connect4 tcp 127.0.0.1:8080"
        );
        assert_eq!(
            human(&rec(connect("deny", "2001:db8::1"), T0)),
            "22:13:20.123456 time[time-3] pid 4242    python3         DENY  connect4 tcp [2001:db8::1]:8080"
        );
    }

    #[test]
    fn mcp_records_read_as_one_timeline_and_filter_by_tool() {
        let call = json!({"v": 1, "ts": "2023-11-14T22:13:20.000001Z", "kind": "mcp",
            "server": "fx", "tool": "read_file", "call_id": 3, "denied": false, "event": "tools_call",
            "detail": {"arguments": {"path": "/tmp/x", "token": {"type": "string", "len": 14}},
                       "duration_ms": 2.25, "result_bytes": 40, "is_error": false}});
        let open = json!({"v": 1, "ts": "2023-11-14T22:13:20.000002Z", "kind": "open",
            "server": "fx", "pid": 5, "comm": "python3", "tool": "read_file", "call_id": 3,
            "denied": false, "path": "/tmp/x", "flags": ["O_RDONLY"], "result": 3});
        let other = json!({"v": 1, "ts": "2023-11-14T22:13:20.000003Z", "kind": "open",
            "server": "fx", "pid": 5, "comm": "python3", "denied": false, "path": "/etc/x",
            "flags": ["O_RDONLY"], "result": 3});
        let denied = json!({"v": 1, "ts": "2023-11-14T22:13:20.000004Z", "kind": "mcp",
            "server": "fx", "tool": "delete_repo", "call_id": "a", "denied": true,
            "event": "tool_denied", "detail": {"reason": "policy"}});
        let h = HumanFormat::new(false);
        assert!(
            h.line(&call).ends_with(
                r#"mcp tools_call read_file#3(path="/tmp/x", token=<string 14>) 2.2ms 40B"#
            ),
            "{}",
            h.line(&call)
        );
        assert!(
            h.line(&open)
                .ends_with("open /tmp/x (O_RDONLY) = 3  <- read_file#3"),
            "{}",
            h.line(&open)
        );
        assert!(
            h.line(&denied)
                .contains("DENY  mcp tool_denied delete_repo#a (policy)"),
            "{}",
            h.line(&denied)
        );
        let f = Filter {
            tool: Some("read_file".into()),
            ..Filter::default()
        };
        let f = f.matcher().unwrap();
        assert!(f.matches(&call) && f.matches(&open));
        assert!(!f.matches(&other) && !f.matches(&denied));
        let several = json!({"kind": "open", "calls": [{"call_id": 1, "tool": "a"}, {"call_id": 2, "tool": "read_file"}]});
        assert!(f.matches(&several));
    }

    #[test]
    fn human_lines_for_other_kinds() {
        let exec = rec(
            Body::Exec {
                filename: "/bin/sh".into(),
                path_truncated: false,
                argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
                argc_truncated: true,
                result: 0,
                errno: None,
            },
            T0,
        );
        assert!(
            human(&exec).ends_with("      exec /bin/sh [sh -c \"echo hi\" …] = 0"),
            "{}",
            human(&exec)
        );

        let open = rec(
            Body::Open {
                call: "creat".into(),
                path: "/tmp/x".into(),
                path_truncated: true,
                flags: vec!["O_WRONLY".into(), "O_CREAT".into(), "O_TRUNC".into()],
                mode: Some(0o644),
                dirfd: None,
                result: 3,
                errno: None,
            },
            T0,
        );
        assert!(
            human(&open).ends_with("open /tmp/x… (O_WRONLY|O_CREAT|O_TRUNC) = 3 mode=0644 [creat]"),
            "{}",
            human(&open)
        );
    }

    #[test]
    fn human_lines_for_path_calls() {
        let mkdir = rec(
            Body::Mkdir(crate::audit::PathCall {
                call: "mkdir".into(),
                path: "/home/u/.npm/_npx/1".into(),
                path_truncated: false,
                mode: Some(0o755),
                dirfd: None,
                fd: None,
                result: -13,
                errno: Some("EACCES".into()),
            }),
            T0,
        );
        assert!(
            human(&mkdir).ends_with("mkdir /home/u/.npm/_npx/1 = -EACCES mode=0755"),
            "{}",
            human(&mkdir)
        );

        let fchmod = rec(
            Body::Attr(crate::audit::PathCall {
                call: "fchmod".into(),
                path: String::new(),
                path_truncated: false,
                mode: Some(0o644),
                dirfd: None,
                fd: Some(3),
                result: -30,
                errno: Some("EROFS".into()),
            }),
            T0,
        );
        assert!(
            human(&fchmod).contains("DENY")
                && human(&fchmod).ends_with("fchmod fd 3 = -EROFS mode=0644"),
            "{}",
            human(&fchmod)
        );

        let link = rec(
            Body::Link(crate::audit::PathPair {
                call: "linkat".into(),
                old_path: "/home/u/.ssh/id_rsa".into(),
                old_path_truncated: false,
                new_path: "/srv/key".into(),
                new_path_truncated: true,
                flags: vec!["AT_EMPTY_PATH".into()],
                old_dirfd: None,
                new_dirfd: None,
                result: -18,
                errno: Some("EXDEV".into()),
            }),
            T0,
        );
        assert!(
            human(&link).ends_with(
                "DENY  linkat /home/u/.ssh/id_rsa -> /srv/key… (AT_EMPTY_PATH) = -EXDEV"
            ),
            "{}",
            human(&link)
        );
    }

    #[test]
    fn human_lines_for_launch_loss_and_server_exit() {
        let launch = rec(
            Body::Launch {
                argv: vec!["/usr/bin/python3".into(), "-m".into(), "srv".into()],
                cgroup: "/sys/fs/cgroup/mcpguard/t-1".into(),
                cwd: "/home/u".into(),
                layers: serde_json::json!({
                    "ebpf_egress": true, "audit_proc": true, "audit_open": false,
                    "landlock": {"status": "fully_enforced", "abi": 7},
                }),
            },
            T0,
        );
        assert!(
            human(&launch).ends_with(
                "launch /usr/bin/python3 -m srv cwd=/home/u cgroup=/sys/fs/cgroup/mcpguard/t-1 \
                 landlock=fully_enforced(abi 7) egress=on audit=proc"
            ),
            "{}",
            human(&launch)
        );

        let mut loss = AuditRecord::new(
            Body::Loss {
                lost: 5,
                total: 9,
                source: "ringbuf".into(),
                first_ts: None,
                last_ts: None,
                denials: None,
            },
            None,
            UNIX_EPOCH + Duration::from_secs(T0),
        );
        assert_eq!(
            human(&loss),
            "22:13:20.000000 - LOSS  loss 5 events lost (ringbuf), 9 total"
        );
        loss.body = Body::ServerExit {
            exit_code: None,
            signal: Some(9),
        };
        assert_eq!(human(&loss), "22:13:20.000000 -       server_exit signal 9");
    }

    #[test]
    fn color_only_when_asked() {
        let v = value(&rec(open_denied(), T0));
        let colored = HumanFormat::new(true).line(&v);
        assert!(
            colored.contains("\x1b[1;31mDENY\x1b[0m  open"),
            "{colored:?}"
        );
        assert!(!HumanFormat::new(false).line(&v).contains('\x1b'));
    }

    /// What a hostile server puts in the strings a record carries: cursor
    /// up and erase line, an OSC title, a C1 CSI, a bidi override, an
    /// isolate, a zero-width space and a line break.
    const HOSTILE: &str = "x\x1b[1A\x1b[2K\x1b]0;t\x07\u{9b}2K\u{202e}\u{2066}\u{200b}\nDENY";

    fn assert_clean(line: &str) {
        assert!(
            !line.chars().any(crate::term::is_unsafe),
            "raw control or format character in {line:?}"
        );
        // Visible as an escape: ours, or JSON's where a value is shown whole.
        assert!(
            line.contains(r"\x1b[1A\x1b[2K") || line.contains(r"\u001b[1A\u001b[2K"),
            "{line:?}"
        );
        assert!(line.contains(r"\u{202e}"), "{line:?}");
    }

    #[test]
    fn hostile_strings_in_records_are_escaped() {
        let ts = "2023-11-14T22:13:20.000001Z";
        let records = [
            json!({"v": 1, "ts": ts, "kind": "open", "server": HOSTILE, "launch": HOSTILE, "pid": 7, "comm": HOSTILE, "path": HOSTILE, "flags": [HOSTILE], "errno": HOSTILE, "denied": true, "tool": HOSTILE, "call_id": HOSTILE}),
            json!({"v": 1, "ts": ts, "kind": "exec", "filename": HOSTILE, "argv": [HOSTILE, "ok"], "result": 0, "calls": [{"tool": HOSTILE, "call_id": 1}]}),
            json!({"v": 1, "ts": ts, "kind": "rename", "old_path": HOSTILE, "new_path": HOSTILE, "result": 0}),
            json!({"v": 1, "ts": ts, "kind": "unix_connect", "path": HOSTILE, "result": 0}),
            json!({"v": 1, "ts": ts, "kind": "launch_failed", "argv": [HOSTILE], "error": HOSTILE}),
            json!({"v": 1, "ts": ts, "kind": "dns", "qname": HOSTILE, "qtype": "A", "transport": "udp", "detail": {"rcode": HOSTILE, "answers": [{"addr": HOSTILE}], "error": HOSTILE}}),
            json!({"v": 1, "ts": ts, "kind": "mcp", "event": "initialize", "detail": {"client": {"name": "c"}, "server": {"name": HOSTILE, "version": HOSTILE}, "protocol": "x"}}),
            json!({"v": 1, "ts": ts, "kind": "mcp", "event": "tools_call", "tool": HOSTILE, "call_id": HOSTILE, "detail": {"arguments": {HOSTILE: HOSTILE}, "error": {"message": HOSTILE}}}),
            json!({"v": 1, "ts": ts, "kind": "mcp", "event": "tools_list", "detail": {"count": 1, "shown": 0, "hidden": [HOSTILE]}}),
            json!({"v": 1, "ts": ts, "kind": "mcp", "event": "server_request", "detail": {"method": HOSTILE, "summary": HOSTILE}}),
            json!({"v": 1, "ts": ts, "kind": "tool_changed", "tool": HOSTILE, "change": "added", "action": "warn"}),
            json!({"v": 2, "ts": ts, "kind": HOSTILE, "other": HOSTILE}),
        ];
        for rec in &records {
            for color in [false, true] {
                let line = HumanFormat::new(color).line(rec);
                let plain = line.replace(RED, "").replace(RESET, "");
                assert_clean(&plain);
            }
            assert!(!describe(str_field(rec, "kind"), rec)
                .chars()
                .any(crate::term::is_unsafe));
        }
        // The verdict is still ours: one line, one DENY, in red.
        let line = HumanFormat::new(true).line(&records[0]);
        assert_eq!(line.matches("\x1b[1;31mDENY").count(), 1, "{line:?}");
        let mut out = Vec::new();
        HumanFormat::new(false)
            .write(&records[0], &mut out)
            .unwrap();
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 2);
    }

    #[test]
    fn server_requests_read_as_one_line_each() {
        let ts = "2023-11-14T22:13:20.000001Z";
        let denied = json!({"v": 1, "ts": ts, "kind": "mcp", "server": "fx", "event": "server_request_denied", "denied": true, "tool": "ask", "call_id": 3,
            "detail": {"method": "elicitation/create", "id": 2, "bytes": 293, "params": {"fields": ["aws_secret_access_key"]}, "policy_key": "mcp.elicitation"}});
        assert_eq!(
            HumanFormat::new(false).line(&denied),
            r#"22:13:20.000001 fx DENY  mcp server_request_denied elicitation/create#2 293B {"fields":["aws_secret_access_key"]}  <- ask#3"#
        );
        let flagged = json!({"v": 1, "ts": ts, "kind": "mcp", "server": "fx", "event": "suspicious",
            "detail": {"where": "sampling/createMessage", "markers": ["ignore_instructions"], "invisible_chars": 0}});
        assert_eq!(
            HumanFormat::new(false).line(&flagged),
            r#"22:13:20.000001 fx       mcp suspicious sampling/createMessage: ["ignore_instructions"] invisible=0"#
        );
    }

    #[test]
    fn unknown_kind_and_version_printed_generically() {
        let v = json!({"v": 2, "ts": "2023-11-14T22:13:20.000001Z", "kind": "mcp_call", "server": "time", "thing": "now", "denied": false});
        assert_eq!(
            HumanFormat::new(false).line(&v),
            r#"22:13:20.000001 time       mcp_call (v2) {"thing":"now"}"#
        );
        // Known kind with missing fields: placeholders, no panic.
        let v = json!({"kind": "open"});
        assert_eq!(HumanFormat::new(false).line(&v), "? -       open ? () = ?");
    }

    #[test]
    fn date_line_printed_when_date_changes() {
        let mut f = HumanFormat::new(false);
        let mut out = Vec::new();
        f.write(&value(&rec(Body::Exit {}, T0)), &mut out).unwrap();
        f.write(&value(&rec(Body::Exit {}, T0 + 1)), &mut out)
            .unwrap();
        f.write(&value(&rec(Body::Exit {}, T0 + 86_400)), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let dates: Vec<_> = text.lines().filter(|l| l.starts_with("---")).collect();
        assert_eq!(
            dates,
            ["--- 2023-11-14 (UTC) ---", "--- 2023-11-15 (UTC) ---"]
        );
        assert_eq!(text.lines().count(), 5);
    }

    #[test]
    fn filter_matches_each_criterion() {
        let denied = value(&rec(open_denied(), T0));
        let allowed = value(&rec(connect("allow", "1.2.3.4"), T0 + 60));
        let all = Filter::default();
        assert!(
            all.matcher().unwrap().matches(&denied) && all.matcher().unwrap().matches(&allowed)
        );

        let by_server = Filter {
            server: Some("time".into()),
            ..Filter::default()
        };
        assert!(by_server.matcher().unwrap().matches(&denied));
        let by_launch = Filter {
            server: Some("time-3".into()),
            ..Filter::default()
        };
        assert!(by_launch.matcher().unwrap().matches(&denied));
        let other = Filter {
            server: Some("fs".into()),
            ..Filter::default()
        };
        assert!(!other.matcher().unwrap().matches(&denied));

        let by_kind = Filter {
            kind: Some("connect".into()),
            ..Filter::default()
        };
        assert!(
            !by_kind.matcher().unwrap().matches(&denied)
                && by_kind.matcher().unwrap().matches(&allowed)
        );

        let only_denied = Filter {
            denied: true,
            ..Filter::default()
        };
        assert!(
            only_denied.matcher().unwrap().matches(&denied)
                && !only_denied.matcher().unwrap().matches(&allowed)
        );

        let since = Filter {
            since: Some(format_ts(UNIX_EPOCH + Duration::from_secs(T0 + 30))),
            ..Filter::default()
        };
        assert!(
            !since.matcher().unwrap().matches(&denied)
                && since.matcher().unwrap().matches(&allowed)
        );
        assert!(
            !since.matcher().unwrap().matches(&json!({"kind": "exit"})),
            "no ts, no match"
        );
    }

    #[test]
    fn since_durations_and_times() {
        let now = UNIX_EPOCH + Duration::from_secs(T0);
        let at = |s| Filter::parse_since_at(s, now).unwrap();
        assert_eq!(at("10m"), now - Duration::from_secs(600));
        assert_eq!(at("2h"), now - Duration::from_secs(7200));
        assert_eq!(at("1h 30m ago"), now - Duration::from_secs(5400));
        let utc = UNIX_EPOCH + Duration::from_secs(T0);
        assert_eq!(at("2023-11-14T22:13:20Z"), utc);
        assert_eq!(at("2023-11-14 22:13:20"), utc);
        assert_eq!(at("2023-11-15T00:13:20+02:00"), utc);
        assert_eq!(at("2023-11-14T17:13:20.000-05:00"), utc);
        assert_eq!(
            at("2023-11-14"),
            UNIX_EPOCH + Duration::from_secs(T0 - 80_000)
        );
        for bad in [
            "",
            "yesterday",
            "10 parsecs",
            "2023-13-01T00:00:00Z",
            "2023-11-14T22:13:20+25:00",
        ] {
            let err = Filter::parse_since_at(bad, now).unwrap_err();
            assert!(matches!(err, QueryError::BadSince { .. }), "{bad}: {err:?}");
        }
    }

    /// A fresh directory holding `audit.jsonl` (not created), removed on drop.
    struct Scratch {
        dir: PathBuf,
        path: PathBuf,
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn scratch(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "mcpguard-audit-query-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch {
            path: dir.join("audit.jsonl"),
            dir,
        }
    }

    fn run_once(path: &Path, filter: &Filter, json: bool) -> (String, String, Summary) {
        let (mut out, mut diag) = (Vec::new(), Vec::new());
        let opts = Options {
            follow: false,
            json,
            color: false,
        };
        let summary = run_with(path, filter, opts, &mut out, &mut diag, &|| false).unwrap();
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(diag).unwrap(),
            summary,
        )
    }

    #[test]
    fn malformed_lines_are_counted_and_reported_not_fatal() {
        let scratch = scratch("malformed");
        let path = scratch.path.clone();
        let good = rec(open_denied(), T0).to_json_line();
        let text = format!("{good}\nnot json\n\n[1,2]\n{{\"kind\":\"exit\",\"v\":1\n{good}");
        std::fs::write(&path, text).unwrap();
        let (out, diag, summary) = run_once(&path, &Filter::default(), true);
        assert_eq!(
            summary,
            Summary {
                shown: 2,
                malformed: 3
            }
        );
        assert_eq!(
            out,
            format!("{good}\n{good}\n"),
            "--json passes lines unchanged"
        );
        assert!(diag.contains("line 2: skipping malformed line"), "{diag}");
        assert!(
            diag.contains("line 4: skipping malformed line: not a JSON object"),
            "{diag}"
        );
        assert!(diag.contains("3 malformed line(s) skipped"), "{diag}");
    }

    #[test]
    fn rotated_files_are_read_oldest_first_before_the_log() {
        let scratch = scratch("rotated");
        let path = scratch.path.clone();
        for (file, secs) in [
            (rotated_path(&path, 2), 1),
            (rotated_path(&path, 1), 2),
            (path.clone(), 3),
        ] {
            let rec = rec(
                Body::Fork {
                    child_pid: secs as u32,
                },
                T0 + secs,
            );
            std::fs::write(&file, format!("{}\n", rec.to_json_line())).unwrap();
        }
        let (out, _, summary) = run_once(&path, &Filter::default(), true);
        assert_eq!(summary.shown, 3);
        let pids: Vec<u64> = out
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["child_pid"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(pids, [1, 2, 3]);
    }

    #[test]
    fn json_output_keeps_original_bytes_and_filters() {
        let scratch = scratch("json");
        let path = scratch.path.clone();
        // Unusual spacing and a future field must survive untouched.
        let odd = r#"{ "v":1, "ts":"2023-11-14T22:13:20.000000Z", "kind":"connect", "denied":true, "new":1 }"#;
        let other = rec(Body::Exit {}, T0).to_json_line();
        std::fs::write(&path, format!("{other}\n{odd}\n")).unwrap();
        let only_denied = Filter {
            denied: true,
            ..Filter::default()
        };
        let (out, _, summary) = run_once(&path, &only_denied, true);
        assert_eq!(out, format!("{odd}\n"));
        assert_eq!(summary.shown, 1);
        let (out, _, _) = run_once(&path, &only_denied, false);
        assert_eq!(
            out,
            "--- 2023-11-14 (UTC) ---\n22:13:20.000000 - DENY  connect ? ?:?\n"
        );
    }

    #[test]
    fn missing_log_names_path_and_suggests_log_flag() {
        let scratch = scratch("missing");
        let path = scratch.path.with_file_name("absent.jsonl");
        let err = run(&path, &Filter::default(), false, false, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, QueryError::NotFound { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("--log"),
            "{msg}"
        );
    }

    /// Writer that fails like a closed pipe.
    struct ClosedPipe;
    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn closed_output_ends_quietly() {
        let scratch = scratch("pipe");
        let path = scratch.path.clone();
        std::fs::write(&path, rec(Body::Exit {}, T0).to_json_line() + "\n").unwrap();
        let summary = run(&path, &Filter::default(), true, false, &mut ClosedPipe).unwrap();
        assert_eq!(summary.shown, 0);
    }

    fn append(path: &Path, line: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        f.write_all(line.as_bytes()).unwrap();
    }

    fn wait_for(out: &Arc<std::sync::Mutex<Vec<u8>>>, lines: usize) {
        for _ in 0..100 {
            if out.lock().unwrap().iter().filter(|&&b| b == b'\n').count() >= lines {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("follow output never reached {lines} lines");
    }

    /// `Write` into a buffer the test thread can watch.
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// `--follow` of `path` on a thread: its output, the flag that stops it,
    /// and the thread, which returns the diagnostics.
    fn follower(
        path: &Path,
    ) -> (
        Arc<std::sync::Mutex<Vec<u8>>>,
        Arc<AtomicBool>,
        std::thread::JoinHandle<String>,
    ) {
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (path, o, s) = (path.to_path_buf(), Arc::clone(&out), Arc::clone(&stop));
        let handle = std::thread::spawn(move || {
            let opts = Options {
                follow: true,
                json: true,
                color: false,
            };
            let mut diag = Vec::new();
            run_with(
                &path,
                &Filter::default(),
                opts,
                &mut Shared(o),
                &mut diag,
                &|| s.load(Ordering::SeqCst),
            )
            .unwrap();
            String::from_utf8(diag).unwrap()
        });
        (out, stop, handle)
    }

    #[test]
    fn follow_sees_appends_partial_lines_truncation_and_rotation() {
        let scratch = scratch("follow");
        let path = scratch.path.clone();
        let line = |child: u32| rec(Body::Fork { child_pid: child }, T0).to_json_line();
        std::fs::write(&path, line(1) + "\n").unwrap();

        let (out, stop, handle) = follower(&path);
        wait_for(&out, 1);

        // A line written in two parts is printed once, whole.
        let l2 = line(2);
        let (a, b) = l2.split_at(10);
        append(&path, a);
        std::thread::sleep(Duration::from_millis(300));
        append(&path, &format!("{b}\n"));
        wait_for(&out, 2);

        // copytruncate-style rotation.
        std::fs::write(&path, "").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        append(&path, &(line(3) + "\n"));
        wait_for(&out, 3);

        // Move-and-recreate rotation; the old file gets one last line.
        let old = path.with_extension("jsonl.1");
        std::fs::rename(&path, &old).unwrap();
        append(&old, &(line(4) + "\n"));
        append(&path, &(line(5) + "\n"));
        wait_for(&out, 5);

        stop.store(true, Ordering::SeqCst);
        let diag = handle.join().unwrap();
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(got, [line(1), line(2), line(3), line(4), line(5)]);
        assert!(
            diag.contains("truncated") && diag.contains("rotated"),
            "{diag}"
        );
    }

    #[test]
    fn follow_forgets_a_half_line_the_daemon_cut_off_and_reads_it_whole_later() {
        let scratch = scratch("follow-cut");
        let path = scratch.path.clone();
        let line = |child: u32| rec(Body::Fork { child_pid: child }, T0).to_json_line();
        std::fs::write(&path, line(1) + "\n").unwrap();
        let (out, stop, handle) = follower(&path);
        wait_for(&out, 1);

        // A full disk took part of line 2; the writer cut it off again and,
        // once there was room, wrote it whole.
        let whole = std::fs::metadata(&path).unwrap().len();
        append(&path, &line(2)[..20]);
        std::thread::sleep(Duration::from_millis(300));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(whole)
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        append(&path, &(line(2) + "\n"));
        wait_for(&out, 2);

        stop.store(true, Ordering::SeqCst);
        let diag = handle.join().unwrap();
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(got, [line(1), line(2)], "{diag}");
        assert!(!diag.contains("truncated"), "{diag}");
    }
}
