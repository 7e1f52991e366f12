//! Test fixtures: a daemon per test, the unprivileged test user, policies
//! written to a directory that user can read, and audit-log helpers.

use std::{
    ffi::{OsStr, OsString},
    io::{BufRead, BufReader},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

use serde_json::Value;

/// The unprivileged user servers run as (created by `cargo xtask setup`).
pub struct TestUser {
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root (BPF, cgroups, Landlock as another user): run `cargo xtask test` as root"
    );
}

pub fn user() -> &'static TestUser {
    static USER: OnceLock<TestUser> = OnceLock::new();
    USER.get_or_init(|| {
        let name = std::env::var("MCPGUARD_TEST_USER").unwrap_or_else(|_| "mcpguard-test".into());
        let u = nix::unistd::User::from_name(&name)
            .expect("getpwnam")
            .unwrap_or_else(|| panic!("test user {name} does not exist: run `cargo xtask setup`"));
        TestUser {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
        }
    })
}

/// A second unprivileged user (created by `cargo xtask setup`), whose
/// private directories the test user must not reach through mcpguard.
pub fn other_user() -> &'static TestUser {
    static USER: OnceLock<TestUser> = OnceLock::new();
    USER.get_or_init(|| {
        let name =
            std::env::var("MCPGUARD_TEST_OTHER_USER").unwrap_or_else(|_| "mcpguard-other".into());
        let u = nix::unistd::User::from_name(&name)
            .expect("getpwnam")
            .unwrap_or_else(|| {
                panic!("second test user {name} does not exist: run `cargo xtask setup`")
            });
        TestUser {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
        }
    })
}

