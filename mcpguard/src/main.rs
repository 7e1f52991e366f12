//! The `mcpguard` binary: a thin shell over [`mcpguard::cli`].

fn main() -> std::process::ExitCode {
    mcpguard::cli::main()
}
