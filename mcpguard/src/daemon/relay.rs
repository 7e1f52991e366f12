//! Relays between the client's stdio and the server's pipes, one line at a
//! time.
//!
//! The MCP stdio transport is newline-delimited JSON-RPC, so each relay
//! frames its input into lines and hands every complete line to a sink (the
//! MCP tap decides what is written where). A line is passed on as soon as
//! its newline arrives; a partial line waits for the rest (or end of
//! input). Memory is bounded: a line longer than the relay's limit is
//! handed over in chunks marked as overflow, never buffered whole. A relay
//! stops at end of input, when its sink reports the destination closed, or
//! when its [`Cancel`] fires.

use std::{
    io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    thread::JoinHandle,
};

use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
};
use tracing::debug;

const CHUNK: usize = 64 * 1024;

/// Stops a relay blocked on input: dropping or firing the write end wakes
/// the relay's poll.
pub struct Cancel(Option<OwnedFd>);

impl Cancel {
    pub fn fire(&mut self) {
        self.0.take();
    }
}

/// How a relay ended, for the daemon's logs.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Eof,
    WriteClosed,
    Cancelled,
}

/// What a relay hands its sink.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A complete line, without its newline.
    Line(&'a [u8]),
    /// Input ended in the middle of a line: the rest of it.
    Tail(&'a [u8]),
    /// A chunk of a line longer than the limit; `last` marks the chunk that
    /// ends at the line's newline (or at end of input).
    Overflow { data: &'a [u8], last: bool },
}

/// Receives pieces; returns `Ok(false)` once its destination is gone.
pub trait Sink: FnMut(Piece<'_>) -> io::Result<bool> + Send + 'static {}
impl<F: FnMut(Piece<'_>) -> io::Result<bool> + Send + 'static> Sink for F {}

/// Frame `src` into lines of at most `max_line` bytes in a new thread and
/// feed them to `sink` until EOF, a closed destination or cancellation.
pub fn spawn(
    name: &'static str,
    src: OwnedFd,
    max_line: usize,
    sink: impl Sink,
) -> io::Result<(JoinHandle<io::Result<End>>, Cancel)> {
    let (cancel_r, cancel_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let handle = std::thread::Builder::new()
        .name(format!("relay-{name}"))
        .stack_size(256 * 1024)
        .spawn(move || {
            let end = pump(src.as_fd(), cancel_r.as_fd(), max_line, sink);
            debug!(relay = name, ?end, "relay ended");
            end
        })?;
    Ok((handle, Cancel(Some(cancel_w))))
}

/// Splits a byte stream into pieces.
struct Framer {
    pending: Vec<u8>,
    max_line: usize,
    /// Inside a line that already overflowed.
    overflowing: bool,
}

impl Framer {
    /// Feed `data`; `emit` gets every piece it completes.
    fn push(
        &mut self,
        mut data: &[u8],
        emit: &mut impl FnMut(Piece<'_>) -> io::Result<bool>,
    ) -> io::Result<bool> {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            let (part, rest) = (&data[..nl], &data[nl + 1..]);
            data = rest;
            let alive = if self.overflowing {
                self.overflowing = false;
                emit(Piece::Overflow {
                    data: part,
                    last: true,
                })?
            } else if self.pending.is_empty() {
                if part.len() > self.max_line {
                    emit(Piece::Overflow {
                        data: part,
                        last: true,
                    })?
                } else {
                    emit(Piece::Line(part))?
                }
            } else {
                self.pending.extend_from_slice(part);
                let line = std::mem::take(&mut self.pending);
                if line.len() > self.max_line {
                    emit(Piece::Overflow {
                        data: &line,
                        last: true,
                    })?
                } else {
                    emit(Piece::Line(&line))?
                }
            };
            if !alive {
                return Ok(false);
            }
        }
        if self.overflowing {
            return if data.is_empty() {
                Ok(true)
            } else {
                emit(Piece::Overflow { data, last: false })
            };
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() > self.max_line {
            self.overflowing = true;
            let chunk = std::mem::take(&mut self.pending);
            return emit(Piece::Overflow {
                data: &chunk,
                last: false,
            });
        }
        Ok(true)
    }

    fn finish(&mut self, emit: &mut impl FnMut(Piece<'_>) -> io::Result<bool>) -> io::Result<bool> {
        if self.overflowing {
            self.overflowing = false;
            return emit(Piece::Overflow {
                data: &[],
                last: true,
            });
        }
        if self.pending.is_empty() {
            return Ok(true);
        }
        let tail = std::mem::take(&mut self.pending);
        emit(Piece::Tail(&tail))
    }
}

fn pump(
    src: BorrowedFd,
    cancel: BorrowedFd,
    max_line: usize,
    mut sink: impl Sink,
) -> io::Result<End> {
    let mut buf = vec![0u8; CHUNK];
    let mut framer = Framer {
        pending: Vec::new(),
        max_line,
        overflowing: false,
    };
    loop {
        let mut fds = [
            PollFd::new(src, PollFlags::POLLIN),
            PollFd::new(cancel, PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        if fds[1].any().unwrap_or(false) {
            return Ok(End::Cancelled);
        }
        let n = match nix::unistd::read(src, &mut buf) {
            Ok(0) => {
                return Ok(if framer.finish(&mut sink)? {
                    End::Eof
                } else {
                    End::WriteClosed
                })
            }
            Ok(n) => n,
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            // A hung-up terminal or a reset socket ends the stream too.
            Err(Errno::EIO | Errno::ECONNRESET) => {
                framer.finish(&mut sink)?;
                return Ok(End::Eof);
            }
            Err(e) => return Err(e.into()),
        };
        if !framer.push(&buf[..n], &mut sink)? {
            return Ok(End::WriteClosed);
        }
    }
}

/// Write all of `data` to `dst`, waiting for room if it is non-blocking.
/// `Ok(false)`: the reader is gone.
pub fn write_all(dst: BorrowedFd, mut data: &[u8]) -> io::Result<bool> {
    while !data.is_empty() {
        match nix::unistd::write(dst, data) {
            Ok(w) => data = &data[w..],
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                // Destination is non-blocking and full: wait for room.
                let mut out = [PollFd::new(dst, PollFlags::POLLOUT)];
                let _ = poll(&mut out, PollTimeout::NONE);
            }
            Err(Errno::EPIPE | Errno::ECONNRESET) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Write `line` (and a newline, when it had one) in one write where
/// possible, so two writers sharing a destination (under a lock) never
/// interleave inside a line.
pub fn write_piece(dst: BorrowedFd, line: &[u8], newline: bool) -> io::Result<bool> {
    // A long line is written in many writes anyway (the writers' lock
    // keeps it whole); copying it for its newline would only cost memory.
    if !newline || line.len() > CHUNK {
        return Ok(write_all(dst, line)? && (!newline || write_all(dst, b"\n")?));
    }
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line);
    buf.push(b'\n');
    write_all(dst, &buf)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn collect(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut framer = Framer {
            pending: Vec::new(),
            max_line: max,
            overflowing: false,
        };
        let mut got = Vec::new();
        let mut emit = |p: Piece<'_>| {
            got.push(match p {
                Piece::Line(l) => format!("line:{}", String::from_utf8_lossy(l)),
                Piece::Tail(l) => format!("tail:{}", String::from_utf8_lossy(l)),
                Piece::Overflow { data, last } => {
                    format!(
                        "over{}:{}",
                        if last { "-last" } else { "" },
                        String::from_utf8_lossy(data)
                    )
                }
            });
            Ok(true)
        };
        for c in chunks {
            framer.push(c, &mut emit).unwrap();
        }
        framer.finish(&mut emit).unwrap();
        got
    }

    #[test]
    fn frames_lines_across_reads() {
        assert_eq!(
            collect(100, &[b"{\"a\":", b"1}\n{\"b\"", b":2}\n\n", b"tail"]),
            ["line:{\"a\":1}", "line:{\"b\":2}", "line:", "tail:tail"]
        );
    }

    #[test]
    fn long_lines_overflow_in_bounded_chunks() {
        assert_eq!(
            collect(4, &[b"abcdef", b"gh\nok\n", b"0123456789\n", b"xyz123"]),
            [
                "over:abcdef",
                "over-last:gh",
                "line:ok",
                "over-last:0123456789",
                "over:xyz123",
                "over-last:"
            ]
        );
    }

    #[test]
    fn a_partial_line_waits_for_its_newline() {
        let (a_r, a_w) = nix::unistd::pipe().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink_got = got.clone();
        let (handle, _cancel) = spawn("test", a_r, 1024, move |p: Piece<'_>| {
            if let Piece::Line(l) | Piece::Tail(l) = p {
                sink_got.lock().unwrap().push(l.to_vec());
            }
            Ok(true)
        })
        .unwrap();
        nix::unistd::write(&a_w, b"{\"jsonrpc\":").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(got.lock().unwrap().is_empty());
        nix::unistd::write(&a_w, b"\"2.0\"}\nrest").unwrap();
        drop(a_w);
        assert_eq!(handle.join().unwrap().unwrap(), End::Eof);
        assert_eq!(
            *got.lock().unwrap(),
            [b"{\"jsonrpc\":\"2.0\"}".to_vec(), b"rest".to_vec()]
        );
    }

    #[test]
    fn cancel_stops_a_relay_blocked_on_input() {
        let (a_r, _a_w) = nix::unistd::pipe().unwrap();
        let (handle, mut cancel) = spawn("test", a_r, 1024, |_: Piece<'_>| Ok(true)).unwrap();
        cancel.fire();
        assert_eq!(handle.join().unwrap().unwrap(), End::Cancelled);
    }

    #[test]
    fn a_closed_reader_ends_the_relay() {
        let (a_r, a_w) = nix::unistd::pipe().unwrap();
        let (b_r, b_w) = nix::unistd::pipe().unwrap();
        drop(b_r);
        // SAFETY: ignoring SIGPIPE is process-wide and harmless in tests;
        // the daemon ignores it too.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let (handle, _cancel) = spawn("test", a_r, 1024, move |p: Piece<'_>| match p {
            Piece::Line(l) => write_piece(b_w.as_fd(), l, true),
            _ => Ok(true),
        })
        .unwrap();
        nix::unistd::write(&a_w, b"x\n").unwrap();
        assert_eq!(handle.join().unwrap().unwrap(), End::WriteClosed);
    }
}
