//! The wire between `mcpguard run` and the daemon, over the daemon's Unix
//! stream socket.
//!
//! The client first sends one byte carrying its stdin, stdout and stderr as
//! SCM_RIGHTS, then length-prefixed JSON frames (u32 little-endian length,
//! at most [`MAX_FRAME`] bytes). The daemon answers with frames too.
//!
//! Queries (`mcpguard status`, and `mcpguard audit` by a user who cannot read
//! the log) send the same first byte with no descriptors ([`Hello::Query`]),
//! then one [`Request::Status`], [`Request::Audit`], [`Request::Approvals`],
//! [`Request::Decide`] or [`Request::Clear`] frame of at most
//! [`MAX_QUERY_FRAME`] bytes.
//!
//! A frame's body is buffered as it arrives, never allocated from its
//! length prefix alone, and the daemon reads requests through a
//! [`Deadline`], so a client that announces a large frame and trickles it
//! (or nothing) holds little memory and no thread for long.

use std::{
    io::{self, Read, Write},
    os::{
        fd::{OwnedFd, RawFd},
        unix::net::UnixStream,
    },
};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use thiserror::Error;

pub use crate::ipc::Deadline;
use crate::{audit::query::Filter, ipc};

/// What `mcpguard run` asks the daemon to start (on the wire, its fields
/// sit beside the request's `type` and `version`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LaunchRequest {
    /// Where the client found the policy (for audit records).
    pub policy_path: String,
    /// The policy text, read by the client as the calling user, so the
    /// daemon never opens user-chosen paths as root.
    pub policy_text: String,
    pub argv: Vec<String>,
    pub cwd: String,
    /// The client's environment; the daemon keeps only `[env] pass`.
    pub env: Vec<(String, String)>,
    /// `mcpguard policy learn`: enforce nothing, record everything, and
    /// answer with a proposed policy before the exit status.
    #[serde(default)]
    pub learn: bool,
}

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
/// Largest request the daemon reads from a connection that sent no
/// descriptors: a query is a few filters, never a policy or an environment.
pub const MAX_QUERY_FRAME: u32 = 64 << 10;
/// First byte of a query connection (sent without descriptors).
pub const QUERY_HELLO: u8 = b'Q';

#[derive(Debug, Error)]
pub enum ProtoError {
    #[error("daemon socket I/O: {0}")]
    Io(#[from] io::Error),
    #[error("daemon socket: {0}")]
    Sys(#[from] nix::Error),
    #[error("frame of {0} bytes exceeds the size limit")]
    TooLarge(u32),
    #[error("frame cut short: {got} of {want} bytes arrived")]
    Truncated { got: usize, want: u32 },
    #[error("the request did not arrive in time")]
    TimedOut,
    #[error("the connection closed before its first byte")]
    Closed,
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
        #[serde(flatten)]
        request: LaunchRequest,
    },
    /// Forward a signal to the server.
    Signal { signal: i32 },
    /// `mcpguard status`: the daemon, its layers and the caller's servers
    /// (every server for root).
    Status { version: u32 },
    /// `mcpguard audit` for a caller who cannot read the log: the records
    /// of its own servers (every record for root).
    Audit { version: u32, query: Filter },
    /// `mcpguard approvals`: the caller's calls that wait for a person,
    /// and its tainted sessions.
    Approvals { version: u32 },
    /// `mcpguard approve`/`deny`.
    Decide {
        version: u32,
        approval: u64,
        approve: bool,
    },
    /// `mcpguard clear`: end a session's taint.
    Clear { version: u32, launch: String },
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
    /// After a learning run: the proposed policy and what was left out.
    Learned {
        policy: String,
        notes: Vec<String>,
    },
    /// A call of this server waits for a person (told to the waiting
    /// `mcpguard run`, which tells the person).
    Approval {
        approval: u64,
        tool: String,
        why: crate::mcp::approve::Why,
        timeout_secs: u64,
    },
    /// The answer to [`Request::Approvals`].
    Approvals {
        pending: Vec<Pending>,
        tainted: Vec<Tainted>,
    },
    /// A decision or a clear was carried out.
    Done {
        message: String,
    },
    /// The answer to [`Request::Status`].
    Status(Box<super::status::StatusReport>),
    /// Audit records, each a line of the log as written, oldest first.
    Records {
        lines: Vec<String>,
    },
    /// The end of an audit stream that does not follow: how many records
    /// were sent, how many were too long to send, and the names the
    /// caller's records carry (the client checks `--server`, `--launch` and
    /// `--tool` against them; a daemon from before they were sent sends
    /// none, and nothing is checked).
    End {
        shown: u64,
        skipped: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        known: Option<crate::audit::query::Known>,
    },
}

/// A waiting call, as `mcpguard approvals` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub approval: u64,
    pub server: String,
    pub launch: String,
    pub uid: u32,
    pub tool: String,
    /// The arguments as the audit records them (redacted).
    pub arguments: serde_json::Value,
    pub why: crate::mcp::approve::Why,
    pub since: String,
    /// Seconds left before it is refused.
    pub remaining_secs: u64,
    /// Whether the client was asked too (elicitation).
    pub elicitation: bool,
}

