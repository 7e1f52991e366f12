//! Audit volume (issue 15, goal 3): the bytes and records one server start
//! and one typical tool call write to the audit log, for the shipped
//! servers under their shipped policies at the default audit level, split
//! by record kind.
//!
//! Servers (the pinned installs `cargo xtask setup` made for the test
//! user; the bench's own MCP client, [`super::session`]): `mcp-server-time`
//! (`get_current_time`), `server-memory` (`create_entities`, then
//! `read_graph`), `server-filesystem` (`read_text_file` of a small file,
//! `list_directory`), `mcp-server-git` (`git_status`), `mcp-server-fetch`
//! (`fetch` of a page on a loopback site, the site's address added to the
//! policy). The directories the policies serve (`~/mcp-repo`,
//! `~/mcp-share`, `~/.local/share/mcp-memory`) are moved to a scratch
//! directory in the test user's home, so the bench leaves the integration
//! tests' fixtures alone.
//!
//! One session per server and run, on an emptied log: the **start** is
//! every record of the server from launch until the log settles after the
//! `tools/list` answer (launch, exec, MCP handshake, whatever the runtime
//! does while it starts); each **call** is every record written from its
//! request until the log settles after its answer. The server's calls are
//! made twice in turn: the first call of a tool also loads what the server
//! loads lazily (Python imports), the second is the steady state. End of
//! input and exit are counted apart.
//!
//! Targets (what a person reads; the README's bench part says the same): a
//! start fits on a screen, at most [`START_RECORDS`] records and
//! [`START_KIB`] KiB; every call, the first included, at most [`CALL_KIB`]
//! KiB, a page of what it read, wrote, ran and reached.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    os::unix::fs::chown,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::{
    audit::wait_exit,
    level::{write_edited, Level},
    session::Session,
    stdout_of, write_file, Ctx, Daemon, Row, Section, Stats, Target,
};

/// A start a person reads at a glance: one screen of records.
const START_RECORDS: f64 = 30.0;
/// A screen of records at their usual few hundred bytes, and the launch
/// record, which lists every layer (about 2 KiB).
const START_KIB: f64 = 16.0;
/// A call's page: the MCP request and answer, and the files, programs
/// and hosts it touched.
const CALL_KIB: f64 = 8.0;

