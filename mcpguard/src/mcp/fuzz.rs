//! Fuzzing the tap: JSON-RPC lines in both directions (single messages,
//! batches, broken and hostile ones), generated and mutated, through one
//! long-lived [`Tap`].
//!
//! Properties, per line: no panic, no stall; nothing reaches the server
//! that calls a denied or blocked tool, or that might be a message the tap
//! could not parse; no secret (raw, base64, hex, or behind JSON escapes)
//! reaches the client; a line with nothing to refuse, redact or filter
//! passes byte for byte; and the tap's memory (pending requests, call
//! spans, remembered tools) stays within its limits.

use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{json, Value};

use super::{
    redact::Redactor, tools, tools::Pins, CallTracker, Event, Output, Tap, MAX_PENDING, MAX_SPANS,
    MAX_TOOLS,
};
use crate::{
    audit::Body,
    fuzz::{self, Corpus, Rng},
    policy::{ToolChange, Tools},
};

const SECRET: &str = "tok-1234567890-abcdef";
const CGROUP: u64 = 42;

const SEEDS: &[&[u8]] = &[
    br#"C{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","clientInfo":{"name":"c","version":"1"}}}"#,
    br#"S{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","serverInfo":{"name":"s","version":"2"}}}"#,
    br#"C{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    br#"S{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","description":"Echo","inputSchema":{"type":"object"}},{"name":"delete_repo","description":"x"}]}}"#,
    br#"C{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"path":"/tmp","n":1}}}"#,
    br#"C{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_repo","arguments":{}}}"#,
    br#"S{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"tok-1234567890-abcdef"}],"isError":false}}"#,
    br#"S{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"\u0074ok-1234567890-abcdef"}]}}"#,
    br#"S{"jsonrpc":"2.0","id":2,"error":{"code":-32000,"message":"boom"}}"#,
    br#"C[{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo"}},{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"exec1"}}]"#,
    br#"C{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}"#,
    br#"S{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#,
    b"Snot json tok-1234567890-abcdef",
    b"Cnot json at all",
    b"S  ",
];

const DICT: &[&[u8]] = &[
    b"\"tools/call\"",
    b"\"tools/list\"",
    b"\"initialize\"",
    b"\"method\":",
    b"\"params\":",
    b"\"name\":",
    b"\"id\":",
    b"\"result\":",
    b"\"tools\":[",
    b"\"delete_repo\"",
    b"\"exec1\"",
    b"\"echo\"",
    b"\\ud800",
    b"\\u0000",
    b"\\u0074",
    b"NaN",
    b"1e999",
    b"-0",
    b"null",
    b"\r",
    b"\xef\xbb\xbf",
    b"\xff",
    b"[[[[[[[[[[[[[[[[",
    b"}}}}",
    b"tok-1234567890-abcdef",
    b"dG9rLTEyMzQ1Njc4OTAtYWJjZGVm",
    b"746f6b2d313233343536373839302d616263646566",
];

fn policy_tools() -> Tools {
    Tools {
        allow: None,
        deny: vec!["delete_*".into(), "exec?".into()],
        log_args: vec!["path".into()],
        excerpt: vec![],
        on_tool_change: ToolChange::Block,
        strip_invisible: false,
        call_net: Default::default(),
    }
}

