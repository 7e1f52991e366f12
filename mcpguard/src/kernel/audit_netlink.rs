//! The kernel audit subsystem over `NETLINK_AUDIT`: its status (`AUDIT_GET`,
//! `AUDIT_SET` of `enabled` and `backlog_limit`), its rule list
//! (`AUDIT_LIST_RULES`, `AUDIT_ADD_RULE` of the one rule the daemon adds,
//! `-a never,task`), and the read-only multicast group
//! `AUDIT_NLGRP_READLOG`, which any number of readers may join next to
//! auditd and journald without registering as the audit daemon.
//!
//! Hand-written rather than `netlink-packet-audit`: that crate brings an
//! async netlink stack (`netlink-proto`, `netlink-sys`, `futures`) for what
//! is here three fixed-layout structs (`nlmsghdr`, `audit_status`, a
//! field-less `audit_rule_data`) and text records; the sockets are nix's.
//!
//! # Minimum kernel version
//! `AUDIT_NLGRP_READLOG` needs 3.16 and `CAP_AUDIT_READ`; changing the
//! status or the rules needs `CAP_AUDIT_CONTROL` in the initial user and pid
//! namespace. A kernel without `CONFIG_AUDIT` refuses the socket.

use std::{
    os::fd::{AsFd, AsRawFd, OwnedFd},
    time::Duration,
};

use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::{
        socket::{
            bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr,
            SockFlag, SockProtocol, SockType,
        },
        time::TimeVal,
    },
};
use thiserror::Error;

/// `AUDIT_GET`: the status.
const AUDIT_GET: u16 = 1000;
/// `AUDIT_SET`: change the fields named in the status's mask.
const AUDIT_SET: u16 = 1001;
/// `AUDIT_LIST_RULES`: one reply per rule, then `NLMSG_DONE`.
const AUDIT_LIST_RULES: u16 = 1013;
/// `AUDIT_ADD_RULE`.
const AUDIT_ADD_RULE: u16 = 1011;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_HDRLEN: usize = 16;
/// `AUDIT_STATUS_ENABLED` and `AUDIT_STATUS_BACKLOG_LIMIT` mask bits.
const STATUS_ENABLED: u32 = 0x1;
const STATUS_BACKLOG_LIMIT: u32 = 0x10;
/// `struct audit_status` up to `backlog_wait_time` (newer kernels append
/// fields; the kernel copies what it is given).
const STATUS_LEN: usize = 40;
/// `AUDIT_BITMASK_SIZE` and `AUDIT_MAX_FIELDS`.
const BITMASK_WORDS: usize = 64;
const MAX_FIELDS: usize = 64;
/// `struct audit_rule_data` without string buffer: flags, action,
/// field_count, mask, fields, values, fieldflags, buflen.
const RULE_LEN: usize = 4 * (3 + BITMASK_WORDS + 3 * MAX_FIELDS + 1);
/// `AUDIT_FILTER_TASK` (the list a rule is on) and `AUDIT_NEVER`.
pub const FILTER_TASK: u32 = 0x01;
pub const ACTION_NEVER: u32 = 0;
/// `AUDIT_NLGRP_READLOG` (group 1), as a `nl_groups` bit.
const READLOG_GROUPS: u32 = 1;
/// How long a request waits for the kernel's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum AuditNetlinkError {
    #[error("NETLINK_AUDIT socket: {0} (kernel built without CONFIG_AUDIT?)")]
    Socket(Errno),
    #[error("joining the audit read-log group: {0} (needs CAP_AUDIT_READ)")]
    Join(Errno),
    #[error("{request}: {errno}")]
    Io { request: &'static str, errno: Errno },
    #[error("{request}: the kernel refused: {errno}")]
    Refused { request: &'static str, errno: Errno },
    #[error("{request}: malformed reply")]
    Malformed { request: &'static str },
}

/// The fields of `struct audit_status` the daemon reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditStatus {
    /// 0 off, 1 on, 2 on and locked until reboot.
    pub enabled: u32,
    /// The registered audit daemon's pid, 0 when none is.
    pub pid: u32,
    pub backlog_limit: u32,
    /// Records the kernel dropped since boot.
    pub lost: u32,
    pub backlog: u32,
}

/// One rule as `AUDIT_LIST_RULES` gives it, enough to recognise
/// `-a never,task`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The filter list (`AUDIT_FILTER_*`), with any rule flags.
    pub list: u32,
    pub action: u32,
    pub fields: u32,
}