/// A tainted session, as `mcpguard approvals` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tainted {
    pub server: String,
    pub launch: String,
    pub uid: u32,
    pub taint: crate::mcp::approve::Taint,
}

/// What the first message of a connection carried.
#[derive(Debug)]
pub enum Hello {
    /// `mcpguard run`'s stdin, stdout and stderr: a launch request follows.
    Stdio([OwnedFd; 3]),
    /// No descriptors: a query follows.
    Query,
}

pub fn write_frame<T: Serialize>(stream: &mut impl Write, msg: &T) -> Result<(), ProtoError> {
    Ok(ipc::write_frame(stream, msg, MAX_FRAME as usize)?)
}

/// Read one frame; `Ok(None)` on a clean end of stream.
pub fn read_frame<T: DeserializeOwned>(stream: &mut impl Read) -> Result<Option<T>, ProtoError> {
    read_frame_limited(stream, MAX_FRAME)
}

/// [`read_frame`] with a smaller size limit (at most [`MAX_FRAME`]),
/// checked before anything is allocated.
pub fn read_frame_limited<T: DeserializeOwned>(
    stream: &mut impl Read,
    max: u32,
) -> Result<Option<T>, ProtoError> {
    Ok(ipc::read_frame(stream, max.min(MAX_FRAME) as usize)?)
}

impl From<ipc::FrameError> for ProtoError {
    fn from(e: ipc::FrameError) -> ProtoError {
        match e {
            ipc::FrameError::Io(e) => ProtoError::Io(e),
            ipc::FrameError::TooLarge { len } => {
                ProtoError::TooLarge(u32::try_from(len).unwrap_or(u32::MAX))
            }
            ipc::FrameError::Truncated { got, want } => ProtoError::Truncated { got, want },
            ipc::FrameError::TimedOut => ProtoError::TimedOut,
            ipc::FrameError::Json(e) => ProtoError::Json(e),
        }
    }
}

/// A failed socket call, as the errno it is.
fn sys_error(e: io::Error) -> ProtoError {
    match e.raw_os_error() {
        Some(errno) => ProtoError::Sys(nix::Error::from_raw(errno)),
        None => ProtoError::Io(e),
    }
}

/// Send `fds` as SCM_RIGHTS on one marker byte.
pub fn send_fds(stream: &UnixStream, fds: &[RawFd]) -> Result<(), ProtoError> {
    ipc::send_fds(stream, b"F", fds).map_err(sys_error)?;
    Ok(())
}

/// Open a query connection: one byte, no descriptors.
pub fn send_query_hello(stream: &UnixStream) -> Result<(), ProtoError> {
    (&*stream).write_all(&[QUERY_HELLO])?;
    Ok(())
}

