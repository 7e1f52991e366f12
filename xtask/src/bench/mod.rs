//! `cargo xtask bench`: what each guard layer costs, measured against the
//! same work run bare, in the same run.
//!
//! Sections alternate, in blocks, between bare runs with no daemon loaded
//! and runs with a fresh daemon (own socket, audit log, cgroup subtree,
//! state and secrets directories under one scratch directory in /tmp): the
//! same work under guard and, where it tells something, unguarded with the
//! daemon loaded (its syscall tracepoints, attached while a server runs,
//! tax every task on the machine: [`mod@machine`]). Servers
//! run as the unprivileged test user, as in the integration tests. Other
//! mcpguard daemons seen during the run (another test suite, say) are named
//! in the report, since they tax the bare runs too.
//!
//! Sections: [`launch`] (start-up), [`syscalls`] (connect/open/exec loops),
//! [`mod@machine`] (what unguarded processes pay while the daemon runs, idle
//! and with servers),
//! [`audit`] (the audit pipeline's zero-loss rate), [`memory`] (daemon RSS),
//! [`tap`] (MCP round trips), [`dns`] (lookups through the daemon's
//! resolver, connect with a large allow map), [`wrapped`] (npx and uvx
//! client config entries as `mcpguard wrap` leaves them: `initialize` time
//! against the entry as it was and the pinned install run bare, audit log
//! bytes per start and per call), [`landlock`] (the same loops guarded
//! against the same Landlock ruleset alone, issue 15's goal 2), [`volume`]
//! (audit records and bytes per start and per tool call of the shipped
//! servers at the default audit level, issue 15's goal 3; [`level`] puts
//! that level into policies where the build knows it). [`report`] writes
//! `bench/report.md` and `bench/report.json` under the cargo target
//! directory.
//!
//! `--quick` runs each item briefly, to check the harness, not the numbers;
//! `--only` runs some sections (the report then holds only those).

mod audit;
mod dns;
pub mod landlock;
mod launch;
mod level;
mod machine;
mod memory;
mod report;
mod session;
mod syscalls;
mod tap;
mod volume;
mod wrapped;

use std::{
    collections::BTreeSet,
    fs,
    io::Read,
    os::{
        fd::{AsFd, AsRawFd},
        unix::{fs::PermissionsExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{setup::TEST_USER, sh};

/// Median, minimum and maximum of repeated runs.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Stats {
            median,
            min: s[0],
            max: s[n - 1],
            runs: n,
        })
    }

    pub fn json(&self) -> Value {
        json!({ "median": self.median, "min": self.min, "max": self.max, "runs": self.runs })
    }
}

/// The `q` quantile (0..=1) of `samples` (nearest rank).
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// One line of the summary: a figure bare and measured (guarded, or another
/// sandbox), each the median of repeated runs with min/max.
pub struct Row {
    pub what: String,
    pub unit: &'static str,
    pub bare: Option<Stats>,
    pub value: Option<Stats>,
}

impl Row {
    pub fn new(
        what: impl Into<String>,
        unit: &'static str,
        bare: Option<Stats>,
        value: Option<Stats>,
    ) -> Row {
        Row {
            what: what.into(),
            unit,
            bare,
            value,
        }
    }

    pub fn ratio(&self) -> Option<f64> {
        Some(self.value?.median / self.bare?.median)
    }

    pub fn added(&self) -> Option<f64> {
        Some(self.value?.median - self.bare?.median)
    }

    pub fn json(&self) -> Value {
        json!({
            "what": self.what,
            "unit": self.unit,
            "bare": self.bare.map(|s| s.json()),
            "value": self.value.map(|s| s.json()),
            "ratio": self.ratio(),
            "added": self.added(),
        })
    }
}

/// A target from the issue and whether this run met it.
pub struct Target {
    pub what: String,
    pub measured: String,
    /// `None`: could not be measured here.
    pub met: Option<bool>,
    /// Why, in a sentence, where it was missed or not measured.
    pub why: String,
}

/// What one area of the bench found.
pub struct Section {
    pub key: &'static str,
    pub title: &'static str,
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
    pub details: Value,
}

pub use crate::setup::User;

