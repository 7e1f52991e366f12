//! Test fixtures: a daemon per test, the unprivileged test user, policies
//! written to a directory that user can read, and audit-log helpers.

use std::{
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

/// A scratch directory the test user can read (the checkout may sit under
/// a directory it cannot traverse), holding a copy of the binary.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
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

/// Write a policy file the test user can read.
pub fn policy(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
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

/// A running daemon with its own socket, audit log and cgroup subtree.
pub struct Daemon {
    pub socket: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    stderr: PathBuf,
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::start_with(&[])
    }

    /// Start with extra daemon flags.
    pub fn start_with(extra: &[&str]) -> Daemon {
        Self::start_logging_to(None, extra)
    }

    /// Start with the audit log at `log` (default: in the daemon's own
    /// temporary directory) and extra daemon flags.
    pub fn start_logging_to(log: Option<&Path>, extra: &[&str]) -> Daemon {
        require_root();
        let dir = tempdir("daemon");
        let socket = dir.join("mcpguard.sock");
        let log = log.map_or_else(|| dir.join("audit/audit.jsonl"), Path::to_path_buf);
        let stderr = dir.join("daemon.stderr");
        let child = Command::new(bin())
            .args(["daemon", "--socket"])
            .arg(&socket)
            .arg("--audit-log")
            .arg(&log)
            .arg("--cgroup-name")
            .arg(format!("mcpguard-it-{}", std::process::id()))
            .args(extra)
            .env("MCPGUARD_LOG", "info,mcpguard=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn daemon");
        let mut d = Daemon {
            socket,
            log,
            child: Some(child),
            stderr,
        };
        wait_listening(d.child.as_mut().unwrap(), &d.socket, &d.stderr);
        d
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// `mcpguard run --policy P -- argv` as the test user.
    pub fn run_cmd(&self, policy: &Path, argv: &[&str]) -> Command {
        let u = user();
        let mut cmd = self.client(policy, argv);
        cmd.current_dir(scratch()).uid(u.uid).gid(u.gid);
        cmd
    }

    /// [`Self::run_cmd`] with the client sitting in `cwd`, entered as root
    /// before it becomes the test user: a process in a directory its user
    /// cannot enter (as when the directory was locked after it went there).
    pub fn run_cmd_from(&self, policy: &Path, argv: &[&str], cwd: &Path) -> Command {
        let u = user();
        let (uid, gid) = (u.uid, u.gid);
        let mut cmd = self.client(policy, argv);
        cmd.current_dir(cwd);
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

    /// The client command line and environment, identity and cwd unset.
    fn client(&self, policy: &Path, argv: &[&str]) -> Command {
        let u = user();
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--policy")
            .arg(policy)
            .arg("--")
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &u.home)
            .env("LANG", "C.UTF-8");
        cmd
    }

    /// Run to completion with empty stdin.
    pub fn run(&self, policy: &Path, argv: &[&str]) -> Output {
        self.run_cmd(policy, argv)
            .stdin(Stdio::null())
            .output()
            .expect("spawn mcpguard run")
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

    /// Wait (up to 10 s) for a record matching `pred`; panics with the log.
    pub fn wait_record(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.records().into_iter().find(|r| pred(r)) {
                return r;
            }
            if Instant::now() > deadline {
                panic!(
                    "no audit record: {what}\n--- audit log ---\n{}\n--- daemon stderr ---\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait; returns the daemon's exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        stop_daemon(
            self.child.take().expect("daemon already stopped"),
            &self.stderr,
        )
    }
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
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "daemon did not stop within 20 s of SIGTERM:\n{}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let status = self.stop();
            if !std::thread::panicking() {
                assert!(
                    status.success(),
                    "daemon exited with {status}:\n{}",
                    self.stderr()
                );
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