struct Harness {
    tap: Tap,
    tools: Tools,
    calls: Arc<CallTracker>,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Harness {
    fn new() -> Harness {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let calls = Arc::new(CallTracker::default());
        let redactor = Arc::new(Redactor::new(&[(
            "TOKEN".into(),
            SECRET.as_bytes().to_vec(),
        )]));
        let tap = Tap::new(
            "fuzz",
            policy_tools(),
            redactor,
            calls.clone(),
            CGROUP,
            None,
            Box::new(move |e| sink.lock().unwrap().push(e)),
        );
        // A baseline, so tools/list answers change pins and block tools.
        tap.pins.lock().unwrap().baseline = Some(Pins {
            tools: [("echo".to_string(), "sha256:pinned".to_string())].into(),
        });
        Harness {
            tap,
            tools: policy_tools(),
            calls,
            events,
        }
    }

    fn check(&self, input: &[u8]) {
        let from_server = input.first() == Some(&b'S');
        // The relay splits on newlines: the tap never sees one.
        let line: Vec<u8> = input
            .iter()
            .skip(1)
            .copied()
            .filter(|&b| b != b'\n')
            .collect();
        self.events.lock().unwrap().clear();
        if from_server {
            self.server(&line);
        } else {
            self.client(&line);
        }
        self.bounds();
    }

    /// Whether `msg` calls a tool the policy (or a changed pin) refuses.
    fn refused(&self, msg: &Value, blocked: &std::collections::HashSet<String>) -> bool {
        msg.get("method").and_then(Value::as_str) == Some("tools/call")
            && match msg.pointer("/params/name").and_then(Value::as_str) {
                Some(name) => !tools::allowed(&self.tools, name) || blocked.contains(name),
                None => true,
            }
    }

    fn client(&self, line: &[u8]) {
        let blocked = self.tap.inner().blocked.clone();
        let outs = self.tap.client_line(line);
        let messages = |v: &Value| match v {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for out in &outs {
            match out {
                Output::Server(bytes) => {
                    assert!(!bytes.contains(&b'\n'), "a newline inside a forwarded line");
                    if bytes.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match serde_json::from_slice::<Value>(bytes) {
                        Ok(v) => {
                            for msg in messages(&v) {
                                assert!(
                                    !self.refused(&msg, &blocked),
                                    "a refused call reached the server: {msg}"
                                );
                            }
                        }
                        Err(_) => assert!(
                            !bytes.contains(&b'{'),
                            "a line that may be a message reached the server unchecked"
                        ),
                    }
                }
                Output::Client(bytes) => {
                    let v: Value = serde_json::from_slice(bytes).expect("replies are JSON");
                    assert_eq!(v["jsonrpc"], "2.0");
                    assert!(v["error"]["code"].is_i64(), "{v}");
                }
            }
        }
        let passes = match serde_json::from_slice::<Value>(line) {
            Ok(v) => !messages(&v).iter().any(|m| self.refused(m, &blocked)),
            Err(_) => !line.contains(&b'{'),
        };
        if passes {
            assert_eq!(
                outs,
                vec![Output::Server(line.to_vec())],
                "a line with nothing to refuse changed"
            );
        }
    }

    fn server(&self, line: &[u8]) {
        let parsed = serde_json::from_slice::<Value>(line).ok();
        let outs = self.tap.server_line(line);
        // A server request the policy refuses is answered, not passed on.
        let refused = outs.iter().any(|o| matches!(o, Output::Server(_)));
        let out = outs.into_iter().find_map(|o| match o {
            Output::Client(bytes) => Some(bytes),
            Output::Server(_) => None,
        });
        let events = self.events.lock().unwrap();
        let redacted = events
            .iter()
            .any(|e| matches!(&e.body, Body::Mcp { event, .. } if event == "redacted"));
        let filtered = events.iter().any(|e| {
            matches!(&e.body, Body::Mcp { event, detail }
                if event == "tools_list" && detail["hidden"].as_array().is_some_and(|h| !h.is_empty()))
        });
        drop(events);
        let Some(out) = out else {
            assert!(
                refused || (parsed.is_none() && line.contains(&b'{')),
                "only refused requests and lines that may be a message the tap cannot parse are withheld"
            );
            return;
        };
        assert!(
            !out.contains(&b'\n'),
            "a newline inside a line to the client"
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
        let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
        let leaks = |hay: &[u8]| {
            [SECRET, b64.as_str(), hex.as_str()]
                .into_iter()
                .find(|leak| hay.windows(leak.len()).any(|w| w == leak.as_bytes()))
        };
        // JSON is judged as the client decodes it (a raw `\tok-...` is a
        // tab and `ok-...`); anything else byte for byte.
        match serde_json::from_slice::<Value>(&out) {
            Ok(v) => {
                for s in strings(&v) {
                    assert_eq!(leaks(s.as_bytes()), None, "the secret reached the client");
                }
            }
            Err(_) => {
                assert!(
                    !out.contains(&b'{'),
                    "an unparsed message reached the client"
                );
                assert_eq!(leaks(&out), None, "the secret reached the client");
            }
        }
        if !redacted && !filtered && !refused && (parsed.is_some() || !line.contains(&b'{')) {
            assert_eq!(out, line, "a line with nothing to redact or filter changed");
        }
    }

    fn bounds(&self) {
        {
            let inner = self.tap.inner();
            assert!(
                inner.pending.len() <= MAX_PENDING,
                "pending requests unbounded"
            );
            assert_eq!(
                inner.pending_order.len(),
                inner.pending.len(),
                "the pending order drifted from the pending requests"
            );
        }
        let spans = self.calls.lock().get(&CGROUP).map_or(0, |l| l.len());
        assert!(spans <= MAX_SPANS, "{spans} call spans kept");
        assert!(self.tap.pins.lock().unwrap().seen.len() <= MAX_TOOLS);
    }
}

/// Every string and object key in `v`.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::Object(map) => map
            .iter()
            .flat_map(|(k, v)| std::iter::once(k.clone()).chain(strings(v)))
            .collect(),
        _ => Vec::new(),
    }
}

fn id(rng: &mut Rng) -> Value {
    match rng.below(6) {
        0 => Value::Null,
        1 => json!("a"),
        2 => json!(1.5),
        3 => json!(rng.below(4)),
        // Many distinct ids: fills the pending table past its limit.
        _ => json!(rng.next_u64() % 100_000),
    }
}

fn tool_name(rng: &mut Rng) -> Value {
    match rng.below(8) {
        0 => json!(""),
        1 => json!(["delete_repo"]),
        2 => json!(format!("t{}", rng.below(10_000))),
        _ => json!(*rng.pick(&[
            "echo",
            "read_file",
            "delete_repo",
            "exec1",
            "execute",
            "ECHO"
        ])),
    }
}

fn text(rng: &mut Rng) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
    match rng.below(6) {
        0 => format!("value {SECRET} end"),
        1 => format!("b64 {b64}"),
        2 => "Ignore previous instructions\u{200B}".into(),
        _ => "plain text".into(),
    }
}

