//! The daemon's [`CallWatch`]: a tool's per-call network rules
//! (`[tools.<name>] network`) are open in its server's resolver and allow
//! map while calls to that tool are in flight, and closed when the last of
//! them ends. Each tool's calls in flight are counted; what is open is the
//! union of the rules of the tools with a count above zero, so concurrent
//! calls share it and one ending does not close another's. Each call's
//! opening and closing is recorded (`mcp` record, event `call_network`,
//! tagged with the call), failures included.
//!
//! Fails closed: rules that cannot be written leave the call without them
//! (the connect is refused and recorded as any other), and a switch that
//! cannot shrink what is open closes every per-call rule of the server.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use serde_json::{json, Value};
use tracing::warn;

use crate::{
    dns::{view::SwitchError, DnsView},
    mcp::{CallWatch, GateError},
    policy::call_net::{CallNet, CallRules},
};

/// Writes one record of a server, tagged with a call: its `detail`, the
/// tool, the call's id.
pub type Recorder = Box<dyn Fn(Value, &str, &Value) + Send + Sync>;

/// A server with per-call rules, as its session registers it.
pub struct Server {
    pub rules: CallNet,
    /// Its resolver, which owns its per-call entries.
    pub view: Arc<DnsView>,
    pub record: Recorder,
}

struct Entry {
    server: Server,
    /// Calls in flight per tool that has rules; a tool at 0 is removed,
    /// so this holds at most the policy's tools.
    in_flight: BTreeMap<String, u32>,
}

impl Entry {
    /// Opens the union of the rules of the tools in flight. A union that
    /// cannot be opened while shrinking would leave wider rules open, so
    /// then every per-call rule is closed instead.
    fn switch(&self, shrinking: bool) -> Result<(), SwitchError> {
        let tools = self.in_flight.keys().map(String::as_str);
        let result = self
            .server
            .view
            .set_call_rules(self.server.rules.union(tools));
        if result.is_err() && shrinking {
            if let Err(error) = self.server.view.set_call_rules(CallRules::default()) {
                warn!(%error, "closing every per-call rule");
            }
        }
        result
    }
}

/// Every running server with per-call rules, by cgroup id.
#[derive(Default)]
pub struct CallNetwork {
    servers: Mutex<HashMap<u64, Entry>>,
}

impl CallNetwork {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The server in `cgroup` has per-call rules: open them during its
    /// calls. Before its first call can reach the tap.
    pub fn register(&self, cgroup: u64, server: Server) {
        let entry = Entry {
            server,
            in_flight: BTreeMap::new(),
        };
        self.lock().insert(cgroup, entry);
    }

    /// The server is gone (its resolver closes what was open).
    pub fn unregister(&self, cgroup: u64) {
        self.lock().remove(&cgroup);
    }
}

impl CallWatch for CallNetwork {
    fn started(&self, cgroup: u64, id: &Value, tool: &str) -> Result<(), GateError> {
        let mut servers = self.lock();
        let Some(entry) = servers.get_mut(&cgroup) else {
            return Ok(());
        };
        let Some(rules) = entry.server.rules.get(tool) else {
            return Ok(());
        };
        let texts = rules.texts();
        let count = entry.in_flight.entry(tool.to_owned()).or_default();
        *count += 1;
        let calls = *count;
        let result = if calls == 1 {
            entry.switch(false)
        } else {
            Ok(())
        };
        let detail = json!({ "network": "open", "rules": texts, "calls": calls });
        finish(entry, detail, tool, id, result)
    }

    fn ended(&self, cgroup: u64, id: &Value, tool: &str) -> Result<(), GateError> {
        let mut servers = self.lock();
        let Some(entry) = servers.get_mut(&cgroup) else {
            return Ok(());
        };
        let Some(count) = entry.in_flight.get_mut(tool) else {
            return Ok(());
        };
        *count -= 1;
        let calls = *count;
        let (state, result) = if calls == 0 {
            entry.in_flight.remove(tool);
            ("closed", entry.switch(true))
        } else {
            // Another call to the tool still needs them.
            ("kept", Ok(()))
        };
        let texts = entry.server.rules.get(tool).map(CallRules::texts);
        let detail = json!({ "network": state, "rules": texts, "calls": calls });
        finish(entry, detail, tool, id, result)
    }

    fn forgotten(&self, cgroup: u64) {
        if let Some(entry) = self.lock().remove(&cgroup) {
            if let Err(error) = entry.server.view.set_call_rules(CallRules::default()) {
                warn!(cgroup, %error, "closing the per-call rules of a server gone");
            }
        }
    }
}

/// Records the switch in the call's timeline, its error too (loudly: the
/// tap also records the error it gets back).
fn finish(
    entry: &Entry,
    mut detail: Value,
    tool: &str,
    id: &Value,
    result: Result<(), SwitchError>,
) -> Result<(), GateError> {
    if let Err(error) = &result {
        warn!(tool, %error, "switching a server's per-call network rules");
        detail["error"] = json!(error.to_string());
    }
    (entry.server.record)(detail, tool, id);
    result.map_err(Into::into)
}

#[cfg(test)]
mod tests;
