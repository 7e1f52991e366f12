//! Calls a person decides, the daemon's half.
//!
//! [`Approvals`] is every held call of every session in one place: what
//! `mcpguard approvals` lists and `mcpguard approve`/`deny` decide (a
//! caller other than root only its own servers'), and the sessions whose
//! taint `mcpguard clear` ends. An [`Approver`] serves one session: it
//! takes a call the tap held, asks the client through elicitation when it
//! can answer one, tells the waiting `mcpguard run` (which tells the
//! person), waits for the decision or the policy's timeout on a thread of
//! its own, and writes what follows: the call to the server, or the
//! refusal to the client. Nothing is ever approved by default: a timeout,
//! a full registry or the session's end refuses.

use std::{
    collections::{BTreeMap, HashMap},
    os::{fd::OwnedFd, unix::net::UnixStream},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender},
        Arc, Mutex, MutexGuard, Weak,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use thiserror::Error;
use tracing::{info, warn};

use super::{
    proto::{self, Pending, Tainted},
    relay,
};
use crate::{
    audit::format_ts,
    mcp::{
        approve::{By, Decision, Held},
        Output, Tap,
    },
};

/// Calls one server may have waiting at once; more are refused.
pub const MAX_PER_SESSION: usize = 16;
/// Calls one user's servers may have waiting at once, so one user cannot
/// take every place.
pub const MAX_PER_UID: usize = 64;
/// Calls waiting in all.
pub const MAX_WAITING: usize = 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ApprovalError {
    #[error(
        "no call of yours waits as approval {0} (decided already, timed out, or never held); \
         `mcpguard approvals` lists the ones that wait"
    )]
    NotFound(u64),
    #[error("no running server of yours is launch {0:?}; `mcpguard approvals` lists tainted ones")]
    NoSession(String),
    #[error("launch {0:?} is not tainted")]
    NotTainted(String),
    #[error(
        "too many calls wait for a decision (at most {MAX_PER_SESSION} per server, \
         {MAX_PER_UID} per user, {MAX_WAITING} in all)"
    )]
    Full,
}

struct Waiting {
    shown: Pending,
    deadline: Instant,
    tx: SyncSender<Decision>,
}

struct Session {
    uid: u32,
    server: String,
    tap: Weak<Tap>,
}

#[derive(Default)]
struct Registry {
    waiting: BTreeMap<u64, Waiting>,
    sessions: HashMap<String, Session>,
}

/// Every held call and every session that can hold one.
#[derive(Default)]
pub struct Approvals {
    registry: Mutex<Registry>,
    next: AtomicU64,
}

/// Whether a caller who may see `scope` (`None`: root, everything) may
/// see or decide something of `uid`'s.
fn visible(scope: Option<u32>, uid: u32) -> bool {
    scope.is_none_or(|s| s == uid)
}

impl Approvals {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session starts: its taint can be listed and cleared.
    pub fn session(&self, launch: &str, uid: u32, server: &str, tap: &Arc<Tap>) {
        self.lock().sessions.insert(
            launch.to_owned(),
            Session {
                uid,
                server: server.to_owned(),
                tap: Arc::downgrade(tap),
            },
        );
    }

    /// A session ends: its waiting calls are dropped, which wakes their
    /// waiters with nothing (refused: the session ended).
    pub fn end_session(&self, launch: &str) {
        let mut reg = self.lock();
        reg.sessions.remove(launch);
        reg.waiting.retain(|_, w| w.shown.launch != launch);
    }

