//! The daemon's [`CallGate`]: each server's count of tool calls in flight,
//! as the tap sees them, written to the kernel's `IN_CALL` map so the
//! audit programs of a server at `[audit] files = "calls"` record its
//! allowed file activity only while a call runs.

use std::sync::Mutex;

use crate::{
    ebpf::in_call::InCallMap,
    mcp::{CallGate, GateError},
};

/// Writes `IN_CALL`. Its own lock, held for one map update: the tap's
/// tracker calls it under the tracker's lock, and nothing else takes this
/// one, so the two cannot deadlock.
pub struct InCallGate {
    map: Mutex<InCallMap>,
}

impl InCallGate {
    pub fn new(map: InCallMap) -> InCallGate {
        InCallGate {
            map: Mutex::new(map),
        }
    }
}

impl CallGate for InCallGate {
    fn set(&self, cgroup: u64, in_flight: u32) -> Result<(), GateError> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.set(cgroup, in_flight).map_err(Into::into)
    }
}
