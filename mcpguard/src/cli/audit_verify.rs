//! `mcpguard audit verify`: check the audit log's hash chain and say
//! whether it is intact or where it first breaks.
//!
//! Exit codes: 0 intact, 1 broken, 2 usage or read error.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};

use crate::{
    audit::verify::{self, Report, Start},
    daemon::DEFAULT_AUDIT_LOG,
};

/// `mcpguard audit`'s subcommands.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the log's hash chain through its rotated files (root: the log
    /// is root's). Exit 0 intact, 1 broken, 2 usage or read error.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The JSON Lines audit log; its rotated files (`<log>.N` ... `<log>.1`)
    /// are checked first.
    #[arg(long, env = "MCPGUARD_AUDIT_LOG", default_value = DEFAULT_AUDIT_LOG)]
    log: PathBuf,
}

pub fn main(command: AuditCommand) -> ExitCode {
    let AuditCommand::Verify(args) = command;
    match verify::verify(&args.log) {
        Ok(report) => {
            print!("{}", describe(&report));
            if report.broken.is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("mcpguard audit verify: {e}");
            ExitCode::from(2)
        }
    }
}

/// The report as lines for people: the verdict first, then what is worth
/// knowing that is not a break.
fn describe(r: &Report) -> String {
    let files = r.files.len();
    let mut out = match &r.broken {
        None if r.records == 0 => {
            format!("OK: no chained records to check in {files} file(s)\n")
        }
        None => format!(
            "OK: audit chain intact: {} records in {files} file(s)\n",
            r.records
        ),
        Some(b) => format!(
            "BROKEN: {} line {}: {}\n  ({} records checked before it)\n",
            b.file.display(),
            b.line,
            b.kind,
            r.records
        ),
    };
    match &r.start {
        Start::Rotated { file, line, seq } => out.push_str(&format!(
            "  chain starts at {} line {line} (seq {seq}: earlier records rotated away)\n",
            file.display()
        )),
        Start::None | Start::Genesis => {}
    }
    if r.unchained > 0 {
        out.push_str(&format!(
            "  {} record(s) before the chain began (written before tamper evidence)\n",
            r.unchained
        ));
    }
    for (file, line) in &r.fragments {
        out.push_str(&format!(
            "  {} line {line}: not a whole record (a write cut short), skipped\n",
            file.display()
        ));
    }
    out
}
