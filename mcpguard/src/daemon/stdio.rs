//! One server's stdio: the client's stdin through the MCP tap to the
//! server, the server's stdout through the tap to the client, its stderr
//! through redaction to the client's stderr ([`Relays`]); each direction is
//! a line relay ([`super::relay`]).

use std::{
    os::fd::{AsFd, OwnedFd},
    process::Child,
    sync::{Arc, Mutex, Weak},
    thread::JoinHandle,
    time::Duration,
};

use super::{
    approvals::{self, Approver, Ends},
    relay,
    relay::Piece,
};
use crate::mcp::{self, Output, Tap};

/// Longest JSON-RPC line inspected; longer ones are dropped and recorded
/// (a line is one message: tool results with file contents fit easily).
const MAX_LINE: usize = mcp::MAX_LINE;
/// Server stderr is passed on in chunks of at most this when it has no
/// newline for that long.
const MAX_STDERR_LINE: usize = 1 << 20;

/// A relay thread and what stops it.
pub type Relay = (JoinHandle<std::io::Result<relay::End>>, relay::Cancel);

/// One server's stdio relays: client stdin → tap → server; server stdout →
/// tap → client; server stderr → redaction → client stderr.
pub struct Relays {
    pub input: Relay,
    pub output: Relay,
    pub errors: Relay,
    /// The client's stdout, written by both directions.
    pub client_out: Arc<Mutex<OwnedFd>>,
    /// The session's calls that wait for a person.
    pub approver: Arc<Approver>,
}

impl Relays {
    pub fn start(
        tap: &Arc<Tap>,
        stdio: [OwnedFd; 3],
        child: &mut Child,
        approvals: approvals::Spec,
    ) -> std::io::Result<Relays> {
        let [client_in, client_out, client_err] = stdio;
        let server_in: OwnedFd = child.stdin.take().map(OwnedFd::from).ok_or_else(no_pipe)?;
        let server_out: OwnedFd = child.stdout.take().map(OwnedFd::from).ok_or_else(no_pipe)?;
        let server_err: OwnedFd = child.stderr.take().map(OwnedFd::from).ok_or_else(no_pipe)?;
        // Both directions may answer the client (a refused call is answered
        // by the tap), so its stdout is shared, one whole line per write.
        let client_out = Arc::new(Mutex::new(client_out));
        // Both directions may write to the server too: the tap answers a
        // server request the policy refuses. The stdin relay holds the only
        // strong reference, so the server sees EOF when the client's stdin ends.
        let server_in = Arc::new(Mutex::new(server_in));
        let server_replies = Arc::downgrade(&server_in);
        // Held calls are written once decided, from their own threads.
        let approver = Approver::new(
            approvals,
            Ends {
                client_out: Arc::downgrade(&client_out),
                server_in: Arc::downgrade(&server_in),
            },
        );
        let input = relay::spawn(
            "stdin",
            client_in,
            MAX_LINE,
            stdin_sink(tap.clone(), server_in, client_out.clone(), approver.clone()),
        )?;
        let output = relay::spawn(
            "stdout",
            server_out,
            MAX_LINE,
            stdout_sink(tap.clone(), client_out.clone(), server_replies),
        )?;
        let errors = relay::spawn(
            "stderr",
            server_err,
            MAX_STDERR_LINE,
            stderr_sink(tap.clone(), client_err),
        )?;
        Ok(Relays {
            input,
            output,
            errors,
            client_out,
            approver,
        })
    }
}

/// Client stdin → tap → server; the tap's own answers go to the client,
/// calls that wait for a person to the approver.
fn stdin_sink(
    tap: Arc<Tap>,
    server_in: Arc<Mutex<OwnedFd>>,
    client_out: Arc<Mutex<OwnedFd>>,
    approver: Arc<Approver>,
) -> impl relay::Sink {
    move |piece: Piece<'_>| {
        let (line, newline) = match piece {
            Piece::Line(line) => (line, true),
            // Unterminated at EOF: passed on as it came.
            Piece::Tail(line) => (line, false),
            Piece::Overflow { data, last } => {
                if last {
                    tap.oversize(false, data.len());
                }
                return Ok(true);
            }
        };
        for out in tap.client_line(line) {
            let alive = match out {
                Output::Server(bytes) => {
                    let fd = server_in.lock().unwrap_or_else(|p| p.into_inner());
                    relay::write_piece(fd.as_fd(), &bytes, newline)?
                }
                Output::Client(bytes) => {
                    let fd = client_out.lock().unwrap_or_else(|p| p.into_inner());
                    relay::write_piece(fd.as_fd(), &bytes, true)?
                }
                Output::Hold(held) => {
                    approver.hold(*held);
                    true
                }
                Output::Decide { approval, decision } => {
                    approver.decide(approval, decision);
                    true
                }
            };
            if !alive {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Server stdout → tap → client; the tap's answers to refused server
/// requests go back to the server.
fn stdout_sink(
    tap: Arc<Tap>,
    client_out: Arc<Mutex<OwnedFd>>,
    server_replies: Weak<Mutex<OwnedFd>>,
) -> impl relay::Sink {
    let mut dropped = 0usize;
    move |piece: Piece<'_>| match piece {
        // A withheld line (recorded by the tap) is not written at all.
        Piece::Line(line) => deliver(tap.server_line(line), true, &client_out, &server_replies),
        Piece::Tail(line) => deliver(tap.server_line(line), false, &client_out, &server_replies),
        // Too long to inspect: dropped (and recorded) rather than passed
        // on unredacted.
        Piece::Overflow { data, last } => {
            dropped += data.len();
            if last {
                tap.oversize(true, dropped);
                dropped = 0;
            }
            Ok(true)
        }
    }
}

/// Server stderr → redaction → client stderr.
fn stderr_sink(tap: Arc<Tap>, client_err: OwnedFd) -> impl relay::Sink {
    move |piece: Piece<'_>| match piece {
        Piece::Line(line) => relay::write_piece(client_err.as_fd(), &tap.stderr_line(line), true),
        Piece::Tail(data) | Piece::Overflow { data, .. } => {
            relay::write_all(client_err.as_fd(), &tap.stderr_line(data))
        }
    }
}

fn no_pipe() -> std::io::Error {
    std::io::Error::other("server stdio pipe missing")
}

pub fn wait_or_cancel((relay, mut cancel): Relay, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while !relay.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    cancel.fire();
    let _ = relay.join();
}

/// Writes what the tap made of a server line: the client's part, and the
/// daemon's answers to requests it refused. Returns whether the client is
/// still there.
fn deliver(
    outs: Vec<Output>,
    newline: bool,
    client_out: &Mutex<OwnedFd>,
    server_in: &Weak<Mutex<OwnedFd>>,
) -> std::io::Result<bool> {
    for out in outs {
        match out {
            Output::Client(bytes) => {
                let fd = client_out.lock().unwrap_or_else(|p| p.into_inner());
                if !relay::write_piece(fd.as_fd(), &bytes, newline)? {
                    return Ok(false);
                }
            }
            // Only the client's messages are held or decide.
            Output::Hold(_) | Output::Decide { .. } => {}
            Output::Server(bytes) => {
                // Once the client's stdin has ended (and with it the
                // server's), or the server closed its stdin, no one reads
                // the answer; the server's output still goes to the client.
                if let Some(server_in) = server_in.upgrade() {
                    let fd = server_in.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = relay::write_piece(fd.as_fd(), &bytes, true);
                }
            }
        }
    }
    Ok(true)
}
