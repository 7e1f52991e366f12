//! `mcpguard status`, and the client side of the daemon's queries: status,
//! and the audit records `mcpguard audit` asks for when the caller cannot
//! read the log itself.

use std::{
    io::{self, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::Args;
use serde_json::Value;

use crate::{
    audit::{
        query::{
            calls::{self, Calls},
            Filter, HumanFormat, View,
        },
        writer::SinkStatus,
    },
    daemon::{
        proto::{self, Request, Response},
        status::StatusReport,
        DEFAULT_SOCKET,
    },
    kernel::coverage::{Row, State},
    term,
};

#[derive(Args)]
pub struct StatusArgs {
    /// The daemon's socket.
    #[arg(long, env = "MCPGUARD_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn main(args: StatusArgs) -> ExitCode {
    let report = match status(&args.socket) {
        Ok(r) => r,
        Err(message) => {
            eprintln!("mcpguard status: {}", esc(&message));
            return ExitCode::FAILURE;
        }
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_human(&report, &mut out)
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcpguard status: cannot write output: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Connect to the daemon and open a query (no descriptors).
fn connect(socket: &Path) -> Result<UnixStream, String> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the mcpguard daemon at {}: {e} (is it running? `systemctl status \
             mcpguard`; --socket or MCPGUARD_SOCKET select another)",
            socket.display()
        )
    })?;
    proto::send_query_hello(&stream).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Send the daemon one query and read its one answer (an error answer is
/// the `Err`).
pub fn ask(socket: &Path, request: &Request) -> Result<Response, String> {
    let stream = connect(socket)?;
    // A daemon that accepts but never answers must not hang the caller.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    proto::write_frame(&mut &stream, request).map_err(|e| e.to_string())?;
    match proto::read_frame::<Response>(&mut &stream) {
        Ok(Some(Response::Error { message })) => Err(message),
        Ok(Some(answer)) => Ok(answer),
        Ok(None) => Err("the daemon closed the connection without answering".into()),
        Err(e) => Err(format!("talking to the daemon: {e}")),
    }
}

/// Ask the daemon for its status report.
pub fn status(socket: &Path) -> Result<StatusReport, String> {
    let request = Request::Status {
        version: proto::VERSION,
    };
    match ask(socket, &request)? {
        Response::Status(report) => Ok(*report),
        other => Err(format!("unexpected answer from the daemon: {other:?}")),
    }
}

fn write_human(r: &StatusReport, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "mcpguard daemon {} (pid {}), up {} since {}",
        r.version,
        r.pid,
        duration(r.uptime_s),
        r.started
    )?;
    if r.version != env!("CARGO_PKG_VERSION") {
        writeln!(
            out,
            "  (this client is {}; restart the daemon after upgrading)",
            env!("CARGO_PKG_VERSION")
        )?;
    }
    writeln!(out, "layers:")?;
    let width = r.layers.iter().map(|l| l.layer.len()).max().unwrap_or(0);
    for l in &r.layers {
        let state = if l.active { "active" } else { "MISSING" };
        writeln!(out, "  {:<width$}  {state:<7}  {}", l.layer, esc(&l.detail))?;
    }
    write_guarantees(&r.guarantees, out)?;
    if let Some(a) = &r.audit_log {
        write_audit_log(a, out)?;
    }
    let whose = match r.only_uid {
        Some(uid) => format!(" (yours, uid {uid})"),
        None => String::new(),
    };
    if r.servers.is_empty() {
        return writeln!(out, "servers{whose}: none running");
    }
    writeln!(out, "servers{whose}: {}", r.servers.len())?;
    for s in &r.servers {
        let pid = s
            .pid
            .map_or_else(|| "starting".to_string(), |p| format!("pid {p}"));
        writeln!(
            out,
            "  {}[{}]  {pid}  uid {}  up {}  policy {}",
            esc(&s.server),
            esc(&s.launch),
            s.uid,
            duration(s.uptime_s),
            esc(&s.policy)
        )?;
        let counts: Vec<String> = s
            .counts
            .iter()
            .map(|(kind, c)| match c.denied {
                0 => format!("{} {}", esc(kind), c.allowed),
                d => format!("{} {} ({d} denied)", esc(kind), c.allowed + d),
            })
            .collect();
        if !counts.is_empty() {
            writeln!(out, "    records: {}", counts.join(", "))?;
        }
        if let Some(level) = &s.audit_files {
            writeln!(out, "    audit files: {}", esc(level))?;
        }
        if !s.call_network.is_empty() {
            let tools: Vec<String> = s.call_network.iter().map(|t| esc(t).into_owned()).collect();
            writeln!(out, "    network per call: {}", tools.join(", "))?;
        }
        if let Some(d) = &s.last_denial {
            writeln!(out, "    last denial: {} {}", esc(&d.ts), esc(&d.summary))?;
        }
    }
    Ok(())
}

/// One line per guarantee class: which layers hold it on this kernel, or
/// that it is weaker or missing, and why.
fn write_guarantees(rows: &[Row], out: &mut impl Write) -> io::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(out, "guarantees on this kernel:")?;
    let width = rows.iter().map(|r| r.class.name().len()).max().unwrap_or(0);
    for r in rows {
        let state = match r.state {
            State::Held => "held",
            State::Weaker => "WEAKER",
            State::Missing => "MISSING",
        };
        let by = r.held_by_names();
        let by = if by.is_empty() { "-".to_owned() } else { by };
        writeln!(
            out,
            "  {:<width$}  {state:<7}  {by:<24}  {}",
            r.class.name(),
            esc(&r.detail)
        )?;
    }
    if rows.iter().any(|r| r.state == State::Missing) {
        writeln!(
            out,
            "  (a launch needing a MISSING class is refused unless its policy's [kernel] \
             accept_weaker names it)"
        )?;
    }
    Ok(())
}