/// What every section needs: the scratch directory and the binaries in it.
pub struct Ctx {
    pub quick: bool,
    /// `/tmp/mcpguard-bench-<pid>`, readable by the test user.
    pub dir: PathBuf,
    pub mcpguard: PathBuf,
    pub bench_loop: PathBuf,
    pub user: User,
    /// `~mcpguard-test/.local/share/mcpguard`: the venv and npm prefix.
    pub peers: PathBuf,
    pub cgroup_name: String,
    pub profile: &'static str,
}

impl Ctx {
    /// A fresh directory under the scratch directory, readable by the user.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dir.join(name);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        Ok(dir)
    }

    /// `program` as the test user, with a minimal environment, run from the
    /// scratch directory, all stdio closed unless the caller says otherwise.
    pub fn user_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.user.home)
            .env("LANG", "C.UTF-8")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .uid(self.user.uid)
            .gid(self.user.gid);
        cmd
    }

    /// `mcpguard run --socket S --policy P -- argv` as the test user.
    pub fn guarded(&self, daemon: &Daemon, policy: &Path, argv: &[&str]) -> Command {
        let mut cmd = self.user_cmd(&self.mcpguard);
        cmd.arg("run")
            .arg("--socket")
            .arg(&daemon.socket)
            .arg("--policy")
            .arg(policy)
            .arg("--")
            .args(argv);
        cmd
    }

    /// Write a policy the test user can read: Debian's binaries and
    /// libraries, `extra` readable and executable, `allow` egress rules.
    pub fn policy(
        &self,
        name: &str,
        extra: &[&Path],
        allow: &[String],
        tail: &str,
    ) -> Result<PathBuf> {
        let quote = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let extra: Vec<String> = extra.iter().map(|p| p.display().to_string()).collect();
        let mut read: Vec<String> = BASE_READ.iter().map(|s| s.to_string()).collect();
        read.extend(extra.iter().cloned());
        let mut exec: Vec<String> = BASE_EXEC.iter().map(|s| s.to_string()).collect();
        exec.extend(extra);
        let text = format!(
            "# Written by `cargo xtask bench`.\nname = {name:?}\n\n[filesystem]\nread = [{}]\nwrite = [\"/dev/null\"]\nexec = [{}]\n\n[network]\nallow = [{}]\n\n[env]\npass = [\"PATH\", \"HOME\", \"LANG\"]\n{tail}",
            quote(&read),
            quote(&exec),
            quote(allow),
        );
        let path = self.dir.join(format!("{name}.toml"));
        write_file(&path, &text, 0o644)?;
        Ok(path)
    }

    /// Full-run or quick-run value.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// What a guarded `/bin/true` or Python needs to start beyond the runtime
/// baseline every policy gets (/etc, /proc, /dev/urandom): the policy of
/// the integration tests' `base_fs`.
const BASE_READ: &[&str] = &["/usr", "/lib", "/lib64", "/bin", "/dev/null"];
const BASE_EXEC: &[&str] = &["/usr/bin", "/usr/lib", "/lib", "/lib64", "/bin"];

