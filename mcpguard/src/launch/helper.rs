//! The launch helper: `mcpguard __exec-server`, re-executed by [`super::spawn`]
//! as root, single-threaded, with the server's stdio and the control socket
//! at fd 3. It builds every confinement layer, drops to the caller and
//! `execve`s the server (the steps are listed in [`super`]'s doc).

use std::{
    collections::BTreeSet,
    ffi::{CString, OsStr},
    fs::{self, OpenOptions},
    io::{self, Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{ffi::OsStrExt, fs::PermissionsExt, net::UnixStream},
    },
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    unistd::{Gid, Uid},
};
use serde::Serialize;
use thiserror::Error;

use super::{
    mounts, notify, persist, persist_fence, reach, sandbox, seccomp, ErrReply, LandlockReport,
    LaunchSpec, LaunchStatus, SandboxError, Stage, CONTROL_FD, EXIT_EXEC_FAILED, EXIT_SETUP_FAILED,
    HELPER_SUBCOMMAND, MAX_SPEC_LEN,
};
use crate::{ipc, kernel::proc};

/// Failures inside the helper. Only their messages cross the wire.
#[derive(Debug, Error)]
pub(super) enum HelperError {
    #[error("cannot read launch spec from fd {CONTROL_FD}: {source}")]
    ReadSpec { source: io::Error },
    #[error("launch spec is {len} bytes, more than the {MAX_SPEC_LEN} allowed")]
    SpecTooLarge { len: usize },
    #[error("cannot decode launch spec: {source}")]
    DecodeSpec { source: serde_json::Error },
    #[error(
        "launch helper has {threads} threads; main.rs must dispatch `{HELPER_SUBCOMMAND}` \
         before starting any runtime or thread"
    )]
    MultiThreaded { threads: usize },
    #[error("launch spec has an empty argv")]
    EmptyArgv,
    #[error("refusing to run a server as uid 0: servers never run as root")]
    RootUid,
    #[error("launch spec {field} contains a NUL byte")]
    NulByte { field: &'static str },
    #[error("invalid environment variable name {name:?}")]
    BadEnvName { name: String },
    #[error("environment variable {name:?} is set twice")]
    DuplicateEnv { name: String },
    #[error("launch spec {field} {path} is not absolute")]
    RelativePath { field: &'static str, path: PathBuf },
    #[error("cannot start a new session (setsid): {errno}")]
    Setsid { errno: Errno },
    #[error("cannot join cgroup {path}: {errno}")]
    JoinCgroup { path: PathBuf, errno: Errno },
    #[error("joined cgroup {expected} but /proc/self/cgroup says {actual:?}")]
    CgroupMismatch { expected: PathBuf, actual: String },
    #[error(transparent)]
    Landlock(#[from] SandboxError),
    #[error(transparent)]
    Mounts(#[from] mounts::MountError),
    #[error(transparent)]
    Persist(#[from] persist::PersistError),
    #[error("the persistence fence needs the private mount namespace, which the spec leaves out")]
    PersistWithoutMounts,
    #[error(transparent)]
    Reach(#[from] reach::ReachError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error(transparent)]
    Notify(#[from] notify::NotifyError),
    #[error(transparent)]
    PersistFence(#[from] persist_fence::PersistFenceError),
    #[error("cannot set supplementary groups to {groups:?}: {errno}")]
    SetGroups { groups: Vec<u32>, errno: Errno },
    #[error("cannot set gid to {gid}: {errno}")]
    SetGid { gid: u32, errno: Errno },
    #[error("cannot set uid to {uid}: {errno}")]
    SetUid { uid: u32, errno: Errno },
    #[error("cannot read back process credentials: {errno}")]
    GetIds { errno: Errno },
    #[error("privilege drop did not stick: {what} is {actual}, expected {expected}")]
    IdentityMismatch {
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("privilege drop did not stick: setuid(0) still succeeds")]
    RegainedRoot,
    #[error("cannot set no_new_privs: {errno}")]
    NoNewPrivs { errno: Errno },
    #[error("the daemon exited while the server was being launched")]
    ParentGone,
    #[error("cannot set the parent-death signal: {errno}")]
    PdeathSig { errno: Errno },
    #[error("no_new_privs reads back as unset after setting it")]
    NoNewPrivsNotSet,
    #[error("cannot chdir to {path} as uid {uid}: {errno}")]
    Chdir {
        path: PathBuf,
        uid: u32,
        errno: Errno,
    },
    #[error("argv[0] is empty")]
    EmptyProgram,
    #[error("cannot look up {program:?}: it has no `/` and the server's environment has no PATH")]
    NoPathVar { program: String },
    #[error("{program:?} not found in PATH={path_var:?}")]
    ProgramNotFound { program: String, path_var: String },
    #[error("{path} is not executable by uid {uid}")]
    NotExecutable { path: PathBuf, uid: u32 },
    #[error("cannot write status to fd {CONTROL_FD}: {source}")]
    Report { source: io::Error },
    #[error("cannot open /proc/self/fd to list the fds the server inherits: {errno}")]
    FdList { errno: Errno },
    #[error("cannot execute {path}: {errno}{hint}")]
    Exec {
        path: PathBuf,
        errno: Errno,
        hint: &'static str,
    },
}

impl HelperError {
    pub(super) fn stage(&self) -> Stage {
        match self {
            Self::ReadSpec { .. } | Self::SpecTooLarge { .. } | Self::DecodeSpec { .. } => {
                Stage::ReadSpec
            }
            Self::MultiThreaded { .. }
            | Self::EmptyArgv
            | Self::RootUid
            | Self::NulByte { .. }
            | Self::BadEnvName { .. }
            | Self::DuplicateEnv { .. }
            | Self::RelativePath { .. } => Stage::ValidateSpec,
            Self::Setsid { .. } => Stage::Session,
            Self::JoinCgroup { .. } | Self::CgroupMismatch { .. } => Stage::Cgroup,
            Self::Landlock(_) => Stage::Landlock,
            Self::Mounts(_) | Self::Persist(_) | Self::PersistWithoutMounts => Stage::Mounts,
            Self::Seccomp(_) | Self::Notify(_) | Self::PersistFence(_) => Stage::Seccomp,
            Self::SetGroups { .. }
            | Self::SetGid { .. }
            | Self::SetUid { .. }
            | Self::GetIds { .. }
            | Self::IdentityMismatch { .. }
            | Self::RegainedRoot
            | Self::NoNewPrivs { .. }
            | Self::NoNewPrivsNotSet
            | Self::ParentGone
            | Self::PdeathSig { .. }
            | Self::Reach(_) => Stage::Privileges,
            Self::Chdir { .. } => Stage::Chdir,
            Self::EmptyProgram
            | Self::NoPathVar { .. }
            | Self::ProgramNotFound { .. }
            | Self::NotExecutable { .. } => Stage::Resolve,
            Self::Report { .. } | Self::FdList { .. } => Stage::Report,
            Self::Exec { .. } => Stage::Exec,
        }
    }
}

fn errno_of(error: &io::Error) -> Errno {
    Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO))
}

// ---------------------------------------------------------------------------
// Wire format, helper's end

/// Success line: `{"ok":true, <LaunchStatus fields>}`.
#[derive(Serialize)]
struct OkReply<'a> {
    ok: bool,
    #[serde(flatten)]
    status: &'a LaunchStatus,
}

/// Reads one framed spec ([`ipc::read_frame`]); the length is checked
/// before anything is read.
pub(super) fn read_spec(input: &mut impl Read) -> Result<LaunchSpec, HelperError> {
    let eof = || io::Error::from(io::ErrorKind::UnexpectedEof);
    match ipc::read_frame(input, MAX_SPEC_LEN) {
        Ok(Some(spec)) => Ok(spec),
        Ok(None) => Err(HelperError::ReadSpec { source: eof() }),
        Err(ipc::FrameError::TooLarge { len }) => Err(HelperError::SpecTooLarge { len }),
        Err(ipc::FrameError::Json(source)) => Err(HelperError::DecodeSpec { source }),
        Err(ipc::FrameError::Io(source)) => Err(HelperError::ReadSpec { source }),
        Err(e @ (ipc::FrameError::Truncated { .. } | ipc::FrameError::TimedOut)) => {
            Err(HelperError::ReadSpec {
                source: io::Error::new(io::ErrorKind::UnexpectedEof, e),
            })
        }
    }
}

pub(super) fn encode_ok(status: &LaunchStatus) -> Vec<u8> {
    let mut line =
        serde_json::to_vec(&OkReply { ok: true, status }).expect("LaunchStatus always serializes");
    line.push(b'\n');
    line
}

pub(super) fn encode_err(error: &HelperError) -> Vec<u8> {
    let reply = ErrReply {
        ok: false,
        stage: error.stage(),
        error: error.to_string(),
    };
    let mut line = serde_json::to_vec(&reply).expect("ErrReply always serializes");
    line.push(b'\n');
    line
}

// ---------------------------------------------------------------------------
// The helper process

/// Everything `execve` needs, prepared before the status line is written.
struct ExecPlan {
    exe: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    status: LaunchStatus,
    /// The socket fence's listener, for the daemon.
    fence: Option<OwnedFd>,
    /// The persistence fence's executor socket, for the daemon.
    executor: Option<OwnedFd>,
}

/// Entry point of `mcpguard __exec-server`; never returns.
///
/// Must run before anything else in the process (no threads, no tokio).
pub fn helper_main() -> ! {
    if !control_fd_is_socket() {
        eprintln!(
            "mcpguard {HELPER_SUBCOMMAND}: fd {CONTROL_FD} is not a control socket; \
             this subcommand is only started by the mcpguard daemon"
        );
        std::process::exit(EXIT_SETUP_FAILED);
    }
    // SAFETY: fd 3 is the socket the daemon placed there (checked above) and
    // nothing else in this fresh process owns it.
    let mut control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    close_inherited_fds();

    let plan = match prepare_exec(&mut control) {
        Ok(plan) => plan,
        Err(error) => fail(&mut control, &error, EXIT_SETUP_FAILED),
    };
    if let Err(source) = send_status(&mut control, &plan) {
        fail(
            &mut control,
            &HelperError::Report { source },
            EXIT_SETUP_FAILED,
        );
    }
    // The daemon holds its own copies of the listeners now.
    drop(plan.fence);
    drop(plan.executor);
    if let Err(errno) = set_cloexec(CONTROL_FD) {
        let source = io::Error::from(errno);
        fail(
            &mut control,
            &HelperError::Report { source },
            EXIT_SETUP_FAILED,
        );
    }
    reset_signals();

    let Err(errno) = nix::unistd::execve(&plan.exe, &plan.argv, &plan.envp);
    let error = HelperError::Exec {
        path: plan.status.exe.clone(),
        errno,
        hint: if errno == Errno::EACCES {
            " (is its directory in the policy's [filesystem] exec list?)"
        } else {
            ""
        },
    };
    fail(&mut control, &error, EXIT_EXEC_FAILED)
}

/// Writes the status line, with the socket fence's listener attached to
/// its first bytes.
fn send_status(control: &mut UnixStream, plan: &ExecPlan) -> io::Result<()> {
    let line = encode_ok(&plan.status);
    // In this order: the socket fence's listener, the persistence fence's
    // executor.
    let fds: Vec<RawFd> = (plan.fence.iter())
        .chain(&plan.executor)
        .map(AsRawFd::as_raw_fd)
        .collect();
    let sent = ipc::send_fds(&*control, &line, &fds)?;
    control.write_all(&line[sent..])
}

/// Reports `error` on the control socket and exits with `code`.
fn fail(control: &mut UnixStream, error: &HelperError, code: i32) -> ! {
    // Nobody else would ever see this error if the socket is broken.
    if control.write_all(&encode_err(error)).is_err() {
        eprintln!("mcpguard {HELPER_SUBCOMMAND}: {error}");
    }
    std::process::exit(code)
}

fn control_fd_is_socket() -> bool {
    // SAFETY: fstat on a possibly-closed fd only fails with EBADF; `st` is a
    // plain output buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let ret = unsafe { libc::fstat(CONTROL_FD, &mut st) };
    ret == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
}

/// Closes every fd above 3 that the daemon might have leaked (all of ours
/// are close-on-exec, but a server must never inherit a daemon socket).
fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; none above 3 are in use
    // by this process yet.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) };
    if ret != 0 {
        // Pre-5.9 kernel: close what /proc says is open.
        for fd in listed_fds().into_iter().filter(|&fd| fd > CONTROL_FD) {
            // SAFETY: closing an fd no Rust object owns (the read_dir fd is
            // already closed, so EBADF at worst).
            unsafe { libc::close(fd) };
        }
    }
}

/// The fds `/proc/self/fd` lists, including the listing's own (closed by
/// the time this returns); empty if /proc cannot be read.
fn listed_fds() -> Vec<RawFd> {
    fs::read_dir("/proc/self/fd")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `/proc/self/fd`, opened while the helper is still unconfined: Landlock
/// checks the open, not the listing, so [`open_fds`] can list it last
/// without a denial in the server's audit trail (the baseline's `/proc`
/// may be off).
fn fd_dir() -> Result<nix::dir::Dir, HelperError> {
    use nix::fcntl::OFlag;
    nix::dir::Dir::open(
        "/proc/self/fd",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|errno| HelperError::FdList { errno })
}

/// The open fds that survive `execve`, the control socket excepted, as
/// listed by `dir` (from [`fd_dir`]).
fn open_fds(mut dir: nix::dir::Dir) -> Vec<i32> {
    let own = dir.as_raw_fd();
    dir.iter()
        .filter_map(|e| e.ok()?.file_name().to_str().ok()?.parse().ok())
        .collect::<Vec<RawFd>>()
        .into_iter()
        .filter(|&fd| fd != CONTROL_FD && fd != own)
        .filter(|&fd| {
            // SAFETY: F_GETFD only reads the fd's flags; EBADF for a closed
            // one.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            flags >= 0 && flags & libc::FD_CLOEXEC == 0
        })
        .collect()
}

fn set_cloexec(fd: RawFd) -> Result<(), Errno> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    // SAFETY: fd 3 stays open for the rest of the helper's life.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map(drop)
}

/// Gives the server default signal dispositions and an empty mask. Ignored
/// signals survive execve: the Rust runtime ignores SIGPIPE, and whoever
/// started the daemon may have ignored more (including glibc's reserved
/// real-time signals, which `signal(3)` refuses to touch, hence the raw
/// syscall).
fn reset_signals() {
    // An all-zero kernel `struct sigaction` is SIG_DFL, no flags, empty
    // mask on every architecture; 32 bytes covers the largest layout.
    let default_action = [0u64; 4];
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads a zeroed buffer at least as large as
        // the kernel's struct sigaction and writes nothing (old = NULL).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default_action.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
    }
    let empty = nix::sys::signal::SigSet::empty();
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&empty),
        None,
    );
}

