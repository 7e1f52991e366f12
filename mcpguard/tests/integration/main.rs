//! Root integration tests against the real kernel: a real daemon, real
//! eBPF, Landlock and cgroups, servers run by an unprivileged user through
//! `mcpguard run`, and a real MCP SDK client.
//!
//! Run with `cargo xtask test` (root, `--test-threads=1`: the tests share
//! kernel state). Nothing is mocked and nothing is skipped: a missing
//! prerequisite fails the test with the reason.

// One test target for the whole package: the library's dependencies are
// in scope here whether the tests use them or not.
#![allow(unused_crate_dependencies)]

mod harness;

mod abuse;
mod approvals;
mod argv;
mod baseline;
mod call_net;
mod chain;
mod dns;
mod doctor;
mod enforce;
mod escape;
mod exclusive;
mod faults;
mod kernels;
mod landlock_audit;
mod learn;
mod levels;
mod lifecycle;
mod mcp;
mod mint;
mod ondemand;
mod policies;
mod review;
mod service;
mod unix;
mod wrapped;
