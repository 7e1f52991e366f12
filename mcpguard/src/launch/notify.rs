//! The seccomp user-notification filter and its [`Listener`]: the socket
//! fence, and the traps of the persistence fence ([`super::persist_fence`])
//! that ride on it (a task can have only one listener).
//!
//! The socket fence is a seccomp filter on `socket()` for the address
//! families and netlink protocols the cgroup `sock_create` hook never sees
//! (it runs for inet sockets only, and only after the kernel's own
//! CAP_NET_RAW check, so an unprivileged raw socket is refused there
//! without a trace).
//!
//! The launch helper installs it last, after `no_new_privs`. Unix, inet and
//! inet6 sockets (but not `SOCK_PACKET` ones, which the kernel makes
//! packet sockets) and route netlink (glibc's `getaddrinfo` with
//! `AI_ADDRCONFIG`, `getifaddrs`) pass; so does whatever `[network]
//! sockets` names ([`SocketRules`]). Everything else, raw inet sockets
//! included, is not failed by the filter but handed to the daemon
//! (`SECCOMP_RET_USER_NOTIF`): a syscall seccomp fails never reaches the
//! syscall tracepoints, so the daemon is what records it. The daemon
//! answers EPERM (in learning mode it lets the call proceed) and writes a
//! `socket` record with the family and protocol. With the daemon gone, the
//! kernel fails such a call with ENOSYS: still refused. Only `socket()` is
//! filtered; every other syscall costs the filter two loads and compares.
//!
//! A 64-bit process can make 32-bit syscalls (`int 0x80` on x86_64): their
//! `socket` is checked the same way, and `socketcall(SYS_SOCKET)`, whose
//! arguments sit in memory the filter cannot read, is refused. Syscalls of
//! any other architecture are refused.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use thiserror::Error;

use super::persist_fence;
use crate::{
    kernel::{
        cbpf::{self, Op, Test},
        syscalls::{arch, off_arg, OFF_ARCH, OFF_NR, SUPPORTED},
    },
    policy::sockets::{SocketRules, AF_INET, AF_INET6, AF_NETLINK, AF_UNIX, NETLINK_ROUTE},
};

#[derive(Debug, Error)]
pub enum NotifyError {
    #[error("cannot install the socket filter: {0}")]
    Install(#[source] io::Error),
    #[error("the socket filter has {0} instructions; a jump cannot span that far")]
    TooLong(usize),
    #[error("no socket filter for this architecture")]
    Unsupported,
}

/// `socketcall`'s call number for `socket`.
const SYS_SOCKET: u32 = 1;
const SOCK_TYPE_MASK: u32 = 0xf;
const SOCK_RAW: u32 = 3;
/// The obsolete packet type: the kernel turns `socket(AF_INET,
/// SOCK_PACKET)` into an AF_PACKET socket, which no inet hook sees.
const SOCK_PACKET: u32 = 10;
const AF_PACKET: u32 = libc::AF_PACKET as u32;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Native,
    Compat,
    Socketcall,
    Check,
    Inet,
    Netlink,
    Allow,
    Notify,
    /// The persistence fence's blocks ([`super::persist_fence`]).
    OpenatFlags,
    OpenFlags,
    NameNotify,
}

