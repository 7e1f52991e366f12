//! A per-server DNS view: the resolver the daemon runs for each guarded
//! server that has one.
//!
//! The cgroup egress programs redirect every port-53 destination of the
//! server (UDP and TCP, any resolver address, IPv4 or IPv6) to this
//! server's own loopback port, so the resolver knows who asks without
//! guessing. A query for a name the policy allows is forwarded to the
//! upstream resolver; the A/AAAA addresses in the answer (through CNAME
//! chains) are added to this server's egress allow map for their TTL plus
//! [`GRACE`], with the ports of the rule that allowed the name. Any other
//! name gets NXDOMAIN and a denied `dns` record carrying the name, which is
//! how an exfiltration attempt (`<secret>.attacker.example`) shows up.
//!
//! Any local process can send to a loopback port, so each query's sender
//! is looked up first ([`peer`]): only sockets in the server's own cgroup
//! are answered. Others get no answer and a `dns_stranger` record that
//! names no server. TCP clients are served each on their own thread, at
//! most [`MAX_TCP_CLIENTS`] at once and each within fixed time limits, so
//! no client holds the resolver; UDP has its own threads and never waits
//! for TCP.

pub mod hosts_file;
pub mod peer;
pub mod view;

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use thiserror::Error;
use tracing::{debug, warn};

pub use self::view::{DnsView, MapSink, GRACE};

/// How long an upstream query may take before the client gets SERVFAIL.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the resolver threads look at their stop flag (and expire
/// allowances).
const TICK: Duration = Duration::from_millis(50);
/// Largest DNS message over TCP (the length prefix's limit).
const MAX_TCP_MSG: usize = 65535;
/// How long one TCP message (length and body) may take to arrive, and how
/// long one TCP connection may last: a client trickling bytes holds one
/// of [`MAX_TCP_CLIENTS`] slots for no longer.
const TCP_MSG_TIME: Duration = Duration::from_secs(5);
const TCP_CONN_TIME: Duration = Duration::from_secs(30);
/// TCP connections one resolver serves at once (per address family); a
/// connection beyond that is closed at once.
pub const MAX_TCP_CLIENTS: usize = 8;

#[derive(Debug, Error)]
pub enum DnsError {
    #[error("cannot open a resolver port on loopback: {0}")]
    Bind(#[source] io::Error),
    #[error("cannot start a resolver thread: {0}")]
    Thread(#[source] io::Error),
}

/// The upstream resolver: `--upstream-dns`, else the first `nameserver` of
/// `/etc/resolv.conf`.
pub fn upstream_from_resolv_conf(text: &str) -> Option<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .find_map(|addr| {
            addr.parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
}

/// A running resolver for one server: UDP and TCP on `127.0.0.1:port`
/// and `[::1]:port`. Dropping it stops its threads.
pub struct Resolver {
    pub port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Resolver {
    pub fn start(view: Arc<DnsView>) -> Result<Resolver, DnsError> {
        let (udp4, udp6, tcp4, tcp6) = bind_pair().map_err(DnsError::Bind)?;
        let port = udp4.local_addr().map_err(DnsError::Bind)?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, sock) in [Some(udp4), udp6].into_iter().flatten().enumerate() {
            let (view, stop) = (view.clone(), stop.clone());
            // One of the UDP threads also expires allowances.
            let sweeper = i == 0;
            threads.push(spawn("dns-udp", move || {
                serve_udp(sock, &view, &stop, sweeper)
            })?);
        }
        for sock in [Some(tcp4), tcp6].into_iter().flatten() {
            let (view, stop) = (view.clone(), stop.clone());
            threads.push(spawn("dns-tcp", move || serve_tcp(sock, view, stop))?);
        }
        Ok(Resolver {
            port,
            stop,
            threads,
        })
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, DnsError> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(256 * 1024)
        .spawn(f)
        .map_err(DnsError::Thread)
}

type Sockets = (
    UdpSocket,
    Option<UdpSocket>,
    TcpListener,
    Option<TcpListener>,
);

/// UDP and TCP on one port, IPv4 loopback always, IPv6 loopback where the
/// kernel has it (a v6 destination is redirected to `::1`).
fn bind_pair() -> io::Result<Sockets> {
    let mut last = None;
    for _ in 0..16 {
        let udp4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = udp4.local_addr()?.port();
        let tcp4 = match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(t) => t,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let v6 = (
            UdpSocket::bind((Ipv6Addr::LOCALHOST, port)),
            TcpListener::bind((Ipv6Addr::LOCALHOST, port)),
        );
        match v6 {
            (Ok(u), Ok(t)) => return Ok((udp4, Some(u), tcp4, Some(t))),
            // No IPv6 loopback at all: IPv4 only.
            (Err(e), _) | (_, Err(e)) if e.kind() == io::ErrorKind::AddrNotAvailable => {
                return Ok((udp4, None, tcp4, None))
            }
            (Err(e), _) | (_, Err(e)) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free loopback port")))
}

/// Whether the sender at `from` is one of the server's own sockets; a
/// stranger's query is counted (and recorded) here.
fn from_server(
    diag: &peer::Diag,
    view: &DnsView,
    transport: Transport,
    local: SocketAddr,
    from: SocketAddr,
) -> bool {
    let proto = match transport {
        Transport::Udp => peer::Proto::Udp,
        Transport::Tcp => peer::Proto::Tcp,
    };
    let found = match diag.peer(proto, local, from) {
        Ok(p) => p,
        Err(error) => {
            debug!(%error, "resolver: sock_diag lookup");
            None
        }
    };
    if found.is_some_and(|p| p.cgroup == view.cgroup()) {
        return true;
    }
    view.stranger(transport, from, found.map(|p| p.uid));
    false
}

/// A resolver socket's address and the sock_diag socket that tells who
/// sent each query, once `configured` (its timeout or non-blocking mode)
/// has succeeded; `None` (logged) if any step failed.
fn listening(
    configured: io::Result<()>,
    local: io::Result<std::net::SocketAddr>,
) -> Option<(std::net::SocketAddr, peer::Diag)> {
    let setup = configured
        .and(local)
        .and_then(|local| Ok((local, peer::Diag::open()?)));
    setup
        .inspect_err(|error| warn!(%error, "resolver socket"))
        .ok()
}

fn serve_udp(sock: UdpSocket, view: &DnsView, stop: &AtomicBool, sweeper: bool) {
    let Some((local, diag)) = listening(sock.set_read_timeout(Some(TICK)), sock.local_addr())
    else {
        return;
    };
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        if sweeper {
            view.expire();
        }
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(error) => {
                debug!(%error, "resolver recv");
                continue;
            }
        };
        if !from_server(&diag, view, Transport::Udp, local, from) {
            continue;
        }
        if let Some(reply) = answer_guarded(view, &buf[..n], Transport::Udp) {
            let _ = sock.send_to(&reply, from);
        }
    }
}

/// A bug in answering one query must not take the server's resolver down
/// (its DNS would then fail silently): log it and answer SERVFAIL.
fn answer_guarded(view: &DnsView, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        view.answer(query, transport)
    }))
    .unwrap_or_else(|_| {
        tracing::error!("resolver panicked answering a query; answering SERVFAIL");
        view::servfail(query)
    })
}

fn serve_tcp(listener: TcpListener, view: Arc<DnsView>, stop: Arc<AtomicBool>) {
    let Some((local, diag)) = listening(listener.set_nonblocking(true), listener.local_addr())
    else {
        return;
    };
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, from)) => {
                if !from_server(&diag, &view, Transport::Tcp, local, from) {
                    continue;
                }
                if active.load(Ordering::SeqCst) >= MAX_TCP_CLIENTS {
                    debug!(%from, "resolver: too many TCP clients; closing");
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let (view, stop, done) = (view.clone(), stop.clone(), active.clone());
                let served = spawn("dns-tcp-conn", move || {
                    if let Err(error) = serve_tcp_conn(conn, &view, &stop) {
                        debug!(%error, "resolver TCP connection");
                    }
                    done.fetch_sub(1, Ordering::SeqCst);
                });
                if let Err(error) = served {
                    active.fetch_sub(1, Ordering::SeqCst);
                    warn!(%error, "resolver: cannot serve a TCP client");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(TICK / 4),
            Err(error) => {
                debug!(%error, "resolver accept");
                std::thread::sleep(TICK);
            }
        }
    }
}