/// Steps 1–6: everything up to the status line.
fn prepare_exec(control: &mut UnixStream) -> Result<ExecPlan, HelperError> {
    let daemon = nix::unistd::getppid();
    let (spec, argv, envp) = accept_spec(control)?;
    let user = reach::UserFs {
        uid: spec.uid,
        gid: spec.gid,
        groups: spec.groups.clone(),
    };
    let rooted = build_as_root(&spec, &user)?;
    let fd_dir = fd_dir()?;
    let (groups, landlock) = become_user(&spec, rooted.sandbox, daemon)?;
    let exe = enter_cwd_and_resolve(&spec)?;
    let exe_c = CString::new(exe.as_os_str().as_bytes())
        .map_err(|_| HelperError::NulByte { field: "argv[0]" })?;
    let mut persist = rooted.persist;
    let fences = install_fences(&spec, persist.as_mut())?;
    let fds = open_fds(fd_dir);

    Ok(ExecPlan {
        exe: exe_c,
        argv,
        envp,
        status: LaunchStatus {
            exe,
            pid: std::process::id(),
            uid: spec.uid,
            gid: spec.gid,
            groups,
            cgroup: spec.cgroup,
            landlock,
            mounts: rooted.mounts,
            persist,
            seccomp: fences.seccomp,
            fds,
        },
        fence: fences.socket,
        executor: fences.executor,
    })
}

