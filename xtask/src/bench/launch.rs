//! Launch cost: wall time of `/bin/true` bare, under `mcpguard run`, under
//! `bwrap` with the same read-only view and no network, and under
//! Anthropic's sandbox runtime (`srt`) where it runs here; then the time a
//! real MCP server (PyPI `mcp-server-time`, policies/time.toml) takes to
//! answer `initialize`, bare and guarded.
//!
//! Every launch is spawned by this (root) process as the test user, so each
//! variant pays the same fork/setuid/exec; the wrappers' own cost is what
//! differs.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::{
    readable, session::time_to_initialize, time_ms, write_file, Children, Ctx, Daemon, Row,
    Section, Stats, Target, ANSWER_TIMEOUT,
};

/// The policy's read-only paths, which bwrap binds read-only.
const BWRAP_RO: &[&str] = &["/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache"];

/// bwrap with a read-only bind of each policy path (a symlink such as
/// merged-/usr's /bin is recreated as the same symlink), no network.
fn bwrap_args() -> Vec<String> {
    let mut args = Vec::new();
    for p in BWRAP_RO {
        match std::fs::read_link(p) {
            Ok(target) => args.extend([
                "--symlink".into(),
                target.display().to_string(),
                p.to_string(),
            ]),
            Err(_) if Path::new(p).exists() => {
                args.extend(["--ro-bind".into(), p.to_string(), p.to_string()])
            }
            Err(_) => {}
        }
    }
    args.extend([
        "--unshare-net".into(),
        "--die-with-parent".into(),
        "--".into(),
    ]);
    args
}