    /// A new approval number.
    fn number(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers held call `approval`; its decision arrives on the
    /// receiver.
    fn open(
        &self,
        approval: u64,
        launch: &str,
        held: &Held,
        timeout: Duration,
        elicitation: bool,
    ) -> Result<Receiver<Decision>, ApprovalError> {
        let mut reg = self.lock();
        let Some(session) = reg.sessions.get(launch) else {
            return Err(ApprovalError::NoSession(launch.to_owned()));
        };
        let (uid, server) = (session.uid, session.server.clone());
        let (mine, users) = reg.waiting.values().fold((0, 0), |(m, u), w| {
            (
                m + usize::from(w.shown.launch == launch),
                u + usize::from(w.shown.uid == uid),
            )
        });
        if mine >= MAX_PER_SESSION || users >= MAX_PER_UID || reg.waiting.len() >= MAX_WAITING {
            return Err(ApprovalError::Full);
        }
        let (tx, rx) = sync_channel(1);
        let shown = Pending {
            approval,
            server,
            launch: launch.to_owned(),
            uid,
            tool: held.tool.clone(),
            arguments: held.args.clone(),
            why: held.why,
            since: format_ts(SystemTime::now()),
            remaining_secs: timeout.as_secs(),
            elicitation,
        };
        let deadline = Instant::now() + timeout;
        reg.waiting.insert(
            approval,
            Waiting {
                shown,
                deadline,
                tx,
            },
        );
        Ok(rx)
    }

    /// Decide `approval` for a caller who may see `scope`; the first
    /// decision wins, a second finds nothing.
    pub fn decide(
        &self,
        approval: u64,
        scope: Option<u32>,
        decision: Decision,
    ) -> Result<(), ApprovalError> {
        let mut reg = self.lock();
        let ours = reg
            .waiting
            .get(&approval)
            .is_some_and(|w| visible(scope, w.shown.uid));
        let waiting = ours.then(|| reg.waiting.remove(&approval)).flatten();
        match waiting {
            // The waiter may have just timed out; then this decision is
            // simply late.
            Some(w) => {
                w.tx.try_send(decision)
                    .map_err(|_| ApprovalError::NotFound(approval))
            }
            None => Err(ApprovalError::NotFound(approval)),
        }
    }

    /// A decision from inside session `launch` (its client): only that
    /// session's own calls.
    fn decide_in(&self, launch: &str, approval: u64, decision: Decision) {
        let mut reg = self.lock();
        if reg
            .waiting
            .get(&approval)
            .is_some_and(|w| w.shown.launch == launch)
        {
            if let Some(w) = reg.waiting.remove(&approval) {
                let _ = w.tx.try_send(decision);
            }
        }
    }

    fn close(&self, approval: u64) {
        self.lock().waiting.remove(&approval);
    }

    /// What waits, and which sessions are tainted, for `scope`.
    pub fn list(&self, scope: Option<u32>) -> (Vec<Pending>, Vec<Tainted>) {
        let reg = self.lock();
        let now = Instant::now();
        let pending = reg
            .waiting
            .values()
            .filter(|w| visible(scope, w.shown.uid))
            .map(|w| Pending {
                remaining_secs: w.deadline.saturating_duration_since(now).as_secs(),
                ..w.shown.clone()
            })
            .collect();
        let tainted = reg
            .sessions
            .iter()
            .filter(|(_, s)| visible(scope, s.uid))
            .filter_map(|(launch, s)| {
                let taint = s.tap.upgrade()?.taint()?;
                Some(Tainted {
                    server: s.server.clone(),
                    launch: launch.clone(),
                    uid: s.uid,
                    taint,
                })
            })
            .collect();
        (pending, tainted)
    }

    /// Ends `launch`'s taint, for a caller who may see `scope`.
    pub fn clear(&self, launch: &str, scope: Option<u32>, by: &By) -> Result<(), ApprovalError> {
        let tap = {
            let reg = self.lock();
            reg.sessions
                .get(launch)
                .filter(|s| visible(scope, s.uid))
                .and_then(|s| s.tap.upgrade())
        };
        match tap {
            Some(tap) if tap.clear_taint(by) => Ok(()),
            Some(_) => Err(ApprovalError::NotTainted(launch.to_owned())),
            None => Err(ApprovalError::NoSession(launch.to_owned())),
        }
    }
}

/// Where a session's decided calls go: the server's stdin and the
/// client's stdout, both shared with the relays (weakly: once the relays
/// let go, nobody reads them).
pub struct Ends {
    pub client_out: Weak<Mutex<OwnedFd>>,
    pub server_in: Weak<Mutex<OwnedFd>>,
}

impl Ends {
    fn send(&self, outs: Vec<Output>) {
        for out in outs {
            let (to, bytes) = match out {
                Output::Server(bytes) => (&self.server_in, bytes),
                Output::Client(bytes) => (&self.client_out, bytes),
                Output::Hold(_) | Output::Decide { .. } => continue,
            };
            if let Some(fd) = to.upgrade() {
                let fd = fd.lock().unwrap_or_else(|p| p.into_inner());
                let _ = relay::write_piece(std::os::fd::AsFd::as_fd(&*fd), &bytes, true);
            }
        }
    }
}

/// What an [`Approver`] needs of its session.
pub struct Spec {
    pub approvals: Arc<Approvals>,
    pub tap: Arc<Tap>,
    pub launch: String,
    pub timeout: Duration,
    /// The `mcpguard run` connection, for telling the person.
    pub control: UnixStream,
}

/// One session's held calls.
pub struct Approver {
    spec: Spec,
    ends: Ends,
    /// The waiters; `None` once the session is over (nothing more is held).
    waiters: Mutex<Option<Vec<JoinHandle<()>>>>,
}

impl Approver {
    pub fn new(spec: Spec, ends: Ends) -> Arc<Approver> {
        Arc::new(Approver {
            spec,
            ends,
            waiters: Mutex::new(Some(Vec::new())),
        })
    }

