//! Who sent a query: the cgroup and uid of the socket at the other end of
//! a loopback datagram or connection, asked of the kernel through
//! `sock_diag` (`NETLINK_SOCK_DIAG`, `SOCK_DIAG_BY_FAMILY`, one exact
//! lookup per question; the cgroup id attribute needs Linux 5.7).
//!
//! A resolver answers only sockets in its own server's cgroup: anything
//! else on the machine can send to a loopback port, but only the server's
//! own processes create sockets in its cgroup. A socket the kernel cannot
//! find (gone already, or of a family the lookup does not cover) counts as
//! a stranger's.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// `NETLINK_SOCK_DIAG` (also known as `NETLINK_INET_DIAG`).
const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_CGROUP_ID: u16 = 21;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, sockid.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg` up to the attributes.
const MSG_LEN: usize = 72;
/// Offset of `idiag_uid` in `struct inet_diag_msg`.
const MSG_UID: usize = 64;

/// The socket at the other end, as the kernel knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub cgroup: u64,
    pub uid: u32,
}

/// Which lookup the kernel does: UDP finds the socket a datagram from
/// `local` to `peer` would reach, TCP the connected socket whose local end
/// is `peer` (the two lookups swap source and destination).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

/// A `NETLINK_SOCK_DIAG` socket, reused across lookups by one thread.
pub struct Diag(OwnedFd);

impl Diag {
    pub fn open() -> io::Result<Diag> {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor; nothing else
        // owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: SO_RCVTIMEO takes a timeval, which `tv` is.
        let ret = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Diag(fd))
    }

    /// The socket at `peer` talking to our socket at `local`; `None` if
    /// the kernel has none (or the two are of different families).
    pub fn peer(
        &self,
        proto: Proto,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> io::Result<Option<Peer>> {
        let Some(req) = request(proto, local, peer) else {
            return Ok(None);
        };
        // SAFETY: `req` is a complete netlink message; the kernel reads
        // exactly its length. A zeroed sockaddr_nl addresses the kernel.
        let sent = unsafe {
            let mut to: libc::sockaddr_nl = std::mem::zeroed();
            to.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.0.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 1024];
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(parse(&buf[..n as usize]))
    }
}

/// The 16 address bytes and the port of `a`, network order, for a sockid.
fn sockid_addr(a: &SocketAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match a.ip() {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.copy_from_slice(&v6.octets()),
    }
    out
}

/// The request message; `None` when the two ends differ in family.
fn request(proto: Proto, local: SocketAddr, peer: SocketAddr) -> Option<Vec<u8>> {
    if local.is_ipv4() != peer.is_ipv4() {
        return None;
    }
    let family = if local.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    } as u8;
    // UDP: the socket a datagram from src to dst reaches (local = dst).
    // TCP: the socket whose local end is src, connected to dst.
    let (src, dst, protocol) = match proto {
        Proto::Udp => (local, peer, libc::IPPROTO_UDP),
        Proto::Tcp => (peer, local, libc::IPPROTO_TCP),
    };
    let len = NLMSG_HDR + REQ_LEN;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    m.extend_from_slice(&[family, protocol as u8, 0, 0]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    m.extend_from_slice(&src.port().to_be_bytes());
    m.extend_from_slice(&dst.port().to_be_bytes());
    m.extend_from_slice(&sockid_addr(&src));
    m.extend_from_slice(&sockid_addr(&dst));
    m.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // INET_DIAG_NOCOOKIE
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    debug_assert_eq!(m.len(), len);
    Some(m)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The peer in the kernel's answer; `None` for an error message (no such
/// socket) or an answer without a cgroup id.
fn parse(b: &[u8]) -> Option<Peer> {
    let len = u32_at(b, 0)? as usize;
    if u16_at(b, 4)? != SOCK_DIAG_BY_FAMILY || len > b.len() || len < NLMSG_HDR + MSG_LEN {
        return None;
    }
    let uid = u32_at(b, NLMSG_HDR + MSG_UID)?;
    let mut at = NLMSG_HDR + MSG_LEN;
    while at + 4 <= len {
        let alen = usize::from(u16_at(b, at)?);
        if alen < 4 || at + alen > len {
            return None;
        }
        if u16_at(b, at + 2)? == INET_DIAG_CGROUP_ID && alen >= 12 {
            let cgroup = u64::from_ne_bytes(b.get(at + 4..at + 12)?.try_into().ok()?);
            return Some(Peer { cgroup, uid });
        }
        at += (alen + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream, UdpSocket};

    use super::*;

    /// This test process's cgroup id: the inode of its cgroup v2 directory.
    fn own_cgroup() -> u64 {
        use std::os::unix::fs::MetadataExt;
        let text = crate::kernel::proc::read_cgroup(None).unwrap();
        let path = crate::kernel::proc::unified_cgroup(&text).expect("cgroup v2");
        std::fs::metadata(format!("/sys/fs/cgroup{path}"))
            .unwrap()
            .ino()
    }

    #[test]
    fn finds_the_sender_of_a_datagram_and_the_client_of_a_connection() {
        let diag = Diag::open().unwrap();
        let me = Peer {
            cgroup: own_cgroup(),
            uid: nix::unistd::geteuid().as_raw(),
        };
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("0.0.0.0:0").unwrap();
        client.send_to(b"q", server.local_addr().unwrap()).unwrap();
        let (_, from) = server.recv_from(&mut [0u8; 8]).unwrap();
        let local = server.local_addr().unwrap();
        assert_eq!(diag.peer(Proto::Udp, local, from).unwrap(), Some(me));
        drop(client);
        assert_eq!(diag.peer(Proto::Udp, local, from).unwrap(), None);

        let listener = TcpListener::bind("[::1]:0").unwrap();
        let _conn = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, from) = listener.accept().unwrap();
        let local = accepted.local_addr().unwrap();
        assert_eq!(diag.peer(Proto::Tcp, local, from).unwrap(), Some(me));
        let other: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(diag.peer(Proto::Tcp, local, other).unwrap(), None);
    }
}