impl Rule {
    /// `-a never,task`: no task gets an audit context.
    pub fn is_never_task(&self) -> bool {
        self.list == FILTER_TASK && self.action == ACTION_NEVER && self.fields == 0
    }
}

/// One netlink message: its type and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub kind: u16,
    pub payload: Vec<u8>,
}

/// A unicast socket for requests to the audit subsystem.
pub struct Control {
    fd: OwnedFd,
    seq: u32,
}

impl Control {
    pub fn open() -> Result<Control, AuditNetlinkError> {
        let fd = audit_socket()?;
        let io = |errno| AuditNetlinkError::Io {
            request: "socket setup",
            errno,
        };
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(io)?;
        Ok(Control { fd, seq: 0 })
    }

    pub fn status(&mut self) -> Result<AuditStatus, AuditNetlinkError> {
        const REQUEST: &str = "AUDIT_GET";
        let seq = self.send(AUDIT_GET, false, &[], REQUEST)?;
        let replies = self.replies(seq, REQUEST)?;
        let reply = replies
            .iter()
            .find(|m| m.kind == AUDIT_GET)
            .ok_or(AuditNetlinkError::Malformed { request: REQUEST })?;
        parse_status(&reply.payload).ok_or(AuditNetlinkError::Malformed { request: REQUEST })
    }

    /// Turn auditing on or off (`auditctl -e`).
    pub fn set_enabled(&mut self, on: bool) -> Result<(), AuditNetlinkError> {
        self.set_status(STATUS_ENABLED, 1, u32::from(on), "AUDIT_SET enabled")
    }

    /// How many records the kernel queues before it drops (`auditctl -b`).
    pub fn set_backlog_limit(&mut self, limit: u32) -> Result<(), AuditNetlinkError> {
        self.set_status(STATUS_BACKLOG_LIMIT, 5, limit, "AUDIT_SET backlog_limit")
    }

    fn set_status(
        &mut self,
        mask: u32,
        word: usize,
        value: u32,
        request: &'static str,
    ) -> Result<(), AuditNetlinkError> {
        let mut status = [0u8; STATUS_LEN];
        status[..4].copy_from_slice(&mask.to_ne_bytes());
        status[word * 4..word * 4 + 4].copy_from_slice(&value.to_ne_bytes());
        let seq = self.send(AUDIT_SET, true, &status, request)?;
        self.replies(seq, request).map(drop)
    }

    /// Every loaded rule.
    pub fn rules(&mut self) -> Result<Vec<Rule>, AuditNetlinkError> {
        const REQUEST: &str = "AUDIT_LIST_RULES";
        let seq = self.send(AUDIT_LIST_RULES, false, &[], REQUEST)?;
        self.replies(seq, REQUEST)?
            .iter()
            .filter(|m| m.kind == AUDIT_LIST_RULES)
            .map(|m| {
                parse_rule(&m.payload).ok_or(AuditNetlinkError::Malformed { request: REQUEST })
            })
            .collect()
    }

    /// Load `-a never,task`; one already loaded (`EEXIST`) is fine.
    pub fn add_never_task(&mut self) -> Result<(), AuditNetlinkError> {
        const REQUEST: &str = "AUDIT_ADD_RULE never,task";
        let seq = self.send(AUDIT_ADD_RULE, true, &never_task_rule(), REQUEST)?;
        match self.replies(seq, REQUEST) {
            Err(AuditNetlinkError::Refused {
                errno: Errno::EEXIST,
                ..
            }) => Ok(()),
            other => other.map(drop),
        }
    }

