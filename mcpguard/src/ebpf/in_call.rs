//! The daemon's handle on `IN_CALL`: how many tool calls each server has
//! in flight, which the audit programs of a server at `[audit] files =
//! "calls"` read to decide whether to record its allowed file activity.
//! Only the daemon writes it.

use aya::maps::{HashMap, MapData, MapError};

use super::EbpfError;

/// `IN_CALL`, by cgroup id.
pub struct InCallMap {
    map: HashMap<MapData, u64, u32>,
}

impl InCallMap {
    pub(super) fn new(map: HashMap<MapData, u64, u32>) -> InCallMap {
        InCallMap { map }
    }

    /// `cgroup` now has `count` calls in flight; 0 removes its entry (a
    /// missing entry reads as none).
    pub fn set(&mut self, cgroup: u64, count: u32) -> Result<(), EbpfError> {
        let result = if count == 0 {
            match self.map.remove(&cgroup) {
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
                {
                    Ok(())
                }
                other => other,
            }
        } else {
            self.map.insert(cgroup, count, 0)
        };
        result.map_err(|source| EbpfError::Map {
            name: "IN_CALL",
            source,
        })
    }
}
