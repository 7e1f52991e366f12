//! On-demand attachment of the `syscalls/*` tracepoint programs.
//!
//! An enabled syscall tracepoint puts every task on the machine on the
//! kernel's slow syscall path (getppid ~1.3x, open+close ~1.15-1.4x for
//! processes no guard watches), and the open programs run for every open
//! anywhere. So the programs are loaded at daemon start (a load failure is
//! a missing layer then, as before) but attached only while at least one
//! [`Hold`] exists: the first hold attaches every program before it
//! returns, and once the last one has gone for `LINGER` (10 s) they are
//! detached on a background thread: each perf link's close waits for RCU grace periods under the
//! kernel's tracepoint lock, a few seconds for the ~120 links. A hold that
//! arrives while a detach runs cancels it: the links not closed yet are
//! kept, and only the closed ones are attached again.
//!
//! Who holds, and for how long, is the caller's business: today each
//! running server (learning or not) holds from before its first process
//! starts until its last kernel record is drained. Non-syscall tracepoints
//! (sched, io_uring) and the cgroup programs are not managed here: they
//! cost nothing per syscall and stay attached for the daemon's life.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use aya::{
    programs::{trace_point::TracePointLink, ProgramError, TracePoint},
    Ebpf,
};
use thiserror::Error;
use tracing::{info, warn};

/// At most this many threads close links at once (one per link up to
/// here): closes in parallel share their grace periods. Measured here for
/// the 124 links: 16 threads 2.5-4.6 s, one per link 0.05-1.1 s.
const DETACH_THREADS: usize = 256;

/// How long the links stay attached after the last hold goes. A detach
/// holds the kernel's tracepoint lock for seconds, and a hold that comes
/// meanwhile must wait for it to attach again (measured: launches 400 ms
/// apart each took 4.6 s longer without this); a server that restarts, or
/// the next of several short launches, reuses the links instead.
const LINGER: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum DemandError {
    #[error("eBPF program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("attaching {program} to {category}/{event}: {source}")]
    Attach {
        program: &'static str,
        category: &'static str,
        event: String,
        /// Boxed: the kernel's error is large, and rare.
        #[source]
        source: Box<ProgramError>,
    },
}

/// One tracepoint a loaded program is attached to while held.
#[derive(Clone, Debug)]
pub struct Target {
    pub program: &'static str,
    pub category: &'static str,
    pub event: String,
}

/// The syscall tracepoints' state, for `mcpguard status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemandState {
    /// How many tracepoints are managed (0: no syscall layer loaded).
    pub programs: usize,
    pub attached: bool,
    /// A detach is running on its background thread.
    pub detaching: bool,
    /// Why each current hold was taken.
    pub holders: Vec<String>,
}

impl DemandState {
    /// The state in a few words.
    pub fn describe(&self) -> String {
        let n = self.holders.len();
        let plural = if n == 1 { "" } else { "s" };
        match (self.programs, self.attached, self.detaching) {
            (0, ..) => "none loaded".into(),
            (p, true, _) => format!("attached ({n} holder{plural}; {p} tracepoints)"),
            (p, false, true) => format!("detaching ({p} tracepoints; nothing needs them)"),
            (p, false, false) => format!("detached (nothing needs them; {p} tracepoints)"),
        }
    }
}

/// The daemon's handle on its syscall tracepoints; clones share them.
///
/// Owns the loaded object: programs (and the links of everything attached
/// for the daemon's life) live as long as the last clone.
#[derive(Clone)]
pub struct Tracepoints {
    inner: Arc<Mutex<State>>,
}

struct State {
    ebpf: Ebpf,
    targets: Vec<Target>,
    /// Each hold's id and reason.
    holders: BTreeMap<u64, String>,
    next_id: u64,
    /// The link of each target (by index) while attached.
    links: Vec<Option<TracePointLink>>,
    /// Links the detach threads are to close, by target index: a new hold
    /// takes back those still here.
    doomed: Vec<(usize, TracePointLink)>,
    /// Links being closed right now.
    closing: usize,
    /// Bumped by every detach and every hold that cancels one: a detach
    /// thread stops once it is not the current one.
    epoch: u64,
}