fn program(rules: &SocketRules, persist: bool) -> Vec<Op<Label>> {
    use Label::*;
    use Op::*;
    use Test::*;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;
    let nr_socket = libc::SYS_socket as u32;
    let mut p = vec![Load(OFF_ARCH), If(Eq, arch::NATIVE, Native)];
    if let Some((compat, _, _)) = arch::COMPAT {
        p.push(If(Eq, compat, Compat));
    }
    p.extend([
        Ret(NOTIFY),
        Here(Native),
        Load(OFF_NR),
        If(Eq, nr_socket, Check),
    ]);
    if let Some(bit) = arch::X32_BIT {
        p.push(If(Eq, nr_socket | bit, Check));
    }
    if persist {
        p.extend(
            persist_fence::always()
                .into_iter()
                .map(|nr| If(Eq, nr, NameNotify)),
        );
        for (nr, arg) in persist_fence::creating_opens() {
            let at = if arg == 2 { OpenatFlags } else { OpenFlags };
            p.push(If(Eq, nr, at));
        }
        p.push(Ret(ALLOW));
        for (_, arg) in persist_fence::creating_opens() {
            let at = if arg == 2 { OpenatFlags } else { OpenFlags };
            p.extend([
                Here(at),
                Load(off_arg(arg)),
                If(Set, libc::O_CREAT as u32, NameNotify),
                Ret(ALLOW),
            ]);
        }
        p.extend([Here(NameNotify), Ret(NOTIFY)]);
    }
    p.push(Ret(ALLOW));
    if let Some((_, socket, socketcall)) = arch::COMPAT {
        p.extend([Here(Compat), Load(OFF_NR), If(Eq, socket, Check)]);
        if let Some(socketcall) = socketcall {
            p.extend([
                If(Eq, socketcall, Socketcall),
                Ret(ALLOW),
                Here(Socketcall),
                Load(off_arg(0)),
                If(Eq, SYS_SOCKET, Notify),
            ]);
        }
        p.push(Ret(ALLOW));
    }
    p.extend([
        Here(Check),
        Load(off_arg(0)),
        If(Eq, AF_UNIX, Allow),
        If(Eq, AF_INET, Inet),
        If(Eq, AF_INET6, Inet),
        If(Eq, AF_NETLINK, Netlink),
    ]);
    p.extend(rules.families.iter().map(|f| If(Eq, *f, Allow)));
    p.extend([
        Ret(NOTIFY),
        Here(Inet),
        Load(off_arg(1)),
        And(SOCK_TYPE_MASK),
    ]);
    if !rules.families.contains(&AF_PACKET) {
        p.push(If(Eq, SOCK_PACKET, Notify));
    }
    if !rules.raw {
        p.push(If(Eq, SOCK_RAW, Notify));
    }
    p.extend([Ret(ALLOW), Here(Netlink)]);
    if !rules.netlink_all {
        p.extend([Load(off_arg(2)), If(Eq, NETLINK_ROUTE, Allow)]);
        p.extend(rules.netlink.iter().map(|n| If(Eq, *n, Allow)));
        p.push(Ret(NOTIFY));
    }
    p.extend([
        Ret(ALLOW),
        Here(Allow),
        Ret(ALLOW),
        Here(Notify),
        Ret(NOTIFY),
    ]);
    p
}

/// The classic BPF program for `rules` (and, with `persist`, the
/// persistence fence's traps), jumps resolved.
pub fn filter(rules: &SocketRules, persist: bool) -> Result<Vec<libc::sock_filter>, NotifyError> {
    cbpf::assemble(&program(rules, persist)).map_err(|e| match e {
        cbpf::CbpfError::TooLong(n) => NotifyError::TooLong(n),
    })
}

/// Installs the filter on the calling thread (which must have
/// `no_new_privs`) and returns the listener the daemon answers on. The
/// listener is close-on-exec. A task has at most one listener, so the
/// persistence fence's traps (`persist`) ride on this filter.
pub fn install(rules: &SocketRules, persist: bool) -> Result<OwnedFd, NotifyError> {
    if !SUPPORTED {
        return Err(NotifyError::Unsupported);
    }
    let mut prog = filter(rules, persist)?;
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).map_err(|_| NotifyError::TooLong(prog.len()))?,
        filter: prog.as_mut_ptr(),
    };
    // Once the daemon has received a call, only a fatal signal ends the
    // wait: an interrupted call would be restarted and made twice (an
    // `O_EXCL` create failing with EEXIST the second time), and runtimes
    // signal their threads all the time (Go's preemption).
    let flags =
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel
    // copies the program. The flag makes the call return a new fd.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return Err(NotifyError::Install(io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A socket() call the filter handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Socket {
        family: u32,
        sock_type: u32,
        protocol: u32,
    },
    /// A 32-bit `socketcall(SYS_SOCKET)`: its arguments are in memory.
    Socketcall,
    /// Any syscall of an architecture the filter does not know.
    Foreign { arch: u32, nr: i32 },
    /// A native call of the persistence fence (it creates a name).
    Name { nr: i32, args: [u64; 6] },
}

/// One notification: answer it with [`Listener::respond`].
#[derive(Debug)]
pub struct Request {
    pub id: u64,
    pub pid: u32,
    pub call: Call,
}

/// The daemon's end of one server's filter.
pub struct Listener(OwnedFd);

impl Listener {
    pub fn new(fd: OwnedFd) -> Listener {
        Listener(fd)
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.0
    }

