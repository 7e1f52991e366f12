//! The human view of the audit log: one line per record, a date line when
//! the day changes, denials coloured on a terminal.

use std::{
    borrow::Cow,
    fmt::Write as _,
    io::{self, Write},
};

use jiff::tz::TimeZone;
use serde_json::Value;

use crate::{audit::SCHEMA_VERSION, term};

/// The compact one-line-per-record format.
///
/// Times are shown as time of day in the [`Clock`]'s zone; a
/// `--- DATE (ZONE) ---` line is printed whenever the date (or the zone's
/// offset) changes, so a multi-day log stays readable.
pub struct HumanFormat {
    color: bool,
    clock: Clock,
    last_date: Option<String>,
}

/// The zone times are shown in: UTC, or a time zone (the system's, for
/// people). The log itself is always UTC.
#[derive(Clone, Debug)]
pub struct Clock {
    /// `None`: UTC.
    zone: Option<TimeZone>,
}

impl Clock {
    pub fn utc() -> Self {
        Clock { zone: None }
    }

    /// The system's zone (`TZ`, else `/etc/localtime`).
    pub fn local() -> Result<Self, String> {
        TimeZone::try_system()
            .map(Self::zone)
            .map_err(|e| format!("cannot tell the local time zone ({e})"))
    }

    pub fn zone(zone: TimeZone) -> Self {
        Clock { zone: Some(zone) }
    }

    /// (the date line's text, the time of day) of a record's `ts`; an odd
    /// timestamp is shown whole, with no date.
    fn split<'a>(&self, ts: &'a str) -> (Option<Cow<'a, str>>, Cow<'a, str>) {
        let Some(zone) = &self.zone else {
            let (date, time) = split_ts(ts);
            return (date.map(|d| format!("{d} (UTC)").into()), time.into());
        };
        match ts.parse::<jiff::Timestamp>() {
            Ok(t) => {
                let z = t.to_zoned_datetime(zone.clone());
                (
                    Some(z.strftime("%Y-%m-%d (%Z, %:z)").to_string().into()),
                    z.strftime("%H:%M:%S%.6f").to_string().into(),
                )
            }
            Err(_) => (None, split_ts(ts).1.into()),
        }
    }

    /// Date and time of a record's `ts`: `2024-05-01 13:02:03.123456 +02:00`
    /// (`... UTC` for UTC).
    pub fn date_time(&self, ts: &str) -> String {
        match (&self.zone, ts.parse::<jiff::Timestamp>()) {
            (None, Ok(t)) => t.strftime("%Y-%m-%d %H:%M:%S%.6f UTC").to_string(),
            (Some(zone), Ok(t)) => t
                .to_zoned_datetime(zone.clone())
                .strftime("%Y-%m-%d %H:%M:%S%.6f %:z")
                .to_string(),
            (_, Err(_)) => ts.to_string(),
        }
    }
}