/// Step 1: reads the spec, checks this process is still single-threaded
/// and converts argv/env for `execve`.
fn accept_spec(
    control: &mut UnixStream,
) -> Result<(LaunchSpec, Vec<CString>, Vec<CString>), HelperError> {
    let spec = read_spec(control)?;
    // setresuid and Landlock act on the calling thread's view of the
    // process; a runtime started before helper_main would break that.
    let threads = fs::read_dir("/proc/self/task").map_or(1, Iterator::count);
    if threads != 1 {
        return Err(HelperError::MultiThreaded { threads });
    }
    let (argv, envp) = validate_spec(&spec)?;
    Ok((spec, argv, envp))
}

/// What steps 2–3 built as root.
struct Rooted {
    mounts: Option<mounts::MountReport>,
    persist: Option<persist::PersistReport>,
    /// The Landlock ruleset, still to be enforced; `None` when learning.
    sandbox: Option<sandbox::PreparedSandbox>,
}

/// Steps 2–3: the session, the cgroups, the mount namespace and the
/// Landlock ruleset, while still root.
fn build_as_root(spec: &LaunchSpec, user: &reach::UserFs) -> Result<Rooted, HelperError> {
    // Leave the daemon's session and process group so terminal signals
    // aimed at the daemon do not hit servers; the daemon kills servers
    // through their cgroup.
    nix::unistd::setsid().map_err(|errno| HelperError::Setsid { errno })?;

    for cgroup in &spec.limit_cgroups {
        join_limit_cgroup(cgroup)?;
    }
    join_cgroup(&spec.cgroup)?;
    check_cwd(&spec.cwd, user)?;
    // Before Landlock's rules are opened, so they name what the server
    // will see.
    let mounts = spec
        .mounts
        .as_ref()
        .map(|m| mounts::apply(m, user))
        .transpose()?;
    // After every bind of the write grants: what it binds lies inside them.
    let persist = match (&spec.persist, &mounts) {
        (Some(p), Some(_)) => Some(persist::apply(p, user)?),
        (Some(_), None) => return Err(HelperError::PersistWithoutMounts),
        (None, _) => None,
    };
    let sandbox = (!spec.sandbox.learn)
        .then(|| sandbox::prepare(&spec.sandbox, user))
        .transpose()?;
    Ok(Rooted {
        mounts,
        persist,
        sandbox,
    })
}

