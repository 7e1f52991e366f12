//! mcpguard's kernel programs.
//!
//! The programs are generic: they look up per-server state that the daemon
//! compiled from a policy (keyed by cgroup id) and either decide (egress) or
//! record (audit). Policy logic stays in user space where it can be tested.
#![no_std]
#![no_main]
// Atomic adds on map values: the bpfel target has no compare-and-swap, so
// `AtomicU64` offers no `fetch_add`, but the BPF instruction set has the add.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod attrs;
mod emit;
mod files;
mod inbound;
mod io_uring;
mod maps;
mod net;
mod offsets;
mod paths;
mod proc;
mod syscalls;
mod unix;

// The package's library is empty (see its doc); the programs are all here.
use mcpguard_ebpf as _;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: eBPF programs cannot unwind; the verifier rejects any path
    // that reaches here, so this is never executed.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