/// `read_exact` that gives up at `deadline` however the bytes trickle in
/// (a socket timeout alone restarts with every byte).
fn read_by(conn: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        conn.set_read_timeout(Some(left))?;
        match conn.read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn serve_tcp_conn(mut conn: TcpStream, view: &DnsView, stop: &AtomicBool) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_write_timeout(Some(TCP_MSG_TIME))?;
    let end = Instant::now() + TCP_CONN_TIME;
    while !stop.load(Ordering::SeqCst) {
        let deadline = end.min(Instant::now() + TCP_MSG_TIME);
        let mut len = [0u8; 2];
        match read_by(&mut conn, &mut len, deadline) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        read_by(&mut conn, &mut msg, deadline)?;
        let Some(reply) = answer_guarded(view, &msg, Transport::Tcp) else {
            return Ok(());
        };
        let len = u16::try_from(reply.len().min(MAX_TCP_MSG)).unwrap_or(u16::MAX);
        conn.write_all(&len.to_be_bytes())?;
        conn.write_all(&reply[..usize::from(len)])?;
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Send one query to the upstream resolver the way it came (UDP or TCP).
pub fn forward(upstream: SocketAddr, query: &[u8], transport: Transport) -> io::Result<Vec<u8>> {
    match transport {
        Transport::Udp => {
            let bind: SocketAddr = if upstream.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let sock = UdpSocket::bind(bind)?;
            sock.connect(upstream)?;
            sock.send(query)?;
            let mut buf = vec![0u8; 4096];
            // One deadline for the answer, however many stray datagrams
            // (wrong id) arrive first.
            let deadline = Instant::now() + UPSTREAM_TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                sock.set_read_timeout(Some(left))?;
                let n = sock.recv(&mut buf)?;
                // Only the answer to this query (same id) counts.
                if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
                    buf.truncate(n);
                    return Ok(buf);
                }
            }
        }
        Transport::Tcp => {
            let deadline = Instant::now() + UPSTREAM_TIMEOUT;
            let mut conn = TcpStream::connect_timeout(&upstream, UPSTREAM_TIMEOUT)?;
            conn.set_write_timeout(Some(UPSTREAM_TIMEOUT))?;
            let len = u16::try_from(query.len()).map_err(|_| io::Error::other("query too long"))?;
            conn.write_all(&len.to_be_bytes())?;
            conn.write_all(query)?;
            let mut len = [0u8; 2];
            read_by(&mut conn, &mut len, deadline)?;
            let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
            read_by(&mut conn, &mut msg, deadline)?;
            Ok(msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_is_the_first_nameserver() {
        let conf = "# comment\nsearch example\nnameserver 10.255.255.53\nnameserver 1.1.1.1\n";
        assert_eq!(
            upstream_from_resolv_conf(conf),
            Some("10.255.255.53:53".parse().unwrap())
        );
        assert_eq!(
            upstream_from_resolv_conf("nameserver ::1\n"),
            Some("[::1]:53".parse().unwrap())
        );
        assert_eq!(upstream_from_resolv_conf("nameserver bogus\n"), None);
    }
}
