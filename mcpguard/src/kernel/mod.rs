//! The kernel's ABI name tables, the classic BPF assembler the seccomp
//! filters share, the small `/proc` readers and the audit netlink client:
//! what the feature modules (policy, launch, eBPF, audit, daemon) use,
//! depending on none of them.

pub mod attrs;
pub mod audit_netlink;
pub mod cbpf;
pub mod coverage;
pub mod errno;
pub mod proc;
pub mod sockets;
pub mod syscalls;