    /// Hold `held` until a person decides (or the timeout refuses it).
    pub fn hold(self: &Arc<Self>, held: Held) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = waiters.as_mut() else {
            // The server is gone: nothing can run the call (recorded).
            let refused = Decision::deny(By::SessionEnded);
            let number = self.spec.approvals.number();
            self.spec
                .tap
                .decided(held, number, &refused, Duration::ZERO);
            return;
        };
        list.retain(|w| !w.is_finished());
        let Spec {
            approvals,
            tap,
            launch,
            timeout,
            ..
        } = &self.spec;
        let approval = approvals.number();
        let rx = match approvals.open(approval, launch, &held, *timeout, tap.client_elicits()) {
            Ok(rx) => rx,
            Err(error) => {
                warn!(launch = %launch, %error, "a call that waits for a person is refused");
                let outs = tap.decided(held, approval, &Decision::deny(By::Full), Duration::ZERO);
                self.ends.send(outs);
                return;
            }
        };
        if let Some(request) = tap.held(&held, approval, *timeout) {
            self.ends.send(vec![Output::Client(request)]);
        }
        self.tell_person(approval, &held);
        info!(launch = %launch, approval, tool = %held.tool, "call waits for a person");
        let me = self.clone();
        let started = Instant::now();
        let waiting = held.clone();
        let spawned = std::thread::Builder::new()
            .name("approval".into())
            .stack_size(128 * 1024)
            .spawn(move || me.wait(waiting, approval, rx, started));
        match spawned {
            Ok(handle) => list.push(handle),
            // Nothing would wait for a decision: refused now.
            Err(error) => {
                warn!(launch = %launch, %error, "cannot start an approval waiter");
                approvals.close(approval);
                let outs = tap.decided(held, approval, &Decision::deny(By::Full), Duration::ZERO);
                self.ends.send(outs);
            }
        }
    }

    /// The waiting `mcpguard run` tells the person (its stderr, a desktop
    /// notification).
    fn tell_person(&self, approval: u64, held: &Held) {
        let frame = proto::Response::Approval {
            approval,
            tool: held.tool.clone(),
            why: held.why,
            timeout_secs: self.spec.timeout.as_secs(),
        };
        if let Err(error) = proto::write_frame(&mut &self.spec.control, &frame) {
            warn!(launch = %self.spec.launch, %error, "cannot tell mcpguard run about a held call");
        }
    }

