//! The MCP tap: the daemon's view of the JSON-RPC stream it relays between
//! a client and a server (MCP stdio transport: one JSON-RPC message, or a
//! batch, per line, in both directions).
//!
//! Per line the tap decides what goes where: a `tools/call` the policy
//! denies is answered by the daemon and never reaches the server;
//! `tools/list` results are filtered; everything the server emits is
//! redacted of secrets before the client (or the audit log) sees it. Every
//! request the server sends the client (sampling, elicitation, roots) is
//! recorded and inspected, and one the policy's `[mcp]` refuses is answered
//! by the daemon and never reaches the client. It also writes the `mcp`
//! audit records and keeps the spans of in-flight calls so kernel records
//! can be tied to the call that caused them.
//!
//! Lines that are not JSON pass through (redacted, when they come from the
//! server) and are counted, unless they hold a `{`: such a line could be a
//! message to a laxer parser on the other side (lone surrogates, `NaN`,
//! nesting deeper than serde_json's limit, a `\r` that Python's universal
//! newlines splits on, trailing data), one the tap could neither check nor
//! redact, so it is withheld; the client gets a JSON-RPC parse error for
//! one it sent. The tap never sees a partial line; framing and its memory
//! bound are the relay's. A line is inspected in memory bounded by its
//! length ([`parse`]): a long line of more values than that allows is
//! withheld like one too long for the relay, with an `oversize` record.

pub mod gate;
pub mod inspect;
pub mod parse;
pub mod redact;
pub mod result;
pub mod tools;

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Instant, SystemTime},
};

use serde_json::{json, Value};
use tracing::warn;

pub use self::gate::{CallGate, CallWatch, GateError};
use self::{
    redact::{Counts, Redactor},
    tools::{Change, PinStore, Pins},
};
use crate::{
    audit::decode::boot_ns,
    policy::{
        mcp::{Mcp, Permit},
        ToolChange, Tools,
    },
};

/// Longest line the relays hand the tap (longer ones are dropped there).
pub const MAX_LINE: usize = 16 << 20;
/// In-flight requests the tap remembers per session; beyond this the oldest
/// is forgotten (and counted) rather than memory growing without bound.
const MAX_PENDING: usize = 4096;
/// Finished call spans kept per server for records that arrive late.
const MAX_ENDED_SPANS: usize = 64;
/// Spans kept per server in all: calls a server never answers are
/// forgotten, oldest first, beyond this.
const MAX_SPANS: usize = MAX_PENDING + MAX_ENDED_SPANS;
/// Distinct tool names remembered per session for pinning; a server
/// listing more is not given more memory.
const MAX_TOOLS: usize = 4096;
/// Field names of an elicitation form recorded per request.
const MAX_FORM_FIELDS: usize = 32;
/// Characters of a request parameter recorded in clear (`url`...).
const MAX_PARAM_CHARS: usize = 256;
/// Server request parameters whose (redacted) values are recorded: they
/// say what was asked without carrying the prompt or message text.
const CLEAR_PARAMS: &[&str] = &["includeContext", "maxTokens", "mode", "url"];

/// Where a line goes after the tap has looked at it.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    Server(Vec<u8>),
    Client(Vec<u8>),
}

/// What the tap wants written to the audit log: a body plus the call it
/// belongs to. The session adds the origin.
#[derive(Debug)]
pub struct Event {
    pub ts: SystemTime,
    pub body: crate::audit::Body,
    pub tool: Option<String>,
    pub call_id: Option<Value>,
}

/// One tool call's time span, in the kernel's clock.
#[derive(Clone, Debug)]
struct Span {
    id: Value,
    tool: String,
    start_ns: u64,
    end_ns: Option<u64>,
}

/// Spans of tool calls per server cgroup, shared by the taps (which open
/// and close them) and the audit thread (which tags kernel records). Each
/// change of a server's count of open spans goes to the [`CallGate`], and
/// each call that opens or closes to the [`CallWatch`], if there are ones.
#[derive(Default)]
pub struct CallTracker {
    spans: Mutex<HashMap<u64, VecDeque<Span>>>,
    gate: Option<Arc<dyn CallGate>>,
    watch: Option<Arc<dyn CallWatch>>,
}

/// Calls in flight in a server's spans.
fn open_spans(list: &VecDeque<Span>) -> u32 {
    list.iter().filter(|s| s.end_ns.is_none()).count() as u32
}

impl CallTracker {
    /// A tracker that tells `gate` every change of a server's count.
    pub fn with_gate(gate: Arc<dyn CallGate>) -> CallTracker {
        CallTracker {
            spans: Mutex::default(),
            gate: Some(gate),
            watch: None,
        }
    }