/// Steps 4–5: drops to the caller, enforces Landlock and ties the
/// server's life to the daemon's. Returns the verified groups and what
/// Landlock achieved.
fn become_user(
    spec: &LaunchSpec,
    sandbox: Option<sandbox::PreparedSandbox>,
    daemon: nix::unistd::Pid,
) -> Result<(Vec<u32>, LandlockReport), HelperError> {
    let groups = drop_privileges(spec.uid, spec.gid, &spec.groups)?;
    let landlock = match sandbox {
        Some(s) => s.restrict_self()?,
        None => LandlockReport::learning(),
    };
    // If the daemon dies, its egress programs go with it: the server must
    // not outlive it unconfined. Set after the uid change (which clears
    // it); a daemon already gone by now means exit rather than exec.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|errno| HelperError::PdeathSig { errno })?;
    if nix::unistd::getppid() != daemon {
        return Err(HelperError::ParentGone);
    }
    Ok((groups, landlock))
}

/// Step 6, first half: enters the working directory as the user and
/// finds the program in the server's own `PATH`.
fn enter_cwd_and_resolve(spec: &LaunchSpec) -> Result<PathBuf, HelperError> {
    nix::unistd::chdir(&spec.cwd).map_err(|errno| HelperError::Chdir {
        path: spec.cwd.clone(),
        uid: spec.uid,
        errno,
    })?;
    let path_var = spec
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    resolve_program(&spec.argv[0], path_var, &spec.cwd, spec.uid)
}