    /// Waits for `approval`'s decision and carries it out.
    fn wait(&self, held: Held, approval: u64, rx: Receiver<Decision>, started: Instant) {
        let received = rx.recv_timeout(self.spec.timeout);
        // Closed first: a decision that arrives from here on finds nothing
        // (and is told so); one that came just before the close still counts.
        self.spec.approvals.close(approval);
        let decision = match received.or_else(|e| rx.try_recv().map_err(|_| e)) {
            Ok(decision) => decision,
            Err(RecvTimeoutError::Timeout) => Decision::deny(By::Timeout {
                after_secs: self.spec.timeout.as_secs(),
            }),
            Err(RecvTimeoutError::Disconnected) => Decision::deny(By::SessionEnded),
        };
        let outs = self
            .spec
            .tap
            .decided(held, approval, &decision, started.elapsed());
        self.ends.send(outs);
    }

    /// The client decided a held call (answered the elicitation, or
    /// cancelled the call).
    pub fn decide(&self, approval: u64, decision: Decision) {
        self.spec
            .approvals
            .decide_in(&self.spec.launch, approval, decision);
    }

    /// The session is over: every waiting call is refused and its waiter
    /// joined; nothing more is held.
    pub fn close(&self) {
        let waiters = self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.spec.approvals.end_session(&self.spec.launch);
        for waiter in waiters.into_iter().flatten() {
            let _ = waiter.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::mcp::approve::Why;

    fn held(tool: &str) -> Held {
        Held {
            id: json!(1),
            tool: tool.into(),
            args: json!({}),
            why: Why::Ask,
            message: Vec::new(),
        }
    }

    fn approve(uid: u32) -> Decision {
        Decision {
            approved: true,
            by: By::Cli { uid, pid: 1 },
        }
    }

    fn registry() -> Approvals {
        let approvals = Approvals::default();
        approvals.lock().sessions.insert(
            "s-1".into(),
            Session {
                uid: 1000,
                server: "s".into(),
                tap: Weak::new(),
            },
        );
        approvals
    }

    /// Holds a call to `rm` in session `s-1` as approval `id`.
    fn hold(approvals: &Approvals, id: u64) -> Result<Receiver<Decision>, ApprovalError> {
        approvals.open(id, "s-1", &held("rm"), Duration::from_secs(60), false)
    }

    #[test]
    fn only_the_owner_or_root_decides_and_only_once() {
        let approvals = registry();
        let id = approvals.number();
        let rx = hold(&approvals, id).unwrap();
        assert_eq!(
            approvals.decide(id, Some(1001), approve(1001)),
            Err(ApprovalError::NotFound(id))
        );
        assert!(approvals.list(Some(1001)).0.is_empty());
        assert_eq!(approvals.list(Some(1000)).0[0].tool, "rm");
        approvals.decide(id, Some(1000), approve(1000)).unwrap();
        assert_eq!(rx.try_recv().unwrap(), approve(1000));
        assert_eq!(
            approvals.decide(id, None, approve(0)),
            Err(ApprovalError::NotFound(id))
        );
    }

    #[test]
    fn a_session_holds_a_bounded_number_and_its_end_wakes_them() {
        let approvals = registry();
        let opened: Vec<_> = (0..MAX_PER_SESSION)
            .map(|_| hold(&approvals, approvals.number()).unwrap())
            .collect();
        assert_eq!(hold(&approvals, 99).unwrap_err(), ApprovalError::Full);
        approvals.end_session("s-1");
        for rx in opened {
            assert!(matches!(
                rx.recv_timeout(Duration::from_secs(1)),
                Err(RecvTimeoutError::Disconnected)
            ));
        }
        assert!(matches!(
            hold(&approvals, 100),
            Err(ApprovalError::NoSession(_))
        ));
    }

    #[test]
    fn a_client_decides_only_its_own_sessions_calls() {
        let approvals = registry();
        let id = approvals.number();
        let rx = hold(&approvals, id).unwrap();
        approvals.decide_in("other-2", id, approve(0));
        assert!(rx.try_recv().is_err());
        approvals.decide_in("s-1", id, approve(0));
        assert!(rx.try_recv().unwrap().approved);
    }
}
