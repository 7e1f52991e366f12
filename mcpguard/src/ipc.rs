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
    io::{self, IoSlice, Read, Write},
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
    time::Instant,
};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
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
///
/// On `MSG_CTRUNC` the kernel has still installed the descriptors that fit;
/// they are taken (and so closed) before the message is refused, so a
/// client that sends too many cannot leak descriptors into the daemon.
pub fn recv_fds<const MAX: usize>(sock: impl AsFd, buf: &mut [u8]) -> Result<Received, FdError> {
    let fd_bytes = u32::try_from(MAX * size_of::<RawFd>()).expect("MAX is a small constant");
    // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    // u64 words keep the buffer aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(size_of::<u64>())];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = space;
    // SAFETY: `hdr` points at `iov` (over `buf`) and `control`, both live
    // and writable for the lengths given.
    let n = unsafe { libc::recvmsg(sock.as_fd().as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: `hdr` was just filled by a successful recvmsg over `control`.
    let fds = unsafe { take_rights(&hdr) };
    if hdr.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(FdError::Truncated);
    }
    Ok(Received {
        len: n as usize,
        fds,
    })
}

/// Every descriptor in the `SCM_RIGHTS` messages of `hdr`, owned.
///
/// # Safety
/// `hdr` must have been filled by a successful `recvmsg`, with its control
/// buffer still alive: the kernel installed each descriptor listed there
/// for this process, and nothing else owns them yet.
unsafe fn take_rights(hdr: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR stay inside the control buffer
    // `hdr` describes, and each header the kernel wrote there gives the
    // length of its own data.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !cmsg.is_null() {
        // SAFETY: non-null headers from the walk are inside the buffer.
        let (level, kind, len) =
            unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: as above; the data follows its header.
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            let header = data as usize - cmsg as usize;
            let count = len.saturating_sub(header) / size_of::<RawFd>();
            for i in 0..count {
                // SAFETY: `count` descriptors lie in this message's data,
                // installed for us by the kernel and owned by no one else.
                fds.push(unsafe {
                    OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.cast::<RawFd>().add(i)))
                });
            }
        }
        // SAFETY: as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
    }
    fds
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

        // Too many: refused, and the two that fit are closed again. The
        // pipe reads end-of-file only once every copy of its write end is.
        send_fds(&a, b"F", &[w.as_raw_fd(), w.as_raw_fd(), w.as_raw_fd()]).unwrap();
        let refused = recv_fds::<2>(&b, &mut buf);
        assert!(matches!(refused, Err(FdError::Truncated)), "{refused:?}");
        drop((w, got));
        nix::fcntl::fcntl(
            &r,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        assert_eq!(nix::unistd::read(&r, &mut buf), Ok(0), "a write end leaked");
        send_fds(&a, b"plain", &[]).unwrap();
        let plain = recv_fds::<2>(&b, &mut buf).unwrap();
        assert_eq!((plain.len, plain.fds.len()), (4, 0));
    }
}