/// The layers step 6 installs last.
struct Fences {
    seccomp: Option<seccomp::FenceReport>,
    /// The socket fence's listener.
    socket: Option<OwnedFd>,
    /// The persistence fence's executor socket.
    executor: Option<OwnedFd>,
}

/// Step 6, second half: the syscall fence, the persistence fence's
/// executor and the socket fence, in that order.
fn install_fences(
    spec: &LaunchSpec,
    persist: Option<&mut persist::PersistReport>,
) -> Result<Fences, HelperError> {
    // Last: from here on the helper only writes its status and execs, and
    // this process's own socket() calls go through the socket fence.
    let seccomp = (!spec.sandbox.learn)
        .then(|| seccomp::install(&spec.kernel_allow))
        .transpose()?;
    // The persistence fence's executor comes before the filter that
    // traps the calls it makes.
    let executor = match (&spec.persist, persist) {
        (Some(p), Some(report)) if p.wants_fence() => start_executor(p, report)?,
        _ => None,
    };
    if executor.is_some() && spec.sockets.is_none() {
        return Err(persist_fence::PersistFenceError::NoSocketFence.into());
    }
    let socket = spec
        .sockets
        .as_ref()
        .map(|rules| notify::install(rules, executor.is_some()))
        .transpose()?;
    Ok(Fences {
        seccomp,
        socket,
        executor,
    })
}

