//! The wire between `mcpguard run` and the daemon, over the daemon's Unix
//! stream socket.
//!
//! The client first sends one byte carrying its stdin, stdout and stderr as
//! SCM_RIGHTS, then length-prefixed JSON frames (u32 little-endian length,
//! at most [`MAX_FRAME`] bytes). The daemon answers with frames too.

use std::{
    io::{self, IoSlice, IoSliceMut, Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use thiserror::Error;

/// Protocol version; bumped on incompatible changes.
pub const VERSION: u32 = 1;
/// Signals `mcpguard run` forwards to the server and the daemon accepts:
/// the ones a terminal or an MCP client sends to stop or poke a server.
pub const FORWARDED_SIGNALS: &[nix::sys::signal::Signal] = &[
    nix::sys::signal::Signal::SIGINT,
    nix::sys::signal::Signal::SIGTERM,
    nix::sys::signal::Signal::SIGHUP,
    nix::sys::signal::Signal::SIGQUIT,
    nix::sys::signal::Signal::SIGUSR1,
    nix::sys::signal::Signal::SIGUSR2,
];
/// Largest frame either side accepts (a request carries the policy text and
/// the environment).
pub const MAX_FRAME: u32 = 4 << 20;

#[derive(Debug, Error)]
pub enum ProtoError {
    #[error("daemon socket I/O: {0}")]
    Io(#[from] io::Error),
    #[error("daemon socket: {0}")]
    Sys(#[from] nix::Error),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(u32),
    #[error("malformed frame: {0}")]
    Json(#[from] serde_json::Error),
    #[error("expected stdin, stdout and stderr as SCM_RIGHTS, got {0} descriptors")]
    Fds(usize),
    #[error(
        "protocol version {got} is not the daemon's {VERSION}; use matching mcpguard binaries"
    )]
    Version { got: u32 },
}

/// Client → daemon.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    Launch {
        version: u32,
        /// Where the client found the policy (for audit records).
        policy_path: String,
        /// The policy text, read by the client as the calling user, so the
        /// daemon never opens user-chosen paths as root.
        policy_text: String,
        argv: Vec<String>,
        cwd: String,
        /// The client's environment; the daemon keeps only `[env] pass`.
        env: Vec<(String, String)>,
    },
    /// Forward a signal to the server.
    Signal { signal: i32 },
}

/// Daemon → client.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Started {
        launch: String,
        pid: u32,
    },
    Error {
        message: String,
    },
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

pub fn write_frame<T: Serialize>(stream: &mut impl Write, msg: &T) -> Result<(), ProtoError> {
    let body = serde_json::to_vec(msg)?;
    let len = u32::try_from(body.len()).map_err(|_| ProtoError::TooLarge(u32::MAX))?;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge(len));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&body);
    stream.write_all(&buf)?;
    Ok(())
}

/// Read one frame; `Ok(None)` on a clean end of stream.
pub fn read_frame<T: DeserializeOwned>(stream: &mut impl Read) -> Result<Option<T>, ProtoError> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge(len));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body)?;
    Ok(Some(serde_json::from_slice(&body)?))
}

/// Send `fds` as SCM_RIGHTS on one marker byte.
pub fn send_fds(stream: &UnixStream, fds: &[RawFd]) -> Result<(), ProtoError> {
    let iov = [IoSlice::new(b"F")];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receive exactly three descriptors (stdin, stdout, stderr), close-on-exec
/// so they can never leak into another server.
pub fn recv_stdio(stream: &UnixStream) -> Result<[OwnedFd; 3], ProtoError> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            fds.extend(received);
        }
    }
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    // SAFETY: the kernel just installed these descriptors in our table and
    // nothing else owns them.
    let mut owned: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) })
        .collect();
    if msg.bytes != 1 || truncated || owned.len() != 3 {
        return Err(ProtoError::Fds(owned.len()));
    }
    let err = owned.pop().ok_or(ProtoError::Fds(0))?;
    let out = owned.pop().ok_or(ProtoError::Fds(0))?;
    let inp = owned.pop().ok_or(ProtoError::Fds(0))?;
    Ok([inp, out, err])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_reject_oversize() {
        let mut buf = Vec::new();
        write_frame(
            &mut buf,
            &Response::Exited {
                code: Some(3),
                signal: None,
            },
        )
        .unwrap();
        let got: Response = read_frame(&mut buf.as_slice()).unwrap().unwrap();
        assert!(matches!(
            got,
            Response::Exited {
                code: Some(3),
                signal: None
            }
        ));

        let mut huge = (MAX_FRAME + 1).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        let err = read_frame::<Response>(&mut huge.as_slice()).unwrap_err();
        assert!(matches!(err, ProtoError::TooLarge(n) if n == MAX_FRAME + 1));

        let none: Option<Response> = read_frame(&mut [].as_slice()).unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn passes_three_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        send_fds(&a, &[r.as_raw_fd(), w.as_raw_fd(), w.as_raw_fd()]).unwrap();
        let [inp, out, _err] = recv_stdio(&b).unwrap();
        nix::unistd::write(&out, b"hi").unwrap();
        let mut got = [0u8; 2];
        nix::unistd::read(&inp, &mut got).unwrap();
        assert_eq!(&got, b"hi");
        let flags = nix::fcntl::fcntl(&inp, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(
            flags & libc::FD_CLOEXEC,
            0,
            "received fds must be close-on-exec"
        );
    }

    #[test]
    fn rejects_wrong_descriptor_count() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        send_fds(&a, &[r.as_raw_fd()]).unwrap();
        assert!(matches!(recv_stdio(&b), Err(ProtoError::Fds(1))));
    }
}