fn write_audit_log(a: &SinkStatus, out: &mut impl Write) -> io::Result<()> {
    match (&a.since, &a.error) {
        (Some(since), Some(error)) => {
            writeln!(out, "audit log: {}  FAILING since {since}", esc(&a.path))?;
            writeln!(out, "  {}", esc(error))?;
            writeln!(
                out,
                "  {} record(s) waiting in memory ({} of {} bytes); enforcement goes on",
                a.backlog_records, a.backlog_bytes, a.backlog_cap_bytes
            )?;
        }
        _ => writeln!(out, "audit log: {}  ok", esc(&a.path))?,
    }
    if a.dropped > 0 {
        writeln!(
            out,
            "  {} record(s) dropped (memory full), to be reported by a loss record",
            a.dropped
        )?;
    }
    Ok(())
}

/// Daemon-reported text as the terminal may show it ([`term::escape`]).
fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    term::escape(s)
}

fn duration(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// Why asking the daemon for audit records failed.
#[derive(Debug)]
pub enum ViaDaemon {
    /// No daemon answers at the socket.
    Unreachable(String),
    /// A filter value the caller's records do not know (exit 2).
    Usage(String),
    /// Anything else.
    Failed(String),
}

/// `mcpguard audit` through the daemon: print the records it streams (the
/// caller's own servers', every record for root) as `view` says.
pub fn audit(
    socket: &Path,
    filter: &Filter,
    view: &View,
    out: &mut impl Write,
) -> Result<(), ViaDaemon> {
    let stream = connect(socket).map_err(ViaDaemon::Unreachable)?;
    let mut query = filter.clone();
    if view.calls {
        // The last N calls, not records: the summaries pick them.
        query.lines = None;
    }
    proto::write_frame(
        &mut &stream,
        &Request::Audit {
            version: proto::VERSION,
            query,
        },
    )
    .map_err(|e| ViaDaemon::Failed(e.to_string()))?;
    let mut human = HumanFormat::new(view.color).with_clock(view.clock.clone());
    let mut calls = view.calls.then(Calls::default);
    loop {
        let lines = match proto::read_frame::<Response>(&mut &stream) {
            Ok(Some(Response::Records { lines })) => lines,
            Ok(Some(Response::End { skipped, known, .. })) => {
                if skipped > 0 {
                    eprintln!(
                        "mcpguard audit: {skipped} record(s) too long to send were left out; \
                         root can read them in the log"
                    );
                }
                if let Some(known) = known {
                    filter
                        .check_known(&known)
                        .map_err(|e| ViaDaemon::Usage(e.to_string()))?;
                }
                let Some(calls) = calls else {
                    return Ok(());
                };
                let list = calls.finish(filter.lines);
                return write_out(calls::write_all(&list, view, out)).map(drop);
            }
            Ok(Some(Response::Error { message })) => return Err(ViaDaemon::Failed(message)),
            Ok(Some(other)) => {
                return Err(ViaDaemon::Failed(format!(
                    "unexpected answer from the daemon: {other:?}"
                )))
            }
            Ok(None) if filter.follow => {
                return Err(ViaDaemon::Failed(
                    "the daemon ended the stream (it is stopping)".into(),
                ))
            }
            Ok(None) => {
                return Err(ViaDaemon::Failed(
                    "the daemon closed the connection before the last record".into(),
                ))
            }
            Err(e) => return Err(ViaDaemon::Failed(format!("talking to the daemon: {e}"))),
        };
        let written = lines.iter().try_for_each(|line| {
            let rec = serde_json::from_str::<Value>(line);
            match (&mut calls, rec) {
                (Some(calls), Ok(rec)) => {
                    calls.add(&rec);
                    Ok(())
                }
                (None, _) if view.json => writeln!(out, "{}", term::escape_json(line)),
                (None, Ok(rec)) => human.write(&rec, out),
                (_, Err(_)) => writeln!(out, "{}", term::escape(line)),
            }
        });
        if !write_out(written.and_then(|()| out.flush()))? {
            return Ok(());
        }
    }
}

/// Whether to go on after writing: false once the output is closed
/// (`| head`: the reader has what it wanted).
fn write_out(written: io::Result<()>) -> Result<bool, ViaDaemon> {
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(ViaDaemon::Failed(format!("cannot write output: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_prints_daemon_reported_text_escaped() {
        let hostile = "x\u{1b}[1A\u{1b}[2K\u{9b}2K\u{202e}\n  last denial: none";
        let report: StatusReport = serde_json::from_value(serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"), "pid": 1, "started": "t", "uptime_s": 5,
            "layers": [{"layer": "landlock", "active": true, "detail": hostile}],
            "only_uid": 1000,
            "servers": [{"server": "time", "policy": hostile, "launch": "time-1", "pid": 2,
                "uid": 1000, "started": "t", "uptime_s": 1, "counts": {},
                "audit_files": "calls",
                "last_denial": {"kind": "open", "summary": hostile, "ts": "t"}}],
        }))
        .unwrap();
        let mut out = Vec::new();
        write_human(&report, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.chars().any(|c| c != '\n' && term::is_unsafe(c)),
            "{text:?}"
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("    last denial:"))
                .count(),
            1
        );
        assert!(text.contains("\n    audit files: calls\n"), "{text}");
        assert!(
            text.contains(r"x\x1b[1A\x1b[2K\x9b2K\u{202e}\x0a"),
            "{text}"
        );
    }

    #[test]
    fn status_prints_one_line_per_guarantee_and_the_opt_in_when_one_is_missing() {
        use crate::kernel::coverage::{table, Facts};
        let report = |abi| StatusReport {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: 1,
            started: "t".into(),
            uptime_s: 1,
            layers: vec![],
            guarantees: table(Facts {
                landlock_abi: Some(abi),
                ebpf_network: true,
            }),
            audit_log: None,
            only_uid: None,
            servers: vec![],
        };
        let text = |abi| {
            let mut out = Vec::new();
            write_human(&report(abi), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let old = text(2);
        assert!(
            old.lines().any(|l| l.starts_with("  scope.signal ")
                && l.contains("MISSING")
                && l.contains("Landlock ABI 2")),
            "{old}"
        );
        assert!(
            old.lines().any(|l| l.starts_with("  fs.truncate ")
                && l.contains("held")
                && l.contains("read_only_view")),
            "{old}"
        );
        assert!(old.contains("accept_weaker"), "{old}");
        let new = text(7);
        assert_eq!(new.matches("  held ").count(), 5, "{new}");
        assert!(!new.contains("accept_weaker"), "{new}");
    }
}