/// Forks the persistence fence's executor; its socket for the daemon.
/// `None` when no write grant is a directory (a granted file, like
/// `/dev/null`, holds no names).
fn start_executor(
    spec: &persist::PersistSpec,
    report: &mut persist::PersistReport,
) -> Result<Option<OwnedFd>, HelperError> {
    let grants: Vec<PathBuf> = (spec.write.iter())
        .filter_map(|g| fs::canonicalize(g).ok())
        .filter(|g| g.is_dir())
        .collect();
    if grants.is_empty() {
        return Ok(None);
    }
    let families = persist_fence::Families {
        grants,
        hooks: report.hooks_paths.clone(),
        allow: spec.allow.clone(),
    };
    let (executor, pid) = persist_fence::spawn_executor(families)?;
    report.executor = Some(pid);
    Ok(Some(executor))
}

/// Refuses a working directory the user cannot enter, before the mount
/// namespace could bind it back behind traversable parents. The client
/// sends its cwd, and a process can sit in a directory it can no longer
/// enter (or lie about it): the server gets it only if its user could
/// `chdir` there itself. The later `chdir` runs as the user too.
fn check_cwd(cwd: &Path, user: &reach::UserFs) -> Result<(), HelperError> {
    user.open_path(cwd, nix::fcntl::OFlag::O_DIRECTORY)?
        .map(drop)
        .map_err(|errno| HelperError::Chdir {
            path: cwd.to_owned(),
            uid: user.uid,
            errno,
        })
}

/// Rejects specs the helper must never act on and converts argv/env to
/// C strings up front, so nothing can fail between status and exec.
fn validate_spec(spec: &LaunchSpec) -> Result<(Vec<CString>, Vec<CString>), HelperError> {
    if spec.uid == 0 {
        return Err(HelperError::RootUid);
    }
    if spec.argv.is_empty() {
        return Err(HelperError::EmptyArgv);
    }
    let limit_cgroups = spec.limit_cgroups.iter().map(|p| ("limit_cgroups", p));
    for (field, path) in [("cwd", &spec.cwd), ("cgroup", &spec.cgroup)]
        .into_iter()
        .chain(limit_cgroups)
    {
        if !path.is_absolute() {
            return Err(HelperError::RelativePath {
                field,
                path: path.clone(),
            });
        }
    }
    let argv = spec
        .argv
        .iter()
        .map(|arg| CString::new(arg.as_str()).map_err(|_| HelperError::NulByte { field: "argv" }))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = BTreeSet::new();
    let envp = spec
        .env
        .iter()
        .map(|(name, value)| {
            if name.is_empty() || name.contains('=') {
                return Err(HelperError::BadEnvName { name: name.clone() });
            }
            // Programs disagree on which duplicate wins; allow none.
            if !seen.insert(name.as_str()) {
                return Err(HelperError::DuplicateEnv { name: name.clone() });
            }
            CString::new(format!("{name}={value}"))
                .map_err(|_| HelperError::NulByte { field: "env" })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((argv, envp))
}

/// Moves this process into a v1 cgroup that carries its limits.
fn join_limit_cgroup(cgroup: &Path) -> Result<(), HelperError> {
    OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))
        .and_then(|mut procs| procs.write_all(b"0"))
        .map_err(|e| HelperError::JoinCgroup {
            path: cgroup.to_owned(),
            errno: errno_of(&e),
        })
}