/// Where the MCP peers live (`cargo xtask setup` installs them).
pub fn peers() -> PathBuf {
    let dir = std::env::var("MCPGUARD_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| user().home.join(".local/share/mcpguard"));
    assert!(
        dir.join("venv/bin/python").exists(),
        "MCP peers missing under {}: run `cargo xtask setup`",
        dir.display()
    );
    dir
}

/// `rel` under [`peers`], which must exist.
pub fn installed_peer(rel: &str) -> PathBuf {
    let path = peers().join(rel);
    assert!(
        path.exists(),
        "{} missing: run `cargo xtask setup`",
        path.display()
    );
    path
}

/// A scratch directory the test user can read (the checkout may sit under
/// a directory it cannot traverse), holding a copy of the binary. It lives
/// as long as the test process (a static is never dropped), so each run
/// first removes the ones earlier runs left (their process is gone).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        remove_stale_scratch();
        let dir = PathBuf::from(format!("/tmp/mcpguard-it-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("mcpguard");
        std::fs::copy(env!("CARGO_BIN_EXE_mcpguard"), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    })
}

/// Removes what earlier test processes left: `/tmp/mcpguard-it-<pid>`
/// scratch directories and (empty) `mcpguard-it-<pid>[-tag]` cgroup trees
/// of daemons, where that process has exited.
fn remove_stale_scratch() {
    for entry in stale_entries(Path::new("/tmp")) {
        let _ = std::fs::remove_dir_all(entry);
    }
    if let Ok(mount) = mcpguard::launch::cgroup::cgroup2_mount() {
        // rmdir only: a cgroup that still holds anything stays.
        for entry in stale_entries(&mount) {
            let _ = std::fs::remove_dir(entry);
        }
    }
}

/// Entries of `dir` named `mcpguard-it-<pid>` or `mcpguard-it-<pid>-<tag>`
/// whose process is gone.
fn stale_entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix("mcpguard-it-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(|entry| entry.path())
        .collect()
}

pub fn bin() -> PathBuf {
    scratch().join("mcpguard")
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under the scratch dir, readable by the test user.
pub fn tempdir(tag: &str) -> PathBuf {
    let dir = scratch().join(format!("{tag}-{}", SEQ.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Write a policy file the test user can read. Where this kernel's
/// Landlock cannot scope signals and abstract sockets (ABI < 6) the policy
/// accepts running without them, so the tests of every other class run
/// there too; `kernels::` tests the refusal itself, with [`policy_as_is`].
pub fn policy(dir: &Path, name: &str, text: &str) -> PathBuf {
    policy_as_is(dir, name, &accept_missing_scopes(text))
}

/// `text` with `[kernel] accept_weaker` naming the scopes this kernel
/// lacks, unless it names some itself.
fn accept_missing_scopes(text: &str) -> String {
    let abi = mcpguard::launch::probe_landlock_abi().expect("this kernel has Landlock");
    if abi >= 6 || text.contains("accept_weaker") {
        return text.to_owned();
    }
    let key = "accept_weaker = [\"scope.signal\", \"scope.abstract_unix_socket\"]\n";
    match text.find("[kernel]\n") {
        Some(at) => {
            let at = at + "[kernel]\n".len();
            format!("{}{key}{}", &text[..at], &text[at..])
        }
        None => format!("{text}\n[kernel]\n{key}"),
    }
}

/// Write `text` as a policy file the test user can read, unchanged.
pub fn policy_as_is(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// Appends `[audit] files = "all"` to the policy file at `path`: for
/// tests that check records of allowed file activity (or the volume of a
/// whole run) outside any tool call, which the default level leaves out.
pub fn record_all_files(path: &Path) {
    let mut text = std::fs::read_to_string(path).unwrap();
    text.push_str("\n[audit]\nfiles = \"all\"\n");
    std::fs::write(path, text).unwrap();
}

/// Filesystem rules that let Debian's python3 and coreutils start (on top
/// of the runtime baseline: /etc, /proc, /dev/urandom), plus read access to
/// `extra_read` (scripts and data a test hands the server).
pub fn base_fs(extra_read: &[&Path]) -> String {
    let mut read: Vec<String> = ["/usr", "/lib", "/lib64"]
        .iter()
        .map(|p| format!("{p:?}"))
        .collect();
    read.extend(
        extra_read
            .iter()
            .map(|p| format!("{:?}", p.display().to_string())),
    );
    format!(
        "[filesystem]\nread = [{}]\nwrite = [\"/dev/null\"]\nexec = [\"/usr/bin\", \"/usr/lib\", \"/lib\", \"/lib64\", \"/bin\"]\n",
        read.join(", ")
    )
}

/// A policy `it-<tag>` that lets python3 and coreutils run, plus reads of
/// `extra_read`, and passes PATH and HOME.
pub fn simple_policy(tag: &str, extra_read: &[&Path]) -> PathBuf {
    let dir = tempdir(tag);
    policy(
        &dir,
        tag,
        &format!(
            "name = \"it-{tag}\"\n{}\n[env]\npass = [\"PATH\", \"HOME\"]\n",
            base_fs(extra_read)
        ),
    )
}

/// How to start a [`Daemon`]; the default is the one most tests use.
#[derive(Default)]
pub struct Opts<'a> {
    /// Where the audit log goes (default: the daemon's own directory).
    pub log: Option<&'a Path>,
    /// Extra daemon flags.
    pub args: &'a [&'a str],
    /// `MCPGUARD_LOG` (default: `info,mcpguard=debug`).
    pub log_filter: Option<&'a str>,
    /// Extra environment.
    pub env: &'a [(&'a str, &'a str)],
    /// A command the daemon runs under (its argv, then the daemon's).
    pub wrapper: &'a [&'a str],
    /// A cgroup tree of its own, whose (empty) root is removed when the
    /// daemon is dropped (default: the `mcpguard-it-<pid>` tree every
    /// other daemon of this run uses).
    pub cgroup: Option<&'a str>,
}

/// A running daemon with its own socket, audit log and cgroup subtree.
pub struct Daemon {
    pub socket: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    stderr: PathBuf,
    own_tree: Option<String>,
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::spawn(Opts::default())
    }

    /// Start with extra daemon flags.
    pub fn start_with(args: &[&str]) -> Daemon {
        Self::spawn(Opts {
            args,
            ..Opts::default()
        })
    }

    /// Start as `opts` say; returns once the daemon listens.
    pub fn spawn(opts: Opts<'_>) -> Daemon {
        require_root();
        let dir = tempdir("daemon");
        let socket = dir.join("mcpguard.sock");
        let log = opts
            .log
            .map_or_else(|| dir.join("audit/audit.jsonl"), Path::to_path_buf);
        let stderr = dir.join("daemon.stderr");
        let tree = opts.cgroup.map_or_else(
            || format!("mcpguard-it-{}", std::process::id()),
            str::to_owned,
        );
        let mut cmd = match opts.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        cmd.args(["daemon", "--socket"])
            .arg(&socket)
            .arg("--audit-log")
            .arg(&log)
            .arg("--cgroup-name")
            .arg(&tree)
            .args(opts.args)
            .env(
                "MCPGUARD_LOG",
                opts.log_filter.unwrap_or("info,mcpguard=debug"),
            )
            .envs(opts.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let child = cmd.spawn().expect("spawn daemon");
        let mut d = Daemon {
            socket,
            log,
            child: Some(child),
            stderr,
            own_tree: opts.cgroup.map(str::to_owned),
        };
        wait_listening(d.child.as_mut().unwrap(), &d.socket, &d.stderr);
        d
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// `mcpguard run --policy P -- argv` as the test user.
    pub fn run_cmd(&self, policy: &Path, argv: &[impl AsRef<OsStr>]) -> Command {
        let mut cmd = as_user(bin());
        cmd.args(self.run_args(policy, argv));
        cmd
    }

    /// [`Self::run_cmd`] with the client sitting in `cwd`, entered as root
    /// before it becomes the test user: a process in a directory its user
    /// cannot enter (as when the directory was locked after it went there).
    pub fn run_cmd_from(&self, policy: &Path, argv: &[impl AsRef<OsStr>], cwd: &Path) -> Command {
        let u = user();
        let (uid, gid) = (u.uid, u.gid);
        let mut cmd = user_env(bin());
        cmd.args(self.run_args(policy, argv)).current_dir(cwd);
        // SAFETY: runs between fork and exec; only async-signal-safe
        // syscalls, no allocation. std enters `cwd` before this runs.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// `run --socket S --policy P -- argv`.
    fn run_args(&self, policy: &Path, argv: &[impl AsRef<OsStr>]) -> Vec<OsString> {
        let head = [
            OsStr::new("run"),
            OsStr::new("--socket"),
            self.socket.as_os_str(),
            OsStr::new("--policy"),
            policy.as_os_str(),
            OsStr::new("--"),
        ];
        (head.into_iter().map(OsStr::to_owned))
            .chain(argv.iter().map(|a| a.as_ref().to_owned()))
            .collect()
    }

    /// Run to completion with empty stdin.
    pub fn run(&self, policy: &Path, argv: &[impl AsRef<OsStr>]) -> Output {
        self.run_cmd(policy, argv)
            .stdin(Stdio::null())
            .output()
            .expect("spawn mcpguard run")
    }

    /// `mcpguard <args>` as root with this daemon's socket in
    /// `MCPGUARD_SOCKET`, PATH as its only other variable, from the scratch
    /// directory with empty stdin; set `uid`/`gid` for another caller.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("MCPGUARD_SOCKET", &self.socket)
            .current_dir(scratch())
            .stdin(Stdio::null());
        cmd
    }

    /// [`Self::cli`] as `uid`/`gid`, run to completion.
    pub fn cli_as(&self, uid: u32, gid: u32, args: &[&str]) -> Output {
        self.cli(args)
            .uid(uid)
            .gid(gid)
            .output()
            .expect("run mcpguard")
    }

    /// Every audit record so far.
    pub fn records(&self) -> Vec<Value> {
        let Ok(f) = std::fs::File::open(&self.log) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .map(|l| {
                serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad audit line {l:?}: {e}"))
            })
            .collect()
    }

    /// The first record matching `pred` within `within`.
    fn poll_record(&self, within: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        poll(within, || self.records().into_iter().find(|r| pred(r)))
    }

    /// Poll the audit log (up to 5 s) for a record matching `pred`.
    pub fn find_record(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.poll_record(Duration::from_secs(5), pred)
    }

    /// Wait (up to 10 s) for a record matching `pred`; panics with the log.
    pub fn wait_record(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.poll_record(Duration::from_secs(10), pred)
            .unwrap_or_else(|| {
                panic!(
                    "no audit record: {what}\n--- audit log ---\n{}\n--- daemon stderr ---\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default(),
                    self.stderr()
                )
            })
    }

    /// SIGTERM and wait; returns the daemon's exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        stop_daemon(
            self.child.take().expect("daemon already stopped"),
            &self.stderr,
        )
    }

    /// [`Self::stop`], asserting a clean exit.
    pub fn stop_cleanly(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "daemon exited with {status}:\n{}",
            self.stderr()
        );
    }
}

/// Calls `f` every 50 ms until it gives a value or `within` has passed.
pub fn poll<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `program` with the clean environment a login gives the test user:
/// PATH (the system directories), HOME and LANG; identity and cwd unset.
fn user_env(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &user().home)
        .env("LANG", "C.UTF-8");
    cmd
}

