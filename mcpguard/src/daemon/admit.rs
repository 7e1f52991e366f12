//! Accepting and admitting connections to the daemon's socket: who is on
//! the other end ([`Peer`], from the kernel), and the places each uid may
//! hold at once ([`Admission`]).
//!
//! A connection that has not yet sent its request holds one of
//! [`MAX_HANDSHAKES_PER_UID`] places (of [`MAX_HANDSHAKES`] in all); a
//! status or audit query one of [`MAX_QUERIES_PER_UID`] (of
//! [`MAX_QUERIES`]); a launch one of the user's server places until its
//! session ends and one of its launch places until the server runs
//! ([`LaunchLimits`]). A user flooding the socket is refused beyond these,
//! and can only delay its own launches.

use std::{
    collections::HashMap,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::net::UnixStream,
    },
    sync::Mutex,
    time::{Duration, Instant},
};

use thiserror::Error;

/// Open queries per uid.
pub const MAX_QUERIES_PER_UID: usize = 8;
/// Open queries from all users together.
pub const MAX_QUERIES: usize = 64;
/// Connections per uid that have not yet sent their request; each holds a
/// thread until it does or its time runs out. A user flooding the socket
/// is refused beyond this, and can only delay its own launches.
pub const MAX_HANDSHAKES_PER_UID: usize = 16;
/// Connections from all users together that have not sent their request.
pub const MAX_HANDSHAKES: usize = 256;
/// Default for servers one user may run at once.
pub const DEFAULT_SERVERS_PER_USER: usize = 64;
/// Default for launches one user may have in flight (started, not yet
/// running) at once; a client starting all its servers at once waits for
/// a place rather than being refused ([`LAUNCH_WAIT`]).
pub const DEFAULT_LAUNCHES_PER_USER: usize = 16;
/// How long a launch waits for one of its user's launches in progress to
/// finish before it is refused.
pub const LAUNCH_WAIT: Duration = Duration::from_secs(30);

/// How many servers a user may run, and start, at once
/// (`--max-servers-per-user`, `--max-launches-per-user`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchLimits {
    pub servers_per_user: usize,
    pub launches_per_user: usize,
}

impl Default for LaunchLimits {
    fn default() -> Self {
        LaunchLimits {
            servers_per_user: DEFAULT_SERVERS_PER_USER,
            launches_per_user: DEFAULT_LAUNCHES_PER_USER,
        }
    }
}

/// The per-user limit a launch ran into.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum AtLimit {
    #[error(
        "this user already runs {0} servers, the daemon's limit (--max-servers-per-user); \
         stop one first"
    )]
    Servers(usize),
    #[error(
        "this user has had {0} launches in progress, the daemon's limit \
         (--max-launches-per-user), for {wait}s; try again when one has started",
        wait = LAUNCH_WAIT.as_secs()
    )]
    Launches(usize),
}

/// The caller's credentials could not be read.
#[derive(Debug, Error)]
pub enum PeerError {
    #[error("cannot read the caller's credentials: {0}")]
    Creds(#[source] io::Error),
    #[error("cannot tell which cgroup the caller is in: {0}")]
    Cgroup(#[source] io::Error),
}

/// Who is on the other end of the socket, from the kernel (SO_PEERCRED,
/// SO_PEERGROUPS and SO_PEERPIDFD), never from anything the client says.
#[derive(Debug)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The connecting process itself (Linux 6.5+), so its pid cannot be
    /// recycled while the daemon looks at it.
    pub pidfd: Option<OwnedFd>,
}

impl Peer {
    /// `/proc/<pid>/cgroup` of the connecting process. With a pidfd, the
    /// text is only trusted if that process is still alive afterwards
    /// (then the pid was not reused in between); without one (kernels
    /// before 6.5) a recycled pid is a narrow, documented race.
    pub fn cgroup(&self) -> Result<String, PeerError> {
        let text = crate::kernel::proc::read_cgroup(Some(self.pid)).map_err(PeerError::Cgroup)?;
        if let Some(pidfd) = &self.pidfd {
            // SAFETY: pidfd_send_signal with signal 0 only checks that the
            // process behind a valid pidfd still exists; no pointers.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    0,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            if rc != 0 {
                return Err(PeerError::Cgroup(io::Error::last_os_error()));
            }
        }
        Ok(text)
    }
}

pub fn peer(stream: &UnixStream) -> Result<Peer, PeerError> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| PeerError::Creds(e.into()))?;
    let mut groups = vec![0u32; 256];
    let mut len = (groups.len() * 4) as libc::socklen_t;
    // SAFETY: `groups` is a writable buffer of `len` bytes, and the kernel
    // writes at most `len` bytes of gid_t (u32) into it.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(PeerError::Creds(io::Error::last_os_error()));
    }
    groups.truncate(len as usize / 4);
    let mut pidfd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `pidfd` is a writable c_int and `len` its size; on success the
    // kernel stores a new file descriptor we then own.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&mut pidfd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    // SAFETY: a non-negative result is a fresh descriptor owned by nobody else.
    let pidfd = (rc == 0 && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    Ok(Peer {
        pid: cred.pid() as u32,
        uid: cred.uid(),
        gid: cred.gid(),
        groups,
        pidfd,
    })
}