/// Moves this process into `cgroup` and checks the kernel agrees.
fn join_cgroup(cgroup: &Path) -> Result<(), HelperError> {
    let join_error = |errno| HelperError::JoinCgroup {
        path: cgroup.to_owned(),
        errno,
    };
    OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))
        .and_then(|mut procs| procs.write_all(b"0"))
        .map_err(|e| join_error(errno_of(&e)))?;

    let own = proc::read_cgroup(None).map_err(|e| join_error(errno_of(&e)))?;
    let unified = proc::unified_cgroup(&own).unwrap_or("").to_owned();
    // /proc shows the path relative to the cgroup2 mount (or namespace root),
    // so the spec path must end with it.
    if unified.len() > 1 && cgroup.ends_with(unified.trim_start_matches('/')) {
        Ok(())
    } else {
        Err(HelperError::CgroupMismatch {
            expected: cgroup.to_owned(),
            actual: unified,
        })
    }
}

/// Switches to the caller's identity for good and proves it, returning the
/// verified (sorted) supplementary groups.
fn drop_privileges(uid: u32, gid: u32, groups: &[u32]) -> Result<Vec<u32>, HelperError> {
    if uid == 0 {
        return Err(HelperError::RootUid);
    }
    let wanted: BTreeSet<u32> = groups.iter().copied().collect();
    let gids: Vec<Gid> = wanted.iter().map(|&g| Gid::from_raw(g)).collect();
    nix::unistd::setgroups(&gids).map_err(|errno| HelperError::SetGroups {
        groups: groups.to_vec(),
        errno,
    })?;
    let (g, u) = (Gid::from_raw(gid), Uid::from_raw(uid));
    nix::unistd::setresgid(g, g, g).map_err(|errno| HelperError::SetGid { gid, errno })?;
    nix::unistd::setresuid(u, u, u).map_err(|errno| HelperError::SetUid { uid, errno })?;

    let ids = nix::unistd::getresuid().map_err(|errno| HelperError::GetIds { errno })?;
    let actual = [ids.real, ids.effective, ids.saved].map(Uid::as_raw);
    verify("real/effective/saved uid", [uid; 3], actual)?;
    let ids = nix::unistd::getresgid().map_err(|errno| HelperError::GetIds { errno })?;
    let actual = [ids.real, ids.effective, ids.saved].map(Gid::as_raw);
    verify("real/effective/saved gid", [gid; 3], actual)?;
    let actual: BTreeSet<u32> = nix::unistd::getgroups()
        .map_err(|errno| HelperError::GetIds { errno })?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    verify("supplementary groups", &wanted, &actual)?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(HelperError::RegainedRoot);
    }
    nix::sys::prctl::set_no_new_privs().map_err(|errno| HelperError::NoNewPrivs { errno })?;
    match nix::sys::prctl::get_no_new_privs() {
        Ok(true) => Ok(wanted.into_iter().collect()),
        Ok(false) => Err(HelperError::NoNewPrivsNotSet),
        Err(errno) => Err(HelperError::NoNewPrivs { errno }),
    }
}

/// Refuses an identity that is not the one asked for.
fn verify<T: PartialEq + std::fmt::Debug>(
    what: &'static str,
    expected: T,
    actual: T,
) -> Result<(), HelperError> {
    if actual == expected {
        return Ok(());
    }
    Err(HelperError::IdentityMismatch {
        what,
        expected: format!("{expected:?}"),
        actual: format!("{actual:?}"),
    })
}

/// Resolves `program` to an absolute path the way `execvp` would, but
/// against the server's own PATH and without falling back to a default one.
/// Relative and empty PATH entries are skipped: they would depend on the
/// cwd in ways a policy author does not expect.
fn resolve_program(
    program: &str,
    path_var: Option<&str>,
    cwd: &Path,
    uid: u32,
) -> Result<PathBuf, HelperError> {
    if program.is_empty() {
        return Err(HelperError::EmptyProgram);
    }
    if program.contains('/') {
        let path = Path::new(program);
        return Ok(if path.is_absolute() {
            path.to_owned()
        } else {
            cwd.join(path)
        });
    }
    let Some(path_var) = path_var else {
        return Err(HelperError::NoPathVar {
            program: program.to_owned(),
        });
    };
    let mut not_executable = None;
    for dir in path_var.split(':').map(Path::new) {
        if !dir.is_absolute() {
            continue;
        }
        let candidate = dir.join(OsStr::new(program));
        let Ok(meta) = fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if is_executable(&candidate, &meta) {
            return Ok(candidate);
        }
        not_executable.get_or_insert(candidate);
    }
    Err(match not_executable {
        Some(path) => HelperError::NotExecutable { path, uid },
        None => HelperError::ProgramNotFound {
            program: program.to_owned(),
            path_var: path_var.to_owned(),
        },
    })
}

