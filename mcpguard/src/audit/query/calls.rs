//! `mcpguard audit --calls`: one summary per MCP tool call, built from the
//! records tied to it (`call_id`, or the `calls` list of a record several
//! calls in flight share): its result and duration from the tap's
//! `tools_call` (or `tool_denied`) record, and what the server did while
//! it ran: files read, written, created and removed, programs run, hosts
//! reached, names looked up, and every denial.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{self, Write},
};

use serde::Serialize;
use serde_json::Value;

use super::{
    filter::call_ids,
    human::{self, Clock},
    order, View,
};
use crate::term;

/// One call's summary; its JSON form is `mcpguard audit --calls --json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CallSummary {
    pub server: Option<String>,
    pub launch: Option<String>,
    pub tool: Option<String>,
    /// The JSON-RPC id, as the client sent it.
    pub call_id: Value,
    /// When the call started (RFC 3339, UTC), or the earliest record's time
    /// when the log holds no `tools_call` record for it.
    pub start: Option<String>,
    pub duration_ms: Option<f64>,
    /// `ok`, `is_error` (the tool reported an error), `error` (a JSON-RPC
    /// error), `refused` (the policy refused the tool), `unanswered` (the
    /// session ended first), or `unknown` (no record of its end was read).
    pub result: &'static str,
    /// The JSON-RPC error's message, for `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub files: Files,
    /// Programs run: the path and argv of each successful exec.
    pub execs: Vec<String>,
    /// Egress decisions (`addr:port/protocol`) and Unix socket connects
    /// (`unix:/path`, `unix:@name` for an abstract one).
    pub hosts: Verdicts,
    /// DNS names asked for.
    pub dns: Verdicts,
    /// Every refused action, as the human view describes it.
    pub denials: Vec<String>,
    /// Records tied to the call.
    pub records: u64,
    #[serde(skip)]
    start_us: Option<i128>,
}

/// Paths a call's successful file operations named.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Files {
    pub read: BTreeSet<String>,
    /// Opened for writing (including `O_CREAT` opens of existing files),
    /// or had an attribute changed.
    pub written: BTreeSet<String>,
    /// Made new: `mkdir`, `O_CREAT|O_EXCL` opens, link and rename targets.
    pub created: BTreeSet<String>,
    /// `unlink`, `rmdir`, a rename's old name.
    pub removed: BTreeSet<String>,
}

/// Names or addresses, by verdict.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Verdicts {
    pub allowed: BTreeSet<String>,
    pub denied: BTreeSet<String>,
}

impl Verdicts {
    fn add(&mut self, denied: bool, what: String) {
        if denied {
            self.denied.insert(what);
        } else {
            self.allowed.insert(what);
        }
    }
}

/// Builds the summaries from records in any order.
#[derive(Debug, Default)]
pub struct Calls {
    /// By (launch, id as JSON): ids are unique only within a session.
    calls: BTreeMap<(String, String), CallSummary>,
}