pub(super) const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[1;33m";
pub(super) const RESET: &str = "\x1b[0m";

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
    /// Times in UTC.
    pub fn new(color: bool) -> Self {
        HumanFormat {
            color,
            clock: Clock::utc(),
            last_date: None,
        }
    }

    /// Times in `clock`'s zone.
    pub fn with_clock(self, clock: Clock) -> Self {
        HumanFormat { clock, ..self }
    }

    /// Write the record's line (preceded by a date line when the date
    /// changed).
    pub fn write(&mut self, rec: &Value, out: &mut impl Write) -> io::Result<()> {
        let ts = str_field(rec, "ts");
        let (date, _) = self.clock.split(ts);
        if let Some(date) = date {
            if self.last_date.as_deref() != Some(&date) {
                writeln!(out, "--- {} ---", term::escape(&date))?;
                self.last_date = Some(date.into_owned());
            }
        }
        writeln!(out, "{}", self.line(rec))
    }

    /// One record as one line, without the date.
    pub fn line(&self, rec: &Value) -> String {
        let (_, time) = self.clock.split(str_field(rec, "ts"));
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

/// [`describe`] without terminal escaping (for JSON): one arm per record
/// kind; the longer ones have a function each.
pub(super) fn describe_raw(kind: &str, rec: &Value) -> String {
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
        "secret_minted" => format!(
            "secret_minted {} by helper {} ({}) ttl={}s expires {}",
            f("env"),
            f("helper"),
            f("path"),
            f("ttl_secs"),
            f("expires_at")
        ),
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
        "landlock" => landlock_line(rec),
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

/// `landlock fs.read_file /etc/hostname`, `landlock net.connect_tcp
/// 127.0.0.1:9`, `landlock scope.abstract_unix_socket @name`, `landlock
/// scope.signal pid 4242 (comm)`: the refused rights and their target.
fn landlock_line(rec: &Value) -> String {
    let blockers: Vec<&str> = rec["blockers"]
        .as_array()
        .map(|b| b.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut s = format!("landlock {}", blockers.join(","));
    if rec.get("path").is_some() {
        let at = if rec["abstract_addr"] == true {
            "@"
        } else {
            ""
        };
        let _ = write!(s, " {at}{}", field(rec, "path"));
    }
    for (addr, port) in [("daddr", "dest"), ("saddr", "src")] {
        if rec.get(port).is_some() {
            let _ = write!(s, " {}:{}", field(rec, addr), field(rec, port));
        }
    }
    if rec.get("opid").is_some() {
        let _ = write!(s, " pid {} ({})", field(rec, "opid"), field(rec, "ocomm"));
    }
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
        "call_network" => call_network_line(d, tool, &id),
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
        "approval_requested" => format!(
            "mcp approval_requested {tool}#{id} approval {} ({}, {} s{})",
            d["approval"],
            field(d, "why"),
            d["timeout_secs"],
            if d["elicitation"] == true {
                ", asked in the client"
            } else {
                ""
            }
        ),
        "approval" => format!(
            "mcp approval {tool}#{id} approval {} {} by {} after {}ms",
            d["approval"],
            if d["approved"] == true {
                "approved"
            } else {
                "not approved"
            },
            decider(&d["by"]),
            d["waited_ms"]
        ),
        "tainted" => format!(
            "mcp tainted by {}{} (on_taint {})",
            field(d, "source"),
            if tool.is_empty() {
                String::new()
            } else {
                format!(" of {tool}")
            },
            field(d, "on_taint")
        ),
        "taint_cleared" => format!("mcp taint_cleared by {}", decider(&d["by"])),
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

/// Who decided a held call: `uid 1000 (pid 42)`, `the client (accept)`,
/// `timeout (60 s)`, ...
fn decider(by: &Value) -> String {
    match by["via"].as_str().unwrap_or("") {
        "cli" => format!("uid {} (pid {})", by["uid"], by["pid"]),
        "elicitation" => format!("the client ({})", field(by, "action")),
        "timeout" => format!("timeout ({} s)", by["after_secs"]),
        other => other.replace('_', " "),
    }
}

/// `mcp call_network fetch#3 open *:443, 10.0.0.0/8:443 (1 call)`: a
/// tool's per-call rules opened, kept or closed for one of its calls.
fn call_network_line(d: &Value, tool: &str, id: &str) -> String {
    let rules: Vec<&str> = (d["rules"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    let calls = d["calls"].as_u64().unwrap_or(0);
    let error = match d["error"].as_str() {
        Some(e) => format!(" error: {e}"),
        None => String::new(),
    };
    format!(
        "mcp call_network {tool}#{id} {} {} ({calls} call{} in flight){error}",
        field(d, "network"),
        rules.join(", "),
        if calls == 1 { "" } else { "s" }
    )
}

/// `mcp tools_call read_file#3(path=<string 12>) 1.2ms 300B [text 250B]`.
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
    format!(
        "mcp tools_call {tool}#{id}({}) {outcome}{}",
        args.join(", "),
        result_summary(&d["result"])
    )
}

/// ` [text 120B, image×2 9000B, structured 40B] "excerpt"`: a result's
/// summary, as the tap recorded it (nothing for records without one).
fn result_summary(r: &Value) -> String {
    let mut parts: Vec<String> = r["content"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(ty, v)| match v["count"].as_u64() {
            Some(1) => format!("{ty} {}B", v["bytes"]),
            _ => format!("{ty}×{} {}B", v["count"], v["bytes"]),
        })
        .collect();
    if let Some(bytes) = r.get("structured_bytes") {
        parts.push(format!("structured {bytes}B"));
    }
    let mut out = if parts.is_empty() {
        String::new()
    } else {
        format!(" [{}]", parts.join(", "))
    };
    // As a JSON string: quotes and control characters come out escaped.
    if let Some(excerpt) = r.get("excerpt").filter(|e| e.is_string()) {
        out.push_str(&format!(" {excerpt}"));
    }
    out
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

pub(super) fn str_field<'a>(rec: &'a Value, key: &str) -> &'a str {
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
    flag_names(rec).join("|")
}

/// A record's `flags` (an open's `O_*`).
pub(super) fn flag_names(rec: &Value) -> Vec<&str> {
    rec.get("flags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
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
