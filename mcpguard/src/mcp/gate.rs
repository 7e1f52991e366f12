//! [`CallGate`]: how the tap tells whoever needs it how many tool calls a
//! server has in flight. The daemon passes one in (it writes the kernel's
//! `IN_CALL` map, so a server at `[audit] files = "calls"` has its file
//! activity recorded only during calls); the tap knows nothing of maps.

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
