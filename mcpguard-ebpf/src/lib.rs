//! Present so the crate can be a build dependency of the daemon (which makes
//! cargo rebuild the daemon when these programs change); the programs live in
//! the `mcpguard` binary target.
#![no_std]
// The dependencies are the programs' (the binary target).
#![allow(unused_crate_dependencies)]