    /// The next pending call (blocks if none is).
    pub fn recv(&self) -> io::Result<Request> {
        // SAFETY: an all-zero seccomp_notif is valid and is what the
        // kernel requires on input.
        let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: the ioctl writes one seccomp_notif into `n`.
        let ret = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut n as *mut libc::seccomp_notif,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        let d = n.data;
        let low = |i: usize| d.args[i] as u32;
        let compat = arch::COMPAT.filter(|c| c.0 == d.arch);
        let call = if d.arch != arch::NATIVE && compat.is_none() {
            Call::Foreign {
                arch: d.arch,
                nr: d.nr,
            }
        } else if compat.and_then(|c| c.2) == Some(d.nr as u32) {
            Call::Socketcall
        } else if d.arch == arch::NATIVE
            && (d.nr as u32 & !arch::X32_BIT.unwrap_or(0)) != libc::SYS_socket as u32
        {
            Call::Name {
                nr: d.nr,
                args: d.args,
            }
        } else {
            Call::Socket {
                family: low(0),
                sock_type: low(1),
                protocol: low(2),
            }
        };
        Ok(Request {
            id: n.id,
            pid: n.pid,
            call,
        })
    }

    /// Whether the call `id` still waits (its task did not die and was
    /// not replaced since it was received).
    pub fn valid(&self, id: u64) -> bool {
        // SAFETY: the ioctl reads one u64.
        let ret = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &id as *const u64,
            )
        };
        ret == 0
    }

    /// Completes the call with `val` without running it, or fails it with
    /// `errno`.
    pub fn complete(&self, id: u64, result: Result<i64, i32>) -> io::Result<()> {
        let resp = libc::seccomp_notif_resp {
            id,
            val: result.unwrap_or(0),
            error: result.err().map_or(0, |e| -e),
            flags: 0,
        };
        self.send(&resp)
    }

    /// Installs `fd` in the caller and completes the call with its number,
    /// which it returns.
    pub fn complete_fd(&self, id: u64, fd: &OwnedFd, cloexec: bool) -> io::Result<i32> {
        let add = libc::seccomp_notif_addfd {
            id,
            flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
            srcfd: fd.as_raw_fd() as u32,
            newfd: 0,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: the ioctl reads one seccomp_notif_addfd.
        let ret = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ADDFD,
                &add as *const libc::seccomp_notif_addfd,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ret)
    }

    /// Fails the call with `errno`, or (`None`) lets it proceed.
    pub fn respond(&self, id: u64, errno: Option<i32>) -> io::Result<()> {
        let resp = libc::seccomp_notif_resp {
            id,
            val: 0,
            error: errno.map_or(0, |e| -e),
            flags: if errno.is_none() {
                libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
            } else {
                0
            },
        };
        self.send(&resp)
    }

    fn send(&self, resp: &libc::seccomp_notif_resp) -> io::Result<()> {
        // SAFETY: the ioctl reads one seccomp_notif_resp.
        let ret = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                resp as *const libc::seccomp_notif_resp,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::cbpf::run;

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;

    fn socket(prog: &[libc::sock_filter], family: u32, ty: u32, proto: u32) -> u32 {
        run(
            prog,
            arch::NATIVE,
            libc::SYS_socket as u32,
            [family, ty, proto],
        )
    }

    #[test]
    fn defaults_pass_everyday_sockets_and_hand_over_the_rest() {
        let p = filter(&SocketRules::default(), false).unwrap();
        // SOCK_CLOEXEC and SOCK_NONBLOCK ride along in the type.
        let cloexec = libc::SOCK_CLOEXEC as u32;
        assert_eq!(socket(&p, 1, 1 | cloexec, 0), ALLOW);
        assert_eq!(socket(&p, 2, 1, 6), ALLOW);
        assert_eq!(socket(&p, 10, 2, 17), ALLOW);
        assert_eq!(socket(&p, 16, 3 | cloexec, 0), ALLOW);
        assert_eq!(socket(&p, 2, 3 | cloexec, 1), NOTIFY);
        assert_eq!(socket(&p, 2, 10, 0x300), NOTIFY);
        assert_eq!(socket(&p, 10, 10 | cloexec, 0x300), NOTIFY);
        assert_eq!(socket(&p, 10, 3, 58), NOTIFY);
        assert_eq!(socket(&p, 16, 3, 4), NOTIFY);
        assert_eq!(socket(&p, 16, 3, 15), NOTIFY);
        assert_eq!(socket(&p, 17, 3, 0x300), NOTIFY);
        assert_eq!(socket(&p, 40, 1, 0), NOTIFY);
        // Other syscalls are not looked at.
        assert_eq!(
            run(&p, arch::NATIVE, libc::SYS_connect as u32, [16, 0, 0]),
            ALLOW
        );
        if let Some(bit) = arch::X32_BIT {
            assert_eq!(
                run(&p, arch::NATIVE, libc::SYS_socket as u32 | bit, [16, 3, 4]),
                NOTIFY
            );
        }
        if let Some((compat, nr, socketcall)) = arch::COMPAT {
            assert_eq!(run(&p, compat, nr, [16, 3, 4]), NOTIFY);
            assert_eq!(run(&p, compat, nr, [2, 1, 0]), ALLOW);
            if let Some(sc) = socketcall {
                assert_eq!(run(&p, compat, sc, [SYS_SOCKET, 0, 0]), NOTIFY);
                // socketcall(SYS_CONNECT): the cgroup hooks see it.
                assert_eq!(run(&p, compat, sc, [3, 0, 0]), ALLOW);
            }
        }
        assert_eq!(run(&p, 0x1234, 0, [0, 0, 0]), NOTIFY);
    }

    #[test]
    fn named_kinds_pass() {
        let p = filter(
            &SocketRules {
                raw: true,
                netlink_all: false,
                netlink: vec![4, 9],
                families: vec![17],
            },
            false,
        )
        .unwrap();
        assert_eq!(socket(&p, 2, 3, 1), ALLOW);
        // `families` names AF_PACKET (17): SOCK_PACKET is one too.
        assert_eq!(socket(&p, 2, 10, 0x300), ALLOW);
        assert_eq!(socket(&p, 16, 3, 4), ALLOW);
        assert_eq!(socket(&p, 16, 3, 9), ALLOW);
        assert_eq!(socket(&p, 16, 3, 15), NOTIFY);
        assert_eq!(socket(&p, 17, 3, 0x300), ALLOW);
        assert_eq!(socket(&p, 40, 1, 0), NOTIFY);
        let all = filter(
            &SocketRules {
                netlink_all: true,
                ..SocketRules::default()
            },
            false,
        )
        .unwrap();
        assert_eq!(socket(&all, 16, 3, 15), ALLOW);
    }

    #[test]
    fn every_family_and_protocol_at_once_still_fits() {
        let p = filter(
            &SocketRules {
                raw: false,
                netlink_all: false,
                netlink: (1..32).collect(),
                families: (1..64).collect(),
            },
            true,
        )
        .unwrap();
        assert_eq!(socket(&p, 63, 1, 0), ALLOW);
        assert_eq!(socket(&p, 16, 3, 31), ALLOW);
        assert_eq!(socket(&p, 16, 3, 32), NOTIFY);
    }

    #[test]
    fn the_persistence_traps_ride_along() {
        let p = filter(&SocketRules::default(), true).unwrap();
        let native = |nr: libc::c_long, args| run(&p, arch::NATIVE, nr as u32, args);
        let creat = libc::O_CREAT as u32;
        assert_eq!(native(libc::SYS_openat, [0, 0, creat | 1]), NOTIFY);
        assert_eq!(native(libc::SYS_openat, [0, 0, 2]), ALLOW);
        assert_eq!(native(libc::SYS_openat, [0, creat, 0]), ALLOW);
        for nr in persist_fence::always() {
            assert_eq!(run(&p, arch::NATIVE, nr, [0, 0, 0]), NOTIFY, "{nr}");
        }
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(native(libc::SYS_open, [0, creat, 0]), NOTIFY);
            assert_eq!(native(libc::SYS_open, [0, 0, creat]), ALLOW);
        }
        assert_eq!(native(libc::SYS_read, [0, 0, creat]), ALLOW);
        assert_eq!(native(libc::SYS_unlinkat, [0, 0, 0]), ALLOW);
        assert_eq!(socket(&p, 2, 3, 1), NOTIFY);
        assert_eq!(socket(&p, 2, 1, 6), ALLOW);
        // Without it, none of them.
        let plain = filter(&SocketRules::default(), false).unwrap();
        assert_eq!(
            run(&plain, arch::NATIVE, libc::SYS_mkdirat as u32, [0; 3]),
            ALLOW
        );
    }
}