    fn send(
        &mut self,
        kind: u16,
        ack: bool,
        payload: &[u8],
        request: &'static str,
    ) -> Result<u32, AuditNetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let flags = NLM_F_REQUEST | if ack { NLM_F_ACK } else { 0 };
        let msg = frame(kind, flags, self.seq, payload);
        send(self.fd.as_raw_fd(), &msg, MsgFlags::empty())
            .map_err(|errno| AuditNetlinkError::Io { request, errno })?;
        Ok(self.seq)
    }

    /// The kernel's answers to request `seq`, up to its ack, `NLMSG_DONE`
    /// or the status reply; an error ack is [`AuditNetlinkError::Refused`].
    fn replies(
        &mut self,
        seq: u32,
        request: &'static str,
    ) -> Result<Vec<Message>, AuditNetlinkError> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if !readable(&self.fd, REPLY_TIMEOUT)
                .map_err(|errno| AuditNetlinkError::Io { request, errno })?
            {
                return Err(AuditNetlinkError::Io {
                    request,
                    errno: Errno::ETIMEDOUT,
                });
            }
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(|errno| AuditNetlinkError::Io { request, errno })?;
            for (header, payload) in split(&buf[..n]) {
                if header.seq != seq {
                    continue;
                }
                match header.kind {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .ok_or(AuditNetlinkError::Malformed { request })?;
                        if code != 0 {
                            let errno = Errno::from_raw(-code);
                            return Err(AuditNetlinkError::Refused { request, errno });
                        }
                        return Ok(out);
                    }
                    NLMSG_DONE => return Ok(out),
                    AUDIT_GET => {
                        out.push(Message {
                            kind: header.kind,
                            payload: payload.to_vec(),
                        });
                        return Ok(out);
                    }
                    kind => out.push(Message {
                        kind,
                        payload: payload.to_vec(),
                    }),
                }
            }
        }
    }
}

/// A member of the read-log multicast group: receives a copy of every
/// record the kernel's audit thread sends, whoever else reads them.
pub struct ReadLog {
    fd: OwnedFd,
}

/// What one [`ReadLog::recv`] got.
pub enum Received {
    /// Records (possibly none, after a timeout).
    Messages(Vec<Message>),
    /// The socket's buffer overflowed: records were dropped before this
    /// reader saw them (`ENOBUFS`).
    Overrun,
}

impl ReadLog {
    /// Join with a receive buffer of `rcvbuf` bytes (forced past
    /// `rmem_max`, which root may).
    pub fn join(rcvbuf: usize) -> Result<ReadLog, AuditNetlinkError> {
        let fd = audit_socket()?;
        setsockopt(&fd, sockopt::RcvBufForce, &rcvbuf).map_err(|errno| AuditNetlinkError::Io {
            request: "SO_RCVBUFFORCE",
            errno,
        })?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, READLOG_GROUPS))
            .map_err(AuditNetlinkError::Join)?;
        Ok(ReadLog { fd })
    }

    /// Waits up to `timeout` for records.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> Result<Received, AuditNetlinkError> {
        let io = |errno| AuditNetlinkError::Io {
            request: "reading the audit read-log",
            errno,
        };
        if !readable(&self.fd, timeout).map_err(io)? {
            return Ok(Received::Messages(Vec::new()));
        }
        match recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => Ok(Received::Messages(
                split(&buf[..n])
                    .map(|(h, payload)| Message {
                        kind: h.kind,
                        payload: payload.to_vec(),
                    })
                    .collect(),
            )),
            Err(Errno::ENOBUFS) => Ok(Received::Overrun),
            Err(Errno::EAGAIN | Errno::EINTR) => Ok(Received::Messages(Vec::new())),
            Err(errno) => Err(io(errno)),
        }
    }
}

