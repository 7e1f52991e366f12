//! `mcpguard audit`'s filter: the flags, the query the CLI sends the daemon,
//! and the matcher that applies them to a record.

use std::time::{Duration, SystemTime};

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::QueryError;

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

    pub(super) fn parse_since_at(s: &str, now: SystemTime) -> Result<SystemTime, QueryError> {
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
        self.since = self.since_time()?.map(crate::audit::format_ts);
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
