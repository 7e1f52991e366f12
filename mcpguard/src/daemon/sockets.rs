//! The daemon's side of a server's socket fence ([`crate::launch::notify`]):
//! one thread per server answers the `socket()` calls the filter handed
//! over. Each is refused with EPERM (in learning mode let through) and
//! recorded as a `socket` record naming the family and protocol.
//!
//! The same filter traps the calls that create names when the persistence
//! fence is on; those go to [`super::persist_fence`] with the server's
//! executor.
//!
//! The thread ends when the server and everything it started are gone
//! (the listener reports hang-up) or when the session tears down; the
//! executor's socket closes with it, and the executor exits.

use std::{
    cell::Cell,
    io,
    os::{fd::AsFd, unix::net::UnixDatagram},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{debug, warn};

use super::persist_fence::Trapped;
use crate::{
    audit::Body,
    launch::notify::{Call, Listener},
    policy::sockets::{family_name, protocol_name, sock_type_name},
};

/// How often the thread looks at its stop flag.
const TICK_MS: u16 = 200;

/// Writes one record for the server, from the calling pid, of a call made
/// at the given kernel time (boot clock, ns: what ties it to a tool call).
pub type Recorder = Box<dyn Fn(Body, u32, u64) + Send>;

/// A running fence thread; dropping it stops the thread.
pub struct SocketFence {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SocketFence {
    pub fn start(
        listener: Listener,
        learn: bool,
        record: Recorder,
        executor: Option<UnixDatagram>,
    ) -> io::Result<SocketFence> {
        if let Some(e) = &executor {
            e.set_read_timeout(Some(super::persist_fence::EXEC_TIMEOUT))?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("socket-fence".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let fence = Fence {
                    listener,
                    learn,
                    record,
                    executor,
                    executor_lost: Cell::new(false),
                };
                serve(&fence, &flag)
            })?;
        Ok(SocketFence {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for SocketFence {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the thread answers with.
struct Fence {
    listener: Listener,
    learn: bool,
    record: Recorder,
    /// The persistence fence's executor, when it is on.
    executor: Option<UnixDatagram>,
    /// The executor failed to answer once: its calls are refused.
    executor_lost: Cell<bool>,
}

fn serve(fence: &Fence, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(fence.listener.fd().as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(TICK_MS)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(error) => {
                warn!(%error, "socket fence: poll");
                return;
            }
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.contains(PollFlags::POLLIN) {
            answer(fence);
        } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            // No task uses the filter any more.
            return;
        }
    }
}

fn answer(fence: &Fence) {
    let (listener, learn, record) = (&fence.listener, fence.learn, &fence.record);
    let req = match listener.recv() {
        Ok(r) => r,
        // The caller was interrupted or died before we read it.
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => return,
        Err(error) => {
            debug!(%error, "socket fence: receive");
            return;
        }
    };
    if let Call::Name { nr, args } = req.call {
        let trapped = Trapped {
            id: req.id,
            pid: req.pid,
            nr,
            args,
        };
        match &fence.executor {
            Some(e) if !fence.executor_lost.get() => {
                let alive = super::persist_fence::answer(listener, e, &trapped, &**record);
                fence.executor_lost.set(!alive);
            }
            // Only a filter with the persistence traps sends these.
            _ => {
                let _ = listener.complete(req.id, Err(libc::EACCES));
            }
        }
        return;
    }
    let verdict = if learn { "would_deny" } else { "deny" };
    let errno = (!learn).then_some(libc::EPERM);
    // Answer first: the caller is blocked until then.
    if let Err(error) = listener.respond(req.id, errno) {
        // ENOENT: the caller is gone, the call never completes.
        if error.raw_os_error() != Some(libc::ENOENT) {
            warn!(%error, pid = req.pid, "socket fence: answer");
        }
    }
    let body = match req.call {
        Call::Socket {
            family,
            sock_type,
            protocol,
        } => Body::Socket {
            family: family_name(family),
            sock_type: sock_type_name(sock_type),
            protocol: protocol_name(family, protocol),
            verdict: verdict.into(),
        },
        Call::Socketcall => Body::Socket {
            family: "unknown".into(),
            sock_type: "unknown".into(),
            protocol: "socketcall".into(),
            verdict: verdict.into(),
        },
        Call::Foreign { arch, nr } => Body::Socket {
            family: "unknown".into(),
            sock_type: "unknown".into(),
            protocol: format!("syscall {nr} of arch {arch:#x}"),
            verdict: verdict.into(),
        },
        Call::Name { .. } => return,
    };
    record(body, req.pid, crate::audit::decode::boot_ns());
}