    /// This tracker, telling `watch` each call that opens or closes.
    pub fn watched(mut self, watch: Arc<dyn CallWatch>) -> CallTracker {
        self.watch = Some(watch);
        self
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, VecDeque<Span>>> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tell the gate `cgroup`'s count if it moved from `before`. Called
    /// with the spans locked so two changes cannot reach it out of order.
    fn tell(&self, cgroup: u64, before: u32, now: u32) -> Result<(), GateError> {
        match &self.gate {
            Some(gate) if before != now => gate.set(cgroup, now),
            _ => Ok(()),
        }
    }

    /// Tell the watch that the call `started` (if any) and then the calls
    /// `ended` did, so a tool's count does not drop to 0 between a call and
    /// the call that reuses its id; the first error is returned.
    fn tell_watch(
        &self,
        cgroup: u64,
        started: Option<(&Value, &str)>,
        ended: &[Span],
    ) -> Result<(), GateError> {
        let Some(watch) = &self.watch else {
            return Ok(());
        };
        let mut result = started.map_or(Ok(()), |(id, tool)| watch.started(cgroup, id, tool));
        for span in ended {
            let told = watch.ended(cgroup, &span.id, &span.tool);
            result = result.and(told);
        }
        result
    }

    fn start(&self, cgroup: u64, id: &Value, tool: &str) -> Result<(), GateError> {
        let mut spans = self.lock();
        let list = spans.entry(cgroup).or_default();
        let before = open_spans(list);
        let now = boot_ns();
        let mut ended = Vec::new();
        // A reused id ends the call it named before: the server sees only
        // the new one.
        for span in list
            .iter_mut()
            .filter(|s| s.end_ns.is_none() && &s.id == id)
        {
            span.end_ns = Some(now);
            ended.push(span.clone());
        }
        list.push_back(Span {
            id: id.clone(),
            tool: tool.to_owned(),
            start_ns: now,
            end_ns: None,
        });
        while list.iter().filter(|s| s.end_ns.is_some()).count() > MAX_ENDED_SPANS {
            match list.iter().position(|s| s.end_ns.is_some()) {
                Some(i) => {
                    list.remove(i);
                }
                None => break,
            }
        }
        // Calls the server never answers (or ids a client reuses) would
        // otherwise stay open for ever.
        while list.len() > MAX_SPANS {
            ended.extend(list.pop_front().filter(|s| s.end_ns.is_none()));
        }
        let after = open_spans(list);
        let watched = self.tell_watch(cgroup, Some((id, tool)), &ended);
        self.tell(cgroup, before, after).and(watched)
    }

    fn end(&self, cgroup: u64, id: &Value) -> Result<(), GateError> {
        let mut spans = self.lock();
        let Some(list) = spans.get_mut(&cgroup) else {
            return Ok(());
        };
        let before = open_spans(list);
        let mut ended = None;
        if let Some(span) = list
            .iter_mut()
            .rev()
            .find(|s| s.end_ns.is_none() && &s.id == id)
        {
            span.end_ns = Some(boot_ns());
            ended = Some(span.clone());
        }
        let after = open_spans(list);
        let watched = self.tell_watch(cgroup, None, ended.as_slice());
        self.tell(cgroup, before, after).and(watched)
    }

    /// The calls of `cgroup` in flight at kernel time `ts_ns`, as (id, tool).
    pub fn at(&self, cgroup: u64, ts_ns: u64) -> Vec<(Value, String)> {
        self.during(cgroup, ts_ns, ts_ns)
    }

    /// The calls of `cgroup` in flight at any time from `from_ns` to
    /// `to_ns`: for records whose time is known only that closely.
    pub fn during(&self, cgroup: u64, from_ns: u64, to_ns: u64) -> Vec<(Value, String)> {
        self.lock()
            .get(&cgroup)
            .map(|list| {
                list.iter()
                    .filter(|s| s.start_ns <= to_ns && s.end_ns.is_none_or(|e| from_ns <= e))
                    .map(|s| (s.id.clone(), s.tool.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many tool calls `cgroup`'s server has in flight now.
    pub fn in_flight(&self, cgroup: u64) -> u32 {
        self.lock().get(&cgroup).map_or(0, open_spans)
    }

    /// The server is gone: drop its spans, and tell the gate it has no
    /// call in flight (whatever was never answered).
    pub fn forget(&self, cgroup: u64) -> Result<(), GateError> {
        let mut spans = self.lock();
        spans.remove(&cgroup);
        if let Some(watch) = &self.watch {
            watch.forgotten(cgroup);
        }
        // Told even when nothing was open: a count the gate kept from a
        // write that failed must not outlive the server.
        match &self.gate {
            Some(gate) => gate.set(cgroup, 0),
            None => Ok(()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Initialize,
    ToolsList,
    ToolsCall,
}

struct Pending {
    method: Method,
    id: Value,
    tool: Option<String>,
    /// Redacted summary of the call's arguments, or initialize's params.
    detail: Value,
    started: Instant,
    started_at: SystemTime,
}

/// Tool pinning state for one session.
struct PinState {
    store: Option<PinStore>,
    baseline: Option<Pins>,
    /// Every tool seen this session, name → hash.
    seen: BTreeMap<String, String>,
    saved: bool,
    reported: HashSet<String>,
}

#[derive(Default)]
struct Inner {
    pending: HashMap<String, Pending>,
    pending_order: VecDeque<String>,
    /// Tools changed since their pin, under `on_tool_change = "block"`.
    blocked: HashSet<String>,
    non_json: [u64; 2],
    /// Non-JSON lines withheld because they might be a message.
    withheld: [u64; 2],
    messages: [u64; 2],
    denied: u64,
    server_requests: u64,
    requests_refused: u64,
    forgotten: u64,
    redactions: Counts,
}

/// The tap for one session (one server launch).
pub struct Tap {
    policy_name: String,
    tools: Tools,
    requests: Mcp,
    redactor: Arc<Redactor>,
    calls: Arc<CallTracker>,
    cgroup: u64,
    pins: Mutex<PinState>,
    inner: Mutex<Inner>,
    sink: Box<dyn Fn(Event) + Send + Sync>,
}

const CLIENT: usize = 0;
const SERVER: usize = 1;

fn id_key(id: &Value) -> String {
    id.to_string()
}

/// Type and length of an argument value, for records that must not carry
/// the value itself.
fn shape(v: &Value) -> Value {
    let (ty, len) = match v {
        Value::Null => ("null", 0),
        Value::Bool(_) => ("boolean", 1),
        Value::Number(n) => ("number", n.to_string().len()),
        Value::String(s) => ("string", s.chars().count()),
        Value::Array(a) => ("array", a.len()),
        Value::Object(o) => ("object", o.len()),
    };
    json!({ "type": ty, "len": len })
}

/// What the tap made of one server message.
#[derive(Default)]
struct Seen {
    changed: bool,
    /// The call a response answers.
    call: Option<(Value, String)>,
    /// The daemon's error reply to a request it refused.
    refused: Option<Vec<u8>>,
}

/// What a server request asked for, without the text it carries: each
/// parameter's type and length, the few that say what was asked
/// ([`CLEAR_PARAMS`]) in clear, and an elicitation form's field names.
fn summarize_request(params: Option<&Value>) -> Value {
    let Some(Value::Object(params)) = params else {
        return params.map(shape).unwrap_or(Value::Null);
    };
    let clip = |v: &Value| match v {
        Value::String(s) if s.chars().count() > MAX_PARAM_CHARS => {
            Value::String(s.chars().take(MAX_PARAM_CHARS).chain(['…']).collect())
        }
        other => other.clone(),
    };
    let mut out: serde_json::Map<String, Value> = params
        .iter()
        .map(|(k, v)| {
            let scalar = !v.is_object() && !v.is_array();
            let shown = if scalar && CLEAR_PARAMS.contains(&k.as_str()) {
                clip(v)
            } else {
                shape(v)
            };
            (k.clone(), shown)
        })
        .collect();
    if let Some(Value::Object(fields)) = params
        .get("requestedSchema")
        .and_then(|s| s.get("properties"))
    {
        let names: Vec<Value> = fields
            .keys()
            .take(MAX_FORM_FIELDS)
            .map(|k| clip(&Value::String(k.clone())))
            .collect();
        out.insert("fields".into(), Value::Array(names));
    }
    Value::Object(out)
}

impl Tap {
    pub fn new(
        policy_name: &str,
        tools: Tools,
        redactor: Arc<Redactor>,
        calls: Arc<CallTracker>,
        cgroup: u64,
        pin_store: Option<PinStore>,
        sink: Box<dyn Fn(Event) + Send + Sync>,
    ) -> Tap {
        let baseline = match pin_store.as_ref().map(PinStore::load).transpose() {
            Ok(b) => b.flatten(),
            Err(error) => {
                warn!(%error, "tool pins unreadable; this session compares against nothing");
                sink(Event {
                    ts: SystemTime::now(),
                    body: crate::audit::Body::Mcp {
                        event: "pin_error".into(),
                        detail: json!({ "error": error.to_string() }),
                    },
                    tool: None,
                    call_id: None,
                });
                None
            }
        };
        Tap {
            policy_name: policy_name.to_owned(),
            tools,
            requests: Mcp::default(),
            redactor,
            calls,
            cgroup,
            pins: Mutex::new(PinState {
                store: pin_store,
                baseline,
                seen: BTreeMap::new(),
                saved: false,
                reported: HashSet::new(),
            }),
            inner: Mutex::new(Inner::default()),
            sink,
        }
    }

    /// The policy's `[mcp]` (a new tap refuses sampling and elicitation).
    pub fn with_requests(mut self, requests: Mcp) -> Tap {
        self.requests = requests;
        self
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, event: &str, detail: Value, tool: Option<&str>, call_id: Option<&Value>) {
        self.emit_at(SystemTime::now(), event, detail, tool, call_id);
    }

    fn emit_at(
        &self,
        ts: SystemTime,
        event: &str,
        detail: Value,
        tool: Option<&str>,
        call_id: Option<&Value>,
    ) {
        (self.sink)(Event {
            ts,
            body: crate::audit::Body::Mcp {
                event: event.into(),
                detail,
            },
            tool: tool.map(str::to_owned),
            call_id: call_id.cloned(),
        });
    }

    /// A call gate that could not take a new count: the server's file
    /// audit may now miss (or over-record) activity of this call, which
    /// the log must say.
    fn gate_failed(&self, result: Result<(), GateError>, tool: Option<&str>, id: Option<&Value>) {
        if let Err(error) = result {
            warn!(cgroup = self.cgroup, %error, "cannot tell the kernel a tool call's state");
            self.emit(
                "call_gate_error",
                json!({ "error": error.to_string() }),
                tool,
                id,
            );
        }
    }

    /// Counts a line that is not JSON; returns whether it is withheld.
    fn non_json(&self, dir: usize, line: &[u8]) -> bool {
        let withheld = line.contains(&b'{');
        let first = {
            let mut inner = self.inner();
            inner.non_json[dir] += 1;
            inner.withheld[dir] += u64::from(withheld);
            (inner.non_json[dir] == 1) || (withheld && inner.withheld[dir] == 1)
        };
        // The first one (and the first withheld one) is recorded at once;
        // the totals come with the session record, so a chatty server
        // cannot flood the log.
        if first {
            let direction = if dir == CLIENT { "client" } else { "server" };
            self.emit(
                "non_json",
                json!({ "direction": direction, "bytes": line.len(), "first": true, "dropped": withheld }),
                None,
                None,
            );
        }
        withheld
    }

    /// A line that exceeded the relay's limit and was dropped.
    pub fn oversize(&self, from_server: bool, bytes: usize) {
        self.dropped_oversize(from_server, bytes, "length");
    }

    /// A line dropped because the tap could not inspect it within its
    /// memory bound: too long (`length`) or too many values (`values`).
    fn dropped_oversize(&self, from_server: bool, bytes: usize, reason: &str) {
        let direction = if from_server { "server" } else { "client" };
        let limit = match reason {
            "values" => parse::MAX_VALUES,
            _ => MAX_LINE,
        };
        self.emit(
            "oversize",
            json!({ "direction": direction, "bytes": bytes, "dropped": true, "reason": reason, "limit": limit }),
            None,
            None,
        );
    }

    /// The client's answer to a line of its own the tap did not pass on.
    fn parse_error_reply(why: &str) -> Vec<Output> {
        let reply = json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {
                "code": -32700,
                "message": format!("mcpguard: parse error: {why}, so it was not passed to the server"),
            },
        });
        vec![Output::Client(
            serde_json::to_vec(&reply).expect("JSON serialises"),
        )]
    }

    /// One complete line from the client (without its newline).
    pub fn client_line(&self, line: &[u8]) -> Vec<Output> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return vec![Output::Server(line.to_vec())];
        }
        let msg = match parse::line(line) {
            Ok(msg) => msg,
            Err(parse::ParseError::TooManyValues) => {
                self.dropped_oversize(false, line.len(), "values");
                return Self::parse_error_reply(
                    "the line holds more values than the tap inspects in a line that long",
                );
            }
            Err(parse::ParseError::Json) => {
                if self.non_json(CLIENT, line) {
                    return Self::parse_error_reply("the line is not JSON the tap can check");
                }
                return vec![Output::Server(line.to_vec())];
            }
        };
        match msg {
            Value::Array(items) => {
                let mut replies = Vec::new();
                let mut keep = Vec::new();
                // Counted apart from the replies: a refused notification
                // gets no reply but must still leave the batch.
                let mut refused = false;
                for item in items {
                    match self.client_msg(&item) {
                        None => keep.push(item),
                        Some(reply) => {
                            refused = true;
                            replies.extend(reply.map(Output::Client));
                        }
                    }
                }
                let mut out = Vec::new();
                // Untouched (an empty batch too: the server answers it).
                if !refused {
                    out.push(Output::Server(line.to_vec()));
                } else if !keep.is_empty() {
                    out.push(Output::Server(
                        serde_json::to_vec(&Value::Array(keep)).expect("JSON serialises"),
                    ));
                }
                out.extend(replies);
                out
            }
            single => match self.client_msg(&single) {
                None => vec![Output::Server(line.to_vec())],
                Some(reply) => reply.map(Output::Client).into_iter().collect(),
            },
        }
    }

    /// Looks at one client message. `None`: forward it. `Some(reply)`: it
    /// is refused; `reply` is the error to send back (none for a
    /// notification).
    fn client_msg(&self, msg: &Value) -> Option<Option<Vec<u8>>> {
        self.inner().messages[CLIENT] += 1;
        let method = msg.get("method").and_then(Value::as_str)?;
        let id = msg.get("id").filter(|v| !v.is_null());
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        let method = match method {
            "initialize" => Method::Initialize,
            "tools/list" => Method::ToolsList,
            "tools/call" => Method::ToolsCall,
            "notifications/cancelled" => {
                if let Some(req) = params.get("requestId") {
                    let gated = self.calls.end(self.cgroup, req);
                    self.gate_failed(gated, None, Some(req));
                }
                return None;
            }
            _ => return None,
        };
        let mut tool = None;
        let mut detail = Value::Null;
        match method {
            Method::ToolsCall => {
                // A call without a string name is no call the policy can
                // judge; refused like a denied one.
                let name = params.get("name").and_then(Value::as_str);
                let blocked = name.is_some_and(|n| self.inner().blocked.contains(n));
                let name = match name {
                    Some(n) if !blocked && tools::allowed(&self.tools, n) => n,
                    other => return Some(self.refuse(id, other.unwrap_or(""), blocked)),
                };
                detail = self.summarize_args(params.get("arguments"));
                tool = Some(name.to_owned());
            }
            Method::Initialize => {
                detail = json!({
                    "client": params.get("clientInfo"),
                    "requested_protocol": params.get("protocolVersion"),
                });
            }
            Method::ToolsList => {}
        }
        let id = id?;
        if let (Method::ToolsCall, Some(name)) = (method, &tool) {
            let gated = self.calls.start(self.cgroup, id, name);
            self.gate_failed(gated, Some(name), Some(id));
        }
        let key = id_key(id);
        let mut inner = self.inner();
        if inner.pending.len() >= MAX_PENDING && !inner.pending.contains_key(&key) {
            if let Some(old) = inner.pending_order.pop_front() {
                inner.pending.remove(&old);
                inner.forgotten += 1;
            }
        }
        let pending = Pending {
            method,
            id: id.clone(),
            tool,
            detail,
            started: Instant::now(),
            started_at: SystemTime::now(),
        };
        // A reused id replaces the request it names (as the server sees
        // it); the order keeps one entry per id, so it stays bounded.
        if inner.pending.insert(key.clone(), pending).is_some() {
            inner.forgotten += 1;
        } else {
            inner.pending_order.push_back(key);
        }
        None
    }

    fn refuse(&self, id: Option<&Value>, tool: &str, blocked: bool) -> Option<Vec<u8>> {
        let reason = if blocked {
            "changed since it was pinned (on_tool_change = \"block\")"
        } else {
            "not allowed by the policy's [tools]"
        };
        self.inner().denied += 1;
        self.emit(
            "tool_denied",
            json!({ "reason": if blocked { "tool_changed" } else { "policy" } }),
            Some(tool),
            id,
        );
        let id = id?;
        let reply = json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": -32602,
                "message": format!(
                    "mcpguard: tool {tool:?} is {reason} of policy {:?}",
                    self.policy_name
                ),
            },
        });
        Some(serde_json::to_vec(&reply).expect("JSON serialises"))
    }

    fn summarize_args(&self, args: Option<&Value>) -> Value {
        let Some(Value::Object(args)) = args else {
            return args.map(shape).unwrap_or(Value::Null);
        };
        let mut counts = Counts::default();
        let out: serde_json::Map<String, Value> = args
            .iter()
            .map(|(k, v)| {
                let logged = self.tools.log_args.iter().any(|g| tools::glob_match(g, k));
                let shown = if logged {
                    let mut v = v.clone();
                    self.redactor.json(&mut v, &mut counts);
                    v
                } else {
                    shape(v)
                };
                (k.clone(), shown)
            })
            .collect();
        Value::Object(out)
    }

    /// One complete line from the server (without its newline); returns
    /// what the client gets (nothing for a withheld line) and the daemon's
    /// answers to requests it refused on the client's behalf.
    pub fn server_line(&self, line: &[u8]) -> Vec<Output> {
        let mut counts = Counts::default();
        let parsed = match (!line.iter().all(u8::is_ascii_whitespace)).then(|| parse::line(line)) {
            Some(Err(parse::ParseError::TooManyValues)) => {
                self.dropped_oversize(true, line.len(), "values");
                return Vec::new();
            }
            parsed => parsed.and_then(Result::ok),
        };
        let Some(mut msg) = parsed else {
            if !line.iter().all(u8::is_ascii_whitespace) && self.non_json(SERVER, line) {
                return Vec::new();
            }
            let out = self.redactor.bytes(line, &mut counts).into_owned();
            self.note_redactions("stdout", &counts, None);
            return vec![Output::Client(out)];
        };
        // Redact first: nothing below may record a secret.
        let mut changed = self.redactor.json(&mut msg, &mut counts);
        let mut call = None;
        let mut replies = Vec::new();
        let forward = match &mut msg {
            Value::Array(items) => {
                let mut kept = Vec::with_capacity(items.len());
                let was_empty = items.is_empty();
                for mut item in std::mem::take(items) {
                    let seen = self.server_msg(&mut item, &counts);
                    changed |= seen.changed;
                    call = call.or(seen.call);
                    match seen.refused {
                        Some(reply) => replies.push(Output::Server(reply)),
                        None => kept.push(item),
                    }
                }
                changed |= !replies.is_empty();
                *items = kept;
                // A batch left empty by refusals is no message at all.
                was_empty || !items.is_empty()
            }
            single => {
                let seen = self.server_msg(single, &counts);
                changed |= seen.changed;
                call = seen.call;
                replies.extend(seen.refused.map(Output::Server));
                replies.is_empty()
            }
        };
        self.note_redactions("stdout", &counts, call.as_ref());
        let mut out = Vec::with_capacity(replies.len() + 1);
        if forward {
            out.push(Output::Client(if changed {
                serde_json::to_vec(&msg).expect("JSON serialises")
            } else {
                line.to_vec()
            }));
        }
        out.extend(replies);
        out
    }

    /// One line (or an over-long chunk) of the server's stderr.
    pub fn stderr_line(&self, line: &[u8]) -> Vec<u8> {
        let mut counts = Counts::default();
        let out = self.redactor.bytes(line, &mut counts).into_owned();
        self.note_redactions("stderr", &counts, None);
        out
    }

    fn note_redactions(&self, stream: &str, counts: &Counts, call: Option<&(Value, String)>) {
        if counts.is_empty() {
            return;
        }
        self.inner().redactions.add(counts);
        let mut detail = counts.to_json();
        detail["stream"] = stream.into();
        self.emit(
            "redacted",
            detail,
            call.map(|(_, t)| t.as_str()),
            call.map(|(id, _)| id),
        );
    }

    /// Looks at one (already redacted) server message.
    fn server_msg(&self, msg: &mut Value, counts: &Counts) -> Seen {
        self.inner().messages[SERVER] += 1;
        if msg.get("method").is_some() {
            return self.server_request(msg);
        }
        let Some(id) = msg.get("id").filter(|v| !v.is_null()) else {
            return Seen::default();
        };
        let pending = {
            let mut inner = self.inner();
            let p = inner.pending.remove(&id_key(id));
            if p.is_some() {
                let key = id_key(id);
                inner.pending_order.retain(|k| *k != key);
            }
            p
        };
        let Some(p) = pending else {
            return Seen::default();
        };
        let (changed, call) = self.response(msg, p, counts);
        Seen {
            changed,
            call,
            refused: None,
        }
    }

    /// A request (or notification) from the server to the client. Requests
    /// are recorded with a summary of their parameters and inspected like
    /// tool results; sampling and elicitation the policy refuses are
    /// answered here. Notifications (progress, log messages) pass as they
    /// are.
    fn server_request(&self, msg: &mut Value) -> Seen {
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        let (Some(id), false) = (msg.get("id").cloned(), method.starts_with("notifications/"))
        else {
            return Seen::default();
        };
        let method = method.to_owned();
        let bytes = parse::json_len(msg);
        let mut changed = false;
        let findings = match msg.get_mut("params") {
            Some(params) => {
                let f = inspect::json(params, self.tools.strip_invisible);
                changed = self.tools.strip_invisible && f.invisible > 0;
                f
            }
            None => inspect::Findings::default(),
        };
        let verdict = self.requests.judge(&method);
        let refused = matches!(verdict, Some((Permit::Deny, _)));
        {
            let mut inner = self.inner();
            inner.server_requests += 1;
            inner.requests_refused += u64::from(refused);
        }
        // Sampling and elicitation usually come from inside a tool call:
        // with exactly one in flight, the request is that call's.
        let during = match self.calls.at(self.cgroup, boot_ns()).as_slice() {
            [(call_id, tool)] => Some((call_id.clone(), tool.clone())),
            _ => None,
        };
        let tool = during.as_ref().map(|(_, t)| t.as_str());
        let mut detail = json!({
            "method": method,
            "id": id,
            "bytes": bytes,
            "params": summarize_request(msg.get("params")),
        });
        if !findings.is_empty() {
            detail["suspicious"] = true.into();
            self.suspicious(&method, tool, &findings, during.as_ref().map(|(c, _)| c));
        }
        let Some((Permit::Deny, key)) = verdict else {
            self.emit(
                "server_request",
                detail,
                tool,
                during.as_ref().map(|(c, _)| c),
            );
            return Seen {
                changed,
                ..Seen::default()
            };
        };
        detail["policy_key"] = format!("mcp.{key}").into();
        self.emit(
            "server_request_denied",
            detail,
            tool,
            during.as_ref().map(|(c, _)| c),
        );
        let reply = json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": -32601,
                "message": format!(
                    "mcpguard: {method} is refused by policy {:?} ([mcp] {key} = \"deny\"); the client never saw it",
                    self.policy_name
                ),
            },
        });
        Seen {
            changed,
            call: None,
            refused: Some(serde_json::to_vec(&reply).expect("JSON serialises")),
        }
    }

    /// A response to a request the client sent; returns whether it was
    /// changed and, for a call's response, the call.
    fn response(
        &self,
        msg: &mut Value,
        p: Pending,
        counts: &Counts,
    ) -> (bool, Option<(Value, String)>) {
        match p.method {
            Method::Initialize => {
                let result = msg.get("result");
                let mut detail = p.detail;
                detail["server"] = result
                    .and_then(|r| r.get("serverInfo"))
                    .cloned()
                    .unwrap_or(Value::Null);
                detail["protocol"] = result
                    .and_then(|r| r.get("protocolVersion"))
                    .cloned()
                    .unwrap_or(Value::Null);
                self.emit_at(p.started_at, "initialize", detail, None, None);
                (false, None)
            }
            Method::ToolsList => (self.tools_list(msg), None),
            Method::ToolsCall => {
                let gated = self.calls.end(self.cgroup, &p.id);
                self.gate_failed(gated, p.tool.as_deref(), Some(&p.id));
                let tool = p.tool.unwrap_or_default();
                let mut changed = false;
                let mut detail = json!({
                    "arguments": p.detail,
                    "duration_ms": p.started.elapsed().as_secs_f64() * 1000.0,
                });
                if let Some(result) = msg.get_mut("result") {
                    let findings = inspect::json(result, self.tools.strip_invisible);
                    changed |= self.tools.strip_invisible && findings.invisible > 0;
                    detail["result_bytes"] = parse::json_len(result).into();
                    detail["is_error"] = result
                        .get("isError")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                        .into();
                    let excerpt = self
                        .tools
                        .excerpt
                        .iter()
                        .any(|g| tools::glob_match(g, &tool));
                    detail["result"] = result::summarize(result, excerpt);
                    if !findings.is_empty() {
                        self.suspicious("tool_result", Some(&tool), &findings, Some(&p.id));
                    }
                }
                if let Some(error) = msg.get("error") {
                    detail["error"] =
                        json!({ "code": error.get("code"), "message": error.get("message") });
                }
                if !counts.is_empty() {
                    detail["redacted"] = counts.total().into();
                }
                self.emit_at(p.started_at, "tools_call", detail, Some(&tool), Some(&p.id));
                (changed, Some((p.id, tool)))
            }
        }
    }

    fn suspicious(
        &self,
        place: &str,
        tool: Option<&str>,
        findings: &inspect::Findings,
        call_id: Option<&Value>,
    ) {
        self.emit(
            "suspicious",
            json!({
                "where": place,
                "markers": findings.markers,
                "invisible_chars": findings.invisible,
                "stripped": self.tools.strip_invisible && findings.invisible > 0,
            }),
            tool,
            call_id,
        );
    }

    /// Filter a `tools/list` result and check it against the pins; returns
    /// whether the message changed.
    fn tools_list(&self, msg: &mut Value) -> bool {
        let Some(result) = msg.get_mut("result") else {
            return false;
        };
        let complete = result.get("nextCursor").is_none_or(Value::is_null);
        let Some(Value::Array(list)) = result.get_mut("tools") else {
            return false;
        };
        let mut changed = false;
        let mut page = BTreeMap::new();
        for tool in list.iter_mut() {
            let name = tool
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let findings = inspect::json(tool, self.tools.strip_invisible);
            changed |= self.tools.strip_invisible && findings.invisible > 0;
            if !findings.is_empty() {
                self.suspicious("tool_description", Some(&name), &findings, None);
            }
            page.insert(name, tools::tool_hash(tool));
        }
        self.check_pins(&page, complete);
        let blocked = self.inner().blocked.clone();
        let before = list.len();
        let mut hidden = Vec::new();
        list.retain(|t| {
            let name = t.get("name").and_then(Value::as_str).unwrap_or("");
            let keep = tools::allowed(&self.tools, name) && !blocked.contains(name);
            if !keep {
                hidden.push(name.to_owned());
            }
            keep
        });
        changed |= list.len() != before;
        self.emit(
            "tools_list",
            json!({ "count": before, "shown": list.len(), "hidden": hidden, "hashes": page }),
            None,
            None,
        );
        changed
    }

    fn check_pins(&self, page: &BTreeMap<String, String>, complete: bool) {
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        for (name, hash) in page {
            if pins.seen.len() < MAX_TOOLS || pins.seen.contains_key(name) {
                pins.seen.insert(name.clone(), hash.clone());
            }
        }
        let Some(baseline) = &pins.baseline else {
            if complete && !pins.saved {
                pins.saved = true;
                let snapshot = Pins {
                    tools: pins.seen.clone(),
                };
                if let Some(store) = &pins.store {
                    match store.save(&snapshot) {
                        Ok(()) => self.emit(
                            "tools_pinned",
                            json!({ "count": snapshot.tools.len(), "path": store.path() }),
                            None,
                            None,
                        ),
                        Err(error) => self.emit(
                            "pin_error",
                            json!({ "error": error.to_string() }),
                            None,
                            None,
                        ),
                    }
                }
            }
            return;
        };
        let seen = if complete {
            pins.seen.clone()
        } else {
            page.clone()
        };
        let changes = tools::diff(baseline, &seen, complete);
        let block = self.tools.on_tool_change == ToolChange::Block;
        for (name, change) in changes {
            if !pins.reported.insert(name.clone()) {
                continue;
            }
            let (old_hash, new_hash) = match &change {
                Change::Added { hash } => (None, Some(hash.clone())),
                Change::Changed { old, new } => (Some(old.clone()), Some(new.clone())),
                Change::Removed { old } => (Some(old.clone()), None),
            };
            let blocks = block && !matches!(change, Change::Removed { .. });
            if blocks {
                self.inner().blocked.insert(name.clone());
            }
            (self.sink)(Event {
                ts: SystemTime::now(),
                body: crate::audit::Body::ToolChanged {
                    change: change.name().into(),
                    action: if blocks { "block" } else { "warn" }.into(),
                    old_hash,
                    new_hash,
                },
                tool: Some(name),
                call_id: None,
            });
        }
    }

    /// The session is over: record calls that never got an answer and the
    /// session's totals.
    pub fn finish(&self) {
        let (pending, totals) = {
            let mut inner = self.inner();
            let pending: Vec<Pending> = inner.pending.drain().map(|(_, p)| p).collect();
            let totals = json!({
                "messages_from_client": inner.messages[CLIENT],
                "messages_from_server": inner.messages[SERVER],
                "non_json_from_client": inner.non_json[CLIENT],
                "non_json_from_server": inner.non_json[SERVER],
                "withheld_from_client": inner.withheld[CLIENT],
                "withheld_from_server": inner.withheld[SERVER],
                "tools_denied": inner.denied,
                "server_requests": inner.server_requests,
                "server_requests_refused": inner.requests_refused,
                "redactions": inner.redactions.to_json(),
                "untracked_requests": inner.forgotten,
            });
            (pending, totals)
        };
        for p in pending
            .into_iter()
            .filter(|p| p.method == Method::ToolsCall)
        {
            let gated = self.calls.end(self.cgroup, &p.id);
            self.gate_failed(gated, p.tool.as_deref(), Some(&p.id));
            self.emit_at(
                p.started_at,
                "tools_call",
                json!({ "arguments": p.detail, "unanswered": true }),
                p.tool.as_deref(),
                Some(&p.id),
            );
        }
        self.emit("session", totals, None, None);
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
