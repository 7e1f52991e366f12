//! Calls a person decides, the tap's half: which `tools/call` is held
//! (`[tools] ask`, or a tainted session under `on_taint = "ask"`), the
//! `elicitation/create` request the daemon sends a client that declared
//! it can answer one, reading that answer, and the taint a flagged tool
//! result or server request leaves on a session.
//!
//! The waiting, the timeout and `mcpguard approve`/`deny` are the
//! daemon's ([`crate::daemon::approvals`]); a held call reaches the server
//! only through [`super::Tap::decided`] with an approving [`Decision`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Prefix of the JSON-RPC ids of the daemon's own elicitation requests. A
/// server request with such an id is refused, so an answer with one can
/// only be the client's answer to the daemon.
pub const ELICIT_PREFIX: &str = "mcpguard-approval-";

/// Why a call waits for a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// The tool matches `[tools] ask`.
    Ask,
    /// The session is tainted and the tool can act outside.
    Taint,
}

impl Why {
    pub fn says(self) -> &'static str {
        match self {
            Why::Ask => "the policy's [tools] ask names this tool",
            Why::Taint => {
                "the session is tainted: an earlier tool result or server request carried \
                 instructions aimed at the model or invisible Unicode"
            }
        }
    }
}

/// A `tools/call` held until a person decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The call's JSON-RPC id.
    pub id: Value,
    pub tool: String,
    /// The arguments as the audit records them (redacted).
    pub args: Value,
    pub why: Why,
    /// The call as the client sent it: what the server gets if approved.
    pub message: Vec<u8>,
}

/// Who or what ended a wait.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum By {
    /// `mcpguard approve`/`deny`, by this process of this user.
    Cli { uid: u32, pid: u32 },
    /// The client's answer to the daemon's elicitation request.
    Elicitation {
        client: Option<String>,
        action: String,
    },
    /// Nobody answered in time.
    Timeout { after_secs: u64 },
    /// The client cancelled the call.
    ClientCancelled,
    /// The session ended first.
    SessionEnded,
    /// The daemon could not hold another call.
    Full,
}

/// A person's (or the clock's) answer to a held call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub approved: bool,
    pub by: By,
}

impl Decision {
    pub fn deny(by: By) -> Decision {
        Decision {
            approved: false,
            by,
        }
    }

    /// Whether the client still waits for an answer to the call (it
    /// cancelled it, or is gone, otherwise).
    pub fn answers_client(&self) -> bool {
        !matches!(self.by, By::ClientCancelled | By::SessionEnded)
    }

    /// The error the client gets for a refused call.
    pub fn refusal(&self, tool: &str, policy: &str) -> String {
        let how = match &self.by {
            By::Cli { uid, .. } => format!("denied by uid {uid} (mcpguard deny)"),
            By::Elicitation { action, .. } => format!("not approved in the client ({action})"),
            By::Timeout { after_secs } => format!(
                "not approved within {after_secs} s ([tools] ask_timeout); nothing is approved by default"
            ),
            By::Full => "refused: too many calls already wait for a decision".into(),
            By::ClientCancelled | By::SessionEnded => "cancelled".into(),
        };
        format!("mcpguard: call to tool {tool:?} of policy {policy:?} {how}")
    }
}

/// The elicitation id of approval `approval`.
pub fn elicit_id(approval: u64) -> String {
    format!("{ELICIT_PREFIX}{approval}")
}

/// The approval an elicitation answer's id names, if it is one of the
/// daemon's.
pub fn approval_of(id: &Value) -> Option<u64> {
    id.as_str()?.strip_prefix(ELICIT_PREFIX)?.parse().ok()
}

/// Whether a server request's id could be taken for one of the daemon's.
pub fn is_daemon_id(id: &Value) -> bool {
    id.as_str().is_some_and(|s| s.starts_with(ELICIT_PREFIX))
}

