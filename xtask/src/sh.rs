//! Running commands: echo them, fail with the command line on error.

use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// `cargo` as this xtask was run (the toolchain cargo chose for it).
pub fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args).current_dir(crate::root());
    cmd
}

pub fn cmd(program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run with inherited stdio; error if it does not exit 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = show(cmd);
    eprintln!("xtask: {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed: {status}");
    }
    Ok(())
}

/// Run `cargo test`, passing its output through, and add up the
/// `test result:` lines of every test binary: (passed, failed).
pub fn run_counting_tests(cmd: &mut Command) -> Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    let line = show(cmd);
    eprintln!("xtask: {line}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let (mut passed, mut failed) = (0, 0);
    let stdout = child.stdout.take().context("test stdout")?;
    for l in BufReader::new(stdout).lines() {
        let l = l.context("reading test output")?;
        println!("{l}");
        if let Some(rest) = l.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .trim_start_matches("ok. ")
                            .trim_start_matches("FAILED. ")
                            .strip_suffix(word)
                    })
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            passed += count(" passed");
            failed += count(" failed");
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed: {status} ({passed} passed, {failed} failed)");
    }
    Ok((passed, failed))
}

/// Run and capture; error (with its stderr) if it does not exit 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = show(cmd);
    let out: Output = cmd
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the command runs and exits 0 (output discarded).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}
