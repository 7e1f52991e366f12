//! Where each watched attribute syscall ([`crate::kernel::attrs`]) keeps
//! its arguments on this kernel, read from its tracefs format file.

use std::path::Path;

use mcpguard_common::policy::AttrArgs;

use super::tracefs::{field_offset, TracefsError};
use crate::kernel::attrs::AttrCall;

/// Where call `c` keeps its arguments on this kernel; `None` when the
/// kernel has no such tracepoint (a syscall it lacks: nothing to record).
pub fn args_of(tracefs: &Path, c: &AttrCall) -> Result<Option<AttrArgs>, TracefsError> {
    let event = format!("sys_enter_{}", c.name);
    if !tracefs.join("events/syscalls").join(&event).exists() {
        return Ok(None);
    }
    let off = |field: Option<&str>| -> Result<u16, TracefsError> {
        field.map_or(Ok(0), |f| {
            field_offset(tracefs, "syscalls", &event, f).map(|o| o as u16)
        })
    };
    Ok(Some(AttrArgs {
        path_off: off(c.path)?,
        fd_off: off(c.fd)?,
        mode_off: off(c.mode)?,
        extra_errno: c.extra_errno,
    }))
}
