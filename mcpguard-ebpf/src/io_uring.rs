//! io_uring submission audit: `io_uring/io_uring_submit_req` (any kernel
//! with io_uring's tracepoints; the daemon attaches it only where the
//! tracepoint exists).
//!
//! Requests submitted through a ring never pass the syscall tracepoints
//! the other audit programs use, so this records each one with its opcode.
//! Only servers whose policy allows io_uring get this far: the syscall
//! fence refuses `io_uring_setup` for the rest. Landlock and the cgroup
//! hooks still decide every request like the syscall it stands for. Runs
//! in the submitting task (or the ring's SQPOLL thread, which shares its
//! cgroup and uid). Records only; never decides.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use mcpguard_common::event::{kind, IoUringEvent};

use crate::{
    emit::{current_server, reserve},
    offsets::OFF_IO_URING_OPCODE,
};

#[tracepoint(category = "io_uring", name = "io_uring_submit_req")]
pub fn io_uring_submit_req(ctx: TracePointContext) -> u32 {
    let Some((cgroup, _)) = current_server() else {
        return 0;
    };
    // SAFETY: the offset comes from this kernel's tracefs format file.
    let Ok(opcode) = (unsafe { ctx.read_at::<u8>(OFF_IO_URING_OPCODE()) }) else {
        return 0;
    };
    let Some(mut entry) = reserve::<IoUringEvent>(kind::IO_URING, cgroup, false) else {
        return 0;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` is reserved ring-buffer memory for this record; the
    // header is filled, the payload is written here before submitting.
    unsafe {
        (*rec).payload = IoUringEvent {
            opcode: u32::from(opcode),
            _pad: 0,
        };
    }
    entry.submit();
    0
}