/// One shipped server and the session the bench drives.
struct Server {
    /// The shipped policy's name, which its records carry as `server`.
    name: &'static str,
    label: &'static str,
    policy: PathBuf,
    argv: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// Tool name and arguments (JSON text), called in turn.
    calls: Vec<(&'static str, String)>,
}

/// Records and bytes, in total and per kind.
#[derive(Default, Clone)]
struct Tally {
    records: u64,
    bytes: u64,
    kinds: BTreeMap<String, (u64, u64)>,
    /// `open` records per place: the path's first two components, or
    /// `(relative)`.
    opens: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, rec: &Value, bytes: u64) {
        let kind = rec["kind"].as_str().unwrap_or("?");
        self.records += 1;
        self.bytes += bytes;
        let k = self.kinds.entry(kind.to_string()).or_default();
        k.0 += 1;
        k.1 += bytes;
        if kind == "open" {
            let path = rec["path"].as_str().unwrap_or_default();
            let place = if path.starts_with('/') {
                path.split_inclusive('/').take(3).collect::<String>()
            } else {
                "(relative)".into()
            };
            *self.opens.entry(place).or_default() += 1;
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.records += other.records;
        self.bytes += other.bytes;
        for (kind, (n, b)) in &other.kinds {
            let k = self.kinds.entry(kind.clone()).or_default();
            k.0 += n;
            k.1 += b;
        }
        for (place, n) in &other.opens {
            *self.opens.entry(place.clone()).or_default() += n;
        }
    }

    /// The five places most opened, per session.
    fn opens_text(&self, sessions: usize) -> String {
        let n = sessions.max(1) as f64;
        let mut places: Vec<_> = self.opens.iter().collect();
        places.sort_by_key(|p| std::cmp::Reverse(*p.1));
        let top: Vec<String> = (places.iter().take(5))
            .map(|(p, c)| format!("{p} {:.0}", **c as f64 / n))
            .collect();
        if top.is_empty() {
            String::new()
        } else {
            format!(" (opens under {})", top.join(", "))
        }
    }

    /// Kinds by bytes, largest first, then where the opens were, per
    /// session.
    fn kinds_text(&self, sessions: usize) -> String {
        let n = sessions.max(1) as f64;
        let mut kinds: Vec<_> = self.kinds.iter().collect();
        kinds.sort_by_key(|k| std::cmp::Reverse(k.1 .1));
        let kinds: Vec<String> = (kinds.iter())
            .map(|(k, (r, b))| format!("{k} {:.0}/{:.0} B", *r as f64 / n, *b as f64 / n))
            .collect();
        format!("{}{}", kinds.join(", "), self.opens_text(sessions))
    }

    fn json(&self, sessions: usize) -> Value {
        let n = sessions.max(1) as f64;
        json!({
            "records": self.records as f64 / n,
            "bytes": self.bytes as f64 / n,
            "by_kind": self.kinds.iter().map(|(k, (r, b))| {
                (k.clone(), json!({"records": *r as f64 / n, "bytes": *b as f64 / n}))
            }).collect::<serde_json::Map<_, _>>(),
            "opens_by_place": self.opens.iter().map(|(p, c)| (p.clone(), json!(*c as f64 / n))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// What one session wrote: the start, each call, the end.
struct Observed {
    start: Tally,
    calls: Vec<Tally>,
    /// Bytes of the records carrying each call's id.
    attributed: Vec<u64>,
    stop: Tally,
}

/// One server's sessions.
#[derive(Default)]
struct Volume {
    start_bytes: Vec<f64>,
    start_records: Vec<f64>,
    start: Tally,
    call_bytes: Vec<Vec<f64>>,
    call_records: Vec<Vec<f64>>,
    call_attributed: Vec<Vec<f64>>,
    call: Vec<Tally>,
    stop: Tally,
    sessions: usize,
}

impl Volume {
    fn add(&mut self, o: &Observed) {
        self.sessions += 1;
        self.start_bytes.push(o.start.bytes as f64);
        self.start_records.push(o.start.records as f64);
        self.start.merge(&o.start);
        self.stop.merge(&o.stop);
        let n = o.calls.len();
        self.call_bytes.resize(n, Vec::new());
        self.call_records.resize(n, Vec::new());
        self.call_attributed.resize(n, Vec::new());
        self.call.resize(n, Tally::default());
        for (i, c) in o.calls.iter().enumerate() {
            self.call_bytes[i].push(c.bytes as f64);
            self.call_records[i].push(c.records as f64);
            self.call_attributed[i].push(o.attributed[i] as f64);
            self.call[i].merge(c);
        }
    }
}

/// The scratch directory in the test user's home holding what the
/// policies serve; removed when made and when dropped.
struct Fixtures {
    dir: PathBuf,
    /// The same, as the policies write it (`~/...`).
    tilde: String,
}

impl Fixtures {
    fn make(ctx: &Ctx) -> Result<Fixtures> {
        let name = format!("mcpguard-bench-volume-{}", std::process::id());
        let f = Fixtures {
            dir: ctx.user.home.join(&name),
            tilde: format!("~/{name}"),
        };
        let _ = fs::remove_dir_all(&f.dir);
        for sub in ["", "repo", "share", "memory"] {
            let d = f.dir.join(sub);
            fs::create_dir_all(&d)?;
            chown(&d, Some(ctx.user.uid), Some(ctx.user.gid))?;
        }
        let notes = f.dir.join("share/notes.txt");
        write_file(&notes, "shared notes\n", 0o644)?;
        chown(&notes, Some(ctx.user.uid), Some(ctx.user.gid))?;
        let repo = f.dir.join("repo");
        let readme = repo.join("README.md");
        write_file(&readme, "bench repository\n", 0o644)?;
        chown(&readme, Some(ctx.user.uid), Some(ctx.user.gid))?;
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "README.md"],
            &[
                "-c",
                "user.name=mcpguard bench",
                "-c",
                "user.email=bench@mcpguard.invalid",
                "commit",
                "-q",
                "-m",
                "bench",
            ],
        ] {
            let mut git = ctx.user_cmd("/usr/bin/git");
            stdout_of(git.args(args).current_dir(&repo)).context("making the bench repository")?;
        }
        Ok(f)
    }

    fn path(&self, sub: &str) -> String {
        self.dir.join(sub).display().to_string()
    }
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The shipped policy `name` with the served directories moved to the
/// fixtures, the loopback site allowed, and the audit level set.
fn policy(
    ctx: &Ctx,
    f: &Fixtures,
    level: &Level,
    name: &str,
    allow: Option<SocketAddr>,
) -> Result<PathBuf> {
    let shipped = crate::root().join("policies").join(format!("{name}.toml"));
    let text = fs::read_to_string(&shipped)
        .with_context(|| format!("reading {}", shipped.display()))?
        .replace("\"~/mcp-repo\"", &format!("\"{}/repo\"", f.tilde))
        .replace("\"~/mcp-share\"", &format!("\"{}/share\"", f.tilde))
        .replace(
            "\"~/.local/share/mcp-memory\"",
            &format!("\"{}/memory\"", f.tilde),
        );
    write_edited(&ctx.dir.join(format!("volume-{name}.toml")), &text, |t| {
        level.apply(t);
        if let Some(addr) = allow {
            if let Some(list) = t
                .get_mut("network")
                .and_then(|n| n.get_mut("allow"))
                .and_then(toml::Value::as_array_mut)
            {
                list.push(addr.to_string().into());
            }
        }
    })
}

fn servers(ctx: &Ctx, f: &Fixtures, level: &Level, site: &Site) -> Result<Vec<Server>> {
    let venv = |bin: &str| ctx.peers.join("venv/bin").join(bin).display().to_string();
    let npm = |pkg: &str| {
        ctx.peers
            .join(format!(
                "npm/node_modules/@modelcontextprotocol/{pkg}/dist/index.js"
            ))
            .display()
            .to_string()
    };
    let (repo, share) = (f.path("repo"), f.path("share"));
    Ok(vec![
        Server {
            name: "time",
            label: "mcp-server-time (venv)",
            policy: policy(ctx, f, level, "time", None)?,
            argv: vec![venv("mcp-server-time")],
            env: vec![],
            calls: vec![("get_current_time", r#"{"timezone":"UTC"}"#.into())],
        },
        Server {
            name: "memory",
            label: "server-memory (npm)",
            policy: policy(ctx, f, level, "memory", None)?,
            argv: vec!["/usr/bin/node".into(), npm("server-memory")],
            env: vec![("MEMORY_FILE_PATH", f.path("memory/memory.jsonl"))],
            calls: vec![
                (
                    "create_entities",
                    r#"{"entities":[{"name":"mcpguard","entityType":"tool","observations":["guards"]}]}"#.into(),
                ),
                ("read_graph", "{}".into()),
            ],
        },
        Server {
            name: "filesystem",
            label: "server-filesystem (npm)",
            policy: policy(ctx, f, level, "filesystem", None)?,
            argv: vec!["/usr/bin/node".into(), npm("server-filesystem"), share.clone()],
            env: vec![],
            calls: vec![
                (
                    "read_text_file",
                    json!({"path": f.path("share/notes.txt")}).to_string(),
                ),
                ("list_directory", json!({"path": share}).to_string()),
            ],
        },
        Server {
            name: "git",
            label: "mcp-server-git (venv)",
            policy: policy(ctx, f, level, "git", None)?,
            argv: vec![venv("mcp-server-git"), "--repository".into(), repo.clone()],
            env: vec![],
            calls: vec![("git_status", json!({"repo_path": repo}).to_string())],
        },
        Server {
            name: "fetch",
            label: "mcp-server-fetch (venv)",
            policy: policy(ctx, f, level, "fetch", Some(site.addr))?,
            argv: vec![venv("mcp-server-fetch"), "--allow-private-ips".into()],
            env: vec![("PATH", ctx.peers.join("venv/bin").display().to_string())],
            calls: vec![(
                "fetch",
                json!({"url": format!("http://{}/", site.addr)}).to_string(),
            )],
        },
    ])
}

/// The log's length once nothing has been appended for `quiet` (at most
/// 10 s): the daemon reads kernel records a little after they happen.
fn settled_len(log: &Path, quiet: Duration) -> Result<u64> {
    let len = || fs::metadata(log).map(|m| m.len()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = len();
    let mut since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = len();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    Ok(last)
}

/// One session of `s` on an emptied log: the start, each call, the end.
fn observe(ctx: &Ctx, daemon: &Daemon, s: &Server, quiet: Duration) -> Result<Observed> {
    // The daemon appends (O_APPEND): an emptied log holds only this session.
    fs::OpenOptions::new()
        .write(true)
        .open(&daemon.log)
        .and_then(|f| f.set_len(0))
        .with_context(|| format!("emptying {}", daemon.log.display()))?;
    let argv: Vec<&str> = s.argv.iter().map(String::as_str).collect();
    let mut cmd = ctx.guarded(daemon, &s.policy, &argv);
    cmd.envs(s.env.iter().map(|(k, v)| (k, v)));
    let mut session = Session::start(cmd).with_context(|| format!("starting {}", s.name))?;
    session.request("tools/list", "{}")?;
    // Offsets where the start ends and each call's window ends.
    let mut marks = vec![settled_len(&daemon.log, quiet)?];
    let mut ids = Vec::new();
    for (tool, args) in s.calls.iter().chain(&s.calls) {
        let params = format!(r#"{{"name":"{tool}","arguments":{args}}}"#);
        ids.push(session.request("tools/call", &params)?);
        if session.line.contains(r#""isError":true"#) {
            bail!("{}: {tool} failed: {}", s.name, session.line.trim());
        }
        marks.push(settled_len(&daemon.log, quiet)?);
    }
    session.close()?;
    wait_exit(&daemon.log, Duration::from_secs(60))?;
    split(&fs::read(&daemon.log)?, s.name, &marks, &ids)
}

/// The server's records of `log`, cut at `marks` (byte offsets: the end
/// of the start, then of each call).
fn split(log: &[u8], server: &str, marks: &[u64], ids: &[u64]) -> Result<Observed> {
    let mut o = Observed {
        start: Tally::default(),
        calls: vec![Tally::default(); ids.len()],
        attributed: vec![0; ids.len()],
        stop: Tally::default(),
    };
    let mut offset = 0u64;
    for line in log.split_inclusive(|b| *b == b'\n') {
        let at = offset;
        offset += line.len() as u64;
        let Ok(rec) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        if rec["server"] != server {
            continue;
        }
        let bytes = line.len() as u64;
        match marks.iter().position(|m| at < *m) {
            Some(0) => o.start.add(&rec, bytes),
            Some(i) => o.calls[i - 1].add(&rec, bytes),
            None => o.stop.add(&rec, bytes),
        }
        if let Some(i) = ids.iter().position(|id| rec["call_id"] == *id) {
            o.attributed[i] += bytes;
        }
    }
    if o.start.records == 0 {
        bail!("no record of {server} in the log: is the audit log where the daemon writes?");
    }
    Ok(o)
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    let runs = ctx.pick(3, 1);
    let quiet = ctx.pick(Duration::from_millis(500), Duration::from_millis(250));
    let level = Level::detect(ctx)?;
    let fixtures = Fixtures::make(ctx)?;
    let site = Site::start()?;
    let all = servers(ctx, &fixtures, &level, &site)?;
    let mut volumes: Vec<Volume> = all.iter().map(|_| Volume::default()).collect();
    let mut daemon = Daemon::start(ctx, "volume")?;
    for _ in 0..runs {
        for (s, v) in all.iter().zip(&mut volumes) {
            v.add(&observe(ctx, &daemon, s, quiet)?);
        }
    }
    daemon.stop()?;
    drop(site);
    drop(fixtures);
    Ok(section(&level, &all, &volumes, quiet))
}

fn section(level: &Level, all: &[Server], volumes: &[Volume], quiet: Duration) -> Section {
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let mut notes = vec![format!(
        "Audit level: {}. Start: launch to the log settling ({} ms without a new record) after the `tools/list` answer; call: request to the log settling after its answer, each tool called twice in turn (first, again); records of the server only, from one session per run on an emptied log. Targets: a start within {START_RECORDS:.0} records and {START_KIB:.0} KiB (a screen a person reads), every call within {CALL_KIB:.0} KiB (its page: the MCP messages and what it read, wrote, ran and reached).",
        level.describe(),
        quiet.as_millis()
    )];
    for (s, v) in all.iter().zip(volumes) {
        let (r, b) = (median(&v.start_records), median(&v.start_bytes));
        rows.push(figure(
            format!("{}: start", s.label),
            "bytes",
            &v.start_bytes,
        ));
        rows.push(figure(
            format!("{}: start", s.label),
            "records",
            &v.start_records,
        ));
        targets.push(target(
            format!(
                "{}: a start within {START_RECORDS:.0} records and {START_KIB:.0} KiB",
                s.label
            ),
            format!("{r:.0} records, {:.1} KiB", b / 1024.0),
            r <= START_RECORDS && b <= START_KIB * 1024.0,
            || format!("by kind, per start: {}", v.start.kinds_text(v.sessions)),
        ));
        let n = s.calls.len();
        for (i, (tool, _)) in s.calls.iter().enumerate() {
            let (first, again) = (&v.call_bytes[i], &v.call_bytes[n + i]);
            rows.push(figure(
                format!("{}: `{tool}` call, first", s.label),
                "bytes",
                first,
            ));
            rows.push(figure(
                format!("{}: `{tool}` call, again", s.label),
                "bytes",
                again,
            ));
            targets.push(target(
                format!("{}: `{tool}` call within {CALL_KIB:.0} KiB", s.label),
                format!(
                    "first {:.1} KiB ({:.0} records), again {:.1} KiB ({:.0} records)",
                    median(first) / 1024.0,
                    median(&v.call_records[i]),
                    median(again) / 1024.0,
                    median(&v.call_records[n + i]),
                ),
                median(first) <= CALL_KIB * 1024.0,
                || format!("first call by kind: {}", v.call[i].kinds_text(v.sessions)),
            ));
        }
        notes.push(volume_note(s, v));
    }
    Section {
        key: "volume",
        title: "Audit volume per start and per call",
        details: json!({
            "audit_level": level.json(),
            "quiet_ms": quiet.as_millis() as u64,
            "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
            "servers": all.iter().zip(volumes).map(|(s, v)| json!({
                "server": s.name,
                "argv": s.argv,
                "start": v.start.json(v.sessions),
                "start_bytes": v.start_bytes,
                "start_records": v.start_records,
                "calls": s.calls.iter().chain(&s.calls).enumerate().map(|(i, (tool, args))| json!({
                    "tool": tool, "arguments": args, "first": i < s.calls.len(),
                    "bytes": v.call_bytes[i], "records": v.call_records[i],
                    "bytes_carrying_call_id": v.call_attributed[i],
                    "mean": v.call[i].json(v.sessions),
                })).collect::<Vec<_>>(),
                "end_of_input_and_exit": v.stop.json(v.sessions),
            })).collect::<Vec<_>>(),
        }),
        rows,
        targets,
        notes,
    }
}

/// A figure with no bare side: the median of `samples` with min/max.
fn figure(what: String, unit: &'static str, samples: &[f64]) -> Row {
    Row::new(what, unit, None, Stats::of(samples))
}

fn median(samples: &[f64]) -> f64 {
    Stats::of(samples).map_or(f64::NAN, |s| s.median)
}

/// A target; `why` says what dominates, where it was missed.
fn target(what: String, measured: String, met: bool, why: impl FnOnce() -> String) -> Target {
    Target {
        what,
        measured,
        met: Some(met),
        why: if met { String::new() } else { why() },
    }
}

/// What dominates a server's start and calls, per session.
fn volume_note(s: &Server, v: &Volume) -> String {
    let n = s.calls.len();
    let calls = s
        .calls
        .iter()
        .enumerate()
        .map(|(i, (tool, _))| {
            let carried =
                |j: usize| Stats::of(&v.call_attributed[j]).map_or(f64::NAN, |x| x.median);
            format!(
                "`{tool}` first: {} ({:.0} B carry the call's id); again: {} ({:.0} B)",
                v.call[i].kinds_text(v.sessions),
                carried(i),
                v.call[n + i].kinds_text(v.sessions),
                carried(n + i),
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "{} by kind (records/bytes per session): start: {}; {calls}; end of input and exit: {}.",
        s.label,
        v.start.kinds_text(v.sessions),
        v.stop.kinds_text(v.sessions)
    )
}

/// A one-page web site on 127.0.0.1 for the fetch server: `/robots.txt`
/// allows everything, every other path is the same small HTML page.
struct Site {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Bench page</title></head>\
<body><article><h1>Bench page</h1><p>A page the fetch server reads through an egress rule.</p>\
</article></body></html>\n";

impl Site {
    fn start() -> Result<Site> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-site".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => serve(conn),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })?;
        Ok(Site {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

/// Answer one request and close.
fn serve(mut conn: std::net::TcpStream) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let robots = req.starts_with(b"GET /robots.txt ");
    let (ctype, body) = if robots {
        ("text/plain", "User-agent: *\nAllow: /\n")
    } else {
        ("text/html; charset=utf-8", PAGE)
    };
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_cuts_at_the_marks_keeps_the_servers_records_and_ties_call_ids() {
        let lines = [
            r#"{"kind":"daemon","event":"start"}"#,
            r#"{"kind":"launch","server":"git"}"#,
            r#"{"kind":"open","server":"git","path":"/usr/lib/x.so"}"#,
            r#"{"kind":"open","server":"other","path":"/etc/hosts"}"#,
            r#"{"kind":"open","server":"git","path":".git/HEAD","call_id":7}"#,
            r#"{"kind":"mcp","server":"git","call_id":7}"#,
            r#"{"kind":"open","server":"git","path":"/home/u/repo/README.md"}"#,
            r#"{"kind":"server_exit","server":"git"}"#,
        ];
        let log: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let offset = |n: usize| lines[..n].iter().map(|l| l.len() as u64 + 1).sum::<u64>();
        // The start ends after the first open, the call after the mcp
        // record; the README open comes after the call's window.
        let o = split(log.as_bytes(), "git", &[offset(3), offset(6)], &[7]).unwrap();
        assert_eq!((o.start.records, o.calls[0].records), (2, 2));
        assert_eq!(o.start.bytes, offset(3) - offset(1));
        assert_eq!(o.start.kinds["launch"], (1, lines[1].len() as u64 + 1));
        assert_eq!(o.start.opens["/usr/lib/"], 1);
        assert_eq!(o.calls[0].opens["(relative)"], 1);
        assert_eq!(o.attributed[0], offset(6) - offset(4));
        assert_eq!(o.stop.records, 2);
        assert_eq!(o.stop.opens["/home/u/"], 1);
    }

    #[test]
    fn split_refuses_a_log_without_the_server() {
        let log = b"{\"kind\":\"daemon\",\"event\":\"start\"}\n";
        assert!(split(log, "git", &[log.len() as u64], &[]).is_err());
    }
}
