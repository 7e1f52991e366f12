//! One `mcpguard run` connection: check who is asking, launch the server
//! confined by its policy, relay its stdio, forward signals, and tear
//! everything down when either side goes away.
//!
//! Runs on its own OS thread: everything here blocks, and none of it may
//! stall the accept loop or another server.

use std::{
    os::{
        fd::OwnedFd,
        unix::{net::UnixStream, process::ExitStatusExt},
    },
    path::PathBuf,
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use mcpguard_common::policy::{NetKey, PortSet};
use nix::sys::signal::Signal;
use thiserror::Error;
use tracing::{info, warn};

use super::{
    admit::{peer, Peer},
    approvals,
    auditor::Msg,
    mint::{MintAsk, MintError, MintFor},
    plan::{self, DnsPlan, LaunchLayers, LaunchPlan, LaunchRequest, PlanError},
    proto::{self, ProtoError, Request, Response},
    shared::Shared,
    sockets::SocketFence,
    stdio::{self, Relays},
};
use crate::{
    audit::{format_ts, AuditRecord, Body, Origin},
    dns::{self, DnsView, MapSink, Resolver},
    launch::{
        self,
        cgroup::Cgroup,
        limits::{LimitCounters, ServerLimits},
        LaunchSpec, LaunchStatus, Launched,
    },
    mcp::{self, redact::Redactor, tools::PinStore, Tap},
    policy::{self, audit::FilesLevel, call_net::CallNet, NetEntry, Policy, SecretSource},
};

/// How long a new connection has to send its first byte and request, in
/// all; also how long one write to the client may block.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum SessionError {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error(transparent)]
    Peer(#[from] super::admit::PeerError),
    #[error("refusing a launch request from inside a guarded server: a server may not start servers under another policy")]
    FromGuarded,
    #[error("uid {0} has no passwd entry (its home is needed to expand `~` in the policy)")]
    NoUser(u32),
    #[error("the first message must be a launch request")]
    NotLaunch,
    #[error(
        "too many connections of this user are still sending their request (at most {}); \
         try again when they finish",
        super::admit::MAX_HANDSHAKES_PER_UID
    )]
    TooManyHandshakes,
    #[error("refusing to launch: {0}")]
    TooManyServers(#[from] super::admit::AtLimit),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("cgroup: {0}")]
    Cgroup(#[from] launch::cgroup::CgroupError),
    #[error("refusing to launch: {0}")]
    Limits(#[from] launch::limits::LimitError),
    #[error("installing the policy maps: {0}")]
    Maps(#[from] crate::ebpf::EbpfError),
    #[error("{0}")]
    Launch(#[from] launch::LaunchError),
    #[error("{0}")]
    Secret(#[from] super::secrets::SecretError),
    #[error("refusing to launch: {0}")]
    Mint(#[from] MintError),
    #[error("{0}")]
    Dns(#[from] crate::dns::DnsError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("refusing to launch unaudited: {0}")]
    Tracepoints(#[from] crate::ebpf::demand::DemandError),
}

/// A launch refused before the server runs: its `launch_failed` record,
/// and the error for the client.
fn refuse_launch(
    shared: &Shared,
    origin: &Origin,
    argv: Vec<String>,
    error: SessionError,
) -> SessionError {
    shared.audit(Msg::Record(AuditRecord::new(
        Body::LaunchFailed {
            argv,
            error: error.to_string(),
        },
        Some(origin),
        SystemTime::now(),
    )));
    error
}

/// Serve one connection to the end; errors are reported to the client.
pub fn serve(shared: Arc<Shared>, stream: UnixStream) {
    let peer = match peer(&stream) {
        Ok(p) => p,
        Err(error) => {
            warn!(%error, "rejecting connection");
            return;
        }
    };
    // Nothing the daemon writes may block this thread for long either (a
    // client that never reads).
    if let Err(error) = stream.set_write_timeout(Some(REQUEST_TIMEOUT)) {
        warn!(%error, "rejecting connection");
        return;
    }
    let result = match shared.admission.handshake(peer.uid) {
        Some(slot) => serve_peer(&shared, &stream, &peer, slot),
        None => Err(SessionError::TooManyHandshakes),
    };
    if let Err(error) = result {
        // The caller gets the message as is; the log may be read by
        // others (an argv[0] that is not found is in it).
        let message = error.to_string();
        let logged = Redactor::shapes_only().text(&message, &mut Default::default());
        warn!(uid = peer.uid, pid = peer.pid, error = %logged, "launch refused");
        let _ = proto::write_frame(&mut &stream, &Response::Error { message });
    }
}

/// `handshake` is the connection's place among those still sending their
/// request; it is given up once the request is in.
fn serve_peer(
    shared: &Arc<Shared>,
    stream: &UnixStream,
    peer: &Peer,
    handshake: super::admit::Slot<'_>,
) -> Result<(), SessionError> {
    let Some((request, stdio)) = read_request(shared, stream, peer, handshake)? else {
        return Ok(());
    };
    let daemon = plan::Daemon {
        layers: &shared.layers,
        shutting_down: shared.is_shutting_down(),
    };
    let policy = plan::admit(&request, peer.uid, &daemon)?;
    let user = nix::unistd::User::from_uid(peer.uid.into())
        .ok()
        .flatten()
        .ok_or(SessionError::NoUser(peer.uid))?;
    // Stored secrets are read before anything exists, so a bad one
    // launches nothing.
    let mut secrets = shared.secrets.load(&policy.secrets, &user.name)?;

    let launch_no = shared.next_launch();
    let origin = Origin {
        server: policy.name.clone(),
        policy: request.policy_path.clone(),
        launch: format!("{}-{launch_no}", policy.name),
        uid: peer.uid,
    };
    // A guarantee this kernel cannot hold: refused (and recorded) unless
    // the policy accepts running without it.
    let facts = plan::kernel_facts(&shared.layers, launch::probe_landlock_abi());
    if let Err(error) = plan::check_guarantees(&policy, request.learn, facts) {
        return Err(refuse_launch(shared, &origin, request.argv, error.into()));
    }
    let (_server_slot, launch_slot) = match shared
        .admission
        .launch_within(peer.uid, super::admit::LAUNCH_WAIT)
    {
        Ok(slots) => slots,
        Err(limit) => return Err(refuse_launch(shared, &origin, request.argv, limit.into())),
    };
    // Minted for this launch, within the user's launch limits and before
    // anything exists: a helper that fails refuses the launch.
    if let Err(error) = mint(shared, &policy, &user.name, &origin, &mut secrets) {
        return Err(refuse_launch(shared, &origin, request.argv, error.into()));
    }
    let redactor = Arc::new(Redactor::new(&secrets));
    // From here on the cgroup exists: every exit path tears it down.
    let mut guard = Teardown::create(shared, origin, launch_no)?;
    shared.budgets.register(&guard.origin);
    // Bounds first: the server's first task already counts against them.
    let limits = shared
        .limits
        .apply(&guard.cgroup, &guard.origin.launch, &policy.limits)?;
    let (limit_cgroups, counters) = (limits.join.clone(), limits.counters.clone());
    guard.limits = Some(limits);

    let prepared = prepare(&guard, &policy, &request, limit_cgroups, secrets);
    let plan = plan::plan(&policy, &caller(peer, &user), &request, &prepared)?;
    apply(&mut guard, &plan, &policy, &request, &redactor, counters)?;
    hold_tracepoints(&mut guard, &request)?;
    let child = start(&mut guard, &plan.spec, &policy, &request)?;
    if let Some(reader) = &shared.landlock_audit {
        // The launcher called landlock_restrict_self as this pid.
        let secrets = redactor.has_secrets().then(|| redactor.clone());
        reader.launched(child.id(), guard.cgroup.id, &guard.origin, secrets);
    }
    drop(launch_slot);
    let (launch, pid) = (guard.origin.launch.clone(), child.id());
    info!(launch = %launch, pid, uid = peer.uid, cgroup_id = guard.cgroup.id, "server started");
    proto::write_frame(&mut &*stream, &Response::Started { launch, pid })?;

    let tap = tap(&guard, &policy.name, &plan, redactor);
    let origin = &guard.origin;
    shared
        .approvals
        .session(&origin.launch, origin.uid, &origin.server, &tap);
    let approvals = approvals::Spec {
        approvals: shared.approvals.clone(),
        tap: tap.clone(),
        launch: origin.launch.clone(),
        timeout: plan.tools.ask_timeout,
        control: stream.try_clone()?,
    };
    let learned = request.learn.then_some((&policy, user.dir.as_path()));
    serve_session(guard, stream, child, (stdio, approvals), tap, learned)
}

/// Mints the policy's `mint` secrets for this launch, each recorded (never
/// its value), and adds them to `secrets`.
fn mint(
    shared: &Shared,
    policy: &Policy,
    user: &str,
    origin: &Origin,
    secrets: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), MintError> {
    let to = MintFor {
        user,
        uid: origin.uid,
        server: &policy.name,
        launch: &origin.launch,
    };
    for secret in &policy.secrets {
        let SecretSource::Mint { helper, ttl_secs } = &secret.source else {
            continue;
        };
        let ask = MintAsk {
            env: &secret.env,
            helper,
            ttl_secs: *ttl_secs,
        };
        let minted = shared.minters.mint(&ask, &to)?;
        let body = Body::SecretMinted {
            env: secret.env.clone(),
            helper: helper.clone(),
            path: minted.path.display().to_string(),
            ttl_secs: *ttl_secs,
            expires_at: format_ts(minted.expires_at),
        };
        shared.audit(Msg::Record(AuditRecord::new(
            body,
            Some(origin),
            SystemTime::now(),
        )));
        secrets.push((secret.env.clone(), minted.value));
    }
    Ok(())
}

/// Reads the launch request and the client's stdio; `None` when the
/// connection was a query (served here).
fn read_request(
    shared: &Arc<Shared>,
    stream: &UnixStream,
    peer: &Peer,
    handshake: super::admit::Slot<'_>,
) -> Result<Option<(LaunchRequest, [OwnedFd; 3])>, SessionError> {
    let guarded = shared.tree.holds(&peer.cgroup()?);
    // A client that sends nothing, or trickles its request, must not hold
    // this thread for long: one deadline for the first byte and the frame.
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let stdio = match proto::recv_hello(stream)? {
        // Status and audit queries carry no descriptors (and have limits
        // of their own).
        proto::Hello::Query => {
            drop(handshake);
            super::query::serve(shared, stream, peer, guarded);
            return Ok(None);
        }
        // A guarded server must not reach the daemon to start itself (or a
        // helper) under a laxer policy: Landlock does not confine connect()
        // to pathname Unix sockets, so this check is what stops it.
        proto::Hello::Stdio(_) if guarded => return Err(SessionError::FromGuarded),
        proto::Hello::Stdio(fds) => fds,
    };
    let Some(Request::Launch { version, request }) =
        proto::read_frame(&mut proto::Deadline::new(stream, deadline))?
    else {
        return Err(SessionError::NotLaunch);
    };
    drop(handshake);
    // From here on the socket carries signals, whenever they come.
    stream.set_read_timeout(None)?;
    if version != proto::VERSION {
        return Err(ProtoError::Version { got: version }.into());
    }
    Ok(Some((request, stdio)))
}

/// The caller as the plan needs it: the kernel's ids, the passwd entry's
/// home, the group database's names of its supplementary groups.
fn caller(peer: &Peer, user: &nix::unistd::User) -> plan::Caller {
    let name = |gid: u32| {
        nix::unistd::Group::from_gid(gid.into())
            .ok()
            .flatten()
            .map(|group| group.name)
    };
    plan::Caller {
        uid: peer.uid,
        gid: peer.gid,
        home: user.dir.clone(),
        groups: peer.groups.iter().map(|&gid| (gid, name(gid))).collect(),
    }
}

/// What the plan needs from the host for this launch: its cgroups, the
/// runtime baseline that exists here, the hosts file's answers.
fn prepare(
    guard: &Teardown,
    policy: &Policy,
    request: &LaunchRequest,
    limit_cgroups: Vec<PathBuf>,
    secrets: Vec<(String, Vec<u8>)>,
) -> plan::Prepared {
    let mut hosts_file = Vec::new();
    if !request.learn {
        hosts_file = dns::hosts_file::system_rules(
            &policy.network.hosts,
            policy.network.allow_local_answers,
        );
        for rule in &hosts_file {
            info!(launch = %guard.origin.launch, rule = %rule.text, "opened from the hosts file");
        }
    }
    let mut own = vec![guard.cgroup.path.clone()];
    own.extend(limit_cgroups.iter().cloned());
    plan::Prepared {
        cgroup_id: guard.cgroup.id,
        cgroup_path: guard.cgroup.path.clone(),
        limit_cgroups,
        baseline_read: policy::baseline::read_paths(),
        baseline_cgroups: policy::baseline::cgroup_paths(&own),
        hosts_file,
        secrets,
    }
}

/// Puts the plan's kernel state in place (the server's resolver, then its
/// map entries) and tells the audit thread about the server.
fn apply(
    guard: &mut Teardown,
    plan: &LaunchPlan,
    policy: &Policy,
    request: &LaunchRequest,
    redactor: &Arc<Redactor>,
    counters: Arc<Mutex<LimitCounters>>,
) -> Result<(), SessionError> {
    guard.net = plan.maps.net.clone();
    // The server's resolver exists before its policy entry points DNS at
    // it: every port-53 destination of the server goes there.
    let dns_port = start_resolver(guard, &plan.dns)?;
    watch_calls(guard, &plan.tools.call_net);
    let (shared, cgroup) = (&guard.shared, &guard.cgroup);
    shared.policy_maps().install(
        cgroup.id,
        plan.maps.server(guard.launch_no, dns_port),
        &plan.maps.net,
        plan.maps.bind,
    )?;
    shared.register_server(guard.launch_no, cgroup.clone());
    shared.audit(Msg::Register {
        cgroup_id: cgroup.id,
        origin: guard.origin.clone(),
        redactor: redactor.has_secrets().then(|| redactor.clone()),
    });
    shared.audit(Msg::Limits {
        cgroup_id: cgroup.id,
        counters,
    });
    shared.audit(Msg::Persist {
        cgroup_id: cgroup.id,
        cwd: PathBuf::from(&request.cwd),
        allow: policy.filesystem.allow_persistence.clone(),
    });
    if request.learn {
        shared.audit(Msg::Learn {
            cgroup_id: cgroup.id,
            cwd: PathBuf::from(&request.cwd),
        });
    }
    Ok(())
}

/// Starts the server's resolver; returns its port.
fn start_resolver(guard: &mut Teardown, dns: &DnsPlan) -> Result<u16, SessionError> {
    let view = Arc::new(
        DnsView::new(
            guard.cgroup.id,
            dns.hosts.clone(),
            dns.allow.clone(),
            guard.shared.upstream_dns,
            dns.allow_local_answers,
            Box::new(guard.server_maps()),
        )
        .with_min_ttl(dns.min_ttl)
        .with_installed(dns.installed.clone()),
    );
    let resolver = Resolver::start(view.clone())?;
    let port = resolver.port;
    guard.dns = Some((resolver, view));
    Ok(port)
}

/// Opens the server's per-call rules while calls that need them run
/// (nothing to do for a server without any).
fn watch_calls(guard: &Teardown, rules: &CallNet) {
    let Some((_, view)) = guard.dns.as_ref().filter(|_| !rules.is_empty()) else {
        return;
    };
    let (shared, origin) = (guard.shared.clone(), guard.origin.clone());
    let record = Box::new(move |detail, tool: &str, id: &serde_json::Value| {
        let body = Body::Mcp {
            event: "call_network".into(),
            detail,
        };
        let mut rec = AuditRecord::new(body, Some(&origin), SystemTime::now());
        rec.tool = Some(tool.to_owned());
        rec.call_id = Some(id.clone());
        shared.audit(Msg::Record(rec));
    });
    let server = super::call_net::Server {
        rules: rules.clone(),
        view: view.clone(),
        record,
    };
    guard.shared.call_net.register(guard.cgroup.id, server);
}

/// Attaches the syscall tracepoints for this server, before its first
/// process exists: the server starts audited, or not at all.
fn hold_tracepoints(guard: &mut Teardown, request: &LaunchRequest) -> Result<(), SessionError> {
    let what = if request.learn { "learn" } else { "server" };
    let reason = format!("{what} {}", guard.origin.launch);
    match guard.shared.tracepoints.hold(reason) {
        Ok(hold) => {
            guard.tracepoints = Some(hold);
            Ok(())
        }
        Err(error) => {
            let argv = request.argv.clone();
            Err(refuse_launch(
                &guard.shared,
                &guard.origin,
                argv,
                error.into(),
            ))
        }
    }
}

/// Starts the server as `spec` says and records its launch.
fn start(
    guard: &mut Teardown,
    spec: &LaunchSpec,
    policy: &Policy,
    request: &LaunchRequest,
) -> Result<Child, SessionError> {
    let shared = guard.shared.clone();
    let Launched {
        child,
        status,
        socket_fence,
        executor,
    } = match launch::spawn(
        spec,
        std::path::Path::new("/proc/self/exe"),
        Stdio::piped(),
        Stdio::piped(),
        Stdio::piped(),
    ) {
        Ok(ok) => ok,
        Err(error) => {
            let argv = request.argv.clone();
            return Err(refuse_launch(&shared, &guard.origin, argv, error.into()));
        }
    };
    guard.started = true;
    let files = plan::files_level(policy, request.learn);
    watch_fences(guard, &status, socket_fence, executor, request.learn, files)?;
    let layers = LaunchLayers::new(
        &shared.layers,
        &status,
        &policy.limits,
        guard.fence.is_some(),
        files,
    );
    let mut launch_rec = AuditRecord::new(
        Body::Launch {
            argv: request.argv.clone(),
            cgroup: guard.cgroup.path.display().to_string(),
            cwd: request.cwd.clone(),
            layers: launch_layers(&layers, policy, request.learn),
        },
        Some(&guard.origin),
        SystemTime::now(),
    );
    launch_rec.pid = Some(child.id());
    launch_rec.uid = Some(guard.origin.uid);
    shared.audit(Msg::Record(launch_rec));
    Ok(child)
}

/// The launch record's `layers`: the plan's, and the tools with per-call
/// network rules when there are some (learning opens none).
fn launch_layers(layers: &LaunchLayers<'_>, policy: &Policy, learn: bool) -> serde_json::Value {
    let mut value = layers.to_value();
    let tools: Vec<&str> = policy.tools.call_net.tools().collect();
    if !tools.is_empty() && !learn {
        value["call_network"] = serde_json::json!(tools);
    }
    value
}

/// Tells the audit thread what the launcher set up, and starts answering
/// the server's socket fence.
fn watch_fences(
    guard: &mut Teardown,
    status: &LaunchStatus,
    socket_fence: Option<launch::notify::Listener>,
    executor: Option<std::os::unix::net::UnixDatagram>,
    learn: bool,
    files: FilesLevel,
) -> Result<(), SessionError> {
    let (shared, cgroup_id) = (guard.shared.clone(), guard.cgroup.id);
    if let Some(pid) = status.persist.as_ref().and_then(|p| p.executor) {
        // Before any trapped call can run: the executor's own records
        // make no persist records of their own.
        shared.audit(Msg::PersistExecutor { cgroup_id, pid });
    }
    if let Some(listener) = socket_fence {
        let maps = guard.server_maps();
        let record = Box::new(move |body, pid, at_ns| maps.fenced(files, at_ns, body, pid));
        // Until this thread runs, a trapped call just waits.
        guard.fence = Some(SocketFence::start(listener, learn, record, executor)?);
    }
    if let Some(p) = status
        .persist
        .as_ref()
        .filter(|p| !p.hooks_paths.is_empty())
    {
        shared.audit(Msg::PersistHooks {
            cgroup_id,
            dirs: p.hooks_paths.clone(),
        });
    }
    if let Some(m) = &status.mounts {
        shared.audit(Msg::Fence {
            cgroup_id,
            hidden: m.hidden.clone(),
            kept: m.kept.clone(),
            masked: m.masked.clone(),
        });
    }
    Ok(())
}

/// The server's MCP tap, under the plan's rules; its events are records of
/// this launch.
fn tap(
    guard: &Teardown,
    policy_name: &str,
    plan: &LaunchPlan,
    redactor: Arc<Redactor>,
) -> Arc<Tap> {
    let shared = &guard.shared;
    let tap = Tap::new(
        policy_name,
        plan.tools.clone(),
        redactor,
        shared.calls.clone(),
        guard.cgroup.id,
        Some(PinStore::new(
            &shared.state_dir,
            guard.origin.uid,
            policy_name,
        )),
        {
            let shared = shared.clone();
            let origin = guard.origin.clone();
            Box::new(move |e: mcp::Event| {
                let mut rec = AuditRecord::new(e.body, Some(&origin), e.ts);
                rec.tool = e.tool;
                rec.call_id = e.call_id;
                shared.audit(Msg::Record(rec));
            })
        },
    );
    Arc::new(tap.with_requests(plan.mcp))
}

/// Serves a started server to its end: its stdio through the tap (calls
/// that wait for a person through `approvals`), the client's signals to
/// it, then how it ended (when learning, the proposed policy first:
/// `learned` is the policy and the caller's home).
fn serve_session(
    mut guard: Teardown,
    stream: &UnixStream,
    mut child: Child,
    (stdio, approvals): ([OwnedFd; 3], approvals::Spec),
    tap: Arc<Tap>,
    learned: Option<(&Policy, &std::path::Path)>,
) -> Result<(), SessionError> {
    let Relays {
        input,
        output,
        errors,
        client_out,
        approver,
    } = Relays::start(&tap, stdio, &mut child, approvals)?;
    let control = spawn_control(stream, child.id(), &guard)?;
    let exit = child.wait()?;
    // The server is gone; its descendants go too.
    if let Err(error) = guard.cgroup.kill() {
        warn!(launch = %guard.origin.launch, %error, "killing the server's cgroup");
    }
    for relay in [output, errors] {
        // Output already written by the server is delivered before exit is
        // reported; the relays end at EOF once every writer is dead.
        stdio::wait_or_cancel(relay, Duration::from_secs(2));
    }
    // Calls still waiting for a person end with the server (and nothing
    // more is told to `mcpguard run` after this).
    approver.close();
    let (code, signal) = (exit.code(), exit.signal());
    guard.status = Some((code, signal));
    if let Some((policy, home)) = learned {
        harvest(&guard, stream, policy, home);
    }
    let _ = proto::write_frame(&mut &*stream, &Response::Exited { code, signal });
    let (in_relay, mut in_cancel) = input;
    in_cancel.fire();
    let _ = in_relay.join();
    // The client's stdout: both relays are done with it, so close it now;
    // its reader sees end of file without waiting for the teardown.
    drop(client_out);
    tap.finish();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = control.join();
    info!(launch = %guard.origin.launch, ?code, ?signal, "server exited");
    drop(guard);
    Ok(())
}

/// Learning: what the audit thread saw the server do, sent to the client
/// as a proposed policy.
fn harvest(guard: &Teardown, stream: &UnixStream, policy: &Policy, home: &std::path::Path) {
    let (tx, rx) = std::sync::mpsc::channel();
    guard.shared.audit(Msg::Harvest {
        cgroup_id: guard.cgroup.id,
        reply: tx,
    });
    let obs = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    let (policy_text, notes) =
        crate::policy::learn::propose(&policy.name, &obs, home, &policy.env.pass);
    let _ = proto::write_frame(
        &mut &*stream,
        &Response::Learned {
            policy: policy_text,
            notes,
        },
    );
}

/// Control: signals from the client; its end of the socket closing means
/// `mcpguard run` died, and the whole cgroup goes with it.
fn spawn_control(
    stream: &UnixStream,
    pid: u32,
    guard: &Teardown,
) -> std::io::Result<JoinHandle<()>> {
    let stream = stream.try_clone()?;
    let cgroup = guard.cgroup.clone();
    let launch = guard.origin.launch.clone();
    std::thread::Builder::new()
        .name("control".into())
        .stack_size(128 * 1024)
        .spawn(move || control_loop(stream, pid, &cgroup, &launch))
}

fn control_loop(stream: UnixStream, pid: u32, cgroup: &Cgroup, launch: &str) {
    loop {
        match proto::read_frame::<Request>(&mut &stream) {
            Ok(Some(Request::Signal { signal })) => match Signal::try_from(signal) {
                Ok(sig) if proto::FORWARDED_SIGNALS.contains(&sig) => {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
                }
                _ => warn!(launch, signal, "ignoring a signal that is not forwardable"),
            },
            Ok(Some(_)) => warn!(launch, "ignoring a request that is not a signal"),
            Ok(None) | Err(_) => {
                // `mcpguard run` is gone (or the server exited and the
                // session shut the socket): nothing may outlive it.
                if let Err(error) = cgroup.kill() {
                    warn!(launch, %error, "killing the server's cgroup");
                }
                return;
            }
        }
    }
}

/// Where a server's resolver puts the addresses it opens, and its records.
struct ServerMaps {
    shared: Arc<Shared>,
    origin: Origin,
    cgroup: u64,
}

impl MapSink for ServerMaps {
    fn install(&self, entry: &NetEntry) -> Result<(), String> {
        self.shared
            .policy_maps()
            .allow(entry)
            .map_err(|e| e.to_string())
    }

    fn remove(&self, entry: &NetEntry) {
        self.shared.policy_maps().revoke(entry);
    }

    fn audit(&self, ts: SystemTime, body: Body) {
        self.record(ts, body, None);
    }

    fn stranger(&self, ts: SystemTime, body: Body, uid: Option<u32>) {
        let mut rec = AuditRecord::new(body, None, ts);
        rec.uid = uid;
        self.shared.audit(Msg::Record(rec));
    }
}

impl ServerMaps {
    /// A record of the socket or persistence fence, of a call made at
    /// kernel time `at_ns`, tagged with the tool calls in flight then. A
    /// name-creating call's own record that is not a refusal is kept as
    /// the audit level keeps the kernel's records of the same calls.
    fn fenced(&self, files: FilesLevel, at_ns: u64, body: Body, pid: u32) {
        let calls = self.shared.calls.at(self.cgroup, at_ns);
        let file_call = matches!(
            body,
            Body::Open { .. } | Body::Mkdir(_) | Body::Rename(_) | Body::Link(_)
        );
        if file_call && !body.is_denied() && !files.records_allowed(!calls.is_empty()) {
            return;
        }
        let mut rec = AuditRecord::new(body, Some(&self.origin), SystemTime::now());
        rec.pid = Some(pid);
        super::auditor::tag_calls(&mut rec, &calls);
        self.shared.audit(Msg::Record(rec));
    }

    /// One record of this server (from `pid`, if known), tagged with the
    /// tool call running at the time.
    fn record(&self, ts: SystemTime, body: Body, pid: Option<u32>) {
        let mut rec = AuditRecord::new(body, Some(&self.origin), ts);
        rec.pid = pid;
        // A lookup made while a tool call runs belongs to that call.
        super::auditor::tag_calls(
            &mut rec,
            &self
                .shared
                .calls
                .at(self.cgroup, crate::audit::decode::boot_ns()),
        );
        self.shared.audit(Msg::Record(rec));
    }
}

/// Tears a launch down on every path out of the session: cgroup removed,
/// map entries deleted, the audit thread told to finish the server's trail.
struct Teardown {
    shared: Arc<Shared>,
    cgroup: Arc<Cgroup>,
    net: Vec<(u32, NetKey, PortSet)>,
    origin: Origin,
    status: Option<(Option<i32>, Option<i32>)>,
    /// Whether the server ran (a failed launch has its own record).
    started: bool,
    launch_no: u64,
    /// The server's resolver and the addresses it opened.
    dns: Option<(Resolver, Arc<DnsView>)>,
    /// The server's `[limits]` cgroups and counters.
    limits: Option<ServerLimits>,
    /// The thread answering the server's socket fence.
    fence: Option<SocketFence>,
    /// Keeps the syscall tracepoints attached until the audit thread has
    /// drained the server's last records.
    tracepoints: Option<crate::ebpf::demand::Hold>,
}

impl Teardown {
    /// Creates the server's cgroup: from here on, every way out of the
    /// session tears the launch down.
    fn create(
        shared: &Arc<Shared>,
        origin: Origin,
        launch_no: u64,
    ) -> Result<Teardown, SessionError> {
        Ok(Teardown {
            shared: shared.clone(),
            cgroup: Arc::new(shared.tree.child(&origin.launch)?),
            net: Vec::new(),
            origin,
            status: None,
            started: false,
            launch_no,
            dns: None,
            limits: None,
            fence: None,
            tracepoints: None,
        })
    }

    /// Where the server's resolver and socket fence put what they open
    /// and record.
    fn server_maps(&self) -> ServerMaps {
        ServerMaps {
            shared: self.shared.clone(),
            origin: self.origin.clone(),
            cgroup: self.cgroup.id,
        }
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Err(error) = self.cgroup.empty(Duration::from_secs(5)) {
            warn!(launch = %self.origin.launch, %error, "emptying the server's cgroup");
        }
        // Every task is gone, the counters are still there: their last
        // counts go in before the server's final record.
        if let Some(limits) = &self.limits {
            let hits = limits
                .counters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .poll();
            for hit in hits {
                self.shared.audit(Msg::Record(super::auditor::limit_record(
                    &hit,
                    Some(&self.origin),
                )));
            }
        }
        if let Err(error) = self.cgroup.remove(Duration::from_secs(5)) {
            warn!(launch = %self.origin.launch, %error, "removing the server's cgroup");
        }
        if let Some(limits) = &self.limits {
            limits.remove();
        }
        drop(self.fence.take());
        self.shared.call_net.unregister(self.cgroup.id);
        if let Some((resolver, view)) = self.dns.take() {
            drop(resolver);
            view.close_all();
        }
        self.shared.policy_maps().remove(self.cgroup.id, &self.net);
        self.shared.unregister_server(self.launch_no);
        // Landlock's records of the server's last moments go before its
        // last record.
        if let Some(reader) = self.shared.landlock_audit.as_ref().filter(|_| self.started) {
            reader.finished(&self.origin.launch);
        }
        let (exit_code, signal) = self.status.unwrap_or((None, None));
        let last = self.started.then(|| {
            AuditRecord::new(
                Body::ServerExit { exit_code, signal },
                Some(&self.origin),
                SystemTime::now(),
            )
        });
        self.shared.audit(Msg::Unregister {
            cgroup_id: self.cgroup.id,
            launch: self.origin.launch.clone(),
            last,
        });
        if let Some(hold) = self.tracepoints.take() {
            self.shared.audit(Msg::Release(hold));
        }
    }
}