fn which(name: &str) -> Option<PathBuf> {
    ["/usr/local/bin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// `srt` ready to run, or why not.
struct Srt {
    bin: PathBuf,
    settings: PathBuf,
    cwd: PathBuf,
    version: String,
}

fn srt(ctx: &Ctx) -> Result<Srt, String> {
    let pkg = ctx
        .peers
        .join("npm/node_modules/@anthropic-ai/sandbox-runtime");
    let bin = ctx.peers.join("npm/node_modules/.bin/srt");
    if !bin.exists() {
        return Err(format!(
            "srt is not installed ({} missing; `cargo xtask setup` installs it)",
            bin.display()
        ));
    }
    let version = std::fs::read_to_string(pkg.join("package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(String::from))
        .unwrap_or_else(|| "unknown".into());
    // srt's Linux mode wraps bubblewrap and bridges its proxies with socat;
    // it scans for files to protect with ripgrep.
    let missing: Vec<&str> = ["bwrap", "socat", "rg", "node"]
        .into_iter()
        .filter(|n| which(n).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!("srt needs {} on PATH", missing.join(", ")));
    }
    // No network (no allowed domains), no writes; reads stay srt's
    // default (everything), the closest its model has to a read-only view.
    let settings = ctx.dir.join("srt-settings.json");
    write_file(
        &settings,
        r#"{"network":{"allowedDomains":[],"deniedDomains":[]},"filesystem":{"denyRead":[],"allowWrite":[],"denyWrite":[]}}"#,
        0o644,
    )
    .map_err(|e| e.to_string())?;
    // srt scans the working directory for files to protect: give it an
    // empty one so the scan does not dominate.
    let cwd = ctx.subdir("srt-cwd").map_err(|e| e.to_string())?;
    let s = Srt {
        bin,
        settings,
        cwd,
        version,
    };
    // It must really run the command: an exit status must come through.
    let out = s
        .cmd(ctx, &["/bin/sh", "-c", "exit 3"])
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot start srt: {e}"))?;
    if out.status.code() != Some(3) {
        let err = String::from_utf8_lossy(&out.stderr);
        let err: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(format!(
            "srt {} does not run a command here (status {}): {}",
            s.version,
            out.status,
            err.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ));
    }
    Ok(s)
}

impl Srt {
    fn cmd(&self, ctx: &Ctx, argv: &[&str]) -> Command {
        let mut cmd = ctx.user_cmd(&self.bin);
        cmd.arg("--settings")
            .arg(&self.settings)
            .arg("--")
            .args(argv)
            .current_dir(&self.cwd);
        cmd
    }
}

/// Milliseconds from spawn to the first byte on stdout, to the exit
/// status, and to end of file on stdout (every holder of the pipe closed).
fn time_split(cmd: &mut Command) -> Result<[f64; 3]> {
    cmd.stdout(Stdio::piped());
    let start = Instant::now();
    let ms = || start.elapsed().as_secs_f64() * 1e3;
    let mut kids = Children::default();
    kids.0.push(cmd.spawn().context("starting /bin/echo")?);
    let mut out = kids.0[0].stdout.take().context("stdout")?;
    let mut buf = [0u8; 64];
    readable(&out, ANSWER_TIMEOUT)?;
    if out.read(&mut buf)? == 0 {
        bail!("no output from {:?}", cmd.get_program());
    }
    let first = ms();
    let status = kids.0[0].wait()?;
    let exited = ms();
    kids.0.clear();
    loop {
        readable(&out, ANSWER_TIMEOUT).context("waiting for end of file on stdout")?;
        if out.read(&mut buf)? == 0 {
            break;
        }
    }
    let eof = ms();
    if !status.success() {
        bail!("{:?} failed: {status}", cmd.get_program());
    }
    Ok([first, exited, eof])
}

/// How long a task migration into a fresh cgroup (a `cgroup.procs` write)
/// takes back to back and after the cgroup subsystem has been idle, in ms.
/// The daemon moves every launch helper this way.
fn cgroup_migration(ctx: &Ctx, gap: Duration, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let root = super::cgroup2_mount()?.join(format!("{}-probe", ctx.cgroup_name));
    std::fs::create_dir_all(&root)?;
    let mut dirs = Vec::new();
    let mut one = |i: usize| -> Result<f64> {
        let dir = root.join(format!("m{i}"));
        std::fs::create_dir(&dir)?;
        dirs.push(dir.clone());
        let mut kids = Children::default();
        kids.0.push(Command::new("/bin/sleep").arg("10").spawn()?);
        let start = Instant::now();
        std::fs::write(dir.join("cgroup.procs"), kids.0[0].id().to_string())?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    let result = (|| {
        let (mut b2b, mut idle) = (Vec::new(), Vec::new());
        one(0)?;
        for i in 0..n {
            b2b.push(one(1 + i)?);
        }
        for i in 0..n {
            std::thread::sleep(gap);
            idle.push(one(1 + n + i)?);
        }
        Ok((b2b, idle))
    })();
    // The sleepers are dead (Children dropped); the cgroups may take a
    // moment to empty.
    let deadline = Instant::now() + Duration::from_secs(5);
    for dir in dirs.iter().chain([&root]) {
        while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    result
}

/// Milliseconds a shell takes to start and exit after `gap` idle, plain and
/// in a private mount namespace with empty tmpfs mounts over the runtime
/// directories (what the launch helper sets up for every server), as root
/// through unshare(1). `None` without unshare.
fn mount_ns_cost(gap: Duration, n: usize) -> Result<Option<(Vec<f64>, Vec<f64>)>> {
    let Some(unshare) = which("unshare") else {
        return Ok(None);
    };
    let script =
        "for d in /run /tmp /var/tmp /dev/shm; do mount -t tmpfs none \"$d\"; done; exec /bin/true";
    let quiet = |cmd: &mut Command| {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    };
    let (mut plain, mut ns) = (Vec::new(), Vec::new());
    for _ in 0..n {
        std::thread::sleep(gap);
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "exec /bin/true"]);
        quiet(&mut cmd);
        plain.push(time_ms(&mut cmd)?);
        std::thread::sleep(gap);
        let mut cmd = Command::new(&unshare);
        cmd.args(["--mount", "--propagation", "slave", "/bin/sh", "-c", script]);
        quiet(&mut cmd);
        ns.push(time_ms(&mut cmd)?);
    }
    Ok(Some((plain, ns)))
}

/// The pause before each "after idle" launch: an MCP client starts a server
/// now and then, not in a tight loop, and some kernel paths (cgroup
/// migration) are much slower when nothing ran just before.
pub const IDLE_GAP: Duration = Duration::from_millis(400);

/// Cost of one call trapped by the persistence fence: a guarded shell
/// truncating a file (`: > f`, an `O_CREAT` open) in a loop, under a
/// policy granting write on a directory, against the same policy allowing
/// every persistence family (no fence), back to back. A note.
fn persist_fence_cost(ctx: &Ctx) -> Result<String> {
    let dir = ctx.subdir("persist-fence")?;
    let owner = format!("{}:{}", ctx.user.uid, ctx.user.gid);
    time_ms(Command::new("chown").arg(owner).arg(&dir))?;
    let policy = |name: &str, allow: &str| -> Result<PathBuf> {
        let path = ctx.policy(name, &[], &[], "")?;
        let text = std::fs::read_to_string(&path)?.replace(
            "write = [\"/dev/null\"]",
            &format!(
                "write = [\"/dev/null\", {:?}]\nallow_persistence = [{allow}]",
                dir.display().to_string()
            ),
        );
        write_file(&path, &text, 0o644)?;
        Ok(path)
    };
    let all = "\"git_hooks\", \"git_config\", \"vscode\", \"idea\", \"direnv\", \"mcp_config\"";
    let (fenced, open) = (policy("fence-on", "")?, policy("fence-off", all)?);
    let n = ctx.pick(2000, 300);
    let script = format!(
        "i=0; while [ $i -lt {n} ]; do : > {}/f; i=$((i+1)); done",
        dir.display()
    );
    let argv = ["/bin/sh", "-c", script.as_str()];
    let mut daemon = Daemon::start(ctx, "persist-fence")?;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    time_ms(&mut ctx.guarded(&daemon, &fenced, &argv))?;
    for _ in 0..ctx.pick(6, 2) {
        without.push(time_ms(&mut ctx.guarded(&daemon, &open, &argv))?);
        with.push(time_ms(&mut ctx.guarded(&daemon, &fenced, &argv))?);
    }
    daemon.stop()?;
    let (Some(a), Some(b)) = (Stats::of(&without), Stats::of(&with)) else {
        bail!("no persistence fence samples");
    };
    Ok(format!(
        "Persistence fence: {n} `O_CREAT` opens in a guarded shell took {:.1} ms with the fence and {:.1} ms without it (medians, {} runs each, back to back): {:.0} µs per trapped call (daemon round trip and the executor's open); calls that create no name are not trapped.",
        b.median,
        a.median,
        a.runs,
        (b.median - a.median) * 1000.0 / n as f64
    ))
}

/// Launch time of a guarded `/bin/true` whose policy grants write on a
/// project tree (2,000 directories, 20 git repositories with `.vscode/`)
/// against one granting write on an empty directory: the cost of the launch
/// helper's persistence search and read-only binds, back to back. A note.
fn persist_search_cost(ctx: &Ctx) -> Result<String> {
    let empty = ctx.subdir("persist-empty")?;
    let tree = ctx.subdir("persist-tree")?;
    for repo in 0..20 {
        let p = tree.join(format!("p{repo}"));
        for d in 0..99 {
            std::fs::create_dir_all(p.join(format!("src/d{d}")))?;
        }
        std::fs::create_dir_all(p.join(".git/hooks"))?;
        std::fs::create_dir_all(p.join(".vscode"))?;
        write_file(&p.join(".git/config"), "[core]\n", 0o644)?;
    }
    for dir in [&empty, &tree] {
        let owner = format!("{}:{}", ctx.user.uid, ctx.user.gid);
        time_ms(Command::new("chown").arg("-R").arg(owner).arg(dir))?;
    }
    let policy = |name: &str, dir: &Path| -> Result<PathBuf> {
        let path = ctx.policy(name, &[], &[], "")?;
        let text = std::fs::read_to_string(&path)?.replace(
            "write = [\"/dev/null\"]",
            &format!("write = [\"/dev/null\", {:?}]", dir.display().to_string()),
        );
        write_file(&path, &text, 0o644)?;
        Ok(path)
    };
    let (small, large) = (
        policy("persist-empty", &empty)?,
        policy("persist-tree", &tree)?,
    );
    let mut daemon = Daemon::start(ctx, "persist")?;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    time_ms(&mut ctx.guarded(&daemon, &large, &["/bin/true"]))?;
    for _ in 0..ctx.pick(12, 2) {
        without.push(time_ms(&mut ctx.guarded(&daemon, &small, &["/bin/true"]))?);
        with.push(time_ms(&mut ctx.guarded(&daemon, &large, &["/bin/true"]))?);
    }
    daemon.stop()?;
    let (Some(a), Some(b)) = (Stats::of(&without), Stats::of(&with)) else {
        bail!("no persistence search samples");
    };
    Ok(format!(
        "Persistence search: a write grant on a tree of 2,000 directories holding 20 git repositories with `.vscode/` (60 read-only binds, 20 pinned `.git`) made a launch {:.1} ms slower than a grant on an empty directory (medians {:.1} and {:.1} ms, back to back, {} runs each); nothing is trapped once the server runs.",
        b.median - a.median,
        b.median,
        a.median,
        a.runs
    ))
}

#[expect(
    clippy::too_many_lines,
    reason = "one bench section as a script of measurements in report order; not yet cut into one function per measurement"
)]
pub fn run(ctx: &Ctx) -> Result<Section> {
    let rounds = ctx.pick(24, 2);
    let srt_rounds = ctx.pick(10, 2);
    let init_rounds = ctx.pick(12, 1);
    let policy = ctx.policy("launch", &[], &[], "")?;
    let time_policy = ctx.dir.join("time.toml");
    std::fs::copy(crate::root().join("policies/time.toml"), &time_policy)?;
    std::fs::set_permissions(
        &time_policy,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    let server = ctx.peers.join("venv/bin/mcp-server-time");
    if !server.exists() {
        bail!("{} missing: run `cargo xtask setup`", server.display());
    }
    let server = server.display().to_string();
    let mut notes = Vec::new();

    let bwrap = match which("bwrap") {
        None => Err(
            "bwrap is not installed (Debian package `bubblewrap`; `cargo xtask setup` installs it)"
                .to_string(),
        ),
        Some(bin) => {
            // It must run a command as the test user here (unprivileged
            // user namespaces): an exit status must come through.
            let out = ctx
                .user_cmd(&bin)
                .args(bwrap_args())
                .args(["/bin/sh", "-c", "exit 3"])
                .stderr(Stdio::piped())
                .output();
            match out {
                Ok(o) if o.status.code() == Some(3) => Ok(bin),
                Ok(o) => Err(format!(
                    "bwrap does not run a command as {} here (status {}): {}",
                    crate::setup::TEST_USER,
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => Err(format!("cannot start bwrap: {e}")),
            }
        }
    };
    if let Err(why) = &bwrap {
        notes.push(format!("bwrap not measured: {why}."));
    }
    let bwrap_why = bwrap.as_ref().err().cloned();
    let bwrap = bwrap.ok();
    let bwrap_cmd = |ctx: &Ctx| {
        let mut cmd = ctx.user_cmd(bwrap.as_ref().expect("checked"));
        cmd.args(bwrap_args()).arg("/bin/true");
        cmd
    };
    let srt = srt(ctx);
    match &srt {
        Ok(s) => notes.push(format!(
            "srt {} ran under node {}, settings: no allowed domains, no writes; its default read policy (everything readable) kept. srt's launch includes starting its HTTP/SOCKS proxies and socat bridges, which it does for every command.",
            s.version,
            super::stdout_of(Command::new("node").arg("--version")).unwrap_or_default().trim()
        )),
        Err(why) => notes.push(format!("srt not measured: {why}.")),
    }
    let idle = |cmd: &mut Command| -> Result<f64> {
        std::thread::sleep(IDLE_GAP);
        time_ms(cmd)
    };

    // Blocks alternate no daemon (bare, bwrap, bare server) and a fresh
    // daemon (guarded, bare with the daemon loaded, guarded server), so
    // drift and other load on the machine weigh on both sides alike.
    // Launches "after idle" follow a pause; "back to back" ones do not.
    let blocks = ctx.pick(4, 1);
    let per = rounds / blocks;
    let (mut bare, mut bw, mut sr) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bare_b2b, mut bw_b2b) = (Vec::new(), Vec::new());
    let (mut guarded, mut guarded_b2b, mut loaded) = (Vec::new(), Vec::new(), Vec::new());
    let (mut echo_bare, mut echo_guarded) = (Vec::new(), Vec::new());
    let (mut init_bare, mut init_guarded) = (Vec::new(), Vec::new());
    for block in 0..blocks {
        time_ms(&mut ctx.user_cmd("/bin/true"))?;
        if bwrap.is_some() {
            time_ms(&mut bwrap_cmd(ctx))?;
        }
        for _ in 0..per {
            bare.push(idle(&mut ctx.user_cmd("/bin/true"))?);
            if bwrap.is_some() {
                bw.push(idle(&mut bwrap_cmd(ctx))?);
            }
            let mut cmd = ctx.user_cmd("/bin/echo");
            cmd.arg("ready");
            std::thread::sleep(IDLE_GAP);
            echo_bare.push(time_split(&mut cmd)?);
        }
        for _ in 0..per {
            bare_b2b.push(time_ms(&mut ctx.user_cmd("/bin/true"))?);
            if bwrap.is_some() {
                bw_b2b.push(time_ms(&mut bwrap_cmd(ctx))?);
            }
        }
        time_to_initialize(ctx.user_cmd(&server))?;
        for _ in 0..init_rounds / blocks {
            std::thread::sleep(IDLE_GAP);
            init_bare.push(time_to_initialize(ctx.user_cmd(&server))?);
        }

        let mut daemon = Daemon::start(ctx, &format!("launch-{block}"))?;
        let true_cmd = || ctx.guarded(&daemon, &policy, &["/bin/true"]);
        time_ms(&mut true_cmd())?;
        for _ in 0..per {
            guarded.push(idle(&mut true_cmd())?);
            loaded.push(idle(&mut ctx.user_cmd("/bin/true"))?);
            std::thread::sleep(IDLE_GAP);
            echo_guarded.push(time_split(&mut ctx.guarded(
                &daemon,
                &policy,
                &["/bin/echo", "ready"],
            ))?);
        }
        for _ in 0..per {
            guarded_b2b.push(time_ms(&mut true_cmd())?);
        }
        time_to_initialize(ctx.guarded(&daemon, &time_policy, &[&server]))?;
        for _ in 0..init_rounds / blocks {
            std::thread::sleep(IDLE_GAP);
            init_guarded.push(time_to_initialize(ctx.guarded(
                &daemon,
                &time_policy,
                &[&server],
            ))?);
        }
        daemon.stop()?;
    }
    // srt on its own, last: its proxies and bridges wind down after each
    // command and would weigh on the launches around it.
    if let Ok(s) = &srt {
        time_ms(&mut s.cmd(ctx, &["/bin/true"]))?;
        for _ in 0..srt_rounds {
            sr.push(idle(&mut s.cmd(ctx, &["/bin/true"]))?);
        }
    }
    notes.push(persist_search_cost(ctx)?);
    notes.push(persist_fence_cost(ctx)?);
    let (mig_b2b, mig_idle) = cgroup_migration(ctx, IDLE_GAP, ctx.pick(8, 2))?;
    let (mb, mi) = (Stats::of(&mig_b2b), Stats::of(&mig_idle));
    let median_gap = |a: &[f64], b: &[f64]| match (Stats::of(a), Stats::of(b)) {
        (Some(a), Some(b)) => a.median - b.median,
        _ => f64::NAN,
    };
    let mount_ns = mount_ns_cost(IDLE_GAP, ctx.pick(8, 2))?;
    if let Some((plain, ns)) = &mount_ns {
        let (p, n) = (Stats::of(plain), Stats::of(ns));
        if let (Some(p), Some(n)) = (p, n) {
            notes.push(format!(
                "A private mount namespace with empty tmpfs mounts over /run, /tmp, /var/tmp and /dev/shm (what the launch helper sets up for every server) added {:.1} ms (median; runs took {:.1}–{:.1} ms against {:.1}–{:.1} ms plain) to a shell's start and exit after {} ms idle, measured as root with unshare(1).",
                n.median - p.median,
                n.min,
                n.max,
                p.min,
                p.max,
                IDLE_GAP.as_millis()
            ));
        }
    }
    if let (Some(b), Some(i)) = (mb, mi) {
        let gap = median_gap(&guarded, &guarded_b2b);
        notes.push(format!(
            "Moving a task into a fresh cgroup (a `cgroup.procs` write, which the daemon does for every launch helper) took {:.2} ms back to back and {:.1} ms ({:.1}–{:.1}) after {} ms idle on this kernel: the cgroup core's thread-group lock waits for an RCU grace period when it has not been taken recently. Guarded launches after idle took {gap:.1} ms longer than back to back (medians; bare {:.1} ms, bwrap {:.1} ms, neither migrates a task). `clone3(CLONE_INTO_CGROUP)` starts a process in its cgroup without a migration.",
            b.median,
            i.median,
            i.min,
            i.max,
            IDLE_GAP.as_millis(),
            median_gap(&bare, &bare_b2b),
            median_gap(&bw, &bw_b2b),
        ));
    }
    let col = |v: &[[f64; 3]], f: fn(&[f64; 3]) -> f64| v.iter().map(f).collect::<Vec<_>>();

    let bare_s = Stats::of(&bare);
    let rows = vec![
        Row::new(
            "launch `/bin/true` after idle: `mcpguard run`",
            "ms",
            bare_s,
            Stats::of(&guarded),
        ),
        Row::new(
            "launch `/bin/true` after idle: `bwrap`",
            "ms",
            bare_s,
            Stats::of(&bw),
        ),
        Row::new(
            "launch `/bin/true` after idle: `srt`",
            "ms",
            bare_s,
            Stats::of(&sr),
        ),
        Row::new(
            "launch `/bin/true` back to back: `mcpguard run`",
            "ms",
            Stats::of(&bare_b2b),
            Stats::of(&guarded_b2b),
        ),
        Row::new(
            "launch `/bin/true` back to back: `bwrap`",
            "ms",
            Stats::of(&bare_b2b),
            Stats::of(&bw_b2b),
        ),
        Row::new(
            "launch `/bin/true` after idle: bare, daemon loaded",
            "ms",
            bare_s,
            Stats::of(&loaded),
        ),
        Row::new(
            "`mcpguard run /bin/echo`: spawn to first output byte",
            "ms",
            Stats::of(&col(&echo_bare, |e| e[0])),
            Stats::of(&col(&echo_guarded, |e| e[0])),
        ),
        Row::new(
            "`mcpguard run /bin/echo`: first output byte to exit status",
            "ms",
            Stats::of(&col(&echo_bare, |e| e[1] - e[0])),
            Stats::of(&col(&echo_guarded, |e| e[1] - e[0])),
        ),
        Row::new(
            "`mcpguard run /bin/echo`: exit status to end of file on stdout",
            "ms",
            Stats::of(&col(&echo_bare, |e| e[2] - e[1])),
            Stats::of(&col(&echo_guarded, |e| e[2] - e[1])),
        ),
        Row::new(
            "`mcp-server-time`: spawn to `initialize` result",
            "ms",
            Stats::of(&init_bare),
            Stats::of(&init_guarded),
        ),
    ];

    let over = |r: &Row| r.added();
    let ours = over(&rows[0]).unwrap_or(f64::NAN);
    let mut targets = vec![Target {
        what: "launch overhead < 5 ms (median over bare, launches after idle)".into(),
        measured: format!("{ours:.2} ms"),
        met: Some(ours < 5.0),
        why: if ours < 5.0 {
            String::new()
        } else {
            format!(
                "the server starts {:.1} ms later than bare (`mcpguard run` hands its stdio to the daemon, which parses the policy, creates a cgroup, starts the server's DNS resolver, fills the eBPF maps and re-executes itself as the launch helper: cgroup migration, mount namespace, uid drop, Landlock, exec; the cgroup migration alone takes {:.1} ms after idle, see the notes) and its exit status reaches `mcpguard run` {:.1} ms after it exits (the session waits for its relays, polling every 5 ms); back to back the overhead is {:.1} ms; {} build",
                over(&rows[6]).unwrap_or(f64::NAN),
                mi.map(|s| s.median).unwrap_or(f64::NAN),
                over(&rows[7]).unwrap_or(f64::NAN),
                over(&rows[3]).unwrap_or(f64::NAN),
                ctx.profile
            )
        },
    }];
    for (i, name) in [(1, "bwrap"), (2, "srt")] {
        let theirs = over(&rows[i]);
        targets.push(match theirs {
            Some(t) => Target {
                what: format!("launch overhead below {name}'s"),
                measured: format!("{ours:.2} ms vs {t:.2} ms"),
                met: Some(ours < t),
                why: if ours < t {
                    String::new()
                } else {
                    format!("{name} sets up namespaces in the calling process; mcpguard's launch also goes through the daemon and a cgroup migration (see above)")
                },
            },
            None => Target {
                what: format!("launch overhead below {name}'s"),
                measured: "not measured".into(),
                met: None,
                why: match (&srt, name) {
                    (Err(why), "srt") => why.clone(),
                    _ => bwrap_why.clone().unwrap_or_default(),
                },
            },
        });
    }
    Ok(Section {
        key: "launch",
        title: "Launch",
        details: json!({
            "rows": rows.iter().map(|r| r.json()).collect::<Vec<_>>(),
            "bwrap_args": bwrap_args(),
            "srt": match &srt { Ok(s) => json!({"version": s.version}), Err(w) => json!({"unavailable": w}) },
            "idle_gap_ms": IDLE_GAP.as_millis() as u64,
            "samples_ms": {
                "bare": bare, "mcpguard": guarded, "bwrap": bw, "srt": sr, "bare_daemon_loaded": loaded,
                "bare_back_to_back": bare_b2b, "mcpguard_back_to_back": guarded_b2b, "bwrap_back_to_back": bw_b2b,
                "echo_first_byte_exit_eof_bare": echo_bare, "echo_first_byte_exit_eof_guarded": echo_guarded,
                "shell_plain_after_idle": mount_ns.as_ref().map(|m| m.0.clone()),
                "shell_in_mount_namespace_after_idle": mount_ns.as_ref().map(|m| m.1.clone()),
                "cgroup_migration_back_to_back": mig_b2b, "cgroup_migration_after_idle": mig_idle,
                "initialize_bare": init_bare, "initialize_guarded": init_guarded,
            },
        }),
        rows,
        targets,
        notes,
    })
}
