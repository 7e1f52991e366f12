//! Messages between mcpguard's own processes over Unix sockets: one
//! framing and one way to pass descriptors, shared by `mcpguard run` and
//! the daemon (`daemon::proto`), the daemon and its launch helper
//! (`launch`), and the daemon and the persistence fence's executor
//! (`launch::persist_fence`). It sits below all of them and knows none.
//!
//! A frame is a u32 little-endian length and that many bytes of JSON. Its
//! size limit is checked before anything is read, and the body is
//! buffered as it arrives, never allocated from the length prefix alone.
//! [`Deadline`] reads a socket that gives up at one instant, however slowly
//! the bytes trickle in.
//!
//! Descriptors travel as `SCM_RIGHTS` on an ordinary message
//! ([`send_fds`]); [`recv_fds`] takes them close-on-exec (they can never
//! leak into a server) and refuses a message whose descriptors did not all
//! fit (`MSG_CTRUNC`).

use std::{
    io::{self, IoSlice, IoSliceMut, Read, Write},
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
    time::Instant,
};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

/// Why a frame could not be written or read.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("socket I/O: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {len} bytes exceeds the size limit")]
    TooLarge { len: usize },
    #[error("frame cut short: {got} of {want} bytes arrived")]
    Truncated { got: usize, want: u32 },
    #[error("the frame did not arrive in time")]
    TimedOut,
    #[error("malformed frame: {0}")]
    Json(#[from] serde_json::Error),
}

/// Why descriptors could not be received.
#[derive(Debug, Error)]
pub enum FdError {
    #[error("socket I/O: {0}")]
    Io(#[from] io::Error),
    /// More descriptors came than the receiver takes (`MSG_CTRUNC`).
    #[error("a message carried more descriptors than expected (MSG_CTRUNC)")]
    Truncated,
}

impl From<FdError> for io::Error {
    fn from(e: FdError) -> io::Error {
        match e {
            FdError::Io(e) => e,
            FdError::Truncated => nix::Error::ENOBUFS.into(),
        }
    }
}

/// `msg` as one frame of at most `max` bytes of JSON.
pub fn encode_frame<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(msg)?;
    let too_large = || FrameError::TooLarge { len: body.len() };
    if body.len() > max {
        return Err(too_large());
    }
    let len = u32::try_from(body.len()).map_err(|_| too_large())?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Writes `msg` as one frame of at most `max` bytes.
pub fn write_frame<T: Serialize>(
    stream: &mut impl Write,
    msg: &T,
    max: usize,
) -> Result<(), FrameError> {
    stream.write_all(&encode_frame(msg, max)?)?;
    Ok(())
}

/// Reads one frame of at most `max` bytes; `Ok(None)` on a clean end of
/// stream (before the length prefix).
pub fn read_frame<T: DeserializeOwned>(
    stream: &mut impl Read,
    max: usize,
) -> Result<Option<T>, FrameError> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io_error(e)),
    }
    let want = u32::from_le_bytes(len);
    if usize::try_from(want).map_or(true, |want| want > max) {
        return Err(FrameError::TooLarge { len: want as usize });
    }
    // Grown as bytes arrive: a length prefix alone commits no memory.
    let mut body = Vec::new();
    stream
        .take(u64::from(want))
        .read_to_end(&mut body)
        .map_err(io_error)?;
    if body.len() < want as usize {
        return Err(FrameError::Truncated {
            got: body.len(),
            want,
        });
    }
    Ok(Some(serde_json::from_slice(&body)?))
}

/// A socket timeout shows up as `WouldBlock`; it means the peer is late.
fn io_error(e: io::Error) -> FrameError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FrameError::TimedOut,
        _ => e.into(),
    }
}

/// Reads from a socket that all give up at one instant, however slowly
/// the bytes trickle in (a socket timeout alone restarts with every read).
/// A late read fails with `TimedOut` or `WouldBlock`.
pub struct Deadline<'a> {
    stream: &'a UnixStream,
    until: Instant,
}

impl<'a> Deadline<'a> {
    pub fn new(stream: &'a UnixStream, until: Instant) -> Deadline<'a> {
        Deadline { stream, until }
    }

    /// Arms the socket's timeout with what is left until the deadline.
    fn arm(&self) -> io::Result<()> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))
    }

    /// [`recv_fds`] before the deadline.
    pub fn recv_fds<const MAX: usize>(&self, buf: &mut [u8]) -> Result<Received, FdError> {
        self.arm()?;
        recv_fds::<MAX>(self.stream, buf)
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        (&*self.stream).read(buf)
    }
}

/// Sends `bytes` with `fds` attached as `SCM_RIGHTS` (no control message
/// when `fds` is empty); returns how many bytes went out.
pub fn send_fds(sock: impl AsFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    let sent = sendmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &[IoSlice::new(bytes)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(sent)
}

/// One message received by [`recv_fds`].
#[derive(Debug)]
pub struct Received {
    /// Bytes written to the buffer (0 on end of stream).
    pub len: usize,
    /// The descriptors it carried, close-on-exec, in the order sent.
    pub fds: Vec<OwnedFd>,
}

/// Receives one message into `buf` with at most `MAX` descriptors.
/// Interrupted and timed-out calls are `Io` errors for the caller to judge.
pub fn recv_fds<const MAX: usize>(sock: impl AsFd, buf: &mut [u8]) -> Result<Received, FdError> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX]);
    let msg = recvmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        // nix hands out no descriptor of a truncated message.
        return Err(FdError::Truncated);
    }
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just installed these descriptors in this
            // process for us; nothing else owns them.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok(Received {
        len: msg.bytes,
        fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_reject_oversize_before_reading() {
        let frame = encode_frame(&vec![1, 2, 3], 64).unwrap();
        assert_eq!(&frame[..4], &7u32.to_le_bytes());
        let got: Vec<u8> = read_frame(&mut frame.as_slice(), 64).unwrap().unwrap();
        assert_eq!(got, [1, 2, 3]);
        assert!(matches!(
            encode_frame(&"x".repeat(64), 64),
            Err(FrameError::TooLarge { len: 66 })
        ));
        let mut big = 65u32.to_le_bytes().to_vec();
        big.extend_from_slice(b"{}");
        assert!(matches!(
            read_frame::<()>(&mut big.as_slice(), 64),
            Err(FrameError::TooLarge { len: 65 })
        ));
        let cut = [10, 0, 0, 0, b'{'];
        assert!(matches!(
            read_frame::<()>(&mut cut.as_slice(), 64),
            Err(FrameError::Truncated { got: 1, want: 10 })
        ));
        assert!(read_frame::<()>(&mut [].as_slice(), 64).unwrap().is_none());
    }

    #[test]
    fn descriptors_arrive_close_on_exec_and_too_many_are_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        send_fds(&a, b"F", &[r.as_raw_fd(), w.as_raw_fd()]).unwrap();
        let mut buf = [0u8; 4];
        let got = recv_fds::<2>(&b, &mut buf).unwrap();
        assert_eq!((got.len, got.fds.len()), (1, 2));
        let flags = nix::fcntl::fcntl(&got.fds[0], nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);

        send_fds(&a, b"F", &[r.as_raw_fd(), w.as_raw_fd(), w.as_raw_fd()]).unwrap();
        let r = recv_fds::<2>(&b, &mut buf);
        assert!(matches!(r, Err(FdError::Truncated)), "{r:?}");
        send_fds(&a, b"plain", &[]).unwrap();
        let got = recv_fds::<2>(&b, &mut buf).unwrap();
        assert_eq!((got.len, got.fds.len()), (4, 0));
    }
}