/// access(X_OK) for the current (already dropped) identity.
fn is_executable(path: &Path, meta: &fs::Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
        && nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::{
        super::tests::{sample_spec, NOBODY},
        *,
    };

    #[test]
    fn truncated_and_garbled_frames_are_read_errors() {
        let err = read_spec(&mut Cursor::new(vec![10, 0, 0, 0, b'{'])).unwrap_err();
        assert!(matches!(err, HelperError::ReadSpec { .. }), "{err}");
        assert_eq!(err.stage(), Stage::ReadSpec);
        let err = read_spec(&mut Cursor::new(vec![2, 0, 0, 0, b'{', b'}'])).unwrap_err();
        assert!(matches!(err, HelperError::DecodeSpec { .. }), "{err}");
    }

    #[test]
    fn validation_refuses_root_and_malformed_specs() {
        let mut spec = sample_spec();
        spec.uid = 0;
        assert!(matches!(validate_spec(&spec), Err(HelperError::RootUid)));

        let mut spec = sample_spec();
        spec.argv.clear();
        assert!(matches!(validate_spec(&spec), Err(HelperError::EmptyArgv)));

        let mut spec = sample_spec();
        spec.env.push(("A=B".into(), "c".into()));
        assert!(matches!(
            validate_spec(&spec),
            Err(HelperError::BadEnvName { .. })
        ));

        let mut spec = sample_spec();
        spec.env.push(("PATH".into(), "/evil".into()));
        assert!(matches!(
            validate_spec(&spec),
            Err(HelperError::DuplicateEnv { .. })
        ));

        let mut spec = sample_spec();
        spec.env.push(("A".into(), "nul\0".into()));
        assert!(matches!(
            validate_spec(&spec),
            Err(HelperError::NulByte { field: "env" })
        ));

        let mut spec = sample_spec();
        spec.cwd = "relative".into();
        assert!(matches!(
            validate_spec(&spec),
            Err(HelperError::RelativePath { field: "cwd", .. })
        ));

        let (argv, envp) = validate_spec(&sample_spec()).unwrap();
        assert_eq!(argv[2].to_str().unwrap(), "id -u");
        assert_eq!(envp[0].to_str().unwrap(), "PATH=/usr/bin:/bin");
    }

    #[test]
    fn program_lookup_uses_only_the_servers_absolute_path_entries() {
        let dir = std::env::temp_dir().join(format!("mcpguard-resolve-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let tool = dir.join("tool");
        fs::write(&tool, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.join("plain");
        fs::write(&plain, "data").unwrap();
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
        let path_var = format!("relative:/nonexistent::{}", dir.display());
        let cwd = Path::new("/srv");

        assert_eq!(
            resolve_program("tool", Some(&path_var), cwd, NOBODY).unwrap(),
            tool
        );
        assert!(matches!(
            resolve_program("plain", Some(&path_var), cwd, NOBODY),
            Err(HelperError::NotExecutable { path, .. }) if path == plain
        ));
        assert!(matches!(
            resolve_program("missing", Some(&path_var), cwd, NOBODY),
            Err(HelperError::ProgramNotFound { .. })
        ));
        assert!(matches!(
            resolve_program("tool", None, cwd, NOBODY),
            Err(HelperError::NoPathVar { .. })
        ));
        // A directory on PATH with the program's name is not a match.
        assert!(matches!(
            resolve_program("mcpguard-resolve-dir", Some("/tmp"), cwd, NOBODY),
            Err(HelperError::ProgramNotFound { .. })
        ));
        assert_eq!(
            resolve_program("bin/server", None, cwd, NOBODY).unwrap(),
            PathBuf::from("/srv/bin/server")
        );
        assert_eq!(
            resolve_program("/usr/bin/env", None, cwd, NOBODY).unwrap(),
            PathBuf::from("/usr/bin/env")
        );
        assert!(matches!(
            resolve_program("", None, cwd, NOBODY),
            Err(HelperError::EmptyProgram)
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