/// `program` as the test user, with a login's clean environment (PATH,
/// HOME, LANG), from the scratch directory.
pub fn as_user(program: impl AsRef<OsStr>) -> Command {
    let u = user();
    let mut cmd = user_env(program);
    cmd.current_dir(scratch()).uid(u.uid).gid(u.gid);
    cmd
}

/// Wait (up to 30 s) until a daemon started with `stderr` redirected to a
/// file listens on `socket`; panics with its stderr if it exits first.
pub fn wait_listening(child: &mut Child, socket: &Path, stderr: &Path) {
    let log = || std::fs::read_to_string(stderr).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("daemon exited with {status} before listening:\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not listen within 30 s:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM a daemon and wait (up to 20 s) for its exit status.
pub fn stop_daemon(mut child: Child, stderr: &Path) -> std::process::ExitStatus {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    wait_exit(
        &mut child,
        Duration::from_secs(20),
        "daemon did not stop within 20 s of SIGTERM",
        stderr,
    )
}

/// Wait (up to `within`) for a daemon that must exit; when it does not,
/// kills it and panics with `what` and its stderr.
pub fn wait_exit(
    child: &mut Child,
    within: Duration,
    what: &str,
    stderr: &Path,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{what}:\n{}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            if std::thread::panicking() {
                self.stop();
            } else {
                self.stop_cleanly();
            }
        }
        // A tree of its own: its (empty) root under the cgroup mount.
        if let Some(tree) = &self.own_tree {
            if let Ok(mount) = mcpguard::launch::cgroup::cgroup2_mount() {
                let _ = std::fs::remove_dir(mount.join(tree));
            }
        }
    }
}

/// Stdout of a finished run as text, with context on failure.
pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The lines a child writes to its piped stdout, read on a thread (a
/// `--follow` reader's, for `recv_timeout`).
pub fn stdout_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

pub fn is_kind(r: &Value, kind: &str) -> bool {
    r["kind"] == kind
}

/// Whether a pid is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .map(|state| state != "Z")
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// `mcpguard status --json` from daemon `d`, parsed; panics with its
/// output if it fails.
pub fn daemon_status(d: &Daemon) -> serde_json::Value {
    let out = Command::new(bin())
        .args(["status", "--json", "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "status: {}", describe(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status JSON: {e}\n{}", describe(&out)))
}
