//! mcpguard: kernel-enforced least privilege and an audit trail for MCP
//! servers.
//!
//! The data path reads top to bottom: a policy file ([`policy`]) is compiled
//! into map entries ([`ebpf`]) and a Landlock ruleset ([`launch`]); the
//! kernel decides; its records are decoded and enriched ([`audit`]) by the
//! daemon ([`daemon`]), which also launches and relays each server.

pub mod atomic_file;
pub mod audit;
pub mod cli;
pub mod daemon;
pub mod dns;
pub mod ebpf;
#[cfg(test)]
mod fuzz;
pub mod install;
pub mod ipc;
pub mod kernel;
pub mod launch;
pub mod mcp;
pub mod mountinfo;
pub mod policy;
pub mod term;
pub mod wrap;
