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

pub mod approve;
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
    approve::{By, Decision, Held, Taint, Why},
    redact::{Counts, Redactor},
    tools::{Change, PinStore, Pins},
};
use crate::{
    audit::decode::boot_ns,
    policy::{
        mcp::{Mcp, Permit},
        OnTaint, ToolChange, Tools,
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
    /// A call that waits for a person: the daemon holds it and hands the
    /// decision back to [`Tap::decided`].
    Hold(Box<Held>),
    /// The client decided a held call (it answered the daemon's
    /// elicitation, or cancelled the call); the message is consumed.
    Decide {
        approval: u64,
        decision: Decision,
    },
}

/// What the tap makes of one client message.
enum Verdict {
    Forward,
    /// Refused; the error to send back (none for a notification).
    Refuse(Option<Vec<u8>>),
    Hold(Held),
    Decide(u64, Decision),
}

/// Whether a call may go to the server now.
enum Gate {
    Pass,
    Hold(Why),
    Tainted,
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
    /// The client declared the `elicitation` capability at `initialize`.
    client_elicits: bool,
    client_name: Option<String>,
    /// Held calls by JSON-RPC id → their approval.
    held: HashMap<String, u64>,
    /// Approvals the client was asked about through elicitation.
    elicited: HashSet<u64>,
    /// Tools the server's `tools/list` marks `readOnlyHint`.
    read_only: HashSet<String>,
    taint: Option<Taint>,
    approvals: [u64; 2],
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

/// JSON-RPC error code of a call a person refused, or that timed out.
const APPROVAL_ERROR: i64 = -32001;

/// The daemon's error reply to request `id`.
fn error_reply(id: &Value, code: i64, message: String) -> Option<Vec<u8>> {
    let reply = json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": message },
    });
    Some(serde_json::to_vec(&reply).expect("JSON serialises"))
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
            Value::Array(items) => self.client_batch(line, items),
            single => match self.client_msg(&single, Some(line)) {
                Verdict::Forward => vec![Output::Server(line.to_vec())],
                Verdict::Refuse(reply) => reply.map(Output::Client).into_iter().collect(),
                Verdict::Hold(held) => vec![Output::Hold(Box::new(held))],
                Verdict::Decide(approval, decision) => vec![Output::Decide { approval, decision }],
            },
        }
    }

    /// A batch: what passes goes on as a batch, the rest is answered here.
    fn client_batch(&self, line: &[u8], items: Vec<Value>) -> Vec<Output> {
        let mut replies = Vec::new();
        let mut keep = Vec::new();
        // Counted apart from the replies: a refused notification gets no
        // reply but must still leave the batch.
        let mut refused = false;
        for item in items {
            match self.client_msg(&item, None) {
                Verdict::Forward => keep.push(item),
                Verdict::Refuse(reply) => {
                    refused = true;
                    replies.extend(reply.map(Output::Client));
                }
                Verdict::Decide(approval, decision) => {
                    refused = true;
                    replies.push(Output::Decide { approval, decision });
                }
                // Never returned for a batch item (refused instead).
                Verdict::Hold(_) => refused = true,
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

    /// Looks at one client message; `line` is its own line, `None` for an
    /// item of a batch (which cannot be held: it cannot leave its batch).
    /// cannot be held).
    fn client_msg(&self, msg: &Value, line: Option<&[u8]>) -> Verdict {
        self.inner().messages[CLIENT] += 1;
        let Some(method) = msg.get("method").and_then(Value::as_str) else {
            return self.client_answer(msg);
        };
        let id = msg.get("id").filter(|v| !v.is_null());
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        let method = match method {
            "initialize" => Method::Initialize,
            "tools/list" => Method::ToolsList,
            "tools/call" => Method::ToolsCall,
            "notifications/cancelled" => return self.cancelled(params.get("requestId")),
            _ => return Verdict::Forward,
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
                    other => return Verdict::Refuse(self.refuse(id, other.unwrap_or(""), blocked)),
                };
                detail = self.summarize_args(params.get("arguments"));
                match (self.gate(name), id) {
                    (Gate::Pass, _) => {}
                    (Gate::Tainted, _) => return Verdict::Refuse(self.refuse_tainted(id, name)),
                    // Approved, the server gets the client's own bytes.
                    (Gate::Hold(why), Some(id)) if let Some(line) = line => {
                        return Verdict::Hold(Held {
                            id: id.clone(),
                            tool: name.to_owned(),
                            args: detail,
                            why,
                            message: line.to_vec(),
                        })
                    }
                    // A call without an id gets no answer to wait for; one
                    // in a batch cannot leave it: neither can be held.
                    (Gate::Hold(why), id) => {
                        let in_batch = line.is_none();
                        return Verdict::Refuse(self.refuse_unholdable(id, name, why, in_batch));
                    }
                }
                tool = Some(name.to_owned());
            }
            Method::Initialize => {
                let mut inner = self.inner();
                inner.client_elicits = params
                    .get("capabilities")
                    .and_then(|c| c.get("elicitation"))
                    .is_some_and(Value::is_object);
                inner.client_name = params
                    .get("clientInfo")
                    .and_then(|c| c.get("name"))
                    .and_then(Value::as_str)
                    .map(|n| n.chars().take(64).collect());
                detail = json!({
                    "client": params.get("clientInfo"),
                    "requested_protocol": params.get("protocolVersion"),
                    "elicitation": inner.client_elicits,
                });
            }
            Method::ToolsList => {}
        }
        if let Some(id) = id {
            self.track(method, id, tool, detail);
        }
        Verdict::Forward
    }

    /// Remembers a request the server will answer (a call's span opens).
    fn track(&self, method: Method, id: &Value, tool: Option<String>, detail: Value) {
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
    }

    /// A client message without a method: an answer to a server request,
    /// or to one of the daemon's elicitations (consumed here: the server
    /// never asked it).
    fn client_answer(&self, msg: &Value) -> Verdict {
        let Some(id) = msg.get("id") else {
            return Verdict::Forward;
        };
        if !approve::is_daemon_id(id) {
            return Verdict::Forward;
        }
        let mut inner = self.inner();
        match approve::approval_of(id).filter(|a| inner.elicited.remove(a)) {
            Some(approval) => {
                let client = inner.client_name.clone();
                Verdict::Decide(approval, approve::read_answer(msg, client))
            }
            // Late (decided another way already) or never asked.
            None => Verdict::Refuse(None),
        }
    }

    /// `notifications/cancelled`: a held call ends here; another goes on
    /// to the server, and its span ends.
    fn cancelled(&self, request: Option<&Value>) -> Verdict {
        let Some(req) = request else {
            return Verdict::Forward;
        };
        if let Some(&approval) = self.inner().held.get(&id_key(req)) {
            return Verdict::Decide(approval, Decision::deny(By::ClientCancelled));
        }
        let gated = self.calls.end(self.cgroup, req);
        self.gate_failed(gated, None, Some(req));
        Verdict::Forward
    }

    /// Whether a call to `tool` needs a person first.
    fn gate(&self, tool: &str) -> Gate {
        if self.tools.ask.iter().any(|g| tools::glob_match(g, tool)) {
            return Gate::Hold(Why::Ask);
        }
        let inner = self.inner();
        if inner.taint.is_none() || !self.acts_outside(tool, &inner) {
            return Gate::Pass;
        }
        match self.tools.on_taint {
            OnTaint::Ask => Gate::Hold(Why::Taint),
            OnTaint::Deny => Gate::Tainted,
            OnTaint::Warn => Gate::Pass,
        }
    }

    /// Whether `tool` can act outside: named by `taint_tools`, or (without
    /// that key) not marked read-only by the server.
    fn acts_outside(&self, tool: &str, inner: &Inner) -> bool {
        match &self.tools.taint_tools {
            Some(globs) => globs.iter().any(|g| tools::glob_match(g, tool)),
            None => !inner.read_only.contains(tool),
        }
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
        let message = format!(
            "mcpguard: tool {tool:?} is {reason} of policy {:?}",
            self.policy_name
        );
        error_reply(id?, -32602, message)
    }

    /// A call refused because the session is tainted (`on_taint = "deny"`).
    fn refuse_tainted(&self, id: Option<&Value>, tool: &str) -> Option<Vec<u8>> {
        self.inner().denied += 1;
        self.emit(
            "tool_denied",
            json!({ "reason": "tainted" }),
            Some(tool),
            id,
        );
        let message = format!(
            "mcpguard: tool {tool:?} is refused: {} (policy {:?}, on_taint = \"deny\"); \
             `mcpguard clear` ends the taint",
            Why::Taint.says(),
            self.policy_name
        );
        error_reply(id?, APPROVAL_ERROR, message)
    }

    /// A call that needs a person but cannot be held.
    fn refuse_unholdable(
        &self,
        id: Option<&Value>,
        tool: &str,
        why: Why,
        in_batch: bool,
    ) -> Option<Vec<u8>> {
        self.inner().denied += 1;
        let reason = if in_batch { "batched" } else { "no_id" };
        self.emit(
            "tool_denied",
            json!({ "reason": reason, "needs": why }),
            Some(tool),
            id,
        );
        let message = format!(
            "mcpguard: tool {tool:?} waits for a person's approval ({}), which a call inside a \
             JSON-RPC batch cannot; send it on its own",
            why.says()
        );
        error_reply(id?, APPROVAL_ERROR, message)
    }

    /// Whether the client said it answers elicitation requests.
    pub fn client_elicits(&self) -> bool {
        self.inner().client_elicits
    }

    /// The daemon holds `held` as approval `approval`: recorded, and, when
    /// the client can answer elicitations, the request that asks it.
    pub fn held(
        &self,
        held: &Held,
        approval: u64,
        timeout: std::time::Duration,
    ) -> Option<Vec<u8>> {
        let elicit = {
            let mut inner = self.inner();
            inner.held.insert(id_key(&held.id), approval);
            if inner.client_elicits {
                inner.elicited.insert(approval);
            }
            inner.client_elicits
        };
        self.emit(
            "approval_requested",
            json!({
                "approval": approval,
                "why": held.why,
                "arguments": held.args,
                "timeout_secs": timeout.as_secs(),
                "elicitation": elicit,
            }),
            Some(&held.tool),
            Some(&held.id),
        );
        elicit.then(|| {
            let req = approve::elicit_request(approval, &self.policy_name, held, timeout);
            serde_json::to_vec(&req).expect("JSON serialises")
        })
    }

    /// A held call was decided: recorded; approved, it goes to the server
    /// (its span opens now), refused, the client gets an error saying why.
    pub fn decided(
        &self,
        held: Held,
        approval: u64,
        decision: &Decision,
        waited: std::time::Duration,
    ) -> Vec<Output> {
        let asked_client = {
            let mut inner = self.inner();
            inner.held.remove(&id_key(&held.id));
            inner.approvals[usize::from(!decision.approved)] += 1;
            inner.elicited.remove(&approval)
        };
        self.emit(
            "approval",
            json!({
                "approval": approval,
                "approved": decision.approved,
                "by": decision.by,
                "why": held.why,
                "waited_ms": waited.as_millis() as u64,
            }),
            Some(&held.tool),
            Some(&held.id),
        );
        let mut out = Vec::new();
        // Withdrawn from a client that is still there (at the session's
        // end nobody may be reading).
        if asked_client && decision.by != By::SessionEnded {
            let cancel = approve::elicit_cancel(approval);
            out.push(Output::Client(
                serde_json::to_vec(&cancel).expect("JSON serialises"),
            ));
        }
        if decision.approved {
            self.track(Method::ToolsCall, &held.id, Some(held.tool), held.args);
            out.push(Output::Server(held.message));
        } else if decision.answers_client() {
            let message = decision.refusal(&held.tool, &self.policy_name);
            out.extend(error_reply(&held.id, APPROVAL_ERROR, message).map(Output::Client));
        }
        out
    }

    /// The session's taint, if a result or server request was flagged.
    pub fn taint(&self) -> Option<Taint> {
        self.inner().taint.clone()
    }

    /// A person cleared the taint; returns whether there was one.
    pub fn clear_taint(&self, by: &By) -> bool {
        let Some(was) = self.inner().taint.take() else {
            return false;
        };
        self.emit(
            "taint_cleared",
            json!({ "by": by, "since": was.since }),
            None,
            None,
        );
        true
    }

    /// A flagged result or server request taints the session (once: the
    /// first finding is what a person reads about).
    fn taint_with(&self, source: &str, tool: Option<&str>, findings: &inspect::Findings) {
        let taint = Taint {
            since: crate::audit::format_ts(SystemTime::now()),
            source: source.to_owned(),
            tool: tool.map(str::to_owned),
            markers: findings.markers.iter().map(|m| (*m).to_owned()).collect(),
            invisible_chars: findings.invisible,
        };
        {
            let mut inner = self.inner();
            if inner.taint.is_some() {
                return;
            }
            inner.taint = Some(taint);
        }
        self.emit(
            "tainted",
            json!({ "source": source, "on_taint": self.tools.on_taint }),
            tool,
            None,
        );
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
        if approve::is_daemon_id(&id) {
            return self.refuse_reserved_id(&method, &id);
        }
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

    /// A server request whose id is one the daemon uses for its own
    /// elicitations: refused, so the client's answer to it could never be
    /// taken for an approval.
    fn refuse_reserved_id(&self, method: &str, id: &Value) -> Seen {
        {
            let mut inner = self.inner();
            inner.server_requests += 1;
            inner.requests_refused += 1;
        }
        self.emit(
            "server_request_denied",
            json!({ "method": method, "id": id, "reason": "reserved_id" }),
            None,
            None,
        );
        let message = format!(
            "mcpguard: request ids starting {:?} are the daemon's; the client never saw this one",
            approve::ELICIT_PREFIX
        );
        Seen {
            changed: false,
            call: None,
            refused: error_reply(id, -32600, message),
        }
    }

    /// Records a finding; one in a tool result or a server request (data
    /// the model reads, unlike a description the user installed) taints
    /// the session.
    fn suspicious(
        &self,
        place: &str,
        tool: Option<&str>,
        findings: &inspect::Findings,
        call_id: Option<&Value>,
    ) {
        if place != "tool_description" {
            self.taint_with(place, tool, findings);
        }
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
            self.note_read_only(&name, tool);
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

    /// Remembers whether the server marks `name` read-only (for taint).
    fn note_read_only(&self, name: &str, tool: &Value) {
        let read_only = tool
            .get("annotations")
            .and_then(|a| a.get("readOnlyHint"))
            .and_then(Value::as_bool)
            == Some(true);
        let mut inner = self.inner();
        if !read_only {
            inner.read_only.remove(name);
        } else if inner.read_only.len() < MAX_TOOLS {
            inner.read_only.insert(name.to_owned());
        }
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
                "calls_approved": inner.approvals[0],
                "calls_not_approved": inner.approvals[1],
                "tainted": inner.taint.is_some(),
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