/// Receive exactly three descriptors (stdin, stdout, stderr), close-on-exec
/// so they can never leak into another server.
pub fn recv_stdio(stream: &UnixStream) -> Result<[OwnedFd; 3], ProtoError> {
    match recv_hello(stream)? {
        Hello::Stdio(fds) => Ok(fds),
        Hello::Query => Err(ProtoError::Fds(0)),
    }
}

/// Receive a connection's first byte: with exactly three descriptors
/// (close-on-exec, so they can never leak into another server) it opens a
/// launch, with none a query. Any other count is refused and the
/// descriptors are closed.
pub fn recv_hello(stream: &UnixStream) -> Result<Hello, ProtoError> {
    let mut byte = [0u8; 1];
    let msg = match ipc::recv_fds::<4>(stream, &mut byte) {
        Ok(msg) => msg,
        // Reported as the errno a truncated message has always given.
        Err(ipc::FdError::Truncated) => return Err(ProtoError::Sys(nix::Error::ENOBUFS)),
        Err(ipc::FdError::Io(e)) => {
            return Err(match sys_error(e) {
                ProtoError::Sys(nix::Error::EAGAIN) => ProtoError::TimedOut,
                e => e,
            })
        }
    };
    if msg.len == 0 && msg.fds.is_empty() {
        return Err(ProtoError::Closed);
    }
    if msg.len != 1 {
        return Err(ProtoError::Fds(msg.fds.len()));
    }
    match <[OwnedFd; 3]>::try_from(msg.fds) {
        Ok(stdio) => Ok(Hello::Stdio(stdio)),
        Err(fds) if fds.is_empty() => Ok(Hello::Query),
        Err(fds) => Err(ProtoError::Fds(fds.len())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn a_launch_request_keeps_its_flat_wire_form() {
        let wire = r#"{"type":"launch","version":1,"policy_path":"/p.toml","policy_text":"name = \"x\"\n","argv":["srv"],"cwd":"/","env":[["A","1"]]}"#;
        let Request::Launch { version, request } = serde_json::from_str(wire).unwrap() else {
            panic!("not a launch");
        };
        assert_eq!(
            (version, request.argv.as_slice(), request.learn),
            (1, &["srv".to_string()][..], false)
        );
        let back = serde_json::to_value(Request::Launch { version, request }).unwrap();
        let mut want: serde_json::Value = serde_json::from_str(wire).unwrap();
        want["learn"] = false.into();
        assert_eq!(back, want);
    }

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
    fn a_byte_without_descriptors_is_a_query_and_its_frame_is_bounded() {
        let (a, b) = UnixStream::pair().unwrap();
        send_query_hello(&a).unwrap();
        assert!(matches!(recv_hello(&b), Ok(Hello::Query)));
        write_frame(&mut &a, &Request::Status { version: VERSION }).unwrap();
        let got: Request = read_frame_limited(&mut &b, MAX_QUERY_FRAME)
            .unwrap()
            .unwrap();
        assert!(matches!(got, Request::Status { version: VERSION }));
        // The length is checked before anything is allocated or read.
        let mut big = (MAX_QUERY_FRAME + 1).to_le_bytes().to_vec();
        big.extend_from_slice(b"{}");
        let err = read_frame_limited::<Request>(&mut big.as_slice(), MAX_QUERY_FRAME).unwrap_err();
        assert!(matches!(err, ProtoError::TooLarge(n) if n == MAX_QUERY_FRAME + 1));
        // A launch connection still needs its three descriptors.
        send_query_hello(&a).unwrap();
        assert!(matches!(recv_stdio(&b), Err(ProtoError::Fds(0))));
    }

    #[test]
    fn rejects_wrong_descriptor_count() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        send_fds(&a, &[r.as_raw_fd()]).unwrap();
        assert!(matches!(recv_stdio(&b), Err(ProtoError::Fds(1))));
    }
}