pub fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A daemon for one section. Dropping it stops it (SIGTERM, then SIGKILL
/// after 20 s) and removes its cgroup subtree, on every way out.
pub struct Daemon {
    child: Option<Child>,
    pub pid: u32,
    pub socket: PathBuf,
    pub log: PathBuf,
    stderr: PathBuf,
    /// The daemon's cgroup subtree (the daemon leaves the directory).
    tree: PathBuf,
}

impl Daemon {
    pub fn start(ctx: &Ctx, section: &str) -> Result<Daemon> {
        Daemon::start_with(ctx, section, &[])
    }

    /// [`Daemon::start`] with `extra` arguments for `mcpguard daemon`.
    pub fn start_with(ctx: &Ctx, section: &str, extra: &[&str]) -> Result<Daemon> {
        let dir = ctx.subdir(&format!("daemon-{section}"))?;
        let secrets = dir.join("secrets");
        fs::create_dir_all(&secrets)?;
        fs::set_permissions(&secrets, fs::Permissions::from_mode(0o700))?;
        let socket = dir.join("mcpguard.sock");
        let log = dir.join("audit/audit.jsonl");
        let stderr = dir.join("daemon.stderr");
        let child = Command::new(&ctx.mcpguard)
            .arg("daemon")
            .arg("--socket")
            .arg(&socket)
            .arg("--audit-log")
            .arg(&log)
            .arg("--cgroup-name")
            .arg(&ctx.cgroup_name)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--secrets-dir")
            .arg(&secrets)
            .args(extra)
            .env("MCPGUARD_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr)?)
            .spawn()
            .context("starting the daemon")?;
        let mount = cgroup2_mount()?;
        let mut d = Daemon {
            pid: child.id(),
            child: Some(child),
            socket,
            log,
            stderr,
            tree: mount.join(&ctx.cgroup_name),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.socket.exists() {
            if let Some(status) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "the daemon exited with {status} before listening:\n{}",
                    d.stderr()
                );
            }
            if Instant::now() > deadline {
                bail!("the daemon did not listen within 60 s:\n{}", d.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Resident set size in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS in /proc/<daemon>/status")
    }

    /// CPU time (user + system, all threads) in seconds.
    pub fn cpu_secs(&self) -> Result<f64> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("malformed /proc/<daemon>/stat")?
            .1
            .split_whitespace()
            .collect();
        // After the comm: state is field 3, utime 14 and stime 15.
        let ticks: u64 = fields
            .get(11)
            .zip(fields.get(12))
            .and_then(|(u, s)| Some(u.parse::<u64>().ok()? + s.parse::<u64>().ok()?))
            .context("no utime/stime in /proc/<daemon>/stat")?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
        Ok(ticks as f64 / hz as f64)
    }

    /// SIGTERM and wait; an error if it did not stop cleanly.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = terminate(&mut child, Duration::from_secs(20));
        self.remove_tree();
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => bail!("the daemon exited with {s}:\n{}", self.stderr()),
            None => bail!(
                "the daemon did not stop within 20 s of SIGTERM (killed):\n{}",
                self.stderr()
            ),
        }
    }

    /// The subtree's leaves, then the subtree itself. The daemon removes each
    /// server's cgroup when the server is gone; this only catches what is
    /// left (the root, which the daemon keeps).
    fn remove_tree(&self) {
        if let Ok(entries) = fs::read_dir(&self.tree) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = fs::remove_dir(e.path());
                }
            }
        }
        let _ = fs::remove_dir(&self.tree);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(20));
            self.remove_tree();
        }
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL. The exit status if it exited
/// within the grace period.
fn terminate(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    // SAFETY: kill(2) on a child we spawned and have not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Children (clients, servers) that must not outlive the bench: dropping
/// terminates and reaps every one still running.
#[derive(Default)]
pub struct Children(pub Vec<Child>);

impl Children {
    /// Terminate all (SIGTERM first, in parallel), reap them, empty the list.
    pub fn stop_all(&mut self) {
        for c in &self.0 {
            // SAFETY: kill(2) on children we spawned and have not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        for mut c in self.0.drain(..) {
            terminate(&mut c, Duration::from_secs(10));
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Wait until `fd` has data (or end of file) to read, up to `timeout`: a
/// server that stops answering fails the bench instead of hanging it.
pub fn readable(fd: impl AsFd, timeout: Duration) -> Result<()> {
    let mut pfd = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        match n {
            1.. => return Ok(()),
            0 => bail!("no answer within {timeout:?}"),
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return Err(std::io::Error::last_os_error().into()),
        }
    }
}

/// How long a server may take to answer before the bench gives up.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Run to completion with closed stdio; the wall time in milliseconds.
pub fn time_ms(cmd: &mut Command) -> Result<f64> {
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if !status.success() {
        bail!(
            "{:?} {:?} failed: {status}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>()
        );
    }
    Ok(ms)
}

/// Run, capture stdout; error with stderr if it fails.
pub fn stdout_of(cmd: &mut Command) -> Result<String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = cmd
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} {:?} failed: {}\n{}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of `key=` in a `bench_loop` result line.
pub fn field(out: &str, key: &str) -> Result<f64> {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {key}= in {out:?}"))
}

/// The cargo target directory in use (honours `CARGO_TARGET_DIR` and
/// cargo configuration), from `cargo metadata`.
/// Where the cgroup v2 hierarchy is mounted (`/proc/self/mountinfo`).
pub fn cgroup2_mount() -> Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .context("no cgroup2 mount in /proc/self/mountinfo")
}

fn target_dir() -> Result<PathBuf> {
    let out = sh::output(&mut sh::cargo(&[
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
    ]))?;
    let meta: Value = serde_json::from_str(&out).context("parsing `cargo metadata`")?;
    Ok(PathBuf::from(
        meta["target_directory"]
            .as_str()
            .context("`cargo metadata` names no target_directory")?,
    ))
}

/// Removes the scratch directory (audit logs can be large) at the end.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("MCPGUARD_BENCH_KEEP").is_some() {
            eprintln!("bench: scratch directory kept: {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// The machine the numbers come from.
fn machine() -> Value {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| {
            l.strip_prefix("PRETTY_NAME=")
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "memory_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0,
        "os": os,
    })
}

/// Read the last `n` bytes of a file.
pub fn tail(path: &Path, n: u64) -> Result<String> {
    use std::io::{Seek, SeekFrom};
    let mut f = fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(n)))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Pids of `mcpguard daemon` processes that are not this bench's (whose