/// The places every uid holds: connections still sending their request,
/// open queries, servers and launches in progress.
#[derive(Debug)]
pub struct Admission {
    /// Open queries per uid.
    open: Mutex<HashMap<u32, usize>>,
    /// Connections per uid still sending their request.
    handshakes: Mutex<HashMap<u32, usize>>,
    launch_limits: LaunchLimits,
    /// Servers per uid, from launch request to session end.
    servers: Mutex<HashMap<u32, usize>>,
    /// Launches per uid not yet running.
    launching: Mutex<HashMap<u32, usize>>,
}

impl Admission {
    pub fn new(launch_limits: LaunchLimits) -> Self {
        Admission {
            open: Mutex::new(HashMap::new()),
            handshakes: Mutex::new(HashMap::new()),
            launch_limits,
            servers: Mutex::new(HashMap::new()),
            launching: Mutex::new(HashMap::new()),
        }
    }

    /// [`Admission::launch`], waiting up to `wait` while the user is at
    /// the launch limit (not at the server limit: that one only moves when
    /// a server ends).
    pub fn launch_within(&self, uid: u32, wait: Duration) -> Result<(Slot<'_>, Slot<'_>), AtLimit> {
        let deadline = Instant::now() + wait;
        loop {
            match self.launch(uid) {
                Err(AtLimit::Launches(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// Places for one more server of `uid`, and for its launch: the first
    /// is held until the session ends, the second until the server runs.
    /// Refused with the limit the user is at.
    pub fn launch(&self, uid: u32) -> Result<(Slot<'_>, Slot<'_>), AtLimit> {
        let limits = self.launch_limits;
        let server = Slot::take(&self.servers, uid, limits.servers_per_user, usize::MAX)
            .ok_or(AtLimit::Servers(limits.servers_per_user))?;
        let launch = Slot::take(&self.launching, uid, limits.launches_per_user, usize::MAX)
            .ok_or(AtLimit::Launches(limits.launches_per_user))?;
        Ok((server, launch))
    }

    /// Take a query slot for `uid`, if the limits allow one.
    pub fn acquire(&self, uid: u32) -> Option<Slot<'_>> {
        Slot::take(&self.open, uid, MAX_QUERIES_PER_UID, MAX_QUERIES)
    }

    /// Take a slot for a connection of `uid` that has yet to send its
    /// request, if the limits allow one.
    pub fn handshake(&self, uid: u32) -> Option<Slot<'_>> {
        Slot::take(
            &self.handshakes,
            uid,
            MAX_HANDSHAKES_PER_UID,
            MAX_HANDSHAKES,
        )
    }
}

/// One counted connection of a uid; dropping it frees the place.
pub struct Slot<'a> {
    counts: &'a Mutex<HashMap<u32, usize>>,
    uid: u32,
}

impl<'a> Slot<'a> {
    fn take(
        counts: &'a Mutex<HashMap<u32, usize>>,
        uid: u32,
        per_uid: usize,
        total: usize,
    ) -> Option<Slot<'a>> {
        let mut open = counts.lock().unwrap_or_else(|p| p.into_inner());
        let all: usize = open.values().sum();
        let mine = open.entry(uid).or_insert(0);
        if *mine >= per_uid || all >= total {
            if *mine == 0 {
                open.remove(&uid);
            }
            return None;
        }
        *mine += 1;
        Some(Slot { counts, uid })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut open = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_and_launches_are_limited_per_uid_and_released() {
        let info = Admission::new(LaunchLimits {
            servers_per_user: 3,
            launches_per_user: 2,
        });
        let (s1, l1) = info.launch(1000).unwrap();
        let (_s2, _l2) = info.launch(1000).unwrap();
        assert_eq!(info.launch(1000).err(), Some(AtLimit::Launches(2)));
        // Another user has limits of their own.
        assert!(info.launch(1001).is_ok());
        drop(l1);
        let (_s3, l3) = info.launch(1000).unwrap();
        drop(l3);
        assert_eq!(info.launch(1000).err(), Some(AtLimit::Servers(3)));
        drop(s1);
        assert!(info.launch(1000).is_ok());
        // At the server limit nothing waits.
        let started = Instant::now();
        let _held = info.launch(1000).unwrap();
        assert_eq!(
            info.launch_within(1000, Duration::from_secs(5)).err(),
            Some(AtLimit::Servers(3))
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn query_slots_are_limited_per_uid_and_released() {
        let info = Admission::new(LaunchLimits::default());
        let slots: Vec<_> = (0..MAX_QUERIES_PER_UID)
            .map(|_| info.acquire(1000).unwrap())
            .collect();
        assert!(info.acquire(1000).is_none());
        assert!(info.acquire(1001).is_some(), "another user is not blocked");
        drop(slots);
        assert!(info.acquire(1000).is_some());
    }
}
