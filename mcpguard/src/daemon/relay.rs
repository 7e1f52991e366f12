//! Byte-for-byte relays between the client's stdio and the server's pipes.
//!
//! One thread per direction, each forwarding whatever one `read` returns at
//! once: no line buffering, no added delay, so the MCP stdio transport works
//! unchanged. A relay stops at end of input, on a write error (the reader is
//! gone), or when its [`Cancel`] fires; it never buffers more than one read.

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

/// Forward `src` to `dst` in a new thread until EOF, a write failure or
/// cancellation. Returns the thread and its canceller.
pub fn spawn(
    name: &'static str,
    src: OwnedFd,
    dst: OwnedFd,
) -> io::Result<(JoinHandle<io::Result<End>>, Cancel)> {
    let (cancel_r, cancel_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let handle = std::thread::Builder::new()
        .name(format!("relay-{name}"))
        .stack_size(128 * 1024)
        .spawn(move || {
            let end = pump(src.as_fd(), dst.as_fd(), cancel_r.as_fd());
            debug!(relay = name, ?end, "relay ended");
            end
        })?;
    Ok((handle, Cancel(Some(cancel_w))))
}

fn pump(src: BorrowedFd, dst: BorrowedFd, cancel: BorrowedFd) -> io::Result<End> {
    let mut buf = vec![0u8; CHUNK];
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
            Ok(0) => return Ok(End::Eof),
            Ok(n) => n,
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            // A hung-up terminal or a reset socket ends the stream too.
            Err(Errno::EIO | Errno::ECONNRESET) => return Ok(End::Eof),
            Err(e) => return Err(e.into()),
        };
        let mut data = &buf[..n];
        while !data.is_empty() {
            match nix::unistd::write(dst, data) {
                Ok(w) => data = &data[w..],
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    // Destination is non-blocking and full: wait for room.
                    let mut out = [PollFd::new(dst, PollFlags::POLLOUT)];
                    let _ = poll(&mut out, PollTimeout::NONE);
                }
                Err(Errno::EPIPE | Errno::ECONNRESET) => return Ok(End::WriteClosed),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_each_read_immediately_and_ends_on_eof() {
        let (a_r, a_w) = nix::unistd::pipe().unwrap();
        let (b_r, b_w) = nix::unistd::pipe().unwrap();
        let (handle, _cancel) = spawn("test", a_r, b_w).unwrap();
        nix::unistd::write(&a_w, b"{\"jsonrpc\":\"2.0\"").unwrap();
        // No newline yet: a line-buffering relay would hold this back.
        let mut got = [0u8; 16];
        let n = nix::unistd::read(&b_r, &mut got).unwrap();
        assert_eq!(&got[..n], b"{\"jsonrpc\":\"2.0\"");
        drop(a_w);
        assert_eq!(handle.join().unwrap().unwrap(), End::Eof);
    }

    #[test]
    fn cancel_stops_a_relay_blocked_on_input() {
        let (a_r, _a_w) = nix::unistd::pipe().unwrap();
        let (_b_r, b_w) = nix::unistd::pipe().unwrap();
        let (handle, mut cancel) = spawn("test", a_r, b_w).unwrap();
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
        let (handle, _cancel) = spawn("test", a_r, b_w).unwrap();
        nix::unistd::write(&a_w, b"x").unwrap();
        assert_eq!(handle.join().unwrap().unwrap(), End::WriteClosed);
    }
}