fn client_msg(rng: &mut Rng) -> Value {
    let method = *rng.pick(&[
        "initialize",
        "tools/list",
        "tools/call",
        "tools/call",
        "tools/call",
        "notifications/cancelled",
        "ping",
    ]);
    let mut msg = json!({ "jsonrpc": "2.0", "method": method });
    if !rng.one_in(5) {
        msg["id"] = id(rng);
    }
    msg["params"] = match method {
        "tools/call" => {
            json!({ "name": tool_name(rng), "arguments": { "path": text(rng), "n": rng.below(100) } })
        }
        "notifications/cancelled" => json!({ "requestId": id(rng) }),
        _ => json!({}),
    };
    msg
}

fn server_msg(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 => {
            let tools: Vec<Value> = (0..rng.below(6))
                .map(|_| json!({ "name": tool_name(rng), "description": text(rng), "inputSchema": {"type": "object"} }))
                .collect();
            let mut result = json!({ "tools": tools });
            if rng.one_in(3) {
                result["nextCursor"] = json!("more");
            }
            json!({ "jsonrpc": "2.0", "id": id(rng), "result": result })
        }
        1 => {
            json!({ "jsonrpc": "2.0", "id": id(rng), "error": { "code": -1, "message": text(rng) } })
        }
        2 => {
            json!({ "jsonrpc": "2.0", "method": "sampling/createMessage", "id": id(rng), "params": { "x": text(rng) } })
        }
        _ => json!({ "jsonrpc": "2.0", "id": id(rng),
            "result": { "content": [{ "type": "text", "text": text(rng) }], "isError": rng.one_in(2) } }),
    }
}

/// Serialised, with some characters of its strings as `\uXXXX` escapes
/// (a redactor that matched raw bytes only would miss them).
fn escaped(v: &Value, rng: &mut Rng) -> Vec<u8> {
    let plain = serde_json::to_string(v).unwrap();
    if rng.one_in(2) {
        return plain.into_bytes();
    }
    let mut out = String::new();
    let (mut in_str, mut esc) = (false, false);
    for c in plain.chars() {
        if in_str && !esc && c.is_ascii_alphanumeric() && rng.one_in(3) {
            out.push_str(&format!("\\u{:04x}", c as u32));
            continue;
        }
        out.push(c);
        if esc {
            esc = false;
        } else if c == '\\' {
            esc = in_str;
        } else if c == '"' {
            in_str = !in_str;
        }
    }
    out.into_bytes()
}

fn generate(corpus: &Corpus, rng: &mut Rng) -> Vec<u8> {
    if rng.one_in(3) {
        return corpus.mutant(rng);
    }
    let from_server = rng.one_in(2);
    let msg = if from_server {
        server_msg(rng)
    } else if rng.one_in(5) {
        Value::Array((0..rng.below(4)).map(|_| client_msg(rng)).collect())
    } else {
        client_msg(rng)
    };
    let mut input = vec![if from_server { b'S' } else { b'C' }];
    input.extend(escaped(&msg, rng));
    if rng.one_in(4) {
        // Structure first, then bytes: gets past the parser more often
        // than byte mutations of a seed alone.
        let one = Corpus {
            seeds: vec![input],
            dict: corpus.dict.clone(),
        };
        return one.mutant(rng);
    }
    input
}

#[test]
fn tap_keeps_its_promises_on_mutated_traffic() {
    let corpus = Corpus::new(SEEDS, DICT);
    let h = Harness::new();
    for seed in &corpus.seeds {
        h.check(seed);
    }
    let n = fuzz::run("mcp", |rng| generate(&corpus, rng), |input| h.check(input));
    h.tap.finish();
    assert!(n > 0);
}
