//! `mcpguard approvals`, `mcpguard approve ID`, `mcpguard deny ID` and
//! `mcpguard clear LAUNCH`: a person's side of the calls that wait for
//! one (`[tools] ask`, tainted sessions). Each asks the daemon; a caller
//! other than root sees and decides only its own servers' calls.

use std::{
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
};

use clap::Args;

use super::status::ask;
use crate::{
    daemon::{
        proto::{self, Pending, Request, Response, Tainted},
        DEFAULT_SOCKET,
    },
    mcp::approve::Why,
    term,
};

#[derive(Args)]
pub struct ListArgs {
    /// The daemon's socket.
    #[arg(long, env = "MCPGUARD_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the calls and tainted sessions as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DecideArgs {
    /// The approval number `mcpguard approvals` (or the server's
    /// `mcpguard run`) shows.
    approval: u64,
    /// The daemon's socket.
    #[arg(long, env = "MCPGUARD_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

#[derive(Args)]
pub struct ClearArgs {
    /// The tainted server's launch id (`mcpguard approvals` lists them).
    launch: String,
    /// The daemon's socket.
    #[arg(long, env = "MCPGUARD_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

pub fn list_main(args: ListArgs) -> ExitCode {
    let request = Request::Approvals {
        version: proto::VERSION,
    };
    let (pending, tainted) = match ask(&args.socket, &request) {
        Ok(Response::Approvals { pending, tainted }) => (pending, tainted),
        Ok(other) => return fail("approvals", &format!("unexpected answer: {other:?}")),
        Err(message) => return fail("approvals", &message),
    };
    let mut out = io::stdout().lock();
    let written = if args.json {
        let all = serde_json::json!({ "pending": pending, "tainted": tainted });
        serde_json::to_writer_pretty(&mut out, &all)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_human(&pending, &tainted, &mut out)
    };
    match written {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            fail("approvals", &format!("cannot write output: {e}"))
        }
        _ => ExitCode::SUCCESS,
    }
}

pub fn approve_main(args: DecideArgs) -> ExitCode {
    decide(args, true)
}

pub fn deny_main(args: DecideArgs) -> ExitCode {
    decide(args, false)
}

fn decide(args: DecideArgs, approve: bool) -> ExitCode {
    let request = Request::Decide {
        version: proto::VERSION,
        approval: args.approval,
        approve,
    };
    done(
        if approve { "approve" } else { "deny" },
        &args.socket,
        &request,
    )
}

pub fn clear_main(args: ClearArgs) -> ExitCode {
    let request = Request::Clear {
        version: proto::VERSION,
        launch: args.launch,
    };
    done("clear", &args.socket, &request)
}

/// Sends a request the daemon answers with `Done`, and prints it.
fn done(verb: &str, socket: &std::path::Path, request: &Request) -> ExitCode {
    match ask(socket, request) {
        Ok(Response::Done { message }) => {
            println!("{}", term::escape(&message));
            ExitCode::SUCCESS
        }
        Ok(other) => fail(verb, &format!("unexpected answer: {other:?}")),
        Err(message) => fail(verb, &message),
    }
}

fn fail(verb: &str, message: &str) -> ExitCode {
    eprintln!("mcpguard {verb}: {}", term::escape(message));
    ExitCode::FAILURE
}

fn write_human(pending: &[Pending], tainted: &[Tainted], out: &mut impl Write) -> io::Result<()> {
    if pending.is_empty() && tainted.is_empty() {
        return writeln!(out, "no call waits for a decision; no session is tainted");
    }
    for p in pending {
        let why = match p.why {
            Why::Ask => "[tools] ask",
            Why::Taint => "tainted session",
        };
        let args = serde_json::to_string(&p.arguments).unwrap_or_default();
        writeln!(
            out,
            "{}  {} ({})  tool {}  args {}  [{why}; {} s left{}]",
            p.approval,
            term::escape(&p.server),
            term::escape(&p.launch),
            term::escape(&p.tool),
            term::escape(&args),
            p.remaining_secs,
            if p.elicitation {
                "; asked in the client too"
            } else {
                ""
            },
        )?;
        writeln!(
            out,
            "    mcpguard approve {0}   |   mcpguard deny {0}",
            p.approval
        )?;
    }
    for t in tainted {
        let from = match &t.taint.tool {
            Some(tool) => format!("{} of {}", t.taint.source, term::escape(tool)),
            None => t.taint.source.clone(),
        };
        let mut found = t.taint.markers.join(", ");
        if t.taint.invisible_chars > 0 {
            found = format!("{found} {} invisible characters", t.taint.invisible_chars);
        }
        writeln!(
            out,
            "tainted  {} ({}) since {}: {from} carried {}",
            term::escape(&t.server),
            term::escape(&t.launch),
            t.taint.since,
            found.trim(),
        )?;
        writeln!(out, "    mcpguard clear {}", term::escape(&t.launch))?;
    }
    Ok(())
}