/// parent is not this process): their tracepoints tax every task on the
/// machine, bare runs included.
fn foreign_daemons() -> Vec<u32> {
    let me = std::process::id();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let mut argv = cmdline.split(|b| *b == 0);
            let is_daemon = argv.next().is_some_and(|a| a.ends_with(b"mcpguard"))
                && argv.next() == Some(b"daemon".as_slice());
            let parent = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                });
            is_daemon && parent != Some(me)
        })
        .collect()
}

/// Watches for other daemons once a second until dropped.
struct Watch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeSet<u32>>>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    fn start() -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let (s, w) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let found = foreign_daemons();
                w.lock().unwrap_or_else(|p| p.into_inner()).extend(found);
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Watch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<u32> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter().copied().collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `only` names sections to run (empty: all).
pub fn run(quick: bool, only: &[String]) -> Result<()> {
    anyhow::ensure!(
        crate::nix_is_root(),
        "the bench starts the daemon (eBPF, cgroups) and runs servers as {TEST_USER}: run it as root"
    );
    let started = Instant::now();
    // The loop program is one binary for bare and guarded runs.
    sh::run(&mut sh::cargo(&[
        "build",
        "--package",
        "xtask",
        "--bin",
        "bench_loop",
    ]))?;
    let target = target_dir()?;
    let profile = if quick { "debug" } else { "release" };
    let user = crate::setup::lookup_test_user()?;
    let peers = user.home.join(".local/share/mcpguard");
    let dir = PathBuf::from(format!("/tmp/mcpguard-bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let _scratch = Scratch(dir.clone());
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    let copy = |from: PathBuf, name: &str| -> Result<PathBuf> {
        let to = dir.join(name);
        fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755))?;
        Ok(to)
    };
    let ctx = Ctx {
        quick,
        mcpguard: copy(target.join(profile).join("mcpguard"), "mcpguard")?,
        bench_loop: copy(target.join("debug/bench_loop"), "bench_loop")?,
        dir: dir.clone(),
        user,
        peers,
        cgroup_name: format!("mcpguard-bench-{}", std::process::id()),
        profile,
    };

    type Bench = fn(&Ctx) -> Result<Section>;
    let benches: [(&str, Bench); 10] = [
        ("launch", launch::run),
        ("syscalls", syscalls::run),
        ("machine", machine::run),
        ("audit", audit::run),
        ("memory", memory::run),
        ("tap", tap::run),
        ("dns", dns::run),
        ("wrapped", wrapped::run),
        ("landlock", landlock::run),
        ("volume", volume::run),
    ];
    if let Some(unknown) = only.iter().find(|o| !benches.iter().any(|(n, _)| n == o)) {
        let names: Vec<&str> = benches.iter().map(|(n, _)| *n).collect();
        bail!(
            "no bench section `{unknown}`; sections: {}",
            names.join(", ")
        );
    }
    let loadavg = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let watch = Watch::start();
    let mut sections = Vec::new();
    for (name, bench) in benches {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let t = Instant::now();
        eprintln!("bench: {name} ...");
        let section = bench(&ctx).with_context(|| format!("bench {name}"))?;
        eprintln!("bench: {name} done in {:.1} s", t.elapsed().as_secs_f64());
        sections.push(section);
    }
    let mut machine = machine();
    machine["loadavg_at_start"] = json!(loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" "));
    machine["other_mcpguard_daemons"] = json!(watch.finish());
    let out = target.join("bench");
    let md = report::write(&out, &machine, &ctx, &sections, started.elapsed(), only)?;
    println!("{md}");
    eprintln!(
        "bench: wrote {} and {} in {:.0} s",
        out.join("report.md").display(),
        out.join("report.json").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
