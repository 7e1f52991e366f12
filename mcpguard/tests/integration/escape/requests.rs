//! Class 9, server-to-client requests: during a tool call the fixture
//! server (PyPI `mcp` SDK) asks the client for a sampling whose prompt is
//! an injection, elicits an AWS secret key from the user, and lists the
//! client's roots.
//!
//! Blocked: under a policy without `[mcp]` (sampling and elicitation
//! refused by default) the SDK client's callbacks never run, and the
//! server gets the daemon's JSON-RPC error for each. Recorded: a
//! `server_request_denied` record per request, tied to the tool call, the
//! sampling flagged `suspicious`; `roots/list` passes and is recorded. The
//! same session under `[mcp] sampling = "allow"`, `elicitation = "allow"`
//! reaches the client and is recorded and flagged all the same.

use serde_json::{json, Value};

use super::{report, Class, Row};
use crate::{
    harness::{peers, Daemon},
    mcp::{client, fixture_policy},
};

/// One `ask` call through `mcpguard run`; the client's report and the
/// tool's text.
fn ask(d: &Daemon, name: &str, extra: &str) -> (Value, String) {
    let (pol, script) = fixture_policy(name, extra, &[]);
    let python = peers().join("venv/bin/python");
    let (report, _) = client(
        d,
        Some(&pol),
        &json!([["ask", {}]]),
        &[python.to_str().unwrap(), script.to_str().unwrap()],
        &[("FIXTURE_SERVER_REQUESTS", "1")],
    );
    let text = report["results"][0]["text"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (report, text)
}

/// A record of `event` about `method` from `server`, tied to the `ask` call.
fn record(d: &Daemon, server: &str, event: &str, method: &str) -> Option<Value> {
    d.find_record(|r| {
        r["kind"] == "mcp"
            && r["server"] == server
            && r["event"] == event
            && r["detail"]["method"] == method
            && r["tool"] == "ask"
    })
}

#[test]
fn escape_server_requests_are_recorded_and_refused_unless_allowed() {
    let d = Daemon::start();
    let (report_deny, text) = ask(&d, "it-ask-deny", "");
    let sampled = report_deny["sampled"].as_array().map_or(0, Vec::len);
    let elicited = report_deny["elicited"].as_array().map_or(0, Vec::len);
    let sampling = record(
        &d,
        "it-ask-deny",
        "server_request_denied",
        "sampling/createMessage",
    );
    let flagged = d.find_record(|r| {
        r["server"] == "it-ask-deny"
            && r["event"] == "suspicious"
            && r["detail"]["where"] == "sampling/createMessage"
            && r["detail"]["markers"]
                .as_array()
                .is_some_and(|m| m.contains(&json!("ignore_instructions")))
    });
    let elicitation = record(
        &d,
        "it-ask-deny",
        "server_request_denied",
        "elicitation/create",
    );
    let roots = record(&d, "it-ask-deny", "server_request", "roots/list");
    let rows = vec![
        Row::new(
            "sampling/createMessage with an injection prompt, default policy",
            sampled == 0 && text.contains("sampling refused") && text.contains("[mcp] sampling"),
            sampling.as_ref().is_some_and(|r| r["denied"] == true) && flagged.is_some(),
            format!(
                "client saw {sampled} sampling(s); server got {text:?}; record {}; flagged {}",
                sampling.unwrap_or_default(),
                flagged.is_some()
            ),
        ),
        Row::new(
            "elicitation/create asking for an AWS secret key, default policy",
            elicited == 0 && text.contains("elicitation refused"),
            elicitation.as_ref().is_some_and(|r| {
                r["denied"] == true
                    && r["detail"]["params"]["fields"] == json!(["aws_secret_access_key"])
            }),
            format!(
                "client saw {elicited} elicitation(s); record {}",
                elicitation.unwrap_or_default()
            ),
        ),
    ];
    report(Class::ServerRequests, &rows);
    // Answering the server kept its stdin the client's: it ends with it.
    d.wait_record("a clean exit after the refusals", |r| {
        r["kind"] == "server_exit" && r["server"] == "it-ask-deny" && r["exit_code"] == 0
    });
    // roots/list is not the policy's to refuse: it passes, recorded.
    assert!(text.contains("roots: 0"), "{text}");
    assert!(roots.is_some(), "no roots/list record");

    // Allowed: the client gets both, and they are recorded and flagged.
    let (report_allow, text) = ask(
        &d,
        "it-ask-allow",
        "[mcp]\nsampling = \"allow\"\nelicitation = \"allow\"\n",
    );
    assert!(
        report_allow["sampled"][0]
            .as_str()
            .is_some_and(|s| s.starts_with("Ignore all previous instructions")),
        "{report_allow}"
    );
    assert!(
        report_allow["elicited"][0].as_str().is_some(),
        "{report_allow}"
    );
    assert!(
        text.contains("sampled: canned model reply") && text.contains("elicited: decline"),
        "{text}"
    );
    for method in ["sampling/createMessage", "elicitation/create"] {
        let r = record(&d, "it-ask-allow", "server_request", method)
            .unwrap_or_else(|| panic!("no {method} record"));
        assert_eq!(r["denied"], false, "{r}");
    }
    assert!(d
        .find_record(|r| r["server"] == "it-ask-allow"
            && r["event"] == "suspicious"
            && r["detail"]["where"] == "sampling/createMessage")
        .is_some());
}
