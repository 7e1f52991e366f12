//! `mcpguard audit`'s filter: the flags, the query the CLI sends the daemon,
//! and the matcher that applies them to a record.

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime},
};

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::QueryError;
use crate::audit::KINDS;

/// Which records to show (every set criterion must hold) and whether to
/// keep reading: `mcpguard audit`'s flags, and the query that command
/// sends the daemon for a caller who cannot read the log.
#[derive(Clone, Debug, Default, PartialEq, Args, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    /// Only records of this server (policy `name`).
    // A launch id (`time-3`) picks one launch.
    #[arg(long)]
    pub server: Option<String>,
    /// Only one launch of a server (its launch id, e.g. `time-3`).
    #[arg(long)]
    pub launch: Option<String>,
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
    /// Only one MCP tool call: its JSON-RPC id (ids are the client's, so
    /// combine with --launch or --server to pick one session's call).
    #[arg(long = "call", value_name = "ID")]
    pub call: Option<String>,
    /// Only records since a time: a duration ago ("10m", "2h") or RFC 3339.
    // Records without a readable `ts` are left out. The command sends the
    // daemon RFC 3339 ([`Filter::resolve_since`]).
    #[arg(long)]
    pub since: Option<String>,
    /// Keep printing records as they are written, starting at the end of
    /// the log (with --lines N, after the last N).
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N matching records (with --calls: the last N calls).
    #[arg(long = "lines", short = 'n', value_name = "N")]
    pub lines: Option<usize>,
    /// Only records tied to a tool call (`call_id`, or `calls` for records
    /// shared by concurrent calls): what the per-call view reads.
    #[arg(skip)]
    pub in_call: bool,
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
        if let Some(kind) = &self.kind {
            if !KINDS.contains(&kind.as_str()) {
                return Err(QueryError::Unknown {
                    what: "kind",
                    value: kind.clone(),
                    place: "in the record schema",
                    known: KINDS.join(", "),
                });
            }
        }
        Ok(Matcher {
            filter: self,
            since: self.since_time()?,
        })
    }

    /// A `--server`, `--launch` or `--tool` value that no record read
    /// names is an error listing those that are (with `--follow` it may
    /// yet appear, so there it is not).
    pub fn check_known(&self, known: &Known) -> Result<(), QueryError> {
        if self.follow {
            return Ok(());
        }
        let checks = [
            ("server", &self.server, &known.servers),
            ("launch", &self.launch, &known.launches),
            ("tool", &self.tool, &known.tools),
        ];
        for (what, value, names) in checks {
            let Some(value) = value else { continue };
            // `--server` also takes a launch id.
            let also = (what == "server").then_some(&known.launches);
            if names.contains(value) || also.is_some_and(|l| l.contains(value)) {
                continue;
            }
            return Err(QueryError::Unknown {
                what,
                value: value.clone(),
                place: "in the records read",
                known: list(names),
            });
        }
        Ok(())
    }
}

/// The names a log's records carry (those the caller may see): what
/// `--server`, `--launch` and `--tool` values are checked against.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Known {
    pub servers: BTreeSet<String>,
    pub launches: BTreeSet<String>,
    pub tools: BTreeSet<String>,
}

impl Known {
    /// Note the names `rec` carries.
    pub fn add(&mut self, rec: &Value) {
        let note = |set: &mut BTreeSet<String>, v: Option<&Value>| {
            if let Some(s) = v.and_then(Value::as_str) {
                if !set.contains(s) {
                    set.insert(s.to_string());
                }
            }
        };
        note(&mut self.servers, rec.get("server"));
        note(&mut self.launches, rec.get("launch"));
        note(&mut self.tools, rec.get("tool"));
        for call in rec
            .get("calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            note(&mut self.tools, call.get("tool"));
        }
    }
}

impl Known {
    /// What a client needs to check `filter` against: for each of
    /// `--server`, `--launch` and `--tool` it sets, that value alone when
    /// it is known, else at most `MAX_SENT` names; no names for the
    /// others. The daemon sends this, which stays well within a frame
    /// however many launches its log holds.
    #[must_use]
    pub fn narrow(self, filter: &Filter) -> Known {
        let pick = |value: &Option<String>, known: bool, names: BTreeSet<String>| match value {
            None => BTreeSet::new(),
            Some(v) if known => BTreeSet::from([v.clone()]),
            Some(_) => names.into_iter().take(MAX_SENT).collect(),
        };
        let has = |set: &BTreeSet<String>, v: &Option<String>| {
            v.as_ref().is_some_and(|v| set.contains(v))
        };
        let server_known =
            has(&self.servers, &filter.server) || has(&self.launches, &filter.server);
        let launch_known = has(&self.launches, &filter.launch);
        let tool_known = has(&self.tools, &filter.tool);
        Known {
            servers: pick(&filter.server, server_known, self.servers),
            launches: pick(&filter.launch, launch_known, self.launches),
            tools: pick(&filter.tool, tool_known, self.tools),
        }
    }
}

/// Most names of each sort [`Known::narrow`] keeps.
const MAX_SENT: usize = 1000;
/// Most names an unknown-value error lists.
const MAX_LISTED: usize = 40;

fn list(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        return "none in the records read".to_string();
    }
    let mut shown: Vec<&str> = names.iter().take(MAX_LISTED).map(String::as_str).collect();
    let more = names.len().saturating_sub(MAX_LISTED);
    let more = (more > 0).then(|| format!("... and {more} more"));
    shown.extend(more.as_deref());
    shown.join(", ")
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
        if let Some(launch) = &self.filter.launch {
            if rec.get("launch").and_then(Value::as_str) != Some(launch.as_str()) {
                return false;
            }
        }
        if let Some(id) = &self.filter.call {
            if !call_ids(rec).any(|v| id_is(v, id)) {
                return false;
            }
        }
        if self.filter.in_call && call_ids(rec).next().is_none() {
            return false;
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

/// The ids of the calls a record is tied to: its `call_id`, or those in
/// its `calls` list.
pub fn call_ids(rec: &Value) -> impl Iterator<Item = &Value> {
    let among = rec
        .get("calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    rec.get("call_id")
        .into_iter()
        .chain(among.filter_map(|c| c.get("call_id")))
        .filter(|v| !v.is_null())
}

/// Whether a JSON-RPC id (a number or a string) is the one typed.
fn id_is(id: &Value, typed: &str) -> bool {
    match id {
        Value::String(s) => s == typed,
        other => serde_json::from_str::<Value>(typed).is_ok_and(|t| t == *other),
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
