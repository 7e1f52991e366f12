//! The kernel's ABI name tables, the classic BPF assembler the seccomp
//! filters share and the small `/proc` readers: plain data the feature
//! modules (policy, launch, eBPF, audit) read, depending on none of them.

pub mod attrs;
pub mod cbpf;
pub mod errno;
pub mod proc;
pub mod sockets;
pub mod syscalls;