/// What the daemon asks the client, in words and as a one-field form.
pub fn elicit_request(approval: u64, server: &str, held: &Held, timeout: Duration) -> Value {
    let args = serde_json::to_string(&held.args).unwrap_or_default();
    let message = format!(
        "mcpguard: server {server:?} wants to run tool {:?} with arguments {args} \
         (values shown as type and length unless the policy logs them). Why you are asked: {}. \
         Unanswered within {} s, the call is refused. \
         (Also: mcpguard approve {approval} / mcpguard deny {approval}.)",
        held.tool,
        held.why.says(),
        timeout.as_secs(),
    );
    json!({
        "jsonrpc": "2.0",
        "id": elicit_id(approval),
        "method": "elicitation/create",
        "params": {
            "message": message,
            "requestedSchema": {
                "type": "object",
                "properties": {
                    "approve": {
                        "type": "boolean",
                        "title": "Run this call",
                        "description": format!("Let {server:?} run {:?}", held.tool),
                        "default": false,
                    }
                },
                "required": ["approve"],
            },
        },
    })
}

/// The notification that withdraws the daemon's elicitation request once
/// the call was decided another way.
pub fn elicit_cancel(approval: u64) -> Value {
    json!({
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": { "requestId": elicit_id(approval), "reason": "decided elsewhere" },
    })
}

/// The client's answer to an elicitation: approved only when it accepted
/// the form with `approve: true`; anything else (decline, cancel, an
/// error, a malformed answer) refuses.
pub fn read_answer(msg: &Value, client: Option<String>) -> Decision {
    let result = msg.get("result");
    let action = match (result, msg.get("error")) {
        (Some(r), _) => r
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("malformed")
            .chars()
            .take(32)
            .collect(),
        (None, _) => "error".to_owned(),
    };
    let approved = action == "accept"
        && result
            .and_then(|r| r.get("content"))
            .and_then(|c| c.get("approve"))
            .and_then(Value::as_bool)
            == Some(true);
    Decision {
        approved,
        by: By::Elicitation { client, action },
    }
}

/// A session's taint: what was flagged first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    /// When, as the audit log writes times.
    pub since: String,
    /// `tool_result`, or the server request's method.
    pub source: String,
    pub tool: Option<String>,
    pub markers: Vec<String>,
    pub invisible_chars: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> Held {
        Held {
            id: json!(7),
            tool: "delete_repo".into(),
            args: json!({ "repo": { "type": "string", "len": 4 } }),
            why: Why::Ask,
            message: b"{}".to_vec(),
        }
    }

    #[test]
    fn only_an_accepted_form_with_approve_true_approves() {
        let answer = |v: Value| read_answer(&v, None).approved;
        assert!(answer(
            json!({"id": "x", "result": {"action": "accept", "content": {"approve": true}}})
        ));
        for refused in [
            json!({"result": {"action": "accept", "content": {"approve": false}}}),
            json!({"result": {"action": "accept", "content": {"approve": "true"}}}),
            json!({"result": {"action": "accept"}}),
            json!({"result": {"action": "decline"}}),
            json!({"result": {"action": "cancel"}}),
            json!({"error": {"code": -1, "message": "no"}}),
            json!({}),
        ] {
            assert!(!answer(refused.clone()), "{refused}");
        }
    }

    #[test]
    fn elicitation_ids_round_trip_and_are_recognized() {
        assert_eq!(approval_of(&json!(elicit_id(42))), Some(42));
        assert_eq!(approval_of(&json!("mcpguard-approval-x")), None);
        assert_eq!(approval_of(&json!(42)), None);
        assert!(is_daemon_id(&json!("mcpguard-approval-")));
        assert!(!is_daemon_id(&json!("1")));
    }

    #[test]
    fn the_request_names_server_tool_arguments_and_the_way_out() {
        let req = elicit_request(3, "github", &held(), Duration::from_secs(60));
        let text = req["params"]["message"].as_str().unwrap();
        for part in [
            "\"github\"",
            "\"delete_repo\"",
            "\"len\":4",
            "60 s",
            "approve 3",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert_eq!(req["id"], "mcpguard-approval-3");
        assert_eq!(
            req["params"]["requestedSchema"]["required"],
            json!(["approve"])
        );
    }
}
