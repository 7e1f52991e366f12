//! [`CallGate`] and [`CallWatch`]: how the tap tells whoever needs it
//! which tool calls a server has in flight. The daemon passes them in: a
//! gate writes the kernel's `IN_CALL` map (so a server at `[audit] files =
//! "calls"` has its file activity recorded only during calls), a watch
//! opens a tool's per-call network rules while its calls run. The tap
//! knows nothing of maps.

use serde_json::Value;

/// Why a gate could not take a new count.
pub type GateError = Box<dyn std::error::Error + Send + Sync>;

/// Told every change of a server's count of tool calls in flight: before
/// a `tools/call` is forwarded to the server, after its answer (or
/// cancellation, or the session's end), and 0 when the server is gone.
/// Called with the tap's call tracker locked, so counts arrive in order;
/// an implementation must not call back into the tracker.
pub trait CallGate: Send + Sync {
    /// `cgroup`'s server now has `in_flight` calls outstanding.
    fn set(&self, cgroup: u64, in_flight: u32) -> Result<(), GateError>;
}

/// Told each tool call, with its tool, when it becomes in flight (before
/// it is forwarded to the server) and when it stops being: answered,
/// cancelled, replaced by a call reusing its id, dropped beyond the
/// tracker's bound, or its session ended. Called with the tracker locked,
/// like a [`CallGate`]: in order, and never calling back into it.
pub trait CallWatch: Send + Sync {
    /// Call `id` to `tool` of `cgroup`'s server is in flight.
    fn started(&self, cgroup: u64, id: &Value, tool: &str) -> Result<(), GateError>;
    /// Call `id` to `tool` is no longer in flight.
    fn ended(&self, cgroup: u64, id: &Value, tool: &str) -> Result<(), GateError>;
    /// `cgroup`'s server is gone, and every call of it with it.
    fn forgotten(&self, cgroup: u64);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::json;

    use super::*;
    use crate::mcp::{CallTracker, MAX_SPANS};

    /// A watch that keeps what it is told, as `+tool id` / `-tool id`.
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl Log {
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    impl CallWatch for Log {
        fn started(&self, cgroup: u64, id: &Value, tool: &str) -> Result<(), GateError> {
            self.0
                .lock()
                .unwrap()
                .push(format!("{cgroup} +{tool} {id}"));
            Ok(())
        }
        fn ended(&self, cgroup: u64, id: &Value, tool: &str) -> Result<(), GateError> {
            self.0
                .lock()
                .unwrap()
                .push(format!("{cgroup} -{tool} {id}"));
            Err("closing failed".into())
        }
        fn forgotten(&self, cgroup: u64) {
            self.0.lock().unwrap().push(format!("{cgroup} gone"));
        }
    }

    #[test]
    fn the_watch_sees_every_call_open_and_close_with_its_tool() {
        let log = Arc::new(Log::default());
        let calls = CallTracker::default().watched(log.clone());
        calls.start(7, &json!(1), "fetch").unwrap();
        calls.start(8, &json!(1), "echo").unwrap();
        assert_eq!(log.take(), ["7 +fetch 1", "8 +echo 1"]);
        // An end that closes nothing tells nothing; an error is returned.
        calls.end(7, &json!(2)).unwrap();
        assert_eq!(log.take(), Vec::<String>::new());
        assert!(calls.end(7, &json!(1)).is_err());
        assert_eq!(log.take(), ["7 -fetch 1"]);
        // A reused id: the new call opens before the old one closes, so
        // the tool never drops to no call in between.
        calls.start(8, &json!(1), "fetch").unwrap_err();
        assert_eq!(log.take(), ["8 +fetch 1", "8 -echo 1"]);
        calls.forget(8).unwrap();
        assert_eq!(log.take(), ["8 gone"]);
    }

    #[test]
    fn calls_dropped_beyond_the_bound_are_closed_too() {
        let log = Arc::new(Log::default());
        let calls = CallTracker::default().watched(log.clone());
        for i in 0..MAX_SPANS {
            calls.start(7, &json!(i), "fetch").unwrap();
        }
        log.take();
        let _ = calls.start(7, &json!("one more"), "echo");
        assert_eq!(log.take(), ["7 +echo \"one more\"", "7 -fetch 0"]);
        assert_eq!(calls.in_flight(7), MAX_SPANS as u32);
    }
}
