//! Types shared by mcpguard's eBPF programs and its user-space daemon.
//!
//! Everything here is `#[repr(C)]` with integer fields only, so the kernel
//! side can write it and user space can read it without surprises. Sizes are
//! const-asserted; the `user` feature adds `aya::Pod` impls for map access.
#![no_std]

pub mod event;
pub mod flow;
pub mod limits;
pub mod policy;