fn audit_socket() -> Result<OwnedFd, AuditNetlinkError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkAudit,
    )
    .map_err(AuditNetlinkError::Socket)?;
    // A request that the kernel never answers must not hang the daemon.
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &TimeVal::new(REPLY_TIMEOUT.as_secs() as _, 0),
    )
    .map_err(|errno| AuditNetlinkError::Io {
        request: "SO_RCVTIMEO",
        errno,
    })?;
    Ok(fd)
}

fn readable(fd: &OwnedFd, timeout: Duration) -> Result<bool, Errno> {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(errno) => Err(errno),
    }
}

/// A netlink message: header, then the payload padded to 4 bytes.
fn frame(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + payload.len();
    let mut msg = Vec::with_capacity(len.next_multiple_of(4));
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(payload);
    msg.resize(len.next_multiple_of(4), 0);
    msg
}

struct Header {
    kind: u16,
    seq: u32,
}

/// The messages of one datagram; a truncated tail is ignored.
fn split(mut buf: &[u8]) -> impl Iterator<Item = (Header, &[u8])> {
    std::iter::from_fn(move || {
        let len = u32_at(buf, 0)? as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let header = Header {
            kind: u16::from_ne_bytes([buf[4], buf[5]]),
            seq: u32_at(buf, 8)?,
        };
        let payload = &buf[NLMSG_HDRLEN..len];
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((header, payload))
    })
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn parse_status(payload: &[u8]) -> Option<AuditStatus> {
    Some(AuditStatus {
        enabled: u32_at(payload, 4)?,
        pid: u32_at(payload, 12)?,
        backlog_limit: u32_at(payload, 20)?,
        lost: u32_at(payload, 24)?,
        backlog: u32_at(payload, 28)?,
    })
}

fn parse_rule(payload: &[u8]) -> Option<Rule> {
    Some(Rule {
        list: u32_at(payload, 0)?,
        action: u32_at(payload, 4)?,
        fields: u32_at(payload, 8)?,
    })
}

/// `-a never,task`: the task list, action never, every syscall bit set
/// (as auditctl sends it), no fields.
fn never_task_rule() -> Vec<u8> {
    let mut rule = vec![0u8; RULE_LEN];
    rule[..4].copy_from_slice(&FILTER_TASK.to_ne_bytes());
    rule[4..8].copy_from_slice(&ACTION_NEVER.to_ne_bytes());
    for word in rule[12..12 + 4 * BITMASK_WORDS].chunks_exact_mut(4) {
        word.copy_from_slice(&u32::MAX.to_ne_bytes());
    }
    rule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_back_into_their_messages() {
        let mut buf = frame(1423, 0, 7, b"abc");
        buf.extend(frame(NLMSG_DONE, 0, 8, &[]));
        let got: Vec<_> = split(&buf)
            .map(|(h, p)| (h.kind, h.seq, p.to_vec()))
            .collect();
        assert_eq!(
            got,
            [(1423, 7, b"abc".to_vec()), (NLMSG_DONE, 8, Vec::new())]
        );
        // A length past the datagram ends the walk instead of reading on.
        let mut bad = frame(1423, 0, 1, b"x");
        bad[0] = 200;
        assert_eq!(split(&bad).count(), 0);
    }

    #[test]
    fn the_never_task_rule_has_the_kernel_layout() {
        let rule = never_task_rule();
        assert_eq!(rule.len(), 1040);
        let parsed = parse_rule(&rule).unwrap();
        assert!(parsed.is_never_task());
        assert!(!Rule { list: 4, ..parsed }.is_never_task());
    }

    #[test]
    fn status_fields_are_read_at_their_offsets() {
        let words: Vec<u8> = (0u32..10).flat_map(u32::to_ne_bytes).collect();
        let s = parse_status(&words).unwrap();
        assert_eq!((s.enabled, s.pid, s.backlog_limit, s.lost), (1, 3, 5, 6));
        assert_eq!(parse_status(&words[..20]), None);
    }
}
