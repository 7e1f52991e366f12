//! Each server's share of the audit ring buffer.
//!
//! One hostile server must not fill the ring buffer that every server's
//! records go through. The programs count the bytes each server puts into
//! the buffer ([`Flow::produced`]); the daemon writes back how many of them
//! it has read (`CONSUMED` map), so the difference is what the server holds
//! in the buffer right now. While the buffer is less than [`SHED_FROM`] full
//! every record is admitted. Past that, a server holding [`SHARE`] or more
//! has its records shed and counted ([`Flow::shed_allow`],
//! [`Flow::shed_deny`]) until the daemon has caught up with it; the daemon
//! reports the counts as `loss` records (source `rate`) attributed to that
//! server. Denials are kept longer: they are shed only once the buffer is
//! [`DENY_SHED_FROM`] full. A server that holds little (any server but the
//! flooder) is never shed, so the buffer keeps room for its records.

use crate::limits::RING_BYTES;

/// Ring-buffer fill (bytes pending) from which a server over its share has
/// its records shed.
pub const SHED_FROM: u64 = RING_BYTES as u64 / 4 * 3;
/// Fill from which its denials are shed too.
pub const DENY_SHED_FROM: u64 = RING_BYTES as u64 / 8 * 7;
/// Bytes one server may hold in the buffer once it is under pressure: with
/// up to eight flooding servers at once the buffer still does not fill.
pub const SHARE: u64 = RING_BYTES as u64 / 8;

/// Per-server counters (`FLOW` map value), updated atomically by every CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// Bytes of records this server put into the ring buffer.
    pub produced: u64,
    /// Allow records shed because the server was over its share.
    pub shed_allow: u64,
    /// Denial records shed because the server was over its share.
    pub shed_deny: u64,
    pub _reserved: u64,
}

const _: () = assert!(core::mem::size_of::<Flow>() == 32);
const _: () = assert!(SHED_FROM < DENY_SHED_FROM);

#[cfg(feature = "user")]
// SAFETY: repr(C), integer fields only, no padding (size asserted above).
unsafe impl aya::Pod for Flow {}