impl Calls {
    /// Add a record to the calls it is tied to (none if it is tied to none).
    pub fn add(&mut self, rec: &Value) {
        let launch = str_of(rec, "launch");
        let tool_of = |id: &Value| {
            rec.get("calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| c.get("call_id") == Some(id))
                .and_then(|c| c.get("tool"))
                .or_else(|| rec.get("tool"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        for id in call_ids(rec) {
            let key = (launch.clone().unwrap_or_default(), id.to_string());
            let call = self.calls.entry(key).or_insert_with(|| CallSummary {
                launch: launch.clone(),
                call_id: id.clone(),
                result: "unknown",
                ..CallSummary::default()
            });
            if call.tool.is_none() {
                call.tool = tool_of(id);
            }
            call.add(rec);
        }
    }

    /// The summaries by start time; with `last`, only the latest `last`.
    pub fn finish(self, last: Option<usize>) -> Vec<CallSummary> {
        let mut all: Vec<CallSummary> = self.calls.into_values().collect();
        all.sort_by_key(|c| c.start_us);
        let skip = last.map_or(0, |n| all.len().saturating_sub(n));
        all.split_off(skip)
    }
}

impl CallSummary {
    fn add(&mut self, rec: &Value) {
        self.records += 1;
        if self.server.is_none() {
            self.server = str_of(rec, "server");
        }
        let kind = rec.get("kind").and_then(Value::as_str).unwrap_or("?");
        let denied = rec.get("denied").and_then(Value::as_bool) == Some(true);
        if denied {
            self.denials.push(human::describe_raw(kind, rec));
        }
        let at = order::micros(rec);
        // The tap's record of the call is its start; without one, the
        // earliest record.
        let is_call = kind == "mcp" && self.mcp(rec);
        let earlier = at.is_some() && (self.start_us.is_none() || at < self.start_us);
        if is_call || (self.result == "unknown" && earlier) {
            self.start_us = at;
            self.start = str_of(rec, "ts");
        }
        let ok = !denied && rec.get("errno").is_none_or(Value::is_null);
        match kind {
            "open" if ok => self.open(rec),
            "exec" if ok => self.execs.push(exec_words(rec)),
            "mkdir" if ok => add_path(&mut self.files.created, rec, "path"),
            "unlink" | "rmdir" if ok => add_path(&mut self.files.removed, rec, "path"),
            "attr" if ok => add_path(&mut self.files.written, rec, "path"),
            "link" if ok => add_path(&mut self.files.created, rec, "new_path"),
            "rename" if ok => {
                add_path(&mut self.files.removed, rec, "old_path");
                add_path(&mut self.files.created, rec, "new_path");
            }
            "connect" => self.connect(rec, denied),
            "unix_connect" if ok || denied => {
                let at = if rec["abstract_addr"] == true {
                    "@"
                } else {
                    ""
                };
                let path = str_of(rec, "path").unwrap_or_default();
                self.hosts.add(denied, format!("unix:{at}{path}"));
            }
            "dns" => {
                if let Some(name) = str_of(rec, "qname") {
                    self.dns.add(denied, name);
                }
            }
            _ => {}
        }
    }

    /// The tap's record of the call itself; returns whether it was one
    /// (its time is the call's start).
    fn mcp(&mut self, rec: &Value) -> bool {
        let d = &rec["detail"];
        match rec.get("event").and_then(Value::as_str) {
            Some("tools_call") => {
                self.duration_ms = d.get("duration_ms").and_then(Value::as_f64);
                self.result = if d["unanswered"] == true {
                    "unanswered"
                } else if !d["error"].is_null() {
                    self.error = d["error"]["message"].as_str().map(str::to_string);
                    "error"
                } else if d["is_error"] == true {
                    "is_error"
                } else {
                    "ok"
                };
                true
            }
            Some("tool_denied") => {
                self.result = "refused";
                true
            }
            // Approved, the call's own record follows; otherwise this is
            // all there is of it.
            Some("approval") if d["approved"] == false => {
                self.result = "not approved";
                true
            }
            _ => false,
        }
    }

    fn open(&mut self, rec: &Value) {
        let flags = human::flag_names(rec);
        let has = |f: &str| flags.contains(&f);
        let set = if has("O_CREAT") && has("O_EXCL") || has("O_TMPFILE") {
            &mut self.files.created
        } else if has("O_WRONLY") || has("O_RDWR") || has("O_CREAT") || has("O_TRUNC") {
            &mut self.files.written
        } else {
            &mut self.files.read
        };
        add_path(set, rec, "path");
    }

    fn connect(&mut self, rec: &Value, denied: bool) {
        let op = rec.get("op").and_then(Value::as_str).unwrap_or("connect");
        // Binds and refused inbound packets are not hosts the call reached.
        if !(op.starts_with("connect") || op.starts_with("sendmsg")) {
            return;
        }
        let addr = str_of(rec, "addr").unwrap_or_default();
        let host = if addr.contains(':') {
            format!("[{addr}]")
        } else {
            addr
        };
        let port = rec.get("port").map_or_else(String::new, Value::to_string);
        let proto = str_of(rec, "protocol").unwrap_or_default();
        self.hosts.add(denied, format!("{host}:{port}/{proto}"));
    }

    /// The human block: a header line, then one line per thing done.
    pub fn write(&self, clock: &Clock, out: &mut impl Write) -> io::Result<()> {
        let id = match &self.call_id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let who = format!(
            "{}[{}]",
            self.server.as_deref().unwrap_or("-"),
            self.launch.as_deref().unwrap_or("-")
        );
        let start = self
            .start
            .as_deref()
            .map_or_else(|| "?".to_string(), |ts| clock.date_time(ts));
        let duration = self
            .duration_ms
            .map_or_else(String::new, |ms| format!(" {ms:.1}ms"));
        let error = self
            .error
            .as_deref()
            .map_or_else(String::new, |e| format!(": {e}"));
        let header = format!(
            "call {}#{id} {who} {start}{duration} {}{error}",
            self.tool.as_deref().unwrap_or("?"),
            self.result
        );
        writeln!(out, "{}", term::escape(&header))?;
        let mut items: Vec<(&str, &str)> = Vec::new();
        let f = &self.files;
        for (label, set) in [
            ("read", &f.read),
            ("wrote", &f.written),
            ("created", &f.created),
            ("removed", &f.removed),
        ] {
            items.extend(set.iter().map(|p| (label, p.as_str())));
        }
        items.extend(self.execs.iter().map(|e| ("exec", e.as_str())));
        items.extend(self.hosts.allowed.iter().map(|h| ("connect", h.as_str())));
        items.extend(
            self.hosts
                .denied
                .iter()
                .map(|h| ("connect DENY", h.as_str())),
        );
        items.extend(self.dns.allowed.iter().map(|n| ("dns", n.as_str())));
        items.extend(self.dns.denied.iter().map(|n| ("dns DENY", n.as_str())));
        items.extend(self.denials.iter().map(|d| ("DENIED", d.as_str())));
        if items.is_empty() {
            writeln!(out, "  (no file, exec, network or DNS activity recorded)")?;
        }
        for (label, what) in items {
            writeln!(out, "  {label:<12} {}", term::escape(what))?;
        }
        Ok(())
    }
}

/// The summaries as `view` says: JSON Lines, or blocks a blank line apart.
pub fn write_all(list: &[CallSummary], view: &View, out: &mut impl Write) -> io::Result<()> {
    for (i, call) in list.iter().enumerate() {
        if view.json {
            let line = serde_json::to_string(call)?;
            writeln!(out, "{}", term::escape_json(&line))?;
        } else {
            if i > 0 {
                writeln!(out)?;
            }
            call.write(&view.clock, out)?;
        }
    }
    Ok(())
}

fn str_of(rec: &Value, key: &str) -> Option<String> {
    rec.get(key).and_then(Value::as_str).map(str::to_string)
}

fn add_path(set: &mut BTreeSet<String>, rec: &Value, key: &str) {
    if let Some(p) = rec.get(key).and_then(Value::as_str) {
        if !p.is_empty() {
            set.insert(p.to_string());
        }
    }
}

/// `/usr/bin/git status --short`: the program, then its arguments after
/// argv[0].
fn exec_words(rec: &Value) -> String {
    let mut words = vec![str_of(rec, "filename").unwrap_or_default()];
    words.extend(
        rec.get("argv")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .skip(1)
            .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_string)),
    );
    words.join(" ")
}
