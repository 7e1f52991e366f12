//! The `mcpguard` binary: a thin shell over [`mcpguard::cli`].

// The package's dependencies are the library's; this target only calls it.
#![allow(unused_crate_dependencies)]

fn main() -> std::process::ExitCode {
    mcpguard::cli::main()
}