/// While this lives, the syscall tracepoints stay attached. Dropping the
/// last one schedules their detach (it never blocks the dropping thread).
#[must_use = "the tracepoints are detached as soon as the hold is dropped"]
pub struct Hold {
    tracepoints: Tracepoints,
    id: u64,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold").field("id", &self.id).finish()
    }
}

impl Tracepoints {
    /// `ebpf` holds `targets`' programs, loaded and not attached.
    pub fn new(ebpf: Ebpf, targets: Vec<Target>) -> Tracepoints {
        Tracepoints {
            inner: Arc::new(Mutex::new(State {
                ebpf,
                links: targets.iter().map(|_| None).collect(),
                targets,
                holders: BTreeMap::new(),
                next_id: 1,
                doomed: Vec::new(),
                closing: 0,
                epoch: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep the tracepoints attached until the returned hold is dropped.
    /// Returns once every program is attached: nothing done after it is
    /// missed. A detach in progress is cancelled (the links it has not
    /// closed yet are kept). Blocks for the attach (8-28 ms for the 124
    /// links on a loaded 2-core VM, more while a detach holds the kernel's
    /// tracepoint lock): call it from a thread that may wait, never from
    /// the async runtime.
    pub fn hold(&self, reason: impl Into<String>) -> Result<Hold, DemandError> {
        let reason = reason.into();
        let mut state = self.lock();
        if state.holders.is_empty() {
            let started = Instant::now();
            state.epoch += 1;
            let kept = state.doomed.len();
            for (i, link) in std::mem::take(&mut state.doomed) {
                state.links[i] = Some(link);
            }
            match attach_missing(&mut state) {
                Ok(0) => {}
                Ok(attached) => info!(
                    tracepoints = attached,
                    kept,
                    attach_us = started.elapsed().as_micros() as u64,
                    reason = %reason,
                    "syscall tracepoints attached"
                ),
                Err(error) => {
                    warn!(%error, reason = %reason, "cannot attach the syscall tracepoints");
                    let epoch = doom_all(&mut state);
                    drop(state);
                    self.detach_later(epoch);
                    return Err(error);
                }
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        state.holders.insert(id, reason);
        Ok(Hold {
            tracepoints: self.clone(),
            id,
        })
    }

    /// Detach everything now, holds or not, and return once the links are
    /// closed: for the daemon's shutdown, after its servers are gone.
    /// Without it, the process's exit closes the links one by one (about
    /// 80 ms each here: ten seconds for the 124) and the daemon's exit
    /// waits for that; closed in parallel they take 0.05-1.1 s.
    pub fn detach_now(&self) {
        let mut state = self.lock();
        state.holders.clear();
        let epoch = doom_all(&mut state);
        drop(state);
        self.detach(epoch);
    }

    /// What is attached now, and for whom.
    pub fn state(&self) -> DemandState {
        let state = self.lock();
        DemandState {
            programs: state.targets.len(),
            attached: !state.holders.is_empty() && state.links.iter().all(Option::is_some),
            detaching: !state.doomed.is_empty() || state.closing > 0,
            holders: state.holders.values().cloned().collect(),
        }
    }

    fn release(&self, id: u64) {
        let mut state = self.lock();
        state.holders.remove(&id);
        if state.holders.is_empty() && state.links.iter().any(Option::is_some) {
            state.epoch += 1;
            let epoch = state.epoch;
            drop(state);
            self.on_thread(move |this| this.linger(epoch));
        }
    }

    /// The last hold has gone: keep the links for [`LINGER`], then, unless
    /// a hold came meanwhile (a new epoch), detach them.
    fn linger(&self, epoch: u64) {
        std::thread::sleep(LINGER);
        let mut state = self.lock();
        if state.epoch != epoch || !state.holders.is_empty() {
            return;
        }
        let epoch = doom_all(&mut state);
        drop(state);
        self.detach(epoch);
    }

    /// Run `work` on a thread of its own, or here if none can start.
    fn on_thread(&self, work: impl Fn(&Tracepoints) + Send + Sync + 'static) {
        let work = Arc::new(work);
        let (this, theirs) = (self.clone(), Arc::clone(&work));
        let spawned = std::thread::Builder::new()
            .name("tp-detach".into())
            .stack_size(128 * 1024)
            .spawn(move || theirs(&this));
        if let Err(error) = spawned {
            warn!(%error, "no thread for detaching the syscall tracepoints: detaching inline");
            work(self);
        }
    }

    /// Close the doomed links of detach `epoch` on threads of their own.
    fn detach_later(&self, epoch: u64) {
        self.on_thread(move |this| this.detach(epoch));
    }

    /// Closes the doomed links on up to [`DETACH_THREADS`] threads (one
    /// share here if none can start), until they are all closed or a hold
    /// cancels the detach.
    fn detach(&self, epoch: u64) {
        let started = Instant::now();
        let total = self.lock().doomed.len();
        let threads = total.clamp(1, DETACH_THREADS);
        let closed: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .filter_map(|_| {
                    std::thread::Builder::new()
                        .stack_size(64 * 1024)
                        .spawn_scoped(s, || self.close_doomed(epoch))
                        .ok()
                })
                .collect();
            let here = if workers.is_empty() {
                self.close_doomed(epoch)
            } else {
                0
            };
            here + workers
                .into_iter()
                .map(|w| w.join().unwrap_or(0))
                .sum::<usize>()
        });
        if total > 0 && closed == total {
            info!(
                tracepoints = closed,
                detach_ms = started.elapsed().as_millis() as u64,
                "syscall tracepoints detached"
            );
        } else {
            info!(
                closed,
                after_ms = started.elapsed().as_millis() as u64,
                "syscall tracepoint detach cancelled by a new hold"
            );
        }
    }

    /// One detach thread: close doomed links one at a time while `epoch`
    /// is current; how many it closed.
    fn close_doomed(&self, epoch: u64) -> usize {
        let mut closed = 0;
        loop {
            let link = {
                let mut state = self.lock();
                if state.epoch != epoch {
                    return closed;
                }
                let Some((_, link)) = state.doomed.pop() else {
                    return closed;
                };
                state.closing += 1;
                link
            };
            drop(link);
            closed += 1;
            self.lock().closing -= 1;
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.tracepoints.release(self.id);
    }
}

/// Moves every link to the doomed list and starts a new detach epoch.
fn doom_all(state: &mut State) -> u64 {
    let doomed: Vec<_> = state
        .links
        .iter_mut()
        .enumerate()
        .filter_map(|(i, l)| Some((i, l.take()?)))
        .collect();
    state.doomed.extend(doomed);
    state.epoch += 1;
    state.epoch
}

/// Attaches every target that has no link; how many it attached.
fn attach_missing(state: &mut State) -> Result<usize, DemandError> {
    let State {
        ebpf,
        targets,
        links,
        ..
    } = state;
    let mut attached = 0;
    for (t, link) in targets.iter().zip(links.iter_mut()) {
        if link.is_none() {
            *link = Some(attach_one(ebpf, t)?);
            attached += 1;
        }
    }
    Ok(attached)
}

fn attach_one(ebpf: &mut Ebpf, t: &Target) -> Result<TracePointLink, DemandError> {
    let failed = |source| DemandError::Attach {
        program: t.program,
        category: t.category,
        event: t.event.clone(),
        source: Box::new(source),
    };
    let prog: &mut TracePoint = ebpf
        .program_mut(t.program)
        .ok_or(DemandError::MissingProgram(t.program))?
        .try_into()
        .map_err(failed)?;
    let id = prog.attach(t.category, &t.event).map_err(failed)?;
    prog.take_link(id).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(programs: usize, attached: bool, detaching: bool, holders: usize) -> DemandState {
        DemandState {
            programs,
            attached,
            detaching,
            holders: (0..holders).map(|i| format!("server s-{i}")).collect(),
        }
    }

    #[test]
    fn the_status_line_says_whether_and_for_whom_they_are_attached() {
        assert_eq!(
            state(90, true, false, 3).describe(),
            "attached (3 holders; 90 tracepoints)"
        );
        assert_eq!(
            state(90, true, false, 1).describe(),
            "attached (1 holder; 90 tracepoints)"
        );
        assert_eq!(
            state(90, false, false, 0).describe(),
            "detached (nothing needs them; 90 tracepoints)"
        );
        assert_eq!(
            state(90, false, true, 0).describe(),
            "detaching (90 tracepoints; nothing needs them)"
        );
        assert_eq!(state(0, false, false, 2).describe(), "none loaded");
    }
}
